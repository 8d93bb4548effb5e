"""Build script for kpfast's compiled extension, ``kpfast._C``.

The extension is built against the torch installed in the environment that runs the build, so
install torch first and build without isolation (``pip install --no-build-isolation .``); an
isolated build would compile against whatever torch the build environment downloads.

* C++ CPU kernels are always built.
* CUDA kernels are built when torch has CUDA and a CUDA toolkit is found (``CUDA_HOME`` or
  ``nvcc`` on ``PATH``), also on a machine without a GPU. ``KPFAST_BUILD_CUDA=0`` / ``=1``
  forces either way (``=1`` fails loudly when it cannot).
* ``TORCH_CUDA_ARCH_LIST`` is honoured; the default covers Ampere, Ada and Hopper (sm_90) plus
  PTX for newer GPUs.
"""

import glob
import os
import sys
import sysconfig

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCH_LIST = "8.0;8.6;8.9;9.0+PTX"


def _want_cuda(torch, cuda_home):
    forced = os.environ.get("KPFAST_BUILD_CUDA")
    available = torch.version.cuda is not None and cuda_home is not None
    if forced is None:
        return available
    if forced not in ("0", "1"):
        sys.exit(f"KPFAST_BUILD_CUDA must be '0' or '1', got {forced!r}")
    if forced == "1" and not available:
        why = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA toolkit found (set CUDA_HOME)"
        sys.exit(f"KPFAST_BUILD_CUDA=1 but CUDA kernels cannot be built: {why}")
    return forced == "1"


def _cuda_library_includes():
    """Headers of the CUDA libraries (cusparse.h, cublas_v2.h, ...) that torch's CUDA headers
    include. pip-installed torch ships them in the ``nvidia`` wheels, not in the toolkit."""
    purelib = sysconfig.get_paths()["purelib"]
    return sorted(set(glob.glob(os.path.join(purelib, "nvidia", "*", "include"))))


def _default_cuda_home():
    """torch derives CUDA_HOME from the first ``nvcc`` on PATH, which can be a wrapper script
    outside the toolkit (``/usr/local/bin/nvcc``); prefer the conventional toolkit folder."""
    if "CUDA_HOME" not in os.environ and "CUDA_PATH" not in os.environ:
        if os.path.exists("/usr/local/cuda/include/cuda_runtime.h"):
            os.environ["CUDA_HOME"] = "/usr/local/cuda"


def _extensions():
    _default_cuda_home()
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, CppExtension, CUDAExtension

    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    # No -std flag: torch.utils.cpp_extension picks the standard the installed torch needs
    # (C++17 up to torch 2.12, C++20 from 2.13).
    cxx_flags = ["-O3", "-fopenmp"]
    define_macros = []
    extra_link = ["-fopenmp"]
    include_dirs = [os.path.join(ROOT, "csrc")]
    if _want_cuda(torch, CUDA_HOME):
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCH_LIST)
        sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")) + glob.glob(os.path.join("csrc", "cuda", "*.cpp")))
        define_macros.append(("KPFAST_WITH_CUDA", None))
        include_dirs += _cuda_library_includes()
        return [
            CUDAExtension(
                "kpfast._C",
                sources,
                include_dirs=include_dirs,
                define_macros=define_macros,
                extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-lineinfo"]},
                extra_link_args=extra_link,
            )
        ]
    return [
        CppExtension(
            "kpfast._C",
            sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=extra_link,
        )
    ]


def _build_ext():
    from torch.utils.cpp_extension import BuildExtension

    return BuildExtension.with_options(no_python_abi_suffix=True)


setup(
    packages=find_packages(include=["kpfast", "kpfast.*"]),
    package_data={"kpfast": ["configs/*.yaml"]},
    ext_modules=_extensions(),
    cmdclass={"build_ext": _build_ext()},
)

"""Build script for kpfast's compiled extension, ``kpfast._C``.

``kpfast._C`` uses only the LibTorch stable ABI (torch/csrc/stable, torch/headeronly) targeting
torch 2.11, and the Python limited API without libtorch_python: one binary built against any
torch >= 2.11 loads in any torch >= 2.11. So ``pip install .`` may build in an isolated
environment with whatever torch >= 2.11 it downloads; ``--no-build-isolation`` works as well.

* C++ CPU kernels are always built.
* CUDA kernels are built when the build's torch has CUDA and a CUDA toolkit is found
  (``CUDA_HOME``, ``/usr/local/cuda`` or ``nvcc`` on ``PATH``), also on a machine without a GPU.
  ``KPFAST_BUILD_CUDA=0`` / ``=1`` forces either way (``=1`` fails loudly when it cannot).
  The CUDA runtime is linked statically and libtorch_cuda is looked up at run time, so a binary
  with CUDA kernels still loads in a CPU-only torch (its CUDA kernels then never run).
* ``TORCH_CUDA_ARCH_LIST`` is honoured; the default covers Ampere, Ada and Hopper (sm_90) plus
  PTX for newer GPUs.
"""

import glob
import os
import re
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCH_LIST = "8.0;8.6;8.9;9.0+PTX"
# The oldest torch whose stable ABI the binary uses: it loads in this torch and every later one.
TORCH_TARGET = (2, 11)
TORCH_TARGET_VERSION = f"0x{TORCH_TARGET[0]:02x}{TORCH_TARGET[1]:02x}000000000000"
# CPython 3.10 limited API (pyproject's requires-python).
PY_LIMITED_API = "0x030a0000"
CUDA_HELP = "set KPFAST_BUILD_CUDA=0 to build the CPU kernels only, or CUDA_HOME to the CUDA toolkit"


def _default_cuda_home():
    """torch derives CUDA_HOME from the first ``nvcc`` on PATH, which can be a wrapper script
    outside the toolkit (``/usr/local/bin/nvcc``); prefer the conventional toolkit folder."""
    if "CUDA_HOME" not in os.environ and "CUDA_PATH" not in os.environ:
        if os.path.exists("/usr/local/cuda/include/cuda_runtime.h"):
            os.environ["CUDA_HOME"] = "/usr/local/cuda"


def _want_cuda(torch, cuda_home):
    forced = os.environ.get("KPFAST_BUILD_CUDA")
    available = torch.version.cuda is not None and cuda_home is not None
    if forced is None:
        return available
    if forced not in ("0", "1"):
        sys.exit(f"KPFAST_BUILD_CUDA must be '0' or '1', got {forced!r}")
    if forced == "1" and not available:
        why = ("the build's torch has no CUDA (a CPU wheel)" if torch.version.cuda is None
               else "no CUDA toolkit found")
        sys.exit(f"kpfast: KPFAST_BUILD_CUDA=1 but the CUDA kernels cannot be built: {why}; {CUDA_HELP}")
    return forced == "1"


def _arch_token(arch_list: str) -> str:
    """TORCH_CUDA_ARCH_LIST ("8.0;9.0+PTX" or space-separated) as one preprocessor token."""
    return "_".join(part for part in re.split(r"[;\s]+", arch_list) if part)


def _extensions():
    _default_cuda_home()
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, CppExtension, CUDAExtension

    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    # No -std flag: torch.utils.cpp_extension picks the standard the build's torch needs.
    cxx_flags = ["-O3", "-fopenmp", f"-DTORCH_TARGET_VERSION={TORCH_TARGET_VERSION}"]
    extra_link = ["-fopenmp"]
    include_dirs = [os.path.join(ROOT, "csrc")]
    common = dict(include_dirs=include_dirs, extra_link_args=extra_link, py_limited_api=True)
    if not _want_cuda(torch, CUDA_HOME):
        return [CppExtension("kpfast._C", sources, extra_compile_args={"cxx": cxx_flags}, **common)]

    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCH_LIST)
    sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")) + glob.glob(os.path.join("csrc", "cuda", "*.cpp")))
    arches = _arch_token(os.environ["TORCH_CUDA_ARCH_LIST"])
    defines = ["-DKPFAST_WITH_CUDA", f"-DKPFAST_CUDA_ARCHES={arches}"]
    nvcc_flags = ["-O3", "-lineinfo", f"-DTORCH_TARGET_VERSION={TORCH_TARGET_VERSION}", *defines]
    extension = CUDAExtension(
        "kpfast._C",
        sources,
        extra_compile_args={"cxx": cxx_flags + defines, "nvcc": nvcc_flags},
        **common,
    )
    # Only the stable C shim of libtorch is used (libtorch_cuda is looked up at run time, see
    # csrc/cuda/stream.h) and the CUDA runtime is linked statically: no dependency that a CPU
    # torch lacks, so the binary loads there too.
    extension.libraries = [lib for lib in extension.libraries if lib not in ("c10_cuda", "torch_cuda", "cudart")]
    extension.libraries += ["cudart_static", "dl", "rt"]
    return [extension]


def _build_ext():
    from torch.utils.cpp_extension import BuildExtension

    base = BuildExtension.with_options(no_python_abi_suffix=True)

    class BuildExtensionWithHint(base):
        """A failed CUDA compile says why in one line and what to set."""

        def build_extensions(self):
            try:
                super().build_extensions()
            except (Exception, SystemExit) as error:
                if any(source.endswith(".cu") for ext in self.extensions for source in ext.sources):
                    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                    raise SystemExit(f"kpfast: building the CUDA kernels failed ({first}); {CUDA_HELP}") from error
                raise

    return BuildExtensionWithHint


setup(
    packages=find_packages(include=["kpfast", "kpfast.*"]),
    package_data={"kpfast": ["configs/*.yaml"]},
    ext_modules=_extensions(),
    cmdclass={"build_ext": _build_ext()},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)

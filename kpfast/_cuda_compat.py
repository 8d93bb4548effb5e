"""Can this GPU run the CUDA kernels of this build of ``kpfast._C``?

``kpfast._C`` links the CUDA runtime statically and carries machine code (cubins) for the built
architectures only, plus PTX for those marked ``+PTX`` (build info ``arches``, TORCH_CUDA_ARCH_LIST
as one token, e.g. ``8.0_8.6_8.9_9.0+PTX``). The ``cuda`` backend is unavailable, with the reason,
on a device that no cubin or PTX covers, or whose driver is older than the runtime the build
carries; ``auto`` then takes the next backend (kpfast.backends).

The rules (CUDA's compatibility rules):
* a cubin for sm_XY runs on a device of the same major version and minor >= Y (sm_80 on 8.6);
  an arch-specific one (``9.0a``) on exactly that capability;
* PTX for compute_XY is compiled by the driver for any device of capability >= X.Y, which needs a
  driver at least as new as the runtime that wrote it;
* the runtime needs a driver of its major version or newer (CUDA's minor version compatibility
  lets a 13.2 runtime run cubins under a 13.0 driver).
"""

from __future__ import annotations

import ctypes
import re

import torch

from kpfast import _extension

_ARCH = re.compile(r"^(\d+)\.(\d+)([af]?)(\+PTX)?$")


def parse_arches(token: str) -> list[tuple[int, int, str, bool]]:
    """(major, minor, suffix, ptx) per entry of the build's ``arches`` token ("8.0_9.0+PTX";
    suffix "a" / "f" for arch-specific entries)."""
    arches = []
    for part in filter(None, re.split(r"[_;\s]+", token)):
        match = _ARCH.match(part)
        if match is None:
            raise ValueError(f"arches: cannot read {part!r} of {token!r}")
        arches.append((int(match.group(1)), int(match.group(2)), match.group(3), match.group(4) is not None))
    return arches


def version_text(version: int | None) -> str | None:
    """CUDA's integer version (13020) as "13.2"."""
    return None if version is None else f"{version // 1000}.{version % 1000 // 10}"


def incompatibility(capability: tuple[int, int], driver: int | None, arches: str, runtime: int | None
                    ) -> str | None:
    """Why a device of ``capability`` with ``driver`` (cuDriverGetVersion) cannot run a build of
    ``arches`` linked with ``runtime`` (CUDART_VERSION), or None when it can. None facts (not
    known) are not held against it."""
    major, minor = capability
    entries = parse_arches(arches)
    if runtime is not None and driver is not None and driver // 1000 < runtime // 1000:
        return (f"cuda: the NVIDIA driver supports CUDA {version_text(driver)}, older than the CUDA "
                f"{version_text(runtime)} runtime kpfast._C was built with: update the driver or rebuild kpfast")
    cubin = any(m == major and (n == minor if suffix else n <= minor) for m, n, suffix, _ in entries)
    ptx = any((m, n) <= (major, minor) for m, n, suffix, has_ptx in entries if has_ptx and not suffix)
    if cubin:
        return None
    built = ", ".join(f"{m}.{n}{s}" + ("+PTX" if p else "") for m, n, s, p in entries) or "none"
    if not ptx:
        return (f"cuda: kpfast._C has no code for this GPU (compute capability {major}.{minor}; built for "
                f"{built}): rebuild with TORCH_CUDA_ARCH_LIST including {major}.{minor}")
    if runtime is not None and driver is not None and driver < runtime:
        return (f"cuda: this GPU (compute capability {major}.{minor}) needs the PTX of kpfast._C (built for "
                f"{built}), which the driver (CUDA {version_text(driver)}) cannot compile: it was written by the "
                f"CUDA {version_text(runtime)} toolkit; update the driver or rebuild with {major}.{minor}")
    return None


def driver_version() -> int | None:
    """The NVIDIA driver's CUDA version (cuDriverGetVersion, e.g. 13000), None when unknown."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            library = ctypes.CDLL(name)
        except OSError:
            continue
        version = ctypes.c_int(0)
        if library.cuDriverGetVersion(ctypes.byref(version)) == 0:
            return version.value
    return None


def device_facts(index: int) -> dict:
    """The facts of CUDA device ``index`` the rules above need."""
    return dict(capability=tuple(torch.cuda.get_device_capability(index)), driver=driver_version())


def build_facts() -> dict:
    """``arches`` and ``runtime`` (CUDART_VERSION, None for a build that does not say) of kpfast._C."""
    info = _extension.build_info()
    runtime = info.get("cudart", "")
    return dict(arches=info.get("arches", ""), runtime=int(runtime) if runtime.isdigit() else None)


_reasons: dict[int, str | None] = {}


def device_reason(index: int | None) -> str | None:
    """Why the cuda backend cannot run on CUDA device ``index`` (None: the current device; the
    answer None: it can); computed once per device, a constant for torch.compile (which calls
    this at trace time, so nothing in it is traced)."""
    if index is None:
        index = torch.cuda.current_device()
    if index not in _reasons:
        build = build_facts()
        _reasons[index] = incompatibility(runtime=build["runtime"], arches=build["arches"], **device_facts(index))
    return _reasons[index]


# What torch.compiler.assume_constant_result(device_reason) does (torch 2.11-2.15), without its
# import of torch._dynamo, which imports triton: `import kpfast` must not (the first Triton call
# does). tests/test_cuda_compat.py checks that torch.compile(fullgraph=True) honours it.
device_reason._dynamo_marked_constant = True

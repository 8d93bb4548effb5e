"""The torch and Triton releases kpfast is tested with, and what to say outside them.

The range is the one CI runs (.ci/run): its oldest leg installs exactly the oldest releases
below, its newest leg whatever the package registry serves, and both run the op tests, the
Triton interpreter tests, the AOT gate and a training epoch. Newer releases keep coming:
``python -m kpfast.info`` warns when it runs on one newer than the newest tested here, so a user
learns at once that the self-test's verdict is the evidence for their versions.
"""

from __future__ import annotations

# (oldest, newest) minor release tested, per package. The oldest torch is also the stable-ABI
# target of kpfast._C (setup.py's TORCH_TARGET).
TESTED = {"torch": ("2.11", "2.15"), "triton": ("3.6", "3.9")}


def minor(version: str | None) -> tuple[int, ...]:
    """(major, minor) of a version string ("2.15.0+cu132" -> (2, 15)); () when it cannot be read."""
    if not version:
        return ()
    parts = version.split("+")[0].split(".")[:2]
    digits = [int("".join(ch for ch in p if ch.isdigit()) or -1) for p in parts]
    return tuple(digits) if len(digits) == 2 and min(digits) >= 0 else ()


def untested(installed: dict[str, str | None]) -> list[str]:
    """One warning per package of ``installed`` ({"torch": "2.16.0", "triton": None, ...}) whose
    version lies outside the tested range; a missing package (None) is not a warning."""
    warnings = []
    for package, (oldest, newest) in TESTED.items():
        found = minor(installed.get(package))
        if not found:
            continue
        if found > minor(newest):
            warnings.append(f"{package} {installed[package]} is newer than the newest release kpfast was tested "
                            f"with ({package} {newest}); the self-test below is the evidence that it works")
        elif found < minor(oldest):
            warnings.append(f"{package} {installed[package]} is older than the oldest release kpfast supports "
                            f"({package} {oldest}); upgrade it")
    return warnings

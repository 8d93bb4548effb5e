"""The trainer's third-party dependencies, and one line when they are missing.

The kernel layer (``kpfast.ops``, ``kpfast.nn``, ``kpfast.models``, ``python -m kpfast.info``)
needs only torch and numpy (and Triton for its backend), so kpfast installs without its
dependencies into such an environment (README, "Installing"). The trainer's packages
(``kpfast.engine``, ``kpfast.data``'s loaders and the commands) call :func:`require` before
importing them: a command run there exits with one line naming what is missing, and a library
import raises :class:`MissingDependencyError` with the same line.
"""

from __future__ import annotations

import importlib.util
import sys

# import name -> distribution name (pyproject's dependencies beyond torch and numpy)
TRAINER = {"cv2": "opencv-python-headless", "yaml": "PyYAML", "albumentations": "albumentations",
           "pycocotools": "pycocotools", "tqdm": "tqdm", "tensorboard": "tensorboard", "matplotlib": "matplotlib",
           "pydantic": "pydantic"}


class MissingDependencyError(ImportError):
    """A part of kpfast was used whose third-party dependencies are not installed."""


def missing(modules: dict[str, str] = TRAINER) -> list[str]:
    """Distribution names of the ``modules`` that cannot be imported here."""
    return [dist for name, dist in modules.items() if importlib.util.find_spec(name) is None]


def _running_a_kpfast_command() -> bool:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec is not None and (spec.name or "").startswith("kpfast.")


def require(what: str, modules: dict[str, str] = TRAINER) -> None:
    """Stop with one line when ``what`` (e.g. "kpfast.engine") cannot run for missing packages:
    ``SystemExit`` inside a ``python -m kpfast...`` command, :class:`MissingDependencyError` elsewhere."""
    absent = missing(modules)
    if not absent:
        return
    message = (f"kpfast: {what} needs the trainer's dependencies, not installed here: {', '.join(absent)} "
               f"(install kpfast without --no-deps, or `pip install {' '.join(absent)}`)")
    if _running_a_kpfast_command():
        raise SystemExit(message)
    raise MissingDependencyError(message)

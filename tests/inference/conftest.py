"""The engine tests' tiny synthetic set and config overrides, for the inference tests."""

from engine.conftest import synthetic_root, tiny_overrides  # noqa: F401

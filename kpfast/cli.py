"""Running a kpfast command: every command (train, eval, predict, export, the data tools) runs
its ``main`` through :func:`run_cli`, so a mistake in the user's input (a config key, a file, a
device) ends the program with exit code 2 and one line on stderr that names the
key/file/argument and what to do (docs/files.md, "Errors and KPFAST_DEBUG"). ``KPFAST_DEBUG=1``
prints the traceback as well.

This module imports nothing from the engine, so that the data tools (``kpfast.data``) can use it
without depending on the trainer (tests/engine/test_import_graph.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

__all__ = ["DEBUG_ENV", "HelpFormatter", "run_cli"]

DEBUG_ENV = "KPFAST_DEBUG"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every flag's default; flags whose help already states it are left alone."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "(default" in text:
            return text
        return super()._get_help_string(action)


def _is_config_error(exc: BaseException) -> bool:
    # A ConfigError can only have been raised once its module is loaded; looking it up there
    # (instead of importing it) keeps the engine out of the data tools' imports.
    config = sys.modules.get("kpfast.engine.config")
    return config is not None and isinstance(exc, config.ConfigError)


def _user_errors() -> tuple[type[BaseException], ...]:
    from kpfast.backends import BackendUnavailableError

    return (BackendUnavailableError, OSError, ValueError, TypeError)  # ConfigError is a ValueError


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and type(exc).__str__ is OSError.__str__ and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        text = f"{where}{exc.strerror}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def run_cli(main, argv=None) -> int:
    """Run ``main(argv)``; a user-input error becomes one line on stderr and exit code 2.

    KeyboardInterrupt and SystemExit pass through. ``KPFAST_DEBUG=1`` also prints the traceback.
    """
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        return int(main(argv) or 0)
    except _user_errors() as exc:
        if debug:
            traceback.print_exc()
        label = "config error" if _is_config_error(exc) else "error"
        print(f"{label}: {_one_line(exc)}", file=sys.stderr)
        return 2

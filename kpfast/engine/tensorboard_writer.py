"""TensorBoard logging that can fail without a traceback (docs/files.md, "Errors").

TensorBoard's event writer writes from a background thread; on a full or read-only disk that
thread dies with a traceback and the next ``add_scalar`` raises whatever it caught (sometimes an
exception whose text is a bare byte string). TensorBoard files are a convenience next to
``metrics.csv``: on the first failure :class:`SafeSummaryWriter` logs one line naming the folder
and the reason, and stops TensorBoard logging for the rest of the run; training goes on.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

__all__ = ["SafeSummaryWriter"]


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    if isinstance(getattr(exc, "args", None), tuple) and exc.args and isinstance(exc.args[0], bytes):
        text = exc.args[0].decode(errors="replace")
    return " ".join((text or type(exc).__name__).split())


class SafeSummaryWriter:
    """``add_scalar``/``flush``/``close`` of a torch SummaryWriter, off after the first failure."""

    def __init__(self, log_dir: Path | str, log: Callable[[str], None]):
        self.log_dir = Path(log_dir)
        self._log = log
        self._writer = None
        self._thread_errors: list[BaseException] = []
        self._previous_hook = threading.excepthook
        threading.excepthook = self._thread_hook
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.log_dir))
        except Exception as exc:  # noqa: BLE001 - any failure only turns TensorBoard off
            self._disable(exc)

    @property
    def enabled(self) -> bool:
        return self._writer is not None

    def _thread_hook(self, args) -> None:
        from tensorboard.summary.writer import event_file_writer

        if isinstance(args.thread, getattr(event_file_writer, "_AsyncWriterThread", ())):
            self._thread_errors.append(args.exc_value)  # reported once, by the next call
            return
        self._previous_hook(args)

    def _disable(self, exc: BaseException) -> None:
        writer, self._writer = self._writer, None
        self._log(f"tensorboard: cannot write to {self.log_dir} ({_reason(exc)}); TensorBoard logging is off "
                  "for the rest of this run (metrics.csv and checkpoints are not affected)")
        if writer is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - already failed; nothing else to do
                pass

    def _call(self, name: str, *args, **kwargs) -> None:
        if self._writer is None:
            return
        if self._thread_errors:
            self._disable(self._thread_errors[0])
            return
        try:
            getattr(self._writer, name)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any failure only turns TensorBoard off
            self._disable(self._thread_errors[0] if self._thread_errors else exc)

    def add_scalar(self, tag: str, value, step) -> None:
        self._call("add_scalar", tag, value, step)

    def flush(self) -> None:
        self._call("flush")

    def close(self) -> None:
        self._call("close")
        self._writer = None
        if threading.excepthook == self._thread_hook:
            threading.excepthook = self._previous_hook

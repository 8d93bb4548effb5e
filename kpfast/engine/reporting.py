"""A run's metrics as the user sees them: progress bars / log lines, metrics.csv, results.png and
TensorBoard scalars.

TensorBoard can fail without a traceback (docs/files.md, "Errors"): its event writer writes from
a background thread; on a full or read-only disk that thread dies with a traceback and the next
``add_scalar`` raises whatever it caught (sometimes an exception whose text is a bare byte
string). TensorBoard files are a convenience next to ``metrics.csv``: on the first failure
:class:`SafeSummaryWriter` logs one line naming the folder and the reason, and stops TensorBoard
logging for the rest of the run; training goes on.
"""

from __future__ import annotations

import csv
import io
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from kpfast.outputs import atomic_write_bytes

__all__ = ["ProgressReporter", "MetricsLogger", "SafeSummaryWriter", "plot_results"]


class ProgressReporter:
    """A tqdm bar (loss, lr, data time, step time) on a TTY; plain log lines otherwise."""

    def __init__(
        self,
        total: int,
        initial: int = 0,
        desc: str = "",
        enabled: bool = True,
        log_interval: int = 20,
        log: Callable[[str], None] = print,
        stream=None,
    ):
        self.enabled = enabled
        self.total = total
        self.count = initial
        self.desc = desc
        self.log_interval = log_interval
        self.log = log
        self.loss_ema: float | None = None
        self.last_loss: float | None = None
        self.start = time.perf_counter()
        stream = stream if stream is not None else sys.stdout
        self.use_bar = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.bar = None
        if self.use_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=True, file=stream)

    def update(self, loss: float | None, lr: float, data_time: float, step_time: float) -> None:
        """Count one step. ``loss`` is the mean over the steps since the last value (the trainer
        reads losses from the device only every ``log_interval`` steps), None between readings
        and NaN when every step of the interval was skipped as non-finite."""
        if not self.enabled:
            return
        self.count += 1
        if loss is not None:
            self.last_loss = loss
            if loss == loss:  # not NaN
                self.loss_ema = loss if self.loss_ema is None else 0.9 * self.loss_ema + 0.1 * loss
        last = self.last_loss
        loss_text = "-" if last is None else ("skipped" if last != last else f"{last:.4g}")
        if self.bar is not None:
            self.bar.set_postfix_str(
                f"loss {loss_text} lr {lr:.3g} data {data_time * 1e3:.0f}ms step {step_time * 1e3:.0f}ms", refresh=False
            )
            self.bar.update(1)
        elif self.count % self.log_interval == 0 or (self.count == self.total and self.total >= self.log_interval):
            self.log(
                f"{self.desc} step {self.count}/{self.total} loss {loss_text} "
                f"(avg {self.loss_ema if self.loss_ema is not None else float('nan'):.4g}) "
                f"lr {lr:.3g} data {data_time * 1e3:.0f}ms step {step_time * 1e3:.0f}ms"
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class MetricsLogger:
    """metrics.csv with one row per epoch, rewritten atomically after every epoch."""

    def __init__(self, path: Path, history: list[dict] | None = None):
        self.path = Path(path)

    def write(self, history: list[dict]) -> None:
        columns: list[str] = []
        for row in history:
            for key in row:
                if key not in columns:
                    columns.append(key)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        for row in history:
            writer.writerow(row)
        atomic_write_bytes(self.path, buffer.getvalue().encode())


def plot_results(history: list[dict], path: Path) -> None:
    """results.png: training loss (and its terms), learning rate, validation AP/PCK per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    loss_keys = [k for k in (history[0] if history else {}) if k.startswith("train_")]
    for key in loss_keys:
        axes[0].plot(epochs, [row.get(key, float("nan")) for row in history], marker="o", label=key[6:])
    axes[0].set_title("training loss")
    axes[0].set_xlabel("epoch")
    if len(loss_keys) > 0 and all(row.get("train_loss", 0) > 0 for row in history):
        axes[0].set_yscale("log")
    axes[0].legend()
    axes[1].plot(epochs, [row.get("lr", float("nan")) for row in history], marker="o", color="tab:orange")
    axes[1].set_title("learning rate (end of epoch)")
    axes[1].set_xlabel("epoch")
    val_keys = [k for k in ("val_AP", "val_AP50", "val_AP75", "val_AR", "val_PCK") if any(k in row for row in history)]
    for key in val_keys:
        points = [(row["epoch"], row[key]) for row in history if key in row]
        axes[2].plot([p[0] for p in points], [p[1] for p in points], marker="o", label=key[4:])
    axes[2].set_title("validation")
    axes[2].set_xlabel("epoch")
    axes[2].set_ylim(0, 1)
    if val_keys:
        axes[2].legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


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

"""Benchmark fixtures: the device, the result book, and a `measure` helper.

Run with ``python -m pytest benchmarks`` (pytest-benchmark's own options apply, e.g.
``--benchmark-columns=median``). Triton on CPU (the interpreter) is not benchmarked.
"""

import statistics
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ResultBook, copy_bandwidth, device_for_benchmarks, gpu_time_ms, synchronize  # noqa: E402

_book = ResultBook()


def pytest_sessionfinish(session, exitstatus):
    path = _book.save()
    if path is not None:
        print(f"\nbenchmark results merged into {path}")


@pytest.fixture(scope="session")
def device():
    return device_for_benchmarks()


@pytest.fixture(scope="session")
def book():
    return _book


@pytest.fixture
def measure(benchmark, device, book):
    """measure(fn, op=, case=, impl=, bytes_moved=, rounds=) -> record: times ``fn`` with
    pytest-benchmark (wall-clock, synchronised) and, on CUDA, with CUDA events."""

    def run(fn, *, op, case, impl, bytes_moved=None, rounds=10, extra=None):
        def call():
            fn()
            synchronize(device)

        call()  # warm-up: compilation, autotuning, allocator
        if benchmark.disabled:
            # --benchmark-disable: a smoke run. Nothing is timed or saved; callers still get the
            # record's fields (one untimed-quality call's wall-clock) for their own arithmetic.
            start = time.perf_counter()
            call()
            return dict(op=op, case=case, impl=impl, wall_ms=(time.perf_counter() - start) * 1e3, gpu_ms=None,
                        disabled=True)
        benchmark.pedantic(call, rounds=rounds, warmup_rounds=1, iterations=1)
        wall = statistics.median(benchmark.stats.stats.data)
        gpu_ms = gpu_time_ms(fn) if device.type == "cuda" else None
        benchmark.extra_info.update(op=op, case=case, impl=impl, device=str(device))
        record = book.add(op=op, case=case, impl=impl, wall_s=wall, gpu_ms=gpu_ms, bytes_moved=bytes_moved, extra=extra)
        benchmark.extra_info.update({k: v for k, v in record.items() if isinstance(v, (int, float, str))})
        return record

    return run


def kpfast_backends(device):
    """The kpfast kernel backends that can run on ``device`` (Triton only on a GPU)."""
    from kpfast import backends

    names = ["cpu"] if device.type == "cpu" else ["cuda", "triton"]
    return [n for n in names if backends._device_reason(n, device) is None]


def implementations(device):
    """kpfast backends, then the reference in eager mode and under torch.compile."""
    return kpfast_backends(device) + ["torch-eager", "torch-compile"]


@pytest.fixture(scope="session", autouse=True)
def _bandwidth(device):
    copy_bandwidth(device)  # measured once, early, in the same run as every op

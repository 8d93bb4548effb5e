"""Shared benchmark machinery: device description, copy bandwidth, GPU timing, result files.

Every benchmark compares, in one run, the kpfast backends with the torch reference in eager
mode and under torch.compile (docs/design.md, Performance). pytest-benchmark measures
wall-clock; on CUDA, GPU time is measured beside it with CUDA events (median of >= 100
repetitions), and the copy bandwidth of the device is measured in the same run so that each
figure can be stated as a share of it. Results are merged into one JSON file per device under
benchmarks/results/, which benchmarks/report.py turns into the tables of benchmarks/README.md.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import statistics
from pathlib import Path

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def device_for_benchmarks() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{_cpu_name()} ({torch.get_num_threads()} threads)"


def environment(device: torch.device) -> dict:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    from kpfast import _cuda_compat, _extension

    build = _cuda_compat.build_facts() if _extension.has_cuda_kernels() else dict(arches=None, runtime=None)
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    return {
        "device": device_name(device),
        "device_type": device.type,
        "capability": None if capability is None else f"{capability[0]}.{capability[1]}",
        "driver": _cuda_compat.version_text(_cuda_compat.driver_version()),  # the driver's CUDA version
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,  # torch's CUDA
        "kpfast_cudart": _cuda_compat.version_text(build["runtime"]),  # the runtime kpfast._C links
        "kpfast_arches": build["arches"],
        "python": platform.python_version(),
    }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gpu_time_ms(fn, repetitions: int = 200, warmup: int = 20) -> float:
    """Median GPU time of ``fn`` in milliseconds, from CUDA events around each call."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repetitions):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


_copy_bandwidth: dict[str, float] = {}


def copy_bandwidth(device: torch.device, megabytes: int = 256) -> float:
    """Bytes/s of a device-to-device copy (read + write), measured once per run."""
    key = str(device)
    if key not in _copy_bandwidth:
        numel = megabytes * 2**20 // 4
        src = torch.empty(numel, device=device)
        dst = torch.empty_like(src)
        src.fill_(1.0)
        if device.type == "cuda":
            ms = gpu_time_ms(lambda: dst.copy_(src), repetitions=100)
        else:
            import time

            times = []
            for _ in range(5):
                start = time.perf_counter()
                dst.copy_(src)
                times.append(time.perf_counter() - start)
            ms = statistics.median(times) * 1e3
        _copy_bandwidth[key] = 2 * numel * 4 / (ms / 1e3)
    return _copy_bandwidth[key]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def results_path(device: torch.device) -> Path:
    name = device_name(device) if device.type == "cuda" else f"cpu-{_cpu_name()}-{torch.get_num_threads()}t"
    return RESULTS_DIR / f"{slug(name)}.json"


class ResultBook:
    """Collects one run's measurements and merges them into the device's JSON file."""

    def __init__(self) -> None:
        self.records: list[dict] = []
        self.device = device_for_benchmarks()

    def add(self, *, op: str, case: str, impl: str, wall_s: float, gpu_ms: float | None = None,
            bytes_moved: int | None = None, extra: dict | None = None) -> dict:
        seconds = gpu_ms / 1e3 if gpu_ms is not None else wall_s
        record = {"op": op, "case": case, "impl": impl, "wall_ms": wall_s * 1e3, "gpu_ms": gpu_ms,
                  "command": os.environ.get("KPFAST_BENCH_COMMAND", "python -m pytest benchmarks")}
        if bytes_moved is not None:
            bandwidth = copy_bandwidth(self.device)
            record.update(bytes=bytes_moved, GBps=bytes_moved / seconds / 1e9, pct_copy=100 * bytes_moved / seconds / bandwidth)
        record.update(extra or {})
        self.records.append(record)
        return record

    def save(self) -> Path | None:
        if not self.records:
            return None
        path = results_path(self.device)
        path.parent.mkdir(parents=True, exist_ok=True)
        existing = json.loads(path.read_text()) if path.exists() else {"records": []}
        fresh = {(r["op"], r["case"], r["impl"]) for r in self.records}
        kept = [r for r in existing["records"] if (r["op"], r["case"], r["impl"]) not in fresh]
        data = {
            **environment(self.device),
            "copy_bandwidth_GBps": copy_bandwidth(self.device) / 1e9,
            "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": "python -m pytest benchmarks/test_bench_<op>.py (each record names its own command)",
            "records": sorted(kept + self.records, key=lambda r: (r["op"], r["case"], r["impl"])),
        }
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)
        return path

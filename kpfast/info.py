"""``python -m kpfast.info``: what a user runs first after installing kpfast.

Prints the versions (Python, torch, CUDA, Triton, numpy), a warning when torch or Triton lies
outside the tested range (kpfast/versions.py), how ``kpfast._C`` was built and
whether it loaded, each backend's availability (with the reason when it cannot run), then a
short self-test: every op on every available kernel backend against the ``torch`` reference
on small inputs (pass/fail per op and backend) and a quick timing per backend. Exits 1 when
any op disagrees with the reference or fails, 0 otherwise.

    python -m kpfast.info              # report + self-test
    python -m kpfast.info --json       # the same as JSON
    python -m kpfast.info --no-self-test
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback

import torch

from kpfast.versions import untested
from kpfast.vocabulary import DECODE_METHODS, ENCODINGS, LOSS_KINDS


def versions() -> dict:
    import numpy

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return dict(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda,
                triton=triton_version, numpy=numpy.__version__,
                gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None)


def extension() -> dict:
    from kpfast import _extension

    report = dict(loaded=_extension.is_loaded(), cuda_kernels=_extension.has_cuda_kernels(),
                  reason=_extension.unavailable_reason(), build={})
    if _extension.is_loaded():
        report["build"] = dict(item.split("=", 1) for item in torch.ops.kpfast.build_info().split(";") if "=" in item)
    return report


def cuda_compatibility() -> dict:
    """Can the GPUs here run this build's CUDA kernels: the driver's CUDA version, the runtime and
    architectures kpfast._C was built with, and each device's compute capability with the cuda
    backend's reason (None: it runs; kpfast/_cuda_compat.py)."""
    from kpfast import _cuda_compat, _extension

    build = _cuda_compat.build_facts() if _extension.has_cuda_kernels() else dict(arches=None, runtime=None)
    devices = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            capability = _cuda_compat.device_facts(index)["capability"]
            reason = (_cuda_compat.device_reason(index) if _extension.has_cuda_kernels()
                      else "cuda: the extension was built without CUDA")
            devices.append(dict(index=index, name=torch.cuda.get_device_name(index),
                                capability=f"{capability[0]}.{capability[1]}", reason=reason))
    return dict(driver=_cuda_compat.version_text(_cuda_compat.driver_version()),
                runtime=_cuda_compat.version_text(build["runtime"]), arches=build["arches"], devices=devices)


def print_cuda_compatibility(report: dict) -> None:
    print("CUDA (kpfast._C's kernels on this machine's GPUs)")
    print(f"  driver   {'CUDA ' + report['driver'] if report['driver'] else 'none found'}")
    print(f"  runtime  {'CUDA ' + report['runtime'] if report['runtime'] else 'not in this build'}")
    print(f"  arches   {report['arches'] or 'none (built without CUDA)'}")
    for device in report["devices"]:
        verdict = "runs the cuda backend" if device["reason"] is None else device["reason"]
        print(f"  cuda:{device['index']}   {device['name']}, compute {device['capability']}: {verdict}")
    if not report["devices"]:
        print("  no GPU")


def _devices() -> list[torch.device]:
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def backend_table() -> dict:
    """{backend: {device: None (available) or the reason it is not}}."""
    from kpfast import backends

    return {name: {str(device): backends._device_reason(name, device) for device in _devices()}
            for name in backends.BACKENDS}


# ---- self-test ----------------------------------------------------------------------------

def _inputs(device: torch.device) -> dict:
    generator = torch.Generator().manual_seed(0)
    batch, keypoints, height, width = 2, 5, 20, 15
    coords = torch.rand(batch, keypoints, 2, generator=generator) * torch.tensor([width - 1.0, height - 1.0])
    weights = torch.ones(batch, keypoints)
    weights[0, 1] = 0.0  # an invisible keypoint
    maps = torch.rand(batch, keypoints, height, width, generator=generator) * 0.2
    rows = torch.arange(height, dtype=torch.float32)[:, None]
    cols = torch.arange(width, dtype=torch.float32)[None, :]
    maps += torch.exp(-((cols - coords[..., :1, None]) ** 2 + (rows - coords[..., 1:, None]) ** 2) / 4.0)
    probe = torch.randn(batch, keypoints, 2, generator=generator)
    return {k: v.to(device) for k, v in dict(keypoints=coords, weights=weights, maps=maps, probe=probe).items()}


def _cases(x: dict) -> dict:
    """{case name: fn(backend) -> tuple of tensors to compare with the reference}."""
    from kpfast import ops

    size = x["maps"].shape[-2:]

    def render(encoding):
        return lambda b: ops.render_heatmaps(x["keypoints"], x["weights"], size=size, sigma=2.0, encoding=encoding,
                                             backend=b)

    def loss(kind):
        def run(b):
            pred = x["maps"].clone().requires_grad_(True)
            value = ops.heatmap_loss(pred, x["keypoints"], x["weights"], sigma=2.0, kind=kind, backend=b)
            value.backward()
            return value.detach(), pred.grad

        return run

    def decode(method):
        return lambda b: ops.decode_heatmaps(x["maps"], method=method, backend=b)

    def soft(b):
        maps = x["maps"].clone().requires_grad_(True)
        coords, scores = ops.soft_argmax(maps, beta=4.0, backend=b)
        (coords * x["probe"]).sum().backward()
        return coords.detach(), scores, maps.grad

    def render_backward(encoding):
        def run(b):
            keypoints = x["keypoints"].clone().requires_grad_(True)
            heatmaps, _ = ops.render_heatmaps(keypoints, x["weights"], size=size, sigma=2.0, encoding=encoding,
                                              backend=b)
            (heatmaps * x["maps"]).sum().backward()
            return heatmaps.detach(), keypoints.grad

        return run

    def fused_loss(b):
        # The Triton gradient-in-forward opt-in (its fused forward and, for an upstream it did not
        # expect, its rescale kernel); the other backends take the ordinary path.
        pred = x["maps"].clone().requires_grad_(True)
        value = ops.heatmap_loss(pred, x["keypoints"], x["weights"], sigma=2.0, kind="focal", reduction="none",
                                 fused_gradient=True, backend=b)
        (value * x["probe"][..., 0]).sum().backward()
        return value.detach(), pred.grad

    cases = {f"render_heatmaps[{e}]": render(e) for e in ENCODINGS}
    cases["render_heatmaps fwd+bwd[udp]"] = render_backward("udp")
    cases.update({f"heatmap_loss fwd+bwd[{k}]": loss(k) for k in LOSS_KINDS})
    cases["heatmap_loss fwd+bwd[focal, fused gradient]"] = fused_loss
    cases.update({f"decode_heatmaps[{m}]": decode(m) for m in DECODE_METHODS})
    cases["soft_argmax fwd+bwd"] = soft
    cases["find_peaks"] = lambda b: ops.find_peaks(x["maps"], threshold=0.5, min_distance=2, max_peaks=4, backend=b)
    return cases


def _agree(got, expected) -> str | None:
    for index, (g, e) in enumerate(zip(got, expected)):
        if g.dtype == torch.bool or e.dtype == torch.bool:
            if not torch.equal(g.cpu(), e.cpu()):
                return f"output {index} differs"
            continue
        try:
            torch.testing.assert_close(g.float().cpu(), e.float().cpu(), rtol=1e-4, atol=1e-4, equal_nan=True)
        except AssertionError as error:
            return f"output {index}: {str(error).splitlines()[1] if len(str(error).splitlines()) > 1 else error}"
    return None


def _synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def self_test(repeats: int = 3) -> list[dict]:
    """One row per (backend, device): each op's pass/fail and the best time of one pass over all ops."""
    from kpfast import backends

    rows = []
    for device in _devices():
        x = _inputs(device)
        cases = _cases(x)
        expected = {name: fn("torch") for name, fn in cases.items()}
        for backend in ("torch", "cpu", "cuda", "triton"):
            reason = backends._device_reason(backend, device)
            row = dict(backend=backend, device=str(device), skipped=reason, results={}, ms=None)
            rows.append(row)
            if reason is not None:
                continue
            for name, fn in cases.items():
                try:
                    problem = _agree(fn(backend), expected[name])
                except Exception as error:  # noqa: BLE001 - a crash is a failure to report, not to hide
                    problem = f"{type(error).__name__}: {error}"
                    traceback.print_exc(file=sys.stderr)
                row["results"][name] = problem or "ok"
            if all(v == "ok" for v in row["results"].values()):
                best = float("inf")
                for _ in range(repeats):
                    _synchronize(device)
                    start = time.perf_counter()
                    for fn in cases.values():
                        fn(backend)
                    _synchronize(device)
                    best = min(best, time.perf_counter() - start)
                row["ms"] = round(best * 1e3, 3)
    return rows


def failed(rows: list[dict]) -> list[str]:
    return [f"{r['backend']} on {r['device']}: {name}: {result}" for r in rows for name, result in r["results"].items()
            if result != "ok"]


def _print(report: dict) -> None:
    print("kpfast environment")
    for key, value in report["versions"].items():
        print(f"  {key:8s} {value}")
    for warning in report["version_warnings"]:
        print(f"  WARNING: {warning}")
    ext = report["extension"]
    built = ", ".join(f"{k}={v}" for k, v in ext["build"].items())
    print(f"  kpfast._C {'loaded' if ext['loaded'] else 'NOT loaded'}" + (f" ({built})" if built else "")
          + (f": {ext['reason']}" if ext["reason"] else ""))
    if "cuda_compatibility" in report:
        print_cuda_compatibility(report["cuda_compatibility"])
    print("backends")
    for name, devices in report["backends"].items():
        for device, reason in devices.items():
            print(f"  {name:7s} {device:5s} {'available' if reason is None else 'unavailable: ' + reason}")
    if "self_test" not in report:
        return
    print("self-test against the torch reference (small inputs; time = one pass over every case)")
    for row in report["self_test"]:
        label = f"  {row['backend']:7s} {row['device']:5s}"
        if row["skipped"]:
            print(f"{label} skipped ({row['skipped']})")
            continue
        bad = {k: v for k, v in row["results"].items() if v != "ok"}
        timing = f", {row['ms']:.1f} ms" if row["ms"] is not None else ""
        print(f"{label} {len(row['results']) - len(bad)}/{len(row['results'])} pass{timing}")
        for name, problem in bad.items():
            print(f"      FAIL {name}: {problem}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kpfast.info", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-self-test", action="store_true", help="versions and backends only")
    args = parser.parse_args(argv)
    import kpfast  # noqa: F401  (loads the extension, registers the ops)

    found = versions()
    report = dict(versions=found, version_warnings=untested(found), extension=extension(),
                  backends=backend_table(), cuda_compatibility=cuda_compatibility())
    for warning in report["version_warnings"]:
        print(f"kpfast.info: WARNING: {warning}", file=sys.stderr)
    if not args.no_self_test:
        report["self_test"] = self_test()
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        _print(report)
    problems = failed(report.get("self_test", []))
    if problems:
        print(f"self-test FAILED ({len(problems)} mismatches)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Turn benchmarks/results/*.json into Markdown tables (benchmarks/README.md) and a summary (README.md).

    python benchmarks/report.py            # rewrite both generated sections and the plots
    python benchmarks/report.py --print    # print the tables only

benchmarks/README.md gets one table per device and op: a row per case, a column per
implementation (median time; GPU time on CUDA, wall-clock on CPU), then the best kpfast backend's
speed-up over eager and over torch.compile and, where the op's minimal traffic is known, its
share of copy bandwidth. The top-level README gets a few lines per device (the range of those
speed-ups per op) and one plot.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
TABLES = ROOT / "benchmarks" / "README.md"
START, END = "<!-- benchmark-results:start -->", "<!-- benchmark-results:end -->"
SUMMARY_START, SUMMARY_END = "<!-- benchmark-summary:start -->", "<!-- benchmark-summary:end -->"
REFERENCE_IMPLS = ("torch-eager", "torch-compile")
BASELINES = ("numpy-opencv",) + REFERENCE_IMPLS  # what kpfast is compared with, never "best kpfast"


def _time_ms(record: dict) -> float:
    return record["gpu_ms"] if record.get("gpu_ms") is not None else record["wall_ms"]


def _fmt_ms(ms: float) -> str:
    return f"{ms * 1e3:.0f} us" if ms < 1 else f"{ms:.2f} ms" if ms < 100 else f"{ms:.0f} ms"


def tables_for(data: dict) -> str:
    by_op: dict[str, dict[str, dict[str, dict]]] = defaultdict(lambda: defaultdict(dict))
    for record in data["records"]:
        by_op[record["op"]][record["case"]][record["impl"]] = record
    timing = "GPU time (CUDA events, median)" if data["device_type"] == "cuda" else "wall-clock (median)"
    lines = [
        f"#### {data['device']}",
        "",
        f"torch {data['torch']}, Triton {data['triton']}, CUDA {data['cuda']}; {timing}; "
        f"copy bandwidth {data['copy_bandwidth_GBps']:.1f} GB/s; updated {data['updated']}; "
        f"command: `{data['command']}`",
        "",
    ]
    for op, cases in sorted(by_op.items()):
        if op.startswith("train_step"):
            lines += _train_step_table(op, cases)
            continue
        impls = sorted({i for c in cases.values() for i in c}, key=lambda i: (i in BASELINES, i))
        kpfast_impls = [i for i in impls if i not in BASELINES]
        header = ["case", *impls, "best kpfast vs eager", "vs compile", "% of copy bw"]
        lines += [f"**{op}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for case, records in sorted(cases.items()):
            row = [case] + [_fmt_ms(_time_ms(records[i])) if i in records else "-" for i in impls]
            best = min((records[i] for i in kpfast_impls if i in records), key=_time_ms, default=None)
            for ref in REFERENCE_IMPLS:
                row.append(f"{_time_ms(records[ref]) / _time_ms(best):.1f}x" if best and ref in records else "-")
            row.append(f"{best['pct_copy']:.0f}%" if best and best.get("pct_copy") is not None else "-")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(data: dict, path: Path) -> None:
    """One panel per op: median time of every implementation for every case (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_op: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for record in data["records"]:
        by_op[record["op"]][record["impl"]][record["case"]] = _time_ms(record)
    fig, axes = plt.subplots(len(by_op), 1, figsize=(11, 3.2 * len(by_op)), squeeze=False)
    for ax, (op, impls) in zip(axes[:, 0], sorted(by_op.items())):
        cases = sorted({c for times in impls.values() for c in times})
        width = 0.8 / len(impls)
        for i, (impl, times) in enumerate(sorted(impls.items(), key=lambda kv: (kv[0] in BASELINES, kv[0]))):
            xs = [j + i * width for j, c in enumerate(cases) if c in times]
            ax.bar(xs, [times[c] for c in cases if c in times], width, label=impl)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cases))])
        ax.set_xticklabels(cases, rotation=20, ha="right", fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("ms (median)")
        ax.set_title(f"{op} on {data['device']}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _train_step_table(op: str, cases: dict[str, dict[str, dict]]) -> list[str]:
    """End-to-end rows: step time and the heatmap work inside it, per ops backend."""
    lines = [f"**{op}** (end to end)", "",
             "| case | ops | step | heatmap loss fwd+bwd | share of step | decode (DARK) per val batch |",
             "|---|---|---|---|---|---|"]
    for case, records in sorted(cases.items()):
        for impl, r in sorted(records.items()):
            lines.append(f"| {case} | {impl} | {_fmt_ms(_time_ms(r))} | {_fmt_ms(r['loss_fwd_bwd_ms'])} | "
                         f"{r['loss_share_pct']:.1f}% | {_fmt_ms(r['decode_ms_per_val_batch'])} |")
    return lines + [""]


def _speedups(data: dict) -> dict[str, tuple[list[float], list[float]]]:
    """Per op: the best kpfast backend's speed-ups over eager and over torch.compile, one per case."""
    by_op: dict[str, dict[str, dict[str, dict]]] = defaultdict(lambda: defaultdict(dict))
    for record in data["records"]:
        by_op[record["op"]][record["case"]][record["impl"]] = record
    out = {}
    for op, cases in sorted(by_op.items()):
        if op.startswith("train_step"):
            continue
        eager, compiled = [], []
        for records in cases.values():
            mine = [r for impl, r in records.items() if impl not in BASELINES]
            if not mine:
                continue
            best = _time_ms(min(mine, key=_time_ms))
            if "torch-eager" in records:
                eager.append(_time_ms(records["torch-eager"]) / best)
            if "torch-compile" in records:
                compiled.append(_time_ms(records["torch-compile"]) / best)
        out[op] = (eager, compiled)
    return out


def _range(values: list[float]) -> str:
    return "-" if not values else f"{min(values):.1f}x" if min(values) == max(values) else \
        f"{min(values):.1f}-{max(values):.1f}x"


def summary_for(data: dict) -> str:
    lines = [f"**{data['device']}** (torch {data['torch']}; {len(data['records'])} measurements): best kpfast "
             "backend vs the torch reference, eager / torch.compile, range over the cases:", ""]
    for op, (eager, compiled) in _speedups(data).items():
        lines.append(f"- `{op}`: {_range(eager)} / {_range(compiled)}")
    return "\n".join(lines) + "\n"


def _results() -> list[tuple[Path, dict]]:
    return [(f, json.loads(f.read_text())) for f in sorted(RESULTS.glob("*.json"))]


def report(make_plots: bool = False, link_base: Path = ROOT / "benchmarks") -> str:
    """All devices' tables; plot links are relative to ``link_base`` (the folder of the page)."""
    results = _results()
    if not results:
        return "_No benchmark results yet: run `python -m pytest benchmarks`._\n"
    parts = []
    for f, data in results:
        text = tables_for(data)
        if make_plots:
            image = f.with_suffix(".png")
            plot(data, image)
            text += f"\n![{data['device']}]({image.relative_to(link_base).as_posix()})\n"
        parts.append(text)
    return "\n".join(parts)


def summary() -> str:
    """A few lines per device for the top-level README, and the plot of the largest result set."""
    results = _results()
    if not results:
        return "_No benchmark results yet: run `python -m pytest benchmarks`._\n"
    text = "\n".join(summary_for(data) for _, data in results)
    f, data = max(results, key=lambda item: len(item[1]["records"]))
    image = f.with_suffix(".png")
    if image.exists():
        text += f"\n![{data['device']}]({image.relative_to(ROOT).as_posix()})\n"
    return text


def _replace_between(path: Path, start: str, end: str, text: str) -> None:
    page = path.read_text()
    if start not in page or end not in page:
        raise SystemExit(f"{path.relative_to(ROOT)} lacks the markers {start} ... {end}")
    page = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: f"{start}\n{text}\n{end}", page,
                  flags=re.S)
    path.write_text(page)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--print", action="store_true", help="print the tables instead of updating the pages")
    args = parser.parse_args()
    if args.print:
        print(report(make_plots=False))
        return
    _replace_between(TABLES, START, END, report(make_plots=True))
    _replace_between(README, SUMMARY_START, SUMMARY_END, summary())
    print(f"benchmarks/README.md tables and README.md summary updated from {len(_results())} file(s)")


if __name__ == "__main__":
    main()

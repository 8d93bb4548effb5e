"""Static resource table of every GPU kernel: registers, spills, shared memory, SASS size.

No GPU needed. Triton kernels come from kpfast.triton.aot (each specialisation compiled for
sm_90 / sm_80); CUDA kernels from the SASS embedded in a CUDA-built ``kpfast/_C.so``
(``cuobjdump --dump-resource-usage`` and ``cuobjdump -sass``).

    python benchmarks/resources.py --label after                      # runs the AOT compile itself
    python benchmarks/resources.py --label after --triton-json aot.json --so kpfast/_C.so
    python benchmarks/resources.py --check                            # budgets only, exit 1 on a violation

Writes ``benchmarks/results/resources.json`` (every record, per label: "before" = main before
issue 11, "after" = this tree) and ``benchmarks/results/RESOURCES.md`` (one row per kernel
family, before -> after). Columns:

* regs: registers per thread (max over the family's specialisations);
* spill: Triton: ptxas's spill stores + loads in bytes per thread; CUDA: the per-thread local
  memory frame (``LOCAL``, spills and local arrays alike: both mean per-thread DRAM traffic);
* smem: static shared memory per block in bytes (Triton: the compiled kernel's ``shared``);
* sass: static SASS instructions of the kernel;
* loop/elem: SASS instructions of the largest innermost loop times the threads of a program,
  over the map elements one iteration handles: instructions issued per map element (Triton
  kernels whose hot loop walks map pixels; blank elsewhere);
* loop bytes: global bytes per thread that loop's loads/stores move (LDG/STG widths), so
  16-byte vector accesses show as such.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

# Register budgets per kernel family (the gate; spills are never allowed). One reason each.
BUDGETS = {
    # Triton: 4 warps per program; <= 128 registers keeps >= 4 programs (16 warps) per SM.
    "render._render_forward_kernel": (128, "one tile per program, latency hidden by >= 4 programs per SM"),
    "render._render_backward_kernel": (255, "rare path (coordinate/sigma gradients) with an N^2 instance loop; gate: no spills"),
    "loss._loss_forward_kernel": (255, "issue 13 redesigns the tiles; until then the gate is: no spills"),
    "loss._loss_backward_kernel": (255, "issue 13 redesigns the tiles; until then the gate is: no spills"),
    "loss._loss_fused_forward_kernel": (255, "opt-in gradient-in-forward (loss and gradient of a tile); gate: no spills"),
    "loss._loss_rescale_kernel": (64, "elementwise in-place rescale: full occupancy"),
    "decode._decode_kernel": (168, "one program per map, bandwidth-bound: 3 programs per SM suffice"),
    "decode._soft_argmax_kernel": (128, "one program per map, needs >= 4 programs per SM to hide latency"),
    "decode._soft_argmax_backward_kernel": (64, "elementwise: full occupancy"),
    "decode._find_peaks_kernel": (255, "issue 13 redesigns it; until then the gate is: no spills"),
    # CUDA kernels (256-thread blocks): <= 64 registers keeps full occupancy (2048 threads/SM).
    "cuda": (64, "256-thread blocks: <= 64 registers keeps 8 blocks (full occupancy) per SM"),
    "cuda float64": (128, "float64 instantiations (render with float64 keypoints, soft-argmax on float64 maps) "
                          "serve gradcheck-precision use off the training path; each value takes two registers"),
}


def budget_for(kernel: str, name: str = "") -> int:
    if kernel in BUDGETS:
        return BUDGETS[kernel][0]
    return BUDGETS["cuda float64" if "<double" in name else "cuda"][0]


def _tool(name: str) -> str | None:
    sys.path.insert(0, str(ROOT))
    from kpfast.triton.aot import _tool as find

    return find(name)


# ---- CUDA ---------------------------------------------------------------------------------

def cuda_records(so_path: str) -> tuple[list[dict], str | None]:
    """Per CUDA kernel in ``so_path``: registers, local/shared bytes, SASS size. (records, skip reason)."""
    sys.path.insert(0, str(ROOT))
    from kpfast.triton.aot import resource_usage, sass_summary

    if not os.path.exists(so_path):
        return [], f"{so_path} does not exist"
    cuobjdump = _tool("cuobjdump")
    if cuobjdump is None:
        return [], "no cuobjdump (neither in triton's wheel nor /usr/local/cuda/bin)"
    listing = subprocess.run([cuobjdump, "--list-elf", so_path], capture_output=True, text=True)
    if listing.returncode != 0 or "sm_" not in listing.stdout:
        return [], f"{so_path} holds no CUDA device code (built without CUDA)"
    usage = resource_usage(so_path)
    sass = subprocess.run([cuobjdump, "-sass", so_path], capture_output=True, text=True, check=True).stdout
    per_function = {}
    current, lines = None, []
    for line in sass.splitlines():
        match = re.match(r"\s*Function : (\S+)", line)
        if match:
            if current:
                per_function[current] = "\n".join(lines)
            current, lines = match.group(1), []
        elif current:
            lines.append(line)
    if current:
        per_function[current] = "\n".join(lines)
    names = list(usage)
    demangled = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout.split("\n")
    records = []
    for mangled, pretty in zip(names, demangled):
        pretty = re.sub(r"^void ", "", pretty.replace("(anonymous namespace)::", ""))
        short = re.sub(r"^kpfast::", "", re.sub(r"\([^()]*\)$", "", pretty))
        family = "cuda." + re.sub(r"<.*", "", short)
        record = dict(kernel=family, name=short, mangled=mangled, **usage[mangled])
        record.update(spill=record["local"], **sass_summary(per_function.get(mangled, "")))
        records.append(record)
    return records, None


# ---- Triton -------------------------------------------------------------------------------

def triton_records(json_path: str | None, arch: list[int]) -> list[dict]:
    if json_path is None:
        with tempfile.TemporaryDirectory() as tmp:
            json_path = os.path.join(tmp, "aot.json")
            env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
            subprocess.run([sys.executable, "-m", "kpfast.triton.aot", "--arch", *map(str, arch), "--sizes",
                            "64x48,96x72", "--json", json_path], cwd=ROOT, env=env)
            return json.load(open(json_path))["records"]
    return json.load(open(json_path))["records"]


def _with_spill(record: dict) -> dict:
    if "spill" not in record and record.get("ok"):
        record["spill"] = record["spill_stores"] + record["spill_loads"]
    return record


# ---- checks and table ---------------------------------------------------------------------

def violations(records: list[dict]) -> list[str]:
    problems = []
    for r in records:
        if r.get("ok") is False:
            problems.append(f"{r['name']} (sm_{r['arch']}): does not compile: {r['error'][:200]}")
            continue
        if r.get("spill", 0) > 0:
            problems.append(f"{r['name']}: spills ({r['spill']} bytes per thread)")
        budget = budget_for(r["kernel"], r.get("name", ""))
        if r["regs"] > budget:
            problems.append(f"{r['name']}: {r['regs']} registers > budget {budget}")
    return problems


def _family(r: dict) -> str:
    parts = [r["kernel"]]
    for key in ("kind", "method", "dtype"):
        if r.get(key):
            parts.append(str(r[key]))
    if r.get("arch") is not None:
        parts.append(f"sm_{r['arch']}")
    return " ".join(parts) if not r["kernel"].startswith("cuda.") else r["name"]


def summarise(records: list[dict]) -> dict:
    families = collections.OrderedDict()
    for r in records:
        families.setdefault(_family(r), []).append(r)
    out = {}
    for family, group in families.items():
        ok = [r for r in group if r.get("ok", True)]
        row = dict(count=len(group), failed=len(group) - len(ok))
        for key in ("regs", "spill", "shared", "sass", "loop_sass_per_element", "loop_global_bytes"):
            values = [r[key] for r in ok if r.get(key) is not None]
            row[key] = max(values) if values else None
        out[family] = row
    return out


def _cell(before, after, key):
    def show(row):
        if row is None:
            return "-"
        if row["failed"] and row[key] is None:
            return "FAIL"
        value = "" if row[key] is None else str(row[key])
        return value + (f" ({row['failed']}/{row['count']} fail)" if row["failed"] else "")
    b, a = show(before), show(after)
    return a if b == a else f"{b} -> {a}"


def markdown(book: dict) -> str:
    lines = ["# Static resources of every GPU kernel", "",
             "Generated by `python benchmarks/resources.py` (see its docstring for the columns); before = main "
             "before issue 11, after = this tree. Triton: max over the specialisations in the table's AOT run "
             "(committed: `python -m kpfast.triton.aot --quick --arch 90 --sizes 64x48`, one per kernel, "
             "kind and method; `python -m kpfast.triton.aot --arch 80 90` compiles every encoding/kind/"
             "method/dtype/instance variant at 64x48 and 96x72, and `python benchmarks/resources.py "
             "--check` fails on any spill or budget overrun among them); CUDA: the SASS in a CUDA-built "
             "`kpfast/_C.so` (sm_90).", ""]
    for part in ("triton", "cuda"):
        before = summarise([_with_spill(r) for r in book.get("before", {}).get(part, [])])
        after = summarise([_with_spill(r) for r in book.get("after", {}).get(part, [])])
        reasons = {label: book.get(label, {}).get(f"{part}_skipped") for label in ("before", "after")}
        lines += [f"## {part}", ""]
        for label, reason in reasons.items():
            if reason:
                lines.append(f"*{label}: skipped: {reason}*")
        lines += ["", "| kernel | regs | spill | smem | sass | loop/elem | loop bytes |", "|---|---|---|---|---|---|---|"]
        for family in list(dict.fromkeys(list(before) + list(after))):
            b, a = before.get(family), after.get(family)
            cells = [_cell(b, a, key) for key in ("regs", "spill", "shared", "sass", "loop_sass_per_element",
                                                  "loop_global_bytes")]
            lines.append(f"| {family} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Register budgets", ""] + [f"- `{k}`: {v[0]} ({v[1]})" for k, v in BUDGETS.items()] + [""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="static GPU resource table")
    parser.add_argument("--label", default="after", choices=["before", "after"])
    parser.add_argument("--triton-json", help="kpfast.triton.aot output (default: run it)")
    parser.add_argument("--so", default=str(ROOT / "kpfast" / "_C.so"), help="a CUDA-built _C.so")
    parser.add_argument("--arch", type=int, nargs="+", default=[90, 80])
    parser.add_argument("--no-triton", action="store_true")
    parser.add_argument("--check", action="store_true", help="exit 1 on a spill or budget violation of --label")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    out = Path(args.out)
    book_path = out / "resources.json"
    book = json.loads(book_path.read_text()) if book_path.exists() else {}
    entry = book.setdefault(args.label, {})
    if not args.no_triton:
        entry["triton"] = triton_records(args.triton_json, args.arch)
    cuda, reason = cuda_records(args.so)
    if reason is None or "cuda" not in entry:  # a CPU-only build never overwrites recorded CUDA figures
        entry["cuda"], entry["cuda_skipped"] = cuda, reason
    if reason:
        print(f"CUDA kernels skipped: {reason}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    book_path.write_text(json.dumps(book, indent=1))
    (out / "RESOURCES.md").write_text(markdown(book))
    print(f"wrote {book_path} and {out / 'RESOURCES.md'}")
    problems = violations([_with_spill(r) for r in entry.get("triton", []) + entry.get("cuda", [])])
    for problem in problems:
        print("VIOLATION:", problem, file=sys.stderr)
    return 1 if (args.check and problems) else 0


if __name__ == "__main__":
    sys.exit(main())

"""Static resource table of every GPU kernel, with a bandwidth model: no GPU needed.

Triton kernels come from tools/triton_aot.py (each specialisation compiled for sm_90 / sm_80);
CUDA kernels from the SASS embedded in a CUDA-built ``kpfast/_C.so`` (``cuobjdump -arch sm_90``:
``--dump-resource-usage``, ``-sass`` and ``-elf`` for ``__launch_bounds__``).

    python benchmarks/resources.py --so kpfast/_C.so --triton-json aot.json      # "after" = this tree
    python benchmarks/resources.py --before-so /work/before_C.so \
        --before-triton-json benchmarks/results/triton_aot_before.json            # also recompute "before"
    python benchmarks/resources.py --check             # runs the full AOT itself; exit 1 on a spill/budget
    # one CUDA file while editing it, no extension build: --so takes a cubin too
    tools/ptxas_report.sh csrc/cuda/loss.cu --arch 90 && cp -r benchmarks/results /tmp/r && \
        python benchmarks/resources.py --no-triton --so /tmp/kpfast_loss_sm90.cubin --out /tmp/r

Writes ``benchmarks/results/resources.json`` (every record, per label; "before" is kept from the
file unless recomputed, so the table regenerates without the before build) and
``benchmarks/results/RESOURCES.md`` (one row per kernel family, before -> after). Columns:

* regs: registers per thread (max over the family's specialisations);
* spill: Triton: ptxas's spill stores + loads in bytes per thread; CUDA: the per-thread local
  memory frame (``LOCAL``, spills and local arrays alike: both mean per-thread DRAM traffic);
* smem: shared memory per block in bytes (Triton: the launcher's dynamic shared memory);
* sass: static SASS instructions of the kernel;
* div64: 64-bit integer divisions / remainders anywhere in the kernel (``I2F.U64.RP`` / ``.S64``
  expansions, tools/triton_aot.py's int64_divisions); ``--check`` fails on any;
* vec: the widest global access of map elements in the hot loop, in bytes (16: 16-byte vectors;
  the element size: scalar accesses). Triton kernels are compiled with the integer arguments'
  divisibility the JIT launcher gives them at that size (tools/triton_aot.py's launcher_ints): at
  64x48 every size and stride is a multiple of 16, so the launcher lets Triton vectorise;
* el/it: map elements one thread handles per iteration of the hot loop (the loop that moves the
  map, chosen by ``sass_summary`` (tools/triton_aot.py); "kernel" when no loop does: a straight-line
  tile). Triton: the program's tile (``BLOCK``, ``BLOCK_H * BLOCK_W``) over its threads. CUDA:
  derived from the loop's global traffic per thread and the op's element size, the element type
  being the kernel's template argument (``float``, ``c10::BFloat16``, ...; render: the last type
  argument, the map's; others: the first): writes of the map (render forward) = store bytes /
  size; reads (loss forward, decode, soft-argmax, find_peaks, render backward) = load bytes /
  size; reads + writes (loss backward, soft-argmax backward) = store bytes / size (the gradient is
  the loop's only map-sized store; other loads in it are per-map scalars);
* loop/elem: SASS instructions of the hot loop (its whole span: nested loops once, i.e. one
  instance per map, and untaken paths too, so an upper bound) per map element: thread
  instructions issued per element;
* B/elem: global bytes the hot loop moves per element (LDG/STG/LDGSTS widths, so 16-byte vector
  accesses show as such); the op's minimum is its element size (x2 for reads + writes);
* warps/SM: resident warps per SM on sm_90 from registers, threads and shared memory per block
  (CUDA threads per block: ``__launch_bounds__`` when the kernel declares it, else 256 assumed,
  marked ``*``);
* issue, latency: the two bounds of the model below, as fractions of HBM bandwidth; model: the
  smaller, capped at 1: the fraction of copy bandwidth the kernel can reach at best.

The model (H100 SXM, constants and sources in ``H100`` below, for rows of every arch; a model,
not a measurement:
measured figures come only from GPU runs, ``benchmarks/results/*gpu*``):

* issue bound: elements/s = SMs * 4 warp-instructions/clock * 32 lanes * clock / loop/elem,
  times the op's bytes per element, over HBM bandwidth. It counts every instruction as one issue
  slot: the slower pipes (MUFU, FP64, shared memory) are not modelled, so it is optimistic;
* latency bound (Little's law): bytes in flight = warps/SM * SMs * the bytes one warp loads per
  hot-loop iteration (loads only: a warp waits for loads, never for stores) before it waits,
  over (HBM bandwidth * DRAM latency); scaled by the op's total / loaded bytes per element for
  reads + writes. Store-only loops are not latency bound ("n/a"). Loads of the next iteration
  that the compiler hoists are not credited, so it is pessimistic for software-pipelined loops.
  It assumes the grid fills every SM to its occupancy: a kernel with one warp per map at a small
  batch has fewer warps in flight than warps/SM says.

Only the hot loop is modelled: per-map work outside it (reductions, DARK refinement, instance
setup) is not, nor a second pass over the map (a kernel that reads the map twice shows one pass).

A row with no figure says why in its note (no element type in the name, no rule for the name,
no loop and no access that moves the map).
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
TOOLS = ROOT / "tools"  # the Triton AOT gate, a developer tool outside the package
sys.path.insert(0, str(TOOLS))
RESULTS = ROOT / "benchmarks" / "results"

# Register budgets per kernel family (the gate; spills are never allowed). One reason each.
BUDGETS = {
    # Triton: 4 warps per program; <= 128 registers keeps >= 4 programs (16 warps) per SM.
    "render._render_forward_kernel": (128, "one tile per program, latency hidden by >= 4 programs per SM"),
    "render._render_backward_kernel": (255, "rare path (coordinate/sigma gradients) with an N^2 instance loop; gate: no spills"),
    "loss._loss_forward_kernel": (255, "tiles sized per loss kind (loss.py TILE_BY_KIND) to the largest that compile unspilled; gate: no spills"),
    "loss._loss_backward_kernel": (255, "tiles sized per loss kind (loss.py TILE_BY_KIND) to the largest that compile unspilled; gate: no spills"),
    "loss._loss_fused_forward_kernel": (255, "opt-in gradient-in-forward (loss and gradient of a tile); gate: no spills"),
    "loss._loss_rescale_kernel": (64, "elementwise in-place rescale: full occupancy"),
    "decode._decode_kernel": (168, "one program per map, bandwidth-bound: 3 programs per SM suffice"),
    "decode._soft_argmax_kernel": (128, "one program per map, needs >= 4 programs per SM to hide latency"),
    "decode._soft_argmax_backward_kernel": (64, "elementwise: full occupancy"),
    "decode._find_peaks_kernel": (128, "one program per map walking 1024-pixel tiles (77-121 registers under its "
                                       "ceiling): <= 128 keeps >= 4 programs (16 warps) per SM"),
    # CUDA kernels (256-thread blocks): <= 64 registers keeps 4 blocks (32 warps, half occupancy) per SM;
    # full occupancy (64 warps) needs <= 32.
    "cuda": (64, "256-thread blocks: <= 64 registers keeps 4 blocks (32 warps) per SM"),
    "cuda float64": (128, "float64 instantiations (render with float64 keypoints, soft-argmax on float64 maps) "
                          "serve gradcheck-precision use off the training path; each value takes two registers"),
}


def budget_for(kernel: str, name: str = "") -> int:
    if kernel in BUDGETS:
        return BUDGETS[kernel][0]
    return BUDGETS["cuda float64" if "<double" in name else "cuda"][0]


def _tool(name: str) -> str | None:
    sys.path.insert(0, str(ROOT))
    from triton_aot import _tool as find

    return find(name)


# ---- the machine of the model -------------------------------------------------------------

# H100 SXM5 (sm_90), every constant of the model in one place.
H100 = dict(
    name="H100 SXM",
    sms=132,                # NVIDIA H100 Tensor Core GPU datasheet / architecture whitepaper (SXM5: 132 SMs)
    clock_hz=1.755e9,       # sustained SM clock assumed by the kernel redesign (the SXM5's max boost is 1.98 GHz; 1.755
                            # GHz is H100 PCIe's boost): a conservative clock for a memory-bound kernel
    hbm_bytes_per_s=3.35e12,  # H100 SXM5 datasheet: HBM3, 3.35 TB/s
    latency_s=700e-9,       # loaded DRAM latency, ~600-800 ns (the range the kernel redesign assumed; the middle
                            # is used)
    issue_per_clock=4,      # Hopper whitepaper: 4 SM sub-partitions, one warp instruction issued each per clock
    lanes=32,
    # occupancy rules, CUDA C++ Programming Guide "Technical Specifications per Compute Capability"
    # (9.0) and the CUDA occupancy calculator's allocation granularities:
    max_warps=64, max_blocks=32, registers=65536, register_unit=256,  # registers allocated per warp, 256 at a time
    shared=228 * 1024, shared_reserved=1024, shared_unit=128,         # 1 KB per block reserved by the system
)
CUDA_ASSUMED_THREADS = 256  # the launches' block size when a kernel declares no __launch_bounds__


def resident_warps(regs: int, threads: int, shared: int, machine: dict = H100) -> int:
    """Warps resident per SM: the fewest blocks that registers, warps, blocks and shared memory allow."""
    m = machine
    warps_per_block = -(-threads // m["lanes"])
    regs_per_warp = -(-max(regs, 1) * m["lanes"] // m["register_unit"]) * m["register_unit"]
    by_regs = (m["registers"] // regs_per_warp) // warps_per_block
    shared_per_block = -(-(shared + m["shared_reserved"]) // m["shared_unit"]) * m["shared_unit"]
    by_shared = m["shared"] // shared_per_block
    blocks = min(by_regs, m["max_warps"] // warps_per_block, m["max_blocks"], by_shared)
    return blocks * warps_per_block


def model(record: dict, machine: dict = H100) -> dict:
    """Per-element figures of the hot loop and the bandwidth bounds (see the module docstring).
    Every field is None with a ``note`` saying why when it cannot be derived."""
    m = machine
    out = dict(elements_per_thread=None, sass_per_element=None, bytes_per_element=None, warps=None,
               issue_bound=None, latency_bound=None, model_fraction=None, note=record.get("note"),
               map_width=record.get("loop_map_width") or None, int64_divisions=record.get("int64_divisions"))
    direction, size = record.get("map_access"), record.get("element_bytes")
    if record.get("ok") is False:
        return dict(out, note="does not compile")
    if direction is None:
        return dict(out, note=out["note"] or "no map-access rule for this kernel name (MAP_ACCESS in tools/triton_aot.py)")
    if not size:
        return dict(out, note=out["note"] or "no element type in the kernel's name")
    if not record.get("loop_sass"):
        return dict(out, note=record.get("loop_note") or "no hot loop found in the SASS")
    if record.get("elements_per_loop"):  # Triton: the program's tile
        per_thread = record["elements_per_loop"] / record["threads"]
    else:  # CUDA: from the loop's map-width traffic
        moved = record["loop_map_load_bytes"] if direction == "load" else record["loop_map_store_bytes"]
        per_thread = (moved or 0) / size
    if not per_thread:
        return dict(out, note="the hot loop moves no map bytes")
    op_bytes = size * (2 if direction == "both" else 1)
    ipe = record["loop_sass"] / per_thread
    warps = resident_warps(record["regs"], record["threads"], record.get("shared", 0), m)
    issue = m["sms"] * m["issue_per_clock"] * m["lanes"] * m["clock_hz"] / ipe * op_bytes / m["hbm_bytes_per_s"]
    if direction == "store" or not record["loop_load_bytes"]:
        latency = float("inf")  # a warp never waits for its stores
    else:
        in_flight = warps * m["sms"] * m["lanes"] * record["loop_load_bytes"]
        latency = in_flight / (m["hbm_bytes_per_s"] * m["latency_s"]) * (op_bytes / size)
    out.update(elements_per_thread=round(per_thread, 3), sass_per_element=round(ipe, 2),
               bytes_per_element=round(record["loop_global_bytes"] / per_thread, 2), warps=warps,
               issue_bound=round(min(issue, 99.0), 3), latency_bound=None if latency == float("inf") else
               round(min(latency, 99.0), 3), model_fraction=round(min(issue, latency, 1.0), 3))
    return out


# ---- CUDA ---------------------------------------------------------------------------------

def template_arguments(name: str) -> list[str]:
    """Top-level template arguments of a demangled kernel name: ``k<(E)2, true, c10::Half>`` ->
    ["(E)2", "true", "c10::Half"]."""
    start = name.find("<")
    if start < 0:
        return []
    args, depth, current = [], 0, ""
    for char in name[start + 1:]:
        if char in "<(":
            depth += 1
        elif char in ">)":
            if depth == 0:
                break
            depth -= 1
        if char == "," and depth == 0:
            args.append(current.strip())
            current = ""
        else:
            current += char
    args.append(current.strip())
    return [a for a in args if a]


def element_type(name: str) -> str | None:
    """The map element type of a CUDA kernel: render kernels <compute_t, map_t> take the last type
    argument, every other kernel the first (``scalar_t``/``pred_t`` comes first)."""
    from triton_aot import ELEMENT_BYTES

    types = [a for a in template_arguments(name) if a.replace(" const", "") in ELEMENT_BYTES]
    if not types:
        return None
    return types[-1] if "render" in name.split("<")[0] else types[0]


def launch_bounds(elf: str) -> dict:
    """{mangled function: threads per block} for kernels whose .nv.info declares EIATTR_MAX_THREADS
    (``__launch_bounds__``) or EIATTR_REQNTID."""
    result, function, attribute = {}, None, None
    for line in elf.splitlines():
        if line and not line[0].isspace():  # a section header: the attribute list of a function, or else
            section = re.match(r"^\.nv\.info\.(\S+)", line)
            function, attribute = (section.group(1) if section else None), None
            continue
        if function is None:
            continue
        found = re.search(r"Attribute:\s+(EIATTR_\w+)", line)
        if found:
            attribute = found.group(1)
            continue
        value = re.search(r"Value:\s+((?:0x[0-9a-f]+\s*)+)", line)
        if value and attribute in ("EIATTR_MAX_THREADS", "EIATTR_REQNTID"):
            dims = [int(v, 16) for v in value.group(1).split()]
            threads = 1
            for d in dims:
                threads *= max(d, 1)
            result[function] = threads
            attribute = None
    return result


def cuda_records(so_path: str, arch: int = 90) -> tuple[list[dict], str | None]:
    """Per CUDA kernel of ``so_path`` for sm_<arch>: resources, hot loop. (records, skip reason)."""
    sys.path.insert(0, str(ROOT))
    from triton_aot import ELEMENT_BYTES, resolve_access, resource_usage

    if not os.path.exists(so_path):
        return [], f"{so_path} does not exist"
    cuobjdump = _tool("cuobjdump")
    if cuobjdump is None:
        return [], "no cuobjdump (neither in triton's wheel nor /usr/local/cuda/bin)"
    listing = subprocess.run([cuobjdump, "--list-elf", so_path], capture_output=True, text=True)
    if listing.returncode != 0 or "sm_" not in listing.stdout:
        return [], f"{so_path} holds no CUDA device code (built without CUDA)"
    if f"sm_{arch}" not in listing.stdout:
        return [], f"{so_path} holds no sm_{arch} code"
    select = ["-arch", f"sm_{arch}"]
    usage = resource_usage(so_path, select)
    sass = subprocess.run([cuobjdump, *select, "-sass", so_path], capture_output=True, text=True, check=True).stdout
    elf = subprocess.run([cuobjdump, *select, "-elf", so_path], capture_output=True, text=True, check=True).stdout
    bounds = launch_bounds(elf)
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
        record = dict(kernel=family, name=short, mangled=mangled, arch=arch, **usage[mangled])
        element = element_type(short)
        size = ELEMENT_BYTES.get(element.replace(" const", "")) if element else None
        direction, summary = resolve_access(per_function.get(mangled, ""), short, element_bytes=size)
        threads = bounds.get(mangled)
        record.update(spill=record["local"], **summary)
        record.update(map_access=direction, element_type=element, element_bytes=size,
                      threads=threads or CUDA_ASSUMED_THREADS, threads_assumed=threads is None)
        records.append(record)
    return records, None


# ---- Triton -------------------------------------------------------------------------------

def triton_records(json_path: str | None, arch: list[int]) -> list[dict]:
    if json_path is None:
        with tempfile.TemporaryDirectory() as tmp:
            json_path = os.path.join(tmp, "aot.json")
            env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
            subprocess.run([sys.executable, str(TOOLS / "triton_aot.py"), "--arch", *map(str, arch), "--sizes",
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
        if r.get("int64_divisions"):
            problems.append(f"{r['name']}: {r['int64_divisions']} 64-bit integer division(s) (expected 0: index "
                            "arithmetic in 32 bits, or a division hoisted out of the kernel)")
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


# Family aggregates: the worst specialisation (costs: max; warps and fractions: min).
_WORST = dict(regs=max, spill=max, shared=max, sass=max, int64_divisions=max, map_width=min, elements_per_thread=min,
              sass_per_element=max, bytes_per_element=max, warps=min, issue_bound=min, latency_bound=min,
              model_fraction=min)


def summarise(records: list[dict]) -> dict:
    families = collections.OrderedDict()
    for r in records:
        families.setdefault(_family(r), []).append(r)
    out = {}
    for family, group in families.items():
        ok = [r for r in group if r.get("ok", True)]
        row = dict(count=len(group), failed=len(group) - len(ok))
        figures = [dict(r, **model(r)) for r in ok]
        for key, worst in _WORST.items():
            values = [f[key] for f in figures if f.get(key) is not None]
            row[key] = worst(values) if values else None
        # figures an older analysis did not record (a before side kept from resources.json)
        row["unrecorded"] = [key for key, source in (("int64_divisions", "int64_divisions"),
                                                     ("map_width", "loop_map_width"))
                             if figures and not any(source in r for r in ok)]
        row["assumed"] = any(f.get("threads_assumed") for f in figures)
        row["whole_kernel"] = any((f.get("loop_pick") or "").startswith("whole") for f in figures)
        notes = sorted({f["note"] for f in figures if f.get("note") and f.get("model_fraction") is None})
        row["note"] = "; ".join(notes)
        out[family] = row
    return out


def _show(row, key):
    if row is None:
        return "-"
    if row["failed"] and row.get(key) is None:
        return "FAIL"
    value = row.get(key)
    if key in row.get("unrecorded", ()):
        return "n/r"
    if value is None and key == "latency_bound" and row.get("model_fraction") is not None:
        text = "n/a"  # store-only: a warp never waits for its stores
    elif value is None:
        text = ""
    elif key in ("issue_bound", "latency_bound", "model_fraction"):
        text = f"{100 * value:.0f}%" if value < 10 else ">999%"
    elif key == "warps":
        text = f"{value}" + ("*" if row.get("assumed") else "")
    elif key == "elements_per_thread":
        text = f"{value:g}" + (" kernel" if row.get("whole_kernel") else "")
    else:
        text = f"{value:g}" if isinstance(value, float) else str(value)
    return text + (f" ({row['failed']}/{row['count']} fail)" if row["failed"] else "")


def _cell(before, after, key):
    b, a = _show(before, key), _show(after, key)
    return a if b == a else f"{b} -> {a}"


COLUMNS = (("regs", "regs"), ("spill", "spill"), ("shared", "smem"), ("sass", "sass"), ("int64_divisions", "div64"),
           ("map_width", "vec"), ("elements_per_thread", "el/it"), ("sass_per_element", "loop/elem"),
           ("bytes_per_element", "B/elem"), ("warps", "warps/SM"), ("issue_bound", "issue"),
           ("latency_bound", "latency"), ("model_fraction", "model"))

# The after side at merge time: the merged tree's AOT JSON and CUDA build (the before side stays).
REGENERATE = ("env -u TRITON_INTERPRET python tools/triton_aot.py --quick --arch 90 --sizes 64x48 --json "
              "/tmp/triton_after.json && python benchmarks/resources.py --so kpfast/_C.so --triton-json "
              "/tmp/triton_after.json --describe \"main <commit>\"")


def _kernel_key(name: str) -> tuple:
    """Sort key of a CUDA kernel row: its base name, then its type arguments (ints, bools dropped)."""
    from triton_aot import ELEMENT_BYTES

    types = tuple(a for a in template_arguments(name) if a in ELEMENT_BYTES or a.startswith("("))
    return re.sub(r"<.*", "", name), types


def _source(book: dict, label: str) -> str:
    source = book.get(label, {}).get("source")
    if not source:
        return "(source not recorded)"
    names = dict(tree="", so="CUDA ", triton_json="Triton ", analysed_by="analysed by ")
    return ", ".join(f"{names.get(k, k)}`{v}`" if k != "tree" else str(v) for k, v in source.items() if v)


def markdown(book: dict) -> str:
    m = H100
    lines = ["# Static resources of every GPU kernel", "",
             "Generated by `python benchmarks/resources.py` (its docstring explains every column and the model). "
             f"before: {_source(book, 'before')}; after: {_source(book, 'after')}. Regenerate the after side "
             f"(the before side is kept in resources.json): `{REGENERATE}` (add `--before-so /work/before_C.so "
             "--before-triton-json benchmarks/results/triton_aot_before.json` to recompute before).", "",
             f"**issue / latency / model are a static model of an {m['name']} ({m['sms']} SMs, "
             f"{m['clock_hz'] / 1e9:.3f} GHz, {m['hbm_bytes_per_s'] / 1e12:.2f} TB/s, {m['latency_s'] * 1e9:.0f} ns "
             "DRAM latency), not a measurement**: the fraction of copy bandwidth the hot loop can reach at best "
             "(issue: instruction issue; latency: loads in flight, Little's law; model: the smaller, capped at 100%). "
             "Measured figures come only from GPU runs (`benchmarks/results/*gpu*`).", "",
             "Triton: the worst over the specialisations of the AOT run (committed: `--quick --arch 90 --sizes "
             "64x48`, one per kernel, kind and method; `python benchmarks/resources.py --check` compiles every "
             "variant at 64x48 and 96x72 for sm_80 and sm_90 and fails on a spill or budget overrun); CUDA: the sm_90 "
             "SASS of a CUDA-built `kpfast/_C.so`. `*`: 256 threads per block assumed (the kernel declares no "
             "`__launch_bounds__`). el/it `kernel`: no loop moves the map, the whole kernel is the tile. "
             "div64: 64-bit integer divisions in the kernel (`--check` fails on any); vec: the widest access of "
             "map elements in the hot loop, bytes (16 = 16-byte vectors; CUDA loss rows ending in `false, T>` (TABLES "
             "false) are the fallback for a map whose separable tables exceed 47 KB of shared memory (about 40 "
             "instances at 256x192): per pixel, scalar); `n/r`: not "
             "recorded by that side's analysis.", ""]
    header = "| kernel | " + " | ".join(title for _, title in COLUMNS) + " | note |"
    for part in ("triton", "cuda"):
        before = summarise([_with_spill(r) for r in book.get("before", {}).get(part, [])])
        after = summarise([_with_spill(r) for r in book.get("after", {}).get(part, [])])
        lines += [f"## {part}", ""]
        for label in ("before", "after"):
            reason = book.get(label, {}).get(f"{part}_skipped")
            if reason:
                lines += [f"*{label}: skipped: {reason}*", ""]
        lines += [header, "|" + "---|" * (len(COLUMNS) + 2)]
        families = list(dict.fromkeys(list(before) + list(after)))
        if part == "cuda":  # a renamed or re-templated kernel sits beside its before (e.g. <float, float, 4>)
            order = {f: i for i, f in enumerate(families)}
            families.sort(key=lambda f: (_kernel_key(f), order[f]))
        for family in families:
            b, a = before.get(family), after.get(family)
            cells = [_cell(b, a, key) for key, _ in COLUMNS]
            notes = [n for n in dict.fromkeys([(b or {}).get("note"), (a or {}).get("note")]) if n]
            lines.append(f"| {family} | " + " | ".join(cells) + " | " + "; ".join(notes) + " |")
        lines.append("")
    lines += ["## Register budgets", ""] + [f"- `{k}`: {v[0]} ({v[1]})" for k, v in BUDGETS.items()] + [""]
    return "\n".join(lines)


def _commit() -> str | None:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout.strip() or None


def _fill(entry: dict, so: str, triton_json: str | None, arch: list[int], cuda_arch: int, no_triton: bool,
          describe: str | None) -> None:
    if not no_triton:
        entry["triton"] = triton_records(triton_json, arch)
    cuda, reason = cuda_records(so, cuda_arch)
    previous = entry.get("source", {}).get("so")
    kept = reason is not None and bool(entry.get("cuda"))
    if not kept:  # a CPU-only build never overwrites recorded CUDA figures
        entry["cuda"], entry["cuda_skipped"] = cuda, reason
    if reason:
        print(f"CUDA kernels skipped ({so}): {reason}", file=sys.stderr)
    so_name = os.path.basename(so) if reason is None else None
    if kept:
        so_name = f"{previous} (kept: {reason})" if previous and "kept" not in str(previous) else previous
    entry["source"] = dict(so=so_name,
                           triton_json=entry.get("source", {}).get("triton_json") if no_triton else
                           (os.path.basename(triton_json) if triton_json else "full AOT run"),
                           tree=describe, analysed_by=_commit())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="static GPU resource table with a bandwidth model")
    parser.add_argument("--label", default="after", choices=["before", "after"])
    parser.add_argument("--triton-json", help="tools/triton_aot.py output (default: run it)")
    parser.add_argument("--so", default=str(ROOT / "kpfast" / "_C.so"), help="a CUDA-built _C.so")
    parser.add_argument("--before-so", help="also recompute the before side from this CUDA-built _C.so")
    parser.add_argument("--before-triton-json", help="... and from this tools/triton_aot.py output")
    parser.add_argument("--describe", help="what the --label side was built from (e.g. a branch and commit)")
    parser.add_argument("--before-describe", help="... and the before side")
    parser.add_argument("--arch", type=int, nargs="+", default=[90, 80], help="Triton archs of the AOT run")
    parser.add_argument("--cuda-arch", type=int, default=90, help="the CUDA cubin to read from the .so")
    parser.add_argument("--no-triton", action="store_true")
    parser.add_argument("--check", action="store_true", help="exit 1 on a spill or budget violation of --label")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    out = Path(args.out)
    book_path = out / "resources.json"
    book = json.loads(book_path.read_text()) if book_path.exists() else {}
    if args.before_so or args.before_triton_json:
        _fill(book.setdefault("before", {}), args.before_so or "", args.before_triton_json, args.arch,
              args.cuda_arch, args.before_triton_json is None, args.before_describe)
    entry = book.setdefault(args.label, {})
    _fill(entry, args.so, args.triton_json, args.arch, args.cuda_arch, args.no_triton, args.describe)
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

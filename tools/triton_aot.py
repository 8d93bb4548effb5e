"""Ahead-of-time compile gate for every Triton kernel, with no GPU and no interpreter.

``python tools/triton_aot.py --arch 80 90 --json out.json`` compiles every kernel in every
specialisation the ops launch for docs/design.md's workloads (each encoding, loss kind, prediction
dtype, constexpr block shape from the launchers' own config functions, with and without the
instance axis) with ``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))``,
its integer arguments specialised as Triton's launcher does (1 a constant, multiples of 16
divisible: ``launcher_ints``; ``--quick`` adds the maps of side 1 and K = 1, DEGENERATE_SIZES),
then reads the static resources of each compiled kernel (``constant_ones``: the arguments
compiled as the constant 1):

* ``regs``, ``shared``, ``local`` from ``cuobjdump --dump-resource-usage`` of the cubin;
* ``spill_stores`` / ``spill_loads`` (bytes per thread) from ``ptxas -v`` on the same PTX;
* ``sass``: static SASS instructions of the kernel; its hot loop, the loop that moves the map
  (``sass_summary``: which one, and why, by the kernel's name in ``MAP_ACCESS``): ``loop_sass``
  its instructions, ``loop_load_bytes`` / ``loop_store_bytes`` / ``loop_global_bytes`` the global
  bytes per thread its own body moves (LDG/LDGSTS/STG widths, so 16-byte vectors show as such),
  ``loop_pick`` / ``loop_range`` / ``loop_note`` how it was found, where, or why none was;
* ``elements_per_loop``: map elements one iteration of the hot loop handles per program (the
  program's tile: ``BLOCK`` or ``BLOCK_H * BLOCK_W``), ``threads`` per program,
  ``element_bytes`` of the map dtype; ``loop_sass_per_element``: ``loop_sass * threads /
  elements_per_loop``, thread instructions issued per map element. benchmarks/resources.py turns
  these into bytes per element and the bandwidth model.

Must run WITHOUT ``TRITON_INTERPRET`` (tests/conftest.py sets it, so the test suite runs this
module in a subprocess). Works with Triton 3.6-3.9: constexprs are keyed by argument index,
the form every 3.x ``ASTSource`` accepts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor

# The heatmap sizes of docs/design.md's workloads, plus an odd small map and an HRNet-sized one.
SIZES = ((64, 48), (96, 72), (17, 13), (128, 96))
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
THREADS_PER_WARP = 32
# DARK/UDP blur kernel sizes compiled, by map dtype: every size for float32 (ptxas's register
# choices jump between sizes: spills came at 9-15, 25-31, and 17-25 at 17x13), the default, the
# smallest tap table and the largest for the others (the dtype changes only the map loads).
BLURS = dict(fp32=(11,) + tuple(k for k in range(1, 32, 2) if k != 11), bf16=(11, 3, 31), fp16=(11, 3, 31))
# ... and in the --quick gate: the default and the largest (the largest patch window).
QUICK_BLURS = (11, 31)


@dataclasses.dataclass
class Spec:
    kernel: str            # module.function
    label: dict            # what this specialisation is (encoding, kind, dtype, size, ...)
    signature: dict        # argument name -> Triton type, or "constexpr"
    constexprs: dict       # argument name -> value
    num_warps: int = 4
    elements_per_loop: int | None = None  # map pixels one iteration of the hot loop handles
    options: dict = dataclasses.field(default_factory=dict)  # further launch options (maxnreg)
    ints: dict = dataclasses.field(default_factory=dict)  # integer arguments' values, as the launcher sees them

    @property
    def name(self) -> str:
        parts = [f"{k}={v}" for k, v in self.label.items()]
        return f"{self.kernel}[{','.join(parts)}]"


def _launch_options(config: dict) -> dict:
    """Pop the launch options that are not constexprs (the register ceiling) out of a launcher's config."""
    return {key: config.pop(key) for key in ("maxnreg",) if key in config}


def _sig(names, types, constexprs):
    signature = dict(zip(names, types))
    for name in constexprs:
        signature[name] = "constexpr"
    return signature


# Keypoints per instance in the launcher values below: COCO's 17; instances per image of the
# "many" specialisations (any count but 1 compiles the same kernel: only 1 is a constant).
LAUNCH_KEYPOINTS = 17
LAUNCH_INSTANCES = 2
# Maps with a side of 1 (and the 1x1 map): Triton's launcher turns every integer argument equal to 1
# (height, width, the map size, a stride) into a compile-time constant, which a kernel must accept
# (no `.to()` on it: it is a Python int in the compiled kernel). The --quick gate compiles them, with
# K = 1 besides K = 17 (DEGENERATE_KEYPOINTS), so that a real launch never meets an uncompiled form.
DEGENERATE_SIZES = ((1, 1), (1, 7), (7, 1))
DEGENERATE_KEYPOINTS = 1


def launcher_ints(height: int, width: int, keypoints: int = LAUNCH_KEYPOINTS,
                  instances: int = LAUNCH_INSTANCES) -> dict:
    """Integer arguments as Triton's JIT launcher sees them for a contiguous (B, N, K) keypoint and
    (B, K, H, W) map batch.

    The launcher specialises on them (an int divisible by 16 is marked ``tt.divisibility=16``, an
    int equal to 1 becomes a constant), and that decides whether loads and stores can be 16-byte
    vectors and whether the kernel compiles at all: an AOT compile without these attributes would
    show scalar accesses the real launch does not make, and miss a kernel that rejects a constant
    side. Strides of a (B, K) upstream gradient or sigma, of soft-argmax's (B, K, 2) coordinate
    gradient and of render's (B, K, H, W) map gradient are those of a contiguous one."""
    size = height * width
    from kpfast.triton.decode import soft_argmax_backward_config

    chunks = -(-size // soft_argmax_backward_config(size)["BLOCK"])
    return dict(height=height, width=width, size=size, map_size=size, chunks=chunks, N=instances, K=keypoints,
                stride_b=keypoints * size, stride_k=size, stride_h=width, stride_w=1, sigma_stride_b=keypoints,
                sigma_stride_k=1, upstream_stride_b=keypoints, upstream_stride_k=1, grad_stride_b=2 * keypoints,
                grad_stride_k=2, grad_stride_xy=1, grad_maps_stride_b=keypoints * size, grad_maps_stride_k=size,
                grad_maps_stride_h=width, grad_maps_stride_w=1)


def specialisations(sizes=SIZES, keypoints=(LAUNCH_KEYPOINTS,)) -> list[Spec]:
    """Every specialisation for each (height, width) of ``sizes`` and each keypoint count of
    ``keypoints`` (labelled ``K`` when it is not LAUNCH_KEYPOINTS)."""
    specs = []
    for count in keypoints:
        for height, width in sizes:
            specs += _size_specialisations(height, width, count, first_size=(height, width) == sizes[0])
    return specs


def _size_specialisations(height: int, width: int, keypoints: int, first_size: bool) -> list[Spec]:
    from kpfast import vocabulary
    from kpfast.triton import decode, loss, render

    specs = []
    size = f"{height}x{width}"
    for encoding in vocabulary.ENCODINGS:
        for instances in ("one", "many"):  # N == 1 is specialised by Triton's launcher (launcher_ints)
            for dtype in DTYPES:
                size_of = ELEMENT_BYTES[dtype]
                c = render.forward_config(height, width, encoding, element_size=size_of)
                names = ["keypoints_ptr", "weights_ptr", "sigma_ptr", "out_ptr", "weights_out_ptr", "N", "K",
                         "height", "width", "sigma_stride_b", "sigma_stride_k", "sigma_value"]
                types = ["*fp32", "*fp32", "*fp32", f"*{dtype}", "*fp32", "i32", "i32", "i32", "i32", "i32", "i32",
                         "fp32"]
                specs.append(Spec("render._render_forward_kernel",
                                  dict(size=size, encoding=encoding, N=instances, dtype=dtype),
                                  _sig(names, types, c), c))
                c = render.backward_config(height, width, encoding, element_size=size_of)
                options = _launch_options(c)
                names = ["grad_ptr", "keypoints_ptr", "weights_ptr", "sigma_ptr", "grad_keypoints_ptr",
                         "grad_sigma_ptr", "N", "K", "height", "width", "grad_maps_stride_b", "grad_maps_stride_k",
                         "grad_maps_stride_h", "grad_maps_stride_w", "sigma_stride_b", "sigma_stride_k",
                         "sigma_value"]
                types = [f"*{dtype}", "*fp32", "*fp32", "*fp32", "*fp32", "*fp32"] + ["i32"] * 10 + ["fp32"]
                specs.append(Spec("render._render_backward_kernel",
                                  dict(size=size, encoding=encoding, N=instances, dtype=dtype),
                                  _sig(names, types, c), c, options=options))
                for kind in loss.KINDS:
                    # the compiled-product default exponents and, for a kind with exponents, the general powers
                    for fixed in loss.exponent_variants(kind):
                        c = loss.launch_config(height, width, encoding, kind, fixed, element_size=size_of)
                        warps = c.pop("num_warps", 4)
                        options = _launch_options(c)
                        block = c["BLOCK_H"] * c["BLOCK_W"]
                        scalars = ["sigma_value", "alpha", "gamma", "beta", "keypoint_weight", "background_weight",
                                   "threshold", "l1_weight"]
                        tail = ["N", "K", "height", "width", "stride_b", "stride_k", "stride_h", "stride_w",
                                "sigma_stride_b", "sigma_stride_k"] + scalars
                        tail_types = ["i32"] * 10 + ["fp32"] * 8
                        names = ["pred_ptr", "keypoints_ptr", "weights_ptr", "sigma_ptr", "map_losses_ptr",
                                 "positives_ptr"] + tail
                        types = [f"*{dtype}", "*fp32", "*fp32", "*fp32", "*fp32", "*fp32"] + tail_types
                        label = dict(size=size, encoding=encoding, kind=kind, N=instances, dtype=dtype,
                                     exponents="fixed" if fixed else "general")
                        specs.append(Spec("loss._loss_forward_kernel", label, _sig(names, types, c), c, warps,
                                          elements_per_loop=block, options=options))
                        upstream_tail = tail[:10] + ["upstream_stride_b", "upstream_stride_k"] + tail[10:]
                        names = ["upstream_ptr", "pred_ptr", "keypoints_ptr", "weights_ptr", "sigma_ptr",
                                 "grad_ptr"] + upstream_tail
                        types = (["*fp32", f"*{dtype}", "*fp32", "*fp32", "*fp32", f"*{dtype}"] + ["i32"] * 12
                                 + ["fp32"] * 8)
                        specs.append(Spec("loss._loss_backward_kernel", label, _sig(names, types, c), c, warps,
                                          elements_per_loop=block, options=options))
                        if not vocabulary.loss_kind(kind).fused_gradient:
                            continue
                        # the gradient-in-forward opt-in: loss and gradient in one pass
                        c = loss.fused_launch_config(height, width, encoding, kind, fixed,
                                                     element_size=size_of)
                        warps = c.pop("num_warps", 4)
                        options = _launch_options(c)
                        names = ["pred_ptr", "keypoints_ptr", "weights_ptr", "sigma_ptr", "map_losses_ptr",
                                 "positives_ptr", "grad_ptr"] + tail[:11] + ["expected_upstream"] + tail[11:]
                        types = ([f"*{dtype}", "*fp32", "*fp32", "*fp32", "*fp32", "*fp32", f"*{dtype}"]
                                 + ["i32"] * 10 + ["fp32"] * 9)
                        specs.append(Spec("loss._loss_fused_forward_kernel", label, _sig(names, types, c), c,
                                          warps, elements_per_loop=c["BLOCK_H"] * c["BLOCK_W"], options=options))
                if first_size and encoding == "msra" and instances == "one":
                    c = dict(BLOCK=loss.RESCALE_BLOCK)  # one per dtype: no size, encoding or N in it
                    names = ["grad_ptr", "upstream_ptr", "upstream_stride_b", "upstream_stride_k", "K",
                             "map_size", "expected_upstream"]
                    types = [f"*{dtype}", "*fp32", "i32", "i32", "i32", "i32", "fp32"]
                    specs.append(Spec("loss._loss_rescale_kernel", dict(dtype=dtype), _sig(names, types, c), c,
                                      4, elements_per_loop=loss.RESCALE_BLOCK))
    for dtype in DTYPES:
        for method in decode.METHODS:
            for blur_kernel in (BLURS[dtype] if method in vocabulary.REFINED_DECODE_METHODS else (11,)):
                c = decode.decode_config(height, width, method, blur_kernel, 3)
                warps = c.pop("num_warps")
                options = _launch_options(c)
                names = ["maps_ptr", "coords_ptr", "scores_ptr", "height", "width"]
                types = [f"*{dtype}", "*fp32", "*fp32", "i32", "i32"]
                label = dict(size=size, method=method, dtype=dtype)
                if method in vocabulary.REFINED_DECODE_METHODS:
                    label["blur_kernel"] = blur_kernel
                specs.append(Spec("decode._decode_kernel", label, _sig(names, types, c), c, warps,
                                  elements_per_loop=c["BLOCK"], options=options))
        c = decode.soft_argmax_config(height * width)
        warps = c.pop("num_warps")
        names = ["maps_ptr", "coords_ptr", "scores_ptr", "lse_ptr", "width", "size", "beta"]
        types = [f"*{dtype}", "*fp32", "*fp32", "*fp32", "i32", "i32", "fp32"]
        specs.append(Spec("decode._soft_argmax_kernel", dict(size=size, dtype=dtype), _sig(names, types, c), c,
                          warps, elements_per_loop=c["BLOCK"]))
        c = decode.soft_argmax_backward_config(height * width)
        warps = c.pop("num_warps")
        names = ["grad_coords_ptr", "maps_ptr", "coords_ptr", "lse_ptr", "grad_ptr", "K", "grad_stride_b",
                 "grad_stride_k", "grad_stride_xy", "width", "size", "chunks", "beta"]
        types = ["*fp32", f"*{dtype}", "*fp32", "*fp32", f"*{dtype}"] + ["i32"] * 7 + ["fp32"]
        specs.append(Spec("decode._soft_argmax_backward_kernel", dict(size=size, dtype=dtype),
                          _sig(names, types, c), c, warps))
        # min_distance is a runtime argument (no recompile per distance): one specialisation per
        # selection-list size.
        for max_peaks in (20, 200):
            c = decode.find_peaks_config(height, width, max_peaks)
            warps = c.pop("num_warps")
            options = _launch_options(c)
            names = ["maps_ptr", "coords_ptr", "scores_ptr", "valid_ptr", "height", "width", "min_distance",
                     "threshold", "max_peaks"]
            types = [f"*{dtype}", "*fp32", "*fp32", "*i8", "i32", "i32", "i32", "fp32", "i32"]
            specs.append(Spec("decode._find_peaks_kernel", dict(size=size, max_peaks=max_peaks, dtype=dtype),
                              _sig(names, types, c), c, warps, options=options))
    for spec in specs:
        instances = 1 if spec.label.get("N") == "one" else LAUNCH_INSTANCES
        spec.ints = launcher_ints(height, width, keypoints, instances)
        if keypoints != LAUNCH_KEYPOINTS:
            spec.label["K"] = keypoints
    return specs


def jit_kernels() -> list[str]:
    """Every @triton.jit kernel (a ``*_kernel`` function) of kpfast.triton, as module.function."""
    import importlib

    names = []
    for module in ("render", "loss", "decode"):
        namespace = importlib.import_module(f"kpfast.triton.{module}")
        names += [f"{module}.{name}" for name, value in vars(namespace).items()
                  if name.endswith("_kernel") and hasattr(value, "arg_names")]  # jit (or interpreted) kernels
    return sorted(names)


def _tool(name: str) -> str | None:
    import triton

    candidates = [os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name),
                  os.path.join("/usr/local/cuda/bin", name)]
    return next((path for path in candidates if os.path.exists(path)), None)


def ptxas_for(arch: int) -> str:
    """The ptxas Triton itself assembles sm_<arch> with: it must read the PTX version Triton emits
    (Triton 3.9 ships a 12.9 ptxas for sm_80 and a 13.x one, ``ptxas-blackwell``, from sm_90 on; the
    12.9 one rejects the sm_90 PTX with "Unsupported .version"). Honours Triton's TRITON_PTXAS_PATH
    knobs, as its compiler does."""
    from triton.backends.nvidia import compiler

    return compiler.get_ptxas(arch).path


def missing_tool(arches=(80, 90)) -> str | None:
    """Why the gate cannot measure kernels here (no cuobjdump, or no ptxas for one of ``arches``), or None."""
    if _tool("cuobjdump") is None:
        return "no cuobjdump in triton's wheel or /usr/local/cuda/bin"
    for arch in arches:
        try:
            path = ptxas_for(arch)
        except Exception as error:  # noqa: BLE001 - Triton's lookup raises when no ptxas is found
            return f"no ptxas for sm_{arch}: {error}"
        if not path or not os.path.exists(path):
            return f"no ptxas for sm_{arch} (Triton names {path!r})"
    return None


_SASS_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);")
_BRANCH = re.compile(r"\bBRA\b.*?(0x[0-9a-f]+|`\(\.L_x_\d+\))")
_LABEL = re.compile(r"^\s*\.L_x_(\d+):")
# Global memory accesses: LDG (load), STG (store), LDGSTS (global -> shared async copy, a load).
# The lookahead keeps LDGDEPBAR and the like out.
_ACCESS = re.compile(r"\b(LDGSTS|LDG|STG)(?=[.\s])((?:\.[A-Z0-9_]+)*)")
_WIDTHS = {"128": 16, "64": 8, "U16": 2, "S16": 2, "U8": 1, "S8": 1}

# What the map traffic of each kind of kernel is, by name (CUDA demangled names and Triton
# module.function alike; kernels may be renamed, so these are substrings, tried in order):
# "store": writes the map once (render forward); "load": reads it once (loss forward, decode,
# soft-argmax, find_peaks, render backward's incoming gradient); "both": reads the map and writes
# a map-sized gradient (loss backward, soft-argmax backward); "auto": a loss kernel whose name does
# not say which (CUDA's heatmap_loss_kernel<kind, GRADIENT, T>): "both" when a loop of its SASS
# loads and stores global memory, else "load" (see resolve_access).
#
# How its hot loop is told from the other loops that move global memory ("choice" of
# sass_summary): "span": the outermost, widest, longest (loss: the old per-pixel loop nests an
# instance loop that loads keypoints; the new one loads 16-byte vectors beside a longer instance
# setup loop of 4-byte loads); "inner": the innermost, longest (render forward: an
# outer pass or tile loop stores per-instance weights around the store loops; the old per-pixel
# loop nests only instance loops that load); "bytes": the one moving the most bytes per iteration
# (decode, soft-argmax: the unrolled scan, beside longer per-keypoint blur and refinement loops
# that read the map too); "window": none unless a loop moves exactly the expected bytes (CUDA
# render backward walks each keypoint's window, per instance pair, not the map: no per-map-element
# figure applies; Triton's walks its whole tile).
MAP_ACCESS = (
    ("soft_argmax_backward", "both", "bytes"), ("soft_argmax", "load", "bytes"),
    ("loss_backward", "both", "span"), ("loss_forward", "load", "span"), ("loss", "auto", "span"),
    ("render_backward", "load", "window"), ("render", "store", "inner"),
    ("find_peaks", "load", "bytes"), ("peaks", "load", "bytes"), ("decode", "load", "bytes"),
)
ELEMENT_BYTES = {"float": 4, "double": 8, "c10::BFloat16": 2, "c10::Half": 2, "at::BFloat16": 2, "at::Half": 2,
                 "__nv_bfloat16": 2, "__half": 2, "half": 2, "bool": 1, "signed char": 1, "unsigned char": 1,
                 "char": 1, "fp32": 4, "fp64": 8, "bf16": 2, "fp16": 2, "float32": 4, "float64": 8, "bfloat16": 2,
                 "float16": 2}


def map_access(name: str) -> tuple[str | None, str]:
    """(direction, choice) for the kernel ``name`` (see MAP_ACCESS); direction None when no rule fits."""
    base = re.sub(r"<.*", "", name)
    for key, direction, choice in MAP_ACCESS:
        if key in base:
            return direction, choice
    return None, "span"


def resolve_access(sass: str, name: str, map_bytes: int | None = None,
                   element_bytes: int | None = None) -> tuple[str | None, dict]:
    """(direction, sass_summary) of kernel ``name``, "auto" resolved: "both" if a loop loads and
    stores map-width global memory, else "load"."""
    direction, choice = map_access(name)
    if direction != "auto":
        return direction, sass_summary(sass, direction, map_bytes, choice, element_bytes)
    both = sass_summary(sass, "both", map_bytes, choice, element_bytes)
    if both["loop_range"] is not None:  # a real loop, not the whole-kernel fallback
        return "both", both
    return "load", sass_summary(sass, "load", map_bytes, choice, element_bytes)


def _access(text: str) -> tuple[str, int] | None:
    """("load" | "store", bytes per thread) of one global access, from its width suffix (default 4).
    Suffixes are matched whole, so an Ampere cache hint like ``.LTC128B`` is not a 16-byte access."""
    match = _ACCESS.search(text)
    if not match:
        return None
    size = 4
    for suffix in match.group(2).split(".")[1:]:
        size = _WIDTHS.get(suffix, size)
    return ("store" if match.group(1) == "STG" else "load"), size


def _access_bytes(op: str) -> int:
    access = _access(op + " ")
    return access[1] if access else 0


def _parse_sass(sass: str) -> list[tuple[int, str]]:
    instructions, pending = [], []
    labels = {}
    for line in sass.splitlines():
        label = _LABEL.match(line)
        if label:
            pending.append(f".L_x_{label.group(1)}")
            continue
        match = _SASS_LINE.search(line)
        if match:
            address = int(match.group(1), 16)
            for name in pending:
                labels[name] = address
            pending = []
            instructions.append((address, match.group(2).strip()))
    resolved = []
    for address, text in instructions:
        branch = _BRANCH.search(text)
        if branch and not branch.group(1).startswith("0x"):
            target = labels.get(branch.group(1).strip("`()"))
            if target is not None:
                text = text.replace(branch.group(1), hex(target))
        resolved.append((address, text))
    return resolved


def _loops(instructions: list[tuple[int, str]]) -> list[tuple[int, int]]:
    """(start, end) address of every loop: a backward branch's target up to the furthest branch
    back to it (``continue`` adds branches to the same head). A self-branch is the exit trap."""
    ends = {}
    for address, text in instructions:
        branch = _BRANCH.search(text)
        if branch and branch.group(1).startswith("0x"):
            target = int(branch.group(1), 16)
            if target < address:
                ends[target] = max(ends.get(target, address), address)
    return sorted(ends.items())


# A 64-bit integer division or remainder: ptxas expands it (inline or as a called subroutine of the
# kernel, which the listing includes) around a reciprocal estimate of the 64-bit divisor. 32-bit
# divisions use I2F.U32.RP / I2F.RP instead.
_INT64_DIVISION = re.compile(r"\bI2F\.[US]64\.RP\b")


def int64_divisions(sass: str) -> int:
    """64-bit integer divisions / remainders in one kernel's SASS (each expansion counted once)."""
    return len(_INT64_DIVISION.findall(sass))


def _map_width(width: int, element_bytes: int | None) -> bool:
    """Can an access of ``width`` bytes move map elements of ``element_bytes``? One element, or a
    vector of them (8 or 16 bytes); a 4-byte access of a 2-byte map is taken for a float (keypoint,
    weight) rather than an element pair."""
    if not element_bytes:
        return True
    return width == element_bytes or (width >= 8 and width > element_bytes and width % element_bytes == 0)


def sass_summary(sass: str, direction: str | None = None, map_bytes: int | None = None, choice: str = "span",
                 element_bytes: int | None = None) -> dict:
    """Static figures of one kernel's SASS listing: instruction count and its hot loop.

    Hot loop, with ``direction`` ("load" / "store" / "both", see MAP_ACCESS): the candidates are
    the loops whose own body (nested loops excluded) has that kind of global access, of a width
    that can carry map elements of ``element_bytes`` (when given, see _map_width). With
    ``map_bytes`` (the bytes one iteration should move per thread: Triton's tile) the loop moving
    exactly that, and no loop moving under half of it; else, by ``choice`` (see MAP_ACCESS):
    "span": of the outermost candidates, the one with the widest access, then the longest (an
    instance loop nested in the old per-pixel loop loads keypoints, not the map); "inner": of the
    innermost candidates (no candidate nested in them), the longest (an outer pass or tile loop
    stores per-instance weights around the map's store loops); "bytes": of the outermost, the one
    moving the most bytes per iteration, then the longest; "window": none, ``loop_note`` says why.
    With no candidate loop, the whole kernel when it moves the map (a straight-line tile).
    Without ``direction``: the largest innermost loop. ``loop_sass`` counts the loop's whole span:
    nested loops once (one instance per map) and untaken branches too (a fallback or a merge
    path), so it bounds the executed count from above. ``loop_map_load_bytes`` /
    ``loop_map_store_bytes``: its own-body accesses of map widths only.
    """
    instructions = _parse_sass(sass)
    loops = _loops(instructions)

    def inside(inner, outer):
        return outer[0] <= inner[0] and inner[1] <= outer[1] and inner != outer

    def stats(span, nested):
        body = [(a, t) for a, t in instructions if span[0] <= a <= span[1]]
        own = [t for a, t in body if not any(n[0] <= a <= n[1] for n in nested)]
        accesses = [x for x in map(_access, own) if x]
        mapped = [(kind, b) for kind, b in accesses if _map_width(b, element_bytes)]
        return dict(sass=len(body), load=sum(b for kind, b in accesses if kind == "load"),
                    store=sum(b for kind, b in accesses if kind == "store"),
                    map_load=sum(b for kind, b in mapped if kind == "load"),
                    map_store=sum(b for kind, b in mapped if kind == "store"),
                    width=max([b for _, b in mapped] or [0]))

    info = {}
    for loop in loops:
        nested = [n for n in loops if inside(n, loop)]
        info[loop] = dict(stats(loop, nested), nested=len(nested))

    def moved(loop_info):
        load, store = loop_info["map_load"], loop_info["map_store"]
        return dict(load=load, store=store, both=load + store if load and store else 0).get(direction, 0)

    pick, how, note = None, None, None
    if direction is None:
        innermost = [l for l in loops if info[l]["nested"] == 0]
        if innermost:
            pick, how = max(innermost, key=lambda l: info[l]["sass"]), "largest innermost loop"
    else:
        candidates = [l for l in loops if moved(info[l])]
        if map_bytes:  # a loop moving well under a tile's bytes (an instance loop) is not the tile's
            candidates = [l for l in candidates if 2 * moved(info[l]) >= map_bytes]
        exact = [l for l in candidates if map_bytes and moved(info[l]) == map_bytes]
        if exact:
            # widest first: the map scan moves its tile in vectors, a per-keypoint patch loop (DARK's
            # blur rows) can move as many bytes per thread in scalar loads of cached pixels
            pick = max(exact, key=lambda l: (info[l]["width"], info[l]["sass"]))
            how = "loop moving the expected map bytes"
        elif candidates and choice == "window":
            note = "its loops walk each keypoint's window (per instance pair), not the map: no per-element figure"
        elif candidates:
            outer = [l for l in candidates if not any(inside(l, c) for c in candidates)]
            inner = [l for l in candidates if not any(inside(c, l) for c in candidates)]
            if choice == "bytes":
                pick, how = max(outer, key=lambda l: (moved(info[l]), info[l]["sass"])), "loop moving the most bytes"
            elif choice == "inner":  # not by width: a float64 weight store looks like a 4 x bf16 vector
                pick = max(inner, key=lambda l: info[l]["sass"])
                how = "innermost loop moving the map"
            else:
                pick = max(outer, key=lambda l: (info[l]["width"], info[l]["sass"]))
                how = "outermost loop moving the map"
        else:
            whole = dict(stats((-1, float("inf")), []), nested=len(loops))
            if moved(whole):
                info[None] = whole
                how = "whole kernel (no loop moves the map)"
            else:
                note = "no loop and no global access moves the map"
    chosen = info.get(pick) if how else None
    summary = dict(sass=len(instructions), loops=len(loops), loop_sass=None, loop_global_bytes=None,
                   loop_load_bytes=None, loop_store_bytes=None, loop_map_load_bytes=None,
                   loop_map_store_bytes=None, loop_map_width=None, loop_nested=None, loop_pick=how, loop_range=None,
                   loop_note=note, int64_divisions=int64_divisions(sass))
    if chosen:
        summary.update(loop_sass=chosen["sass"], loop_global_bytes=chosen["load"] + chosen["store"],
                       loop_load_bytes=chosen["load"], loop_store_bytes=chosen["store"],
                       loop_map_load_bytes=chosen["map_load"], loop_map_store_bytes=chosen["map_store"],
                       loop_map_width=chosen["width"], loop_nested=chosen["nested"],
                       loop_range=None if pick is None else f"{pick[0]:#x}-{pick[1]:#x}")
    return summary


def _run(cmd: list[str]) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def resource_usage(cubin_path: str, options: list[str] = ()) -> dict:
    """{function: {regs, shared, local, stack}} from cuobjdump --dump-resource-usage (``options``:
    e.g. ["-arch", "sm_90"] to read one architecture of a fat binary)."""
    out = _run([_tool("cuobjdump"), *options, "--dump-resource-usage", cubin_path])
    result, name = {}, None
    for line in out.splitlines():
        function = re.search(r"Function (\S+):", line)
        if function:
            name = function.group(1)
            continue
        if name and "REG:" in line:
            fields = dict(re.findall(r"(\w+):(\d+)", line))
            result[name] = dict(regs=int(fields.get("REG", 0)), shared=int(fields.get("SHARED", 0)),
                                local=int(fields.get("LOCAL", 0)), stack=int(fields.get("STACK", 0)))
            name = None
    return result


def ptxas_spills(ptx: str, workdir: str, fp_fusion: bool = True) -> dict:
    """spill stores/loads (bytes per thread) that ptxas -v reports for the PTX (its own .target),
    assembled by the ptxas Triton uses for that target, with Triton's FMA flag."""
    arch = re.search(r"^\.target\s+(\S+)", ptx, re.M).group(1).rstrip(",")
    path = os.path.join(workdir, "kernel.ptx")
    with open(path, "w") as handle:
        handle.write(ptx)
    fmad = [] if fp_fusion else ["--fmad=false"]
    number = int(re.sub(r"\D", "", arch))
    proc = subprocess.run([ptxas_for(number), "-v", *fmad, f"--gpu-name={arch}", path, "-o",
                           os.path.join(workdir, "k.o")], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", proc.stderr)
    return dict(spill_stores=int(spills.group(1)), spill_loads=int(spills.group(2)))


def _kernel_function(spec: Spec):
    module, function = spec.kernel.split(".")
    return getattr(__import__(f"kpfast.triton.{module}", fromlist=[function]), function)


def _specialised_ints(spec: Spec) -> dict:
    """The integer arguments the launcher specialises on: all but the kernel's ``do_not_specialize``."""
    fixed = {param.name for param in getattr(_kernel_function(spec), "params", ())
             if getattr(param, "do_not_specialize", False)}
    return {name: value for name, value in spec.ints.items()
            if spec.signature.get(name) == "i32" and name not in fixed}


def specialised_signature(spec: Spec) -> tuple[dict, dict]:
    """(signature, constexprs) with the integer arguments the launcher turns into the constant 1."""
    signature, constexprs = dict(spec.signature), dict(spec.constexprs)
    for name, value in _specialised_ints(spec).items():
        if value == 1:
            signature[name], constexprs[name] = "constexpr", 1
    return signature, constexprs


def divisible_arguments(spec: Spec) -> list[str]:
    """Arguments the launcher marks divisible by 16: every pointer (the torch caching allocator's
    blocks are 16-byte aligned, and the launcher checks), and the integers that are."""
    ints = _specialised_ints(spec)
    return [name for name, kind in spec.signature.items()
            if kind.startswith("*") or (name in ints and ints[name] % 16 == 0)]


def compile_key(spec: Spec) -> tuple:
    """What decides the compiled kernel: two specs with the same key compile the same code (sizes
    with the same block shapes, integer constants and divisibility), two with different keys never
    share a record."""
    signature, constexprs = specialised_signature(spec)
    return (spec.kernel, json.dumps(signature, sort_keys=True), json.dumps(constexprs, sort_keys=True),
            tuple(divisible_arguments(spec)), json.dumps(spec.options, sort_keys=True), spec.num_warps)


def constant_ones(spec: Spec) -> tuple[str, ...]:
    """The integer arguments the launcher turns into the constant 1 for this spec (a degenerate
    side, one instance, K = 1, a unit stride)."""
    return tuple(sorted(name for name, value in _specialised_ints(spec).items() if value == 1))


def compile_one(spec: Spec, arch: int) -> dict:
    """Compile ``spec`` for sm_<arch> and measure it; never raises (errors land in the record)."""
    import triton
    from triton.backends.compiler import GPUTarget

    from kpfast.triton._common import compile_options

    fn = _kernel_function(spec)
    record = dict(kernel=spec.kernel, name=spec.name, arch=arch, num_warps=spec.num_warps, **spec.label,
                  constant_ones=list(constant_ones(spec)))
    try:
        signature, constexpr_values = specialised_signature(spec)
        constexprs = {(fn.arg_names.index(k),): v for k, v in constexpr_values.items()}
        attrs = {(fn.arg_names.index(k),): [["tt.divisibility", 16]] for k in divisible_arguments(spec)}
        missing = set(fn.arg_names) - set(signature)
        if missing:
            raise ValueError(f"signature misses {sorted(missing)}")
        source = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
        compiled = triton.compile(source, target=GPUTarget("cuda", arch, THREADS_PER_WARP),
                                  options=dict(spec.options, num_warps=spec.num_warps, **compile_options()))
    except Exception as error:  # noqa: BLE001 - the record carries the compiler's message
        record.update(ok=False, error=f"{type(error).__name__}: {str(error)[-1500:]}")
        return record
    threads = spec.num_warps * THREADS_PER_WARP
    direction = map_access(spec.kernel)[0]
    elements = spec.elements_per_loop or _block_elements(spec.constexprs)
    element_bytes = ELEMENT_BYTES.get(spec.label.get("dtype", ""))
    expected = None
    if direction and elements and element_bytes:
        expected = elements * element_bytes * (2 if direction == "both" else 1) // threads
    with tempfile.TemporaryDirectory() as workdir:
        cubin = os.path.join(workdir, "kernel.cubin")
        with open(cubin, "wb") as handle:
            handle.write(compiled.asm["cubin"])
        usage = next(iter(resource_usage(cubin).values()), {})
        record.update(usage)
        # Triton's shared memory is dynamic (the launcher passes it), invisible to cuobjdump.
        record["shared"] = max(record.get("shared", 0), int(getattr(compiled.metadata, "shared", 0) or 0))
        record.update(ptxas_spills(compiled.asm["ptx"], workdir, compile_options()["enable_fp_fusion"]))
        direction, summary = resolve_access(_run([_tool("cuobjdump"), "-sass", cubin]), spec.kernel, expected)
        record.update(summary)
    record.update(threads=threads, map_access=direction, element_bytes=element_bytes, elements_per_loop=elements,
                  enable_fp_fusion=getattr(compiled.metadata, "enable_fp_fusion", None))
    record["loop_sass_per_element"] = (round(record["loop_sass"] * threads / elements, 2)
                                       if elements and record.get("loop_sass") else None)
    record["ok"] = True
    return record


def _block_elements(constexprs: dict) -> int | None:
    """Map elements one program handles: its BLOCK, or BLOCK_H * BLOCK_W (a 2-D tile)."""
    if "BLOCK" in constexprs:
        return int(constexprs["BLOCK"])
    if "BLOCK_H" in constexprs and "BLOCK_W" in constexprs:
        return int(constexprs["BLOCK_H"]) * int(constexprs["BLOCK_W"])
    return None


def quick_set(specs: list[Spec]) -> list[Spec]:
    """The unit-test set: the first spec of each kernel, loss kind, decode method and blur size in
    QUICK_BLURS (register budgets and spills), and of each kernel, decode method, blur size and set
    of launcher constants equal to 1 (one instance, K = 1, each degenerate side: compiled as the
    launcher would, never merged into the general case; the loss kinds differ in pixel arithmetic
    only, which no constant reaches)."""
    seen, quick = set(), []
    for spec in specs:
        blur = spec.label.get("blur_kernel")
        if blur is not None and blur not in QUICK_BLURS:
            continue
        general = (spec.kernel, spec.label.get("kind"), spec.label.get("method"), blur)
        constants = (spec.kernel, spec.label.get("method"), blur, constant_ones(spec))
        if general not in seen or constants not in seen:
            seen.update((general, constants))
            quick.append(spec)
    return quick


def _compile_star(args):
    return compile_one(*args)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90])
    parser.add_argument("--json", help="write the records here (default: stdout)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--sizes", default=None, help="comma-separated HxW list (default: docs/design.md's and more)")
    parser.add_argument("--quick", action="store_true",
                        help="one specialisation per kernel, kind, method, blur size in QUICK_BLURS and set of "
                             "integer arguments equal to 1 (default sizes: docs/design.md's and DEGENERATE_SIZES)")
    parser.add_argument("--keypoints", type=int, nargs="+", default=None,
                        help=f"keypoint counts K (default: {LAUNCH_KEYPOINTS}; --quick: {LAUNCH_KEYPOINTS} and "
                             f"{DEGENERATE_KEYPOINTS})")
    parser.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="only this prediction/map dtype")
    parser.add_argument("--kernel", default=None, help="only kernels whose name contains this")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("triton_aot: unset TRITON_INTERPRET (the interpreter compiles nothing)", file=sys.stderr)
        return 2
    if args.sizes is None:
        sizes = SIZES + DEGENERATE_SIZES if args.quick else SIZES
    else:
        sizes = tuple(tuple(int(v) for v in s.split("x")) for s in args.sizes.split(","))
    keypoints = args.keypoints or ((LAUNCH_KEYPOINTS, DEGENERATE_KEYPOINTS) if args.quick else (LAUNCH_KEYPOINTS,))
    specs = [s for s in specialisations(sizes, keypoints) if (args.kernel is None or args.kernel in s.kernel)
             and (args.dtype is None or s.label.get("dtype") == args.dtype)]
    if args.quick:
        specs = quick_set(specs)
    unique = {}
    for spec in specs:  # the first spec of each compiled kernel names its record
        unique.setdefault(compile_key(spec), spec)
    specs = list(unique.values())
    work = [(spec, arch) for arch in args.arch for spec in specs]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            records = list(pool.map(_compile_star, work, chunksize=4))
    else:
        records = [compile_one(*item) for item in work]
    import triton

    payload = dict(triton=triton.__version__, records=records)
    text = json.dumps(payload, indent=1)
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(text)
    else:
        print(text)
    failed = [r for r in records if not r["ok"]]
    print(f"triton_aot: {len(records) - len(failed)}/{len(records)} compiled", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

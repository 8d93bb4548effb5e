"""Ahead-of-time compile gate for every Triton kernel, with no GPU and no interpreter.

``python -m kpfast.triton.aot --arch 80 90 --json out.json`` compiles every kernel in every
specialisation the ops launch for DESIGN.md's workloads (each encoding, loss kind, prediction
dtype, constexpr block shape from the launchers' own config functions, with and without the
instance axis) with ``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))``,
then reads the static resources of each compiled kernel:

* ``regs``, ``shared``, ``local`` from ``cuobjdump --dump-resource-usage`` of the cubin;
* ``spill_stores`` / ``spill_loads`` (bytes per thread) from ``ptxas -v`` on the same PTX;
* ``sass``: static SASS instructions of the kernel; ``loop_sass``: instructions in its largest
  innermost loop (a backward branch's span with no loop inside); ``loop_sass_per_element``:
  that count times the threads of a program over the elements one iteration of that loop
  handles (only for kernels whose hot loop walks map pixels, else null); ``loop_global_bytes``:
  global load/store bytes per thread issued by that loop (from the LDG/STG widths).

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

# The heatmap sizes of DESIGN.md's workloads, plus an odd small map and an HRNet-sized one.
SIZES = ((64, 48), (96, 72), (17, 13), (128, 96))
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
THREADS_PER_WARP = 32


@dataclasses.dataclass
class Spec:
    kernel: str            # module.function
    label: dict            # what this specialisation is (encoding, kind, dtype, size, ...)
    signature: dict        # argument name -> Triton type, or "constexpr"
    constexprs: dict       # argument name -> value
    num_warps: int = 4
    elements_per_loop: int | None = None  # map pixels one iteration of the hot loop handles

    @property
    def name(self) -> str:
        parts = [f"{k}={v}" for k, v in self.label.items()]
        return f"{self.kernel}[{','.join(parts)}]"


def _sig(names, types, constexprs):
    signature = dict(zip(names, types))
    for name in constexprs:
        signature[name] = "constexpr"
    return signature


def specialisations(sizes=SIZES) -> list[Spec]:
    from kpfast.triton import decode, loss, render

    specs = []
    for height, width in sizes:
        size = f"{height}x{width}"
        for encoding in ("msra", "udp", "dark"):
            for instances in ("one", "many"):  # N == 1 is specialised by Triton's launcher
                n = {"N": 1} if instances == "one" else {}
                for dtype in DTYPES:
                    c = dict(render.forward_config(height, width, encoding), **n)
                    names = ["keypoints_ptr", "weights_ptr", "sigma_ptr", "out_ptr", "weights_out_ptr", "N", "K",
                             "height", "width"]
                    types = ["*fp32", "*fp32", "*fp32", f"*{dtype}", "*fp32", "i32", "i32", "i32", "i32"]
                    specs.append(Spec("render._render_forward_kernel",
                                      dict(size=size, encoding=encoding, N=instances, dtype=dtype),
                                      _sig(names, types, c), c))
                    c = dict(render.backward_config(height, width, encoding), **n)
                    names = ["grad_ptr", "keypoints_ptr", "weights_ptr", "sigma_ptr", "grad_keypoints_ptr",
                             "grad_sigma_ptr", "N", "K", "height", "width"]
                    types = [f"*{dtype}", "*fp32", "*fp32", "*fp32", "*fp32", "*fp32", "i32", "i32", "i32", "i32"]
                    specs.append(Spec("render._render_backward_kernel",
                                      dict(size=size, encoding=encoding, N=instances, dtype=dtype),
                                      _sig(names, types, c), c))
                    for kind in ("mse", "focal", "cornernet"):
                        # the compiled-product default exponents and the general powers (mse has none)
                        for fixed in ((True,) if kind == "mse" else (True, False)):
                            # contiguous pred: stride_w == 1, which the launcher specialises too
                            c = dict(loss.launch_config(height, width, encoding, kind, fixed), stride_w=1, **n)
                            warps = c.pop("num_warps", 4)
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
                                              elements_per_loop=block))
                            upstream_tail = tail[:10] + ["upstream_stride_b", "upstream_stride_k"] + tail[10:]
                            names = ["upstream_ptr", "pred_ptr", "keypoints_ptr", "weights_ptr", "sigma_ptr",
                                     "grad_ptr"] + upstream_tail
                            types = (["*fp32", f"*{dtype}", "*fp32", "*fp32", "*fp32", f"*{dtype}"] + ["i32"] * 12
                                     + ["fp32"] * 8)
                            specs.append(Spec("loss._loss_backward_kernel", label, _sig(names, types, c), c, warps,
                                              elements_per_loop=block))
                            if kind == "cornernet":
                                continue
                            # the gradient-in-forward opt-in (mse, focal): loss and gradient in one pass
                            c = dict(loss.fused_launch_config(height, width, encoding, kind, fixed), stride_w=1, **n)
                            warps = c.pop("num_warps", 4)
                            names = ["pred_ptr", "keypoints_ptr", "weights_ptr", "sigma_ptr", "map_losses_ptr",
                                     "positives_ptr", "grad_ptr"] + tail[:11] + ["expected_upstream"] + tail[11:]
                            types = ([f"*{dtype}", "*fp32", "*fp32", "*fp32", "*fp32", "*fp32", f"*{dtype}"]
                                     + ["i32"] * 10 + ["fp32"] * 9)
                            specs.append(Spec("loss._loss_fused_forward_kernel", label, _sig(names, types, c), c,
                                              warps, elements_per_loop=c["BLOCK_H"] * c["BLOCK_W"]))
                    if (height, width) == sizes[0] and encoding == "msra" and instances == "one":
                        c = dict(BLOCK=loss.RESCALE_BLOCK)  # one per dtype: no size, encoding or N in it
                        names = ["grad_ptr", "upstream_ptr", "upstream_stride_b", "upstream_stride_k", "K",
                                 "map_size", "expected_upstream"]
                        types = [f"*{dtype}", "*fp32", "i32", "i32", "i32", "i32", "fp32"]
                        specs.append(Spec("loss._loss_rescale_kernel", dict(dtype=dtype), _sig(names, types, c), c,
                                          4, elements_per_loop=loss.RESCALE_BLOCK))
        for dtype in DTYPES:
            for method in decode.METHODS:
                for blur_kernel in ((11, 3, 31) if method in ("dark", "udp") else (11,)):
                    c = decode.decode_config(height, width, method, blur_kernel, 3)
                    warps = c.pop("num_warps")
                    names = ["maps_ptr", "coords_ptr", "scores_ptr", "height", "width"]
                    types = [f"*{dtype}", "*fp32", "*fp32", "i32", "i32"]
                    label = dict(size=size, method=method, dtype=dtype)
                    if method in ("dark", "udp"):
                        label["blur_kernel"] = blur_kernel
                    specs.append(Spec("decode._decode_kernel", label, _sig(names, types, c), c, warps,
                                      elements_per_loop=c["BLOCK"]))
            c = decode.soft_argmax_config(height * width)
            warps = c.pop("num_warps")
            names = ["maps_ptr", "coords_ptr", "scores_ptr", "lse_ptr", "width", "size", "beta"]
            types = [f"*{dtype}", "*fp32", "*fp32", "*fp32", "i32", "i32", "fp32"]
            specs.append(Spec("decode._soft_argmax_kernel", dict(size=size, dtype=dtype), _sig(names, types, c), c,
                              warps, elements_per_loop=c["BLOCK"]))
            c = decode.soft_argmax_backward_config(height * width)
            warps = c.pop("num_warps")
            names = ["grad_coords_ptr", "maps_ptr", "coords_ptr", "lse_ptr", "grad_ptr", "width", "size", "beta"]
            types = ["*fp32", f"*{dtype}", "*fp32", "*fp32", f"*{dtype}", "i32", "i32", "fp32"]
            specs.append(Spec("decode._soft_argmax_backward_kernel", dict(size=size, dtype=dtype),
                              _sig(names, types, c), c, warps))
            for distance in (1, 2, 3):
                c = decode.find_peaks_config(height, width, distance)
                warps = c.pop("num_warps")
                names = ["maps_ptr", "coords_ptr", "scores_ptr", "valid_ptr", "height", "width", "threshold",
                         "max_peaks"]
                types = [f"*{dtype}", "*fp32", "*fp32", "*i8", "i32", "i32", "fp32", "i32"]
                specs.append(Spec("decode._find_peaks_kernel", dict(size=size, distance=distance, dtype=dtype),
                                  _sig(names, types, c), c, warps))
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


_SASS_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);")
_BRANCH = re.compile(r"\bBRA\b.*?(0x[0-9a-f]+|`\(\.L_x_\d+\))")
_LABEL = re.compile(r"^\s*\.L_x_(\d+):")
_ACCESS = re.compile(r"\b(LDG|STG)(\.E)?(\.[A-Z0-9.]+)?\s")


def _access_bytes(op: str) -> int:
    """Bytes per thread of one LDG/STG: its width suffix (.128, .64, .U16, .U8 ...), default 4."""
    for suffix, size in ((".128", 16), (".64", 8), (".U16", 2), (".S16", 2), (".U8", 1), (".S8", 1)):
        if suffix in op:
            return size
    return 4


def sass_summary(sass: str) -> dict:
    """Static figures of one kernel's SASS listing: instruction count and its innermost loops."""
    instructions = []  # (address, text)
    labels = {}
    for line in sass.splitlines():
        label = _LABEL.match(line)
        if label:
            labels[f".L_x_{label.group(1)}"] = None  # address filled by the next instruction
            pending = f".L_x_{label.group(1)}"
            labels[pending] = ("pending",)
            continue
        match = _SASS_LINE.search(line)
        if match:
            address = int(match.group(1), 16)
            for key, value in labels.items():
                if value == ("pending",):
                    labels[key] = address
            instructions.append((address, match.group(2).strip()))
    loops = []
    for address, text in instructions:
        branch = _BRANCH.search(text)
        if not branch:
            continue
        target = branch.group(1)
        target = int(target, 16) if target.startswith("0x") else labels.get(target.strip("`()"))
        if isinstance(target, int) and target < address:  # (a self-branch is the exit trap)
            loops.append((target, address))
    innermost = [(s, e) for s, e in loops if not any(s <= s2 and e2 <= e and (s2, e2) != (s, e) for s2, e2 in loops)]
    best = None
    for start, end in innermost:
        body = [text for address, text in instructions if start <= address <= end]
        if best is None or len(body) > len(best):
            best = body
    loop_bytes = None
    if best is not None:
        loop_bytes = sum(_access_bytes(m.group(0)) for text in best for m in [_ACCESS.search(text + " ")] if m)
    return dict(sass=len(instructions), loops=len(innermost), loop_sass=len(best) if best else None,
                loop_global_bytes=loop_bytes)


def _run(cmd: list[str]) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def resource_usage(cubin_path: str) -> dict:
    """{function: {regs, shared, local, stack}} from cuobjdump --dump-resource-usage."""
    out = _run([_tool("cuobjdump"), "--dump-resource-usage", cubin_path])
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


def ptxas_spills(ptx: str, workdir: str) -> dict:
    """spill stores/loads (bytes per thread) that ptxas -v reports for the PTX (its own .target)."""
    arch = re.search(r"^\.target\s+(\S+)", ptx, re.M).group(1).rstrip(",")
    path = os.path.join(workdir, "kernel.ptx")
    with open(path, "w") as handle:
        handle.write(ptx)
    proc = subprocess.run([_tool("ptxas"), "-v", f"--gpu-name={arch}", path, "-o", os.path.join(workdir, "k.o")],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", proc.stderr)
    return dict(spill_stores=int(spills.group(1)), spill_loads=int(spills.group(2)))


def compile_one(spec: Spec, arch: int) -> dict:
    """Compile ``spec`` for sm_<arch> and measure it; never raises (errors land in the record)."""
    import triton
    from triton.backends.compiler import GPUTarget

    module, function = spec.kernel.split(".")
    fn = getattr(__import__(f"kpfast.triton.{module}", fromlist=[function]), function)
    record = dict(kernel=spec.kernel, name=spec.name, arch=arch, num_warps=spec.num_warps, **spec.label)
    try:
        constexprs = {(fn.arg_names.index(k),): v for k, v in spec.constexprs.items()}
        # Pointers from the torch caching allocator are 16-byte aligned; the launcher says so too.
        attrs = {(fn.arg_names.index(k),): [["tt.divisibility", 16]] for k, v in spec.signature.items()
                 if v.startswith("*")}
        missing = set(fn.arg_names) - set(spec.signature)
        if missing:
            raise ValueError(f"signature misses {sorted(missing)}")
        source = triton.compiler.ASTSource(fn=fn, signature=spec.signature, constexprs=constexprs, attrs=attrs)
        compiled = triton.compile(source, target=GPUTarget("cuda", arch, THREADS_PER_WARP),
                                  options=dict(num_warps=spec.num_warps))
    except Exception as error:  # noqa: BLE001 - the record carries the compiler's message
        record.update(ok=False, error=f"{type(error).__name__}: {str(error)[-1500:]}")
        return record
    with tempfile.TemporaryDirectory() as workdir:
        cubin = os.path.join(workdir, "kernel.cubin")
        with open(cubin, "wb") as handle:
            handle.write(compiled.asm["cubin"])
        usage = next(iter(resource_usage(cubin).values()), {})
        record.update(usage)
        record.update(ptxas_spills(compiled.asm["ptx"], workdir))
        record.update(sass_summary(_run([_tool("cuobjdump"), "-sass", cubin])))
    threads = spec.num_warps * THREADS_PER_WARP
    record["loop_sass_per_element"] = (round(record["loop_sass"] * threads / spec.elements_per_loop, 2)
                                       if spec.elements_per_loop and record.get("loop_sass") else None)
    record["ok"] = True
    return record


def _compile_star(args):
    return compile_one(*args)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90])
    parser.add_argument("--json", help="write the records here (default: stdout)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--sizes", default=None, help="comma-separated HxW list (default: DESIGN.md's and more)")
    parser.add_argument("--quick", action="store_true", help="one specialisation per kernel, kind, method")
    parser.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="only this prediction/map dtype")
    parser.add_argument("--kernel", default=None, help="only kernels whose name contains this")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("kpfast.triton.aot: unset TRITON_INTERPRET (the interpreter compiles nothing)", file=sys.stderr)
        return 2
    sizes = SIZES if args.sizes is None else tuple(tuple(int(v) for v in s.split("x")) for s in args.sizes.split(","))
    specs = [s for s in specialisations(sizes) if (args.kernel is None or args.kernel in s.kernel)
             and (args.dtype is None or s.label.get("dtype") == args.dtype)]
    if args.quick:  # one specialisation per kernel, loss kind and decode method: the unit-test set
        seen, quick = set(), []
        for spec in specs:
            key = (spec.kernel, spec.label.get("kind"), spec.label.get("method"))
            if key not in seen:
                seen.add(key)
                quick.append(spec)
        specs = quick
    specs = list({(s.kernel, json.dumps(s.constexprs, sort_keys=True), json.dumps(s.signature, sort_keys=True)): s
                  for s in specs}.values())  # sizes with the same block shapes compile the same kernel
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
    print(f"kpfast.triton.aot: {len(records) - len(failed)}/{len(records)} compiled", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

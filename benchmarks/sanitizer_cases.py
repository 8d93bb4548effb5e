"""A small case of every GPU op (forward and backward) for compute-sanitizer.

    compute-sanitizer --tool memcheck --error-exitcode 1 python benchmarks/sanitizer_cases.py --backend cuda

Runs the cases of ``python -m kpfast.info``'s self-test (every op, encoding, loss kind and
decode method on a 2x5x20x15 batch) once on ``--backend``, then synchronises, so every CUDA
kernel of kpfast executes under the tool at least once; then the decoding ops on the maps that
take their other memory paths (decode_paths)."""

import argparse
import sys

import torch


def decode_paths(device: torch.device) -> dict:
    """{name: maps} for the decoding kernels' memory paths: 16-byte vectors whose rows wrap, a
    scalar head and tail (odd sizes on a storage offset: map starts off 16-byte boundaries, and a
    gradient aligned differently from its map -> the all-scalar backward), W below a vector,
    half precision, faint maps (DARK/UDP's whole-map rescale fallback), and a map too large for
    find_peaks' shared-memory stage (global window reads)."""
    generator = torch.Generator().manual_seed(0)
    paths = {}
    for height, width in ((7, 9), (5, 3), (100, 80)):
        maps = torch.rand(2, 3, height, width, generator=generator)
        maps[0, 0] *= 1e-12
        for dtype in (torch.float32, torch.bfloat16):
            storage = torch.zeros(maps.numel() + 3, dtype=dtype, device=device)
            paths[f"{height}x{width} {dtype} offset 3"] = storage[3:].view(maps.shape).copy_(maps)
    return paths


def _decode_cases(maps, backend: str) -> None:
    from kpfast import ops

    for method in ("argmax", "quarter", "dark", "udp", "local_mean"):
        ops.decode_heatmaps(maps, method=method, blur_kernel=11, window=5, backend=backend)
    source = maps.detach().requires_grad_(True)  # the same (offset) storage: a misaligned map
    coords, _ = ops.soft_argmax(source, beta=2.0, backend=backend)
    coords.sum().backward()
    ops.find_peaks(maps, threshold=0.5, min_distance=2, max_peaks=4, backend=backend)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="cuda", choices=["cuda", "triton"])
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("sanitizer_cases: no GPU", file=sys.stderr)
        return 2
    from kpfast import backends, info

    device = torch.device("cuda")
    reason = backends._device_reason(args.backend, device)
    if reason is not None:
        print(f"sanitizer_cases: {reason}", file=sys.stderr)
        return 2
    for name, case in info._cases(info._inputs(device)).items():
        case(args.backend)
        torch.cuda.synchronize()
        print("ran", name)
    for name, maps in decode_paths(device).items():
        _decode_cases(maps, args.backend)
        torch.cuda.synchronize()
        print("ran decode paths", name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

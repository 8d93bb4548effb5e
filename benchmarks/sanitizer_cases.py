"""A small case of every GPU op (forward and backward) for compute-sanitizer.

    compute-sanitizer --tool memcheck --error-exitcode 1 python benchmarks/sanitizer_cases.py --backend cuda

Runs the cases of ``python -m kpfast.info``'s self-test (every op, encoding, loss kind and
decode method on a 2x5x20x15 batch) once on ``--backend``, then synchronises, so every CUDA
kernel of kpfast executes under the tool at least once; then the decoding ops on the maps that
take their other memory paths (decode_paths); then every vectorised path on inputs that break its
assumptions (layout_cases: a view one element into its storage, a non-contiguous view, an
expanded upstream gradient), in float32, bfloat16 and float16."""

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
    from kpfast import ops, vocabulary

    for method in vocabulary.DECODE_METHODS:
        ops.decode_heatmaps(maps, method=method, blur_kernel=11, window=5, backend=backend)
    source = maps.detach().requires_grad_(True)  # the same (offset) storage: a misaligned map
    coords, _ = ops.soft_argmax(source, beta=2.0, backend=backend)
    coords.sum().backward()
    ops.find_peaks(maps, threshold=0.5, min_distance=2, max_peaks=4, backend=backend)


def _in_layout(values: torch.Tensor, layout: str) -> torch.Tensor:
    """values one element into a fresh storage ("offset": data_ptr off 16 bytes) or as every row of
    a buffer one element wider ("strided": non-contiguous)."""
    if layout == "offset":
        storage = torch.empty(values.numel() + 1, dtype=values.dtype, device=values.device)
        return storage[1:].view_as(values).copy_(values)
    buffer = torch.empty(*values.shape[:-1], values.shape[-1] + 1, dtype=values.dtype, device=values.device)
    return buffer[..., :-1].copy_(values)


def layout_cases(device: torch.device, backend: str) -> list[str]:
    """Run the loss (pred), render backward (grad_heatmaps, also expanded), decode, soft-argmax
    (with the expanded upstream of coords.sum()) and find_peaks on misaligned and strided inputs;
    returns the names run."""
    from kpfast import ops

    generator = torch.Generator().manual_seed(1)
    keypoints = (torch.rand(2, 2, 3, 2, generator=generator) * torch.tensor([16.0, 12.0])).to(device)
    weights = torch.ones(2, 2, 3, device=device)
    names = []
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        base = torch.rand(2, 3, 12, 16, generator=generator).to(device=device, dtype=dtype)
        for layout in ("offset", "strided", "expanded"):
            if layout == "expanded":
                upstream = torch.ones((), device=device, dtype=dtype).expand(base.shape)
            else:
                upstream = _in_layout(base, layout)
                pred = _in_layout(base, layout).requires_grad_(True)
                ops.heatmap_loss(pred, keypoints, weights, sigma=1.5, kind="focal", backend=backend).backward()
                ops.decode_heatmaps(upstream, "dark", backend=backend)
                ops.decode_heatmaps(upstream, "local_mean", window=5, backend=backend)
                ops.find_peaks(upstream, threshold=0.5, min_distance=1, max_peaks=4, backend=backend)
                maps = _in_layout(base, layout).requires_grad_(True)
                ops.soft_argmax(maps, beta=2.0, backend=backend)[0].sum().backward()
            leaf = keypoints.clone().requires_grad_(True)
            heatmaps, _ = ops.render_heatmaps(leaf, weights, size=(12, 16), sigma=1.5, encoding="udp", dtype=dtype,
                                              backend=backend)
            torch.autograd.grad(heatmaps, leaf, grad_outputs=upstream)
            if device.type == "cuda":
                torch.cuda.synchronize()
            names.append(f"{layout} {dtype}")
    return names


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
    for name in layout_cases(device, args.backend):
        print("ran layout", name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Localisation error of each decoder on Gaussians at known sub-pixel centres.

    python benchmarks/accuracy.py [--samples 2000] [--seed 0] [--backend cpu]

Prints a Markdown table: the mean (and 95th percentile) Euclidean error in heatmap pixels of
every decoding method on 64x48 maps with sigma 2, rendered with kpfast.ops.render_heatmaps
(``dark``: untruncated, ``udp``: truncated at 3 sigma), noise-free and with additive Gaussian
noise. Centres are uniform over the map, kept 3 px from the borders so that every method
(DARK refines only 2 px inside) is measured on its own terms.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kpfast.ops import decode_heatmaps, render_heatmaps, soft_argmax  # noqa: E402

HEIGHT, WIDTH, SIGMA = 64, 48, 2.0


def conditions(samples: int, seed: int):
    """(label, maps, centres) for each test condition."""
    generator = torch.Generator().manual_seed(seed)
    margin = 3.0
    centres = torch.rand(1, samples, 2, generator=generator)
    centres = centres * torch.tensor([WIDTH - 1 - 2 * margin, HEIGHT - 1 - 2 * margin]) + margin
    for encoding in ("dark", "udp"):
        maps, _ = render_heatmaps(centres, size=(HEIGHT, WIDTH), sigma=SIGMA, encoding=encoding, backend="torch")
        yield f"{encoding} map, noise-free", maps, centres
    maps, _ = render_heatmaps(centres, size=(HEIGHT, WIDTH), sigma=SIGMA, encoding="dark", backend="torch")
    for noise in (0.02, 0.1):
        noisy = maps + noise * torch.randn(maps.shape, generator=generator)
        yield f"dark map, noise std {noise}", noisy, centres


def decoders(backend: str):
    for method in ("argmax", "quarter", "dark", "udp"):
        yield method, lambda m, method=method: decode_heatmaps(m, method, blur_kernel=11, backend=backend)[0]
    for window in (3, 5):
        yield f"local_mean (window {window})", lambda m, w=window: decode_heatmaps(
            m, "local_mean", window=w, backend=backend)[0]
    for beta in (1.0, 10.0, 50.0):
        yield f"soft_argmax (beta {beta:g})", lambda m, b=beta: soft_argmax(m, beta=b, backend=backend)[0]


def table(samples: int, seed: int, backend: str) -> str:
    columns = list(conditions(samples, seed))
    header = "| method | " + " | ".join(label for label, _, _ in columns) + " |"
    lines = [header, "|---" * (len(columns) + 1) + "|"]
    for name, decode in decoders(backend):
        cells = []
        for _, maps, centres in columns:
            error = (decode(maps) - centres).norm(dim=-1).flatten()
            cells.append(f"{error.mean():.4f} ({error.quantile(0.95):.3f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args()
    print(f"Mean localisation error in heatmap pixels (95th percentile in brackets); {args.samples} centres, "
          f"{HEIGHT}x{WIDTH} maps, sigma {SIGMA:g}, blur kernel 11, seed {args.seed}.\n")
    print(table(args.samples, args.seed, args.backend))


if __name__ == "__main__":
    main()

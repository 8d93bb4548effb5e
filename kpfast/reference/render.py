"""Reference Gaussian heatmap rendering (docs/design.md, Op 1), in plain PyTorch."""

from __future__ import annotations

import torch


def materialise_weights(weights, keypoints4: torch.Tensor) -> torch.Tensor:
    """The reference takes real tensors: absent weights (None) -> ones (B, N, K)."""
    if weights is not None:
        return weights
    return torch.ones(keypoints4.shape[:-1], dtype=keypoints4.dtype, device=keypoints4.device)


def materialise_sigma(sigma, sigma_value: float, batch: int, num_keypoints: int, dtype: torch.dtype,
                      device: torch.device) -> torch.Tensor:
    """The reference takes a (B, K) sigma: (None, value), a float sigma -> a full tensor."""
    if sigma is not None:
        return sigma
    return torch.full((batch, num_keypoints), float(sigma_value), dtype=dtype, device=device)


def gaussian_maps(keypoints: torch.Tensor, weights: torch.Tensor, sigma: torch.Tensor, height: int, width: int,
                  encoding: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-instance Gaussians ``(B, N, K, H, W)`` and the validity mask ``(B, N, K)``.

    keypoints (B, N, K, 2), weights (B, N, K), sigma (B, K). The rule (shared with every kernel
    through csrc/kpfast/gaussian.h and kpfast/triton/gaussian.py):

    * a keypoint is ignored (zero map, weight 0) when a coordinate or its weight is not finite,
      its weight is below 0.5, or its sigma is not finite and > 0;
    * ``mu = floor(kp + 0.5)``; the window is the square of radius ``R = floor(3 sigma)`` around
      ``mu``; a window wholly outside the map also ignores the keypoint;
    * ``msra`` evaluates ``exp(-d^2 / 2 sigma^2)`` at ``mu`` (peak exactly 1), ``udp`` at the exact
      keypoint, both inside the window only; ``dark`` at the exact keypoint on the whole map.
    """
    x, y = keypoints.unbind(-1)
    s = sigma.unsqueeze(1)  # (B, 1, K): one sigma for all instances of a keypoint
    finite = torch.isfinite(x) & torch.isfinite(y) & torch.isfinite(weights)
    good_sigma = torch.isfinite(s) & (s > 0)
    valid = finite & (weights >= 0.5) & good_sigma
    # An ignored sigma is replaced too (a tensor sigma on a GPU is not checked on the host).
    s = torch.where(good_sigma, s, torch.ones_like(s))
    # Non-finite coordinates are replaced before any arithmetic, so no NaN reaches a gradient.
    x = torch.where(valid, x, torch.zeros_like(x))
    y = torch.where(valid, y, torch.zeros_like(y))
    radius = torch.floor(3 * s.detach())
    mu_x, mu_y = torch.floor(x.detach() + 0.5), torch.floor(y.detach() + 0.5)
    outside = (mu_x - radius > width - 1) | (mu_x + radius < 0) | (mu_y - radius > height - 1) | (mu_y + radius < 0)
    valid = valid & ~outside
    # Replaced again for keypoints whose window lies outside the map: a huge finite coordinate
    # (3e38) would otherwise overflow (x - col)^2 and send 0 * inf = NaN into the gradient; the
    # kernels give such a keypoint zero gradient.
    x = torch.where(valid, x, torch.zeros_like(x))
    y = torch.where(valid, y, torch.zeros_like(y))
    mu_x = torch.where(valid, mu_x, torch.zeros_like(mu_x))
    mu_y = torch.where(valid, mu_y, torch.zeros_like(mu_y))
    cx, cy = (mu_x, mu_y) if encoding == "msra" else (x, y)
    cols = torch.arange(width, dtype=keypoints.dtype, device=keypoints.device)
    rows = torch.arange(height, dtype=keypoints.dtype, device=keypoints.device)
    dx2 = (cols - cx.unsqueeze(-1)) ** 2  # (B, N, K, W)
    dy2 = (rows - cy.unsqueeze(-1)) ** 2  # (B, N, K, H)
    maps = torch.exp(-(dy2.unsqueeze(-1) + dx2.unsqueeze(-2)) / (2 * s.unsqueeze(-1).unsqueeze(-1) ** 2))
    mask = valid.unsqueeze(-1).unsqueeze(-1)
    if encoding != "dark":
        in_x = (cols - mu_x.unsqueeze(-1)).abs() <= radius.unsqueeze(-1)
        in_y = (rows - mu_y.unsqueeze(-1)).abs() <= radius.unsqueeze(-1)
        mask = mask & in_y.unsqueeze(-1) & in_x.unsqueeze(-2)
    return torch.where(mask, maps, torch.zeros_like(maps)), valid


def render_heatmaps(keypoints: torch.Tensor, weights: torch.Tensor, sigma: torch.Tensor, height: int, width: int,
                    encoding: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmaps ``(B, K, H, W)`` in ``dtype`` and weights ``(B, N, K)``: the max over instances."""
    maps, valid = gaussian_maps(keypoints, weights, sigma, height, width, encoding)
    # max(dim) (not amax) routes each pixel's gradient to one instance, as the kernels do.
    heatmaps = maps.max(dim=1).values if maps.shape[1] > 0 else maps.sum(dim=1)
    weights_out = torch.where(valid, weights, torch.zeros_like(weights))
    return heatmaps.to(dtype), weights_out

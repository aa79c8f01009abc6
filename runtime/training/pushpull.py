"""Multi-scale push-pull hole filler (no learned weights), exportable to ONNX with dynamic H, W.

Push: a pyramid of coverage-weighted 2x2 averages (ceil mode, so odd sizes keep their border),
``LEVELS`` levels, topped by one global weighted mean. Pull: coarse to fine, each level keeps its own
estimate in proportion to its weight and takes the rest from the upsampled coarser level. Colour is
weighted by coverage; depth by coverage on pixels with depth > 0 only. Pixels with coverage >= 0.999
come out exactly as given. With nothing covered, colour is mid-grey (0.5) and depth 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LEVELS = 7
"""Pooling levels (fixed, so the traced graph works for any H, W; a global mean tops the pyramid)."""
COVERED = 0.999
"""Coverage at or above this keeps the input pixel exactly."""
EMPTY_RGB = 0.5
EPS = 1e-6


KERNELS = {"both": ((2, 2), 4.0), "rows": ((1, 2), 2.0), "cols": ((2, 1), 2.0)}
"""Per ``along``: the pooling kernel (H, W) of one push step and the number of children it averages."""


def _push(value: torch.Tensor, weight: torch.Tensor, along: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One step: weighted mean of the 2x2 children (or, along rows, 1x2; along columns, 2x1); weight =
    sum of the child weights clamped to 1."""
    kernel, children = KERNELS[along]
    num = F.avg_pool2d(value * weight, kernel, kernel, ceil_mode=True, count_include_pad=False)
    den = F.avg_pool2d(weight, kernel, kernel, ceil_mode=True, count_include_pad=False)
    return num / den.clamp_min(EPS), (den * children).clamp(0.0, 1.0)


def _up(coarse: torch.Tensor, like: torch.Tensor, along: str) -> torch.Tensor:
    """Bilinear 2x upsampling (pixel centres aligned with the pooling), cropped to ``like``'s size."""
    scale = tuple(float(k) for k in KERNELS[along][0])
    up = F.interpolate(coarse, scale_factor=scale, mode="bilinear", align_corners=False)
    return up[:, :, : like.shape[2], : like.shape[3]]


def push_pull(value: torch.Tensor, weight: torch.Tensor, empty: float, along: str = "both") -> torch.Tensor:
    """Fill ``value`` [N,C,H,W] where ``weight`` [N,1,H,W] (in [0, 1]) is below 1; ``empty`` if none.

    ``along="rows"``: pool 1x2 along rows and top each row with its own mean, so holes take colours
    from their own row only (``empty`` where a row has nothing at all); ``"cols"``: the same down each
    column (what "rows" gives on the transposed image, without the transposes)."""
    if along not in KERNELS:
        raise ValueError(f"along={along!r}: use one of {', '.join(KERNELS)}")
    value = torch.where(weight > 0, value, torch.zeros_like(value))  # no 0 * inf or 0 * nan
    values, weights = [value], [weight]
    for _ in range(LEVELS):
        v, w = _push(values[-1], weights[-1], along)
        values.append(v)
        weights.append(w)
    top_v, top_w = values[-1], weights[-1]
    dims = {"both": (2, 3), "rows": (3,), "cols": (2,)}[along]
    total = top_w.sum(dim=dims, keepdim=True)
    mean = (top_v * top_w).sum(dim=dims, keepdim=True) / total.clamp_min(EPS)
    filled = torch.where(total > EPS, mean, torch.full_like(mean, empty))
    for level in range(LEVELS, -1, -1):
        v, w = values[level], weights[level]
        coarse = filled if level == LEVELS else _up(filled, v, along)
        filled = v * w + coarse * (1.0 - w)
    return filled


class PushPullFiller(nn.Module):
    """``forward(memory_rgb [1,3,H,W], memory_depth [1,1,H,W], memory_coverage [1,1,H,W]) -> (rgb, depth)``."""

    def forward(
        self, memory_rgb: torch.Tensor, memory_depth: torch.Tensor, memory_coverage: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cov = memory_coverage.clamp(0.0, 1.0)
        depth_w = cov * (memory_depth > 0).to(cov.dtype)
        rgb = push_pull(memory_rgb, cov, EMPTY_RGB)
        depth = push_pull(memory_depth, depth_w, 0.0)
        keep = memory_coverage >= COVERED
        rgb = torch.where(keep, memory_rgb, rgb).clamp(0.0, 1.0)
        depth = torch.where(keep, memory_depth, depth).clamp_min(0.0)
        return rgb, depth

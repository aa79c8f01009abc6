"""Slow, plain reference of the splat rule in `runtime.memory.splat` (tests only).

Loops over points and pixels one at a time with numpy float32 scalars, so every comparison is made
on exactly the float32 values the vectorised kernel computes. It is the specification, written to be
read: if the two ever disagree, this one says what was meant.
"""

from __future__ import annotations

import numpy as np
import torch

from plugin_bridge.camera import Intrinsics
from runtime.memory.geometry import float32_constants
from runtime.memory.splat import (
    BLEND_EPS,
    BLEND_SCALE,
    DIST_SCALE,
    FUSION_CAP,
    FUSION_REACH,
    FUSION_STEP_PX,
    SplatWinners,
)


def reference_splat(
    xyz_cam: torch.Tensor,  # [N, 3] float32 camera-space points
    radius: torch.Tensor,  # [N] float32 world-space half-size
    intrinsics: Intrinsics,
    *,
    near: float,
    max_radius_px: int,
    depth_tolerance: float,
    depth_bias: torch.Tensor | None = None,
    rgb: torch.Tensor | None = None,
) -> SplatWinners:
    f32 = np.float32
    fx, fy, cx, cy, f_mean = (f32(c) for c in float32_constants(intrinsics))
    width, height = intrinsics.width, intrinsics.height
    xyz = xyz_cam.detach().cpu().to(torch.float32).numpy()
    rad = radius.detach().cpu().to(torch.float32).numpy()
    n = xyz.shape[0]
    bias = (
        np.zeros(n, np.float32) if depth_bias is None else depth_bias.detach().cpu().to(torch.float32).numpy()
    )

    # 1. project every point; keep those in front of the near plane whose square can reach the image
    projected = []  # (point index, u, v, z, half-size)
    for i in range(xyz.shape[0]):
        x, y, z = (f32(c) for c in xyz[i])
        if not z > f32(near):
            continue
        u = x / z * fx + cx
        v = y / z * fy + cy
        r = min(max(rad[i] * f_mean / z, f32(0.0)), f32(max_radius_px))
        half = max(r, f32(0.5))
        zt = z if depth_bias is None else z * (bias[i] + f32(1.0))  # the depth the tests see
        if -half <= u <= half + f32(width - 1) and -half <= v <= half + f32(height - 1):
            projected.append((i, u, v, z, zt, half))

    colours = None if rgb is None else rgb.detach().cpu().numpy().astype(np.int64)
    index = np.full((height, width), -1, dtype=np.int64)
    depth = np.zeros((height, width), dtype=np.float32)
    fused = np.zeros((height, width, 3), dtype=np.float32)
    tolerance = f32(1.0 + depth_tolerance)
    fragments_at = {}
    zmin = np.full((height, width), np.inf, dtype=np.float32)
    for py in range(height):
        for px in range(width):
            # 2. every point whose square covers this pixel centre
            fragments = []
            for i, u, v, z, zt, half in projected:
                dx, dy = f32(px) - u, f32(py) - v
                if abs(dx) <= half and abs(dy) <= half:
                    quantised = int(dx * dx * f32(DIST_SCALE)) + int(dy * dy * f32(DIST_SCALE))
                    # colour fusion weight: a tent over the splat (a = half-size + 1/2 px), per area,
                    # sharpened towards the point's centre (inverse squared distance, softened)
                    a = half + f32(0.5)
                    tent = (f32(1.0) - abs(dx) / a) * (f32(1.0) - abs(dy) / a)
                    weight = int(tent * (f32(BLEND_SCALE) / (a * a)) / (dx * dx + dy * dy + f32(BLEND_EPS)))
                    fragments.append((zt, quantised, i, z, weight))
            if fragments:
                fragments_at[py, px] = fragments
                # 3. the nearest test depth
                zmin[py, px] = min(f[0] for f in fragments)
    for (py, px), fragments in fragments_at.items():
        # 4. within tolerance of the nearest, nearest centre, then lowest index
        front = [(q, i, z, w) for zt, q, i, z, w in fragments if zt <= zmin[py, px] * tolerance]
        _, best, best_z, _ = min(front)
        index[py, px] = best
        depth[py, px] = best_z
        if colours is not None:  # 5. the colours of the fused front (deeper where the front slopes), weighted
            deepest = _fused_front(zmin, py, px, tolerance)
            plain = zmin[py, px] * tolerance  # biased points (guesses) fuse on the front only
            fused_front = [
                (i, w)
                for zt, _, i, _, w in fragments
                if zt <= plain or (bias[i] == f32(0.0) and zt <= deepest)
            ]
            total = sum(w for _, w in fused_front)
            sums = [sum(w * int(colours[i, c]) for i, w in fused_front) for c in range(3)]
            for c in range(3):  # no weight at all (far off-centre fragments only): the winner's
                mean = sums[c] / total if total > 0 else int(colours[best, c])
                fused[py, px, c] = f32(f32(mean) / f32(255.0))
    return SplatWinners(
        torch.from_numpy(index), torch.from_numpy(depth), len(projected),
        None if rgb is None else torch.from_numpy(fused),
    )  # fmt: skip


def _fused_front(zmin: np.ndarray, py: int, px: int, tolerance: np.float32) -> np.float32:
    """The deepest test depth whose colour fuses at pixel (px, py) of a finite front depth zmin."""
    f32 = np.float32
    z = zmin[py, px]
    height, width = zmin.shape
    step = FUSION_STEP_PX
    slopes = []
    for (ay, ax), (by, bx) in (((py, px + step), (py, px - step)), ((py + step, px), (py - step, px))):
        # the differences to the pixels one step after and before, where those have a front
        after = zmin[ay, ax] - z if ay < height and ax < width and np.isfinite(zmin[ay, ax]) else None
        before = z - zmin[by, bx] if by >= 0 and bx >= 0 and np.isfinite(zmin[by, bx]) else None
        if after is not None and before is not None:
            one_way = (after > 0 and before > 0) or (after < 0 and before < 0)
            slopes.append(min(abs(after), abs(before)) if one_way else f32(0.0))
        elif after is not None or before is not None:
            slopes.append(abs(after if after is not None else before))
        else:
            slopes.append(f32(0.0))
    g = max(slopes)
    return z * min((g / z) * f32(FUSION_REACH) + tolerance, max(f32(FUSION_CAP), tolerance))

"""Fidelity against ground truth (observe mode), DESIGN.md "How quality is measured".

A session is fed engine RGB-D observations along an out-and-back outbound path; at held-out poses
near the path (shifted sideways and turned, never on it) Mirage's what-if frame (ContextualInference,
commit=False) is compared with the engine's own render at that pose, over the whole frame, over the
pixels memory covered and over the pixels the generator filled.

The baseline, ``warp_nearest``, is what a user would try first: forward-warp the nearest observed
frame into the held-out pose with a z-buffer and let the same generator fill the holes, so only the
memory differs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from plugin_bridge.camera import Intrinsics
from plugin_bridge.client import AsyncMirageClient
from plugin_bridge.types import Observation, Pose
from runtime.metrics import PSNR_CAP_DB, psnr, ssim
from runtime.scenes.paths import out_and_back

FIDELITY_METHODS: tuple[str, ...] = ("mirage", "warp_nearest")
"""Rows of the fidelity table, per scene."""


def forward_warp(
    rgb: np.ndarray,
    depth: np.ndarray,
    intrinsics: Intrinsics,
    src_cam_to_world: np.ndarray,
    dst_cam_to_world: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward-warp an RGB-D frame into another camera with a z-buffer (nearest depth wins).

    Each source pixel with a depth goes to 3-D (planar depth along its ray), is projected into the
    destination camera and written to the pixel it lands on (rounded). Depth +inf (sky) is a direction:
    it moves with the rotation only and loses to any finite surface. Depth 0 or nan is unknown.
    Returns (rgb uint8 [H, W, 3], planar depth float32 [H, W] with 0 at holes, covered bool [H, W]).
    """
    h, w = depth.shape
    k = intrinsics
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)], axis=-1).reshape(-1, 3)
    z = np.asarray(depth, dtype=np.float64).reshape(-1)
    finite = np.isfinite(z) & (z > 0)
    at_inf = np.isposinf(z)
    src, dst = np.asarray(src_cam_to_world, np.float64), np.asarray(dst_cam_to_world, np.float64)
    r_dst_t = dst[:3, :3].T
    # destination-camera coordinates: finite points are moved, points at infinity only rotated
    pts = np.zeros_like(rays)
    world = rays[finite] * z[finite, None] @ src[:3, :3].T + src[:3, 3]
    pts[finite] = (world - dst[:3, 3]) @ r_dst_t.T
    pts[at_inf] = rays[at_inf] @ src[:3, :3].T @ r_dst_t.T
    in_front = (finite | at_inf) & (pts[:, 2] > 1e-6)
    with np.errstate(divide="ignore", invalid="ignore"):
        ud = np.rint(k.fx * pts[:, 0] / pts[:, 2] + k.cx)
        vd = np.rint(k.fy * pts[:, 1] / pts[:, 2] + k.cy)
    keep = in_front & (ud >= 0) & (ud < w) & (vd >= 0) & (vd < h)
    src_idx = np.flatnonzero(keep)
    target = (vd[keep] * w + ud[keep]).astype(np.int64)
    zbuf = np.where(finite, pts[:, 2], np.inf)[keep]
    # z-buffer: sort by (target pixel, depth) and keep the first (nearest) source pixel per target
    order = np.lexsort((zbuf, target))
    first = np.unique(target[order], return_index=True)[1]
    winners, pixels = src_idx[order[first]], target[order[first]]

    out_rgb = np.zeros((h * w, 3), dtype=np.uint8)
    out_depth = np.zeros(h * w, dtype=np.float32)
    covered = np.zeros(h * w, dtype=bool)
    out_rgb[pixels] = np.asarray(rgb).reshape(-1, 3)[winners]
    out_depth[pixels] = np.where(finite[winners], pts[winners, 2], np.inf)
    covered[pixels] = True
    return out_rgb.reshape(h, w, 3), out_depth.reshape(h, w), covered.reshape(h, w)


def held_out_poses(
    path: list[np.ndarray],
    count: int,
    *,
    seed: int,
    shift_m: tuple[float, float] = (0.3, 0.6),
    yaw_deg: tuple[float, float] = (5.0, 15.0),
    margin: int = 0,
) -> list[np.ndarray]:
    """``count`` poses near ``path``: path poses moved sideways (camera x, horizontal) by ``shift_m`` and
    turned about world z by ``yaw_deg`` (random sign each), deterministic from ``seed``."""
    rng = np.random.default_rng([seed, 0x5EED])
    idx = np.linspace(margin, len(path) - 1 - margin, num=count).round().astype(int)
    poses = []
    for i in idx:
        base = np.asarray(path[i], dtype=np.float64)
        shift = rng.uniform(*shift_m) * rng.choice((-1.0, 1.0))
        yaw = math.radians(rng.uniform(*yaw_deg) * rng.choice((-1.0, 1.0)))
        c, s = math.cos(yaw), math.sin(yaw)
        rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        pose = base.copy()
        pose[:3, 3] = base[:3, 3] + shift * base[:3, 0]
        pose[:3, :3] = rz @ base[:3, :3]
        poses.append(pose)
    return poses


@dataclass
class ViewScores:
    psnr_all: float
    psnr_covered: float
    psnr_filled: float
    ssim_all: float
    coverage: float


def score_view(frame: np.ndarray, truth: np.ndarray, covered: np.ndarray) -> ViewScores:
    """PSNR (capped at PSNR_CAP_DB) whole frame, over covered and over filled pixels; SSIM whole frame.
    A region with no pixels scores nan."""

    def capped(mask: np.ndarray | None) -> float:
        return min(psnr(frame, truth, mask), PSNR_CAP_DB)  # min(nan, x) keeps nan

    return ViewScores(
        psnr_all=capped(None),
        psnr_covered=capped(covered) if covered.any() else math.nan,
        psnr_filled=capped(~covered) if (~covered).any() else math.nan,
        ssim_all=ssim(frame, truth),
        coverage=float(covered.mean()),
    )


def mean_finite(values: list[float]) -> float:
    """Mean of the finite values; nan when there are none (a figure undefined in every view)."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def summarise(scene: str, method: str, views: list[ViewScores]) -> dict:
    """One fidelity row: each figure averaged over the views where it is defined (nan if none)."""
    return {
        "scene": scene,
        "method": method,
        "psnr_all": mean_finite([v.psnr_all for v in views]),
        "psnr_covered": mean_finite([v.psnr_covered for v in views]),
        "psnr_filled": mean_finite([v.psnr_filled for v in views]),
        "ssim_all": mean_finite([v.ssim_all for v in views]),
        "coverage": mean_finite([v.coverage for v in views]),
        "views": len(views),
    }


def warp_nearest(
    generator,  # GeneratorHost
    observed: list[tuple[np.ndarray, np.ndarray, np.ndarray]],  # (pose, rgb, depth)
    pose: np.ndarray,
    intrinsics: Intrinsics,
    *,
    seed: int = 0,
    detail: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The baseline frame at ``pose``: warp the nearest observation, fill its holes with the generator
    (at ``detail``, for a model with detail control). Returns (rgb uint8 [H, W, 3], covered bool
    [H, W]: pixels the warp covered)."""
    centre = pose[:3, 3]
    src_pose, src_rgb, src_depth = min(observed, key=lambda o: float(np.linalg.norm(o[0][:3, 3] - centre)))
    rgb, depth, covered = forward_warp(src_rgb, src_depth, intrinsics, src_pose, pose)
    mem_rgb = rgb.astype(np.float32) / 255.0
    mem_depth = np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)
    gen_rgb, _ = generator.generate(
        mem_rgb, mem_depth, covered.astype(np.float32), intrinsics=intrinsics, seed=seed, detail=detail
    )
    gen_u8 = np.clip(np.rint(gen_rgb * 255.0), 0, 255).astype(np.uint8)
    return np.where(covered[..., None], rgb, gen_u8), covered


@dataclass
class FidelitySpec:
    observations: int = 40
    """Engine RGB-D observations streamed into memory."""
    stride: int = 5
    """Every stride-th pose of the outbound path is observed (outbound length: observations * stride)."""
    views: int = 20
    """Held-out poses scored."""


async def run_fidelity(
    client: AsyncMirageClient,
    scene,  # PandaSceneSource
    scene_name: str,
    generator,  # GeneratorHost
    spec: FidelitySpec,
    *,
    seed: int = 0,
    detail: float | None = None,
    label: str = "",
    progress: Callable[[int], None] | None = None,
) -> list[dict]:
    """Fidelity rows (mirage, warp_nearest) for one scene, both with ``generator`` (a GeneratorHost:
    the session is opened with the same model by name) at ``detail`` (models with detail control;
    None: the card's default); rows are labelled ``label`` (default: the model's name)."""
    tick = progress or (lambda _n: None)
    n_out = spec.observations * spec.stride
    path = out_and_back(n_out, seed=seed)[:n_out]
    observed = []
    for i in range(0, n_out, spec.stride):
        rgb, depth = scene.render(path[i])
        observed.append((path[i], rgb, depth))
    targets = held_out_poses(path, spec.views, seed=seed, margin=spec.stride // 2)
    k = scene.intrinsics
    info = await client.open_session(
        k, window_frames=0, seed=seed, generator=generator.name, generator_detail=detail
    )
    scores: dict[str, list[ViewScores]] = {m: [] for m in FIDELITY_METHODS}
    try:
        stream = client.stream(info.session_id)
        for j, (pose, rgb, depth) in enumerate(observed):
            await stream.send_observation(Observation(Pose.from_canonical(pose), rgb, depth, sequence=j + 1))
            tick(1)
        await stream.close()  # drains: every observation is ingested before the queries below
        for v, pose in enumerate(targets):
            truth, _ = scene.render(pose)
            view = await client.render(info.session_id, Pose.from_canonical(pose))
            frame = await client.contextual_inference(
                info.session_id, Pose.from_canonical(pose), commit=False
            )
            scores["mirage"].append(score_view(frame.rgb, truth, view.coverage >= 0.5))
            warped, covered = warp_nearest(
                generator, observed, pose, k, seed=(seed * 1_000_003 + v) & 0x7FFFFFFF, detail=detail
            )
            scores["warp_nearest"].append(score_view(warped, truth, covered))
            tick(1)
    finally:
        await client.close_session(info.session_id)
    return [
        {**summarise(scene_name, m, scores[m]), "generator": label or generator.name}
        for m in FIDELITY_METHODS
    ]

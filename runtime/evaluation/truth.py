"""Memory against the truth, per scene family, with Open3D's TSDF fusion beside it.

For each family (`runtime.scenes.families`: worlds other than the garden and courtyard memory was
built on) the same engine RGB-D frames along an outbound path are streamed into a Mirage session and
integrated into Open3D's TSDF
(`runtime.evaluation.peers`); at held-out poses, each memory is rendered (Mirage through
`SpatialMemoryQuery`, memory unchanged; Open3D by ray casting) and compared with the engine's own
render of that pose. Held-out poses are of two kinds, half each: beside the path (moved sideways
0.3-0.6 m and turned 5-15 degrees, as in the fidelity test) and up close (moved forward along the
view towards what the path saw at the image centre, to 45 % of its distance, at most 3 m: surfaces
first seen from afar, approached).

Figures per view (`score_truth`), averaged over a family's views:
- **PSNR both**: over the pixels both memories cover with a surface (a finite depth);
- **PSNR all, SSIM all**: the whole frame as rendered (uncovered pixels black; Mirage's environment
  map draws the sky, Open3D leaves it empty);
- **coverage**: the share of the pixels whose truth has a surface in range (finite depth up to
  ``TruthSpec.depth_range``) that some observed frame saw (`observed_mask`) which the memory covers
  with a surface;
- **see-through**: the share of those pixels where the memory shows no surface, or one more than
  10 % beyond the truth's depth (something behind the true surface shows through it);
- **unobserved**: the share of the truth's surface pixels no observed frame saw (left out of the two
  figures above: no memory can hold what was never seen; the generator's job).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from plugin_bridge.client import AsyncMirageClient
from plugin_bridge.types import Observation, Pose
from runtime.evaluation.fidelity import held_out_poses, mean_finite
from runtime.evaluation.peers import Open3DTSDF, TSDFConfig, open3d_available
from runtime.metrics import PSNR_CAP_DB, psnr, ssim
from runtime.scenes.families import FAMILIES
from runtime.scenes.paths import out_and_back

TRUTH_METHODS: tuple[str, ...] = ("mirage", "open3d_tsdf")
"""Rows of the truth table, per family."""
SEE_THROUGH_MARGIN = 0.10
"""A rendered surface more than this fraction beyond the truth's depth is see-through."""


@dataclass(frozen=True)
class TruthSpec:
    families: tuple[str, ...] = FAMILIES
    """Scene families scored (one world each, drawn by the eval's seed)."""
    size: int = 128
    """Square frame size, pixels."""
    observations: int = 60
    """Engine RGB-D frames observed (every ``stride``-th pose of the outbound path)."""
    stride: int = 3
    """Path poses per observation."""
    views: int = 16
    """Held-out poses scored: half beside the path, half up close."""
    depth_range: float = 40.0
    """Truth depth up to this counts as a surface in range (Open3D integrates and casts to here too)."""
    voxel_size: float = 0.02
    """Open3D's voxel edge, metres."""


def close_up_poses(
    path: list[np.ndarray], scene, count: int, *, seed: int, margin: int = 0
) -> list[np.ndarray]:
    """``count`` poses moved forward along the view of path poses, towards the surface the engine
    shows at the image centre, to 45 % of its depth (at most 3 m forward; a pose whose centre shows
    nothing in range moves 3 m)."""
    rng = np.random.default_rng([seed, 0xC105E])
    idx = np.linspace(margin, len(path) - 1 - margin, num=count).round().astype(int)
    idx = np.clip(idx + rng.integers(-margin, margin + 1, size=count), 0, len(path) - 1)
    poses = []
    for i in idx:
        base = np.asarray(path[i], dtype=np.float64)
        _, depth = scene.render(base)
        h, w = depth.shape
        centre = depth[h // 2 - 2 : h // 2 + 3, w // 2 - 2 : w // 2 + 3]
        finite = centre[np.isfinite(centre)]
        forward = 3.0 if finite.size == 0 else min(3.0, 0.55 * float(finite.min()))
        pose = base.copy()
        pose[:3, 3] = base[:3, 3] + forward * base[:3, 2]
        poses.append(pose)
    return poses


def observed_mask(
    truth_depth: np.ndarray,
    pose: np.ndarray,
    intrinsics,
    observed: list[tuple[np.ndarray, np.ndarray, np.ndarray]],  # (pose, rgb, depth)
    *,
    tolerance: float = 0.03,
) -> np.ndarray:
    """[H, W] bool: truth pixels (finite depth) whose surface point some observed frame saw: it
    projects inside that frame, in front of its camera, and the frame's depth at one of the 2 x 2
    pixels around the projection is within ``tolerance`` (relative) of the point's depth there."""
    k = intrinsics
    h, w = truth_depth.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    z = np.asarray(truth_depth, np.float64)
    finite = np.isfinite(z) & (z > 0)
    rays = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)], -1)[finite]
    world = (rays * z[finite, None]) @ pose[:3, :3].T + pose[:3, 3]
    seen = np.zeros(world.shape[0], bool)
    for obs_pose, _, obs_depth in observed:
        cam = (world - obs_pose[:3, 3]) @ obs_pose[:3, :3]
        zc = cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uc, vc = k.fx * cam[:, 0] / zc + k.cx, k.fy * cam[:, 1] / zc + k.cy
        inside = (zc > 1e-3) & (uc > -0.5) & (uc < w - 0.5) & (vc > -0.5) & (vc < h - 0.5) & ~seen
        idx = np.flatnonzero(inside)
        u0, v0 = np.floor(uc[idx]).astype(int), np.floor(vc[idx]).astype(int)
        for du in (0, 1):
            for dv in (0, 1):
                d = obs_depth[np.clip(v0 + dv, 0, h - 1), np.clip(u0 + du, 0, w - 1)]
                match = np.isfinite(d) & (np.abs(d - zc[idx]) <= tolerance * zc[idx])
                seen[idx[match]] = True
    mask = np.zeros((h, w), bool)
    mask[finite] = seen
    return mask


@dataclass
class TruthScores:
    psnr_both: float
    psnr_all: float
    ssim_all: float
    coverage: float
    see_through: float
    unobserved: float


def score_truth(
    rgb: np.ndarray,
    depth: np.ndarray,
    both: np.ndarray,
    truth_rgb: np.ndarray,
    truth_depth: np.ndarray,
    depth_range: float,
    seen: np.ndarray | None = None,
) -> TruthScores:
    """One memory render (rgb uint8, planar depth: 0 none, +inf environment) against the truth;
    ``both``: the pixels both memories cover with a surface; ``seen``: the truth pixels an observed
    frame saw (`observed_mask`; None: all)."""
    in_range = np.isfinite(truth_depth) & (truth_depth > 0) & (truth_depth <= depth_range)
    surface = in_range if seen is None else in_range & seen
    covered = np.isfinite(depth) & (depth > 0)
    n = int(surface.sum())
    through = surface & (~covered | (depth > (1.0 + SEE_THROUGH_MARGIN) * truth_depth))
    return TruthScores(
        psnr_both=min(psnr(rgb, truth_rgb, both), PSNR_CAP_DB) if both.any() else math.nan,
        psnr_all=min(psnr(rgb, truth_rgb), PSNR_CAP_DB),
        ssim_all=ssim(rgb, truth_rgb),
        coverage=float((covered & surface).sum() / n) if n else math.nan,
        see_through=float(through.sum() / n) if n else math.nan,
        unobserved=float((in_range & ~surface).sum() / max(int(in_range.sum()), 1)),
    )


def truth_row(family: str, method: str, views: list[TruthScores]) -> dict:
    return {
        "family": family,
        "method": method,
        **{k: mean_finite([getattr(v, k) for v in views]) for k in TruthScores.__dataclass_fields__},
        "views": len(views),
    }


def truth_units(spec: TruthSpec) -> int:
    """Progress units of `run_truth`: every observation and every held-out view, per family."""
    return len(spec.families) * (spec.observations + spec.views)


async def run_truth(
    client: AsyncMirageClient,
    scene,  # PandaSceneSource of the family
    family: str,
    spec: TruthSpec,
    *,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[dict]:
    """Truth rows (mirage, and open3d_tsdf where open3d imports) for one family's world."""
    tick = progress or (lambda _n: None)
    n_out = spec.observations * spec.stride
    path = out_and_back(n_out, seed=seed)[:n_out]
    observed = [(path[i], *scene.render(path[i])) for i in range(0, n_out, spec.stride)]
    side = spec.views // 2
    margin = spec.stride // 2
    targets = held_out_poses(path, side, seed=seed, margin=margin)
    targets += close_up_poses(path, scene, spec.views - side, seed=seed, margin=margin)
    k = scene.intrinsics
    peer = None
    if open3d_available()[0]:
        peer = Open3DTSDF(k, TSDFConfig(voxel_size=spec.voxel_size, depth_max=spec.depth_range))
    info = await client.open_session(k, window_frames=0, seed=seed)
    scores: dict[str, list[TruthScores]] = {m: [] for m in TRUTH_METHODS}
    try:
        stream = client.stream(info.session_id)
        for j, (pose, rgb, depth) in enumerate(observed):
            await stream.send_observation(Observation(Pose.from_canonical(pose), rgb, depth, sequence=j + 1))
            if peer is not None:
                peer.integrate(pose, rgb, depth)
            tick(1)
        await stream.close()  # drains: every observation is ingested before the queries below
        for pose in targets:
            truth_rgb, truth_depth = scene.render(pose)
            seen = observed_mask(truth_depth, pose, k, observed)
            view = await client.render(info.session_id, Pose.from_canonical(pose))
            m_depth = view.depth if view.depth is not None else np.where(view.coverage > 0, np.inf, 0.0)
            m_cover = np.isfinite(m_depth) & (m_depth > 0)
            if peer is not None:
                o_rgb, o_depth, o_cover = peer.render(pose)
                both = m_cover & o_cover
                scores["open3d_tsdf"].append(
                    score_truth(o_rgb, o_depth, both, truth_rgb, truth_depth, spec.depth_range, seen)
                )
            else:
                both = m_cover
            scores["mirage"].append(
                score_truth(view.rgb, m_depth, both, truth_rgb, truth_depth, spec.depth_range, seen)
            )
            tick(1)
    finally:
        await client.close_session(info.session_id)
    return [truth_row(family, m, scores[m]) for m in TRUTH_METHODS if scores[m]]

"""Multi-scale refinement: a surface seen closer later is stored finer and its coarse points retire."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from plugin_bridge.camera import Camera, Intrinsics
from plugin_bridge.conventions import look_at
from runtime.memory import MemoryConfig, SpatialMemory
from runtime.memory.ingest import MATCH_MAX_RADIUS_PX, square_min_max

MiB = 2**20
INTR = Intrinsics.from_fov(64, 64, 70.0)
WALL_X = 22.0  # a textured wall: the plane x = WALL_X, facing -x (world z up)
FAR, NEAR = 20.0, 2.0


def texture(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Deterministic colour (uint8 [..., 3]) of the wall at (y, z): wavelengths from 1.3 to 2.3 m, about
    three pixels of the far view and more (finer detail would alias there: the far PSNR would be noise)."""
    tau = 2 * np.pi
    rgb = np.stack(
        (
            128 + 80 * np.sin(tau * y / 1.7) * np.cos(tau * z / 2.3),
            128 + 70 * np.sin(tau * (y + z) / 1.3),
            128 + 60 * np.cos(tau * y / 1.5) * np.sin(tau * z / 1.9),
        ),
        -1,
    )
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def wall_camera(distance: float, sway: float = 0.0, intrinsics: Intrinsics = INTR) -> Camera:
    """Facing the wall from ``distance`` metres, ``sway`` metres to the side (and a little up)."""
    eye = np.array([WALL_X - distance, sway, 1.5 + 0.5 * sway])
    return Camera(intrinsics, look_at(eye, eye + np.array([1.0, 0.0, 0.0])))


def wall_frame(camera: Camera, turned_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 [H, W, 3] and planar depth float32 [H, W] of the wall (the ray cast truth), optionally
    turned by ``turned_deg`` about the vertical through (WALL_X, 0)."""
    k = camera.intrinsics
    u, v = np.meshgrid(np.arange(k.width, dtype=float), np.arange(k.height, dtype=float))
    rays = (
        np.stack(((u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)), -1) @ camera.cam_to_world[:3, :3].T
    )
    origin = camera.cam_to_world[:3, 3]
    a = np.radians(turned_deg)
    normal = np.array([np.cos(a), np.sin(a), 0.0])
    t = ((np.array([WALL_X, 0.0, 0.0]) - origin) @ normal) / (rays @ normal)  # rays have camera z = 1
    hit = origin + rays * t[..., None]
    return texture(hit[..., 1], hit[..., 2]), t.astype(np.float32)


def approach(frames: int, intrinsics: Intrinsics = INTR) -> list[Camera]:
    """Walking up to the wall from FAR to NEAR metres (geometric steps), swaying a little."""
    distances = np.geomspace(FAR, NEAR, frames)
    return [wall_camera(d, 0.3 * np.sin(0.7 * i), intrinsics) for i, d in enumerate(distances)]


def observe(memory: SpatialMemory, camera: Camera, frame: int, depth=None):
    rgb, truth = wall_frame(camera)
    return memory.ingest(camera, rgb, truth if depth is None else depth, provenance=1, frame_index=frame)


def psnr(memory: SpatialMemory, camera: Camera) -> float:
    render = np.clip(np.rint(memory.render(camera).rgb.numpy() * 255.0), 0, 255)
    mse = np.mean((render - wall_frame(camera)[0].astype(float)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


# a far view that no ingested frame had exactly (its own frame would render back exactly, PSNR inf)
FAR_VIEW = wall_camera(FAR - 0.4, sway=0.17)


def square_footprints(memory: SpatialMemory, camera: Camera):
    """Per stored point: (u, v, unclamped pixel half-size r, whether the footprint lies in the image)."""
    k = camera.intrinsics
    xyz = memory.points()["xyz"].numpy().astype(float)
    local = (xyz - camera.position) @ camera.cam_to_world[:3, :3]
    z = local[:, 2]
    u, v = local[:, 0] / z * k.fx + k.cx, local[:, 1] / z * k.fy + k.cy
    r = memory.points()["radius"].numpy() * (k.fx + k.fy) / 2 / z
    inside = (np.floor(u - r + 0.5) >= 0) & (np.floor(u + r + 0.5) <= k.width - 1)
    inside &= (np.floor(v - r + 0.5) >= 0) & (np.floor(v + r + 0.5) <= k.height - 1)
    return u, v, r, inside & (z > 0)


@functools.cache
def walked(refine: bool):
    """Walk the approach (24 frames, observed); returns (memory, cameras, refined per frame, far view
    (coverage, PSNR) after each frame)."""
    memory = SpatialMemory(MemoryConfig(refine=refine, budget_bytes=64 * MiB))
    cameras = approach(24)
    refined, far = [], []
    for i, camera in enumerate(cameras):
        refined.append(observe(memory, camera, i).refined)
        far.append((memory.render(FAR_VIEW).coverage.numpy().copy(), psnr(memory, FAR_VIEW)))
    return memory, cameras, refined, far


def test_walking_up_to_a_wall_retires_the_coarse_points_the_near_views_covered():
    on, cameras, refined, _ = walked(True)
    off, _, refined_off, _ = walked(False)
    assert sum(refined_off) == 0 and off.stats().points_refined_total == 0
    assert sum(refined) == on.stats().points_refined_total > 0
    assert on.num_points < 0.75 * off.num_points
    # coarse in the nearest view with the whole footprint in it: what the near views fully covered
    last = cameras[-1]
    counts = []
    for memory in (on, off):
        _, _, r, inside = square_footprints(memory, last)
        counts.append(int((inside & (r > MATCH_MAX_RADIUS_PX)).sum()))
    assert counts[1] > 100 and counts[0] <= 0.02 * counts[1]


def test_after_the_approach_the_far_view_keeps_its_coverage_and_colours():
    _, _, refined, far = walked(True)
    _, _, _, far_off = walked(False)
    first = next(i for i, n in enumerate(refined) if n)  # the first frame that retired anything
    (cover_before, _), (_, psnr_before), (cover_after, psnr_after) = far[0], far[first - 1], far[-1]
    assert cover_before.mean() == 1.0  # the whole far view is wall
    assert (cover_after[cover_before == 1] == 1).all()  # no hole where the far view had content
    # colours: against the memory just before the first retirement (the frames before it already moved
    # the far points' colours by matching, refinement or not) and against the same walk without it
    assert psnr_after >= psnr_before - 0.5
    assert psnr_after >= far_off[-1][1] - 0.5


def test_a_slanted_wall_is_refined_too():
    """Depth drifts across a coarse footprint on a slanted surface: the band allows for it."""
    memories, covered = [], []
    for refine in (True, False):
        memory = SpatialMemory(MemoryConfig(refine=refine))
        for frame, camera in enumerate(approach(24)):
            rgb, depth = wall_frame(camera, turned_deg=40.0)
            memory.ingest(camera, rgb, depth, provenance=1, frame_index=frame)
            if frame == 0:
                covered.append(memory.render(FAR_VIEW).coverage.numpy() == 1)
        memories.append(memory)
    on, off = memories
    assert on.stats().points_refined_total > 1000 and on.num_points < 0.85 * off.num_points
    assert (on.render(FAR_VIEW).coverage.numpy()[covered[0]] == 1).all()  # no hole at the far view


def test_a_partly_seen_footprint_is_not_retired():
    near = wall_camera(5.0)  # far points are ~2.8 px half-size here: coarse
    rgb, depth = wall_frame(near)
    nan_stripe = depth.copy()
    nan_stripe[:, 30:34] = np.nan  # unknown depth: no new points there either
    step_stripe = depth.copy()
    step_stripe[:, 30:34] -= 1.0  # a thin pole 1 m in front: new points there, depth outside the band
    for variant in (depth, nan_stripe, step_stripe):
        memory = SpatialMemory()
        observe(memory, wall_camera(FAR), 0)
        u, v, r, inside = square_footprints(memory, near)
        xyz = memory.points()["xyz"].numpy()
        in_view = (np.abs(u - 31.5) < 32) & (np.abs(v - 31.5) < 32)
        border = in_view & ~inside  # centre in the image, footprint leaving it
        stripe = inside & (np.floor(u + r + 0.5) >= 30) & (np.floor(u - r + 0.5) <= 33)
        clear = inside & ~stripe
        assert border.sum() > 10 and stripe.sum() > 10 and clear.sum() > 50
        stats = memory.ingest(near, rgb, variant, provenance=1, frame_index=1)
        kept = memory.points()
        far = kept["frame_added"] == 0
        left = {tuple(p) for p in kept["xyz"][far].numpy().tolist()}
        assert all(tuple(p) in left for p in xyz[border].tolist())  # leaves the image: kept
        retired_clear = sum(tuple(p) not in left for p in xyz[clear].tolist())
        assert retired_clear >= 0.9 * clear.sum()  # fully seen, fully refined: retired
        if variant is not depth:
            assert all(tuple(p) in left for p in xyz[stripe].tolist())  # partly unknown / stepped: kept
        assert stats.refined == len(xyz) - len(left) == memory.stats().points_refined_total


def test_generated_ingest_never_retires():
    memory = SpatialMemory()
    observe(memory, wall_camera(FAR), 0)
    far_points = memory.num_points
    for frame, distance in enumerate((8.0, 5.0, 3.0), 1):
        camera = wall_camera(distance)
        rgb, depth = wall_frame(camera)
        for provenance in (2, 3):
            stats = memory.ingest(camera, rgb, depth, provenance=provenance, frame_index=frame)
            assert stats.refined == 0
    assert int((memory.points()["frame_added"] == 0).sum()) == far_points
    assert memory.stats().points_refined_total == 0


@pytest.mark.parametrize("env, drops", [((384, 192), False), ((480, 240), True)])
def test_budget_holds_and_refinement_keeps_what_the_view_confirmed_under_a_small_budget(env, drops):
    """1 MiB: with a 384x192 environment map the budget evicts; with a 480x240 map (room for ~1500
    points) it also drops new points, and only footprints whose every pixel got a point retire."""
    config = MemoryConfig(budget_bytes=MiB, env_width=env[0], env_height=env[1], initial_capacity=1024)
    memory = SpatialMemory(config)
    dropped = refined = 0
    for frame, camera in enumerate(approach(24)):
        rgb, depth = wall_frame(camera)
        before = memory.render(camera)
        covered = before.point_index.numpy() >= 0
        stats = memory.ingest(camera, rgb, depth, provenance=1, frame_index=frame, render=before)
        dropped, refined = dropped + stats.dropped, refined + stats.refined
        assert memory.bytes_used() <= config.budget_bytes
        assert memory.stats().bytes_used == memory.bytes_used()
        after = memory.render(camera)
        confirmed = covered & (np.abs(before.depth.numpy() - depth) <= 0.02 * depth)
        assert (after.point_index.numpy()[confirmed] >= 0).all()  # nothing it confirmed went missing
        if stats.dropped == 0:
            assert (after.coverage.numpy() == 1).all()  # the view itself never loses a pixel
    assert (dropped > 0) == drops and memory.stats().points_pruned_total > 0
    assert refined == memory.stats().points_refined_total > 0


def test_square_min_max_matches_brute_force():
    g = np.random.default_rng(3)
    grid = torch.from_numpy(g.uniform(0, 10, (23, 31)).astype(np.float32))
    grid[5, 7] = float("inf")
    side = torch.from_numpy(g.integers(1, 23, 400))
    x0 = torch.from_numpy(g.integers(0, 31, 400)).clamp(max=31 - side - 1).clamp(min=0)
    y0 = torch.from_numpy(g.integers(0, 23, 400)).clamp(max=23 - side - 1).clamp(min=0)
    x1 = (x0 + side - 1 + torch.from_numpy(g.integers(0, 2, 400))).clamp(max=30)  # sides s and s + 1
    y1 = (y0 + side - 1).clamp(max=22)
    keep = (x1 - x0 - (y1 - y0)).abs() <= 1
    x0, x1, y0, y1 = x0[keep], x1[keep], y0[keep], y1[keep]
    lo, hi = square_min_max(grid, x0, x1, y0, y1)
    for i in range(x0.numel()):
        box = grid[y0[i] : y1[i] + 1, x0[i] : x1[i] + 1]
        assert lo[i] == box.min() and hi[i] == box.max()

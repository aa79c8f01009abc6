"""The environment map: content at infinity, remembered by direction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from plugin_bridge.camera import Camera, Intrinsics
from runtime.memory import EnvironmentMap, MemoryConfig, SpatialMemory
from runtime.memory.chunks import BYTES_PER_CHUNK

INTR = Intrinsics.from_fov(64, 48, 90.0)
WEST_SKY = np.array([220, 120, 90], dtype=np.uint8)  # azimuth > 0 (towards +y)
EAST_SKY = np.array([90, 140, 230], dtype=np.uint8)  # azimuth < 0
GROUND = np.array([100, 90, 60], dtype=np.uint8)


def yaw_camera(yaw_deg: float, pitch_deg: float = 20.0) -> Camera:
    """Camera at 1.5 m looking along azimuth ``yaw_deg`` (0 = world +x), tilted up by ``pitch_deg``."""
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    forward = np.array([math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), math.sin(pitch)])
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, np.cross(forward, right), forward, [0, 0, 1.5]
    return Camera(INTR, pose)


def pixel_directions(camera: Camera) -> np.ndarray:
    k = camera.intrinsics
    u, v = np.meshgrid(np.arange(k.width, dtype=float), np.arange(k.height, dtype=float))
    rays = (
        np.stack(((u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)), -1) @ camera.cam_to_world[:3, :3].T
    )
    return rays / np.linalg.norm(rays, axis=-1, keepdims=True)


def sky_frame(camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Ground plane z = 0 below the horizon; above it, sky coloured by the side of the azimuth."""
    dirs = pixel_directions(camera)
    rays = dirs / (dirs @ camera.cam_to_world[:3, 2])[..., None]  # planar depth 1 along each ray
    with np.errstate(divide="ignore"):
        t = np.where(rays[..., 2] < -1e-6, -1.5 / rays[..., 2], np.inf)
    sky = np.where((np.arctan2(dirs[..., 1], dirs[..., 0]) > 0)[..., None], WEST_SKY, EAST_SKY)
    rgb = np.where(np.isfinite(t)[..., None], GROUND, sky).astype(np.uint8)
    return rgb, t.astype(np.float32)


def test_texel_index_follows_azimuth_and_elevation():
    env = EnvironmentMap(8, 4)
    dirs = torch.tensor(
        [[1.0, 0, 0], [0, 1.0, 0], [-1.0, 1e-6, 0], [-1.0, -1e-6, 0], [0, 0, 1.0], [0, 0, -1.0]]
    )
    rows, cols = env.texel_index(dirs).div(8, rounding_mode="floor"), env.texel_index(dirs) % 8
    assert cols.tolist()[:4] == [4, 6, 7, 0]  # azimuth -pi wraps to column 0
    assert rows.tolist()[:2] == [2, 2] and rows[4] == 0 and rows[5] == 3  # +z up is row 0
    centres = env.texel_directions()
    assert torch.equal(env.texel_index(centres), torch.arange(32))
    torch.testing.assert_close(centres.norm(dim=-1), torch.ones(32))


def test_observed_writes_overwrite_generated_writes_only_fill():
    env = EnvironmentMap(16, 8)
    up_east = torch.tensor([[0.3, -0.2, 0.9]])
    up_west = torch.tensor([[0.3, 0.2, 0.9]])
    assert env.write(up_east, torch.tensor([[10, 20, 30]], dtype=torch.uint8), 0, overwrite=False) == 1
    assert env.write(up_east, torch.tensor([[99, 99, 99]], dtype=torch.uint8), 1, overwrite=False) == 0
    rgb, filled = env.lookup(torch.cat([up_east, up_west]))
    assert filled.tolist() == [True, False]
    torch.testing.assert_close(rgb[0] * 255, torch.tensor([10.0, 20.0, 30.0]))
    assert (rgb[1] == 0).all()
    assert env.write(up_east, torch.tensor([[0.5, 0.5, 0.5]]), 2, overwrite=True) == 1
    torch.testing.assert_close(env.lookup(up_east)[0][0] * 255, torch.tensor([128.0] * 3))
    assert env.filled_count == 1 and int(env.last_seen.max()) == 2


def test_samples_in_one_texel_are_averaged_and_expire_clears():
    env = EnvironmentMap(16, 8)
    dirs = torch.tensor([[1.0, 0.01, 0.0], [1.0, 0.02, 0.0]])
    assert env.write(dirs, torch.tensor([[0, 100, 200], [11, 101, 201]], dtype=torch.uint8), 5, True) == 1
    torch.testing.assert_close(env.lookup(dirs[:1])[0][0] * 255, torch.tensor([6.0, 101.0, 201.0]))
    assert env.expire(4) == 0 and env.expire(5) == 1
    assert env.filled_count == 0 and not env.lookup(dirs)[1].any()


def test_bytes_are_counted():
    env = EnvironmentMap(512, 256)
    assert env.nbytes == EnvironmentMap.nbytes_for(512, 256) == 512 * 256 * 8
    memory = SpatialMemory(MemoryConfig(initial_capacity=1000))
    table = memory.chunks.max_chunks * BYTES_PER_CHUNK  # the chunk table is allocated up front
    trajectory = memory.config.trajectory_samples * 3 * 8  # remembered camera positions, float64
    # 64 free-space keyframes: camera (12 + 4 float32, 3 + 1 int32, a uint8 flag, 6 float64) and a
    # 32x32 float16 grid
    keyframes = 64 * (16 * 4 + 4 * 4 + 1 + 6 * 8 + 32 * 32 * 2)
    assert memory.freespace.nbytes == keyframes
    assert memory.bytes_used() == 1000 * memory.bytes_per_point + table + env.nbytes + trajectory + keyframes


def project(camera: Camera, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel coordinates (u, v) of world directions in ``camera``, and whether they are in front."""
    k = camera.intrinsics
    local = dirs @ camera.cam_to_world[:3, :3]
    ahead = local[..., 2] > 1e-6
    z = np.where(ahead, local[..., 2], 1.0)
    return local[..., 0] / z * k.fx + k.cx, local[..., 1] / z * k.fy + k.cy, ahead


def test_sky_seen_once_shows_from_a_rotated_camera_at_infinite_depth():
    memory = SpatialMemory()
    first = yaw_camera(0.0)
    rgb, depth = sky_frame(first)
    stats = memory.ingest(first, rgb, depth, provenance=1, frame_index=0)
    sky = np.isinf(depth)
    assert sky.mean() > 0.3 and stats.env_texels_written > 100
    assert stats.added == (~sky).sum()  # the ground became points, the sky did not
    turned = yaw_camera(25.0, pitch_deg=30.0)
    render = memory.render(turned)
    dirs = pixel_directions(turned)
    azimuth = np.degrees(np.arctan2(dirs[..., 1], dirs[..., 0]))
    elevation = np.degrees(np.arcsin(dirs[..., 2]))
    u, v, ahead = project(first, dirs)
    k = first.intrinsics
    inside = ahead & (u > 1.5) & (u < k.width - 2.5) & (v > 1.5) & (v < k.height - 2.5)
    outside = ~ahead | (u < -3) | (u > k.width + 2) | (v < -3) | (v > k.height + 2)
    # sky the first camera saw, away from texel-sized borders (the horizon, the colour seam at azimuth 0)
    seen = inside & (elevation > 2) & (np.abs(azimuth) > 2)
    assert seen.sum() > 200 and (outside & (elevation > 0)).sum() > 100
    assert (render.coverage.numpy()[seen] == 1).all()
    assert np.isinf(render.depth.numpy()[seen]).all() and (render.point_index.numpy()[seen] == -1).all()
    expected = np.where((azimuth > 0)[..., None], WEST_SKY, EAST_SKY)
    got = np.rint(render.rgb.numpy() * 255).astype(np.uint8)
    np.testing.assert_array_equal(got[seen], expected[seen])
    assert (render.coverage.numpy()[outside & (elevation > 0)] == 0).all()  # nothing made up beyond it


def test_generated_sky_fills_only_empty_texels_and_far_depth_counts_as_infinity():
    memory = SpatialMemory(MemoryConfig(far=100.0))
    camera = yaw_camera(0.0)
    rgb, depth = sky_frame(camera)
    depth = np.where(np.isinf(depth), 5000.0, depth).astype(np.float32)  # beyond far rather than inf
    memory.ingest(camera, rgb, depth, provenance=1, frame_index=0)
    np.testing.assert_array_equal(np.isinf(memory.render(camera).depth.numpy()), depth > 100.0)
    observed = memory.env.filled.clone()
    before = memory.env.rgb.clone()
    grey = np.full_like(rgb, 7)
    render = memory.render(camera)
    stats = memory.ingest(camera, grey, depth, provenance=2, frame_index=1, render=render)
    assert stats.env_texels_written == 0  # all those directions were known already
    side = yaw_camera(60.0)
    render = memory.render(side)
    mask = render.coverage.numpy() < 0.5
    stats = memory.ingest(
        side, grey, sky_frame(side)[1], provenance=2, frame_index=2, mask=mask, render=render
    )
    assert stats.env_texels_written > 50
    assert torch.equal(memory.env.rgb[observed], before[observed])  # the observed sky is kept
    new = memory.env.filled & ~observed
    assert int(new.sum()) == stats.env_texels_written and (memory.env.rgb[new] == 7).all()
    assert memory.stats().environment_texels == int(memory.env.filled.sum())


@pytest.mark.parametrize("window", [1, 2])
def test_window_mode_expires_environment_texels(window):
    memory = SpatialMemory(MemoryConfig(window_frames=window))
    headings = [0.0, 120.0, 240.0]  # 90 degree views, level: disjoint azimuths
    for frame, yaw in enumerate(headings):
        camera = yaw_camera(yaw, pitch_deg=0.0)
        memory.ingest(camera, *sky_frame(camera), provenance=1, frame_index=frame)
    coverage = [memory.render(yaw_camera(yaw, pitch_deg=0.0)).coverage.mean().item() for yaw in headings]
    assert coverage == [0.0, 1.0 if window == 2 else 0.0, 1.0]
    assert memory.stats().environment_texels == int(memory.env.filled.sum()) > 0


@pytest.mark.parametrize("pitch", [-90.0, -60.0, 0.0, 35.0, 80.0, 90.0])
def test_writing_a_view_visits_only_its_rows_but_misses_none(pitch):
    g = np.random.default_rng(int(pitch) + 100)
    camera = yaw_camera(float(g.uniform(-180, 180)), pitch_deg=0.0)
    pose = camera.cam_to_world.copy()  # tilt about the camera's x axis (straight up/down included)
    a = math.radians(pitch)
    tilt = np.array([[1, 0, 0], [0, math.cos(a), math.sin(a)], [0, -math.sin(a), math.cos(a)]])
    pose[:3, :3] = pose[:3, :3] @ tilt
    small = Camera(Intrinsics.from_fov(16, 12, 100.0), pose)
    rgb = torch.from_numpy(g.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    at_infinity = torch.ones(12, 16, dtype=torch.bool)
    fast, full = EnvironmentMap(64, 32), EnvironmentMap(64, 32)
    full._rows_in_view = lambda camera: (0, full.height)  # every row: the plain, slow way
    written = fast.write_view(small, rgb, at_infinity, 3, overwrite=True)
    assert written == full.write_view(small, rgb, at_infinity, 3, overwrite=True) > 0
    assert torch.equal(fast.rgb, full.rgb) and torch.equal(fast.last_seen, full.last_seen)

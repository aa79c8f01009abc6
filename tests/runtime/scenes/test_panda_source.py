"""PandaSceneSource: real Panda3D renders (headless EGL), no mocks."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from plugin_bridge.camera import Camera, Intrinsics
from plugin_bridge.conventions import look_at
from runtime.scenes.panda_source import (
    CALIBRATION,
    CALIBRATION_MARKER,
    CALIBRATION_WALL_Y,
    SCENES,
    PandaSceneSource,
    SceneConfig,
)
from runtime.scenes.paths import out_and_back

AWAY = look_at((0.0, -5.0, 1.6), (-10.0, -15.0, 1.2))  # calibration scene: nothing in view


@pytest.fixture(scope="module")
def calib() -> PandaSceneSource:
    with PandaSceneSource(SceneConfig(name=CALIBRATION, width=128, height=128)) as source:
        yield source


@pytest.fixture(scope="module")
def garden() -> PandaSceneSource:
    with PandaSceneSource(SceneConfig(name="garden", width=96, height=80)) as source:
        yield source


def rolled(pose: np.ndarray, roll_deg: float) -> np.ndarray:
    """``pose`` turned about its own forward (z) axis."""
    c, s = math.cos(math.radians(roll_deg)), math.sin(math.radians(roll_deg))
    out = pose.copy()
    out[:3, :3] = pose[:3, :3] @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return out


def red_mask(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    return (r > 200) & (g < 60) & (b < 60)


def wall_depth(k: Intrinsics, pose: np.ndarray) -> np.ndarray:
    """Planar depth [H, W] of the calibration wall (plane y = CALIBRATION_WALL_Y) seen from ``pose``."""
    u, v = np.meshgrid(np.arange(k.width), np.arange(k.height))
    rays = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u, dtype=float)], axis=-1)
    world = rays @ pose[:3, :3].T  # direction per unit of forward depth
    return (CALIBRATION_WALL_Y - pose[1, 3]) / world[..., 1]


@pytest.mark.parametrize("distance", [2.0, 10.0, 50.0])
def test_plane_reads_back_its_distance(calib: PandaSceneSource, distance: float) -> None:
    pose = look_at((0.0, CALIBRATION_WALL_Y - distance, 0.0), (0.0, CALIBRATION_WALL_Y, 0.0))
    rgb, depth = calib.render(pose)
    centre = depth[62:66, 62:66]
    assert np.all(np.abs(centre - distance) <= 1e-3 * distance), centre
    # planar depth: every wall pixel of a fronto-parallel wall has the same depth
    wall = ~red_mask(rgb)
    assert wall.mean() > 0.99
    assert np.all(np.abs(depth[wall] - distance) <= 1e-3 * distance)


def test_tilted_and_rolled_view_of_the_wall_matches_the_pinhole_model(calib: PandaSceneSource) -> None:
    pose = rolled(look_at((2.0, -9.0, 1.0), (-1.0, 0.0, 3.0)), 25.0)
    rgb, depth = calib.render(pose)
    expected = wall_depth(calib.intrinsics, pose)
    wall = ~red_mask(rgb)
    assert np.all(np.isfinite(depth[wall]))
    rel = np.abs(depth[wall] - expected[wall]) / expected[wall]
    assert rel.max() < 1e-3, rel.max()


@pytest.mark.parametrize("principal_point", [None, (93.0, 51.5)])
def test_marker_projects_where_the_intrinsics_say(principal_point) -> None:
    config = SceneConfig(
        name=CALIBRATION, width=160, height=120, fov_x_deg=55.0, principal_point=principal_point
    )
    marker = np.array([*CALIBRATION_MARKER, 1.0])
    poses = [
        look_at((-1.0, -27.0, 1.9), (0.2, -19.0, 0.1)),
        rolled(look_at((3.5, -25.0, 0.0), (0.5, -19.0, 1.2)), -30.0),
        look_at((0.5, -25.5, 0.3), (2.5, -17.0, 1.5)),
    ]
    with PandaSceneSource(config) as source:
        k = source.intrinsics
        assert (k.width, k.height) == (160, 120)
        if principal_point is not None:
            assert (k.cx, k.cy) == principal_point
        for pose in poses:
            rgb, depth = source.render(pose)
            assert rgb.shape == (120, 160, 3) and depth.shape == (120, 160)
            cam = Camera(k, pose).world_to_cam @ marker
            predicted = (k.matrix() @ cam[:3])[:2] / cam[2]
            mask = red_mask(rgb)
            assert mask.sum() > 20, "marker not visible"
            vs, us = np.nonzero(mask)
            centroid = np.array([us.mean(), vs.mean()])
            assert np.abs(centroid - predicted).max() < 0.5, (centroid, predicted)
            # the marker's nearest point is one radius closer than its centre
            assert abs(depth[mask].min() - (cam[2] - 0.3)) < 0.05


def test_background_is_inf_depth_and_sky_colour(calib: PandaSceneSource) -> None:
    rgb, depth = calib.render(AWAY)  # the wall and the marker are behind
    assert np.all(np.isinf(depth)) and np.all(depth > 0)
    assert np.all(rgb == rgb[0, 0]) and rgb[0, 0, 2] > rgb[0, 0, 0]  # one pale blue


def test_sky_above_the_garden_is_inf(garden: PandaSceneSource) -> None:
    rgb, depth = garden.render(look_at((0.0, 0.0, 1.6), (0.0, 2.0, 4.0)))
    sky = np.isinf(depth)
    assert sky[0].all() and 0.2 < sky.mean() < 0.95  # sky on top, scenery below
    assert np.all(rgb[sky] == rgb[0, 0])


def test_output_types_and_row_order(garden: PandaSceneSource) -> None:
    rgb, depth = garden.render(out_and_back(1)[0])
    assert rgb.dtype == np.uint8 and rgb.shape == (80, 96, 3) and rgb.flags.c_contiguous
    assert depth.dtype == np.float32 and depth.shape == (80, 96) and depth.flags.c_contiguous
    # row 0 is the top: the ground (near) is at the bottom of the image
    assert np.nanmedian(depth[-5:]) < np.nanmedian(np.where(np.isinf(depth[:5]), np.nan, depth[:5]))
    assert garden.intrinsics == Intrinsics.from_fov(96, 80, 60.0)


def test_renders_are_deterministic(garden: PandaSceneSource) -> None:
    path = out_and_back(40, seed=3)
    rgb0, depth0 = garden.render(path[10])
    garden.render(path[30])
    rgb1, depth1 = garden.render(path[10])
    assert np.array_equal(rgb0, rgb1) and np.array_equal(depth0, depth1)
    with PandaSceneSource(SceneConfig(name="garden", width=96, height=80)) as again:
        rgb2, depth2 = again.render(path[10])
    assert np.array_equal(rgb0, rgb2) and np.array_equal(depth0, depth2)


def test_sources_do_not_see_each_other(calib: PandaSceneSource, garden: PandaSceneSource) -> None:
    _, garden_depth = garden.render(AWAY)
    _, calib_depth = calib.render(AWAY)
    assert np.isfinite(garden_depth).mean() > 0.3
    assert np.isinf(calib_depth).all()
    towards_wall = look_at((0.0, -5.0, 1.6), (0.0, 0.0, 1.6))
    _, calib_depth = calib.render(towards_wall)
    _, garden_depth = garden.render(towards_wall)
    assert abs(float(calib_depth[64, 64]) - 5.0) < 5e-3  # the wall, not the garden
    assert not np.allclose(garden_depth[40, 48], 5.0, rtol=1e-2)  # the garden, not the wall


@pytest.mark.parametrize("name", SCENES)
def test_builtin_scenes_have_content(name: str) -> None:
    with PandaSceneSource(SceneConfig(name=name, width=64, height=64)) as source:
        for pose in out_and_back(60, seed=1)[:60:20]:
            rgb, depth = source.render(pose)
            assert np.isfinite(depth).mean() > 0.3
            assert rgb.std() > 10.0
            assert np.isfinite(depth).any() and depth[np.isfinite(depth)].min() > 0.1


def test_scenes_differ_and_seed_moves_objects() -> None:
    pose = look_at((0.0, 0.0, 1.6), (3.0, -2.0, 0.8))
    images = {}
    for name, seed in (("garden", 0), ("courtyard", 0), ("garden", 7)):
        with PandaSceneSource(SceneConfig(name=name, width=64, height=64, seed=seed)) as source:
            images[name, seed] = source.render(pose)[1]
    assert not np.array_equal(images["garden", 0], images["courtyard", 0])
    assert not np.array_equal(images["garden", 0], images["garden", 7])


def test_render_from_worker_threads_matches_main_thread(garden: PandaSceneSource) -> None:
    path = out_and_back(30, seed=2)[:30:5]
    expected = [garden.render(p) for p in path]
    with ThreadPoolExecutor(max_workers=3) as pool:
        got = list(pool.map(garden.render, path))
    for (rgb0, d0), (rgb1, d1) in zip(expected, got, strict=True):
        assert np.array_equal(rgb0, rgb1) and np.array_equal(d0, d1)


def test_close_twice_and_render_after_close() -> None:
    source = PandaSceneSource(SceneConfig(name=CALIBRATION, width=16, height=16))
    source.close()
    source.close()
    with pytest.raises(RuntimeError, match="closed"):
        source.render(np.eye(4))


def test_bad_poses_are_refused(garden: PandaSceneSource) -> None:
    pose = out_and_back(1)[0]
    bad_nan = pose.copy()
    bad_nan[0, 3] = np.nan
    bad_scale = pose.copy()
    bad_scale[:3, :3] *= 2.0
    mirrored = pose.copy()
    mirrored[:3, 0] *= -1.0
    for bad in (bad_nan, bad_scale, mirrored, np.eye(3)):
        with pytest.raises(ValueError):
            garden.render(bad)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "nowhere"},
        {"width": 0},
        {"fov_x_deg": 180.0},
        {"near": 0.0},
        {"near": 5.0, "far": 2.0},
        {"principal_point": (float("nan"), 1.0)},
    ],
)
def test_bad_configs_are_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        SceneConfig(**kwargs)


@pytest.mark.parametrize("name", SCENES)
@pytest.mark.parametrize("seed", [0, 1])
def test_long_walks_keep_clear_of_objects_and_see_scenery(name: str, seed: int) -> None:
    """Along a long walk the camera never enters an object, and the view always holds scenery."""
    with PandaSceneSource(SceneConfig(name=name, width=48, height=48, seed=seed)) as source:
        for pose in out_and_back(1200, seed=seed)[:1200:8]:
            _, depth = source.render(pose)
            finite = np.isfinite(depth)
            assert finite.mean() > 0.3
            assert depth[finite].min() > 0.5


def test_random_arrangements_are_seeded():
    from runtime.scenes.panda_source import random_arrangement

    a, b, c = random_arrangement(7), random_arrangement(7), random_arrangement(8)
    assert a == b and a != c
    props = a[0]
    assert len(props) >= 8
    for p in props[:8]:  # the random props (walls, when drawn, come after them)
        x, y = p.xy
        assert -11.0 <= x <= 11.0 and -13.0 <= y <= 20.0

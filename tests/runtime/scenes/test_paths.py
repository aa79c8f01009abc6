"""Camera paths for cycle tests: symmetry, proper rotations, smoothness, staying on the lawn."""

from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.scenes.paths import PATH_KINDS, RING_CENTRE, abc_loop, out_and_back, revisit_pairs


def positions(path: list[np.ndarray]) -> np.ndarray:
    return np.array([p[:3, 3] for p in path])


def rotation_deg(a: np.ndarray, b: np.ndarray) -> float:
    r = a[:3, :3].T @ b[:3, :3]
    return math.degrees(math.acos(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)))


def assert_camera_poses(path: list[np.ndarray]) -> None:
    for pose in path:
        assert pose.shape == (4, 4) and pose.dtype == np.float64
        r = pose[:3, :3]
        np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-9)
        assert abs(np.linalg.det(r) - 1.0) < 1e-9
        np.testing.assert_array_equal(pose[3], [0.0, 0.0, 0.0, 1.0])
        x, y, z = r.T  # camera right, down, forward in world coordinates
        assert abs(x[2]) < 1e-9  # no roll: the image's horizontal stays level
        assert y[2] < -0.9  # image up is towards world +z
        assert -math.sin(math.radians(20.0)) < z[2] < 0.0  # looks slightly down


@pytest.mark.parametrize("seed", [0, 1, 5])
def test_out_and_back_is_symmetric_and_smooth(seed: int) -> None:
    n = 150
    path = out_and_back(n, seed=seed)
    assert len(path) == 2 * n
    for i in range(n):
        assert np.array_equal(path[i], path[2 * n - 1 - i])
        assert path[i] is not path[2 * n - 1 - i]
    assert_camera_poses(path)
    steps = np.linalg.norm(np.diff(positions(path[:n]), axis=0), axis=1)
    assert steps.min() > 0.079 and steps.max() < 0.085  # 0.08 m a frame, plus a little height change
    turns = [rotation_deg(path[i], path[i + 1]) for i in range(n - 1)]
    assert max(turns) < 1.5
    start = positions(path)[0]
    np.testing.assert_allclose(start[:2], (0.0, -6.0), atol=1e-12)
    assert abs(start[2] - 1.6) < 1e-12


def test_out_and_back_parameters_shape_the_walk() -> None:
    path = out_and_back(100, start=(1.0, -5.0, 1.2), step_m=0.05, height_amp_m=0.0, turn_deg_per_frame=1.0)
    pos = positions(path[:100])
    np.testing.assert_allclose(pos[0], (1.0, -5.0, 1.2))
    np.testing.assert_allclose(pos[:, 2], 1.2)
    np.testing.assert_allclose(np.linalg.norm(np.diff(pos, axis=0), axis=1), 0.05, atol=1e-9)


@pytest.mark.parametrize("seed", [0, 3, 11])
def test_long_walks_stay_on_the_lawn(seed: int) -> None:
    pos = positions(out_and_back(1200, seed=seed)[:1200])  # ~96 m, two laps and a half
    r = np.linalg.norm(pos[:, :2] - np.asarray(RING_CENTRE), axis=1)
    assert r.min() > 6.8 and r.max() < 8.7  # objects stand inside 6.4 m and outside 9 m
    assert np.all(np.abs(pos[:, 0]) < 9.5) and pos[:, 1].min() > -7.0 and pos[:, 1].max() < 11.0
    assert pos[:, 2].min() >= 1.3 - 1e-9 and pos[:, 2].max() <= 1.9 + 1e-9


def test_out_and_back_is_deterministic_per_seed() -> None:
    a, b, c = out_and_back(80, seed=4), out_and_back(80, seed=4), out_and_back(80, seed=9)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c, strict=True))


@pytest.mark.parametrize("seed", [0, 2])
def test_abc_loop_returns_to_a_by_another_route(seed: int) -> None:
    n = 40
    a, b, c = (0.0, -6.0, 1.6), (7.0, 5.5, 1.4), (-7.5, 4.5, 1.8)
    path = abc_loop(n, a=a, b=b, c=c, seed=seed)
    assert len(path) == 3 * n + 1
    assert np.array_equal(path[0], path[-1])
    pos = positions(path)
    np.testing.assert_allclose(pos[0], a, atol=1e-12)
    np.testing.assert_allclose(pos[n], b, atol=1e-12)
    np.testing.assert_allclose(pos[2 * n], c, atol=1e-12)
    assert_camera_poses(path)
    steps = np.linalg.norm(np.diff(pos, axis=0), axis=1)
    assert steps.min() > 0.05 and steps.max() < 0.6
    # the route goes all the way round the focus: the angle about it sweeps a full turn
    ang = np.unwrap(np.arctan2(pos[:, 1] - RING_CENTRE[1], pos[:, 0] - RING_CENTRE[0]))
    assert abs(abs(ang[-1] - ang[0]) - 2.0 * math.pi) < 1e-9
    assert np.all(np.diff(ang) * np.sign(ang[-1] - ang[0]) > 0.0)


@pytest.mark.parametrize("kind", PATH_KINDS)
def test_revisit_pairs_index_identical_poses(kind: str) -> None:
    n = 25
    path = out_and_back(n) if kind == "out_and_back" else abc_loop(n)
    pairs = revisit_pairs(kind, n)
    assert pairs
    for i, j in pairs:
        assert i < j < len(path)
        assert np.array_equal(path[i], path[j])
    if kind == "out_and_back":
        assert pairs == [(i, 2 * n - 1 - i) for i in range(n)]
    else:
        assert pairs == [(0, 3 * n)]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        revisit_pairs("spiral", 4)
    with pytest.raises(ValueError):
        revisit_pairs("out_and_back", 0)
    with pytest.raises(ValueError):
        out_and_back(0)
    with pytest.raises(ValueError):
        out_and_back(10, step_m=0.0)
    with pytest.raises(ValueError):
        out_and_back(10, start=RING_CENTRE + (1.6,))  # on the ring's centre: no ring
    with pytest.raises(ValueError):
        abc_loop(0)
    with pytest.raises(ValueError):
        abc_loop(5, b=(0.0, 2.0, 1.6))

"""The truth test's scores: coverage and see-through over what the observations saw, PSNR on the
pixels both memories cover, and the held-out close-up poses."""

from __future__ import annotations

import math

import numpy as np

from plugin_bridge.camera import Intrinsics
from plugin_bridge.conventions import look_at
from runtime.evaluation.truth import close_up_poses, observed_mask, score_truth

K = Intrinsics.from_fov(32, 24, 60.0)


def _wall(depth_m: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(0)
    return g.integers(0, 256, (24, 32, 3), dtype=np.uint8), np.full((24, 32), depth_m, np.float32)


def test_a_perfect_memory_covers_everything_and_shows_nothing_through():
    rgb, depth = _wall()
    s = score_truth(rgb, depth, np.ones_like(depth, bool), rgb, depth, 40.0)
    assert s.coverage == 1.0 and s.see_through == 0.0 and s.unobserved == 0.0
    assert s.psnr_both == 100.0 and s.psnr_all == 100.0 and math.isclose(s.ssim_all, 1.0, abs_tol=1e-6)


def test_holes_and_surfaces_behind_the_truth_are_see_through():
    rgb, depth = _wall()
    mine = depth.copy()
    mine[:4] = 0.0  # a hole: 4 of 24 rows
    mine[4:6] = np.inf  # the sky where the truth has a wall
    mine[6:8] = 4.0 * 1.2  # a surface 20 % behind the wall
    mine[8:10] = 4.0 * 1.05  # 5 % behind: within the margin, not see-through
    s = score_truth(rgb, mine, mine > 0, rgb, depth, 40.0)
    assert math.isclose(s.coverage, 18 / 24) and math.isclose(s.see_through, 8 / 24)
    far = np.full_like(depth, 50.0)  # truth beyond the range: nothing to cover
    assert math.isnan(score_truth(rgb, mine, mine > 0, rgb, far, 40.0).coverage)


def test_only_what_an_observation_saw_is_scored():
    rgb, depth = _wall()
    seen = np.zeros_like(depth, bool)
    seen[:, :16] = True
    mine = depth.copy()
    mine[:, 16:] = 0.0  # memory is empty exactly where nothing was observed
    s = score_truth(rgb, mine, mine > 0, rgb, depth, 40.0, seen)
    assert s.coverage == 1.0 and s.see_through == 0.0 and math.isclose(s.unobserved, 0.5)


def test_observed_mask_follows_visibility():
    pose = look_at(np.array([0.0, 0.0, 0.0]), np.array([0.0, 5.0, 0.0]))
    _, depth = _wall()
    same = observed_mask(depth, pose, K, [(pose, None, depth)])
    assert same.all()
    away = look_at(np.array([0.0, 0.0, 0.0]), np.array([0.0, -5.0, 0.0]))
    assert not observed_mask(depth, pose, K, [(away, None, depth)]).any()
    # an observation whose depth shows something nearer (an occluder) did not see the wall
    assert not observed_mask(depth, pose, K, [(pose, None, np.full_like(depth, 2.0))]).any()
    sky = depth.copy()
    sky[:12] = np.inf
    assert observed_mask(sky, pose, K, [(pose, None, depth)]).sum() == 12 * 32


class _Scene:
    """A stand-in engine: a wall 6 m ahead of every pose."""

    intrinsics = K

    def render(self, pose):
        return np.zeros((24, 32, 3), np.uint8), np.full((24, 32), 6.0, np.float32)


def test_close_up_poses_move_forward_towards_the_centre_surface():
    path = [look_at(np.array([0.0, float(i), 1.5]), np.array([0.0, i + 10.0, 1.5])) for i in range(10)]
    poses = close_up_poses(path, _Scene(), 3, seed=0, margin=1)
    assert len(poses) == 3
    for pose in poses:
        base = min(
            path, key=lambda p: np.linalg.norm(p[:3, :3] - pose[:3, :3]) + abs(p[1, 3] - pose[1, 3] + 3.0)
        )
        moved = pose[:3, 3] - base[:3, 3]
        assert np.allclose(pose[:3, :3], base[:3, :3])  # same view direction
        assert math.isclose(float(moved @ base[:3, 2]), 3.0, rel_tol=1e-9)  # 0.55 x 6 m, capped at 3 m

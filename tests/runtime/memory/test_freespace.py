"""Free-space keyframes: generated content never stands where an observation saw empty space."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from plugin_bridge.camera import Camera, Intrinsics
from plugin_bridge.conventions import look_at
from runtime.memory import MemoryConfig, SpatialMemory
from runtime.memory.freespace import GRID, KEYFRAME_BUDGET_SHARE, keyframe_capacity

MiB = 2**20
K = Intrinsics.from_fov(64, 48, 60.0)
WALL_M = 10.0


def camera(eye, target=None) -> Camera:
    eye = np.asarray(eye, dtype=np.float64)
    target = eye + np.array([0.0, 10.0, 0.0]) if target is None else np.asarray(target, dtype=np.float64)
    return Camera(K, look_at(eye, target))


def wall_frame(depth_m: float = WALL_M, value: int = 200):
    rgb = np.full((K.height, K.width, 3), value, dtype=np.uint8)
    return rgb, np.full((K.height, K.width), depth_m, dtype=np.float32)


def memory(**config) -> SpatialMemory:
    return SpatialMemory(MemoryConfig(budget_bytes=8 * MiB, env_width=64, env_height=32, **config))


def generate(mem: SpatialMemory, cam: Camera, depth_m: float, frame_index: int, value: int = 40):
    """A generated frame of a flat surface ``depth_m`` ahead, ingested where memory shows nothing."""
    render = mem.render(cam)
    rgb, depth = wall_frame(depth_m, value)
    mask = render.coverage.numpy() < 0.5
    return mem.ingest(cam, rgb, depth, provenance=2, frame_index=frame_index, mask=mask, render=render)


def depth_in(cam: Camera, xyz: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Camera z of world points and whether they project into ``cam``'s image."""
    w2c = cam.world_to_cam
    p = xyz.numpy().astype(np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
    z = p[:, 2]
    u = K.fx * p[:, 0] / z + K.cx
    v = K.fy * p[:, 1] / z + K.cy
    inside = (z > 0) & (u >= -0.5) & (u < K.width - 0.5) & (v >= -0.5) & (v < K.height - 0.5)
    return z, inside


def test_generated_points_move_out_of_observed_free_space_along_their_rays():
    mem = memory()
    a = camera((0.0, 0.0, 0.0))  # looks along +y at a wall 10 m ahead
    b = camera((5.0, 5.0, 0.0), (-5.0, 5.0, 0.0))  # looks along -x, across what A saw empty
    rgb, depth = wall_frame()
    mem.ingest(a, rgb, depth, provenance=1, frame_index=0)
    seen_from_b = mem.render(b).coverage.numpy() > 0.5
    stats = generate(mem, b, 3.0, frame_index=1)  # B guesses a surface 3 m ahead, at x = 2
    assert stats.moved > 0  # some need more than MAX_MOVE x their depth to leave A's view: refused
    pts = mem.points()
    gen = pts["provenance"] == 2
    assert int(gen.sum()) == stats.added == int((~seen_from_b).sum()) - stats.refused
    z_a, inside_a = depth_in(a, pts["xyz"][gen])
    # nothing generated stands in what A saw empty (its free space ends 10% before the wall)
    assert not (inside_a & (z_a < WALL_M * 0.9)).any()
    z_b, _ = depth_in(b, pts["xyz"][gen])
    assert (z_b > 3.0 + 1e-3).sum() == stats.moved
    assert (np.abs(z_b - 3.0) < 1e-3).sum() == stats.added - stats.moved > 0  # outside A's view: kept
    # from A the observed wall is untouched; from B the guess is on the very pixels it was made at
    assert (mem.render(a).rgb.numpy() * 255 == 200).all()
    again = mem.render(b)
    shown_gen = again.provenance.numpy() == 2
    assert shown_gen.sum() == stats.added and not (shown_gen & seen_from_b).any()
    assert np.allclose(again.rgb.numpy()[shown_gen] * 255, 40)


def test_generated_points_behind_observed_surfaces_are_left_alone():
    mem = memory()
    a, b = camera((0.0, 0.0, 0.0)), camera((1.0, 0.0, 0.0))
    rgb, depth = wall_frame()
    mem.ingest(a, rgb, depth, provenance=1, frame_index=0)
    stats = generate(mem, b, 14.0, frame_index=1)  # beyond the wall: nothing there was seen
    assert stats.moved == stats.refused == 0 and stats.added > 0


def test_a_ray_through_space_seen_to_infinity_is_refused():
    mem = memory()
    a = camera((0.0, 0.0, 0.0))
    rgb, _ = wall_frame()
    sky = np.full((K.height, K.width), np.inf, dtype=np.float32)
    mem.ingest(a, rgb, sky, provenance=1, frame_index=0)  # A saw nothing at all: all of its view is empty
    stats = generate(mem, a, 5.0, frame_index=1)  # the same rays can never leave it
    assert stats.refused > 0 and stats.moved == 0
    assert mem.num_points == stats.added == 0


def test_unknown_depth_proves_nothing():
    mem = memory()
    a = camera((0.0, 0.0, 0.0))
    rgb, depth = wall_frame()
    depth[:] = 0.0  # no depth anywhere: no free space known
    mem.ingest(a, rgb, depth, provenance=1, frame_index=0)
    stats = generate(mem, a, 3.0, frame_index=1)
    assert stats.moved == stats.refused == 0 and stats.added == K.width * K.height


def test_a_cell_takes_the_farthest_surface_any_of_its_pixels_saw():
    mem = memory()
    a = camera((0.0, 0.0, 0.0))
    rgb, depth = wall_frame()
    depth[24, 32] = 30.0  # one far pixel (a hole in the wall) just off the optical axis
    depth[0, 0] = 0.0  # one unknown pixel: its cell still knows the wall
    mem.ingest(a, rgb, depth, provenance=1, frame_index=0)
    kf = mem.freespace.ordered()
    cell = -(-max(K.width, K.height) // GRID)
    grid = kf["depth"][0].to(torch.float32)
    assert float(grid[24 // cell, 32 // cell]) == pytest.approx(30.0, rel=1e-3)
    assert float(grid[0, 0]) == pytest.approx(WALL_M, rel=1e-3)
    assert float(grid[-1, -1]) == 0.0  # past the image: proves nothing
    # on A's axis: 1 m and 15 m ahead are in front of that cell's farthest surface (a point there, drawn
    # with its splat, could hide the far pixel); 29 m is within the 10% margin of it
    probe = torch.tensor([[0.0, 1.0, 0.0], [0.0, 15.0, 0.0], [0.0, 29.0, 0.0]])
    free = mem.freespace.in_free_space(probe, torch.full((3,), 0.01), near=0.05, margin=0.1, max_radius_px=4)
    assert free.tolist() == [True, True, False]


def test_keyframes_keep_one_view_per_place_and_replace_the_oldest_when_full():
    mem = memory(freespace_keyframes=3)
    rgb, depth = wall_frame()
    mem.ingest(camera((0.0, 0.0, 0.0)), rgb, depth, provenance=1, frame_index=0)
    mem.ingest(camera((0.1, 0.0, 0.0)), rgb, depth, provenance=1, frame_index=1)  # same view: kept as was
    assert mem.freespace.count == 1 and mem.freespace.ordered()["frame"].tolist() == [0]
    mem.ingest(camera((0.1, 0.0, 0.0), (10.0, 0.0, 0.0)), rgb, depth, provenance=1, frame_index=2)  # turned
    for i, x in enumerate((3.0, 6.0)):
        mem.ingest(camera((x, 0.0, 0.0)), rgb, depth, provenance=1, frame_index=3 + i)
    assert mem.freespace.ordered()["frame"].tolist() == [2, 3, 4]


def test_generated_views_keep_what_they_showed_but_never_displace_observed_ones():
    mem = memory(freespace_keyframes=2)
    rgb, depth = wall_frame()
    a = camera((0.0, 0.0, 0.0))
    mem.ingest(a, rgb, depth, provenance=1, frame_index=0)
    generate(mem, a, 3.0, frame_index=1)  # the same view, generated: adds nothing
    assert mem.freespace.ordered()["observed"].tolist() == [1]
    b = camera((5.0, 5.0, 0.0), (-5.0, 5.0, 0.0))
    generate(mem, b, 3.0, frame_index=2)
    assert mem.freespace.ordered()["observed"].tolist() == [1, 0]
    # full: a new generated view replaces the generated keyframe, never the observed one
    generate(mem, camera((-5.0, 5.0, 0.0), (5.0, 5.0, 0.0)), 3.0, frame_index=3)
    assert mem.freespace.ordered()["frame"].tolist() == [0, 3]
    # and an observed view of a generated keyframe's place takes it over
    mem.ingest(camera((-5.0, 5.0, 0.0), (5.0, 5.0, 0.0)), rgb, depth, provenance=1, frame_index=4)
    kf = mem.freespace.ordered()
    assert kf["frame"].tolist() == [0, 4] and kf["observed"].tolist() == [1, 1]
    # a later guess may not stand in front of what a generated view showed either
    c = camera((3.5, 0.0, 0.0))  # looks along +y, across the space between B and what B showed
    shown = memory(freespace_keyframes=8)
    generate(shown, b, 3.0, frame_index=0)  # B showed a surface 3 m ahead (at x = 2)
    stats = generate(shown, c, 5.0, frame_index=1)  # C's guess on y = 5 would stand in front of it
    assert stats.moved > 0


def test_keyframes_are_budgeted_can_be_disabled_and_expire_with_the_window():
    assert keyframe_capacity(MiB, 64) == MiB // KEYFRAME_BUDGET_SHARE == 8
    assert keyframe_capacity(128 * MiB, 64) == 64
    off = memory(freespace_keyframes=0)
    a, b = camera((0.0, 0.0, 0.0)), camera((5.0, 5.0, 0.0), (-5.0, 5.0, 0.0))
    rgb, depth = wall_frame()
    off.ingest(a, rgb, depth, provenance=1, frame_index=0)
    assert off.freespace.count == 0 and generate(off, b, 3.0, frame_index=1).moved == 0
    windowed = memory(window_frames=2)
    windowed.ingest(a, rgb, depth, provenance=1, frame_index=0)
    assert windowed.freespace.count == 1
    generate(windowed, b, 3.0, frame_index=2)  # frame 0 is out of the window now: only B's view is kept
    assert windowed.freespace.ordered()["frame"].tolist() == [2]
    assert windowed.bytes_used() <= windowed.config.budget_bytes


def test_a_guess_beyond_generated_far_is_content_at_infinity():
    mem = memory(generated_far=60.0)
    a = camera((0.0, 0.0, 0.0))
    stats = generate(mem, a, 80.0, frame_index=0)  # past generated_far: environment map, not points
    assert stats.added == 0 and stats.env_texels_written > 0 and mem.num_points == 0
    assert generate(mem, camera((0.0, 0.0, 0.0), (-10.0, 0.0, 0.0)), 40.0, frame_index=1).added > 0
    rgb, depth = wall_frame(80.0)
    assert mem.ingest(camera((9.0, 0.0, 0.0)), rgb, depth, provenance=1, frame_index=2).added > 0  # observed
    with pytest.raises(ValueError, match="generated_far"):
        MemoryConfig(generated_far=0.01).validate()

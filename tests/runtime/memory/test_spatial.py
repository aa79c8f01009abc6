"""SpatialMemory on analytic scenes: round trip, occlusion, carving, dedupe, budget, window, bad input."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugin_bridge.camera import Camera, Intrinsics
from plugin_bridge.conventions import look_at
from runtime.memory import MemoryConfig, SpatialMemory

MiB = 2**20
SKY = np.array([110, 160, 230], dtype=np.uint8)


# -- an analytic scene, ray cast with numpy (planes and axis-aligned boxes, world z up) -------------
Plane = namedtuple("Plane", "point normal colour")
Box = namedtuple("Box", "lo hi colour")  # axis-aligned: lower and upper corners


def ray_cast(camera: Camera, scene: list) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 [H, W, 3] and planar depth float32 [H, W] (+inf where the ray hits nothing: sky)."""
    k = camera.intrinsics
    u, v = np.meshgrid(np.arange(k.width, dtype=float), np.arange(k.height, dtype=float))
    rays = (
        np.stack(((u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)), -1) @ camera.cam_to_world[:3, :3].T
    )
    origin = camera.cam_to_world[:3, 3]
    depth = np.full(u.shape, np.inf)
    rgb = np.broadcast_to(SKY, (*u.shape, 3)).copy()
    for shape in scene:
        with np.errstate(divide="ignore", invalid="ignore"):
            if isinstance(shape, Plane):
                n = np.asarray(shape.normal, float)
                t = ((np.asarray(shape.point) - origin) @ n) / (rays @ n)
            else:  # slabs
                t1, t2 = (np.asarray(shape.lo) - origin) / rays, (np.asarray(shape.hi) - origin) / rays
                t_in, t_out = np.nanmax(np.minimum(t1, t2), -1), np.nanmin(np.maximum(t1, t2), -1)
                t = np.where(t_in <= t_out, t_in, np.inf)
        hit = (t > 1e-6) & (t < depth)
        depth = np.where(hit, t, depth)
        point = origin + rays * np.where(hit, t, 0.0)[..., None]
        checker = np.floor((point + 0.137) / 0.3).sum(-1) % 2  # offset: no cell edge on a plane
        colour = np.clip(np.asarray(shape.colour) + 40 * checker[..., None], 0, 255).astype(np.uint8)
        rgb = np.where(hit[..., None], colour, rgb)
    return rgb, depth.astype(np.float32)


INTR = Intrinsics.from_fov(64, 48, 70.0)
WALL = Plane((6.0, 0.0, 0.0), (-1.0, 0.0, 0.0), (90, 120, 60))
GROUND = Plane((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), (120, 100, 70))
PILLAR = Box((3.0, -0.5, 0.0), (3.5, 0.5, 2.0), (200, 60, 50))


def cam(eye, target, intrinsics=INTR) -> Camera:
    return Camera(intrinsics, look_at(eye, target))


AHEAD = cam((0.0, 0.0, 1.0), (6.0, 0.0, 1.0))  # level, looking at the wall


def as_uint8(render_rgb: torch.Tensor) -> np.ndarray:
    return np.clip(np.rint(render_rgb.numpy() * 255.0), 0, 255).astype(np.uint8)


def observe(memory, camera, scene, frame, **kwargs):
    rgb, depth = ray_cast(camera, scene)
    return memory.ingest(camera, rgb, depth, provenance=1, frame_index=frame, **kwargs)


def generate(memory, camera, rgb, depth, frame):
    """The session's generate step: tier, render memory, then ingest only what it did not cover."""
    memory.tier(camera)
    render = memory.render(camera)
    mask = render.coverage.numpy() < 0.5
    return render, memory.ingest(
        camera, rgb, depth, provenance=2, frame_index=frame, mask=mask, render=render
    )


# -- round trip ---------------------------------------------------------------------------------
def test_round_trip_reproduces_the_ingested_frame():
    scene = [GROUND, Box((4.0, -0.8, 0.0), (5.0, 0.2, 1.2), (200, 60, 50))]
    camera = cam((0.0, 0.0, 1.5), (4.0, 0.3, 0.2))  # tilted ground plane, box, sky above the horizon
    rgb, depth = ray_cast(camera, scene)
    finite = np.isfinite(depth)
    assert 0.2 < finite.mean() < 0.95  # the frame really holds both surfaces and sky
    memory = SpatialMemory()
    stats = memory.ingest(camera, rgb, depth, provenance=1, frame_index=0)
    assert stats.added == finite.sum() == memory.num_points and stats.env_texels_written > 0
    render = memory.render(camera)
    out_rgb, out_depth = as_uint8(render.rgb), render.depth.numpy()
    np.testing.assert_array_equal(out_rgb[finite], rgb[finite])
    np.testing.assert_allclose(out_depth[finite], depth[finite], rtol=1e-4)
    assert (render.coverage.numpy() == 1).all()  # points where finite, environment map elsewhere
    assert np.isinf(out_depth[~finite]).all() and (render.point_index.numpy()[~finite] == -1).all()
    np.testing.assert_array_equal(out_rgb[~finite], np.broadcast_to(SKY, out_rgb[~finite].shape))
    assert (render.provenance.numpy()[finite] == 1).all()
    points = memory.points()
    assert (points["provenance"] == 1).all() and (points["last_seen"] == 0).all()
    assert torch.allclose(points["confidence"].float(), torch.tensor(0.75))


def test_round_trip_accepts_float_rgb_and_records_object_ids():
    rgb, depth = ray_cast(AHEAD, [WALL])
    ids = np.where(np.arange(64) < 32, 0, 7).astype(np.uint32)[None].repeat(48, 0)
    memory = SpatialMemory()
    memory.ingest(AHEAD, rgb / np.float32(255), depth, provenance=1, frame_index=3, object_ids=ids)
    render = memory.render(AHEAD)
    np.testing.assert_array_equal(as_uint8(render.rgb), rgb)
    np.testing.assert_array_equal(render.object_id.numpy(), ids.astype(np.int32))


# -- occlusion and carving --------------------------------------------------------------------------
def test_near_surface_occludes_far_one_and_far_one_shows_beside_it():
    scene = [WALL, PILLAR]
    memory = SpatialMemory()
    left, right = cam((0.0, -1.5, 1.0), (6.0, -1.5, 1.0)), cam((0.0, 1.5, 1.0), (6.0, 1.5, 1.0))
    observe(memory, left, scene, 0)
    observe(memory, right, scene, 1)
    _, truth = ray_cast(AHEAD, scene)
    render = memory.render(AHEAD)
    depth, covered = render.depth.numpy(), render.coverage.numpy() == 1
    assert covered.mean() > 0.97
    agree = np.abs(depth - truth) <= 0.03 * truth
    assert agree[covered].mean() > 0.97
    on_box = truth < 4.0
    inside = on_box & np.all([np.roll(on_box, step, axis) for step in (1, -1) for axis in (0, 1)], axis=0)
    assert inside.sum() > 100 and agree[inside].all()  # the box hides the wall behind it (edges may erode)
    # ...although memory does hold wall points behind the box (seen past its sides from the two views)
    x, y, z = memory.points()["xyz"].numpy().T
    assert ((np.abs(x - 6.0) < 0.01) & (np.abs(y) < 0.3) & (np.abs(z - 1.0) < 0.5)).sum() > 20


def test_moving_sideways_reveals_the_far_surface_where_it_is_not_occluded():
    scene = [WALL, PILLAR]
    memory = SpatialMemory()
    observe(memory, AHEAD, scene, 0)
    moved = cam((0.0, 0.6, 1.0), (6.0, 0.6, 1.0))
    truth_rgb, truth = ray_cast(moved, scene)
    render = memory.render(moved)
    depth, covered = render.depth.numpy(), render.coverage.numpy() == 1
    agree = np.abs(depth - truth) <= 0.03 * truth
    assert agree[covered].mean() > 0.97
    wall_seen = covered & (truth > 5.0)
    assert wall_seen.sum() > 800  # the wall shows around the box
    # the right colours: each a blend of the true colours around it (fused across a checker cell's
    # edge), never smeared box colour
    near = np.stack([np.roll(truth_rgb, (dy, dx), (0, 1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    shown = as_uint8(render.rgb)
    between = ((shown >= near.min(0)) & (shown <= near.max(0))).all(-1)
    assert between[wall_seen & agree].mean() > 0.95
    # the strip of wall the box hid from the first view is a hole, not smeared box or wall
    holes = ~covered
    assert holes.sum() > 20 and (truth[holes] > 5.0).mean() > 0.9


def test_observation_carves_free_space_but_keeps_occluded_points():
    camera = AHEAD
    memory = SpatialMemory()
    observe(memory, camera, [WALL, Box((3.0, -1.2, 0.5), (3.3, -0.4, 1.5), (200, 60, 50))], 0)
    xyz = memory.points()["xyz"].numpy()
    old_box = (xyz[:, 0] < 5.0) & (xyz[:, 1] < 0)
    wall_behind_new = (np.abs(xyz[:, 0] - 6.0) < 0.01) & (xyz[:, 1] > 0.6) & (xyz[:, 1] < 1.6)
    assert old_box.sum() > 50 and wall_behind_new.sum() > 50
    # the box moved: its old place is now seen through (to the wall), its new place hides part of the wall
    stats = observe(memory, camera, [WALL, Box((3.0, 0.4, 0.5), (3.3, 1.2, 1.5), (60, 60, 200))], 1)
    xyz = memory.points()["xyz"].numpy()
    assert ((xyz[:, 0] < 5.0) & (xyz[:, 1] < -0.05)).sum() == 0  # the old box is gone
    assert stats.carved >= old_box.sum()
    assert memory.stats().points_carved_total == stats.carved
    still = (np.abs(xyz[:, 0] - 6.0) < 0.01) & (xyz[:, 1] > 0.6) & (xyz[:, 1] < 1.6)
    assert still.sum() == wall_behind_new.sum()  # behind the new box: occluded, not removed
    render = memory.render(camera)
    _, truth = ray_cast(camera, [WALL, Box((3.0, 0.4, 0.5), (3.3, 1.2, 1.5), (60, 60, 200))])
    np.testing.assert_allclose(render.depth.numpy(), truth, rtol=1e-4)


def test_unknown_depth_carves_nothing_and_depth_at_infinity_carves_everything_in_front():
    memory = SpatialMemory()
    observe(memory, AHEAD, [WALL], 0)
    before = memory.num_points
    rgb, depth = ray_cast(AHEAD, [WALL])
    depth[:] = 0.0
    depth[:5] = np.nan
    stats = memory.ingest(AHEAD, rgb, depth, provenance=1, frame_index=1)
    assert (stats.added, stats.carved, stats.updated) == (0, 0, 0) and memory.num_points == before
    stats = observe(memory, AHEAD, [], 2)  # the wall is gone: open sky
    assert stats.carved == before and memory.num_points == 0
    assert np.isinf(memory.render(AHEAD).depth.numpy()).all()


# -- dedupe -------------------------------------------------------------------------------------
def test_generated_ingest_adds_only_masked_pixels_and_dedupes_with_coverage():
    camera = AHEAD
    rgb, depth = ray_cast(camera, [WALL, GROUND])
    mask = np.zeros(depth.shape, bool)
    mask[:, :20] = True
    memory = SpatialMemory()
    stats = memory.ingest(camera, rgb, depth, provenance=2, frame_index=0, mask=mask)
    assert stats.added == (mask & np.isfinite(depth)).sum() == memory.num_points
    covered = memory.render(camera).point_index.numpy() >= 0
    np.testing.assert_array_equal(covered, mask & np.isfinite(depth))
    assert (memory.points()["provenance"] == 2).all()
    assert torch.allclose(memory.points()["confidence"].float(), torch.tensor(0.5))
    assert generate(memory, camera, rgb, depth, 1)[1].added == (~mask & np.isfinite(depth)).sum()
    stats = generate(memory, camera, rgb, depth, 2)[1]
    assert stats.added == 0 and stats.env_texels_written == 0
    assert (memory.points()["last_seen"] == 2).all()  # everything shown at frame 2 was marked seen
    points = memory.points()
    first = points["frame_added"] == 0
    assert (points["hit_count"][first] == 3).all() and (points["hit_count"][~first] == 2).all()


def test_observed_reingest_at_the_same_pose_matches_every_point():
    camera = cam((0.0, 0.0, 1.5), (4.0, 0.3, 0.2))
    scene = [GROUND, Box((4.0, -0.8, 0.0), (5.0, 0.2, 1.2), (200, 60, 50))]
    memory = SpatialMemory()
    first = observe(memory, camera, scene, 0)
    again = observe(memory, camera, scene, 1)
    assert (again.added, again.carved, again.dropped) == (0, 0, 0)
    assert again.updated == first.added == memory.num_points
    points = memory.points()
    assert (points["hit_count"] == 2).all() and (points["last_seen"] == 1).all()
    assert torch.allclose(points["confidence"].float(), torch.tensor(1.0))


# -- budget ---------------------------------------------------------------------------------------
OUTWARD = np.array([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]])  # four walls 6 m away, facing in
ROOM = [Plane(6.0 * n, -n, (60 + 30 * i, 150 - 30 * i, 60 + 20 * i)) for i, n in enumerate(OUTWARD)]
ROOM += [GROUND, Box((1.0, 1.0, 0.0), (2.0, 2.5, 1.5), (200, 60, 50))]
SMALL = Intrinsics.from_fov(96, 72, 75.0)


def pose_camera(seed: int) -> Camera:
    g = np.random.default_rng(seed)
    eye = np.array([g.uniform(-3, 3), g.uniform(-3, 3), g.uniform(0.5, 2.0)])
    yaw, pitch = g.uniform(-np.pi, np.pi), g.uniform(-0.3, 0.5)
    target = eye + np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)])
    return cam(eye, target, SMALL)


def heading_camera(frame: int) -> Camera:
    """Four headings 90 degrees apart: consecutive frames see disjoint walls."""
    angle = frame * np.pi / 2
    return cam((0.0, 0.0, 1.0), (np.cos(angle), np.sin(angle), 1.3))


def test_budget_too_small_is_refused_with_the_minimum():
    with pytest.raises(ValueError, match="at least"):
        SpatialMemory(MemoryConfig(budget_bytes=2 * MiB, env_width=1024, env_height=512))
    with pytest.raises(ValueError, match="1 MiB"):
        SpatialMemory(MemoryConfig(budget_bytes=MiB // 2))
    small = MiB + MiB // 8  # the default map (1 MiB with its provenance) leaves room for 1024+ points
    memory = SpatialMemory(MemoryConfig(budget_bytes=small))
    assert memory.max_points >= 1024 and memory.bytes_used() <= small


def test_with_nothing_to_evict_the_farthest_new_points_are_dropped():
    memory = SpatialMemory(MemoryConfig(budget_bytes=MiB + MiB // 8))
    camera = pose_camera(0)
    rgb, depth = ray_cast(camera, ROOM)
    stats = memory.ingest(camera, rgb, depth, provenance=1, frame_index=0)
    finite = np.isfinite(depth).sum()
    assert finite > memory.max_points  # more pixels than the budget holds points
    assert stats.dropped == finite - memory.max_points and memory.num_points == memory.max_points
    kept = memory.points()["xyz"].numpy() - camera.position
    kept_depth = kept @ camera.cam_to_world[:3, 2]
    assert kept_depth.max() <= np.sort(depth[np.isfinite(depth)])[memory.max_points] * (1 + 1e-5)
    assert memory.bytes_used() <= memory.config.budget_bytes


def _memory_holding(points: int) -> SpatialMemory:
    """A memory whose budget holds exactly ``points`` points (no free-space keyframes: these frames show
    sky where later ones put ground, which the keyframes would move out of the way; test_freespace.py)."""
    budget = MiB
    for _ in range(5):  # the chunk table grows with the budget: settle the budget holding the points
        per_point, fixed, _ = SpatialMemory.layout(MemoryConfig(budget_bytes=budget, freespace_keyframes=0))
        budget = fixed + per_point * points
    memory = SpatialMemory(MemoryConfig(budget_bytes=budget, freespace_keyframes=0))
    assert memory.max_points == points
    return memory


def test_eviction_takes_generated_before_observed():
    walls = ROOM[:4]
    memory = _memory_holding(4 * 64 * 48 + 1000)  # four full frames and a bit
    for frame in range(4):  # four disjoint views: two observed, then two generated
        camera = heading_camera(frame)
        rgb, depth = ray_cast(camera, walls)
        if frame < 2:
            memory.ingest(camera, rgb, depth, provenance=1, frame_index=frame)
        else:
            generate(memory, camera, rgb, depth, frame)
    down = cam((0.0, 0.0, 1.0), (0.3, 0.0, 0.0))  # sees only the ground: nothing in memory is in view
    stats = generate(memory, down, *ray_cast(down, [GROUND]), 4)[1]
    need, headroom = 64 * 48 - 1000, memory.max_points // 64  # evictions free a little extra room
    assert stats.added == 64 * 48 and stats.pruned == need + headroom and stats.dropped == 0
    added = torch.bincount(memory.points()["frame_added"].long(), minlength=5).tolist()
    # observed frames and the current view keep everything; the generated frames paid (which of their
    # chunks went first is the relevance order: farthest from the trajectory, then oldest)
    assert added[:2] == [3072, 3072] and added[4] == 3072
    assert added[2] + added[3] == 2 * 3072 - stats.pruned
    assert memory.stats().chunks_evicted_total > 0  # whole out-of-view chunks went first


def test_eviction_keeps_what_lies_along_the_trajectory():
    # X: a block 2 m from O, where the camera stood. Y: a wall seen from O but far from it, 20 m north of
    # P, where the camera then stands. Both generated in the same frame. P is 40 m east of O.
    # Distance from the current camera alone would evict X (40 m from P) before Y (20 m from P); the
    # trajectory (O and P) keeps X (2 m from O) and lets Y (20 m from both) go first.
    wall_x = Box((1.2, 0.8, 0.0), (2.2, 1.3, 1.6), (200, 60, 50))
    wall_y = Box((5.0, 20.0, 0.0), (45.0, 20.5, 20.0), (60, 60, 200))
    see_both = cam((0.0, 0.0, 1.0), (20.0, 20.0, 3.0), Intrinsics.from_fov(64, 48, 90.0))
    rgb, depth = ray_cast(see_both, [wall_x, wall_y])
    walls = int(np.isfinite(depth).sum())
    memory = _memory_holding(64 * 48 + walls - 300)  # the frame at P needs 300 points evicted
    generate(memory, see_both, rgb, depth, 0)
    pts = memory.points()["xyz"].numpy()
    on_x, on_y = int((pts[:, 1] < 2.0).sum()), int((pts[:, 1] > 19.0).sum())
    assert on_x > 300 and on_y > 300 and on_x + on_y == walls
    down = cam((40.0, 0.0, 1.0), (40.3, 0.0, 0.0))  # at P, looking at fresh ground
    _, stats = generate(memory, down, *ray_cast(down, [GROUND]), 1)
    assert stats.pruned >= 300 and stats.dropped == 0
    pts = memory.points()["xyz"].numpy()
    left_x = int(((pts[:, 1] < 2.0) & (pts[:, 0] < 3.0)).sum())  # the block, not the ground at P
    left_y = int((pts[:, 1] > 19.0).sum())
    assert left_y < on_y  # the far wall paid
    assert left_x == on_x  # what lies along the trajectory was kept


def test_budget_pruning_keeps_the_current_view():
    config = MemoryConfig(budget_bytes=2 * MiB, initial_capacity=4096)
    memory = SpatialMemory(config)
    for frame in range(12):
        camera = pose_camera(frame)
        rgb, depth = ray_cast(camera, ROOM)
        before, stats = generate(memory, camera, rgb, depth, frame)
        assert memory.bytes_used() <= config.budget_bytes
        shown = before.coverage.numpy() == 1
        assert (memory.render(camera).coverage.numpy()[shown] == 1).all()  # nothing it showed was evicted
        assert stats.dropped == 0  # evicting out-of-view points always made room here
    assert memory.stats().points_pruned_total > 0 and memory.num_points > 0.95 * memory.max_points
    assert memory.capacity <= memory.max_points


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from(["observe", "generate", "reset"]), st.integers(0, 10_000)),
        min_size=1,
        max_size=8,
    )
)
def test_budget_holds_after_every_call(steps):
    config = MemoryConfig(budget_bytes=2 * MiB, initial_capacity=1024)
    memory = SpatialMemory(config)
    for frame, (action, seed) in enumerate(steps):
        if action == "reset":
            memory.reset()
            assert memory.num_points == 0 and memory.stats().environment_texels == 0
            continue
        camera = pose_camera(seed)
        rgb, depth = ray_cast(camera, ROOM)
        if action == "observe":
            before = memory.render(camera)
            covered = before.point_index.numpy() >= 0
            memory.ingest(camera, rgb, depth, provenance=1, frame_index=frame, render=before)
            confirmed = covered & (np.abs(before.depth.numpy() - depth) <= 0.02 * depth)
        else:
            before = generate(memory, camera, rgb, depth, frame)[0]
            confirmed = before.point_index.numpy() >= 0
        assert memory.bytes_used() <= config.budget_bytes
        assert memory.stats().bytes_used == memory.bytes_used()
        after = memory.render(camera)
        assert (after.point_index.numpy()[confirmed] >= 0).all()


# -- window mode ------------------------------------------------------------------------------------
def test_window_mode_forgets_what_left_the_window():
    memory = SpatialMemory(MemoryConfig(window_frames=2))
    for frame in range(4):
        observe(memory, heading_camera(frame), ROOM[:4], frame)
    coverage = [memory.render(heading_camera(frame)).coverage.mean().item() for frame in range(4)]
    assert coverage == [0.0, 0.0, 1.0, 1.0]  # t-3 gone; t-2 last seen at t - window: gone; t-1, t kept
    assert memory.stats().points_pruned_total > 0 and memory.stats().window_frames == 2


def test_window_mode_keeps_what_stays_in_view():
    memory = SpatialMemory(MemoryConfig(window_frames=1))
    camera = heading_camera(0)
    rgb, depth = ray_cast(camera, ROOM[:4])
    for frame in range(5):
        stats = generate(memory, camera, rgb, depth, frame)[1]
        assert stats.added == (np.isfinite(depth).sum() if frame == 0 else 0)
    assert memory.render(camera).coverage.mean() == 1


# -- bad input --------------------------------------------------------------------------------------
def test_bad_input_is_refused_and_memory_is_untouched():
    camera = AHEAD
    rgb, depth = ray_cast(camera, [WALL])
    memory = SpatialMemory()
    memory.ingest(camera, rgb, depth, provenance=1, frame_index=0)
    stale = memory.render(camera)
    memory.ingest(camera, rgb, depth, provenance=1, frame_index=1)
    bad = [
        *({"rgb": x} for x in (rgb[:, :-1], rgb[..., :2], rgb.astype(np.int16), [[0, 0, 0]])),
        *({"depth": x} for x in (depth[:-1], (depth * 1000).astype(np.uint16))),
        *({"mask": x} for x in (np.ones((48, 64), np.float32), np.ones((48, 63), bool))),
        {"object_ids": np.ones((48, 64), np.float32)},
        {"provenance": 0},
        {"frame_index": -1},
        {"render": stale},  # made before the last ingest
        {"render": memory.render(cam((0.0, 0.5, 1.0), (6.0, 0.0, 1.0)))},  # made at another camera
    ]
    before = memory.stats()
    for change in bad:
        args = dict(rgb=rgb, depth=depth, provenance=1, frame_index=2) | change
        with pytest.raises(ValueError):
            memory.ingest(camera, args.pop("rgb"), args.pop("depth"), **args)
    assert memory.stats() == before
    skewed = camera.cam_to_world.copy()
    skewed[:3, 0] *= 2.0
    with pytest.raises(ValueError, match="orthonormal"):
        memory.render(Camera(INTR, skewed))
    with pytest.raises(ValueError, match="4x4"):
        memory.render(Camera(INTR, np.eye(3)))
    with pytest.raises(ValueError, match="render"):
        memory.touch(stale, 3)

"""The chunk index: consistency under append/remove, exact culled renders, what culling touches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugin_bridge.camera import Camera, Intrinsics
from plugin_bridge.conventions import look_at
from runtime.memory import MemoryConfig, SpatialMemory
from runtime.memory.reference import reference_splat
from runtime.memory.splat import splat_points

MiB = 2**20
INTR = Intrinsics(fx=14.0, fy=13.0, cx=7.5, cy=5.5, width=16, height=12)
RULE = {"near": 0.05, "max_radius_px": 4, "depth_tolerance": 0.02}


def random_camera(g: np.random.Generator, intrinsics: Intrinsics = INTR, extent: float = 20.0) -> Camera:
    eye = g.uniform(-extent, extent, 3)
    return Camera(intrinsics, look_at(eye, eye + g.normal(size=3) + np.array([0.0, 0.0, 1e-3])))


def values(g: np.random.Generator, n: int, extent: float, first_frame: int = 0) -> dict[str, torch.Tensor]:
    """``n`` random points spread over a cube of side 2 * extent (many 2 m chunks), mixed radii."""
    return {
        "xyz": torch.from_numpy(g.uniform(-extent, extent, (n, 3)).astype(np.float32)),
        "rgb": torch.from_numpy(g.integers(0, 256, (n, 3), dtype=np.uint8)),
        "radius": torch.from_numpy((g.uniform(0, 1, n) ** 3 * 0.5).astype(np.float32)),
        "confidence": torch.full((n,), 0.75, dtype=torch.float16),
        "provenance": torch.from_numpy(g.integers(1, 4, n).astype(np.uint8)),
        "last_seen": torch.from_numpy(g.integers(first_frame, first_frame + 5, n).astype(np.int32)),
        "hit_count": torch.ones(n, dtype=torch.int32),
        "object_id": torch.zeros(n, dtype=torch.int32),
        "frame_added": torch.full((n,), first_frame, dtype=torch.int32),
    }


def assert_consistent(memory: SpatialMemory) -> None:
    """Every point is in exactly its voxel's chunk, at its recorded position; the table is exact."""
    idx, n = memory.chunks, memory.num_points
    points = memory.points()
    row = idx.point_chunk[:n].long()
    pos = idx.point_pos[:n].long()
    assert torch.equal(idx.rows["key"][row], idx.keys(points["xyz"]))
    assert (pos < idx.rows["size"][row]).all()
    assert torch.equal(idx.pool[idx.rows["start"][row] + pos].long(), torch.arange(n))
    used = idx.used_rows()
    assert idx.num_chunks + idx.free_chunks == idx.max_chunks
    assert int(idx.rows["size"][used].sum()) == n and (idx.rows["size"][used] > 0).all()
    assert (idx.rows["start"][used] + idx.rows["cap"][used] <= idx.pool.shape[0]).all()
    lo = torch.full_like(idx.rows["lo"], float("inf")).scatter_reduce_(
        0, row[:, None].expand(-1, 3), points["xyz"], "amin"
    )
    assert torch.equal(lo[used], idx.rows["lo"][used])
    seen = torch.full_like(idx.rows["last_seen"], -1).scatter_reduce_(0, row, points["last_seen"], "amax")
    assert torch.equal(seen[used], idx.rows["last_seen"][used])
    prov = torch.zeros_like(idx.rows["provenance"]).view(-1)
    prov.index_add_(0, row * 4 + points["provenance"].long(), torch.ones(n, dtype=torch.int32))
    assert torch.equal(prov.view(-1, 4), idx.rows["provenance"])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), steps=st.lists(st.integers(0, 3), min_size=1, max_size=10))
def test_index_stays_consistent_under_appends_and_removals(seed, steps):
    g = np.random.default_rng(seed)
    memory = SpatialMemory(MemoryConfig(budget_bytes=4 * MiB, initial_capacity=64))
    for step in steps:
        if step < 2 or memory.num_points == 0:  # appends that grow storage and move segments
            # extents up to 10 m: at most 10^3 chunks of 2 m, within the 1024-row table of a 4 MiB budget
            memory._append(values(g, int(g.integers(1, 400)), extent=float(g.choice([1.0, 4.0, 10.0]))))
        elif step == 2:  # a random subset, including the tail
            drop = torch.from_numpy(g.random(memory.num_points) < g.uniform(0.05, 0.9))
            memory._remove(drop)
        else:
            memory._remove(torch.arange(memory.num_points))  # everything: every chunk freed
        assert_consistent(memory)
        assert memory.bytes_used() <= memory.config.budget_bytes


def test_remove_reports_where_the_last_points_went():
    g = np.random.default_rng(1)
    memory = SpatialMemory(MemoryConfig(budget_bytes=4 * MiB))
    memory._append(values(g, 50, extent=5.0))
    before = memory.points()["xyz"].clone()
    holes, movers = memory._remove(torch.tensor([3, 10, 47, 49]))
    assert holes.tolist() == [3, 10] and movers.tolist() == [46, 48]
    after = memory.points()["xyz"]
    assert torch.equal(after[3], before[46]) and torch.equal(after[10], before[48]) and after.shape[0] == 46


@pytest.mark.parametrize("seed", range(6))
def test_culled_render_equals_the_reference_over_all_points(seed):
    g = np.random.default_rng(seed)
    memory = SpatialMemory(MemoryConfig(budget_bytes=4 * MiB))
    memory._append(values(g, 400, extent=8.0))  # ~500 chunks of 2 m
    memory._remove(torch.from_numpy(g.random(400) < 0.2))
    points = memory.points()
    for _ in range(4):
        camera = random_camera(g, extent=6.0)
        render = memory.render(camera)
        slow = reference_splat(
            memory._to_camera(camera, points["xyz"]),  # the camera frame every render path uses
            points["radius"],
            INTR,
            **RULE,
            depth_bias=(points["provenance"] == 2).float() * memory.config.generated_depth_bias,
        )
        assert torch.equal(render.point_index, slow.index)
        assert render.points_in_view == slow.points_in_view
        torch.testing.assert_close(render.depth, slow.depth, rtol=0, atol=0)
        assert memory.last_touched < memory.num_points or slow.points_in_view > 0


@pytest.mark.parametrize("seed", range(4))
def test_culled_render_equals_the_unculled_kernel_on_many_chunks(seed):
    g = np.random.default_rng(100 + seed)
    intrinsics = Intrinsics.from_fov(64, 48, 80.0)
    memory = SpatialMemory(MemoryConfig(budget_bytes=64 * MiB, chunk_size_m=float(g.choice([1.0, 2.0]))))
    memory._append(values(g, 20000, extent=12.0))
    xyz = memory.points()["xyz"]
    for _ in range(5):
        camera = random_camera(g, intrinsics, extent=10.0)
        render = memory.render(camera)
        bias = (memory.points()["provenance"] == 2).float() * memory.config.generated_depth_bias
        full = splat_points(
            memory._to_camera(camera, xyz), memory.points()["radius"], intrinsics, **RULE, depth_bias=bias
        )
        assert torch.equal(render.point_index, full.index) and torch.equal(render.depth, full.depth)
        assert render.points_in_view == full.points_in_view <= memory.last_touched < memory.num_points


def cube_may_be_visible(memory: SpatialMemory, camera: Camera) -> np.ndarray:
    """Per point [N] bool: its voxel cube is not wholly outside one plane of the widened pyramid.

    Written independently of the index (numpy, the voxel cube rather than the AABB): a chunk-culled
    render may only read points for which this holds.
    """
    k, size = camera.intrinsics, memory.config.chunk_size_m
    e = max(memory.config.max_splat_radius_px, 0.5) + 1.0
    normals = np.array(
        [[k.fx, 0, k.cx + e], [-k.fx, 0, k.width - 1 + e - k.cx], [0, k.fy, k.cy + e],
         [0, -k.fy, k.height - 1 + e - k.cy], [0, 0, 1.0]]
    )  # fmt: skip
    xyz = memory.points()["xyz"].numpy()
    cell = np.floor(xyz / size)
    corners = np.stack([(cell + np.array(c)) * size for c in np.ndindex(2, 2, 2)], 1)  # [N, 8, 3]
    local = (corners - camera.position) @ camera.cam_to_world[:3, :3]  # camera frame
    dist = local @ normals.T  # [N, 8, 5]
    dist[..., 4] -= memory.config.near * 0.999
    return ~(dist < -1e-6).all(1).any(1)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1))
def test_culling_touches_only_points_of_chunks_that_meet_the_frustum(seed):
    g = np.random.default_rng(seed)
    memory = SpatialMemory(MemoryConfig(budget_bytes=16 * MiB, chunk_size_m=float(g.choice([1.5, 2.0, 4.0]))))
    memory._append(values(g, 3000, extent=20.0))
    for _ in range(3):
        camera = random_camera(g, Intrinsics.from_fov(32, 24, float(g.uniform(30, 100))), extent=25.0)
        render = memory.render(camera)
        touched = memory._candidates(camera).numpy()
        assert memory.last_touched == touched.size >= render.points_in_view
        assert cube_may_be_visible(memory, camera)[touched].all()


def test_a_camera_looking_at_empty_space_touches_nothing():
    g = np.random.default_rng(5)
    memory = SpatialMemory(MemoryConfig(budget_bytes=8 * MiB))
    memory._append(values(g, 5000, extent=10.0))
    away = Camera(Intrinsics.from_fov(64, 48, 90.0), look_at((0.0, 0.0, 30.0), (1.0, 0.0, 60.0)))
    render = memory.render(away)
    assert memory.last_touched == 0 and (render.point_index == -1).all()
    rgb, depth = np.zeros((48, 64, 3), np.uint8), np.full((48, 64), np.inf, np.float32)
    stats = memory.ingest(away, rgb, depth, provenance=1, frame_index=9, render=render)  # carves nothing
    assert memory.last_touched == 0 and stats.carved == 0 and memory.num_points == 5000


def test_eviction_takes_whole_chunks_out_of_view_and_keeps_the_table_exact():
    g = np.random.default_rng(8)
    memory = SpatialMemory(MemoryConfig(budget_bytes=2 * MiB, initial_capacity=1024))
    camera = Camera(Intrinsics.from_fov(64, 48, 70.0), look_at((0.0, 0.0, 0.0), (1.0, 0.0, 0.0)))
    memory._append(values(g, memory.max_points - 100, extent=5.0))
    before = memory.render(camera)
    shown = before.point_index[before.point_index >= 0].unique()
    kept_xyz = memory.points()["xyz"][shown].clone()
    rgb = np.full((48, 64, 3), 128, np.uint8)
    depth = np.full((48, 64), 1.0, np.float32)  # a wall 1 m ahead: new content, never seen
    stats = memory.ingest(camera, rgb, depth, provenance=2, frame_index=10, mask=np.ones((48, 64), bool))
    assert stats.pruned > 0 and stats.added == 64 * 48 and stats.dropped == 0
    assert memory.bytes_used() <= memory.config.budget_bytes
    assert_consistent(memory)
    xyz = memory.points()["xyz"]
    assert all(bool((xyz == p).all(1).any()) for p in kept_xyz)  # nothing shown was evicted


def test_key_index_hands_out_and_takes_back_rows_as_a_dict_and_a_free_list_would():
    """The chunk table's key index (sorted key array and a free-row stack, in bytes the budget counts)
    against the plain model: a dict key -> row and a list of free rows, the lowest handed out first and
    a freed row next."""
    from runtime.memory.chunks import BYTES_PER_CHUNK, INDEX_BYTES_PER_CHUNK, ChunkIndex

    g = np.random.default_rng(11)
    idx = ChunkIndex(2.0, 64, torch.device("cpu"))
    row_of: dict[int, int] = {}
    free = list(range(63, -1, -1))
    for _ in range(300):
        if g.uniform() < 0.6 and free:
            keys = np.unique(g.integers(0, 200, int(g.integers(1, 6))))
            new = np.array([k for k in keys.tolist() if k not in row_of][: len(free)], dtype=np.int64)
            if new.size:
                rows = idx._take_rows(new)
                for k, r in zip(new.tolist(), rows.tolist(), strict=True):
                    assert r == free.pop()
                    row_of[k] = r
        elif row_of:
            k = int(g.choice(sorted(row_of)))
            idx._free_row(row_of[k])
            free.append(row_of.pop(k))
        probe = g.integers(0, 200, 20)
        assert idx.row_of(probe).tolist() == [row_of.get(k, -1) for k in probe.tolist()]
        assert idx.used_rows().tolist() == [row_of[k] for k in sorted(row_of)]
        assert idx.num_chunks == len(row_of) and idx.free_chunks == len(free)
    with pytest.raises(ValueError, match="chunk table full"):
        idx._take_rows(np.arange(1000, 1000 + idx.free_chunks + 1, dtype=np.int64))
    assert idx.free_chunks == len(free)  # refused whole: nothing taken
    with pytest.raises(ValueError, match="not in use"):
        idx._free_row(free[-1])  # a free row cannot be freed again
    assert idx.free_chunks == len(free) and idx.num_chunks == len(row_of)
    # no points indexed: the table is all it holds, key index included, as the budget counts it
    assert idx.nbytes() == 64 * BYTES_PER_CHUNK and INDEX_BYTES_PER_CHUNK == 16

"""The frame loop's numba kernels (`runtime.memory.kernels`, `splat_fast.render_kernel`) against the
torch paths they replace, bit for bit: whole memories driven in lockstep on both paths, then each
kernel on random and degenerate input, including empty input."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import threading

import numpy as np
import pytest
import torch

from plugin_bridge.camera import Camera, Intrinsics
from plugin_bridge.conventions import look_at
from runtime.memory import MemoryConfig, SpatialMemory
from runtime.memory.environment import EnvironmentMap
from runtime.memory.geometry import pixel_rays_world
from runtime.memory.splat import (
    MemoryRender,
    SplatWinners,
    compose_render,
    splat_points_torch,
)

pytest.importorskip("numba")
from runtime.memory import kernels, splat_fast, workspaces  # noqa: E402  (after the skip: needs numba)

MiB = 2**20
INTR = Intrinsics.from_fov(48, 32, 75.0)
SKY = np.array([110, 160, 230], dtype=np.uint8)
KERNELS = (
    "members_kernel", "frustum_kernel", "render_split", "compose_kernel", "env_fill_kernel", "touch_kernel",
    "write_view_kernel", "any_kernel", "beyond_kernel", "addable_kernel", "infinite_kernel", "to_camera_kernel",
    "decode_view_kernel", "touch_packed_kernel",
)  # fmt: skip


@pytest.fixture(autouse=True)
def calls(monkeypatch):
    """Every test starts on the numba path; kernel calls are counted by name."""
    monkeypatch.delenv("MIRAGE_SPLAT_KERNEL", raising=False)
    counted: dict[str, int] = {}
    for name in KERNELS:
        kernel = getattr(kernels, name)

        def wrapper(*args, _kernel=kernel, _name=name):
            counted[_name] = counted.get(_name, 0) + 1
            return _kernel(*args)

        monkeypatch.setattr(kernels, name, wrapper)
    return counted


@contextlib.contextmanager
def torch_path():
    """Run the block with ``MIRAGE_SPLAT_KERNEL=torch`` (the torch paths, the reference)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIRAGE_SPLAT_KERNEL", "torch")
        yield


def both(fn):
    """(fn() on the numba path, fn() on the torch path)."""
    fast = fn()
    with torch_path():
        slow = fn()
    return fast, slow


def assert_same(a, b, what: str = "") -> None:
    """Equal bit for bit: tensors (dtype, shape, bytes; so nan, -0.0 and inf too), containers, values."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, what
        x, y = a.detach().contiguous().numpy(), b.detach().contiguous().numpy()
        assert x.tobytes() == y.tobytes(), f"{what}: {int((x != y).sum())} entries differ"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for key in a:
            assert_same(a[key], b[key], f"{what}.{key}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{what}[{i}]")
    elif dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), what
        for field in dataclasses.fields(a):
            assert_same(getattr(a, field.name), getattr(b, field.name), f"{what}.{field.name}")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), what
    else:
        assert a == b, f"{what}: {a!r} != {b!r}"


def state(memory: SpatialMemory) -> dict:
    """Everything a memory holds: points, chunk index, environment, keyframes, totals."""
    n, c = memory.hot_points, memory.chunks
    packed = {}
    if memory.cold is not None:  # quantised storage: the blobs and the row tables
        lengths, blobs = memory.packed_chunks()
        packed = {"packed": (torch.from_numpy(lengths), torch.from_numpy(blobs))}
        packed["written"] = torch.from_numpy(memory.cold.written.copy())
    return {
        **packed,
        "points": memory.points(),
        "rows": dict(c.rows),
        "keys": c._keys[: c.num_chunks].copy(),
        "key_rows": c._key_rows[: c.num_chunks].copy(),
        "free": c._free[: c.free_chunks].copy(),
        "pool": c.pool[: c._pool_end],
        "chunk": c.point_chunk[:n],
        "pos": c.point_pos[:n],
        "env": (memory.env.rgb, memory.env.last_seen, memory.env.filled_count),
        "keyframes": dict(memory.freespace.slots),
        "stats": memory.stats(),
        "trajectory": memory.trajectory(),
        "touched": memory.last_touched,
    }


# -- whole memories in lockstep ------------------------------------------------------------------------
def ray_cast(camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """A ground plane, a wall and a box under sky: RGB uint8 [H, W, 3], depth float32 [H, W] (+inf: sky)."""
    k = camera.intrinsics
    u, v = np.meshgrid(np.arange(k.width, dtype=float), np.arange(k.height, dtype=float))
    rays = (
        np.stack(((u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)), -1) @ camera.cam_to_world[:3, :3].T
    )
    origin = camera.cam_to_world[:3, 3]
    depth = np.full(u.shape, np.inf)
    rgb = np.broadcast_to(SKY, (*u.shape, 3)).copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        hits = [
            (-origin[2] / rays[..., 2], (120, 100, 70)),  # ground z = 0
            ((6.0 - origin[0]) / rays[..., 0], (90, 120, 60)),  # wall x = 6
        ]
        lo, hi = (np.array([2.0, -0.6, 0.0]) - origin) / rays, (np.array([2.6, 0.4, 1.5]) - origin) / rays
        t_in, t_out = np.nanmax(np.minimum(lo, hi), -1), np.nanmin(np.maximum(lo, hi), -1)
        hits.append((np.where(t_in <= t_out, t_in, np.inf), (200, 60, 50)))  # a box
    for t, colour in hits:
        hit = (t > 1e-6) & (t < depth)
        depth = np.where(hit, t, depth)
        point = origin + rays * np.where(hit, t, 0.0)[..., None]
        checker = np.floor((point + 0.137) / 0.3).sum(-1) % 2
        rgb = np.where(hit[..., None], np.clip(np.array(colour) + 40 * checker[..., None], 0, 255), rgb)
    return rgb.astype(np.uint8), depth.astype(np.float32)  # planar: the rays have camera z = 1


def random_camera(g: np.random.Generator, intrinsics: Intrinsics = INTR) -> Camera:
    eye = np.array([g.uniform(-2.0, 1.0), g.uniform(-1.5, 1.5), g.uniform(0.6, 2.0)])
    heading = g.uniform(-1.2, 1.2)
    pitch = g.choice([g.uniform(-0.5, 0.1), g.uniform(0.3, 1.4)])  # mostly level, sometimes at the sky
    ahead = np.array([np.cos(heading) * np.cos(pitch), np.sin(heading) * np.cos(pitch), np.sin(pitch)])
    return Camera(intrinsics, look_at(eye, eye + ahead))


CONFIGS = {
    "default": MemoryConfig(budget_bytes=16 * MiB, env_width=128, env_height=64),
    "tight": MemoryConfig(  # evicts: budget and chunk table run out
        budget_bytes=MiB, initial_capacity=512, env_width=64, env_height=32, freespace_keyframes=4
    ),
    "window": MemoryConfig(
        budget_bytes=8 * MiB,
        window_frames=4,
        max_splat_radius_px=2,
        generated_depth_bias=0.0,
        generated_far=4.0,
    ),
    "quantised": MemoryConfig(budget_bytes=16 * MiB, env_width=128, env_height=64, storage="quantised"),
    "quantised_tight": MemoryConfig(  # evicts packed chunks: budget and chunk table run out
        budget_bytes=MiB,
        initial_capacity=512,
        env_width=64,
        env_height=32,
        freespace_keyframes=4,
        storage="quantised",
    ),  # fmt: skip
    "fine_chunks": MemoryConfig(
        budget_bytes=4 * MiB,
        chunk_size_m=0.5,
        initial_capacity=1024,
        env_width=32,
        env_height=16,
        refine=False,
    ),
}


def lockstep_steps(g: np.random.Generator, frames: int):
    """A script of (kind, camera, seed) frames mixing every ingest kind, renders and touches."""
    later = ["observed", "observed_render", "generated", "generated", "imported", "touch"]
    kinds = ["observed"] * 3 + [g.choice(later) for _ in range(frames - 3)]
    return [(str(kind), random_camera(g), int(g.integers(2**31))) for kind in kinds]


def play(memory: SpatialMemory, kind: str, camera: Camera, seed: int, frame: int):
    """One scripted frame on ``memory``; returns everything it gave back."""
    g = np.random.default_rng(seed)
    rgb, depth = ray_cast(camera)
    k = camera.intrinsics
    ids = g.integers(0, 4, (k.height, k.width)).astype(np.int32) if g.random() < 0.5 else None
    if kind == "observed":
        return memory.ingest(
            camera, rgb, depth, provenance=1, frame_index=frame, object_ids=ids
        ), memory.last_touched
    memory.tier(camera)
    render = memory.render(camera)
    out = [render, memory.last_touched]
    if kind == "observed_render":
        out.append(memory.ingest(camera, rgb, depth, provenance=1, frame_index=frame, render=render))
    elif kind == "generated":  # the session's generate step, with guesses near and far
        covered = render.coverage.numpy() >= 0.5
        guess = depth * np.float32(g.choice([0.6, 1.0, 30.0]))
        shown = np.where(covered[..., None], np.rint(render.rgb.numpy() * 255.0), rgb).astype(np.uint8)
        mixed = np.where(covered, render.depth.numpy(), guess).astype(np.float32)
        out.append(
            memory.ingest(
                camera,
                shown,
                mixed,
                provenance=2,
                frame_index=frame,
                mask=~covered,
                render=render,
                object_ids=ids,
            )
        )
    elif kind == "imported":
        mask = g.random((k.height, k.width)) < 0.4
        out.append(memory.ingest(camera, rgb / 255.0, depth, provenance=3, frame_index=frame, mask=mask))
    else:
        memory.touch(render, frame)
    out.append(memory.last_touched)
    return out


@pytest.mark.parametrize("config", list(CONFIGS), ids=list(CONFIGS))
@pytest.mark.parametrize("seed", range(2))
def test_memories_on_both_paths_stay_bit_identical(config, seed, calls):
    g = np.random.default_rng(seed)
    fast, slow = SpatialMemory(copy.deepcopy(CONFIGS[config])), SpatialMemory(copy.deepcopy(CONFIGS[config]))
    for frame, (kind, camera, step_seed) in enumerate(lockstep_steps(g, 14)):
        got = play(fast, kind, camera, step_seed, frame)
        with torch_path():
            want = play(slow, kind, camera, step_seed, frame)
        assert_same(got, want, f"frame {frame} ({kind})")
        assert_same(state(fast), state(slow), f"state after frame {frame} ({kind})")
    # an empty memory and a camera at nothing render alike too
    away = Camera(INTR, look_at((0.0, 0.0, 50.0), (0.0, 0.1, 60.0)))
    assert_same(*both(lambda: (SpatialMemory(CONFIGS[config]).render(away), fast.render(away))))
    ran = ["render_split", "compose_kernel", "touch_kernel", "frustum_kernel", "addable_kernel"]
    if fast.cold is not None:
        ran += ["decode_view_kernel", "touch_packed_kernel"]
    for name in ran:
        assert calls.get(name, 0) > 0, f"{name} never ran"


def test_the_torch_switch_runs_no_kernel(calls):
    memory = SpatialMemory(CONFIGS["default"])
    camera = random_camera(np.random.default_rng(3))
    with torch_path():
        for frame, kind in enumerate(["observed", "generated", "observed_render", "touch"]):
            play(memory, kind, camera, frame, frame)
    assert calls == {}
    play(memory, "generated", camera, 9, 9)
    assert calls.get("render_split") == 1 and calls.get("touch_kernel") == 1


# -- the render kernel: candidates straight from the chunk segments -------------------------------
def split_segments(g, order: np.ndarray, rows: int):
    """A pool holding ``order`` in ``rows`` segments of random sizes (some empty), at scattered starts."""
    cuts = np.sort(g.integers(0, order.size + 1, rows - 1))
    sizes = np.diff(np.concatenate(([0], cuts, [order.size]))).astype(np.int64)
    gaps = g.integers(0, 3, rows)
    starts = np.cumsum(sizes + gaps) - sizes
    pool = np.full(int(starts[-1] + sizes[-1] + 2) if rows else 2, -7, np.int32)
    first = 0
    for start, size in zip(starts, sizes, strict=True):
        pool[start : start + size] = order[first : first + size]
        first += size
    return starts.astype(np.int64), sizes, pool


def torch_camera_frame(rot: np.ndarray, trans: np.ndarray, xyz: torch.Tensor) -> torch.Tensor:
    """((r0 x + r1 y) + r2 z) + t per row, in torch's float32 (SpatialMemory._to_camera's rule)."""
    r, t = torch.from_numpy(rot), torch.from_numpy(trans)
    x, y, z = xyz.T
    return torch.stack([r[i, 0] * x + r[i, 1] * y + r[i, 2] * z + t[i] for i in range(3)]).T


@pytest.mark.parametrize("block", [0, 1, 64, 1000])  # 0: the runtime's work space (one block here)
@pytest.mark.parametrize("n", [0, 1, 7, 300, 2500])
@pytest.mark.parametrize("seed", range(3))
def test_render_kernel_equals_sorted_candidates_through_the_torch_splat(n, seed, block):
    g = np.random.default_rng(1000 * n + seed)
    width, height = (16, 12) if seed else (41, 23)
    k = Intrinsics(fx=14.0 + seed, fy=13.0, cx=7.5, cy=5.25, width=width, height=height)
    camera = Camera(k, look_at(g.normal(size=3), g.normal(size=3) * 3 + np.array([0.0, 0.0, 5.0])))
    # points in front of the camera, snapped to a coarse grid and repeated: exact ties in depth and distance
    local = np.stack(
        (g.uniform(-4, 4, n), g.uniform(-3, 3, n), g.choice([-0.5, 0.02, 1.0, 2.0, 2.0, 4.0], n)), 1
    )
    if seed != 1:
        local = np.round(local * 4) / 4
    xyz = (local @ camera.cam_to_world[:3, :3].T + camera.cam_to_world[:3, 3]).astype(np.float32)
    dup = g.integers(0, max(n, 1), n // 3)
    xyz[g.integers(0, max(n, 1), n // 3)] = xyz[dup]
    radius = (g.uniform(0, 0.2, n) ** 2 * g.choice([0.1, 1.0, 5.0], n)).astype(np.float32)
    provenance = g.integers(1, 4, n).astype(np.uint8)
    count = n + 5  # spare points no segment lists
    xyz_all = np.concatenate((xyz, g.normal(size=(5, 3)).astype(np.float32)))
    radius_all = np.concatenate((radius, np.full(5, 0.1, np.float32)))
    prov_all = np.concatenate((provenance, np.full(5, 2, np.uint8)))
    rgb_all = g.integers(0, 256, (count, 3), dtype=np.uint8)
    starts, sizes, pool = split_segments(g, g.permutation(n).astype(np.int32), int(g.integers(1, 9)))
    rows = g.permutation(starts.size).astype(np.int64)  # segments visited in any order
    w2c = camera.world_to_cam
    rot, trans = np.ascontiguousarray(w2c[:3, :3], np.float32), np.ascontiguousarray(w2c[:3, 3], np.float32)
    c = np.float32
    bias = c(0.3)
    fast = splat_fast.render_kernel(
        rows, starts, sizes, pool, count, xyz_all, radius_all, prov_all, 2, c(0.0) * bias, c(1.0) * bias,
        rot, trans, c(k.fx), c(k.fy), c(k.cx), c(k.cy), c((k.fx + k.fy) / 2), c(0.05), c(4.0), c(1.02),
        width, height, *(workspaces.new_render_workspace(block, width * height) if block
                         else workspaces.render_workspace(width * height)), rgb_all,
    )  # fmt: skip
    cand = torch.from_numpy(np.sort(pool[pool >= 0]).astype(np.int64))
    slow = splat_points_torch(
        torch_camera_frame(rot, trans, torch.from_numpy(xyz_all)[cand]),
        torch.from_numpy(radius_all)[cand],
        k,
        near=0.05,
        max_radius_px=4,
        depth_tolerance=0.02,
        depth_bias=(torch.from_numpy(prov_all)[cand] == 2).to(torch.float32) * 0.3,
        rgb=torch.from_numpy(rgb_all)[cand],
    )
    index = torch.where(slow.index >= 0, cand[slow.index.clamp(min=0)], -1) if n else slow.index
    assert fast[2] == slow.points_in_view and fast[3] == n
    assert_same(torch.from_numpy(fast[0]), index, "index")
    assert_same(torch.from_numpy(fast[1]), slow.depth, "depth")
    assert_same(torch.from_numpy(fast[4]), slow.rgb, "fused colour")
    if n > 300:
        assert (index >= 0).sum() > 0


@pytest.mark.parametrize("seed", range(4))
def test_render_split_over_two_threads_gives_the_kernel_bits(seed, monkeypatch):
    g = np.random.default_rng(50 + seed)
    k = Intrinsics(fx=30.0, fy=28.0, cx=20.5, cy=15.0, width=41, height=31)
    camera = Camera(k, look_at(np.zeros(3), np.array([5.0, 0.3, 0.2])))
    n = 3000
    local = np.stack((g.uniform(-4, 4, n), g.uniform(-3, 3, n), g.choice([0.02, 1.0, 2.0, 4.0], n)), 1)
    local = np.round(local * 4) / 4  # exact ties across the two halves
    xyz = (local @ camera.cam_to_world[:3, :3].T + camera.cam_to_world[:3, 3]).astype(np.float32)
    radius = (g.uniform(0, 0.2, n) ** 2 * g.choice([0.1, 1.0, 5.0], n)).astype(np.float32)
    provenance = g.integers(1, 4, n).astype(np.uint8)
    starts, sizes, pool = split_segments(g, g.permutation(n).astype(np.int32), 12)
    rows = g.permutation(starts.size).astype(np.int64)
    w2c = camera.world_to_cam
    rot, trans = np.ascontiguousarray(w2c[:3, :3], np.float32), np.ascontiguousarray(w2c[:3, 3], np.float32)
    c = np.float32
    rgb = g.integers(0, 256, (n, 3), dtype=np.uint8)
    args = (rows, starts, sizes, pool, n, xyz, radius, provenance, 2, c(0.0), c(0.3), rot, trans,
            c(k.fx), c(k.fy), c(k.cx), c(k.cy), c((k.fx + k.fy) / 2), c(0.05), c(4.0), c(1.02), k.width, k.height)  # fmt: skip
    one = splat_fast.render_kernel(*args, *workspaces.render_workspace(k.width * k.height), rgb)
    monkeypatch.setattr(splat_fast, "SPLIT_MIN_MEMBERS", 10)
    monkeypatch.setenv(splat_fast.THREADS_ENV, "2")
    if seed == 3:  # blocks of 64 in both threads: gathered and projected again for the winners
        small = {}
        monkeypatch.setattr(
            splat_fast, "render_workspace",
            lambda hw: small.setdefault(threading.get_ident(), workspaces.new_render_workspace(64, hw)),
        )  # fmt: skip
    two = splat_fast.render_split(*args, rgb)
    assert np.array_equal(one[0], two[0]) and np.array_equal(one[1].view(np.int32), two[1].view(np.int32))
    assert one[2:4] == two[2:4] and one[3] == n and (one[0] >= 0).sum() > 300
    # the fused colour: integer sums, so the two halves' merge gives the same bits
    assert np.array_equal(one[4].view(np.int32), two[4].view(np.int32)) and one[4].max() > 0
    filled = [int(r) for r in rows if sizes[r] > 0]
    for row in (filled[-1], filled[0]):  # a member past the count in the helper's half, then the caller's
        bad = pool.copy()
        bad[starts[row]] = n + 3
        assert splat_fast.render_split(*args[:3], bad, *args[4:], rgb)[3] == -1


def test_render_work_spaces_are_shared_by_threads_not_kept_per_thread(monkeypatch):
    """Renders from many threads in turn (the server's workers) hold no more work spaces than ran at
    once: two for a render split over two threads."""
    g = np.random.default_rng(7)
    k = Intrinsics(fx=30.0, fy=28.0, cx=20.5, cy=15.0, width=41, height=31)
    camera = Camera(k, look_at(np.zeros(3), np.array([5.0, 0.3, 0.2])))
    n = 2000
    local = np.stack((g.uniform(-4, 4, n), g.uniform(-3, 3, n), g.uniform(1, 6, n)), 1)
    xyz = (local @ camera.cam_to_world[:3, :3].T + camera.cam_to_world[:3, 3]).astype(np.float32)
    starts, sizes, pool = split_segments(g, g.permutation(n).astype(np.int32), 6)
    w2c = camera.world_to_cam
    c = np.float32
    args = (np.arange(starts.size, dtype=np.int64), starts, sizes, pool, n, xyz, np.full(n, 0.02, np.float32),
            np.ones(n, np.uint8), 2, c(0.0), c(0.3), np.ascontiguousarray(w2c[:3, :3], c),
            np.ascontiguousarray(w2c[:3, 3], c), c(k.fx), c(k.fy), c(k.cx), c(k.cy), c((k.fx + k.fy) / 2),
            c(0.05), c(4.0), c(1.02), k.width, k.height, np.full((n, 3), 9, np.uint8))  # fmt: skip
    monkeypatch.setattr(splat_fast, "SPLIT_MIN_MEMBERS", 10)
    monkeypatch.setenv(splat_fast.THREADS_ENV, "2")
    monkeypatch.setattr(workspaces, "_spare", [])
    results = []
    for _ in range(4):
        worker = threading.Thread(target=lambda: results.append(splat_fast.render_split(*args)))
        worker.start()
        worker.join()
    assert len(results) == 4 and all(np.array_equal(results[0][0], r[0]) for r in results)
    assert (results[0][0] >= 0).sum() > 100
    assert len(workspaces._spare) == 2


def test_render_kernel_refuses_a_segment_past_the_count():
    g = np.random.default_rng(4)
    xyz = g.normal(size=(10, 3)).astype(np.float32) + np.float32([0, 0, 3])
    starts, sizes, pool = np.array([0], np.int64), np.array([3], np.int64), np.array([1, 9, 2], np.int32)
    c = np.float32
    args = (
        np.array([0], np.int64), starts, sizes, pool, 5, xyz, np.full(10, 0.01, np.float32),
        np.ones(10, np.uint8), 2, c(0), c(0), np.eye(3, dtype=np.float32), np.zeros(3, np.float32),
        c(10), c(10), c(8), c(6), c(10), c(0.05), c(4), c(1.02), 16, 12,
        *workspaces.render_workspace(16 * 12), np.full((10, 3), 9, np.uint8),
    )  # fmt: skip
    index, depth, in_view, touched, colour = splat_fast.render_kernel(*args)
    assert touched == -1 and (index == -1).all() and (depth == 0).all() and (colour == 0).all()
    # in a later block too (blocks of 2: the bad member is the second block's)
    pool = np.array([1, 2, 9], np.int32)
    args = (*args[:3], pool, *args[4:23], *workspaces.new_render_workspace(2, 16 * 12), args[-1])
    index, depth, in_view, touched, colour = splat_fast.render_kernel(*args)
    assert touched == -1 and (index == -1).all() and (depth == 0).all() and (colour == 0).all()


# -- chunk queries -------------------------------------------------------------------------------------
def point_values(g: np.random.Generator, xyz: np.ndarray) -> dict[str, torch.Tensor]:
    """Arrays of new points at ``xyz`` [M, 3], the other fields random."""
    m = xyz.shape[0]
    return {
        "xyz": torch.from_numpy(xyz.astype(np.float32)),
        "rgb": torch.from_numpy(g.integers(0, 256, (m, 3), dtype=np.uint8)),
        "radius": torch.from_numpy((g.uniform(0, 1, m) ** 3 * 0.5).astype(np.float32)),
        "confidence": torch.from_numpy(g.uniform(0, 1, m).astype(np.float16)),
        "provenance": torch.from_numpy(g.integers(1, 4, m).astype(np.uint8)),
        "last_seen": torch.from_numpy(g.integers(0, 9, m).astype(np.int32)),
        "hit_count": torch.from_numpy(g.integers(0, 3, m).astype(np.int32)),
        "object_id": torch.from_numpy(g.integers(0, 5, m).astype(np.int32)),
        "frame_added": torch.zeros(m, dtype=torch.int32),
    }


def chunk_memory(g: np.random.Generator, points: int, extent: float, chunk: float = 2.0) -> SpatialMemory:
    """A memory of random points (appends, then a random removal: the segments out of index order)."""
    memory = SpatialMemory(MemoryConfig(budget_bytes=16 * MiB, chunk_size_m=chunk, initial_capacity=256))
    for _ in range(3):
        memory._append(point_values(g, g.uniform(-extent, extent, (int(g.integers(1, points)), 3))))
        memory._remove(torch.from_numpy(g.random(memory.num_points) < 0.2))
    return memory


@pytest.mark.parametrize("seed", range(8))
def test_members_and_frustum_equal_the_torch_path(seed, calls):
    g = np.random.default_rng(seed)
    memory = chunk_memory(g, 600, extent=float(g.choice([2.0, 6.0, 12.0])), chunk=float(g.choice([1.0, 2.0])))
    chunks, count = memory.chunks, memory.num_points
    used = chunks.used_rows()
    for pick in (
        used,
        used[:0],
        used[g.random(used.numel()) < 0.3],
        used[torch.from_numpy(g.permutation(used.numel()))],
    ):
        for total in (count, count * 10 + 100):  # the mask branch and the sort branch
            assert_same(*both(lambda p=pick, t=total: chunks.members(p, t)))
    repeated = torch.cat((used[:3], used[:3]))  # repeats: a mask drops them, a sort keeps them
    for total in (count, count * 10 + 100):
        assert_same(*both(lambda t=total: chunks.members(repeated, t)))
    for _ in range(6):
        eye = g.uniform(-8, 8, 3)
        camera = Camera(
            Intrinsics.from_fov(32, 24, float(g.uniform(20, 120))), look_at(eye, eye + g.normal(size=3))
        )
        near, radius = float(g.choice([0.05, 1.0, 4.0])), int(g.integers(0, 6))
        assert_same(*both(lambda c=camera, ne=near, r=radius: chunks.in_frustum(c, ne, r)))
        assert_same(*both(lambda c=camera: memory._candidates(c)))
    assert calls["members_kernel"] > 0 and calls["frustum_kernel"] > 0


def test_a_chunk_exactly_on_a_frustum_plane_is_kept_on_both_paths():
    # identity pose, fx = 1, cx + e = 2: the left plane is x + 2 z = 0, and (-2, 0, 1) lies on it exactly
    camera = Camera(Intrinsics(fx=1.0, fy=1.0, cx=0.5, cy=0.5, width=2, height=2), np.eye(4))
    memory = SpatialMemory(MemoryConfig(budget_bytes=4 * MiB))
    memory._append(point_values(np.random.default_rng(0), np.array([[-2.0, 0.0, 1.0]])))
    fast, slow = both(lambda: memory.chunks.in_frustum(camera, 0.05, 0))
    assert_same(fast, slow)
    assert fast.numel() == 1


def test_members_of_an_empty_memory():
    memory = SpatialMemory(MemoryConfig(budget_bytes=4 * MiB))
    none = torch.zeros(0, dtype=torch.int64)
    assert_same(*both(lambda: memory.chunks.members(none, 0)))
    assert_same(*both(lambda: memory._candidates(Camera(INTR, np.eye(4)))))


# -- compose ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_compose_equals_the_torch_path(seed, calls):
    g = np.random.default_rng(seed)
    memory = chunk_memory(g, 300, extent=3.0)
    points = memory.points()
    env = EnvironmentMap(64, 32)
    if seed % 3:  # a partly filled map
        env.rgb.copy_(torch.from_numpy(g.integers(0, 256, (64 * 32, 3), dtype=np.uint8)))
        env.last_seen.copy_(torch.from_numpy(np.where(g.random(64 * 32) < 0.6, 3, -1).astype(np.int32)))
        env.filled_count = int((env.last_seen >= 0).sum())
    k = Intrinsics.from_fov(24, 16, 80.0)
    camera = Camera(k, look_at(g.normal(size=3), g.normal(size=3)))
    n = memory.num_points
    for cover in (0.0, 0.5, 1.0):
        index = torch.from_numpy(np.where(g.random((16, 24)) < cover, g.integers(0, n, (16, 24)), -1))
        depth = torch.from_numpy(
            np.where(index.numpy() >= 0, g.uniform(0.1, 9, (16, 24)), 0).astype(np.float32)
        )

        def compose(i=index, d=depth):
            return compose_render(SplatWinners(i, d.clone(), 7), points, env, camera, 3)

        fast, slow = both(compose)
        assert_same(fast, slow, f"cover {cover}")
    empty = {name: t[:0] for name, t in points.items()}
    none = torch.full((16, 24), -1, dtype=torch.int64)
    assert_same(
        *both(lambda: compose_render(SplatWinners(none, torch.zeros(16, 24), 0), empty, env, camera, 1))
    )
    assert calls["compose_kernel"] > 0


# -- ingest's bookkeeping ------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_touch_equals_the_torch_path(seed, calls):
    g = np.random.default_rng(seed)
    memories = [chunk_memory(np.random.default_rng(seed), 400, extent=4.0) for _ in range(2)]
    filled = torch.from_numpy(
        np.where(g.random(memories[0].env.last_seen.numel()) < 0.5, 1, -1).astype(np.int32)
    )
    for memory in memories:
        memory.env.last_seen.copy_(filled)
    n, texels = memories[0].num_points, filled.numel()
    shape = (12, 16)
    for frame in (0, 5, 2**31 - 1):
        index = np.where(g.random(shape) < 0.7, g.integers(0, n, shape), g.choice([-1, -5], shape))
        index[0, :4] = index[1, :4]  # repeats: counted once
        env_texel = np.where(index < 0, g.integers(-1, texels, shape), -1)
        render = MemoryRender(
            *(torch.zeros(shape) for _ in range(4)), point_index=torch.from_numpy(index),
            object_id=torch.zeros(shape, dtype=torch.int32), provenance=torch.zeros(shape, dtype=torch.uint8),
            points_in_view=0, env_texel=torch.from_numpy(env_texel),
        )  # fmt: skip
        memories[0]._touch(render, frame)
        with torch_path():
            memories[1]._touch(render, frame)
        assert_same(state(memories[0]), state(memories[1]), f"frame {frame}")
    assert calls["touch_kernel"] == 3
    # an index past the arrays: both raise, the kernel before changing anything
    bad = dataclasses.replace(
        render, point_index=torch.full((12, 16), memories[0].capacity, dtype=torch.int64)
    )
    for memory, path in zip(memories, (contextlib.nullcontext, torch_path), strict=True):
        with path(), pytest.raises(IndexError):
            memory._touch(bad, 9)
    assert_same(state(memories[0]), state(memories[1]))


def random_env(g: np.random.Generator) -> EnvironmentMap:
    env = EnvironmentMap(int(g.choice([16, 64, 128])), int(g.choice([8, 32, 64])))
    env.rgb.copy_(torch.from_numpy(g.integers(0, 256, env.rgb.shape, dtype=np.uint8)))
    env.last_seen.copy_(
        torch.from_numpy(np.where(g.random(env.last_seen.numel()) < 0.3, 2, -1).astype(np.int32))
    )
    env.filled_count = int((env.last_seen >= 0).sum())
    return env


@pytest.mark.parametrize("seed", range(6))
def test_write_view_equals_the_torch_path(seed, calls):
    g = np.random.default_rng(seed)
    envs = [random_env(np.random.default_rng(seed)) for _ in range(2)]
    k = Intrinsics.from_fov(24, 16, float(g.uniform(40, 120)))
    cameras = [Camera(k, look_at(np.zeros(3), g.normal(size=3))) for _ in range(2)]
    cameras.append(Camera(k, look_at(np.zeros(3), np.array([1e-4, 0.0, 1.0]))))  # straight up
    for frame, camera in enumerate([*cameras, cameras[0], cameras[0], cameras[1]]):  # cached cameras too
        rgb = torch.from_numpy(g.integers(0, 256, (16 * 24, 3), dtype=np.uint8))
        at_infinity = torch.from_numpy(g.random(16 * 24) < g.choice([0.0, 0.3, 1.0]))
        overwrite = bool(frame % 2)
        written = envs[0].write_view(camera, rgb, at_infinity, frame, overwrite)
        with torch_path():
            expected = envs[1].write_view(camera, rgb, at_infinity, frame, overwrite)
        assert written == expected
        assert_same(
            (envs[0].rgb, envs[0].last_seen, envs[0].filled_count),
            (envs[1].rgb, envs[1].last_seen, envs[1].filled_count),
        )
    assert calls["write_view_kernel"] > 0


def test_the_camera_caches_give_what_a_fresh_map_computes():
    g = np.random.default_rng(2)
    env, fresh = EnvironmentMap(64, 32), EnvironmentMap(64, 32)
    k = Intrinsics.from_fov(24, 16, 70.0)
    a, b = (Camera(k, look_at(np.zeros(3), g.normal(size=3))) for _ in range(2))
    for camera, pixels in [(a, 10), (a, 10), (b, 10), (a, 30), (a, 10)]:
        pix = torch.arange(pixels) * 7
        assert_same(env.pixel_texels(camera, pix), fresh.texel_index(pixel_rays_world(camera, pix)))
        assert_same(env._view_map(camera), EnvironmentMap(64, 32)._view_map(camera))


def special_depths(g: np.random.Generator, n: int) -> torch.Tensor:
    values = g.uniform(-2, 90, n).astype(np.float32)
    pick = g.random(n) < 0.3
    values[pick] = g.choice(
        np.float32([0.0, -0.0, np.inf, -np.inf, np.nan, 60.0, 1e-30, 3e38]), int(pick.sum())
    )
    return torch.from_numpy(values)


@pytest.mark.parametrize("n", [0, 1, 17, 1000])
def test_ingest_masks_equal_their_torch_expressions(n):
    g = np.random.default_rng(n)
    depth, mask = special_depths(g, n), torch.from_numpy(g.random(n) < 0.7)
    for limit in (60.0, 59.99999, 3e38 if n else 0.0):
        expected = torch.where(depth > limit, float("inf"), depth)
        assert_same(torch.from_numpy(kernels.beyond_kernel(depth.numpy(), np.float32(limit))), expected)
    addable = mask & (depth > 0) & torch.isfinite(depth)
    assert_same(torch.from_numpy(kernels.addable_kernel(depth.numpy(), mask.numpy())), addable)
    infinite = (depth == float("inf")) & mask
    assert_same(torch.from_numpy(kernels.infinite_kernel(depth.numpy(), mask.numpy())), infinite)
    assert kernels.any_kernel(mask.numpy()) == bool(mask.any())


@pytest.mark.parametrize("n", [0, 1, 5, 4000])
def test_camera_frame_equals_the_torch_path(n):
    g = np.random.default_rng(n)
    memory = SpatialMemory(MemoryConfig(budget_bytes=4 * MiB))
    camera = Camera(INTR, look_at(g.normal(size=3) * 5, g.normal(size=3)))
    xyz = torch.from_numpy((g.normal(size=(n, 3)) * 10.0 ** g.integers(-3, 4, (n, 1))).astype(np.float32))
    if n > 1:
        xyz[0] = torch.tensor([float("inf"), float("nan"), -0.0])
    strided = torch.zeros(n, 5)[:, 1:4]
    strided[:] = xyz
    for points in (xyz, strided):
        fast, slow = both(lambda p=points: memory._to_camera(camera, p))
        assert_same(fast, slow)
        assert fast.shape == (n, 3) and fast.T.is_contiguous()

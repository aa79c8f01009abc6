"""A render changes nothing: from any pose, with either storage, memory's every array (points, chunk
rows and index, packed arena, environment map, free-space keyframes, trajectory), its counters and its
stats are the same before and after. Tiering is the frame loop's own step (`SpatialMemory.tier`)."""

from __future__ import annotations

import functools

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_quantised import walk
from test_spatial import SMALL, cam, pose_camera

from runtime.memory import MemoryConfig, SpatialMemory

MiB = 2**20
DIAGNOSTICS = {"last_touched", "_pixel_cache", "_used"}
"""Not memory: what the last call read (culling's instrumentation), a cache of ray look-ups and the
chunk table's cached list of used rows (derived from its key index, which is compared)."""


def state(obj, path: str = "memory", seen=None) -> dict[str, object]:
    """Every array and scalar reachable from ``obj``'s attributes, copied, by attribute path."""
    seen = set() if seen is None else seen
    out: dict[str, object] = {}
    if isinstance(obj, (int, float, str, bool, type(None), torch.device)):
        return {path: obj}
    if id(obj) in seen:  # an object reached twice is captured once
        return out
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        out[path] = obj.detach().clone()
    elif isinstance(obj, np.ndarray):
        out[path] = obj.copy()
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(state(v, f"{path}[{k!r}]", seen))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(state(v, f"{path}[{i}]", seen))
    elif hasattr(obj, "__dict__"):
        for k, v in vars(obj).items():
            if k not in DIAGNOSTICS:
                out.update(state(v, f"{path}.{k}", seen))
    return out


def assert_same(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    for key, a in before.items():
        b = after[key]
        if isinstance(a, torch.Tensor):
            assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), key
        elif isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and np.array_equal(a, b), key
        else:
            assert a == b, key


@functools.cache
def walked(storage: str) -> SpatialMemory:
    """A room walked in observe and generate mode; quantised storage then packs what faces away, so
    renders read packed chunks and hot ones together."""
    memory = SpatialMemory(MemoryConfig(budget_bytes=4 * MiB, storage=storage))
    walk(memory, range(14))
    memory.tier(cam((0.0, -2.0, 1.2), (0.0, -6.0, 1.0), SMALL))
    return memory


def test_the_walked_memories_exercise_both_paths():
    quantised, full = walked("quantised"), walked("full")
    assert quantised.stats().points_packed > 0 and quantised.hot_points > 0
    assert full.num_points > 0 and full.stats().points_packed == 0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seeds=st.lists(st.integers(0, 100_000), min_size=1, max_size=4),
    storage=st.sampled_from(["full", "quantised"]),
)
def test_render_from_any_pose_changes_nothing(seeds, storage):
    memory = walked(storage)
    before, stats = state(memory), memory.stats()
    covered = 0.0
    for seed in seeds:
        covered += float(memory.render(pose_camera(seed)).coverage.mean())
    assert_same(before, state(memory))
    assert memory.stats() == stats
    assert covered >= 0.0


def test_the_state_capture_sees_a_change():
    """The check above can fail: tiering from another pose changes what it captures."""
    memory = SpatialMemory(MemoryConfig(budget_bytes=4 * MiB, storage="quantised"))
    walk(memory, range(14))
    before = state(memory)
    memory.tier(cam((0.0, -2.0, 1.2), (0.0, -6.0, 1.0), SMALL))
    after = state(memory)
    assert before.keys() == after.keys()
    changed = [k for k in before if not _equal(before[k], after[k])]
    assert any("cold" in k for k in changed) and any("_fields" in k or "_count" in k for k in changed)


def _equal(a, b) -> bool:
    try:
        assert_same({"x": a}, {"x": b})
    except AssertionError:
        return False
    return True

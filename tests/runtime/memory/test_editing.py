"""Forgetting one provenance and relabelling a memory (runtime.memory.editing), full and quantised."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_quantised import assert_paging_consistent, walk
from test_snapshot import assert_same_memory, build_memory, orbit

from runtime.memory import MemoryConfig, SpatialMemory
from runtime.memory.quantised import decode_chunk
from runtime.memory.snapshot import snapshot_bytes
from runtime.memory.snapshot_load import load_snapshot

MiB = 2**20
OBSERVED, GENERATED, IMPORTED = 1, 2, 3


def all_points(memory: SpatialMemory) -> dict[str, np.ndarray]:
    """Every point, hot and packed, as numpy arrays (packed ones decoded)."""
    hot = {name: t.numpy().copy() for name, t in memory.points().items()}
    if memory.cold is None:
        return hot
    parts = [hot] + [
        decode_chunk(memory.cold.get(row), memory.config.chunk_size_m) for row in memory.cold.rows().tolist()
    ]
    return {name: np.concatenate([p[name] for p in parts]) for name in hot}


def rows_of(points: dict[str, np.ndarray], keep: np.ndarray) -> set[bytes]:
    """The points selected by ``keep`` as a set of byte rows (position, colour, provenance, object)."""
    packed = np.concatenate(
        [
            points["xyz"][keep].view(np.uint8).reshape(int(keep.sum()), -1),
            points["rgb"][keep],
            points["provenance"][keep, None],
            points["object_id"][keep].view(np.uint8).reshape(int(keep.sum()), -1),
        ],
        axis=1,
    )
    return {row.tobytes() for row in packed}


def test_forgetting_generated_keeps_exactly_the_observed():
    memory = build_memory()
    before = all_points(memory)
    env_before = (memory.env.rgb.clone(), memory.env.last_seen.clone(), memory.env.provenance.clone())
    generated = before["provenance"] == GENERATED
    assert generated.any() and (~generated).any()
    sky_generated = int(((env_before[1] >= 0) & (env_before[2] == GENERATED)).sum())
    assert sky_generated > 0
    keyframes = memory.freespace.count

    stats = memory.forget(GENERATED)

    after = all_points(memory)
    assert stats.points == int(generated.sum()) and stats.texels == sky_generated and stats.keyframes == 0
    assert not (after["provenance"] == GENERATED).any()
    assert rows_of(after, np.ones(len(after["xyz"]), bool)) == rows_of(before, ~generated)
    # the observed sky is untouched, the generated sky is empty
    kept = (env_before[1] >= 0) & (env_before[2] == OBSERVED)
    assert torch.equal(memory.env.rgb[kept], env_before[0][kept])
    assert torch.equal(memory.env.last_seen[kept], env_before[1][kept])
    assert int(memory.env.filled.sum()) == memory.env.filled_count == int(kept.sum())
    assert memory.freespace.count == keyframes
    assert memory.stats().points == memory.num_points == len(after["xyz"])
    # the chunk index follows: its provenance counts hold no generated point any more
    used = memory.chunks.used_rows()
    assert int(memory.chunks.rows["provenance"][used, GENERATED].sum()) == 0
    # it goes on working: render, ingest, snapshot round trip
    camera = orbit(3)
    assert float(memory.render(camera).coverage.mean()) > 0.3
    assert_same_memory(memory, load_snapshot(snapshot_bytes(memory)))


def test_forgetting_observed_drops_the_free_space_it_proved():
    memory = build_memory()
    assert memory.freespace.count > 0
    observed = int((all_points(memory)["provenance"] == OBSERVED).sum())
    stats = memory.forget(OBSERVED)
    assert stats.points == observed and stats.keyframes > 0 and memory.freespace.count == 0
    assert set(np.unique(all_points(memory)["provenance"]).tolist()) == {GENERATED}
    assert not bool((memory.env.provenance == OBSERVED).any())


def test_relabel_then_forget_empties_the_memory():
    memory = build_memory()
    points = memory.num_points
    assert memory.relabel(IMPORTED) == points
    assert set(np.unique(all_points(memory)["provenance"]).tolist()) == {IMPORTED}
    filled = memory.env.last_seen >= 0
    assert bool((memory.env.provenance[filled] == IMPORTED).all())
    assert memory.forget(GENERATED).points == 0  # nothing generated is left to forget
    stats = memory.forget(IMPORTED)
    assert stats.points == points and memory.num_points == 0 and memory.env.filled_count == 0


def test_quantised_memory_forgets_inside_packed_chunks():
    memory = SpatialMemory(MemoryConfig(budget_bytes=4 * MiB, storage="quantised"))
    walk(memory, range(24))
    assert memory.cold.points > 0
    before = all_points(memory)
    packed = np.concatenate(
        [
            decode_chunk(memory.cold.get(r), memory.config.chunk_size_m)["provenance"]
            for r in memory.cold.rows()
        ]
    )
    assert (packed == GENERATED).any() and (packed == OBSERVED).any()  # mixed chunks are packed
    generated = before["provenance"] == GENERATED

    stats = memory.forget(GENERATED)

    assert stats.points == int(generated.sum())
    assert_paging_consistent(memory)
    after = all_points(memory)
    assert not (after["provenance"] == GENERATED).any()
    assert rows_of(after, np.ones(len(after["xyz"]), bool)) == rows_of(before, ~generated)
    assert_same_memory(memory, load_snapshot(snapshot_bytes(memory)))
    memory.relabel(IMPORTED)
    assert_paging_consistent(memory)
    assert set(np.unique(all_points(memory)["provenance"]).tolist()) == {IMPORTED}
    walk(memory, range(24, 30))  # and it goes on paging
    assert_paging_consistent(memory)


@pytest.mark.parametrize("bad", [0, 4, True, -1])
def test_unknown_provenance_is_refused(bad):
    memory = build_memory(frames=3)
    with pytest.raises(ValueError, match="use one of"):
        memory.forget(bad)
    with pytest.raises(ValueError, match="use one of"):
        memory.relabel(bad)

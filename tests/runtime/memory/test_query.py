"""Memory queries (runtime.memory.query): the surfaces along a ray, the points and objects in a box,
against the analytic scene's own geometry, in full and quantised storage."""

from __future__ import annotations

import numpy as np
import pytest
from test_spatial import AHEAD, GROUND, INTR, PILLAR, SKY, WALL, cam, ray_cast

from runtime.memory import MemoryConfig, SpatialMemory
from runtime.memory.query import RADIUS_SLACK

MiB = 2**20
PILLAR_ID = 7
SIDE = cam((0.0, 3.0, 1.0), (6.0, -1.0, 1.0))  # sees the wall behind the pillar


def observe(memory: SpatialMemory, camera, frame: int) -> None:
    rgb, depth = ray_cast(camera, [WALL, GROUND, PILLAR])
    pillar_only, _ = ray_cast(camera, [PILLAR])
    pillar_depth = ray_cast(camera, [PILLAR])[1]
    ids = np.where(np.isfinite(pillar_depth) & (pillar_depth <= depth + 1e-4), PILLAR_ID, 0).astype(np.uint32)
    memory.ingest(camera, rgb, depth, provenance=1, frame_index=frame, object_ids=ids)


@pytest.fixture(params=["full", "quantised"])
def memory(request) -> SpatialMemory:
    memory = SpatialMemory(MemoryConfig(budget_bytes=16 * MiB, storage=request.param))
    observe(memory, AHEAD, 0)
    observe(memory, SIDE, 1)
    if request.param == "quantised":  # pack what a view away from the scene does not need
        memory.tier(cam((0.0, 0.0, 1.0), (-6.0, 0.0, 1.0)))
        assert memory.stats().points_packed > 0
    return memory


def test_pick_reports_the_pillar_then_the_wall_behind_it(memory):
    pick = memory.pick((0.0, 0.0, 1.0), (1.0, 0.0, 0.0), max_hits=4)
    assert len(pick.hits) == 2
    pillar, wall = pick.hits
    assert pillar.distance_m == pytest.approx(3.0, abs=0.03)
    assert np.allclose(pillar.point, (3.0, 0.0, 1.0), atol=0.03)
    assert pillar.object_id == PILLAR_ID and pillar.provenance == 1
    assert pillar.first_seen == 0 and pillar.last_seen in (0, 1)
    assert wall.distance_m == pytest.approx(6.0, abs=0.05) and wall.object_id == 0
    wall_cells = (WALL.colour, tuple(c + 40 for c in WALL.colour))  # the two colours of its checker
    assert wall.rgb in wall_cells and wall.last_seen == 1  # the side view saw the wall behind the pillar
    assert pillar.offset_m <= pillar.radius_m * (1 + RADIUS_SLACK) and wall.points >= 1
    # the colour is the scene's at the hit (the pillar's checker cells are 200 or 240 in red)
    assert pillar.rgb[0] in range(195, 246)
    only_front = memory.pick((0.0, 0.0, 1.0), (2.0, 0.0, 0.0))  # direction need not be unit length
    assert only_front.hits == pick.hits[:1]
    assert memory.pick((0.0, 0.0, 1.0), (1.0, 0.0, 0.0), max_distance_m=2.5).hits == ()
    beyond = memory.pick((0.0, 0.0, 1.0), (1.0, 0.0, 0.0), min_distance_m=4.0)
    assert beyond.hits[0].distance_m == pytest.approx(6.0, abs=0.05)
    assert pick.chunks_tested < memory.chunks.num_chunks  # the chunk index, not every point


def test_pick_along_the_ground_and_into_the_unseen(memory):
    down = memory.pick((0.0, 0.0, 1.0), (2.5, 0.0, -1.0))  # meets the ground 2.5 m ahead
    ground = down.hits[0]
    assert ground.object_id == 0 and ground.rgb in (GROUND.colour, tuple(c + 40 for c in GROUND.colour))
    # a point is a sphere of its footprint: a ray grazing the ground at 21.8 degrees meets one up to
    # radius / sin(21.8 degrees) before the plane
    truth = float(np.hypot(2.5, 1.0))
    assert truth - ground.radius_m / np.sin(np.arctan(1 / 2.5)) <= ground.distance_m <= truth + 0.01
    nothing = memory.pick((0.0, 0.0, 1.0), (-1.0, 0.0, 0.0))  # behind the cameras: never seen
    assert nothing.hits == () and nothing.environment_rgb is None  # the wall hid every sky direction


def test_pick_into_the_sky_reports_the_environment():
    memory = SpatialMemory(MemoryConfig(budget_bytes=16 * MiB))
    rgb, depth = ray_cast(AHEAD, [GROUND, PILLAR])  # no wall: the sky shows above the horizon
    memory.ingest(AHEAD, rgb, depth, provenance=1, frame_index=0)
    sky = memory.pick((0.0, 0.0, 1.0), (1.0, 0.2, 0.3))
    assert sky.hits == () and sky.environment_rgb is not None
    assert np.abs(np.subtract(sky.environment_rgb, SKY, dtype=float)).max() <= 2


def test_box_counts_the_points_inside_and_lists_the_objects(memory):
    contents = memory.box((2.9, -0.6, 0.0), (3.6, 0.6, 2.1))
    assert contents.inside > 100
    xyz = contents.fields["xyz"]
    assert ((xyz >= (2.9, -0.6, 0.0)) & (xyz <= (3.6, 0.6, 2.1))).all()
    (pillar,) = contents.objects
    assert pillar.object_id == PILLAR_ID and pillar.last_seen == 1
    assert np.allclose(pillar.lo, PILLAR.lo, atol=0.06) and pillar.hi[2] == pytest.approx(2.0, abs=0.06)
    assert pillar.points == int((contents.fields["object_id"] == PILLAR_ID).sum())
    capped = memory.box((2.9, -0.6, 0.0), (3.6, 0.6, 2.1), max_points=50)
    assert capped.inside == contents.inside and capped.fields["xyz"].shape == (50, 3)
    assert capped.objects == contents.objects
    assert memory.box((2.9, -0.6, 0.0), (3.6, 0.6, 2.1), max_points=0).fields["xyz"].shape == (0, 3)
    total = memory.box((-100.0,) * 3, (100.0,) * 3, max_points=0)
    assert total.inside == memory.num_points
    assert memory.box((50.0, 50.0, 50.0), (51.0, 51.0, 51.0)).inside == 0


def test_queries_change_nothing_and_refuse_bad_input():
    memory = SpatialMemory(MemoryConfig(budget_bytes=16 * MiB))
    observe(memory, AHEAD, 0)
    before = {k: v.clone() for k, v in memory.points().items()}
    memory.pick((0.0, 0.0, 1.0), (1.0, 0.0, 0.0), max_hits=3)
    memory.box((0.0, -1.0, 0.0), (7.0, 1.0, 2.0))
    assert all((memory.points()[k] == v).all() for k, v in before.items())
    for bad in [dict(direction=(0.0, 0.0, 0.0)), dict(origin=(np.nan, 0.0, 0.0)), dict(max_hits=0),
                dict(max_hits=17), dict(max_distance_m=-1.0), dict(min_distance_m=5.0, max_distance_m=4.0)]:  # fmt: skip
        args = {"origin": (0.0, 0.0, 1.0), "direction": (1.0, 0.0, 0.0), **bad}
        with pytest.raises(ValueError):
            memory.pick(**args)
    with pytest.raises(ValueError, match="min <= max"):
        memory.box((1.0, 0.0, 0.0), (0.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="max_points"):
        memory.box((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), max_points=-1)
    assert INTR.width == 64

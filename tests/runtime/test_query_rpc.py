"""SpatialMemoryQuery's pick and box over the real server and client: answers in the session's own
convention and units, the object ids and provenance of what was observed, and every bad request
refused with INVALID_ARGUMENT (or NOT_FOUND) and a message, the memory unchanged."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import synthetic_rgbd
from test_server import K64

from plugin_bridge.client import InvalidArgumentError, MirageClient, NotFoundError
from plugin_bridge.conventions import (
    Convention,
    canonical_point_to_engine,
    convention_basis,
    default_units_per_meter,
)
from plugin_bridge.types import Observation, Pose, Provenance

BOX_ID = 5
BOX_DEPTH, WALL_DEPTH = 1.8, 3.0  # synthetic_rgbd(depth_m=3): the red box at 0.6 of the wall's depth
BOX_HALF = BOX_DEPTH * math.tan(math.radians(30.0)) / 3  # the box fills the middle third of a 60 degree view


def engine_vec(convention: Convention, v) -> tuple[float, float, float]:
    """A canonical direction in the engine's axes (no units)."""
    a, _ = convention_basis(convention)
    return tuple(float(c) for c in a.T @ np.asarray(v, dtype=float))


@pytest.fixture
def client(mirage_server):
    with MirageClient(mirage_server.target) as c:
        yield c


def observed_session(client, convention: Convention = Convention.OPENCV):
    """A session that observed the synthetic wall and box from the canonical origin (box id 5)."""
    info = client.open_session(K64, convention=convention)
    rgb, depth = synthetic_rgbd()
    ids = np.where(np.isclose(depth, BOX_DEPTH), BOX_ID, 0).astype(np.int32)
    stream = client.stream(info.session_id)
    pose = Pose.from_canonical(np.eye(4), convention)
    stream.send_observation(Observation(pose, rgb, depth, instance_ids=ids, return_frame=True, sequence=1))
    stream.next_frame()
    stream.close()
    return info, pose


@pytest.mark.parametrize("convention", [Convention.OPENCV, Convention.UNREAL])
def test_pick_through_a_pixel_and_along_a_world_ray_agree(client, convention):
    info, pose = observed_session(client, convention)
    upm = default_units_per_meter(convention)
    centre = client.pick(info.session_id, pose=pose, pixel=(31.5, 31.5), max_hits=4)
    (box,) = centre.hits  # the wall behind the box was never seen
    assert box.distance == pytest.approx(BOX_DEPTH * upm, rel=0.02)
    assert box.object_id == BOX_ID and box.provenance is Provenance.OBSERVED and box.rgb == (200, 40, 40)
    assert box.first_seen_frame == 0 and box.hit_count >= 1 and 0 < box.radius < 0.05 * upm
    expected = canonical_point_to_engine(convention, (0.0, 0.0, BOX_DEPTH), upm)
    np.testing.assert_allclose(box.point, expected, atol=0.03 * upm)
    along = client.pick(info.session_id, origin=pose.position, direction=engine_vec(convention, (0, 0, 2.0)))
    assert (
        along.hits[0].distance == pytest.approx(box.distance, rel=0.01) and along.hits[0].object_id == BOX_ID
    )
    # a corner pixel meets the wall, farther along its slanted ray than the wall's planar depth
    corner = client.pick(info.session_id, pose=pose, pixel=(2, 2))
    (wall,) = corner.hits
    k = K64
    slant = math.sqrt(1 + ((2 - k.cx) / k.fx) ** 2 + ((2 - k.cy) / k.fy) ** 2)
    assert wall.distance == pytest.approx(WALL_DEPTH * slant * upm, rel=0.02) and wall.object_id == 0
    # a range that stops short of the box finds nothing; one that starts beyond it finds nothing either
    assert client.pick(info.session_id, pose=pose, pixel=(32, 32), max_distance=1.5 * upm).hits == ()
    assert client.pick(info.session_id, pose=pose, pixel=(32, 32), min_distance=2.0 * upm).hits == ()
    behind = client.pick(info.session_id, origin=pose.position, direction=engine_vec(convention, (0, 0, -1)))
    assert behind.hits == () and behind.environment_rgb is None
    client.close_session(info.session_id)


@pytest.mark.parametrize("convention", [Convention.OPENCV, Convention.UNREAL])
def test_box_lists_the_points_and_the_object_inside(client, convention):
    info, _ = observed_session(client, convention)
    upm = default_units_per_meter(convention)
    h = BOX_HALF + 0.1
    corners = [canonical_point_to_engine(convention, c, upm) for c in ((-h, -h, 1.7), (h, h, 1.9))]
    lo, hi = np.minimum(*corners), np.maximum(*corners)
    contents = client.box(info.session_id, tuple(lo), tuple(hi))
    assert contents.inside > 300 and contents.xyz.shape == (contents.inside, 3)
    assert ((contents.xyz >= lo - 1e-3 * upm) & (contents.xyz <= hi + 1e-3 * upm)).all()
    assert (contents.object_ids == BOX_ID).all() and (contents.provenance == 1).all()
    assert (contents.rgb == (200, 40, 40)).all() and (contents.last_seen_frames == 0).all()
    (obj,) = contents.objects
    assert obj.object_id == BOX_ID and obj.points == contents.inside and obj.last_seen_frame == 0
    extent = np.subtract(obj.max, obj.min)
    assert sorted(extent / upm)[1:] == pytest.approx([2 * BOX_HALF] * 2, abs=0.08)  # the face, seen square-on
    capped = client.box(info.session_id, tuple(lo), tuple(hi), max_points=10)
    assert (
        capped.inside == contents.inside
        and capped.xyz.shape == (10, 3)
        and capped.objects == contents.objects
    )
    counted = client.box(info.session_id, tuple(lo), tuple(hi), max_points=0)
    assert counted.inside == contents.inside and counted.xyz.shape == (0, 3)
    everything = client.box(info.session_id, (-1e4,) * 3, (1e4,) * 3, max_points=0)
    assert everything.inside == client.stats(info.session_id).points
    client.close_session(info.session_id)


def test_render_carries_object_ids_provenance_and_confidence(client):
    info, pose = observed_session(client)
    view = client.render(info.session_id, pose)
    rgb, depth = synthetic_rgbd()
    np.testing.assert_array_equal(view.object_ids == BOX_ID, np.isclose(depth, BOX_DEPTH))
    assert view.object_ids.dtype == np.uint32 and (view.provenance == 1).all()
    assert view.confidence.shape == (64, 64) and (view.confidence > 0).all() and view.confidence.max() <= 1
    client.close_session(info.session_id)


BAD_PICKS = [
    (dict(pixel=(32, 32)), "pose and pixel"),  # a client-side refusal: no pose
    (dict(pixel=(64.5, 3)), "outside the 64x64 image"),
    (dict(pixel=(math.nan, 3)), "finite pixel"),
    (dict(origin=(0, 0, 0), direction=(0, 0, 0)), "direction is zero"),
    (dict(origin=(math.nan, 0, 0), direction=(0, 0, 1)), "non-finite"),
    (dict(origin=(1e9, 0, 0), direction=(0, 0, 1)), "from the origin"),
    (dict(origin=(0, 0, 0), direction=(0, 0, 1), max_hits=17), "1 to 16"),
    (dict(origin=(0, 0, 0), direction=(0, 0, 1), min_distance=-1.0), "min_distance"),
    (dict(origin=(0, 0, 0), direction=(0, 0, 1), min_distance=5.0, max_distance=4.0), "not beyond"),
    (dict(origin=(0, 0, 0), direction=(0, 0, 1), max_distance=math.inf), "max_distance"),
]


def test_bad_queries_are_refused_with_a_message_and_change_nothing(client):
    info, pose = observed_session(client)
    sid = info.session_id
    before, view = client.stats(sid), client.render(sid, pose)
    for ray, needle in BAD_PICKS:
        if "pixel" in ray and "pose and pixel" not in needle:
            ray = {**ray, "pose": pose}
        error = ValueError if needle == "pose and pixel" else InvalidArgumentError
        with pytest.raises(error, match=needle):
            client.pick(sid, **ray)
    for lo, hi, cap, needle in [
        ((1, 0, 0), (0, 1, 1), None, "exceeds box.max"),
        ((0, 0, math.nan), (1, 1, 1), None, "non-finite"),
        ((0, 0, 0), (1, 1, 1), 10**9, "at most"),
    ]:
        with pytest.raises(InvalidArgumentError, match=needle):
            client.box(sid, lo, hi, max_points=cap)
    inner = client._client
    from mirage.v1 import mirage_pb2 as pb

    for query, needle in [
        (pb.PickQuery(), "needs a ray"),
        (pb.PickQuery(pixel=pb.PixelRay(u=3, v=3)), "pose is required"),
    ]:
        request = pb.SpatialMemoryQueryRequest(session_id=sid, pick=query)
        with pytest.raises(InvalidArgumentError, match=needle):
            client._loop.run(inner._call(inner.stub.SpatialMemoryQuery, request))
    with pytest.raises(NotFoundError):
        client.pick("no-such-session", origin=(0, 0, 0), direction=(0, 0, 1))
    assert client.stats(sid) == before
    np.testing.assert_array_equal(client.render(sid, pose).rgb, view.rgb)
    assert client.pick(sid, pose=pose, pixel=(32, 32)).hits[0].object_id == BOX_ID  # still answers
    client.close_session(sid)

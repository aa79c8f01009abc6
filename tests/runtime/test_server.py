"""Integration tests: the real server on port 0, the real client, real status codes."""

from __future__ import annotations

import math
import time

import grpc
import numpy as np
import pytest
from conftest import make_config, start_server_thread, synthetic_rgbd
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from mirage.v1 import mirage_pb2 as pb

from plugin_bridge.camera import Intrinsics
from plugin_bridge.client import (
    FailedPreconditionError,
    InvalidArgumentError,
    MirageClient,
    NotFoundError,
    ResourceExhaustedError,
)
from plugin_bridge.conventions import Convention, canonical_to_engine_matrix, look_at
from plugin_bridge.types import Observation, Pose, StreamEnd
from plugin_bridge.wire import observation_to_proto, open_session_request

K64 = Intrinsics.from_fov(64, 64, 60.0)
IDENTITY = Pose((0, 0, 0), (1, 0, 0, 0))


@pytest.fixture
def client(mirage_server):
    with MirageClient(mirage_server.target) as c:
        yield c


@pytest.fixture
def session(client):
    info = client.open_session(K64, seed=1)
    yield info
    try:
        client.close_session(info.session_id)
    except NotFoundError:
        pass


def send_raw_observation(stream, message: pb.Observation) -> None:
    """A hand-made (malformed) message: the wire-level cases a correct client never sends."""
    stream._loop.run(stream._stream._send(observation=message))


def raw_open_session(client, request: pb.OpenSessionRequest):
    inner = client._client
    return client._loop.run(inner._call(inner.stub.OpenSession, request))


def observe(client, session_id, rgb, depth, pose=IDENTITY, sequence=1):
    stream = client.stream(session_id)
    stream.send_observation(Observation(pose, rgb, depth, return_frame=True, sequence=sequence))
    frame = stream.next_frame()
    stream.close()
    return frame, stream.events


def test_health_serving_and_reflection_lists_mirage(mirage_server):
    with grpc.insecure_channel(mirage_server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "mirage.v1.Mirage"):
            resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = list(
            stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        )
        names = {s.name for s in responses[0].list_services_response.service}
        assert "mirage.v1.Mirage" in names and "grpc.health.v1.Health" in names


def test_handshake_reports_generator_and_budget(client):
    info = client.open_session(K64)
    assert info.server_version.startswith("1.")
    assert info.generator.name == "learned_v2_int8" and len(info.generator.sha256) == 64
    assert info.memory.budget_bytes == 128 * 2**20 and info.memory.points == 0
    assert "observation" in info.capabilities
    client.close_session(info.session_id)


def test_stream_poses_echo_sequence_and_timestamps(client, session):
    rgb, depth = synthetic_rgbd()
    observe(client, session.session_id, rgb, depth)
    stream = client.stream(session.session_id)
    for seq, ts in ((7, 111), (8, 222)):
        stream.send_pose(IDENTITY, sequence=seq, timestamp_us=ts)
        frame = stream.next_frame()
        assert frame.sequence == seq and frame.client_timestamp_us == ts
        assert frame.server_received_us > 0 and frame.server_sent_us >= frame.server_received_us
        assert frame.rgb.shape == (64, 64, 3) and frame.rgb.dtype == np.uint8
        assert frame.coverage > 0.99  # the observation covers this pose
        assert frame.memory.points > 0 and frame.memory.bytes_used <= frame.memory.budget_bytes
        assert frame.timings_ms["total_ms"] > 0
        np.testing.assert_array_equal(frame.rgb, rgb)  # memory reproduces what was observed here
    end = stream.close()
    assert end is not None and end.frames_sent == 2


def test_observation_then_render_query_and_stats(client, session):
    rgb, depth = synthetic_rgbd(seed=3)
    frame, _ = observe(client, session.session_id, rgb, depth)
    assert frame.observed
    view = client.render(session.session_id, IDENTITY)
    np.testing.assert_array_equal(view.rgb, rgb)
    assert view.coverage_fraction > 0.99
    np.testing.assert_allclose(view.depth, depth, rtol=2e-3)
    stats = client.stats(session.session_id)
    assert stats.points >= 64 * 64 * 0.9 and stats.frames_ingested == 1


def test_contextual_inference_what_if_leaves_memory_unchanged(client, session):
    rgb, depth = synthetic_rgbd()
    observe(client, session.session_id, rgb, depth)
    before = client.stats(session.session_id)
    turned = Pose.from_canonical(look_at((0, 0, 0), (1.0, 0.0, 3.0), up=(0, -1, 0)))
    frame = client.contextual_inference(session.session_id, turned, commit=False)
    assert frame.rgb.shape == (64, 64, 3) and 0.0 < frame.coverage < 1.0
    assert client.stats(session.session_id) == before
    client.contextual_inference(session.session_id, turned, commit=True)
    after = client.stats(session.session_id)
    assert after.points > before.points


def test_poses_are_converted_from_the_declared_convention(client):
    """The same physical cameras, one session in OpenCV and one in Unity, give identical renders."""
    rgb, depth = synthetic_rgbd(seed=5)
    eye = look_at((0.2, -0.1, 0.0), (0.0, 0.0, 3.0), up=(0, -1, 0))
    renders = []
    for convention in (Convention.OPENCV, Convention.UNITY, Convention.UNREAL):
        info = client.open_session(K64, convention=convention)
        observe(client, info.session_id, rgb, depth, pose=Pose.from_canonical(np.eye(4), convention))
        renders.append(client.render(info.session_id, Pose.from_canonical(eye, convention)).rgb)
        client.close_session(info.session_id)
    np.testing.assert_array_equal(renders[0], renders[1])
    np.testing.assert_array_equal(renders[0], renders[2])


# -- bad input ---------------------------------------------------------------------------------


def test_major_version_mismatch_fails_with_both_versions(client):
    with pytest.raises(FailedPreconditionError) as err:
        client.open_session(K64, protocol_version=(2, 0, 0))
    assert "2.0.0" in err.value.details and "1.1.0" in err.value.details and "upgrade" in err.value.details


def test_minor_version_mismatch_warns(client):
    info = client.open_session(K64, protocol_version=(1, 4, 0))
    assert any("minor" in w for w in info.warnings)
    client.close_session(info.session_id)


@pytest.mark.parametrize(
    "intrinsics, needle",
    [
        (Intrinsics(0.0, 0.0, 31.5, 31.5, 64, 64), "fx"),
        (Intrinsics(-50.0, 50.0, 31.5, 31.5, 64, 64), "fx"),
        (Intrinsics(1e9, 1e9, 31.5, 31.5, 64, 64), "fx"),
        (Intrinsics(55.0, 55.0, 500.0, 31.5, 64, 64), "principal point"),
        (Intrinsics(55.0, 55.0, 31.5, 31.5, 0, 64), "positive"),
        (Intrinsics(55.0, 55.0, 31.5, 31.5, 63, 64), "multiples of 8"),
        (Intrinsics(float("nan"), 55.0, 31.5, 31.5, 64, 64), "finite"),
    ],
)
def test_bad_intrinsics_are_rejected(client, intrinsics, needle):
    with pytest.raises(InvalidArgumentError) as err:
        client.open_session(intrinsics)
    assert needle in err.value.details


def test_unknown_generator_and_absurd_budget(client):
    with pytest.raises(NotFoundError, match="pushpull_v1"):
        client.open_session(K64, generator="no_such_model")
    with pytest.raises(ResourceExhaustedError):
        client.open_session(K64, budget_bytes=2**50)


@pytest.mark.parametrize(
    "pose, needle",
    [
        (Pose((math.nan, 0, 0), (1, 0, 0, 0)), "position"),
        (Pose((0, math.inf, 0), (1, 0, 0, 0)), "position"),
        (Pose((0, 0, 0), (math.nan, 0, 0, 0)), "rotation"),
        (Pose((0, 0, 0), (2, 0, 0, 0)), "unit quaternion"),
        (Pose((0, 0, 0), (0, 0, 0, 0)), "unit quaternion"),
        (Pose((1e99, 0, 0), (1, 0, 0, 0)), "from the origin"),  # finite, but no world is that big
        (Pose((0, 1e300, -1e300), (1, 0, 0, 0)), "from the origin"),
        (Pose((0, 0, 2.0e5), (1, 0, 0, 0)), "within 100000 m"),
    ],
)
def test_bad_pose_rejected_and_session_unharmed(client, session, pose, needle):
    rgb, depth = synthetic_rgbd()
    observe(client, session.session_id, rgb, depth)
    before = client.stats(session.session_id)
    stream = client.stream(session.session_id)
    stream.send_pose(pose)
    with pytest.raises(InvalidArgumentError) as err:
        stream.next_frame()
    assert needle in err.value.details
    stream.cancel()
    assert client.stats(session.session_id) == before
    with pytest.raises(InvalidArgumentError):
        client.render(session.session_id, pose)
    # the session still works on a new stream and the memory is intact
    stream = client.stream(session.session_id)
    frame = stream.step(IDENTITY)
    np.testing.assert_array_equal(frame.rgb, rgb)
    stream.close()


def test_rejected_message_keeps_a_release_on_disconnect_session(client):
    info = client.open_session(K64, release_on_disconnect=True)
    stream = client.stream(info.session_id)
    stream.send_pose(Pose((0, 0, 0), (3, 0, 0, 0)))
    with pytest.raises(InvalidArgumentError):
        stream.next_frame()
    assert client.stats(info.session_id).points == 0  # still there: a bad message is not a disconnect
    client.close_session(info.session_id)


def test_frame_bytes_that_do_not_match_are_rejected(client, session):
    rgb, depth = synthetic_rgbd()
    bad = observation_to_proto(Observation(IDENTITY, rgb, depth), 1)
    bad.rgb.data = bad.rgb.data[:-10]
    stream = client.stream(session.session_id)
    send_raw_observation(stream, bad)
    with pytest.raises(InvalidArgumentError, match="bytes"):
        stream.next_frame()
    stream.cancel()

    wrong_size = Observation(IDENTITY, *synthetic_rgbd(32, 32), sequence=2)
    stream = client.stream(session.session_id)
    stream.send_observation(wrong_size)
    with pytest.raises(InvalidArgumentError, match="64x64"):
        stream.next_frame()
    stream.cancel()

    garbage_png = observation_to_proto(Observation(IDENTITY, rgb, depth), 3)
    garbage_png.rgb.encoding = pb.FRAME_ENCODING_PNG
    stream = client.stream(session.session_id)
    send_raw_observation(stream, garbage_png)
    with pytest.raises(InvalidArgumentError):
        stream.next_frame()
    stream.cancel()
    assert client.stats(session.session_id).points == 0


def test_nan_and_negative_depth_are_masked_with_an_event(client, session):
    rgb, depth = synthetic_rgbd()
    depth[:8] = np.nan
    depth[8:16] = -1.0
    frame, events = observe(client, session.session_id, rgb, depth)
    masked = [e for e in events if e.kind == "DEPTH_MASKED"]
    assert masked and "1024" in masked[0].message
    stats = client.stats(session.session_id)
    assert 0 < stats.points <= 64 * 48  # the masked rows added nothing


def test_calls_before_handshake_and_on_unknown_or_closed_sessions(client):
    with pytest.raises(FailedPreconditionError, match="OpenSession"):
        client.stats("")
    stream = client.stream("")
    stream.send_pose(IDENTITY)
    with pytest.raises(FailedPreconditionError, match="OpenSession"):
        stream.next_frame()
    with pytest.raises(NotFoundError):
        client.stats("not-a-session")
    info = client.open_session(K64)
    client.close_session(info.session_id)
    with pytest.raises(NotFoundError):
        client.render(info.session_id, IDENTITY)
    stream = client.stream(info.session_id)
    stream.send_pose(IDENTITY)
    with pytest.raises(NotFoundError):
        stream.next_frame()


def test_second_stream_on_a_session_is_refused(client, session):
    first = client.stream(session.session_id)
    first.step(IDENTITY)
    second = client.stream(session.session_id)
    second.send_pose(IDENTITY)
    with pytest.raises(FailedPreconditionError, match="active Stream"):
        second.next_frame()
    first.close()


def test_oversize_message_is_resource_exhausted():
    running, stop = start_server_thread(make_config(max_message_bytes=256 * 1024))
    try:
        with MirageClient(running.target, max_message_bytes=64 * 2**20) as client:
            k = Intrinsics.from_fov(256, 256, 60.0)
            info = client.open_session(k)
            rgb, depth = synthetic_rgbd(256, 256)
            stream = client.stream(info.session_id)
            stream.send_observation(Observation(IDENTITY, rgb, depth, sequence=1))  # ~320 KB
            with pytest.raises(ResourceExhaustedError):
                stream.next_frame()
            assert client.stats(info.session_id).points == 0  # server and session still answer
    finally:
        stop()


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_disconnect_mid_stream_releases_or_keeps_per_setting(client, mirage_server):
    registry = mirage_server.registry
    for release in (True, False):
        info = client.open_session(K64, release_on_disconnect=release)
        stream = client.stream(info.session_id)
        stream.step(IDENTITY)
        stream.cancel()  # the client vanishes without EndOfStream
        sid = info.session_id
        assert _wait_for(lambda sid=sid: sid not in registry or not registry.get(sid).streaming)
        if release:
            assert _wait_for(lambda sid=sid: sid not in registry)
            with pytest.raises(NotFoundError):
                client.stats(info.session_id)
        else:
            assert client.stats(info.session_id).frames_ingested == 1
            client.close_session(info.session_id)


def test_latest_wins_drops_stale_poses_and_reports_them(client, session):
    rgb, depth = synthetic_rgbd()
    observe(client, session.session_id, rgb, depth)
    stream = client.stream(session.session_id)
    sent = [stream.send_pose(IDENTITY) for _ in range(30)]
    stream.end()
    frames, dropped = [], []
    while (item := stream.recv()) is not None:
        if isinstance(item, StreamEnd):
            assert item.frames_sent == len(frames) and item.poses_dropped == len(dropped)
        elif hasattr(item, "rgb"):
            frames.append(item.sequence)
        else:
            assert item.kind == "POSES_DROPPED"
            dropped.extend(item.sequences)
    assert dropped, "30 poses sent at once should outrun the generator"
    assert sorted(frames + dropped) == sent
    assert frames[-1] == sent[-1]  # the latest pose is always answered
    assert frames == sorted(frames)


def test_stats_on_the_wire_carry_every_memory_figure(client, session, mirage_server):
    import dataclasses

    rgb, depth = synthetic_rgbd(seed=5)
    observe(client, session.session_id, rgb, depth)
    wire_stats = dataclasses.asdict(client.stats(session.session_id))
    domain = dataclasses.asdict(mirage_server.registry.get(session.session_id).stats())
    assert wire_stats == domain and domain["points"] > 0


def test_quantised_storage_is_chosen_per_session_and_reported(client):
    info = client.open_session(K64, storage="quantised", budget_bytes=8 * 2**20)
    try:
        rgb, depth = synthetic_rgbd(seed=5)
        frame, _ = observe(client, info.session_id, rgb, depth)
        assert frame.memory.storage == "quantised" and frame.memory.points > 0
        assert frame.memory.bytes_used <= 8 * 2**20
    finally:
        client.close_session(info.session_id)
    with pytest.raises(InvalidArgumentError, match="window_frames 0"):
        client.open_session(K64, storage="quantised", window_frames=30)
    request = open_session_request(K64)
    request.memory.storage = 7  # not a MemoryStorage value (a newer or broken client)
    with pytest.raises(InvalidArgumentError, match="MemoryStorage"):
        raw_open_session(client, request)


def test_an_engines_own_opengl_matrix_reaches_the_right_view(client):
    """An OpenGL session sends `Pose.from_matrix` of OpenGL's own camera-to-world: the render there is
    the observation made there (a canonical matrix read as OpenGL would look elsewhere)."""
    canonical = look_at((0.0, 0.0, 0.0), (0.3, 0.2, 3.0), up=(0, -1, 0))
    gl = canonical_to_engine_matrix("opengl", canonical)
    info = client.open_session(K64, convention="opengl")
    try:
        rgb, depth = synthetic_rgbd()
        observe(client, info.session_id, rgb, depth, pose=Pose.from_matrix(gl, "opengl"))
        right = client.render(info.session_id, Pose.from_matrix(gl, "opengl"))
        wrong = client.render(info.session_id, Pose.from_matrix(canonical, "opengl"))
        assert right.coverage_fraction > 0.99 and np.array_equal(right.rgb, rgb)
        assert wrong.coverage_fraction < 0.5
    finally:
        client.close_session(info.session_id)


def test_half_pixel_principal_point_gets_a_handshake_warning(client):
    k = Intrinsics(fx=55.4, fy=55.4, cx=32.0, cy=32.0, width=64, height=64)
    info = client.open_session(k)
    try:
        assert any("pixel centres at integers" in w and "31.5" in w for w in info.warnings)
        assert not any("pixel centres" in w for w in client.open_session(K64).warnings)
    finally:
        client.close_session(info.session_id)


def test_depth_at_a_far_plane_gets_an_event_and_far_plane_sends_it_as_infinity(client, session):
    rgb, depth = synthetic_rgbd()
    depth[:24] = 40.0  # an engine that clears depth to its far plane
    _, events = observe(client, session.session_id, rgb, depth)
    warning = [e for e in events if e.kind == "WARNING"]
    assert warning and "40 m" in warning[0].message and "far_plane" in warning[0].message
    stream = client.stream(session.session_id)  # once a stream, not every frame
    for sequence in (3, 4):
        stream.send_observation(Observation(IDENTITY, rgb, depth, return_frame=True, sequence=sequence))
        stream.next_frame()
    stream.close()
    assert len([e for e in stream.events if e.kind == "WARNING"]) == 1
    stream = client.stream(session.session_id)
    stream.send_observation(Observation(IDENTITY, rgb, depth, far_plane=40.0, return_frame=True, sequence=2))
    frame = stream.next_frame()
    stream.close()
    assert not [e for e in stream.events if e.kind == "WARNING"]
    assert np.isinf(frame.depth[:24]).all() and frame.memory.environment_texels > 0


def test_a_negative_instance_id_sent_as_uint32_is_invalid_argument(client, session):
    rgb, depth = synthetic_rgbd()
    msg = observation_to_proto(Observation(IDENTITY, rgb, depth), 1)
    msg.instance_ids = np.full((64, 64), 0xFFFFFFFF, dtype="<u4").tobytes()
    stream = client.stream(session.session_id)
    send_raw_observation(stream, msg)
    with pytest.raises(InvalidArgumentError, match="negative id sent as uint32"):
        stream.next_frame()
    stream.cancel()
    assert client.stats(session.session_id).points == 0


@pytest.mark.parametrize("units", [1e-300, 1e-4, 1e7, 1e300])
def test_units_per_meter_out_of_range_is_rejected(client, units):
    """A scale that would turn ordinary engine poses into astronomic (or vanishing) metres is refused
    at the handshake, with the range in the message; in range, a far but valid pose still works."""
    with pytest.raises(InvalidArgumentError, match=r"units_per_meter .* is outside 0.001\.\.1e\+06"):
        client.open_session(K64, units_per_meter=units)
    info = client.open_session(K64, units_per_meter=100.0)  # centimetres: 99 km is allowed
    rgb, depth = synthetic_rgbd()
    observe(client, info.session_id, rgb, depth)  # memory with points and keyframes (depth is in metres)
    stream = client.stream(info.session_id)
    assert stream.step(Pose((0, 0, 9.9e6), (1, 0, 0, 0))).rgb.shape == (64, 64, 3)
    assert stream.step(Pose((-9.9e6, 0, 0), (1, 0, 0, 0))).rgb.shape == (64, 64, 3)
    stream.send_pose(Pose((0, 0, 1.1e7), (1, 0, 0, 0)))  # 110 km
    with pytest.raises(InvalidArgumentError, match=r"1\.1e\+05 m from the origin"):
        stream.next_frame()
    stream.cancel()
    stream = client.stream(info.session_id)  # and the session goes on, its memory where it was
    np.testing.assert_array_equal(stream.step(IDENTITY).rgb, rgb)
    stream.close()
    client.close_session(info.session_id)

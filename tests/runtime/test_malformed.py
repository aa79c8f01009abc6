"""Bytes that are not the RPC's message: INVALID_ARGUMENT on every RPC, the session unharmed, and a
log of bounded size without tracebacks (`runtime.malformed`). The real server on port 0."""

from __future__ import annotations

import logging

import grpc
import pytest
from mirage.v1 import mirage_pb2 as pb

from plugin_bridge.camera import Intrinsics
from plugin_bridge.client import MirageClient
from plugin_bridge.types import Pose
from runtime import malformed
from runtime.malformed import RateLimitedLog

K32 = Intrinsics.from_fov(32, 32, 60.0)
IDENTITY = Pose((0, 0, 0), (1, 0, 0, 0))
GARBAGE = b"\xff\xff\xff\x01 not a protobuf message"
UNARY = ("OpenSession", "CloseSession", "SpatialMemoryQuery", "ContextualInference")


def _raw(channel, method: str, streaming: bool = False):
    kind = channel.stream_stream if streaming else channel.unary_unary
    return kind(f"/mirage.v1.Mirage/{method}", request_serializer=bytes, response_deserializer=bytes)


def _pose_message(session_id: str, sequence: int) -> bytes:
    pose = pb.PoseRequest(
        pose=pb.Pose(position=pb.Vec3(x=0, y=0, z=0), rotation=pb.Quaternion(w=1, x=0, y=0, z=0)),
        sequence=sequence,
    )
    return pb.ClientMessage(session_id=session_id, pose=pose).SerializeToString()


@pytest.mark.parametrize("method", UNARY)
def test_unparseable_unary_requests_are_invalid_argument(mirage_server, method):
    with grpc.insecure_channel(mirage_server.target) as channel:
        with pytest.raises(grpc.RpcError) as err:
            _raw(channel, method)(GARBAGE, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"not a valid mirage.v1.{method}Request" in err.value.details()
    with MirageClient(mirage_server.target) as client:  # the server goes on
        client.close_session(client.open_session(K32).session_id)


def test_an_unparseable_stream_message_ends_the_stream_and_spares_the_session(mirage_server):
    with MirageClient(mirage_server.target) as client:
        info = client.open_session(K32)
        before = client.stats(info.session_id)
        with grpc.insecure_channel(mirage_server.target) as channel:
            replies = _raw(channel, "Stream", streaming=True)(iter([GARBAGE]), timeout=30)
            with pytest.raises(grpc.RpcError) as err:
                list(replies)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "not a valid mirage.v1.ClientMessage" in err.value.details()
            # a good pose first: its frame comes back, then the bad bytes end the stream
            replies = _raw(channel, "Stream", streaming=True)(
                iter([_pose_message(info.session_id, 1), GARBAGE]), timeout=60
            )
            got = []
            with pytest.raises(grpc.RpcError) as err:
                for reply in replies:
                    got.append(pb.ServerMessage.FromString(reply))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert any(m.HasField("frame") for m in got)
        assert (
            client.stats(info.session_id).frames_ingested == before.frames_ingested + 1
        )  # just the good pose
        stream = client.stream(info.session_id)  # the session is not held by the broken stream
        assert stream.step(IDENTITY).rgb.shape == (32, 32, 3)
        stream.close()
        client.close_session(info.session_id)


def test_a_flood_of_bad_messages_writes_a_bounded_log_without_tracebacks(mirage_server, caplog, monkeypatch):
    monkeypatch.setattr(
        malformed, "REJECTIONS", RateLimitedLog(logging.getLogger("mirage.server"))
    )  # a fresh interval
    with caplog.at_level(logging.WARNING), grpc.insecure_channel(mirage_server.target) as channel:
        call = _raw(channel, "SpatialMemoryQuery")
        for _ in range(300):
            with pytest.raises(grpc.RpcError):
                call(GARBAGE, timeout=30)
    lines = [r for r in caplog.records if r.name.startswith(("mirage", "grpc"))]
    assert 1 <= len(lines) <= 12, len(lines)  # 300 rejections, a few lines
    assert not any(r.exc_info for r in lines)
    assert all("Traceback" not in r.getMessage() for r in lines)


def test_rate_limited_log_counts_what_it_leaves_out(caplog):
    logger = logging.getLogger("mirage.test.ratelimit")
    limited = RateLimitedLog(logger, per_interval=3, interval_s=3600.0)
    with caplog.at_level(logging.WARNING, logger="mirage.test.ratelimit"):
        written = [limited.warning("line %d", i) for i in range(10)]
    assert written == [True] * 3 + [False] * 7
    assert limited.suppressed == 7
    assert [r.getMessage() for r in caplog.records] == ["line 0", "line 1", "line 2"]
    limited.interval_s = 0.0  # a new interval: the count of what was left out comes first
    with caplog.at_level(logging.WARNING, logger="mirage.test.ratelimit"):
        assert limited.warning("after")
    assert caplog.records[-2].getMessage().startswith("7 similar line(s) left out")

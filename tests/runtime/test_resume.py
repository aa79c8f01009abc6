"""Durable checkpoints: kill -9 a real `mirage serve`, restart it on the same directory, resume by id.

The server runs as a subprocess (so that it can be killed without a word); the client is the real SDK.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import make_config, start_server_thread, synthetic_rgbd

from plugin_bridge.camera import Intrinsics
from plugin_bridge.client import (
    FailedPreconditionError,
    MirageClient,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)
from plugin_bridge.types import Observation, Pose, StreamEnd
from runtime.sealing import write_key_file

K48 = Intrinsics.from_fov(48, 48, 60.0)
ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-fedcba9876543210xyz"
EVERY = 10


def yaw(angle: float) -> Pose:
    return Pose((0.0, 0.0, 0.0), (math.cos(angle / 2), 0.0, math.sin(angle / 2), 0.0))


@pytest.fixture
def files(tmp_path):
    keys = tmp_path / "memory.keys"
    write_key_file(keys)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice {ALICE}\nbob {BOB}\n")
    os.chmod(tokens, 0o600)
    return {"keys": str(keys), "tokens": str(tokens), "dir": str(tmp_path / "checkpoints")}


class Served:
    """`python -m runtime serve` on a free port, with durable checkpoints."""

    def __init__(self, files):
        args = [
            sys.executable, "-m", "runtime", "serve", "--port", "0", "--memory-key-file", files["keys"],
            "--token-file", files["tokens"], "--checkpoint-dir", files["dir"], "--checkpoint-every", str(EVERY),
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            found = re.search(r"on 127\.0\.0\.1:(\d+)", line)
            if found:
                self.target = f"127.0.0.1:{found.group(1)}"
                return
            if not line and self.proc.poll() is not None:
                break
        self.proc.kill()
        raise RuntimeError("mirage serve did not start")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)


def _frames(client, session_id, start: int, count: int) -> None:
    stream = client.stream(session_id)
    for i in range(start, start + count):
        if i < 3:
            rgb, depth = synthetic_rgbd(48, 48, seed=i)
            stream.send_observation(Observation(yaw(0.05 * i), rgb, depth, return_frame=True, sequence=i + 1))
            stream.next_frame()
        else:
            stream.step(yaw(0.08 * i))
    stream.close()


def _checkpointed_at(files, session_id, frame: int) -> None:
    """Wait until the session's durable checkpoint (written in the background) is the one of ``frame``."""
    from plugin_bridge.exports import load_export

    path = os.path.join(files["dir"], f"{session_id}.sealed")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if load_export(path).header["session"]["frame_index"] == frame:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint of frame {frame} appeared")


def _view(client, session_id):
    views = [client.render(session_id, yaw(a)) for a in (0.0, 0.5, 1.2)]
    return [(v.rgb.tobytes(), v.depth.tobytes()) for v in views]


def test_kill_9_then_resume_loses_at_most_the_frames_since_the_checkpoint(files):
    served = Served(files)
    try:
        with MirageClient(served.target, token=ALICE) as alice:
            sid = alice.open_session(K48).session_id
            _frames(alice, sid, 0, 2 * EVERY)  # checkpoints at frames 10 and 20
            at_20 = _view(alice, sid), alice.stats(sid)
            _checkpointed_at(files, sid, 2 * EVERY)
            _frames(alice, sid, 2 * EVERY, 5)  # 5 frames past the last checkpoint
            assert alice.stats(sid).frames_ingested == 25
    finally:
        served.kill()
    served = Served(files)
    try:
        with MirageClient(served.target, token=BOB) as bob:
            with pytest.raises(PermissionDeniedError, match="another principal"):
                bob.open_session(K48, resume_session_id=sid)
        with MirageClient(served.target, token=ALICE) as alice:
            info = alice.open_session(K48, resume_session_id=sid)
            assert info.session_id == sid and any("frame 20" in w for w in info.warnings)
            stats = alice.stats(sid)
            assert _view(alice, sid) == at_20[0]  # exactly the memory of frame 20
            assert stats.points == at_20[1].points and stats.frames_ingested == 20  # 5 frames lost, <= EVERY
            with pytest.raises(FailedPreconditionError, match="open already"):
                alice.open_session(K48, resume_session_id=sid)
            _frames(alice, sid, 20, 3)  # and it goes on
            assert alice.stats(sid).frames_ingested == 23
            with pytest.raises(NotFoundError, match="no checkpoint of session"):
                alice.open_session(K48, resume_session_id="0" * 32)
            alice.close_session(sid)  # closing deletes its checkpoint
            with pytest.raises(NotFoundError, match="no checkpoint of session"):
                alice.open_session(K48, resume_session_id=sid)
    finally:
        served.kill()


def test_a_corrupt_checkpoint_is_refused_and_never_loaded(files):
    served = Served(files)
    try:
        with MirageClient(served.target, token=ALICE) as alice:
            sid = alice.open_session(K48).session_id
            _frames(alice, sid, 0, EVERY)
            _checkpointed_at(files, sid, EVERY)
    finally:
        served.kill()
    path = os.path.join(files["dir"], f"{sid}.sealed")
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x01
    with open(path, "wb") as f:
        f.write(bytes(data))
    served = Served(files)
    try:
        with MirageClient(served.target, token=ALICE) as alice:
            with pytest.raises(FailedPreconditionError, match="refused.*failed authentication.*not loaded"):
                alice.open_session(K48, resume_session_id=sid)
            fresh = alice.open_session(K48)  # the server is unharmed
            alice.close_session(fresh.session_id)
    finally:
        served.kill()


def test_a_server_without_checkpoints_says_how_to_get_them():
    running, stop = start_server_thread(make_config())
    try:
        with MirageClient(running.target) as client:
            with pytest.raises(FailedPreconditionError, match="--checkpoint-dir"):
                client.open_session(K48, resume_session_id="0" * 32)
    finally:
        stop()


def test_checkpoint_dir_needs_a_memory_key(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "runtime", "serve", "--port", "0", "--checkpoint-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "--memory-key-file" in proc.stderr and "Traceback" not in proc.stderr


def test_sigterm_ends_streams_checkpoints_and_resume_loses_nothing(files):
    served = Served(files)
    with MirageClient(served.target, token=ALICE) as alice:
        sid = alice.open_session(K48).session_id
        _frames(alice, sid, 0, 4)
        stream = alice.stream(sid)
        for i in range(4, 7):
            stream.step(yaw(0.08 * i))  # 7 frames: no periodic checkpoint yet (every 10)
        before = _view(alice, sid), alice.stats(sid)
        started = time.monotonic()
        served.proc.send_signal(signal.SIGTERM)
        items = []
        while (item := stream.recv()) is not None:
            items.append(item)
        assert isinstance(items[-1], StreamEnd) and items[-1].frames_sent == 3
        assert any("shutting down" in getattr(i, "message", "") for i in items[:-1])
        assert served.proc.wait(30) == 0 and time.monotonic() - started < 10
    output = served.proc.stdout.read()
    assert "1 session(s) checkpointed" in output and "Traceback" not in output
    served = Served(files)
    try:
        with MirageClient(served.target, token=ALICE) as alice:
            alice.open_session(K48, resume_session_id=sid)
            assert alice.stats(sid).frames_ingested == 7  # nothing lost
            assert _view(alice, sid) == before[0]
            alice.close_session(sid)
    finally:
        served.kill()


def test_a_stopping_server_refuses_new_sessions_and_says_not_serving():
    import asyncio

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from runtime.server import begin_shutdown

    running, stop = start_server_thread(make_config())
    try:
        with MirageClient(running.target) as client:
            sid = client.open_session(K48).session_id
            stream = client.stream(sid)
            stream.step(yaw(0.0))
            asyncio.run_coroutine_threadsafe(begin_shutdown(running.server), running.loop).result(10)
            with grpc.insecure_channel(running.target) as channel:
                status = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=10
                )
                assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(UnavailableError, match="shutting down"):
                client.open_session(K48)
            drained = asyncio.run_coroutine_threadsafe(
                running.server.mirage_servicer.drain(2.0), running.loop
            )
            end = None
            while (item := stream.recv()) is not None:
                end = item
            assert isinstance(end, StreamEnd) and end.frames_sent == 1
            assert drained.result(10) == 0  # no --checkpoint-dir: nothing to checkpoint
    finally:
        stop()

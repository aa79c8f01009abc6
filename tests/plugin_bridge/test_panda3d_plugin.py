"""The Panda3D plugin: the sample app headless against a real server on port 0 (the frames it shows are
the frames Mirage returned for the poses it sent, checked by replaying those poses), an engine that
does not wait on a slow network, observe and composite modes, and reconnection through a cut
connection and two server restarts."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import make_config, start_server_thread

pytest.importorskip("panda3d", reason="the Panda3D plugin needs panda3d (pip install -e .[train])")

from plugin_bridge.camera import Intrinsics  # noqa: E402
from plugin_bridge.client import MirageClient  # noqa: E402
from plugin_bridge.conventions import Convention  # noqa: E402
from plugin_bridge.panda3d_plugin import Link, Newest, PluginConfig, Request, intrinsics_from_lens  # noqa: E402
from plugin_bridge.types import Pose  # noqa: E402
from runtime.sealing import write_key_file  # noqa: E402


@pytest.fixture(scope="module")
def server():
    running, stop = start_server_thread(make_config())
    yield running
    stop()


def _sample(target: str, tmp_path, *extra: str) -> dict:
    log = tmp_path / "walk.json"
    cmd = [sys.executable, "-m", "plugin_bridge.samples.walk", "--headless", "--size", "64", "--target", target,
           "--log", str(log), *extra]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(log.read_text())


def test_lens_to_intrinsics_is_the_inverse_of_the_scene_source_lens():
    from panda3d.core import PerspectiveLens

    from runtime.scenes.panda_source import _set_lens

    for k in (Intrinsics.from_fov(64, 48, 60.0), Intrinsics(70.0, 52.0, 30.0, 26.5, 64, 48)):
        lens = PerspectiveLens()
        _set_lens(lens, k, 0.1, 100.0)
        got = intrinsics_from_lens(lens, k.width, k.height)
        assert np.allclose([got.fx, got.fy, got.cx, got.cy], [k.fx, k.fy, k.cx, k.cy], atol=1e-3)
    lens = PerspectiveLens()
    lens.setFov(60.0)
    lens.setAspectRatio(1.0)
    got, want = intrinsics_from_lens(lens, 64, 64), Intrinsics.from_fov(64, 64, 60.0)
    assert np.allclose([got.fx, got.fy, got.cx, got.cy], [want.fx, want.fy, want.cx, want.cy], atol=1e-3)


def test_the_newest_slot_hands_over_only_the_newest():
    slot = Newest()
    for i in range(5):
        slot.put(i)
    assert slot.take(0.01) == 4 and slot.replaced == 4
    assert slot.poll() is None and slot.take(0.01) is None


def test_the_sample_shows_the_frames_mirage_returned_for_its_poses(server, tmp_path):
    log = _sample(server.target, tmp_path, "--frames", "240")
    assert log["states"] == ["connected"] and log["mirage_frames_shown"] >= 60
    # what the window shows is the last frame the plugin put up (the status line covers a corner)
    assert log["screen_equal_fraction"] > 0.9
    shown = log["shown"]
    assert [s[1] for s in shown] == sorted(s[1] for s in shown)  # newest wins: never an older frame after
    # replay the poses the plugin sent, in order, in a fresh session with the same seed: the frames
    # must be bit for bit the ones shown (deterministic replay)
    k = Intrinsics(**log["intrinsics"])
    replayed = {}
    with MirageClient(server.target) as client:
        sid = client.open_session(k, convention=Convention.PANDA3D, seed=0).session_id
        stream = client.stream(sid)
        for sequence, position, rotation in log["sent"]:
            frame = stream.step(Pose(tuple(position), tuple(rotation)))
            replayed[sequence] = hashlib.sha256(np.ascontiguousarray(frame.rgb).tobytes()).hexdigest()
        stream.close()
        client.close_session(sid)
    assert all(digest == replayed[sequence] for _, sequence, _, digest in shown)
    assert len({digest for *_, digest in shown}) > 10  # the walk moves: the frames differ


def test_the_engine_does_not_wait_on_a_slow_network(server, tmp_path):
    """Each request waits 50 ms on the network thread: the engine, uncapped, makes many frames for
    each frame Mirage returns (an engine that waited would make one)."""
    log = _sample(server.target, tmp_path, "--frames", "300", "--fps", "0", "--network-delay-ms", "50")
    assert log["mirage_frames_shown"] >= 1
    assert log["engine_frames"] >= 3 * log["mirage_frames_shown"], log["mirage_frames_shown"]


def test_observe_mode_sends_the_engines_colour_depth_and_instance_ids(server, tmp_path):
    log = _sample(server.target, tmp_path, "--frames", "90", "--mode", "observe")
    assert log["mirage_frames_shown"] >= 10
    assert 0.3 < log["capture_drawn_fraction"] < 1.0  # the scene and some sky
    assert log["capture_id_pixels"].get("1", 0) > 0  # the tagged teapot, in its id
    with MirageClient(server.target) as client:
        stats = client.stats(log["session_id"])
    assert stats.frames_ingested >= 10 and stats.points > 1000


def test_composite_mode_keeps_what_the_engine_drew(server, tmp_path):
    log = _sample(server.target, tmp_path, "--frames", "90", "--mode", "composite")
    assert log["mirage_frames_shown"] >= 10 and log["screen_equal_fraction"] > 0.9
    assert 0.3 < log["capture_drawn_fraction"] < 1.0


# -- reconnection ---------------------------------------------------------------------------------
class Proxy:
    """A TCP relay to a server that the test can cut (every connection closed at once) or point at
    another port; it keeps listening throughout."""

    def __init__(self, upstream: int):
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.cut()
        self.listener.close()


def _drive(link: Link, until, timeout_s: float = 60.0) -> int:
    """Keep putting the newest pose (as an engine does each frame) until ``until()``; returns the
    replies taken."""
    deadline, taken, i = time.monotonic() + timeout_s, 0, 0
    while not until():
        assert time.monotonic() < deadline, f"timed out; link status {link.status}"
        i += 1
        angle = 0.01 * i
        link.requests.put(
            Request(i, Pose((0.0, 0.0, 0.0), (math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2))))
        )
        if link.replies.take(0.02) is not None:
            taken += 1
    return taken


def _graceful_stop(running) -> None:
    from runtime.server import shutdown

    asyncio.run_coroutine_threadsafe(shutdown(running.server, 2.0), running.loop).result(60)
    running.loop.call_soon_threadsafe(running.loop.stop)


def test_the_link_reconnects_keeping_its_session_and_the_app_never_sees_an_error(tmp_path):
    keys = tmp_path / "memory.keys"
    write_key_file(keys)
    durable = dict(memory_key_file=str(keys), checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every=5)
    first, _ = start_server_thread(make_config(**durable))
    proxy = Proxy(first.port)
    link = Link(
        PluginConfig(target=f"127.0.0.1:{proxy.port}", backoff_s=(0.05, 0.4)),
        Intrinsics.from_fov(32, 32, 60.0),
    )
    link.start()
    try:
        frames = lambda n: lambda: link.status.frames >= n  # noqa: E731
        _drive(link, frames(8))
        session = link.status.session_id
        # 1. the connection is cut, the server still has the session: the same session goes on
        proxy.cut()
        _drive(link, lambda: link.status.reconnects >= 1 and link.status.frames >= 16)
        assert link.status.session_id == session and link.status.sessions_opened == 1
        # 2. the server stops (checkpointing every session) and another starts on the same directory:
        # the session is resumed from its durable checkpoint, under its id
        _graceful_stop(first)
        second, stop_second = start_server_thread(make_config(**durable))
        proxy.upstream = second.port
        proxy.cut()
        _drive(link, lambda: link.status.reconnects >= 2 and link.status.frames >= 24)
        assert link.status.session_id == session and link.status.sessions_opened == 1
        assert session in second.registry
        # 3. a server that never had it: a new session, and the app still only sees frames
        stop_second()
        third, stop_third = start_server_thread(make_config())
        proxy.upstream = third.port
        proxy.cut()
        _drive(link, lambda: link.status.reconnects >= 3 and link.status.frames >= 32)
        assert link.status.session_id != session and link.status.sessions_opened == 2
        assert "reconnecting" in link.status.history and link.status.state == "connected"
    finally:
        link.stop()
        proxy.close()
    stop_third()

"""Observability over a real server on port 0: Prometheus metrics scraped over HTTP, one JSON log line
an event from a real `mirage serve`, the admin service and `mirage sessions`, and the pruning of
durable checkpoints nobody resumes."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import make_config, start_server_thread, synthetic_rgbd
from prometheus_client.parser import text_string_to_metric_families

from plugin_bridge.camera import Intrinsics
from plugin_bridge.client import (
    FailedPreconditionError,
    MirageClient,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from plugin_bridge.types import Observation, Pose
from runtime import cli
from runtime.durable import CheckpointStore
from runtime.sealing import KeyRing, write_key_file
from runtime.telemetry import JsonLogFormatter

K32 = Intrinsics.from_fov(32, 32, 60.0)
ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-fedcba9876543210xyz"
ADMIN = "ops-admin-token-0123456789abcdef"


def yaw(angle: float) -> Pose:
    return Pose((0.0, 0.0, 0.0), (math.cos(angle / 2), 0.0, math.sin(angle / 2), 0.0))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _private(path, text: str) -> str:
    path.write_text(text)
    os.chmod(path, 0o600)
    return str(path)


def _scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def observed(tmp_path):
    """A server with tokens, admin tokens and a metrics endpoint."""
    tokens = _private(tmp_path / "tokens", f"alice {ALICE}\nbob {BOB}\n")
    admins = _private(tmp_path / "admins", f"ops {ADMIN}\n")
    port = _free_port()
    running, stop = start_server_thread(
        make_config(token_file=tokens, admin_token_file=admins, metrics_port=port)
    )
    running.metrics_port = port
    yield running
    stop()


def test_metrics_count_frames_stages_sessions_rpcs_and_auth_failures(observed):
    target, port = observed.target, observed.metrics_port
    with MirageClient(target, token=ALICE) as alice, MirageClient(target, token=BOB) as bob:
        sid = alice.open_session(K32).session_id
        stream = alice.stream(sid)
        rgb, depth = synthetic_rgbd(32, 32, seed=0)
        stream.send_observation(Observation(yaw(0), rgb, depth, return_frame=True, sequence=1))
        stream.next_frame()
        for i in range(4):
            stream.step(yaw(0.05 * (i + 1)))
        stream.close()
        alice.contextual_inference(sid, yaw(0.3))
        with pytest.raises(PermissionDeniedError):
            bob.stats(sid)
        with pytest.raises(NotFoundError):
            bob.close_session("0" * 32)
        with MirageClient(target) as anonymous, pytest.raises(UnauthenticatedError):
            anonymous.stats(sid)
        open_now = _scrape(port)
        alice.close_session(sid)
    after = _scrape(port)

    def value(samples, name, **labels):
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value(after, "mirage_frames_total", mode="observe") == 1
    assert value(after, "mirage_frames_total", mode="generate") == 4
    assert value(after, "mirage_frames_total", mode="inference") == 1
    assert value(after, "mirage_stage_seconds_count", stage="total") == 6
    assert value(after, "mirage_stage_seconds_count", stage="generate") == 5  # the observation has none
    assert value(after, "mirage_stage_seconds_sum", stage="render") > 0
    assert value(after, "mirage_rpcs_total", method="OpenSession", code="OK") == 1
    assert value(after, "mirage_rpcs_total", method="Stream", code="OK") == 1
    assert value(after, "mirage_rpcs_total", method="CloseSession", code="NOT_FOUND") == 1
    assert value(after, "mirage_rpcs_total", method="CloseSession", code="OK") == 1
    assert value(after, "mirage_auth_failures_total", code="PERMISSION_DENIED") == 1
    assert value(after, "mirage_auth_failures_total", code="UNAUTHENTICATED") == 1
    assert value(after, "mirage_sessions_opened_total", how="new") == 1
    assert value(after, "mirage_sessions_closed_total", reason="client") == 1
    # gauges read at the scrape: the session and its memory while open, nothing once closed
    assert value(open_now, "mirage_sessions") == 1 and value(after, "mirage_sessions") == 0
    assert value(open_now, "mirage_memory_points") > 0 and value(after, "mirage_memory_points") == 0
    assert value(open_now, "mirage_memory_budget_bytes") == 128 * 2**20
    assert value(open_now, "mirage_admitted_budget_bytes") == 128 * 2**20


def test_metrics_count_the_poses_latest_wins_dropped(observed):
    with MirageClient(observed.target, token=ALICE) as client:
        sid = client.open_session(K32).session_id
        stream = client.stream(sid)
        for i in range(30):  # at once: faster than frames are made
            stream.send_pose(yaw(0.01 * i))
        stream.end()
        dropped = 0
        while (item := stream.recv()) is not None:
            if type(item).__name__ == "Event":
                dropped += len(item.sequences)
            if type(item).__name__ == "StreamEnd":
                break
        client.close_session(sid)
    assert dropped > 0
    assert _scrape(observed.metrics_port)[("mirage_poses_dropped_total", ())] == dropped


def test_the_admin_service_lists_sessions_for_admin_tokens_only(observed):
    target = observed.target
    with MirageClient(target, token=ALICE) as alice, MirageClient(target, token=ADMIN) as admin:
        sid = alice.open_session(K32, budget_bytes=64 * 2**20).session_id
        stream = alice.stream(sid)
        stream.step(yaw(0.1))
        assert admin.list_sessions().sessions[0].streaming
        stream.close()
        answer = admin.list_sessions()
        (only,) = answer.sessions
        assert only.session_id == sid and only.owner == "alice" and (only.width, only.height) == (32, 32)
        assert only.frames == 1 and not only.streaming and only.memory.points > 0
        assert only.memory.budget_bytes == 64 * 2**20 and answer.admitted_budget_bytes == 64 * 2**20
        assert answer.max_sessions == 16 and not answer.stopping
        with pytest.raises(PermissionDeniedError, match="session token does not open the admin service"):
            alice.list_sessions()
        with pytest.raises(UnauthenticatedError, match="not valid here"):
            admin.stats(sid)  # an admin token opens nothing else
        with MirageClient(target) as nobody, pytest.raises(UnauthenticatedError, match="needs a token"):
            nobody.list_sessions()
        with MirageClient(target, token="not-an-admin-token-at-all") as wrong:
            with pytest.raises(UnauthenticatedError, match="admin token is not valid"):
                wrong.list_sessions()
        alice.close_session(sid)
        assert admin.list_sessions().sessions == ()


def test_mirage_sessions_prints_the_table_and_json(observed, tmp_path, capsys):
    token = _private(tmp_path / "admin.token", ADMIN + "\n")
    with MirageClient(observed.target, token=ALICE) as alice:
        sid = alice.open_session(K32).session_id
        assert cli.main(["sessions", "--target", observed.target, "--admin-token-file", token]) == 0
        table = capsys.readouterr().out
        assert sid in table and "alice" in table and "32x32" in table and "1 of at most 16 sessions" in table
        assert cli.main(["sessions", "--target", observed.target, "--admin-token-file", token, "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert [s["session_id"] for s in listed["sessions"]] == [sid]
        user_token = _private(tmp_path / "alice.token", ALICE + "\n")
        assert cli.main(["sessions", "--target", observed.target, "--admin-token-file", user_token]) == 1
        assert "PERMISSION_DENIED" in capsys.readouterr().err
        alice.close_session(sid)


def test_admin_without_its_file_is_failed_precondition_and_shared_tokens_refused(tmp_path):
    running, stop = start_server_thread(make_config())
    try:
        with MirageClient(running.target) as client:
            with pytest.raises(FailedPreconditionError, match="--admin-token-file"):
                client.list_sessions()
    finally:
        stop()
    tokens = _private(tmp_path / "tokens", f"alice {ALICE}\n")
    admins = _private(tmp_path / "admins", f"ops {ALICE}\n")
    with pytest.raises(ValueError, match="admin service tokens of its own"):
        start_server_thread(make_config(token_file=tokens, admin_token_file=admins))


def test_json_log_lines_carry_the_event_fields():
    formatter = JsonLogFormatter()
    record = logging.LogRecord("mirage.server", logging.INFO, __file__, 1, "frame %d", (7,), None)
    record.session_id, record.sequence, record.total_ms = "abc", 7, 12.5
    line = json.loads(formatter.format(record))
    assert line["message"] == "frame 7" and line["level"] == "info" and line["logger"] == "mirage.server"
    assert (line["session_id"], line["sequence"], line["total_ms"]) == ("abc", 7, 12.5)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])
    try:
        raise ValueError("bad depth")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = json.loads(formatter.format(record))
    assert line["error"] == "ValueError: bad depth" and "Traceback" not in json.dumps(line)


def test_mirage_serve_writes_one_json_object_a_line_with_session_and_sequence(tmp_path):
    args = [
        sys.executable,
        "-m",
        "runtime",
        "serve",
        "--port",
        "0",
        "--log-format",
        "json",
        "--log-level",
        "debug",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        target = None
        deadline = time.monotonic() + 120
        while target is None and time.monotonic() < deadline:
            found = re.search(r"on 127\.0\.0\.1:(\d+)", proc.stdout.readline())
            target = f"127.0.0.1:{found.group(1)}" if found else None
        assert target, "mirage serve did not start"
        with MirageClient(target) as client:
            sid = client.open_session(K32).session_id
            stream = client.stream(sid)
            for i in range(3):
                stream.step(yaw(0.05 * i))
            stream.close()
            client.close_session(sid)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    records = [json.loads(line) for line in err.splitlines() if line.strip()]  # every line is JSON
    frames = [
        r
        for r in records
        if r.get("session_id") == sid and "sequence" in r and r["message"].startswith("frame")
    ]
    assert [r["sequence"] for r in frames] == [1, 2, 3]
    assert all(r["level"] == "debug" and r["total_ms"] > 0 for r in frames)
    mine = [r for r in records if r.get("session_id") == sid]
    assert any("opened" in r["message"] for r in mine)
    assert any(r["message"].startswith("stream") and r.get("frames") == 3 for r in mine)
    assert any(r.get("reason") == "client" and r.get("frames") == 3 for r in mine)


def test_durable_checkpoints_nobody_resumes_are_pruned(tmp_path):
    keys = tmp_path / "memory.keys"
    write_key_file(keys)
    directory = tmp_path / "checkpoints"
    store = CheckpointStore(directory, KeyRing.from_file(keys), 2**30)
    old, fresh, live = "a" * 32, "b" * 32, "c" * 32
    for session_id in (old, fresh, live):
        (directory / f"{session_id}.sealed").write_bytes(b"sealed")
    stale = time.time() - 7200
    for session_id in (old, live):
        os.utime(directory / f"{session_id}.sealed", (stale, stale))
    (directory / "notes.txt").write_text("not ours")
    assert store.prune(3600, open_ids={live}) == [old]
    assert sorted(p.name for p in directory.iterdir()) == [f"{fresh}.sealed", f"{live}.sealed", "notes.txt"]
    assert store.prune(0, open_ids=set()) == []  # 0: kept until the session closes
    # a server starting on the directory prunes what is past its keep at once
    os.utime(directory / f"{fresh}.sealed", (stale, stale))
    running, stop = start_server_thread(
        make_config(memory_key_file=str(keys), checkpoint_dir=str(directory), checkpoint_keep_s=3600.0)
    )
    stop()
    assert sorted(p.name for p in directory.iterdir()) == ["notes.txt"]


def test_sessions_closed_for_being_idle_are_counted(observed):
    with MirageClient(observed.target, token=ALICE) as alice:
        sid = alice.open_session(K32).session_id
        observed.registry.config.sessions.idle_timeout_s = 0.0  # what the reaper finds after 15 minutes
        time.sleep(0.01)
        assert observed.registry.close_idle() == 1
        with pytest.raises(NotFoundError):
            alice.stats(sid)
    samples = _scrape(observed.metrics_port)
    assert samples[("mirage_sessions_closed_total", (("reason", "idle"),))] == 1
    assert samples[("mirage_sessions", ())] == 0

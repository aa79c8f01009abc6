"""Sealed ExportMemory / ImportMemory and ManageMemory (checkpoints, rollback, forget) over a real server.

Every tampering and impersonation case gets its status and a message, and leaves the target session's
memory exactly as it was (the same stats and the same renders, byte for byte).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from conftest import make_config, start_server_thread, synthetic_rgbd
from mirage.v1 import mirage_pb2 as pb

from plugin_bridge.camera import Intrinsics
from plugin_bridge.client import (
    FailedPreconditionError,
    InvalidArgumentError,
    MirageClient,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
)
from plugin_bridge.exports import load_export, save_export
from plugin_bridge.types import Observation, Pose, Provenance, SealedExport
from runtime.sealing import write_key_file

K48 = Intrinsics.from_fov(48, 48, 60.0)
ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-fedcba9876543210xyz"
MiB = 2**20
CHUNK = 64 << 10  # small chunks: an export of a few hundred KiB has several


def yaw(angle: float, x: float = 0.0) -> Pose:
    return Pose((x, 0.0, 0.0), (math.cos(angle / 2), 0.0, math.sin(angle / 2), 0.0))


VIEWS = [yaw(0.0), yaw(0.3), yaw(-0.4, 0.2), yaw(0.9)]


def _tokens(directory) -> str:
    path = directory / "tokens"
    path.write_text(f"alice {ALICE}\nbob {BOB}\n")
    os.chmod(path, 0o600)
    return str(path)


def _keys(directory, name: str, key_id: str = "k1") -> str:
    path = directory / name
    write_key_file(path, key_id)
    return str(path)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Three servers sharing a token file: `main` and `twin` (another key under the same id) and
    `other` (a key under another id); `nokey` has no memory key file."""
    d = tmp_path_factory.mktemp("transfer")
    tokens = _tokens(d)
    out, stops = {}, []
    for name, keys in (
        ("main", _keys(d, "main.keys")),
        ("twin", _keys(d, "twin.keys")),
        ("other", _keys(d, "other.keys", "k2")),
        ("nokey", ""),
    ):
        config = make_config(token_file=tokens, memory_key_file=keys)
        config.sessions.max_checkpoints = 2
        running, stop = start_server_thread(config)
        out[name] = running
        stops.append(stop)
    yield out
    for stop in stops:
        stop()


def _fill(client: MirageClient, session_id: str) -> None:
    """Observed frames (a wall, a box), then generated ones turning past what was seen."""
    stream = client.stream(session_id)
    for i, x in enumerate((0.0, 0.1, 0.2)):
        rgb, depth = synthetic_rgbd(48, 48, seed=i)
        stream.send_observation(Observation(yaw(0.0, x), rgb, depth, return_frame=True, sequence=i + 1))
        stream.next_frame()
    for angle in (0.3, 0.6, 0.9):
        stream.step(yaw(angle))
    stream.close()


def _state(client: MirageClient, session_id: str):
    """What must not change: the stats and the renders from every view (bytes)."""
    renders = []
    for pose in VIEWS:
        view = client.render(session_id, pose)
        renders.append((view.rgb.tobytes(), None if view.depth is None else view.depth.tobytes()))
    return client.stats(session_id), renders


@pytest.fixture(scope="module")
def alice_export(servers):
    """Alice's filled session on `main` and its export (64 KiB chunks)."""
    with MirageClient(servers["main"].target, token=ALICE) as alice:
        info = alice.open_session(K48)
        _fill(alice, info.session_id)
        export = alice.export_memory(info.session_id, chunk_bytes=CHUNK)
        yield info.session_id, export, _state(alice, info.session_id)


def _chunks(export: SealedExport) -> list[pb.SealedChunk]:
    return [pb.SealedChunk.FromString(c) for c in export.chunks]


def _export_of(chunks: list[pb.SealedChunk]) -> SealedExport:
    return SealedExport(tuple(c.SerializeToString() for c in chunks), {})


def test_export_import_round_trip_through_a_file(servers, alice_export, tmp_path):
    session_id, export, (stats, renders) = alice_export
    assert len(export.chunks) >= 3 and export.header["key_id"] == "k1"
    meta = export.header["session"]
    assert meta["session_id"] == session_id and meta["owner"] == "alice" and meta["points"] == stats.points
    path = tmp_path / "alice.mirage-sealed"
    assert save_export(export, path) == path.stat().st_size
    loaded = load_export(path)
    assert loaded.chunks == export.chunks and loaded.header == export.header
    with MirageClient(servers["main"].target, token=ALICE) as alice:
        target = alice.open_session(K48).session_id
        result = alice.import_memory(target, loaded, keep_provenance=True)
        assert result.source_session == session_id and result.export_id == export.header["export_id"]
        after, after_renders = _state(alice, target)
        assert after_renders == renders  # bit-identical memory renders
        assert after.points == stats.points and after.frames_ingested == stats.frames_ingested
        # imported as imported (the default): forgetting imported content empties the memory
        alice.import_memory(target, loaded)
        edit = alice.forget(target, Provenance.IMPORTED)
        assert edit.points_forgotten == stats.points and edit.memory.points == 0
        alice.close_session(target)


def _tamper_cases(export: SealedExport, other: SealedExport) -> dict:
    chunks = _chunks(export)
    cases = {}

    def flipped(index: int, at: int) -> list[pb.SealedChunk]:
        out = [pb.SealedChunk.FromString(c.SerializeToString()) for c in chunks]
        data = bytearray(out[index].ciphertext)
        data[at] ^= 0x10
        out[index].ciphertext = bytes(data)
        return out

    cases["flipped bit, chunk 0"] = (flipped(0, 100), "chunk 0 failed authentication")
    cases["flipped bit, middle chunk"] = (flipped(1, 5000), "chunk 1 failed authentication")
    cases["flipped tag bit, last chunk"] = (flipped(len(chunks) - 1, -1), "failed authentication")
    cases["truncated: last chunk dropped"] = (chunks[:-1], "truncated")
    cases["reordered: chunks 1 and 2 swapped"] = ([chunks[0], chunks[2], chunks[1], *chunks[3:]], "reordered")
    cases["replayed: chunk 1 twice"] = ([chunks[0], chunks[1], chunks[1], *chunks[2:]], "replayed")
    spliced = list(chunks)
    spliced[1] = _chunks(other)[1]
    cases["spliced: chunk 1 of another export"] = (spliced, "nonce that is not its own")
    relabelled = [pb.SealedChunk.FromString(c.SerializeToString()) for c in chunks]
    relabelled[2].index, relabelled[2].nonce = 1, chunks[1].nonce
    cases["relabelled: chunk 2 sent as chunk 1"] = (
        [chunks[0], relabelled[2]],
        "chunk 1 failed authentication",
    )
    header = [pb.SealedChunk.FromString(c.SerializeToString()) for c in chunks]
    header[0].header = chunks[0].header.replace(b'"owner":"alice"', b'"owner":"bobby"')
    cases["header edited: owner"] = (header, "chunk 0 failed authentication")
    headless = chunks[1:]
    cases["first chunk missing"] = (headless, "without the header")
    extended = [*chunks, chunks[-1]]
    cases["a chunk after the final one"] = (extended, "after the final chunk")
    return {name: (_export_of(c), match) for name, (c, match) in cases.items()}


def test_every_tampering_is_refused_and_the_target_is_unchanged(servers, alice_export):
    _, export, _ = alice_export
    with MirageClient(servers["main"].target, token=ALICE) as alice:
        other_session = alice.open_session(K48).session_id
        _fill(alice, other_session)
        other = alice.export_memory(other_session, chunk_bytes=CHUNK)
        target = alice.open_session(K48).session_id
        rgb, depth = synthetic_rgbd(48, 48, seed=9)
        stream = alice.stream(target)
        stream.send_observation(Observation(yaw(0.1), rgb, depth, return_frame=True, sequence=1))
        stream.next_frame()
        stream.close()
        before = _state(alice, target)
        for name, (tampered, match) in _tamper_cases(export, other).items():
            with pytest.raises(InvalidArgumentError) as err:
                alice.import_memory(target, tampered)
            assert match in err.value.details and "memory is unchanged" in err.value.details, name
            assert _state(alice, target) == before, name
        alice.import_memory(target, export)  # the intact export still goes in
        assert alice.stats(target).points == export.header["session"]["points"]
        for session_id in (other_session, target):
            alice.close_session(session_id)


def test_wrong_key_unknown_key_and_no_key(servers, alice_export):
    _, export, _ = alice_export
    for server, error, match in (
        ("twin", InvalidArgumentError, "chunk 0 failed authentication"),  # same id, another key
        ("other", FailedPreconditionError, "key 'k1', which this server's memory key file does not hold"),
        ("nokey", FailedPreconditionError, "no memory key"),
    ):
        with MirageClient(servers[server].target, token=ALICE) as alice:
            target = alice.open_session(K48).session_id
            before = _state(alice, target)
            with pytest.raises(error, match=match):
                alice.import_memory(target, export)
            assert _state(alice, target) == before, server
            if server == "nokey":
                with pytest.raises(FailedPreconditionError, match="--memory-key-file"):
                    alice.export_memory(target)
            alice.close_session(target)


def test_impersonation_is_refused(servers, alice_export):
    session_id, export, state = alice_export
    target = servers["main"].target
    with MirageClient(target, token=BOB) as bob, MirageClient(target, token=ALICE) as alice:
        own = bob.open_session(K48).session_id
        before = _state(bob, own)
        with pytest.raises(PermissionDeniedError, match="another principal"):
            bob.export_memory(session_id)  # alice's session
        with pytest.raises(PermissionDeniedError, match="another principal"):
            bob.import_memory(session_id, export)  # into alice's session
        with pytest.raises(PermissionDeniedError, match="taken by another principal"):
            bob.import_memory(own, export)  # alice's export into his own session
        assert _state(bob, own) == before
        for attempt in (
            lambda: bob.checkpoint(session_id),
            lambda: bob.checkpoints(session_id),
            lambda: bob.forget(session_id, Provenance.GENERATED),
        ):
            with pytest.raises(PermissionDeniedError, match="another principal"):
                attempt()
        assert _state(alice, session_id) == state
        bob.close_session(own)
    with MirageClient(target) as anonymous:
        with pytest.raises(UnauthenticatedError):
            anonymous.export_memory(session_id)
        with pytest.raises(UnauthenticatedError):
            anonymous.import_memory(session_id, export)


def test_imports_the_session_cannot_take(servers, alice_export):
    _, export, _ = alice_export
    with MirageClient(servers["main"].target, token=ALICE) as alice:
        quantised = alice.open_session(K48, storage="quantised").session_id
        before = _state(alice, quantised)
        with pytest.raises(FailedPreconditionError, match="storage='full'.*same memory options"):
            alice.import_memory(quantised, export)
        assert _state(alice, quantised) == before
        small = alice.open_session(K48, budget_bytes=MiB + MiB // 4).session_id  # room for ~2,600 points
        before = _state(alice, small)
        assert export.header["session"]["points"] > 3000
        with pytest.raises(ResourceExhaustedError, match="does not fit a budget of 1310720 bytes"):
            alice.import_memory(small, export)
        assert _state(alice, small) == before
        with pytest.raises(InvalidArgumentError, match="chunk_bytes=8388608"):
            alice.export_memory(small, chunk_bytes=8 << 20)
        with pytest.raises(InvalidArgumentError, match="chunk_bytes=1: use 4096 to"):
            alice.export_memory(small, chunk_bytes=1)  # millions of messages
        for session_id in (quantised, small):
            alice.close_session(session_id)


def test_checkpoint_rollback_forget(servers):
    with MirageClient(servers["main"].target, token=ALICE) as alice:
        sid = alice.open_session(K48).session_id
        _fill(alice, sid)
        state = _state(alice, sid)
        first = alice.checkpoint(sid, label="after the walk")
        assert first.label == "after the walk" and first.points == state[0].points and first.bytes > 0
        stream = alice.stream(sid)  # the memory moves on
        for angle in (1.3, 1.7, -0.8):
            stream.step(yaw(angle))
        stream.close()
        assert _state(alice, sid) != state
        edit = alice.rollback(sid, first.checkpoint_id)
        assert edit.checkpoint == first and _state(alice, sid) == state  # exactly as it was
        second = alice.checkpoint(sid)
        assert [c.checkpoint_id for c in alice.checkpoints(sid)] == [
            first.checkpoint_id,
            second.checkpoint_id,
        ]
        with pytest.raises(ResourceExhaustedError, match="holds 2 checkpoints"):
            alice.checkpoint(sid)
        with pytest.raises(NotFoundError, match="no checkpoint 'nope'"):
            alice.rollback(sid, "nope")
        with pytest.raises(InvalidArgumentError, match="at most 128"):
            alice.checkpoint(sid, label="x" * 129)
        assert alice.delete_checkpoint(sid, second.checkpoint_id).checkpoints == (first,)
        # forget what the generator made: only what was observed is left
        edit = alice.forget(sid, Provenance.GENERATED)
        assert edit.points_forgotten > 0 and edit.memory.points == state[0].points - edit.points_forgotten
        assert alice.forget(sid, Provenance.GENERATED).points_forgotten == 0
        view = alice.render(sid, yaw(0.9))  # the far turn was generated only: it is gone
        assert view.coverage_fraction < 0.5
        with pytest.raises(InvalidArgumentError, match="ManageMemoryRequest needs an action"):
            alice._loop.run(
                alice._client._call(alice._client.stub.ManageMemory, pb.ManageMemoryRequest(session_id=sid))
            )
        with pytest.raises(InvalidArgumentError, match="Forget.provenance=0"):
            request = pb.ManageMemoryRequest(session_id=sid, forget=pb.Forget())
            alice._loop.run(alice._client._call(alice._client.stub.ManageMemory, request))
        alice.rollback(sid, first.checkpoint_id)
        assert _state(alice, sid) == state  # the rollback undoes the forgetting too
        alice.close_session(sid)


def test_checkpoints_count_against_the_servers_memory():
    config = make_config()
    config.sessions.total_budget_bytes = 131 * MiB  # one 128 MiB session and 3 MiB to spare
    running, stop = start_server_thread(config)
    try:
        with MirageClient(running.target) as client:
            sid = client.open_session(K48).session_id
            _fill(client, sid)
            info = client.checkpoint(sid)  # a small memory: its checkpoint fits the spare 3 MiB
            assert 0 < info.bytes < 3 * MiB and running.registry.get(sid).checkpoint_bytes == info.bytes
            with pytest.raises(ResourceExhaustedError, match="does not fit"):
                client.open_session(K48, budget_bytes=3 * MiB)  # the checkpoint holds part of it
            client.delete_checkpoint(sid, info.checkpoint_id)
            other = client.open_session(K48, budget_bytes=3 * MiB).session_id  # now it fits
            with pytest.raises(ResourceExhaustedError, match="a checkpoint of .* does not fit"):
                client.checkpoint(sid)
            assert client.checkpoints(sid) == ()
            client.close_session(other)
            assert client.checkpoint(sid).bytes == info.bytes  # room again
            client.close_session(sid)
    finally:
        stop()


def _mirage(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runtime", "snapshot", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_snapshot_commands(tmp_path):
    keys = tmp_path / "memory.keys"
    made = _mirage("keygen", str(keys), "--key-id", "cli1")
    assert made.returncode == 0 and "key 'cli1'" in made.stdout
    again = _mirage("keygen", str(keys))
    assert again.returncode == 2 and "never overwritten" in again.stderr and "Traceback" not in again.stderr
    token = tmp_path / "alice.token"
    token.write_text(ALICE + "\n")
    token.chmod(0o600)
    running, stop = start_server_thread(make_config(token_file=_tokens(tmp_path), memory_key_file=str(keys)))
    try:
        with MirageClient(running.target, token=ALICE) as alice:
            source = alice.open_session(K48).session_id
            _fill(alice, source)
            _, renders = _state(alice, source)
            target = alice.open_session(K48).session_id
            out = tmp_path / "walk.sealed"
            common = ["--target", running.target, "--token-file", str(token)]
            exported = _mirage("export", *common, "--session", source, "--out", str(out), "--chunk-kib", "64")
            assert exported.returncode == 0, exported.stderr
            assert "sealed under key 'cli1'" in exported.stdout and out.stat().st_size > 0
            shown = _mirage("inspect", str(out))
            header = json.loads(shown.stdout)
            assert header["chunks"] > 1 and header["header"]["session"]["session_id"] == source
            imported = _mirage(
                "import", "--target", running.target, "--session", target, "--in", str(out), "--keep-provenance",
                env={"MIRAGE_TOKEN": ALICE},
            )  # fmt: skip
            assert imported.returncode == 0, imported.stderr
            assert _state(alice, target)[1] == renders
            # refusals come back as one line each: the status and what to do
            data = bytearray(out.read_bytes())
            data[-5] ^= 1
            bad = tmp_path / "bad.sealed"
            bad.write_bytes(bytes(data))
            for args, code in (
                (["import", *common, "--session", target, "--in", str(bad)], "INVALID_ARGUMENT"),
                (["export", *common, "--session", "nope", "--out", str(bad)], "NOT_FOUND"),
                (
                    ["export", "--target", running.target, "--session", source, "--out", str(bad)],
                    "UNAUTHENTICATED",
                ),
            ):
                failed = _mirage(*args)
                assert failed.returncode == 1 and code in failed.stderr and "Traceback" not in failed.stderr
            assert _state(alice, target)[1] == renders
            not_ours = _mirage("inspect", str(keys))
            assert not_ours.returncode == 2 and "not a Mirage sealed export" in not_ours.stderr
    finally:
        stop()

"""Durable session checkpoints: sealed to disk every N frames, so a restarted server resumes a session.

``mirage serve --checkpoint-dir D --checkpoint-every N --memory-key-file F`` writes each session's
memory, sealed exactly like an ExportMemory stream (`runtime.sealing`, in the file format of
`plugin_bridge.exports`), to ``D/<session id>.sealed`` every N frames (atomically: a crash leaves the
previous checkpoint or the new one, never half of one). The sealed header carries what a resume
needs besides the memory: the session's spec (camera, convention, encodings, generator, budget, seed),
its owner and its frame count. After a crash, ``OpenSession(resume_session_id=...)`` by the same
principal rebuilds the session under its old id from the newest checkpoint (losing at most N frames);
a checkpoint that fails any check (a changed byte, another key, a truncated file) is refused and never
loaded. CloseSession deletes the session's checkpoint; the checkpoint of a session no longer open
(closed for being idle, or not resumed after a restart) is deleted once older than
``--checkpoint-keep-s`` (`CheckpointStore.prune`, at start and every reaper round).
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

from mirage.v1 import mirage_pb2 as pb

from plugin_bridge.camera import Intrinsics
from plugin_bridge.codec import DepthEncoding, FrameEncoding
from plugin_bridge.conventions import Convention
from plugin_bridge.exports import load_export, save_export
from plugin_bridge.types import SealedExport
from runtime.sealing import KeyRing, SealError, chunk_from_proto, chunk_to_proto, open_all, seal
from runtime.session import Session
from runtime.types import SessionSpec

SUFFIX = ".sealed"
_SESSION_ID = re.compile(r"[0-9a-f]{32}")
CHUNK_BYTES = 1 << 20
SLACK_BYTES = 16 << 20


class CheckpointMissing(LookupError):
    """No checkpoint of that session is on disk (NOT_FOUND)."""


class CheckpointRefused(ValueError):
    """A checkpoint that cannot be trusted or used (FAILED_PRECONDITION); it is never loaded."""


def spec_to_json(spec: SessionSpec) -> dict:
    out = dataclasses.asdict(spec)
    out["convention"] = spec.convention.value
    out["frame_encoding"] = int(spec.frame_encoding)
    out["depth_encoding"] = int(spec.depth_encoding)
    out["client_capabilities"] = list(spec.client_capabilities)
    return out


def spec_from_json(data: dict) -> SessionSpec:
    try:
        values = dict(data)
        values["convention"] = Convention(values["convention"])
        values["frame_encoding"] = FrameEncoding(values["frame_encoding"])
        values["depth_encoding"] = DepthEncoding(values["depth_encoding"])
        values["intrinsics"] = Intrinsics(**values["intrinsics"])
        values["client_capabilities"] = tuple(values["client_capabilities"])
        return SessionSpec(**values)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointRefused(
            f"the checkpoint's session spec is not one this runtime reads ({exc})"
        ) from None


@dataclasses.dataclass(frozen=True)
class Resumable:
    """What a checkpoint on disk gives back: the spec, the owner, the frame count and the snapshot."""

    session_id: str
    spec: SessionSpec
    owner: str
    frame_index: int
    payload: bytes


class CheckpointStore:
    def __init__(self, directory: str | Path, keyring: KeyRing, max_budget_bytes: int):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.keyring = keyring
        self.max_plaintext_bytes = max_budget_bytes + SLACK_BYTES

    def path(self, session_id: str) -> Path:
        if not _SESSION_ID.fullmatch(session_id):
            raise CheckpointMissing(f"{session_id!r} is not a session id this server gives out")
        return self.directory / f"{session_id}{SUFFIX}"

    def save(self, session: Session) -> int:
        """Seal the session's memory, spec and frame count to its file (atomically); returns bytes written."""
        size, pieces, metadata = session.export_payload(CHUNK_BYTES)
        metadata = {**metadata, "spec": spec_to_json(session.spec)}
        chunks = [
            chunk_to_proto(c, pb.SealedChunk).SerializeToString()
            for c in seal(pieces, size, self.keyring, metadata, CHUNK_BYTES)
        ]
        return save_export(SealedExport(tuple(chunks), {}), self.path(session.id))

    def load(self, session_id: str) -> Resumable:
        """The newest checkpoint of ``session_id``, every chunk verified (CheckpointRefused otherwise)."""
        path = self.path(session_id)
        if not path.exists():
            raise CheckpointMissing(
                f"no checkpoint of session {session_id!r} on this server: open a new session"
            )
        try:
            export = load_export(path)
            chunks = [chunk_from_proto(pb.SealedChunk.FromString(raw)) for raw in export.chunks]
            header, payload = open_all(chunks, self.keyring, self.max_plaintext_bytes)
        except (SealError, ValueError) as exc:
            raise CheckpointRefused(
                f"the checkpoint of session {session_id!r} is refused ({exc}); it was not loaded"
            ) from None
        meta = header.session
        if meta.get("session_id") != session_id:
            raise CheckpointRefused(
                f"the checkpoint file of {session_id!r} holds another session; it was not loaded"
            )
        return Resumable(
            session_id=session_id,
            spec=spec_from_json(meta.get("spec", {})),
            owner=str(meta.get("owner", "")),
            frame_index=int(meta.get("frame_index", 0)),
            payload=payload,
        )

    def prune(self, keep_s: float, open_ids: set[str], now: float | None = None) -> list[str]:
        """Delete the checkpoints of sessions not in ``open_ids`` last written more than ``keep_s``
        seconds ago (a session closed for being idle, or never resumed after a restart); returns
        their session ids. ``keep_s`` 0 deletes none."""
        if keep_s <= 0:
            return []
        now = time.time() if now is None else now
        pruned = []
        for path in self.directory.glob(f"*{SUFFIX}"):
            session_id = path.name[: -len(SUFFIX)]
            if not _SESSION_ID.fullmatch(session_id) or session_id in open_ids:
                continue
            try:
                if now - path.stat().st_mtime > keep_s:
                    path.unlink()
                    pruned.append(session_id)
            except FileNotFoundError:  # closed and deleted meanwhile
                continue
        return pruned

    def delete(self, session_id: str) -> None:
        try:
            self.path(session_id).unlink(missing_ok=True)
        except CheckpointMissing:
            pass

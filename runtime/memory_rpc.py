"""The memory-state RPCs of the servicer: sealed export and import, checkpoints, forgetting a provenance.

`MemoryStateRPCs` is mixed into `runtime.server.MirageServicer` (which gives it ``_session``,
``_principal``, ``_run``, ``_abort``, ``config``, ``registry``). Export seals off the event loop, chunk
by chunk, from a copy of the memory taken under the session lock. Import verifies every chunk as it
arrives (`runtime.sealing.Opener`), holds the plaintext until the final chunk, loads the snapshot
into a new memory and only then swaps it in: a refused stream leaves the session as it was.
"""

from __future__ import annotations

import asyncio
import time

import grpc
from mirage.v1 import mirage_pb2 as pb

from runtime import wire
from runtime.memory.config import PROVENANCES
from runtime.memory.snapshot import SnapshotError
from runtime.sealing import (
    DEFAULT_CHUNK_BYTES,
    MAX_CHUNK_BYTES,
    KeyRing,
    Opener,
    SealError,
    SealKeyError,
    SealTooLarge,
    chunk_from_proto,
    chunk_to_proto,
    seal,
)
from runtime.session import (
    Checkpoint,
    CheckpointLimit,
    CheckpointNotFound,
    IncompatibleMemory,
    SessionClosedError,
)

IMPORT_SLACK_BYTES = 16 << 20
"""An export may hold this much beyond the target's budget (header, free-space keyframes, trail)
before it is refused unread; the snapshot loader then checks that its points fit the budget."""
DRAIN_BYTES = 64 << 20
DRAIN_SECONDS = 10.0
"""A refused import reads (and drops) what the client still sends, up to these, before answering: a
client-streaming call the server ends while the client writes reaches an asyncio client as INTERNAL
("Internal error from Core", grpc/grpc#36066) instead of the status; drained, it gets the status."""
_NO_KEY = (
    "this server has no memory key: start it with --memory-key-file F (mirage snapshot keygen F writes "
    "one); memory never leaves the server unsealed"
)


def _checkpoint_info(c: Checkpoint) -> pb.CheckpointInfo:
    return pb.CheckpointInfo(
        checkpoint_id=c.id,
        label=c.label,
        frame_index=c.frame_index,
        points=c.points,
        bytes=c.nbytes,
        created_unix_us=c.created_unix_us,
    )


def _seal_status(exc: SealError) -> grpc.StatusCode:
    if isinstance(exc, SealKeyError):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(exc, SealTooLarge):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return grpc.StatusCode.INVALID_ARGUMENT


MIN_EXPORT_CHUNK_BYTES = 4096
"""Smallest chunk an export may ask for: 1-byte chunks of a 30 MiB memory were 31 million messages,
a stream no deadline saw the end of (found by tests/runtime/test_fuzz.py)."""


class MemoryStateRPCs:
    keyring: KeyRing | None = None

    async def ExportMemory(self, request: pb.ExportMemoryRequest, context):
        session = await self._session(request.session_id, context)
        if self.keyring is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, _NO_KEY)
        chunk_bytes = request.chunk_bytes or DEFAULT_CHUNK_BYTES
        limit = min(MAX_CHUNK_BYTES, self.config.server.max_message_bytes - (64 << 10))
        if not MIN_EXPORT_CHUNK_BYTES <= chunk_bytes <= limit:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"chunk_bytes={chunk_bytes}: use {MIN_EXPORT_CHUNK_BYTES} to {limit} (0: {DEFAULT_CHUNK_BYTES})",
            )
        try:
            size, pieces, metadata = await self._run(session.export_payload, chunk_bytes)
        except SessionClosedError as exc:
            await self._abort(context, exc)
        chunks = seal(pieces, size, self.keyring, metadata, chunk_bytes)
        while True:
            chunk = await self._run(next, chunks, None)  # encryption off the event loop
            if chunk is None:
                return
            yield chunk_to_proto(chunk, pb.SealedChunk)

    async def ImportMemory(self, request_iterator, context) -> pb.ImportMemoryResponse:
        requests = request_iterator.__aiter__()
        try:
            first = await requests.__anext__()
        except StopAsyncIteration:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "ImportMemory received no message: send the export's chunks"
            )
        except wire.WireError as exc:
            await self._abort(context, exc)
        try:
            session = self.registry.get(first.session_id, self._principal(context))
        except Exception as exc:  # noqa: BLE001 - the registry's errors, each with its status
            await self._refuse_import(requests, context, *self._status_of(exc))
        if self.keyring is None:
            await self._refuse_import(requests, context, grpc.StatusCode.FAILED_PRECONDITION, _NO_KEY)
        opener = Opener(self.keyring, session.spec.budget_bytes + IMPORT_SLACK_BYTES)
        parts: list[bytes] = []
        message = first
        while message is not None:
            if message is not first and message.session_id not in ("", session.id):
                await self._refuse_import(
                    requests,
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"message for session {message.session_id!r} in the import into {session.id!r}: "
                    "one import carries one session",
                )
            if not message.HasField("chunk"):
                await self._refuse_import(
                    requests,
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "ImportMemoryRequest.chunk is required in every message",
                )
            try:
                parts.append(opener.feed(chunk_from_proto(message.chunk)))
            except SealError as exc:
                await self._refuse_import(
                    requests, context, _seal_status(exc), f"{exc}; the session's memory is unchanged"
                )
            if len(parts) == 1:
                owner = opener.header.session.get("owner", "")
                if owner != session.owner:  # authentic (chunk 0 opened), but someone else's memory
                    await self._refuse_import(
                        requests,
                        context,
                        grpc.StatusCode.PERMISSION_DENIED,
                        "this export was taken by another principal: import exports of your own sessions",
                    )
            try:
                message = await requests.__anext__()
            except StopAsyncIteration:
                message = None
            except wire.WireError as exc:
                await self._refuse_import(requests, context, exc.code, exc.message)
        try:
            header = opener.finish()
        except SealError as exc:
            await self._refuse_import(
                requests, context, _seal_status(exc), f"{exc}; the session's memory is unchanged"
            )
        payload = b"".join(parts)
        parts.clear()
        try:
            stats = await self._run(session.import_payload, payload, first.keep_provenance)
        except SnapshotError as exc:
            code = (
                grpc.StatusCode.RESOURCE_EXHAUSTED
                if "does not fit a budget" in str(exc)
                else grpc.StatusCode.INVALID_ARGUMENT
            )
            await self._refuse_import(requests, context, code, f"{exc}; the session's memory is unchanged")
        except IncompatibleMemory as exc:
            await self._refuse_import(
                requests,
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{exc}; the session's memory is unchanged",
            )
        except SessionClosedError as exc:
            await self._abort(context, exc)
        return pb.ImportMemoryResponse(
            memory=wire.memory_stats_to_proto(stats),
            source_session=str(header.session.get("session_id", "")),
            export_id=header.export_id,
        )

    async def _refuse_import(self, requests, context, code: grpc.StatusCode, message: str) -> None:
        """End an import with ``code`` once the client stopped sending (`DRAIN_BYTES`, `DRAIN_SECONDS`)."""
        drained, deadline = 0, time.monotonic() + DRAIN_SECONDS
        try:
            while drained < DRAIN_BYTES:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                drained += (await asyncio.wait_for(requests.__anext__(), left)).ByteSize()
        except (StopAsyncIteration, TimeoutError, wire.WireError, grpc.RpcError):
            pass
        await context.abort(code, message)

    async def ManageMemory(self, request: pb.ManageMemoryRequest, context) -> pb.ManageMemoryResponse:
        session = await self._session(request.session_id, context)
        action = request.WhichOneof("action")
        response = pb.ManageMemoryResponse()
        try:
            if action == "checkpoint":
                checkpoint = await self._run(
                    session.checkpoint,
                    request.checkpoint.label,
                    self.registry.admit_checkpoint,
                    self.config.sessions.max_checkpoints,
                )
                response.checkpoint.CopyFrom(_checkpoint_info(checkpoint))
            elif action == "rollback":
                checkpoint, _ = await self._run(session.rollback, request.rollback.checkpoint_id)
                response.checkpoint.CopyFrom(_checkpoint_info(checkpoint))
            elif action == "delete":
                await self._run(session.delete_checkpoint, request.delete.checkpoint_id)
            elif action == "forget":
                provenance = int(request.forget.provenance)
                if provenance not in PROVENANCES:
                    raise wire.WireError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"Forget.provenance={provenance}: set PROVENANCE_OBSERVED, PROVENANCE_GENERATED or "
                        "PROVENANCE_IMPORTED",
                    )
                forgotten, _ = await self._run(session.forget, provenance)
                response.points_forgotten = forgotten.points
                response.texels_forgotten = forgotten.texels
            elif action != "list":
                raise wire.WireError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "ManageMemoryRequest needs an action: set checkpoint, rollback, forget, list or delete",
                )
        except wire.WireError as exc:
            await self._abort(context, exc)
        except CheckpointNotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except CheckpointLimit as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except ValueError as exc:  # a label too long
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Exception as exc:  # noqa: BLE001 - the registry's and sessions' domain errors
            await self._abort(context, exc)
        response.checkpoints.extend(_checkpoint_info(c) for c in list(session.checkpoints.values()))
        response.memory.CopyFrom(wire.memory_stats_to_proto(await self._run(session.stats)))
        return response

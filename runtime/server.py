"""The gRPC server: a thin servicer over sessions, plus health checking and reflection.

`run_server(config)` builds a grpc.aio server, binds it (port 0 picks a free one), registers health
(SERVING only once the default generator is loaded) and reflection, and returns `(server, port)`.
Handlers validate through `runtime.wire` and delegate to `Session`; memory and model work runs in a
thread pool so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import signal
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from mirage.v1 import mirage_pb2 as pb
from mirage.v1 import mirage_pb2_grpc as pb_grpc

from runtime import wire
from runtime.admin import MirageAdminServicer
from runtime.allocator import tune_malloc
from runtime.auth import (
    AdminAuthInterceptor,
    RateLimiter,
    RateLimitInterceptor,
    TokenAuthInterceptor,
    TokenFileError,
    TokenTable,
)
from runtime.config import RuntimeConfig, ServerConfig
from runtime.durable import CheckpointMissing, CheckpointRefused, CheckpointStore
from runtime.generator.host import available_models
from runtime.malformed import MalformedMessageInterceptor
from runtime.memory_rpc import MemoryStateRPCs
from runtime.query_rpc import MemoryQueryRPCs
from runtime.registry import (
    NoSessionId,
    NotYourSession,
    RegistryError,
    SessionAlreadyOpen,
    SessionLimitReached,
    SessionRegistry,
    UnknownSession,
)
from runtime.sealing import KeyRing
from runtime.session import Session, SessionClosedError
from runtime.telemetry import Telemetry, TelemetryInterceptor
from runtime.types import ObservationInput, PoseInput
from runtime.warmup import warm_up

log = logging.getLogger("mirage.server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Mirage"].full_name
ADMIN_SERVICE_NAME = pb.DESCRIPTOR.services_by_name["MirageAdmin"].full_name


def grpc_options(config: RuntimeConfig) -> list[tuple[str, int]]:
    s = config.server
    return [
        ("grpc.max_receive_message_length", s.max_message_bytes),
        ("grpc.max_send_message_length", s.max_message_bytes),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", s.keepalive_min_ping_interval_ms),
        ("grpc.http2.min_ping_interval_without_data_ms", s.keepalive_min_ping_interval_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_ping_strikes", 0),
    ]


@dataclass
class _End:
    """The client sent EndOfStream (clean) or half-closed without it."""

    clean: bool


@dataclass
class _Shutdown:
    """The server is stopping: end the stream after the frame in flight."""


@dataclass
class _Control:
    action: int


@dataclass
class _PendingPose:
    """A pose as it came off the stream, parsed but not yet validated and converted: of poses that
    queue, only the one made is (a flood of 1,000 poses a second spent 8% of the event loop converting
    poses latest-wins then dropped)."""

    message: pb.PoseRequest
    received_us: int

    @property
    def sequence(self) -> int:
        return int(self.message.sequence)


@dataclass(eq=False)  # hashed by identity: the servicer keeps the open streams' queues in a set
class _PendingQueue:
    """Per-stream queue: poses are latest-wins (stale ones dropped), everything else back-pressures."""

    max_poses: int
    max_messages: int
    items: deque = field(default_factory=deque)
    dropped: list[int] = field(default_factory=list)
    cond: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def put(self, item: object) -> None:
        async with self.cond:
            if isinstance(item, _PendingPose):
                poses = [x for x in self.items if isinstance(x, _PendingPose)]
                if len(poses) >= self.max_poses:
                    self.items.remove(poses[0])
                    self.dropped.append(poses[0].sequence)
            else:
                await self.cond.wait_for(lambda: len(self.items) < self.max_messages)
            self.items.append(item)
            self.cond.notify_all()

    async def shutdown(self) -> None:
        """Put `_Shutdown` first: what is queued is not started, the frame in flight finishes."""
        async with self.cond:
            self.items.appendleft(_Shutdown())
            self.cond.notify_all()

    async def get(self) -> tuple[object, list[int]]:
        """The next item; of poses queued one after another, only the newest (the older are dropped)."""
        async with self.cond:
            await self.cond.wait_for(lambda: len(self.items) > 0)
            item = self.items.popleft()
            while isinstance(item, _PendingPose) and self.items and isinstance(self.items[0], _PendingPose):
                self.dropped.append(item.sequence)
                item = self.items.popleft()
            dropped, self.dropped = self.dropped, []
            self.cond.notify_all()
            return item, dropped


def _make_frame(
    session: Session, item: PoseInput | ObservationInput, telemetry: Telemetry
) -> pb.Frame | None:
    """The stream's frame for one pose or observation (None: an observation asked for no frame), made
    in one hop to a worker: step, stats and encoding together, so that a frame waits on the event loop
    once, not three times (what a flood at 64x64 showed in its frame age)."""
    if isinstance(item, PoseInput):
        mode, result = "generate", session.step_pose(item)
    else:
        mode, result = "observe", session.step_observation(item)
    stats = session.stats()
    frame = (
        wire.frame_to_proto(result, session.spec, stats) if mode == "generate" or item.return_frame else None
    )
    timings = dict(result.timings_ms)
    if frame is not None:  # with the encoding, as the client sees them
        timings = {field.name: value for field, value in frame.timings.ListFields()}
    telemetry.record_frame(session.id, mode, timings, stats)
    if log.isEnabledFor(logging.DEBUG):  # every frame: nothing built for a log that drops it
        log.debug(
            "frame %d of session %s",
            result.sequence,
            session.id,
            extra={"session_id": session.id, "sequence": result.sequence, "mode": mode, **timings},
        )
    return frame


_STATUS = {
    NoSessionId: grpc.StatusCode.FAILED_PRECONDITION,
    UnknownSession: grpc.StatusCode.NOT_FOUND,
    SessionClosedError: grpc.StatusCode.NOT_FOUND,
    SessionLimitReached: grpc.StatusCode.RESOURCE_EXHAUSTED,
    NotYourSession: grpc.StatusCode.PERMISSION_DENIED,
    SessionAlreadyOpen: grpc.StatusCode.FAILED_PRECONDITION,
    CheckpointMissing: grpc.StatusCode.NOT_FOUND,
    CheckpointRefused: grpc.StatusCode.FAILED_PRECONDITION,
}
"""The gRPC status of each domain error the registry and sessions raise."""


class MirageServicer(MemoryStateRPCs, MemoryQueryRPCs, pb_grpc.MirageServicer):
    """Each RPC converts through `runtime.wire`, asks the registry for its session and delegates (the
    memory-state RPCs live in `runtime.memory_rpc`)."""

    def __init__(
        self,
        config: RuntimeConfig,
        registry: SessionRegistry,
        executor: ThreadPoolExecutor,
        telemetry: Telemetry,
        tokens: TokenTable | None = None,
        keyring: KeyRing | None = None,
        store: CheckpointStore | None = None,
    ):
        self.config = config
        self.telemetry = telemetry
        self.registry = registry
        self.executor = executor
        self.tokens = tokens
        self.keyring = keyring
        self.store = store
        self._saving: dict[str, asyncio.Task] = {}  # durable checkpoints being written, by session
        self.stopping = False
        self._streams: set[_PendingQueue] = set()  # the open streams' queues (shutdown ends them)

    def _principal(self, context: grpc.aio.ServicerContext) -> str:
        """Who is calling: the token's principal (`TokenAuthInterceptor` let only known tokens in), or
        "" on a server without tokens."""
        if self.tokens is None:
            return ""
        return self.tokens.principal(context.invocation_metadata()) or ""

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _session(self, session_id: str, context: grpc.aio.ServicerContext) -> Session:
        try:
            return self.registry.get(session_id, self._principal(context))
        except RegistryError as exc:
            await self._abort(context, exc)

    @staticmethod
    def _status_of(exc: Exception) -> tuple[grpc.StatusCode, str]:
        """(status, message) of a domain error (`_STATUS`); anything else is raised again."""
        code = _STATUS.get(type(exc))
        if code is None:
            raise exc
        return code, str(exc)

    async def _abort(self, context: grpc.aio.ServicerContext, exc: Exception) -> None:
        if isinstance(exc, wire.WireError):
            await context.abort(exc.code, exc.message)
        code = _STATUS.get(type(exc))
        if code is not None:
            await context.abort(code, str(exc))
        raise exc

    async def _release(self, session: Session, reason: str | None):
        """Close ``session`` and stop holding it; ``reason`` (client, disconnect) is what the metrics
        count, None for a session that never opened (a resume whose snapshot did not load)."""
        self.registry.forget(session)
        stats = await self._run(session.close)
        if reason is not None:
            self.telemetry.forget_session(session.id, reason)
            log.info(
                "session %s closed (%s) after %d frames",
                session.id,
                reason,
                session.frame_index,
                extra={"session_id": session.id, "reason": reason, "frames": session.frame_index},
            )
        return stats

    # -- RPCs ----------------------------------------------------------------------------------------
    async def OpenSession(self, request: pb.OpenSessionRequest, context) -> pb.OpenSessionResponse:
        if self.stopping:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "the server is shutting down: open the session on another server, or retry once it is back",
            )
        try:
            warnings = wire.check_protocol_version(request.protocol_version)
            spec = wire.session_spec_from_proto(
                request,
                self.config.sessions,
                self.config.memory.budget_bytes,
                available_models(self.config.generator.models_dir),
                self.config.generator.name,
            )
            warnings += wire.intrinsics_warnings(spec.intrinsics)
        except wire.WireError as exc:
            await self._abort(context, exc)
        if request.resume_session_id:
            session, resumed_at = await self._resume(request.resume_session_id, context)
            spec = session.spec
            warnings.append(f"session resumed from its durable checkpoint at frame {resumed_at}")
        else:
            try:
                session = await self._run(self.registry.open, spec, self._principal(context))
            except ValueError as exc:  # e.g. a budget too small for the memory's fixed tables
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except RegistryError as exc:
                await self._abort(context, exc)
        self.telemetry.sessions_opened.labels("resumed" if request.resume_session_id else "new").inc()
        generator = session.generator
        return pb.OpenSessionResponse(
            session_id=session.id,
            server_version=wire.server_version(),
            capabilities=list(wire.SERVER_CAPABILITIES),
            warnings=warnings,
            generator=pb.GeneratorInfo(
                name=generator.name,
                sha256=generator.sha256,
                kind=generator.card.kind,
                providers=list(generator.providers),
                detail_control=generator.detail_control,
                detail=generator.detail_in_use(spec.detail) or 0.0,
            ),
            memory=wire.memory_stats_to_proto(session.memory.stats()),
            max_message_bytes=self.config.server.max_message_bytes,
        )

    async def _resume(self, session_id: str, context) -> tuple[Session, int]:
        """The session brought back from its durable checkpoint (same principal), and its frame then."""
        if self.store is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this server keeps no durable checkpoints: start it with --checkpoint-dir D (and "
                "--memory-key-file F) to resume sessions",
            )
        principal = self._principal(context)
        try:
            saved = await self._run(self.store.load, session_id)
            if not hmac.compare_digest(saved.owner.encode(), principal.encode()):
                raise NotYourSession(
                    f"session {session_id!r} was opened by another principal: resume a session your token opened"
                )
            session = await self._run(self.registry.open, saved.spec, principal, session_id)
        except (RegistryError, CheckpointMissing, CheckpointRefused) as exc:
            await self._abort(context, exc)
        except ValueError as exc:  # the spec cannot be served here now (e.g. its generator is gone)
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"session {session_id!r} cannot be resumed here: {exc}"
            )
        try:
            await self._run(session.restore, saved.payload, saved.frame_index)
        except (ValueError, SessionClosedError) as exc:  # the snapshot inside does not load: never used
            await self._release(session, None)
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the checkpoint of session {session_id!r} does not load ({exc}); it was not used",
            )
        return session, saved.frame_index

    async def _durable(self, session: Session) -> None:
        """Start a durable checkpoint once checkpoint_every frames passed since the last, in the
        background (the frame loop does not wait for it; one at a time a session)."""
        if self.store is None or session.closed or session.id in self._saving:
            return
        if session.frame_index - session.durable_frame < self.config.server.checkpoint_every:
            return
        self._saving[session.id] = asyncio.create_task(self._save(session))

    async def _save(self, session: Session) -> None:
        try:
            session.durable_frame = session.frame_index
            await self._write_checkpoint(session, session.durable_frame, "every N frames")
        finally:
            self._saving.pop(session.id, None)

    async def _write_checkpoint(self, session: Session, frame: int, when: str) -> bool:
        """Seal ``session`` to its durable checkpoint, counted and logged; False when it failed."""
        try:
            written = await self._run(self.store.save, session)
        except (OSError, SessionClosedError) as exc:
            self.telemetry.durable.labels("failed").inc()
            log.warning(
                "durable checkpoint of session %s (%s) failed: %s",
                session.id,
                when,
                exc,
                extra={"session_id": session.id},
            )
            return False
        self.telemetry.durable.labels("saved").inc()
        log.info(
            "durable checkpoint of session %s (%s) at frame %d, %d bytes",
            session.id,
            when,
            frame,
            written,
            extra={"session_id": session.id, "frame": frame, "bytes": written},
        )
        return True

    async def drain(self, grace_s: float) -> int:
        """Graceful stop, before the port closes: refuse new sessions, end every stream after its frame
        in flight (a StreamEnd each), then checkpoint every session (with --checkpoint-dir). Returns
        the sessions checkpointed."""
        self.stopping = True
        for queue in list(self._streams):
            await queue.shutdown()
        deadline = time.monotonic() + grace_s / 2
        while self._streams and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self.store is None:
            return 0
        for task in list(self._saving.values()):
            with contextlib.suppress(Exception):
                await task
        saved = 0
        for session in self.registry.sessions():
            saved += await self._write_checkpoint(session, session.frame_index, "at shutdown")
        return saved

    async def prune_checkpoints(self) -> int:
        """Delete the durable checkpoints of sessions not open here, older than checkpoint_keep_s."""
        if self.store is None:
            return 0
        open_ids = {s.id for s in self.registry.sessions()}
        pruned = await self._run(self.store.prune, self.config.server.checkpoint_keep_s, open_ids)
        for session_id in pruned:
            log.info(
                "durable checkpoint of session %s deleted: older than %g s and not resumed",
                session_id,
                self.config.server.checkpoint_keep_s,
                extra={"session_id": session_id},
            )
        return len(pruned)

    async def CloseSession(self, request: pb.CloseSessionRequest, context) -> pb.CloseSessionResponse:
        session = await self._session(request.session_id, context)
        if self.store is not None:
            saving = self._saving.get(session.id)
            if saving is not None:
                await saving
            await self._run(self.store.delete, session.id)
        stats = await self._release(session, "client")
        return pb.CloseSessionResponse(memory=wire.memory_stats_to_proto(stats), frames=session.frame_index)

    async def ContextualInference(
        self, request: pb.ContextualInferenceRequest, context
    ) -> pb.ContextualInferenceResponse:
        session = await self._session(request.session_id, context)
        try:
            if not request.HasField("pose"):
                raise wire.WireError(
                    grpc.StatusCode.INVALID_ARGUMENT, "ContextualInferenceRequest.pose is required"
                )
            pose = wire.pose_request_from_proto(request.pose, session.spec)
            if session.streaming and request.commit:
                raise wire.WireError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "session has an active Stream: send the pose on the stream, or set commit=false for a what-if view",
                )
            result = await self._run(session.step_pose, pose, request.commit)
            stats = await self._run(session.stats)
            self.telemetry.record_frame(session.id, "inference", result.timings_ms, stats)
            if request.commit:
                await self._durable(session)
        except (wire.WireError, SessionClosedError) as exc:
            await self._abort(context, exc)
        return pb.ContextualInferenceResponse(frame=wire.frame_to_proto(result, session.spec, stats))

    async def Stream(self, request_iterator, context):
        requests = request_iterator.__aiter__()
        try:
            first = await requests.__anext__()
        except StopAsyncIteration:
            return
        except wire.WireError as exc:  # bytes that do not parse (`runtime.malformed`)
            await self._abort(context, exc)
        session = await self._session(first.session_id, context)
        if session.streaming:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"session {session.id} already has an active Stream: end it before opening another",
            )
        session.streaming = True
        s = self.config.sessions
        queue = _PendingQueue(max_poses=s.max_pending_poses, max_messages=s.max_pending_messages)
        self._streams.add(queue)
        if self.stopping:
            await queue.shutdown()
        reader = asyncio.create_task(self._read_stream(first, requests, session, queue))
        frames_sent = 0
        poses_dropped = 0
        clean_end = False
        far_plane_warned = False  # once a stream: an engine sends every frame the same way
        try:
            while True:
                item, dropped = await queue.get()
                if dropped:
                    poses_dropped += len(dropped)
                    self.telemetry.poses_dropped.inc(len(dropped))
                    yield wire.event(
                        pb.EVENT_KIND_POSES_DROPPED,
                        f"{len(dropped)} stale pose(s) skipped: the client sends faster than frames are made (latest wins)",
                        dropped,
                    )
                if isinstance(item, _PendingPose):
                    try:
                        item = wire.pose_request_from_proto(item.message, session.spec, item.received_us)
                    except wire.WireError as exc:
                        item = exc
                if isinstance(item, wire.WireError):
                    clean_end = True  # a refused message ends the stream, never the session
                    await context.abort(item.code, item.message)
                if isinstance(item, _Shutdown):
                    clean_end = True  # the server ends it: release_on_disconnect does not apply
                    yield wire.event(
                        pb.EVENT_KIND_WARNING,
                        "the server is shutting down: this stream ends here; the session "
                        + (
                            "was checkpointed: resume it on the restarted server with OpenSession(resume_session_id)"
                            if self.store is not None
                            else "is lost with it (no --checkpoint-dir)"
                        ),
                    )
                    yield pb.ServerMessage(
                        end=pb.StreamEnd(frames_sent=frames_sent, poses_dropped=poses_dropped)
                    )
                    return
                if isinstance(item, _End):
                    # the request stream ending without an EndOfStream message (a cancelled or vanished
                    # client) is not a clean end: release_on_disconnect still applies
                    clean_end = item.clean
                    yield pb.ServerMessage(
                        end=pb.StreamEnd(frames_sent=frames_sent, poses_dropped=poses_dropped)
                    )
                    return
                if isinstance(item, _Control):
                    yield await self._control(session, item)
                    continue
                if (
                    isinstance(item, ObservationInput)
                    and item.depth_at_max is not None
                    and not far_plane_warned
                ):
                    far_plane_warned = True
                    count, far = item.depth_at_max
                    yield wire.event(
                        pb.EVENT_KIND_WARNING,
                        f"{count} pixel(s) ({100 * count / item.depth.size:.0f}%) sit at one maximum depth, "
                        f"{far:g} m: is that the engine's far plane? Send depth at or beyond it as +inf (content "
                        "at infinity, remembered by direction; the Python client's Observation(far_plane=...) "
                        "does it), or 0 where depth is unknown; as it is, memory keeps them as a surface there",
                        [item.sequence],
                    )
                if isinstance(item, ObservationInput) and item.depth_masked:
                    yield wire.event(
                        pb.EVENT_KIND_DEPTH_MASKED,
                        f"{item.depth_masked} depth value(s) were NaN, negative or infinite-negative and were treated "
                        "as unknown: send 0 for unknown depth and +inf for content at infinity",
                        [item.sequence],
                    )
                try:
                    frame = await self._run(_make_frame, session, item, self.telemetry)
                except SessionClosedError as exc:
                    await self._abort(context, exc)
                if frame is None:  # an observation that asked for no frame back
                    await self._durable(session)
                    continue
                frames_sent += 1
                yield pb.ServerMessage(frame=frame)
                await self._durable(session)
        finally:
            log.info(
                "stream of session %s ended: %d frames, %d poses dropped",
                session.id,
                frames_sent,
                poses_dropped,
                extra={
                    "session_id": session.id,
                    "frames": frames_sent,
                    "poses_dropped": poses_dropped,
                    "clean": clean_end,
                },
            )
            self._streams.discard(queue)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            session.streaming = False
            session.last_used = time.monotonic()
            if not clean_end and session.spec.release_on_disconnect and not session.closed:
                log.info(
                    "stream for session %s dropped; releasing it (release_on_disconnect)",
                    session.id,
                    extra={"session_id": session.id},
                )
                await self._release(session, "disconnect")

    async def _control(self, session: Session, item: _Control) -> pb.ServerMessage:
        if item.action == pb.Control.ACTION_RESET_MEMORY:
            await self._run(session.reset_memory)
            return wire.event(
                pb.EVENT_KIND_MEMORY_RESET, "memory reset", stats=await self._run(session.stats)
            )
        return wire.event(pb.EVENT_KIND_STATS, "memory stats", stats=await self._run(session.stats))

    async def _read_stream(
        self, first: pb.ClientMessage, requests, session: Session, queue: _PendingQueue
    ) -> None:
        message = first
        while True:
            item = self._convert(message, session)
            await queue.put(item)
            if isinstance(item, (_End, wire.WireError)):
                return
            try:
                message = await requests.__anext__()
            except StopAsyncIteration:
                await queue.put(_End(clean=False))
                return
            except wire.WireError as exc:  # bytes that do not parse: refused like a bad message
                await queue.put(exc)
                return

    def _convert(self, message: pb.ClientMessage, session: Session) -> object:
        if message.session_id and message.session_id != session.id:
            return wire.WireError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"message for session {message.session_id!r} on the stream of session {session.id!r}: "
                "one stream carries one session",
            )
        kind = message.WhichOneof("kind")
        try:
            if kind == "pose":
                return _PendingPose(message.pose, wire.now_us())
            if kind == "observation":
                return wire.observation_from_proto(message.observation, session.spec)
        except wire.WireError as exc:
            return exc
        if kind == "control":
            if message.control.action == pb.Control.ACTION_UNSPECIFIED:
                return wire.WireError(
                    grpc.StatusCode.INVALID_ARGUMENT, "Control.action is unspecified: set an Action"
                )
            return _Control(message.control.action)
        if kind == "end":
            return _End(clean=True)
        return wire.WireError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "empty ClientMessage: set one of pose, observation, control, end",
        )


def _admin_tokens(path: str, tokens: TokenTable | None) -> TokenTable | None:
    """The admin tokens of ``path`` (None: no file); a token that is also a session token is refused."""
    if not path:
        return None
    admins = TokenTable.from_file(path)
    if tokens is not None and admins.shares_a_token_with(tokens):
        raise TokenFileError(
            f"{path} holds a token that --token-file also lists: give the admin service tokens of its own"
        )
    return admins


def is_loopback(host: str) -> bool:
    """``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _read_pem(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} {path}: {exc.strerror}") from None


def server_credentials(server: ServerConfig) -> grpc.ServerCredentials | None:
    """TLS credentials from ``server``'s files (mutual TLS with tls_client_ca), or None for plaintext,
    which only loopback gets unless ``insecure`` is said; ValueError says what to fix."""
    if bool(server.tls_cert) != bool(server.tls_key):
        raise ValueError(
            "TLS needs both --tls-cert and --tls-key (the certificate chain and its private key)"
        )
    if not server.tls_cert:
        if server.tls_client_ca:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key: mutual TLS is TLS first")
        if not is_loopback(server.host) and not server.insecure:
            raise ValueError(
                f"plaintext on {server.host} would expose sessions and memory to the network: serve TLS "
                "(--tls-cert F --tls-key F, and --token-file F to authenticate callers), or say --insecure"
            )
        return None
    pair = (_read_pem(server.tls_key, "TLS private key"), _read_pem(server.tls_cert, "TLS certificate"))
    client_ca = _read_pem(server.tls_client_ca, "client CA") if server.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


async def run_server(config: RuntimeConfig | None = None) -> tuple[grpc.aio.Server, int]:
    """Build, bind and start the server; returns it with the bound port (config.server.port 0: free port)."""
    config = config or RuntimeConfig()
    tune_malloc()  # flat resident memory over long sessions (runtime/allocator.py)
    torch.set_num_threads(config.server.torch_threads)
    executor = ThreadPoolExecutor(max_workers=config.server.workers, thread_name_prefix="mirage-worker")
    credentials = server_credentials(config.server)
    tokens = TokenTable.from_file(config.server.token_file) if config.server.token_file else None
    keyring = KeyRing.from_file(config.server.memory_key_file) if config.server.memory_key_file else None
    store = None
    if config.server.checkpoint_dir:
        if keyring is None:
            raise ValueError(
                "--checkpoint-dir needs --memory-key-file F: durable checkpoints are sealed with the memory key"
            )
        if config.server.checkpoint_every < 1:
            raise ValueError(f"--checkpoint-every {config.server.checkpoint_every}: use 1 frame or more")
        store = CheckpointStore(config.server.checkpoint_dir, keyring, config.sessions.max_budget_bytes)
    admins = _admin_tokens(config.server.admin_token_file, tokens)
    registry = SessionRegistry(config)
    telemetry = Telemetry(registry.sessions, registry.admitted_bytes)
    interceptors = [TelemetryInterceptor(telemetry), AdminAuthInterceptor(admins, tokens)]
    if tokens is not None:
        interceptors.append(TokenAuthInterceptor(tokens))
    if config.server.rate_limit_per_s > 0:
        limiter = RateLimiter(config.server.rate_limit_per_s, config.server.rate_limit_burst)
        interceptors.append(RateLimitInterceptor(limiter, tokens))
    interceptors.append(MalformedMessageInterceptor())
    server = grpc.aio.server(options=grpc_options(config), interceptors=interceptors)
    servicer = MirageServicer(config, registry, executor, telemetry, tokens, keyring, store)
    registry.on_idle_close = lambda session: telemetry.forget_session(session.id, "idle")
    pb_grpc.add_MirageServicer_to_server(servicer, server)
    pb_grpc.add_MirageAdminServicer_to_server(
        MirageAdminServicer(registry, lambda: servicer.stopping), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, ADMIN_SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{config.server.host}:{config.server.port}"
    port = (
        server.add_insecure_port(address)
        if credentials is None
        else server.add_secure_port(address, credentials)
    )
    if port == 0:
        raise OSError(f"could not bind {config.server.host}:{config.server.port}")
    await health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    # SERVING only once the default model is loaded (its sha256 verified) and a throwaway session has
    # run at each warm size (kernels loaded, the generator planned: runtime.warmup).
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(executor, registry.generator, config.generator.name)
    if config.server.warm_sizes:
        warmed = await loop.run_in_executor(executor, warm_up, registry, tuple(config.server.warm_sizes))
        log.info(
            "warmed up: %s",
            ", ".join(f"{size}x{size} in {ms:.0f} ms" for size, ms in warmed.items()),
            extra={"warm_ms": {str(k): round(v, 1) for k, v in warmed.items()}},
        )
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    if config.server.metrics_port:
        server.mirage_metrics_port = telemetry.serve_http(
            config.server.metrics_host, config.server.metrics_port
        )
        log.info(
            "metrics on http://%s:%d/metrics",
            config.server.metrics_host,
            server.mirage_metrics_port,
            extra={"metrics_port": server.mirage_metrics_port},
        )
    await servicer.prune_checkpoints()
    server.mirage_telemetry = telemetry
    server.mirage_registry = registry  # for in-process inspection (tests, bench)
    server.mirage_servicer = servicer
    server.mirage_health = health_servicer
    server.mirage_executor = executor
    return server, port


async def begin_shutdown(server: grpc.aio.Server) -> None:
    """The first step of `shutdown`: health says NOT_SERVING and new sessions are refused (UNAVAILABLE)."""
    server.mirage_servicer.stopping = True
    await server.mirage_health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.mirage_health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)


async def shutdown(server: grpc.aio.Server, grace: float) -> int:
    """Graceful stop: health NOT_SERVING, no new sessions, streams ended with StreamEnd after their
    frame in flight, every session checkpointed (with --checkpoint-dir), then the port closes and
    in-flight calls get the rest of ``grace``. Returns the sessions checkpointed."""
    await begin_shutdown(server)
    saved = await server.mirage_servicer.drain(grace)
    await stop_server(server, grace / 2)
    return saved


async def stop_server(server: grpc.aio.Server, grace: float = 5.0) -> None:
    await server.stop(grace)
    telemetry = getattr(server, "mirage_telemetry", None)
    if telemetry is not None:
        telemetry.stop_http()
    executor = getattr(server, "mirage_executor", None)
    if executor is not None:
        executor.shutdown(wait=True, cancel_futures=True)


async def serve(config: RuntimeConfig) -> None:
    """Run until SIGINT/SIGTERM, then shut down gracefully."""
    server, port = await run_server(config)
    log.info("Mirage serving on %s:%d", config.server.host, port)
    print(f"Mirage serving mirage.v1 on {config.server.host}:{port} (Ctrl-C to stop)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def reap() -> None:
        while True:
            await asyncio.sleep(30)
            closed = registry.close_idle()
            if closed:
                log.info("closed %d idle session(s)", closed)
            await server.mirage_servicer.prune_checkpoints()

    registry: SessionRegistry = server.mirage_registry
    reaper = asyncio.create_task(reap())
    await stop.wait()
    reaper.cancel()
    print("shutting down...", flush=True)
    saved = await shutdown(server, config.server.grace_s)
    print(f"stopped ({saved} session(s) checkpointed)", flush=True)

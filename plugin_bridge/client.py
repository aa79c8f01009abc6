"""Mirage client SDK: async (`AsyncMirageClient`) and sync (`MirageClient`) over the same contract.

Needs only grpcio, protobuf and numpy (Pillow for PNG/JPEG frames). Calls take and return the domain
types of `plugin_bridge.types`; `plugin_bridge.wire` is the only module that sees protobuf. One stream
implementation (`AsyncFrameStream`); the sync client runs it on an event loop of its own thread.
gRPC failures surface as `MirageError` subclasses named after their status, carrying the server's
actionable message.
"""

from __future__ import annotations

import asyncio
import itertools
import threading

import grpc

from plugin_bridge import wire
from plugin_bridge.camera import Intrinsics
from plugin_bridge.types import (
    BoxContents,
    CheckpointInfo,
    ClosedSession,
    Control,
    Event,
    Frame,
    ImportResult,
    MemoryEdit,
    MemoryStats,
    MemoryView,
    Observation,
    Pose,
    Provenance,
    RayPick,
    SealedExport,
    ServerSessions,
    SessionInfo,
    StreamEnd,
)

DEFAULT_MAX_MESSAGE_BYTES = 16 * 2**20


class MirageError(Exception):
    """A failed call; `code` is the gRPC status, `details` the server's message."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, details: str, code: grpc.StatusCode | None = None):
        super().__init__(f"{(code or self.code).name}: {details}")
        self.details = details
        if code is not None:
            self.code = code


class InvalidArgumentError(MirageError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class FailedPreconditionError(MirageError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class NotFoundError(MirageError):
    code = grpc.StatusCode.NOT_FOUND


class ResourceExhaustedError(MirageError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnauthenticatedError(MirageError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(MirageError):
    code = grpc.StatusCode.PERMISSION_DENIED


class UnavailableError(MirageError):
    code = grpc.StatusCode.UNAVAILABLE


_ERRORS = {cls.code: cls for cls in MirageError.__subclasses__()}


def translate_error(exc: grpc.RpcError) -> MirageError:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    cls = _ERRORS.get(code, MirageError)
    return cls(details or "", code)


def channel_options(max_message_bytes: int, keepalive_ms: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_permit_without_calls", 0),
    ]


class AsyncFrameStream:
    """One bidirectional Stream for a session. Send poses / observations / controls; receive frames,
    events and the end."""

    def __init__(self, stub, session_id: str, metadata):
        self.session_id = session_id
        self._outbox: asyncio.Queue = asyncio.Queue()
        self._sequence = itertools.count(1)
        self._first = True
        self.events: list[Event] = []
        self._call = stub.Stream(self._requests(), metadata=metadata)

    async def _requests(self):
        while True:
            msg = await self._outbox.get()
            if msg is None:
                return
            yield msg

    async def _send(self, **kind) -> None:
        msg = wire.client_message(self.session_id if self._first else "", **kind)
        self._first = False
        await self._outbox.put(msg)

    async def send_pose(
        self, pose: Pose, sequence: int | None = None, timestamp_us: int | None = None
    ) -> int:
        seq = next(self._sequence) if sequence is None else sequence
        await self._send(pose=wire.pose_request(pose, seq, timestamp_us))
        return seq

    async def send_observation(self, observation: Observation) -> int:
        seq = next(self._sequence) if observation.sequence is None else observation.sequence
        await self._send(observation=wire.observation_to_proto(observation, seq))
        return seq

    async def send_control(self, action: Control) -> None:
        await self._send(control=action)

    async def end(self) -> None:
        await self._send(end=True)

    async def recv(self) -> Frame | Event | StreamEnd | None:
        """The next server message (None once the stream is over)."""
        try:
            msg = await self._call.read()
        except grpc.RpcError as exc:
            raise translate_error(exc) from None
        if msg is grpc.aio.EOF:
            return None
        return wire.server_message_from_proto(msg)

    async def next_frame(self) -> Frame:
        """Receive until a frame arrives; events seen on the way are kept in `self.events`."""
        while True:
            item = await self.recv()
            if item is None or isinstance(item, StreamEnd):
                raise FailedPreconditionError("stream ended before a frame arrived")
            if isinstance(item, Event):
                self.events.append(item)
                continue
            return item

    async def step(self, pose: Pose) -> Frame:
        """Lock-step: send one pose and wait for its frame (no drops)."""
        seq = await self.send_pose(pose)
        while True:
            frame = await self.next_frame()
            if frame.sequence == seq:
                return frame

    async def close(self) -> StreamEnd | None:
        """Send EndOfStream and drain until the server's end."""
        await self.end()
        end = None
        while (item := await self.recv()) is not None:
            if isinstance(item, Event):
                self.events.append(item)
            elif isinstance(item, StreamEnd):
                end = item
        await self._outbox.put(None)
        return end

    def cancel(self) -> None:
        self._call.cancel()


def tls_credentials(
    ca_file: str, cert_file: str | None = None, key_file: str | None = None
) -> grpc.ChannelCredentials:
    """TLS to a server whose certificate ``ca_file`` (PEM) vouches for; with ``cert_file`` and
    ``key_file`` this client presents its own certificate too (mutual TLS)."""

    def read(path: str | None) -> bytes | None:
        if path is None:
            return None
        with open(path, "rb") as f:
            return f.read()

    if (cert_file is None) != (key_file is None):
        raise ValueError("a client certificate needs both cert_file and key_file")
    return grpc.ssl_channel_credentials(read(ca_file), read(key_file), read(cert_file))


class AsyncMirageClient:
    def __init__(
        self,
        target: str,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        keepalive_ms: int = 20_000,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: tuple[tuple[str, str], ...] = (),
        token: str | None = None,
    ):
        """``credentials``: TLS (`tls_credentials`); ``token``: the bearer token a server started with
        --token-file gave this client (sent as 'authorization: Bearer <token>' on every call)."""
        options = channel_options(max_message_bytes, keepalive_ms)
        if token is not None:
            metadata = (*metadata, ("authorization", f"Bearer {token}"))
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(target, options=options)
        else:
            self.channel = grpc.aio.secure_channel(target, credentials, options=options)
        self.stub = wire.stub(self.channel)
        self.admin = wire.admin_stub(self.channel)
        self.metadata = metadata

    async def __aenter__(self) -> AsyncMirageClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def _call(self, method, request):
        try:
            return await method(request, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise translate_error(exc) from None

    async def open_session(self, intrinsics: Intrinsics, **options) -> SessionInfo:
        """Handshake; keyword options as `wire.open_session_request`."""
        req = wire.open_session_request(intrinsics, **options)
        return wire.session_info_from_proto(await self._call(self.stub.OpenSession, req), req)

    def stream(self, session_id: str) -> AsyncFrameStream:
        return AsyncFrameStream(self.stub, session_id, self.metadata)

    async def render(self, session_id: str, pose: Pose, intrinsics: Intrinsics | None = None) -> MemoryView:
        """Memory seen from ``pose`` (the session's convention), memory unchanged."""
        resp = await self._call(
            self.stub.SpatialMemoryQuery, wire.render_request(session_id, pose, intrinsics)
        )
        return wire.memory_view_from_proto(resp.render)

    async def pick(self, session_id: str, **ray) -> RayPick:
        """The surfaces memory holds along a ray, nearest first, memory unchanged. The ray: ``pose=``
        and ``pixel=(u, v)`` (optionally ``intrinsics=``; pixel centres at integers), or ``origin=`` and
        ``direction=``, all in the session's convention and units; then ``min_distance``,
        ``max_distance`` (0: no limit) and ``max_hits`` (1..16)."""
        resp = await self._call(self.stub.SpatialMemoryQuery, wire.pick_request(session_id, **ray))
        return wire.pick_from_proto(resp.pick)

    async def box(
        self,
        session_id: str,
        lo: tuple[float, float, float],
        hi: tuple[float, float, float],
        max_points: int | None = None,
    ) -> BoxContents:
        """The points of memory in the box [lo, hi] (session convention and units) and the objects among
        them; all counted, at most ``max_points`` returned (server default 100000; 0 counts only)."""
        resp = await self._call(
            self.stub.SpatialMemoryQuery, wire.box_request(session_id, lo, hi, max_points)
        )
        return wire.box_from_proto(resp.box)

    async def stats(self, session_id: str) -> MemoryStats:
        resp = await self._call(self.stub.SpatialMemoryQuery, wire.stats_request(session_id))
        return wire.memory_stats_from_proto(resp.stats)

    async def contextual_inference(
        self, session_id: str, pose: Pose, *, commit: bool = False, sequence: int = 0
    ) -> Frame:
        req = wire.contextual_request(session_id, pose, commit, sequence)
        return wire.frame_from_proto((await self._call(self.stub.ContextualInference, req)).frame)

    async def close_session(self, session_id: str) -> ClosedSession:
        return wire.closed_from_proto(
            await self._call(self.stub.CloseSession, wire.close_request(session_id))
        )

    # -- memory state: sealed export and import, checkpoints, provenance ----------------------------
    async def export_memory(self, session_id: str, chunk_bytes: int = 0) -> SealedExport:
        """The session's memory, sealed by the server (needs a server with --memory-key-file)."""
        try:
            call = self.stub.ExportMemory(
                wire.export_request(session_id, chunk_bytes), metadata=self.metadata
            )
            chunks = [chunk async for chunk in call]
        except grpc.RpcError as exc:
            raise translate_error(exc) from None
        return wire.sealed_export_from_proto(chunks)

    async def import_memory(
        self, session_id: str, export: SealedExport, *, keep_provenance: bool = False
    ) -> ImportResult:
        """Replace the session's memory with ``export`` (verified by the server first; a refused one
        leaves the memory as it was). Unless ``keep_provenance``, what it holds becomes imported."""
        requests = wire.import_requests(session_id, export, keep_provenance)
        try:
            response = await self.stub.ImportMemory(requests, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise translate_error(exc) from None
        return wire.import_result_from_proto(response)

    async def _manage(self, session_id: str, action: str, **fields) -> MemoryEdit:
        request = wire.manage_request(session_id, action, **fields)
        return wire.memory_edit_from_proto(await self._call(self.stub.ManageMemory, request))

    async def checkpoint(self, session_id: str, label: str = "") -> CheckpointInfo:
        """Keep the memory as it is now, on the server; `rollback` returns to it."""
        return (await self._manage(session_id, "checkpoint", label=label)).checkpoint

    async def rollback(self, session_id: str, checkpoint_id: str) -> MemoryEdit:
        return await self._manage(session_id, "rollback", checkpoint_id=checkpoint_id)

    async def checkpoints(self, session_id: str) -> tuple[CheckpointInfo, ...]:
        return (await self._manage(session_id, "list")).checkpoints

    async def delete_checkpoint(self, session_id: str, checkpoint_id: str) -> MemoryEdit:
        return await self._manage(session_id, "delete", checkpoint_id=checkpoint_id)

    async def forget(self, session_id: str, provenance: Provenance | str) -> MemoryEdit:
        """Remove every point and environment texel of one provenance."""
        return await self._manage(session_id, "forget", provenance=Provenance(provenance))

    # -- the admin service -------------------------------------------------------------------------
    async def list_sessions(self) -> ServerSessions:
        """The server's open sessions (needs a client made with an admin token: the server's
        --admin-token-file)."""
        response = await self._call(self.admin.ListSessions, wire.list_sessions_request())
        return wire.server_sessions_from_proto(response)


# ---------------------------------------------------------------------------------------------
# sync: the async client on an event loop of its own thread


class _Loop:
    """An event loop running in a daemon thread; `run` waits for a coroutine there."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="mirage-client", daemon=True)
        self._thread.start()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        """Cancel what is still pending there (a cancelled stream's request generator), then stop."""

        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        self.run(drain())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class FrameStream:
    """Blocking twin of `AsyncFrameStream` (it runs one)."""

    def __init__(self, loop: _Loop, stream: AsyncFrameStream):
        self._loop, self._stream = loop, stream
        self.session_id = stream.session_id

    @property
    def events(self) -> list[Event]:
        return self._stream.events

    def send_pose(self, pose: Pose, sequence: int | None = None, timestamp_us: int | None = None) -> int:
        return self._loop.run(self._stream.send_pose(pose, sequence, timestamp_us))

    def send_observation(self, observation: Observation) -> int:
        return self._loop.run(self._stream.send_observation(observation))

    def send_control(self, action: Control) -> None:
        self._loop.run(self._stream.send_control(action))

    def end(self) -> None:
        self._loop.run(self._stream.end())

    def recv(self) -> Frame | Event | StreamEnd | None:
        return self._loop.run(self._stream.recv())

    def next_frame(self) -> Frame:
        return self._loop.run(self._stream.next_frame())

    def step(self, pose: Pose) -> Frame:
        return self._loop.run(self._stream.step(pose))

    def close(self) -> StreamEnd | None:
        return self._loop.run(self._stream.close())

    def cancel(self) -> None:
        self._loop.loop.call_soon_threadsafe(self._stream.cancel)


class MirageClient:
    """Blocking client (for scripts, engine plugins without an event loop): `AsyncMirageClient` on an
    event loop of its own thread."""

    def __init__(self, target: str, **options):
        self._loop = _Loop()

        async def make() -> AsyncMirageClient:
            return AsyncMirageClient(target, **options)

        self._client = self._loop.run(make())

    def __enter__(self) -> MirageClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._loop.run(self._client.close())
        self._loop.stop()

    def open_session(self, intrinsics: Intrinsics, **options) -> SessionInfo:
        return self._loop.run(self._client.open_session(intrinsics, **options))

    def stream(self, session_id: str) -> FrameStream:
        async def make() -> AsyncFrameStream:
            return self._client.stream(session_id)

        return FrameStream(self._loop, self._loop.run(make()))

    def render(self, session_id: str, pose: Pose, intrinsics: Intrinsics | None = None) -> MemoryView:
        return self._loop.run(self._client.render(session_id, pose, intrinsics))

    def pick(self, session_id: str, **ray) -> RayPick:
        return self._loop.run(self._client.pick(session_id, **ray))

    def box(
        self,
        session_id: str,
        lo: tuple[float, float, float],
        hi: tuple[float, float, float],
        max_points: int | None = None,
    ) -> BoxContents:
        return self._loop.run(self._client.box(session_id, lo, hi, max_points))

    def stats(self, session_id: str) -> MemoryStats:
        return self._loop.run(self._client.stats(session_id))

    def contextual_inference(
        self, session_id: str, pose: Pose, *, commit: bool = False, sequence: int = 0
    ) -> Frame:
        return self._loop.run(
            self._client.contextual_inference(session_id, pose, commit=commit, sequence=sequence)
        )

    def close_session(self, session_id: str) -> ClosedSession:
        return self._loop.run(self._client.close_session(session_id))

    def export_memory(self, session_id: str, chunk_bytes: int = 0) -> SealedExport:
        return self._loop.run(self._client.export_memory(session_id, chunk_bytes))

    def import_memory(
        self, session_id: str, export: SealedExport, *, keep_provenance: bool = False
    ) -> ImportResult:
        return self._loop.run(self._client.import_memory(session_id, export, keep_provenance=keep_provenance))

    def checkpoint(self, session_id: str, label: str = "") -> CheckpointInfo:
        return self._loop.run(self._client.checkpoint(session_id, label))

    def rollback(self, session_id: str, checkpoint_id: str) -> MemoryEdit:
        return self._loop.run(self._client.rollback(session_id, checkpoint_id))

    def checkpoints(self, session_id: str) -> tuple[CheckpointInfo, ...]:
        return self._loop.run(self._client.checkpoints(session_id))

    def delete_checkpoint(self, session_id: str, checkpoint_id: str) -> MemoryEdit:
        return self._loop.run(self._client.delete_checkpoint(session_id, checkpoint_id))

    def forget(self, session_id: str, provenance: Provenance | str) -> MemoryEdit:
        return self._loop.run(self._client.forget(session_id, provenance))

    def list_sessions(self) -> ServerSessions:
        return self._loop.run(self._client.list_sessions())

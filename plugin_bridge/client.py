"""Mirage client SDK: async (`AsyncMirageClient`) and sync (`MirageClient`) over the same contract.

Needs only grpcio, protobuf and numpy (Pillow for PNG/JPEG frames). gRPC failures surface as
`MirageError` subclasses named after their status, carrying the server's actionable message.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
from mirage.v1 import mirage_pb2 as pb
from mirage.v1 import mirage_pb2_grpc as pb_grpc

from plugin_bridge.camera import Intrinsics
from plugin_bridge.codec import DepthEncoding, FrameEncoding
from plugin_bridge.conventions import Convention
from plugin_bridge.wire import (
    CLIENT_PROTOCOL_VERSION,
    CONVENTION_TO_PROTO,
    STORAGE_TO_PROTO,
    Event,
    Frame,
    MemoryView,
    event_from_proto,
    frame_from_proto,
    intrinsics_message,
    memory_view_from_proto,
    now_us,
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


@dataclass
class SessionInfo:
    session_id: str
    server_version: str
    capabilities: list[str]
    warnings: list[str]
    generator: pb.GeneratorInfo
    memory: pb.MemoryStats
    convention: Convention
    intrinsics: Intrinsics


def open_session_request(
    intrinsics: Intrinsics,
    *,
    convention: Convention | str = Convention.OPENCV,
    units_per_meter: float = 0.0,
    frame_encoding: FrameEncoding = FrameEncoding.RAW_RGB8,
    depth_encoding: DepthEncoding = DepthEncoding.FLOAT16_METERS,
    generator: str = "",
    budget_bytes: int = 0,
    window_frames: int = 0,
    storage: str = "",
    seed: int = 0,
    release_on_disconnect: bool = False,
    capabilities: tuple[str, ...] = ("generate", "observation"),
    protocol_version: tuple[int, int, int] = CLIENT_PROTOCOL_VERSION,
    jpeg_quality: int = 0,
    generator_detail: float | None = None,
) -> pb.OpenSessionRequest:
    """``generator_detail``: the generator's detail strength (models with detail control; None: the
    model's default, 0: its mean prediction, 1: as trained)."""
    major, minor, patch = protocol_version
    req = pb.OpenSessionRequest(
        protocol_version=pb.Version(major=major, minor=minor, patch=patch),
        capabilities=list(capabilities),
        convention=CONVENTION_TO_PROTO[Convention(str(getattr(convention, "value", convention)).lower())],
        units_per_meter=units_per_meter,
        intrinsics=intrinsics_message(intrinsics),
        frame_encoding=int(frame_encoding),
        depth_encoding=int(depth_encoding),
        generator=generator,
        memory=pb.MemoryOptions(
            budget_bytes=budget_bytes, window_frames=window_frames, storage=STORAGE_TO_PROTO[storage]
        ),
        seed=seed,
        release_on_disconnect=release_on_disconnect,
        jpeg_quality=jpeg_quality,
    )
    if generator_detail is not None:
        req.generator_detail = generator_detail
    return req


def _session_info(resp: pb.OpenSessionResponse, req: pb.OpenSessionRequest) -> SessionInfo:
    v = resp.server_version
    inv = {v_: k for k, v_ in CONVENTION_TO_PROTO.items()}
    k = req.intrinsics
    return SessionInfo(
        session_id=resp.session_id,
        server_version=f"{v.major}.{v.minor}.{v.patch}",
        capabilities=list(resp.capabilities),
        warnings=list(resp.warnings),
        generator=resp.generator,
        memory=resp.memory,
        convention=inv.get(req.convention, Convention.OPENCV),
        intrinsics=Intrinsics(k.fx, k.fy, k.cx, k.cy, k.width, k.height),
    )


def _decode_server_message(msg: pb.ServerMessage) -> Frame | Event | pb.StreamEnd:
    kind = msg.WhichOneof("kind")
    if kind == "frame":
        return frame_from_proto(msg.frame)
    if kind == "event":
        return event_from_proto(msg.event)
    return msg.end


def _pose_request(pose: pb.Pose, sequence: int, timestamp_us: int | None) -> pb.PoseRequest:
    return pb.PoseRequest(
        sequence=sequence, client_timestamp_us=now_us() if timestamp_us is None else timestamp_us, pose=pose
    )


# ---------------------------------------------------------------------------------------------
# async


class AsyncFrameStream:
    """One bidirectional Stream for a session. Send poses/observations; receive frames and events."""

    def __init__(self, stub: pb_grpc.MirageStub, session_id: str, metadata):
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
        msg = pb.ClientMessage(session_id=self.session_id if self._first else "", **kind)
        self._first = False
        await self._outbox.put(msg)

    async def send_pose(
        self, pose: pb.Pose, sequence: int | None = None, timestamp_us: int | None = None
    ) -> int:
        seq = next(self._sequence) if sequence is None else sequence
        await self._send(pose=_pose_request(pose, seq, timestamp_us))
        return seq

    async def send_observation(self, observation: pb.Observation) -> int:
        await self._send(observation=observation)
        return observation.sequence

    async def send_control(self, action: int) -> None:
        await self._send(control=pb.Control(action=action))

    async def end(self) -> None:
        await self._send(end=pb.EndOfStream())

    async def recv(self) -> Frame | Event | pb.StreamEnd | None:
        """The next server message (None once the stream is over)."""
        try:
            msg = await self._call.read()
        except grpc.RpcError as exc:
            raise translate_error(exc) from None
        if msg is grpc.aio.EOF:
            return None
        return _decode_server_message(msg)

    async def next_frame(self) -> Frame:
        """Receive until a frame arrives; events seen on the way are kept in `self.events`."""
        while True:
            item = await self.recv()
            if item is None or isinstance(item, pb.StreamEnd):
                raise FailedPreconditionError("stream ended before a frame arrived")
            if isinstance(item, Event):
                self.events.append(item)
                continue
            return item

    async def step(self, pose: pb.Pose) -> Frame:
        """Lock-step: send one pose and wait for its frame (no drops)."""
        seq = await self.send_pose(pose)
        while True:
            frame = await self.next_frame()
            if frame.sequence == seq:
                return frame

    async def close(self) -> pb.StreamEnd | None:
        """Send EndOfStream and drain until the server's end."""
        await self.end()
        end = None
        while (item := await self.recv()) is not None:
            if isinstance(item, Event):
                self.events.append(item)
            elif isinstance(item, pb.StreamEnd):
                end = item
        await self._outbox.put(None)
        return end

    def cancel(self) -> None:
        self._call.cancel()


class AsyncMirageClient:
    def __init__(
        self,
        target: str,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        keepalive_ms: int = 20_000,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: tuple[tuple[str, str], ...] = (),
    ):
        options = channel_options(max_message_bytes, keepalive_ms)
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(target, options=options)
        else:
            self.channel = grpc.aio.secure_channel(target, credentials, options=options)
        self.stub = pb_grpc.MirageStub(self.channel)
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
        """Handshake; keyword options as `open_session_request`."""
        req = open_session_request(intrinsics, **options)
        return _session_info(await self._call(self.stub.OpenSession, req), req)

    def stream(self, session_id: str) -> AsyncFrameStream:
        return AsyncFrameStream(self.stub, session_id, self.metadata)

    async def render(
        self, session_id: str, pose: pb.Pose, intrinsics: Intrinsics | None = None
    ) -> MemoryView:
        query = pb.RenderQuery(pose=pose)
        if intrinsics is not None:
            query.intrinsics.CopyFrom(intrinsics_message(intrinsics))
        resp = await self._call(
            self.stub.SpatialMemoryQuery, pb.SpatialMemoryQueryRequest(session_id=session_id, render=query)
        )
        return memory_view_from_proto(resp.render)

    async def stats(self, session_id: str) -> pb.MemoryStats:
        req = pb.SpatialMemoryQueryRequest(session_id=session_id, stats=pb.StatsQuery())
        return (await self._call(self.stub.SpatialMemoryQuery, req)).stats

    async def contextual_inference(
        self, session_id: str, pose: pb.Pose, *, commit: bool = False, sequence: int = 0
    ) -> Frame:
        req = pb.ContextualInferenceRequest(
            session_id=session_id, pose=_pose_request(pose, sequence, None), commit=commit
        )
        return frame_from_proto((await self._call(self.stub.ContextualInference, req)).frame)

    async def close_session(self, session_id: str) -> pb.CloseSessionResponse:
        return await self._call(self.stub.CloseSession, pb.CloseSessionRequest(session_id=session_id))


# ---------------------------------------------------------------------------------------------
# sync

_CLOSE = object()


class FrameStream:
    """Blocking twin of `AsyncFrameStream`."""

    def __init__(self, stub: pb_grpc.MirageStub, session_id: str, metadata):
        self.session_id = session_id
        self._outbox: queue.Queue = queue.Queue()
        self._sequence = itertools.count(1)
        self._first = True
        self.events: list[Event] = []
        self._call = stub.Stream(self._requests(), metadata=metadata)
        self._responses: Iterator[pb.ServerMessage] = iter(self._call)

    def _requests(self):
        while True:
            msg = self._outbox.get()
            if msg is _CLOSE:
                return
            yield msg

    def _send(self, **kind) -> None:
        self._outbox.put(pb.ClientMessage(session_id=self.session_id if self._first else "", **kind))
        self._first = False

    def send_pose(self, pose: pb.Pose, sequence: int | None = None, timestamp_us: int | None = None) -> int:
        seq = next(self._sequence) if sequence is None else sequence
        self._send(pose=_pose_request(pose, seq, timestamp_us))
        return seq

    def send_observation(self, observation: pb.Observation) -> int:
        self._send(observation=observation)
        return observation.sequence

    def send_control(self, action: int) -> None:
        self._send(control=pb.Control(action=action))

    def end(self) -> None:
        self._send(end=pb.EndOfStream())

    def recv(self) -> Frame | Event | pb.StreamEnd | None:
        try:
            msg = next(self._responses)
        except StopIteration:
            return None
        except grpc.RpcError as exc:
            raise translate_error(exc) from None
        return _decode_server_message(msg)

    def next_frame(self) -> Frame:
        while True:
            item = self.recv()
            if item is None or isinstance(item, pb.StreamEnd):
                raise FailedPreconditionError("stream ended before a frame arrived")
            if isinstance(item, Event):
                self.events.append(item)
                continue
            return item

    def step(self, pose: pb.Pose) -> Frame:
        seq = self.send_pose(pose)
        while True:
            frame = self.next_frame()
            if frame.sequence == seq:
                return frame

    def close(self) -> pb.StreamEnd | None:
        self.end()
        end = None
        while (item := self.recv()) is not None:
            if isinstance(item, Event):
                self.events.append(item)
            elif isinstance(item, pb.StreamEnd):
                end = item
        self._outbox.put(_CLOSE)
        return end

    def cancel(self) -> None:
        self._call.cancel()
        self._outbox.put(_CLOSE)


class MirageClient:
    """Blocking client (for scripts, engine plugins without an event loop)."""

    def __init__(
        self,
        target: str,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        keepalive_ms: int = 20_000,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: tuple[tuple[str, str], ...] = (),
    ):
        options = channel_options(max_message_bytes, keepalive_ms)
        if credentials is None:
            self.channel = grpc.insecure_channel(target, options=options)
        else:
            self.channel = grpc.secure_channel(target, credentials, options=options)
        self.stub = pb_grpc.MirageStub(self.channel)
        self.metadata = metadata

    def __enter__(self) -> MirageClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def _call(self, method, request):
        try:
            return method(request, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise translate_error(exc) from None

    def open_session(self, intrinsics: Intrinsics, **options) -> SessionInfo:
        req = open_session_request(intrinsics, **options)
        return _session_info(self._call(self.stub.OpenSession, req), req)

    def stream(self, session_id: str) -> FrameStream:
        return FrameStream(self.stub, session_id, self.metadata)

    def render(self, session_id: str, pose: pb.Pose, intrinsics: Intrinsics | None = None) -> MemoryView:
        query = pb.RenderQuery(pose=pose)
        if intrinsics is not None:
            query.intrinsics.CopyFrom(intrinsics_message(intrinsics))
        resp = self._call(
            self.stub.SpatialMemoryQuery, pb.SpatialMemoryQueryRequest(session_id=session_id, render=query)
        )
        return memory_view_from_proto(resp.render)

    def stats(self, session_id: str) -> pb.MemoryStats:
        return self._call(
            self.stub.SpatialMemoryQuery,
            pb.SpatialMemoryQueryRequest(session_id=session_id, stats=pb.StatsQuery()),
        ).stats

    def contextual_inference(
        self, session_id: str, pose: pb.Pose, *, commit: bool = False, sequence: int = 0
    ) -> Frame:
        req = pb.ContextualInferenceRequest(
            session_id=session_id, pose=_pose_request(pose, sequence, None), commit=commit
        )
        return frame_from_proto(self._call(self.stub.ContextualInference, req).frame)

    def close_session(self, session_id: str) -> pb.CloseSessionResponse:
        return self._call(self.stub.CloseSession, pb.CloseSessionRequest(session_id=session_id))

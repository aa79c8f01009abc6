"""The client's one conversion module: the domain types (`plugin_bridge.types`) <-> mirage.v1 messages.
Nothing else in the client touches generated protobuf code."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator

import numpy as np
from mirage.v1 import mirage_pb2 as pb
from mirage.v1 import mirage_pb2_grpc as pb_grpc

from plugin_bridge.camera import Intrinsics
from plugin_bridge.codec import (
    DepthEncoding,
    FrameEncoding,
    decode_depth,
    decode_rgb,
    encode_depth,
    encode_instance_ids,
    encode_rgb,
)
from plugin_bridge.conventions import Convention
from plugin_bridge.types import (
    BoxContents,
    CheckpointInfo,
    ClosedSession,
    Control,
    Event,
    Frame,
    GeneratorInfo,
    ImportResult,
    MemoryEdit,
    MemoryStats,
    MemoryView,
    ObjectExtent,
    Observation,
    Pose,
    Provenance,
    RayPick,
    SealedExport,
    ServerSessions,
    SessionInfo,
    SessionSummary,
    StreamEnd,
    SurfaceHit,
)

CLIENT_PROTOCOL_VERSION = (1, 1, 0)

STORAGE_TO_PROTO = {
    "": pb.MEMORY_STORAGE_UNSPECIFIED,
    "full": pb.MEMORY_STORAGE_FULL,
    "quantised": pb.MEMORY_STORAGE_QUANTISED,
}
"""Memory storage modes by name ("" leaves it to the server: full)."""
STORAGE_FROM_PROTO = {
    pb.MEMORY_STORAGE_UNSPECIFIED: "full",
    pb.MEMORY_STORAGE_FULL: "full",
    pb.MEMORY_STORAGE_QUANTISED: "quantised",
}

CONVENTION_TO_PROTO = {
    Convention.OPENCV: pb.POSE_CONVENTION_OPENCV,
    Convention.OPENGL: pb.POSE_CONVENTION_OPENGL,
    Convention.UNITY: pb.POSE_CONVENTION_UNITY,
    Convention.UNREAL: pb.POSE_CONVENTION_UNREAL,
    Convention.GODOT: pb.POSE_CONVENTION_GODOT,
    Convention.ARKIT: pb.POSE_CONVENTION_ARKIT,
    Convention.ARCORE: pb.POSE_CONVENTION_ARCORE,
    Convention.PANDA3D: pb.POSE_CONVENTION_PANDA3D,
}
_CONVENTION_FROM_PROTO = {v: k for k, v in CONVENTION_TO_PROTO.items()}
_CONTROL_TO_PROTO = {
    Control.RESET_MEMORY: pb.Control.ACTION_RESET_MEMORY,
    Control.REPORT_STATS: pb.Control.ACTION_REPORT_STATS,
}


def now_us() -> int:
    return time.time_ns() // 1000


def stub(channel) -> pb_grpc.MirageStub:
    """The generated stub over a grpc (or grpc.aio) channel."""
    return pb_grpc.MirageStub(channel)


def admin_stub(channel) -> pb_grpc.MirageAdminStub:
    return pb_grpc.MirageAdminStub(channel)


# -- client -> server ------------------------------------------------------------------------------
def pose_to_proto(pose: Pose) -> pb.Pose:
    p, q = pose.position, pose.rotation_wxyz
    return pb.Pose(
        position=pb.Vec3(x=p[0], y=p[1], z=p[2]), rotation=pb.Quaternion(w=q[0], x=q[1], y=q[2], z=q[3])
    )


def pose_request(pose: Pose, sequence: int, timestamp_us: int | None = None) -> pb.PoseRequest:
    return pb.PoseRequest(
        sequence=sequence,
        client_timestamp_us=now_us() if timestamp_us is None else timestamp_us,
        pose=pose_to_proto(pose),
    )


def intrinsics_to_proto(k: Intrinsics) -> pb.Intrinsics:
    return pb.Intrinsics(fx=k.fx, fy=k.fy, cx=k.cx, cy=k.cy, width=k.width, height=k.height)


def observation_to_proto(obs: Observation, sequence: int) -> pb.Observation:
    """The message for ``obs`` (numbered ``sequence``): depth at or beyond its far plane goes as +inf,
    instance ids are checked and negative ones sent as 0 (no object)."""
    rgb = np.asarray(obs.rgb)
    depth = np.asarray(obs.depth, dtype=np.float32)
    if obs.far_plane is not None:
        if not (np.isfinite(obs.far_plane) and obs.far_plane > 0):
            raise ValueError(
                f"far_plane={obs.far_plane}: give the engine's far plane in metres (> 0), or None"
            )
        depth = np.where(depth >= np.float32(obs.far_plane), np.float32(np.inf), depth)
    h, w = rgb.shape[:2]
    return pb.Observation(
        sequence=sequence,
        client_timestamp_us=now_us() if obs.timestamp_us is None else obs.timestamp_us,
        pose=pose_to_proto(obs.pose),
        rgb=pb.Image(
            encoding=int(obs.frame_encoding), width=w, height=h, data=encode_rgb(rgb, obs.frame_encoding)
        ),
        depth=pb.DepthImage(
            encoding=int(obs.depth_encoding), width=w, height=h, data=encode_depth(depth, obs.depth_encoding)
        ),
        instance_ids=b"" if obs.instance_ids is None else encode_instance_ids(obs.instance_ids),
        return_frame=obs.return_frame,
    )


def client_message(
    session_id: str,
    *,
    pose: pb.PoseRequest | None = None,
    observation: pb.Observation | None = None,
    control: Control | None = None,
    end: bool = False,
) -> pb.ClientMessage:
    """One stream message (``session_id`` only on a stream's first)."""
    if pose is not None:
        return pb.ClientMessage(session_id=session_id, pose=pose)
    if observation is not None:
        return pb.ClientMessage(session_id=session_id, observation=observation)
    if control is not None:
        return pb.ClientMessage(session_id=session_id, control=pb.Control(action=_CONTROL_TO_PROTO[control]))
    if end:
        return pb.ClientMessage(session_id=session_id, end=pb.EndOfStream())
    raise ValueError("a stream message needs a pose, an observation, a control or the end")


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
    resume_session_id: str = "",
) -> pb.OpenSessionRequest:
    """``generator_detail``: the generator's detail strength (models with detail control; None: the
    model's default, 0: its mean prediction, 1: as trained). ``resume_session_id``: bring that session
    back from its newest checkpoint (a server with --checkpoint-dir; the same principal)."""
    major, minor, patch = protocol_version
    req = pb.OpenSessionRequest(
        protocol_version=pb.Version(major=major, minor=minor, patch=patch),
        capabilities=list(capabilities),
        convention=CONVENTION_TO_PROTO[Convention(str(getattr(convention, "value", convention)).lower())],
        units_per_meter=units_per_meter,
        intrinsics=intrinsics_to_proto(intrinsics),
        frame_encoding=int(frame_encoding),
        depth_encoding=int(depth_encoding),
        generator=generator,
        memory=pb.MemoryOptions(
            budget_bytes=budget_bytes, window_frames=window_frames, storage=STORAGE_TO_PROTO[storage]
        ),
        seed=seed,
        release_on_disconnect=release_on_disconnect,
        jpeg_quality=jpeg_quality,
        resume_session_id=resume_session_id,
    )
    if generator_detail is not None:
        req.generator_detail = generator_detail
    return req


def render_request(
    session_id: str, pose: Pose, intrinsics: Intrinsics | None = None
) -> pb.SpatialMemoryQueryRequest:
    query = pb.RenderQuery(pose=pose_to_proto(pose))
    if intrinsics is not None:
        query.intrinsics.CopyFrom(intrinsics_to_proto(intrinsics))
    return pb.SpatialMemoryQueryRequest(session_id=session_id, render=query)


def pick_request(
    session_id: str,
    *,
    pose: Pose | None = None,
    pixel: tuple[float, float] | None = None,
    intrinsics: Intrinsics | None = None,
    origin: tuple[float, float, float] | None = None,
    direction: tuple[float, float, float] | None = None,
    min_distance: float = 0.0,
    max_distance: float = 0.0,
    max_hits: int = 1,
) -> pb.SpatialMemoryQueryRequest:
    """A pick through ``pixel`` (u, v) of a camera at ``pose``, or from ``origin`` along ``direction``."""
    query = pb.PickQuery(min_distance=min_distance, max_distance=max_distance, max_hits=max_hits)
    if pose is not None or pixel is not None:
        if pose is None or pixel is None or origin is not None or direction is not None:
            raise ValueError(
                "pick either through a pixel (pose and pixel) or along a ray (origin and direction)"
            )
        query.pixel.CopyFrom(pb.PixelRay(pose=pose_to_proto(pose), u=float(pixel[0]), v=float(pixel[1])))
        if intrinsics is not None:
            query.pixel.intrinsics.CopyFrom(intrinsics_to_proto(intrinsics))
    elif origin is not None and direction is not None:
        query.world.CopyFrom(pb.WorldRay(origin=_vec3(origin), direction=_vec3(direction)))
    else:
        raise ValueError("pick needs pose and pixel, or origin and direction")
    return pb.SpatialMemoryQueryRequest(session_id=session_id, pick=query)


def box_request(
    session_id: str,
    lo: tuple[float, float, float],
    hi: tuple[float, float, float],
    max_points: int | None = None,
) -> pb.SpatialMemoryQueryRequest:
    query = pb.BoxQuery(min=_vec3(lo), max=_vec3(hi))
    if max_points is not None:
        query.max_points = max_points
    return pb.SpatialMemoryQueryRequest(session_id=session_id, box=query)


def _vec3(v) -> pb.Vec3:
    x, y, z = (float(c) for c in v)
    return pb.Vec3(x=x, y=y, z=z)


def _tuple3(v: pb.Vec3) -> tuple[float, float, float]:
    return (v.x, v.y, v.z)


def _rgb(packed: int) -> tuple[int, int, int]:
    return ((packed >> 16) & 255, (packed >> 8) & 255, packed & 255)


def _provenance(value: int) -> Provenance | None:
    return next((p for p, v in PROVENANCE_TO_PROTO.items() if v == value), None)


def pick_from_proto(msg: pb.PickResult) -> RayPick:
    hits = tuple(
        SurfaceHit(
            point=_tuple3(h.point),
            distance=h.distance,
            rgb=_rgb(h.rgb),
            object_id=h.object_id,
            provenance=_provenance(h.provenance),
            confidence=h.confidence,
            first_seen_frame=h.first_seen_frame,
            last_seen_frame=h.last_seen_frame,
            hit_count=h.hit_count,
            radius=h.radius,
            points=h.points,
        )
        for h in msg.hits
    )
    env = _rgb(msg.environment_rgb) if msg.environment else None
    return RayPick(hits, env, msg.chunks_tested, msg.points_tested)


def box_from_proto(msg: pb.BoxResult) -> BoxContents:
    n = msg.returned
    objects = tuple(
        ObjectExtent(
            o.object_id, o.points, _tuple3(o.centroid), _tuple3(o.min), _tuple3(o.max), o.last_seen_frame
        )
        for o in msg.objects
    )
    return BoxContents(
        inside=msg.inside,
        xyz=np.frombuffer(msg.xyz, dtype="<f4").reshape(n, 3).astype(np.float32),
        rgb=np.frombuffer(msg.rgb, dtype=np.uint8).reshape(n, 3).copy(),
        object_ids=np.frombuffer(msg.object_ids, dtype="<u4").astype(np.uint32),
        provenance=np.frombuffer(msg.provenance, dtype=np.uint8).copy(),
        last_seen_frames=np.frombuffer(msg.last_seen_frames, dtype="<u4").astype(np.uint32),
        objects=objects,
        chunks_tested=msg.chunks_tested,
    )


def stats_request(session_id: str) -> pb.SpatialMemoryQueryRequest:
    return pb.SpatialMemoryQueryRequest(session_id=session_id, stats=pb.StatsQuery())


def contextual_request(
    session_id: str, pose: Pose, commit: bool, sequence: int
) -> pb.ContextualInferenceRequest:
    return pb.ContextualInferenceRequest(
        session_id=session_id, pose=pose_request(pose, sequence), commit=commit
    )


def close_request(session_id: str) -> pb.CloseSessionRequest:
    return pb.CloseSessionRequest(session_id=session_id)


PROVENANCE_TO_PROTO = {
    Provenance.OBSERVED: pb.PROVENANCE_OBSERVED,
    Provenance.GENERATED: pb.PROVENANCE_GENERATED,
    Provenance.IMPORTED: pb.PROVENANCE_IMPORTED,
}


def export_request(session_id: str, chunk_bytes: int = 0) -> pb.ExportMemoryRequest:
    return pb.ExportMemoryRequest(session_id=session_id, chunk_bytes=chunk_bytes)


def import_requests(
    session_id: str, export: SealedExport, keep_provenance: bool
) -> Iterator[pb.ImportMemoryRequest]:
    """The ImportMemory stream of ``export``: the session and options ride on the first message."""
    for i, raw in enumerate(export.chunks):
        chunk = pb.SealedChunk.FromString(raw)
        if i == 0:
            yield pb.ImportMemoryRequest(session_id=session_id, keep_provenance=keep_provenance, chunk=chunk)
        else:
            yield pb.ImportMemoryRequest(chunk=chunk)


def manage_request(session_id: str, action: str, **fields) -> pb.ManageMemoryRequest:
    """A ManageMemory request: ``action`` one of checkpoint (label), rollback / delete (checkpoint_id),
    forget (provenance: a `Provenance`), list."""
    kinds = {
        "checkpoint": pb.CreateCheckpoint,
        "rollback": pb.Rollback,
        "forget": pb.Forget,
        "list": pb.ListCheckpoints,
        "delete": pb.DeleteCheckpoint,
    }
    if "provenance" in fields:
        fields["provenance"] = PROVENANCE_TO_PROTO[Provenance(fields["provenance"])]
    return pb.ManageMemoryRequest(session_id=session_id, **{action: kinds[action](**fields)})


# -- server -> client ------------------------------------------------------------------------------
def memory_stats_to_proto(stats: MemoryStats) -> pb.MemoryStats:
    """The server's side of `memory_stats_from_proto` (one dataclass, field for field)."""
    return pb.MemoryStats(**{**dataclasses.asdict(stats), "storage": STORAGE_TO_PROTO[stats.storage]})


def memory_stats_from_proto(msg: pb.MemoryStats) -> MemoryStats:
    values = {f.name: getattr(msg, f.name) for f in pb.MemoryStats.DESCRIPTOR.fields}
    values["storage"] = STORAGE_FROM_PROTO[msg.storage]
    return MemoryStats(**values)


def session_info_from_proto(resp: pb.OpenSessionResponse, req: pb.OpenSessionRequest) -> SessionInfo:
    v, g, k = resp.server_version, resp.generator, req.intrinsics
    return SessionInfo(
        session_id=resp.session_id,
        server_version=f"{v.major}.{v.minor}.{v.patch}",
        capabilities=tuple(resp.capabilities),
        warnings=tuple(resp.warnings),
        generator=GeneratorInfo(g.name, g.sha256, g.kind, tuple(g.providers), g.detail_control, g.detail),
        memory=memory_stats_from_proto(resp.memory),
        convention=_CONVENTION_FROM_PROTO.get(req.convention, Convention.OPENCV),
        intrinsics=Intrinsics(k.fx, k.fy, k.cx, k.cy, k.width, k.height),
        max_message_bytes=resp.max_message_bytes,
    )


def _decode_depth(msg: pb.DepthImage) -> np.ndarray | None:
    if msg.encoding == DepthEncoding.NONE or not msg.data:
        return None
    return decode_depth(msg.data, DepthEncoding(msg.encoding or 1), msg.width, msg.height)


def frame_from_proto(msg: pb.Frame) -> Frame:
    return Frame(
        sequence=msg.sequence,
        client_timestamp_us=msg.client_timestamp_us,
        server_received_us=msg.server_received_us,
        server_sent_us=msg.server_sent_us,
        received_us=now_us(),
        frame_index=msg.frame_index,
        rgb=decode_rgb(msg.rgb.data, FrameEncoding(msg.rgb.encoding or 1), msg.rgb.width, msg.rgb.height),
        depth=_decode_depth(msg.depth),
        coverage=msg.coverage,
        observed=msg.observed,
        timings_ms={f.name: getattr(msg.timings, f.name) for f in pb.StageTimings.DESCRIPTOR.fields},
        memory=memory_stats_from_proto(msg.memory),
    )


def event_from_proto(msg: pb.Event) -> Event:
    return Event(
        kind=pb.EventKind.Name(msg.kind).removeprefix("EVENT_KIND_"),
        message=msg.message,
        sequences=list(msg.sequences),
        memory=memory_stats_from_proto(msg.memory) if msg.HasField("memory") else None,
    )


def server_message_from_proto(msg: pb.ServerMessage) -> Frame | Event | StreamEnd:
    kind = msg.WhichOneof("kind")
    if kind == "frame":
        return frame_from_proto(msg.frame)
    if kind == "event":
        return event_from_proto(msg.event)
    return StreamEnd(msg.end.frames_sent, msg.end.poses_dropped)


def memory_view_from_proto(msg: pb.MemoryRender) -> MemoryView:
    w, h = msg.rgb.width, msg.rgb.height
    coverage = np.frombuffer(msg.coverage, dtype=np.uint8).reshape(h, w).astype(np.float32) / 255.0

    def plane(data: bytes, dtype: str) -> np.ndarray | None:  # absent from a server before protocol 1.1
        return np.frombuffer(data, dtype=dtype).reshape(h, w).copy() if data else None

    confidence = plane(msg.confidence, "u1")
    return MemoryView(
        rgb=decode_rgb(msg.rgb.data, FrameEncoding(msg.rgb.encoding or 1), w, h),
        depth=_decode_depth(msg.depth),
        coverage=coverage,
        coverage_fraction=msg.coverage_fraction,
        object_ids=None if (ids := plane(msg.object_ids, "<u4")) is None else ids.astype(np.uint32),
        provenance=plane(msg.provenance, "u1"),
        confidence=None if confidence is None else confidence.astype(np.float32) / 255.0,
    )


def closed_from_proto(msg: pb.CloseSessionResponse) -> ClosedSession:
    return ClosedSession(memory_stats_from_proto(msg.memory), msg.frames)


def sealed_export_from_proto(chunks: list[pb.SealedChunk]) -> SealedExport:
    """The chunks of an ExportMemory stream, kept as they came (serialized), header read for information."""
    header: dict = {}
    if chunks and chunks[0].header:
        try:
            parsed = json.loads(chunks[0].header)
            header = parsed if isinstance(parsed, dict) else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            header = {}
    return SealedExport(tuple(c.SerializeToString() for c in chunks), header)


def sealed_export_from_bytes(chunks: list[bytes]) -> SealedExport:
    """A SealedExport from serialized chunks (a file's records); ValueError when one does not parse."""
    parsed = []
    for i, raw in enumerate(chunks):
        try:
            parsed.append(pb.SealedChunk.FromString(raw))
        except Exception as exc:  # protobuf's DecodeError
            raise ValueError(f"record {i} is not a mirage.v1.SealedChunk: the file is damaged") from exc
    return dataclasses.replace(sealed_export_from_proto(parsed), chunks=tuple(chunks))


def _checkpoint_from_proto(msg: pb.CheckpointInfo) -> CheckpointInfo:
    return CheckpointInfo(
        checkpoint_id=msg.checkpoint_id,
        label=msg.label,
        frame_index=msg.frame_index,
        points=msg.points,
        bytes=msg.bytes,
        created_unix_us=msg.created_unix_us,
    )


def memory_edit_from_proto(msg: pb.ManageMemoryResponse) -> MemoryEdit:
    return MemoryEdit(
        memory=memory_stats_from_proto(msg.memory),
        checkpoints=tuple(_checkpoint_from_proto(c) for c in msg.checkpoints),
        checkpoint=_checkpoint_from_proto(msg.checkpoint) if msg.HasField("checkpoint") else None,
        points_forgotten=msg.points_forgotten,
        texels_forgotten=msg.texels_forgotten,
    )


def import_result_from_proto(msg: pb.ImportMemoryResponse) -> ImportResult:
    return ImportResult(memory_stats_from_proto(msg.memory), msg.source_session, msg.export_id)


def list_sessions_request() -> pb.ListSessionsRequest:
    return pb.ListSessionsRequest()


def server_sessions_from_proto(msg: pb.ListSessionsResponse) -> ServerSessions:
    return ServerSessions(
        sessions=tuple(
            SessionSummary(
                session_id=s.session_id,
                owner=s.owner,
                width=s.width,
                height=s.height,
                generator=s.generator,
                frames=s.frames,
                streaming=s.streaming,
                idle_s=s.idle_s,
                age_s=s.age_s,
                memory=memory_stats_from_proto(s.memory),
                checkpoints=s.checkpoints,
                durable_frame=s.durable_frame,
            )
            for s in msg.sessions
        ),
        max_sessions=msg.max_sessions,
        admitted_budget_bytes=msg.admitted_budget_bytes,
        total_budget_bytes=msg.total_budget_bytes,
        stopping=msg.stopping,
    )

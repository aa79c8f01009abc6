"""The client's one conversion module: plain Python/numpy values <-> mirage.v1 messages."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from mirage.v1 import mirage_pb2 as pb

from plugin_bridge.camera import Intrinsics
from plugin_bridge.codec import (
    DepthEncoding,
    FrameEncoding,
    decode_depth,
    decode_rgb,
    encode_depth,
    encode_rgb,
)
from plugin_bridge.conventions import Convention, canonical_to_engine

CLIENT_PROTOCOL_VERSION = (1, 0, 0)

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


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class Frame:
    """A frame from the runtime, decoded."""

    sequence: int
    client_timestamp_us: int
    server_received_us: int
    server_sent_us: int
    received_us: int  # when this client decoded it
    frame_index: int
    rgb: np.ndarray  # [H, W, 3] uint8
    depth: np.ndarray | None  # [H, W] float32 metres; 0 unknown, +inf at infinity
    coverage: float
    observed: bool
    timings_ms: dict[str, float]
    memory: pb.MemoryStats


@dataclass
class Event:
    kind: str  # e.g. "POSES_DROPPED"
    message: str
    sequences: list[int]
    memory: pb.MemoryStats | None


@dataclass
class MemoryView:
    """A memory render answered by SpatialMemoryQuery."""

    rgb: np.ndarray
    depth: np.ndarray | None
    coverage: np.ndarray  # [H, W] float32 0..1
    coverage_fraction: float


def pose_message(position, quaternion_wxyz) -> pb.Pose:
    p = [float(v) for v in position]
    q = [float(v) for v in quaternion_wxyz]
    return pb.Pose(
        position=pb.Vec3(x=p[0], y=p[1], z=p[2]), rotation=pb.Quaternion(w=q[0], x=q[1], y=q[2], z=q[3])
    )


def pose_from_matrix(
    cam_to_world: np.ndarray, convention: Convention | str = Convention.OPENCV, units_per_meter=None
) -> pb.Pose:
    """A canonical camera-to-world matrix, written in `convention` (what a session of that convention expects)."""
    position, quat = canonical_to_engine(
        convention, np.asarray(cam_to_world, dtype=np.float64), units_per_meter
    )
    return pose_message(position, quat)


def intrinsics_message(k: Intrinsics) -> pb.Intrinsics:
    return pb.Intrinsics(fx=k.fx, fy=k.fy, cx=k.cx, cy=k.cy, width=k.width, height=k.height)


def observation_message(
    sequence: int,
    pose: pb.Pose,
    rgb: np.ndarray,
    depth: np.ndarray,
    *,
    instance_ids: np.ndarray | None = None,
    frame_encoding: FrameEncoding = FrameEncoding.RAW_RGB8,
    depth_encoding: DepthEncoding = DepthEncoding.FLOAT16_METERS,
    return_frame: bool = False,
    timestamp_us: int | None = None,
) -> pb.Observation:
    h, w = rgb.shape[:2]
    return pb.Observation(
        sequence=sequence,
        client_timestamp_us=now_us() if timestamp_us is None else timestamp_us,
        pose=pose,
        rgb=pb.Image(encoding=int(frame_encoding), width=w, height=h, data=encode_rgb(rgb, frame_encoding)),
        depth=pb.DepthImage(
            encoding=int(depth_encoding),
            width=w,
            height=h,
            data=encode_depth(depth.astype(np.float32), depth_encoding),
        ),
        instance_ids=b""
        if instance_ids is None
        else np.ascontiguousarray(instance_ids, dtype="<u4").tobytes(),
        return_frame=return_frame,
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
        memory=msg.memory,
    )


def event_from_proto(msg: pb.Event) -> Event:
    return Event(
        kind=pb.EventKind.Name(msg.kind).removeprefix("EVENT_KIND_"),
        message=msg.message,
        sequences=list(msg.sequences),
        memory=msg.memory if msg.HasField("memory") else None,
    )


def memory_view_from_proto(msg: pb.MemoryRender) -> MemoryView:
    w, h = msg.rgb.width, msg.rgb.height
    coverage = np.frombuffer(msg.coverage, dtype=np.uint8).reshape(h, w).astype(np.float32) / 255.0
    return MemoryView(
        rgb=decode_rgb(msg.rgb.data, FrameEncoding(msg.rgb.encoding or 1), w, h),
        depth=_decode_depth(msg.depth),
        coverage=coverage,
        coverage_fraction=msg.coverage_fraction,
    )

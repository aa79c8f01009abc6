"""The runtime's one conversion module: protobuf messages <-> domain types, validated here.

Everything a client sends passes through these functions before a session sees it, so a rejected
message never reaches memory. Each failure raises `WireError` carrying the gRPC status to answer with
and a message that says what to fix.
"""

from __future__ import annotations

import math
import time

import grpc
import numpy as np
from mirage.v1 import mirage_pb2 as pb

from plugin_bridge.camera import Intrinsics
from plugin_bridge.codec import (
    CodecError,
    DepthEncoding,
    FrameEncoding,
    decode_depth,
    decode_instance_ids,
    decode_rgb,
    depth_encoding,
    encode_depth,
    encode_rgb,
    frame_encoding,
    sanitize_depth,
)
from plugin_bridge.conventions import Convention, default_units_per_meter, engine_to_canonical
from plugin_bridge.wire import STORAGE_FROM_PROTO, memory_stats_to_proto
from runtime.config import PROTOCOL_VERSION, SessionDefaults
from runtime.memory import MemoryStats
from runtime.types import FrameResult, ObservationInput, PoseInput, SessionSpec

QUATERNION_NORM_TOLERANCE = 1e-3
MAX_POSITION_M = 1.0e5
"""A pose's camera may be at most this far from the origin (metres, after units_per_meter): 100 km
holds any engine's world, and keeps memory's float32 positions to a centimetre or better."""
UNITS_PER_METER_RANGE = (1.0e-3, 1.0e6)
"""units_per_meter a session may declare (1 km units to micrometres)."""
SIZE_MULTIPLE = 8  # generators take H, W in multiples of 8
MAX_DETAIL = 4.0  # largest generator_detail a session may ask for

_CONVENTIONS = {
    pb.POSE_CONVENTION_UNSPECIFIED: Convention.OPENCV,
    pb.POSE_CONVENTION_OPENCV: Convention.OPENCV,
    pb.POSE_CONVENTION_OPENGL: Convention.OPENGL,
    pb.POSE_CONVENTION_UNITY: Convention.UNITY,
    pb.POSE_CONVENTION_UNREAL: Convention.UNREAL,
    pb.POSE_CONVENTION_GODOT: Convention.GODOT,
    pb.POSE_CONVENTION_ARKIT: Convention.ARKIT,
    pb.POSE_CONVENTION_ARCORE: Convention.ARCORE,
    pb.POSE_CONVENTION_PANDA3D: Convention.PANDA3D,
}

SERVER_CAPABILITIES = (
    "generate",
    "observation",
    "instance_ids",
    "latest_wins",
    "memory_render_query",
    "memory_stats_query",
    "contextual_inference",
    "sealed_memory_transfer",
    "memory_checkpoints",
    "forget_provenance",
    "environment_map",
    "frame_raw_rgb8",
    "frame_png",
    "frame_jpeg",
    "depth_float16",
    "depth_uint16_mm",
)


class WireError(Exception):
    """A message the runtime refuses: `code` is the gRPC status to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(message: str) -> WireError:
    return WireError(grpc.StatusCode.INVALID_ARGUMENT, message)


def now_us() -> int:
    return time.time_ns() // 1000


def version_string(v: tuple[int, int, int] | pb.Version) -> str:
    if isinstance(v, pb.Version):
        return f"{v.major}.{v.minor}.{v.patch}"
    return ".".join(str(x) for x in v)


def server_version() -> pb.Version:
    return pb.Version(major=PROTOCOL_VERSION[0], minor=PROTOCOL_VERSION[1], patch=PROTOCOL_VERSION[2])


def check_protocol_version(client: pb.Version) -> list[str]:
    """Refuse a different major version; warn about a different minor. Returns warnings."""
    ours = version_string(PROTOCOL_VERSION)
    theirs = version_string(client)
    if client.major != PROTOCOL_VERSION[0]:
        newer = "client" if client.major > PROTOCOL_VERSION[0] else "runtime"
        older = "runtime" if newer == "client" else "client (plugin_bridge)"
        raise WireError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"protocol mismatch: client speaks mirage.v1 protocol {theirs}, runtime speaks {ours}; "
            f"the {newer} is a major version ahead: upgrade the {older} to protocol {max(client.major, PROTOCOL_VERSION[0])}.x",
        )
    if client.minor != PROTOCOL_VERSION[1]:
        return [
            f"protocol minor mismatch: client {theirs}, runtime {ours}; features added in the newer "
            "minor version are unavailable (upgrade the older side to silence this warning)"
        ]
    return []


def intrinsics_from_proto(msg: pb.Intrinsics, max_pixels: int) -> Intrinsics:
    w, h = int(msg.width), int(msg.height)
    if w <= 0 or h <= 0:
        raise _invalid(f"intrinsics width and height must be positive, got {w}x{h}")
    if w % SIZE_MULTIPLE or h % SIZE_MULTIPLE:
        raise _invalid(
            f"frame size {w}x{h} is not supported: width and height must be multiples of {SIZE_MULTIPLE}"
        )
    if w * h > max_pixels:
        raise WireError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"frame size {w}x{h} ({w * h} pixels) exceeds this server's limit of {max_pixels} pixels",
        )
    values = {"fx": msg.fx, "fy": msg.fy, "cx": msg.cx, "cy": msg.cy}
    for name, value in values.items():
        if not math.isfinite(value):
            raise _invalid(f"intrinsics {name} must be finite, got {value}")
    side = max(w, h)
    for name in ("fx", "fy"):
        if not 0.05 * side <= values[name] <= 100.0 * side:
            raise _invalid(
                f"intrinsics {name}={values[name]} is out of range for a {w}x{h} image: focal lengths are in "
                f"pixels and must lie in [{0.05 * side:g}, {100.0 * side:g}] (fx = width / (2 tan(fov_x / 2)))"
            )
    if not (-0.5 <= msg.cx <= w - 0.5 and -0.5 <= msg.cy <= h - 0.5):
        raise _invalid(
            f"principal point ({msg.cx}, {msg.cy}) lies outside the {w}x{h} image: cx, cy are pixels with "
            f"centres at integer coordinates (a centred camera has cx={(w - 1) / 2}, cy={(h - 1) / 2})"
        )
    return Intrinsics(float(msg.fx), float(msg.fy), float(msg.cx), float(msg.cy), w, h)


def intrinsics_to_proto(k: Intrinsics) -> pb.Intrinsics:
    return pb.Intrinsics(fx=k.fx, fy=k.fy, cx=k.cx, cy=k.cy, width=k.width, height=k.height)


def session_spec_from_proto(
    req: pb.OpenSessionRequest,
    defaults: SessionDefaults,
    default_budget: int,
    available_generators: list[str],
    default_generator: str,
) -> SessionSpec:
    if not req.HasField("intrinsics"):
        raise _invalid(
            "OpenSessionRequest.intrinsics is required: send fx, fy, cx, cy, width, height in pixels"
        )
    convention = _CONVENTIONS.get(req.convention)
    if convention is None:
        raise _invalid(f"unknown pose convention {req.convention}; use one of the PoseConvention values")
    if not math.isfinite(req.units_per_meter) or req.units_per_meter < 0:
        raise _invalid(
            f"units_per_meter must be >= 0 and finite (0 for the convention default), got {req.units_per_meter}"
        )
    upm = req.units_per_meter or default_units_per_meter(convention)
    low, high = UNITS_PER_METER_RANGE
    if not low <= upm <= high:
        raise _invalid(
            f"units_per_meter {upm:g} is outside {low:g}..{high:g} (engine units in one metre: 1 for metres, "
            "100 for centimetres; 0 for the convention default)"
        )
    intrinsics = intrinsics_from_proto(req.intrinsics, defaults.max_pixels)
    try:
        fenc = frame_encoding(req.frame_encoding)
        denc = depth_encoding(req.depth_encoding)
    except (CodecError, ValueError) as exc:
        raise _invalid(str(exc)) from exc
    if req.jpeg_quality > 100:
        raise _invalid(f"jpeg_quality must be 1..100 (0 for 90), got {req.jpeg_quality}")
    generator = req.generator or default_generator
    if generator not in available_generators:
        raise WireError(
            grpc.StatusCode.NOT_FOUND,
            f"generator {generator!r} is not installed here; available: {', '.join(available_generators) or 'none'}",
        )
    budget = req.memory.budget_bytes or default_budget
    if budget > defaults.max_budget_bytes:
        raise WireError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"memory budget {budget} bytes exceeds this server's limit of {defaults.max_budget_bytes} bytes",
        )
    if budget < 2**20:
        raise _invalid(f"memory budget {budget} bytes is too small: ask for at least 1 MiB (1048576 bytes)")
    storage = STORAGE_FROM_PROTO.get(req.memory.storage)
    if storage is None:
        raise _invalid(
            f"memory.storage {req.memory.storage} is not a MemoryStorage value: use FULL or QUANTISED"
        )
    if storage == "quantised" and req.memory.window_frames:
        raise _invalid(
            "memory.storage QUANTISED keeps memory persistent: send window_frames 0 with it "
            f"(got {req.memory.window_frames})"
        )
    detail = None
    if req.HasField("generator_detail"):
        detail = float(req.generator_detail)
        if not (math.isfinite(detail) and 0.0 <= detail <= MAX_DETAIL):
            raise _invalid(
                f"generator_detail must be within 0..{MAX_DETAIL:g} (0: the generator's mean prediction, "
                f"1: detail as trained), got {req.generator_detail}; leave it unset for the model's default"
            )
    return SessionSpec(
        convention=convention,
        units_per_meter=float(upm),
        intrinsics=intrinsics,
        frame_encoding=fenc,
        depth_encoding=denc,
        jpeg_quality=int(req.jpeg_quality or 90),
        generator=generator,
        budget_bytes=int(budget),
        window_frames=int(req.memory.window_frames),
        storage=storage,
        seed=int(req.seed),
        release_on_disconnect=bool(req.release_on_disconnect),
        detail=detail,
        client_capabilities=tuple(req.capabilities),
    )


def pose_from_proto(msg: pb.Pose, spec: SessionSpec, field: str = "pose") -> np.ndarray:
    """Validate a pose in the session's convention and return the canonical cam-to-world [4, 4]."""
    p = np.array([msg.position.x, msg.position.y, msg.position.z], dtype=np.float64)
    q = np.array([msg.rotation.w, msg.rotation.x, msg.rotation.y, msg.rotation.z], dtype=np.float64)
    if not np.all(np.isfinite(p)):
        raise _invalid(f"{field}.position has a non-finite value {p.tolist()}: send finite coordinates")
    if not np.all(np.isfinite(q)):
        raise _invalid(
            f"{field}.rotation has a non-finite value {q.tolist()}: send a finite unit quaternion (w, x, y, z)"
        )
    with np.errstate(over="ignore"):  # components near 1e155 and above square to inf: refused below
        norm = float(np.linalg.norm(q))
    if abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE:
        raise _invalid(
            f"{field}.rotation has norm {norm:.6f}; send a unit quaternion (w, x, y, z) with |q| within "
            f"{QUATERNION_NORM_TOLERANCE} of 1 (normalise it; the identity is w=1)"
        )
    pose = engine_to_canonical(spec.convention, p, q / norm, spec.units_per_meter)
    with np.errstate(over="ignore", invalid="ignore"):  # 1e300 squared: inf, refused below
        distance = float(np.linalg.norm(pose[:3, 3]))
    if not distance <= MAX_POSITION_M:
        raise _invalid(
            f"{field}.position is {distance:.3g} m from the origin (at {spec.units_per_meter:g} units per "
            f"metre); keep cameras within {MAX_POSITION_M:g} m of it (recentre the world's origin near the player)"
        )
    return pose


def pose_request_from_proto(msg: pb.PoseRequest, spec: SessionSpec, received_us: int = 0) -> PoseInput:
    """``received_us``: when the message arrived (0: now)."""
    if not msg.HasField("pose"):
        raise _invalid("PoseRequest.pose is required")
    return PoseInput(
        sequence=int(msg.sequence),
        client_timestamp_us=int(msg.client_timestamp_us),
        cam_to_world=pose_from_proto(msg.pose, spec),
        received_us=received_us or now_us(),
    )


def _check_size(kind: str, width: int, height: int, spec: SessionSpec) -> None:
    k = spec.intrinsics
    if (width, height) != (k.width, k.height):
        raise _invalid(
            f"observation {kind} is {width}x{height} but the session declared {k.width}x{k.height}: "
            "send frames at the handshake resolution"
        )


FAR_PLANE_SHARE = 0.10
"""A share of a frame's pixels at exactly its maximum depth from which that depth looks like a far
plane (content at infinity sent as a depth)."""
FAR_PLANE_MIN_M = 20.0
"""... when that maximum is at least this far (a fronto-parallel wall near by is not a far plane)."""


def depth_at_one_maximum(depth: np.ndarray) -> tuple[int, float] | None:
    """(pixels, metres) when at least FAR_PLANE_SHARE of the pixels sit at the frame's one finite
    maximum depth, at least FAR_PLANE_MIN_M away; else None."""
    finite = depth[np.isfinite(depth)]
    if finite.size == 0:
        return None
    far = float(finite.max())
    if far < FAR_PLANE_MIN_M:
        return None
    count = int(np.count_nonzero(finite == np.float32(far)))
    return (count, far) if count >= FAR_PLANE_SHARE * depth.size else None


def intrinsics_warnings(k: Intrinsics) -> list[str]:
    """A principal point at exactly (w / 2, h / 2) is most likely a K with half-pixel centres."""
    if k.width > 1 and k.height > 1 and k.cx == k.width / 2 and k.cy == k.height / 2:
        return [
            f"intrinsics cx = {k.cx:g}, cy = {k.cy:g} are w/2, h/2: Mirage puts pixel centres at integers, so "
            f"a centred principal point is ({(k.width - 1) / 2:g}, {(k.height - 1) / 2:g}); if your K has "
            "half-pixel centres, subtract 0.5 from cx and cy (the Python client: "
            "Intrinsics.from_matrix(K, w, h, pixel_centers='half')), or every ray is off by half a pixel"
        ]
    return []


def observation_from_proto(msg: pb.Observation, spec: SessionSpec) -> ObservationInput:
    received = now_us()
    t0 = time.perf_counter()
    if not msg.HasField("pose"):
        raise _invalid("Observation.pose is required")
    if not msg.HasField("rgb") or not msg.HasField("depth"):
        raise _invalid("Observation needs both rgb and depth (send a PoseRequest for generate mode)")
    cam_to_world = pose_from_proto(msg.pose, spec, "observation.pose")
    k = spec.intrinsics
    _check_size("rgb", msg.rgb.width, msg.rgb.height, spec)
    _check_size("depth", msg.depth.width, msg.depth.height, spec)
    try:
        rgb = decode_rgb(msg.rgb.data, frame_encoding(msg.rgb.encoding), k.width, k.height)
        denc = depth_encoding(msg.depth.encoding)
        if denc == DepthEncoding.NONE:
            raise _invalid("Observation.depth must carry depth (FLOAT16_METERS or UINT16_MM), not NONE")
        depth = decode_depth(msg.depth.data, denc, k.width, k.height)
        ids = decode_instance_ids(msg.instance_ids, k.width, k.height)
    except CodecError as exc:
        raise _invalid(f"observation: {exc}") from exc
    depth, masked = sanitize_depth(depth)  # the encoding fixes the unit (metres or mm), not the session
    return ObservationInput(
        sequence=int(msg.sequence),
        client_timestamp_us=int(msg.client_timestamp_us),
        cam_to_world=cam_to_world,
        rgb=rgb,
        depth=depth.astype(np.float32, copy=False),
        instance_ids=ids,
        return_frame=bool(msg.return_frame),
        depth_masked=masked,
        depth_at_max=depth_at_one_maximum(depth),
        decode_ms=(time.perf_counter() - t0) * 1e3,
        received_us=received,
    )


def encode_frame_images(
    rgb: np.ndarray, depth: np.ndarray, spec: SessionSpec
) -> tuple[pb.Image, pb.DepthImage]:
    h, w = rgb.shape[:2]
    image = pb.Image(
        encoding=int(spec.frame_encoding),
        width=w,
        height=h,
        data=encode_rgb(rgb, spec.frame_encoding, spec.jpeg_quality),
    )
    if spec.depth_encoding == DepthEncoding.NONE:
        depth_msg = pb.DepthImage(encoding=int(DepthEncoding.NONE), width=w, height=h)
    else:
        depth_msg = pb.DepthImage(
            encoding=int(spec.depth_encoding),
            width=w,
            height=h,
            data=encode_depth(depth, spec.depth_encoding),
        )
    return image, depth_msg


def frame_to_proto(result: FrameResult, spec: SessionSpec, stats: MemoryStats) -> pb.Frame:
    t0 = time.perf_counter()
    image, depth = encode_frame_images(result.rgb, result.depth, spec)
    encode_ms = (time.perf_counter() - t0) * 1e3
    timings = dict(result.timings_ms)
    timings["encode_ms"] = encode_ms
    timings["total_ms"] = timings.get("total_ms", 0.0) + encode_ms
    return pb.Frame(
        sequence=result.sequence,
        client_timestamp_us=result.client_timestamp_us,
        server_received_us=result.received_us,
        server_sent_us=now_us(),
        frame_index=result.frame_index,
        rgb=image,
        depth=depth,
        coverage=float(result.coverage),
        observed=result.observed,
        timings=pb.StageTimings(**{k: float(v) for k, v in timings.items() if k in _TIMING_FIELDS}),
        memory=memory_stats_to_proto(stats),
    )


_TIMING_FIELDS = frozenset(pb.StageTimings.DESCRIPTOR.fields_by_name)


def event(
    kind: int, message: str, sequences: list[int] | tuple[int, ...] = (), stats: MemoryStats | None = None
) -> pb.ServerMessage:
    ev = pb.Event(kind=kind, message=message, sequences=list(sequences))
    if stats is not None:
        ev.memory.CopyFrom(memory_stats_to_proto(stats))
    return pb.ServerMessage(event=ev)


__all__ = [
    "FrameEncoding",
    "SERVER_CAPABILITIES",
    "WireError",
    "check_protocol_version",
    "event",
    "frame_to_proto",
    "intrinsics_from_proto",
    "intrinsics_to_proto",
    "memory_stats_to_proto",
    "observation_from_proto",
    "pose_request_from_proto",
    "server_version",
    "session_spec_from_proto",
]

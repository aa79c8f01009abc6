from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PoseConvention(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POSE_CONVENTION_UNSPECIFIED: _ClassVar[PoseConvention]
    POSE_CONVENTION_OPENCV: _ClassVar[PoseConvention]
    POSE_CONVENTION_OPENGL: _ClassVar[PoseConvention]
    POSE_CONVENTION_UNITY: _ClassVar[PoseConvention]
    POSE_CONVENTION_UNREAL: _ClassVar[PoseConvention]
    POSE_CONVENTION_GODOT: _ClassVar[PoseConvention]
    POSE_CONVENTION_ARKIT: _ClassVar[PoseConvention]
    POSE_CONVENTION_ARCORE: _ClassVar[PoseConvention]
    POSE_CONVENTION_PANDA3D: _ClassVar[PoseConvention]

class FrameEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FRAME_ENCODING_UNSPECIFIED: _ClassVar[FrameEncoding]
    FRAME_ENCODING_RAW_RGB8: _ClassVar[FrameEncoding]
    FRAME_ENCODING_PNG: _ClassVar[FrameEncoding]
    FRAME_ENCODING_JPEG: _ClassVar[FrameEncoding]

class DepthEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEPTH_ENCODING_UNSPECIFIED: _ClassVar[DepthEncoding]
    DEPTH_ENCODING_FLOAT16_METERS: _ClassVar[DepthEncoding]
    DEPTH_ENCODING_UINT16_MM: _ClassVar[DepthEncoding]
    DEPTH_ENCODING_NONE: _ClassVar[DepthEncoding]

class Provenance(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROVENANCE_UNSPECIFIED: _ClassVar[Provenance]
    PROVENANCE_OBSERVED: _ClassVar[Provenance]
    PROVENANCE_GENERATED: _ClassVar[Provenance]
    PROVENANCE_IMPORTED: _ClassVar[Provenance]

class MemoryStorage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MEMORY_STORAGE_UNSPECIFIED: _ClassVar[MemoryStorage]
    MEMORY_STORAGE_FULL: _ClassVar[MemoryStorage]
    MEMORY_STORAGE_QUANTISED: _ClassVar[MemoryStorage]

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_KIND_UNSPECIFIED: _ClassVar[EventKind]
    EVENT_KIND_POSES_DROPPED: _ClassVar[EventKind]
    EVENT_KIND_DEPTH_MASKED: _ClassVar[EventKind]
    EVENT_KIND_WARNING: _ClassVar[EventKind]
    EVENT_KIND_STATS: _ClassVar[EventKind]
    EVENT_KIND_MEMORY_RESET: _ClassVar[EventKind]
POSE_CONVENTION_UNSPECIFIED: PoseConvention
POSE_CONVENTION_OPENCV: PoseConvention
POSE_CONVENTION_OPENGL: PoseConvention
POSE_CONVENTION_UNITY: PoseConvention
POSE_CONVENTION_UNREAL: PoseConvention
POSE_CONVENTION_GODOT: PoseConvention
POSE_CONVENTION_ARKIT: PoseConvention
POSE_CONVENTION_ARCORE: PoseConvention
POSE_CONVENTION_PANDA3D: PoseConvention
FRAME_ENCODING_UNSPECIFIED: FrameEncoding
FRAME_ENCODING_RAW_RGB8: FrameEncoding
FRAME_ENCODING_PNG: FrameEncoding
FRAME_ENCODING_JPEG: FrameEncoding
DEPTH_ENCODING_UNSPECIFIED: DepthEncoding
DEPTH_ENCODING_FLOAT16_METERS: DepthEncoding
DEPTH_ENCODING_UINT16_MM: DepthEncoding
DEPTH_ENCODING_NONE: DepthEncoding
PROVENANCE_UNSPECIFIED: Provenance
PROVENANCE_OBSERVED: Provenance
PROVENANCE_GENERATED: Provenance
PROVENANCE_IMPORTED: Provenance
MEMORY_STORAGE_UNSPECIFIED: MemoryStorage
MEMORY_STORAGE_FULL: MemoryStorage
MEMORY_STORAGE_QUANTISED: MemoryStorage
EVENT_KIND_UNSPECIFIED: EventKind
EVENT_KIND_POSES_DROPPED: EventKind
EVENT_KIND_DEPTH_MASKED: EventKind
EVENT_KIND_WARNING: EventKind
EVENT_KIND_STATS: EventKind
EVENT_KIND_MEMORY_RESET: EventKind

class Version(_message.Message):
    __slots__ = ("major", "minor", "patch")
    MAJOR_FIELD_NUMBER: _ClassVar[int]
    MINOR_FIELD_NUMBER: _ClassVar[int]
    PATCH_FIELD_NUMBER: _ClassVar[int]
    major: int
    minor: int
    patch: int
    def __init__(self, major: _Optional[int] = ..., minor: _Optional[int] = ..., patch: _Optional[int] = ...) -> None: ...

class Vec3(_message.Message):
    __slots__ = ("x", "y", "z")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    Z_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    z: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ..., z: _Optional[float] = ...) -> None: ...

class Quaternion(_message.Message):
    __slots__ = ("w", "x", "y", "z")
    W_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    Z_FIELD_NUMBER: _ClassVar[int]
    w: float
    x: float
    y: float
    z: float
    def __init__(self, w: _Optional[float] = ..., x: _Optional[float] = ..., y: _Optional[float] = ..., z: _Optional[float] = ...) -> None: ...

class Pose(_message.Message):
    __slots__ = ("position", "rotation")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    ROTATION_FIELD_NUMBER: _ClassVar[int]
    position: Vec3
    rotation: Quaternion
    def __init__(self, position: _Optional[_Union[Vec3, _Mapping]] = ..., rotation: _Optional[_Union[Quaternion, _Mapping]] = ...) -> None: ...

class Intrinsics(_message.Message):
    __slots__ = ("fx", "fy", "cx", "cy", "width", "height")
    FX_FIELD_NUMBER: _ClassVar[int]
    FY_FIELD_NUMBER: _ClassVar[int]
    CX_FIELD_NUMBER: _ClassVar[int]
    CY_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    def __init__(self, fx: _Optional[float] = ..., fy: _Optional[float] = ..., cx: _Optional[float] = ..., cy: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("encoding", "width", "height", "data")
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    encoding: FrameEncoding
    width: int
    height: int
    data: bytes
    def __init__(self, encoding: _Optional[_Union[FrameEncoding, str]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class DepthImage(_message.Message):
    __slots__ = ("encoding", "width", "height", "data")
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    encoding: DepthEncoding
    width: int
    height: int
    data: bytes
    def __init__(self, encoding: _Optional[_Union[DepthEncoding, str]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class MemoryStats(_message.Message):
    __slots__ = ("points", "bytes_used", "budget_bytes", "points_pruned_total", "points_carved_total", "frames_ingested", "environment_texels", "window_frames", "chunks", "chunks_evicted_total", "points_refined_total", "storage", "points_packed")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    BYTES_USED_FIELD_NUMBER: _ClassVar[int]
    BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    POINTS_PRUNED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    POINTS_CARVED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    FRAMES_INGESTED_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_TEXELS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FRAMES_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_EVICTED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    POINTS_REFINED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    STORAGE_FIELD_NUMBER: _ClassVar[int]
    POINTS_PACKED_FIELD_NUMBER: _ClassVar[int]
    points: int
    bytes_used: int
    budget_bytes: int
    points_pruned_total: int
    points_carved_total: int
    frames_ingested: int
    environment_texels: int
    window_frames: int
    chunks: int
    chunks_evicted_total: int
    points_refined_total: int
    storage: MemoryStorage
    points_packed: int
    def __init__(self, points: _Optional[int] = ..., bytes_used: _Optional[int] = ..., budget_bytes: _Optional[int] = ..., points_pruned_total: _Optional[int] = ..., points_carved_total: _Optional[int] = ..., frames_ingested: _Optional[int] = ..., environment_texels: _Optional[int] = ..., window_frames: _Optional[int] = ..., chunks: _Optional[int] = ..., chunks_evicted_total: _Optional[int] = ..., points_refined_total: _Optional[int] = ..., storage: _Optional[_Union[MemoryStorage, str]] = ..., points_packed: _Optional[int] = ...) -> None: ...

class MemoryOptions(_message.Message):
    __slots__ = ("budget_bytes", "window_frames", "storage")
    BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FRAMES_FIELD_NUMBER: _ClassVar[int]
    STORAGE_FIELD_NUMBER: _ClassVar[int]
    budget_bytes: int
    window_frames: int
    storage: MemoryStorage
    def __init__(self, budget_bytes: _Optional[int] = ..., window_frames: _Optional[int] = ..., storage: _Optional[_Union[MemoryStorage, str]] = ...) -> None: ...

class OpenSessionRequest(_message.Message):
    __slots__ = ("protocol_version", "capabilities", "convention", "units_per_meter", "intrinsics", "frame_encoding", "depth_encoding", "generator", "memory", "seed", "release_on_disconnect", "jpeg_quality", "generator_detail", "resume_session_id")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    CONVENTION_FIELD_NUMBER: _ClassVar[int]
    UNITS_PER_METER_FIELD_NUMBER: _ClassVar[int]
    INTRINSICS_FIELD_NUMBER: _ClassVar[int]
    FRAME_ENCODING_FIELD_NUMBER: _ClassVar[int]
    DEPTH_ENCODING_FIELD_NUMBER: _ClassVar[int]
    GENERATOR_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    RELEASE_ON_DISCONNECT_FIELD_NUMBER: _ClassVar[int]
    JPEG_QUALITY_FIELD_NUMBER: _ClassVar[int]
    GENERATOR_DETAIL_FIELD_NUMBER: _ClassVar[int]
    RESUME_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    protocol_version: Version
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    convention: PoseConvention
    units_per_meter: float
    intrinsics: Intrinsics
    frame_encoding: FrameEncoding
    depth_encoding: DepthEncoding
    generator: str
    memory: MemoryOptions
    seed: int
    release_on_disconnect: bool
    jpeg_quality: int
    generator_detail: float
    resume_session_id: str
    def __init__(self, protocol_version: _Optional[_Union[Version, _Mapping]] = ..., capabilities: _Optional[_Iterable[str]] = ..., convention: _Optional[_Union[PoseConvention, str]] = ..., units_per_meter: _Optional[float] = ..., intrinsics: _Optional[_Union[Intrinsics, _Mapping]] = ..., frame_encoding: _Optional[_Union[FrameEncoding, str]] = ..., depth_encoding: _Optional[_Union[DepthEncoding, str]] = ..., generator: _Optional[str] = ..., memory: _Optional[_Union[MemoryOptions, _Mapping]] = ..., seed: _Optional[int] = ..., release_on_disconnect: _Optional[bool] = ..., jpeg_quality: _Optional[int] = ..., generator_detail: _Optional[float] = ..., resume_session_id: _Optional[str] = ...) -> None: ...

class GeneratorInfo(_message.Message):
    __slots__ = ("name", "sha256", "kind", "providers", "detail_control", "detail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_CONTROL_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    sha256: str
    kind: str
    providers: _containers.RepeatedScalarFieldContainer[str]
    detail_control: bool
    detail: float
    def __init__(self, name: _Optional[str] = ..., sha256: _Optional[str] = ..., kind: _Optional[str] = ..., providers: _Optional[_Iterable[str]] = ..., detail_control: _Optional[bool] = ..., detail: _Optional[float] = ...) -> None: ...

class OpenSessionResponse(_message.Message):
    __slots__ = ("session_id", "server_version", "capabilities", "warnings", "generator", "memory", "max_message_bytes")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    GENERATOR_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    server_version: Version
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    generator: GeneratorInfo
    memory: MemoryStats
    max_message_bytes: int
    def __init__(self, session_id: _Optional[str] = ..., server_version: _Optional[_Union[Version, _Mapping]] = ..., capabilities: _Optional[_Iterable[str]] = ..., warnings: _Optional[_Iterable[str]] = ..., generator: _Optional[_Union[GeneratorInfo, _Mapping]] = ..., memory: _Optional[_Union[MemoryStats, _Mapping]] = ..., max_message_bytes: _Optional[int] = ...) -> None: ...

class PoseRequest(_message.Message):
    __slots__ = ("sequence", "client_timestamp_us", "pose")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TIMESTAMP_US_FIELD_NUMBER: _ClassVar[int]
    POSE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    client_timestamp_us: int
    pose: Pose
    def __init__(self, sequence: _Optional[int] = ..., client_timestamp_us: _Optional[int] = ..., pose: _Optional[_Union[Pose, _Mapping]] = ...) -> None: ...

class Observation(_message.Message):
    __slots__ = ("sequence", "client_timestamp_us", "pose", "rgb", "depth", "instance_ids", "return_frame")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TIMESTAMP_US_FIELD_NUMBER: _ClassVar[int]
    POSE_FIELD_NUMBER: _ClassVar[int]
    RGB_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_IDS_FIELD_NUMBER: _ClassVar[int]
    RETURN_FRAME_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    client_timestamp_us: int
    pose: Pose
    rgb: Image
    depth: DepthImage
    instance_ids: bytes
    return_frame: bool
    def __init__(self, sequence: _Optional[int] = ..., client_timestamp_us: _Optional[int] = ..., pose: _Optional[_Union[Pose, _Mapping]] = ..., rgb: _Optional[_Union[Image, _Mapping]] = ..., depth: _Optional[_Union[DepthImage, _Mapping]] = ..., instance_ids: _Optional[bytes] = ..., return_frame: _Optional[bool] = ...) -> None: ...

class Control(_message.Message):
    __slots__ = ("action",)
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[Control.Action]
        ACTION_RESET_MEMORY: _ClassVar[Control.Action]
        ACTION_REPORT_STATS: _ClassVar[Control.Action]
    ACTION_UNSPECIFIED: Control.Action
    ACTION_RESET_MEMORY: Control.Action
    ACTION_REPORT_STATS: Control.Action
    ACTION_FIELD_NUMBER: _ClassVar[int]
    action: Control.Action
    def __init__(self, action: _Optional[_Union[Control.Action, str]] = ...) -> None: ...

class EndOfStream(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClientMessage(_message.Message):
    __slots__ = ("session_id", "pose", "observation", "control", "end")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    POSE_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    pose: PoseRequest
    observation: Observation
    control: Control
    end: EndOfStream
    def __init__(self, session_id: _Optional[str] = ..., pose: _Optional[_Union[PoseRequest, _Mapping]] = ..., observation: _Optional[_Union[Observation, _Mapping]] = ..., control: _Optional[_Union[Control, _Mapping]] = ..., end: _Optional[_Union[EndOfStream, _Mapping]] = ...) -> None: ...

class StageTimings(_message.Message):
    __slots__ = ("decode_ms", "render_ms", "generate_ms", "compose_ms", "ingest_ms", "encode_ms", "total_ms")
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    RENDER_MS_FIELD_NUMBER: _ClassVar[int]
    GENERATE_MS_FIELD_NUMBER: _ClassVar[int]
    COMPOSE_MS_FIELD_NUMBER: _ClassVar[int]
    INGEST_MS_FIELD_NUMBER: _ClassVar[int]
    ENCODE_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    decode_ms: float
    render_ms: float
    generate_ms: float
    compose_ms: float
    ingest_ms: float
    encode_ms: float
    total_ms: float
    def __init__(self, decode_ms: _Optional[float] = ..., render_ms: _Optional[float] = ..., generate_ms: _Optional[float] = ..., compose_ms: _Optional[float] = ..., ingest_ms: _Optional[float] = ..., encode_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("sequence", "client_timestamp_us", "server_received_us", "server_sent_us", "frame_index", "rgb", "depth", "coverage", "observed", "timings", "memory")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TIMESTAMP_US_FIELD_NUMBER: _ClassVar[int]
    SERVER_RECEIVED_US_FIELD_NUMBER: _ClassVar[int]
    SERVER_SENT_US_FIELD_NUMBER: _ClassVar[int]
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    RGB_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    client_timestamp_us: int
    server_received_us: int
    server_sent_us: int
    frame_index: int
    rgb: Image
    depth: DepthImage
    coverage: float
    observed: bool
    timings: StageTimings
    memory: MemoryStats
    def __init__(self, sequence: _Optional[int] = ..., client_timestamp_us: _Optional[int] = ..., server_received_us: _Optional[int] = ..., server_sent_us: _Optional[int] = ..., frame_index: _Optional[int] = ..., rgb: _Optional[_Union[Image, _Mapping]] = ..., depth: _Optional[_Union[DepthImage, _Mapping]] = ..., coverage: _Optional[float] = ..., observed: _Optional[bool] = ..., timings: _Optional[_Union[StageTimings, _Mapping]] = ..., memory: _Optional[_Union[MemoryStats, _Mapping]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("kind", "message", "sequences", "memory")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    kind: EventKind
    message: str
    sequences: _containers.RepeatedScalarFieldContainer[int]
    memory: MemoryStats
    def __init__(self, kind: _Optional[_Union[EventKind, str]] = ..., message: _Optional[str] = ..., sequences: _Optional[_Iterable[int]] = ..., memory: _Optional[_Union[MemoryStats, _Mapping]] = ...) -> None: ...

class StreamEnd(_message.Message):
    __slots__ = ("frames_sent", "poses_dropped")
    FRAMES_SENT_FIELD_NUMBER: _ClassVar[int]
    POSES_DROPPED_FIELD_NUMBER: _ClassVar[int]
    frames_sent: int
    poses_dropped: int
    def __init__(self, frames_sent: _Optional[int] = ..., poses_dropped: _Optional[int] = ...) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("frame", "event", "end")
    FRAME_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    frame: Frame
    event: Event
    end: StreamEnd
    def __init__(self, frame: _Optional[_Union[Frame, _Mapping]] = ..., event: _Optional[_Union[Event, _Mapping]] = ..., end: _Optional[_Union[StreamEnd, _Mapping]] = ...) -> None: ...

class RenderQuery(_message.Message):
    __slots__ = ("pose", "intrinsics")
    POSE_FIELD_NUMBER: _ClassVar[int]
    INTRINSICS_FIELD_NUMBER: _ClassVar[int]
    pose: Pose
    intrinsics: Intrinsics
    def __init__(self, pose: _Optional[_Union[Pose, _Mapping]] = ..., intrinsics: _Optional[_Union[Intrinsics, _Mapping]] = ...) -> None: ...

class StatsQuery(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PixelRay(_message.Message):
    __slots__ = ("pose", "intrinsics", "u", "v")
    POSE_FIELD_NUMBER: _ClassVar[int]
    INTRINSICS_FIELD_NUMBER: _ClassVar[int]
    U_FIELD_NUMBER: _ClassVar[int]
    V_FIELD_NUMBER: _ClassVar[int]
    pose: Pose
    intrinsics: Intrinsics
    u: float
    v: float
    def __init__(self, pose: _Optional[_Union[Pose, _Mapping]] = ..., intrinsics: _Optional[_Union[Intrinsics, _Mapping]] = ..., u: _Optional[float] = ..., v: _Optional[float] = ...) -> None: ...

class WorldRay(_message.Message):
    __slots__ = ("origin", "direction")
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    origin: Vec3
    direction: Vec3
    def __init__(self, origin: _Optional[_Union[Vec3, _Mapping]] = ..., direction: _Optional[_Union[Vec3, _Mapping]] = ...) -> None: ...

class PickQuery(_message.Message):
    __slots__ = ("pixel", "world", "min_distance", "max_distance", "max_hits")
    PIXEL_FIELD_NUMBER: _ClassVar[int]
    WORLD_FIELD_NUMBER: _ClassVar[int]
    MIN_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    MAX_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    MAX_HITS_FIELD_NUMBER: _ClassVar[int]
    pixel: PixelRay
    world: WorldRay
    min_distance: float
    max_distance: float
    max_hits: int
    def __init__(self, pixel: _Optional[_Union[PixelRay, _Mapping]] = ..., world: _Optional[_Union[WorldRay, _Mapping]] = ..., min_distance: _Optional[float] = ..., max_distance: _Optional[float] = ..., max_hits: _Optional[int] = ...) -> None: ...

class SurfaceHit(_message.Message):
    __slots__ = ("point", "distance", "rgb", "object_id", "provenance", "confidence", "first_seen_frame", "last_seen_frame", "hit_count", "radius", "points")
    POINT_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    RGB_FIELD_NUMBER: _ClassVar[int]
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEEN_FRAME_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FRAME_FIELD_NUMBER: _ClassVar[int]
    HIT_COUNT_FIELD_NUMBER: _ClassVar[int]
    RADIUS_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    point: Vec3
    distance: float
    rgb: int
    object_id: int
    provenance: Provenance
    confidence: float
    first_seen_frame: int
    last_seen_frame: int
    hit_count: int
    radius: float
    points: int
    def __init__(self, point: _Optional[_Union[Vec3, _Mapping]] = ..., distance: _Optional[float] = ..., rgb: _Optional[int] = ..., object_id: _Optional[int] = ..., provenance: _Optional[_Union[Provenance, str]] = ..., confidence: _Optional[float] = ..., first_seen_frame: _Optional[int] = ..., last_seen_frame: _Optional[int] = ..., hit_count: _Optional[int] = ..., radius: _Optional[float] = ..., points: _Optional[int] = ...) -> None: ...

class PickResult(_message.Message):
    __slots__ = ("hits", "environment", "environment_rgb", "chunks_tested", "points_tested")
    HITS_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_RGB_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_TESTED_FIELD_NUMBER: _ClassVar[int]
    POINTS_TESTED_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[SurfaceHit]
    environment: bool
    environment_rgb: int
    chunks_tested: int
    points_tested: int
    def __init__(self, hits: _Optional[_Iterable[_Union[SurfaceHit, _Mapping]]] = ..., environment: _Optional[bool] = ..., environment_rgb: _Optional[int] = ..., chunks_tested: _Optional[int] = ..., points_tested: _Optional[int] = ...) -> None: ...

class BoxQuery(_message.Message):
    __slots__ = ("min", "max", "max_points")
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    MAX_POINTS_FIELD_NUMBER: _ClassVar[int]
    min: Vec3
    max: Vec3
    max_points: int
    def __init__(self, min: _Optional[_Union[Vec3, _Mapping]] = ..., max: _Optional[_Union[Vec3, _Mapping]] = ..., max_points: _Optional[int] = ...) -> None: ...

class ObjectExtent(_message.Message):
    __slots__ = ("object_id", "points", "centroid", "min", "max", "last_seen_frame")
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    CENTROID_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FRAME_FIELD_NUMBER: _ClassVar[int]
    object_id: int
    points: int
    centroid: Vec3
    min: Vec3
    max: Vec3
    last_seen_frame: int
    def __init__(self, object_id: _Optional[int] = ..., points: _Optional[int] = ..., centroid: _Optional[_Union[Vec3, _Mapping]] = ..., min: _Optional[_Union[Vec3, _Mapping]] = ..., max: _Optional[_Union[Vec3, _Mapping]] = ..., last_seen_frame: _Optional[int] = ...) -> None: ...

class BoxResult(_message.Message):
    __slots__ = ("inside", "returned", "xyz", "rgb", "object_ids", "provenance", "last_seen_frames", "objects", "chunks_tested")
    INSIDE_FIELD_NUMBER: _ClassVar[int]
    RETURNED_FIELD_NUMBER: _ClassVar[int]
    XYZ_FIELD_NUMBER: _ClassVar[int]
    RGB_FIELD_NUMBER: _ClassVar[int]
    OBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FRAMES_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_TESTED_FIELD_NUMBER: _ClassVar[int]
    inside: int
    returned: int
    xyz: bytes
    rgb: bytes
    object_ids: bytes
    provenance: bytes
    last_seen_frames: bytes
    objects: _containers.RepeatedCompositeFieldContainer[ObjectExtent]
    chunks_tested: int
    def __init__(self, inside: _Optional[int] = ..., returned: _Optional[int] = ..., xyz: _Optional[bytes] = ..., rgb: _Optional[bytes] = ..., object_ids: _Optional[bytes] = ..., provenance: _Optional[bytes] = ..., last_seen_frames: _Optional[bytes] = ..., objects: _Optional[_Iterable[_Union[ObjectExtent, _Mapping]]] = ..., chunks_tested: _Optional[int] = ...) -> None: ...

class SpatialMemoryQueryRequest(_message.Message):
    __slots__ = ("session_id", "render", "stats", "pick", "box")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RENDER_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    PICK_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    render: RenderQuery
    stats: StatsQuery
    pick: PickQuery
    box: BoxQuery
    def __init__(self, session_id: _Optional[str] = ..., render: _Optional[_Union[RenderQuery, _Mapping]] = ..., stats: _Optional[_Union[StatsQuery, _Mapping]] = ..., pick: _Optional[_Union[PickQuery, _Mapping]] = ..., box: _Optional[_Union[BoxQuery, _Mapping]] = ...) -> None: ...

class MemoryRender(_message.Message):
    __slots__ = ("rgb", "depth", "coverage", "coverage_fraction", "object_ids", "provenance", "confidence")
    RGB_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FRACTION_FIELD_NUMBER: _ClassVar[int]
    OBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    rgb: Image
    depth: DepthImage
    coverage: bytes
    coverage_fraction: float
    object_ids: bytes
    provenance: bytes
    confidence: bytes
    def __init__(self, rgb: _Optional[_Union[Image, _Mapping]] = ..., depth: _Optional[_Union[DepthImage, _Mapping]] = ..., coverage: _Optional[bytes] = ..., coverage_fraction: _Optional[float] = ..., object_ids: _Optional[bytes] = ..., provenance: _Optional[bytes] = ..., confidence: _Optional[bytes] = ...) -> None: ...

class SpatialMemoryQueryResponse(_message.Message):
    __slots__ = ("render", "stats", "pick", "box")
    RENDER_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    PICK_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    render: MemoryRender
    stats: MemoryStats
    pick: PickResult
    box: BoxResult
    def __init__(self, render: _Optional[_Union[MemoryRender, _Mapping]] = ..., stats: _Optional[_Union[MemoryStats, _Mapping]] = ..., pick: _Optional[_Union[PickResult, _Mapping]] = ..., box: _Optional[_Union[BoxResult, _Mapping]] = ...) -> None: ...

class ContextualInferenceRequest(_message.Message):
    __slots__ = ("session_id", "pose", "commit")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    POSE_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    pose: PoseRequest
    commit: bool
    def __init__(self, session_id: _Optional[str] = ..., pose: _Optional[_Union[PoseRequest, _Mapping]] = ..., commit: _Optional[bool] = ...) -> None: ...

class ContextualInferenceResponse(_message.Message):
    __slots__ = ("frame",)
    FRAME_FIELD_NUMBER: _ClassVar[int]
    frame: Frame
    def __init__(self, frame: _Optional[_Union[Frame, _Mapping]] = ...) -> None: ...

class CloseSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class CloseSessionResponse(_message.Message):
    __slots__ = ("memory", "frames")
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    memory: MemoryStats
    frames: int
    def __init__(self, memory: _Optional[_Union[MemoryStats, _Mapping]] = ..., frames: _Optional[int] = ...) -> None: ...

class ExportMemoryRequest(_message.Message):
    __slots__ = ("session_id", "chunk_bytes")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    chunk_bytes: int
    def __init__(self, session_id: _Optional[str] = ..., chunk_bytes: _Optional[int] = ...) -> None: ...

class SealedChunk(_message.Message):
    __slots__ = ("index", "nonce", "ciphertext", "final", "header")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    index: int
    nonce: bytes
    ciphertext: bytes
    final: bool
    header: bytes
    def __init__(self, index: _Optional[int] = ..., nonce: _Optional[bytes] = ..., ciphertext: _Optional[bytes] = ..., final: _Optional[bool] = ..., header: _Optional[bytes] = ...) -> None: ...

class ImportMemoryRequest(_message.Message):
    __slots__ = ("session_id", "keep_provenance", "chunk")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    KEEP_PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    keep_provenance: bool
    chunk: SealedChunk
    def __init__(self, session_id: _Optional[str] = ..., keep_provenance: _Optional[bool] = ..., chunk: _Optional[_Union[SealedChunk, _Mapping]] = ...) -> None: ...

class ImportMemoryResponse(_message.Message):
    __slots__ = ("memory", "source_session", "export_id")
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SESSION_FIELD_NUMBER: _ClassVar[int]
    EXPORT_ID_FIELD_NUMBER: _ClassVar[int]
    memory: MemoryStats
    source_session: str
    export_id: str
    def __init__(self, memory: _Optional[_Union[MemoryStats, _Mapping]] = ..., source_session: _Optional[str] = ..., export_id: _Optional[str] = ...) -> None: ...

class CheckpointInfo(_message.Message):
    __slots__ = ("checkpoint_id", "label", "frame_index", "points", "bytes", "created_unix_us")
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_US_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    label: str
    frame_index: int
    points: int
    bytes: int
    created_unix_us: int
    def __init__(self, checkpoint_id: _Optional[str] = ..., label: _Optional[str] = ..., frame_index: _Optional[int] = ..., points: _Optional[int] = ..., bytes: _Optional[int] = ..., created_unix_us: _Optional[int] = ...) -> None: ...

class CreateCheckpoint(_message.Message):
    __slots__ = ("label",)
    LABEL_FIELD_NUMBER: _ClassVar[int]
    label: str
    def __init__(self, label: _Optional[str] = ...) -> None: ...

class Rollback(_message.Message):
    __slots__ = ("checkpoint_id",)
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    def __init__(self, checkpoint_id: _Optional[str] = ...) -> None: ...

class Forget(_message.Message):
    __slots__ = ("provenance",)
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    provenance: Provenance
    def __init__(self, provenance: _Optional[_Union[Provenance, str]] = ...) -> None: ...

class ListCheckpoints(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeleteCheckpoint(_message.Message):
    __slots__ = ("checkpoint_id",)
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    def __init__(self, checkpoint_id: _Optional[str] = ...) -> None: ...

class ManageMemoryRequest(_message.Message):
    __slots__ = ("session_id", "checkpoint", "rollback", "forget", "list", "delete")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_FIELD_NUMBER: _ClassVar[int]
    FORGET_FIELD_NUMBER: _ClassVar[int]
    LIST_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    checkpoint: CreateCheckpoint
    rollback: Rollback
    forget: Forget
    list: ListCheckpoints
    delete: DeleteCheckpoint
    def __init__(self, session_id: _Optional[str] = ..., checkpoint: _Optional[_Union[CreateCheckpoint, _Mapping]] = ..., rollback: _Optional[_Union[Rollback, _Mapping]] = ..., forget: _Optional[_Union[Forget, _Mapping]] = ..., list: _Optional[_Union[ListCheckpoints, _Mapping]] = ..., delete: _Optional[_Union[DeleteCheckpoint, _Mapping]] = ...) -> None: ...

class ManageMemoryResponse(_message.Message):
    __slots__ = ("memory", "checkpoints", "checkpoint", "points_forgotten", "texels_forgotten")
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    POINTS_FORGOTTEN_FIELD_NUMBER: _ClassVar[int]
    TEXELS_FORGOTTEN_FIELD_NUMBER: _ClassVar[int]
    memory: MemoryStats
    checkpoints: _containers.RepeatedCompositeFieldContainer[CheckpointInfo]
    checkpoint: CheckpointInfo
    points_forgotten: int
    texels_forgotten: int
    def __init__(self, memory: _Optional[_Union[MemoryStats, _Mapping]] = ..., checkpoints: _Optional[_Iterable[_Union[CheckpointInfo, _Mapping]]] = ..., checkpoint: _Optional[_Union[CheckpointInfo, _Mapping]] = ..., points_forgotten: _Optional[int] = ..., texels_forgotten: _Optional[int] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SessionSummary(_message.Message):
    __slots__ = ("session_id", "owner", "width", "height", "generator", "frames", "streaming", "idle_s", "age_s", "memory", "checkpoints", "durable_frame")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    GENERATOR_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    STREAMING_FIELD_NUMBER: _ClassVar[int]
    IDLE_S_FIELD_NUMBER: _ClassVar[int]
    AGE_S_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    DURABLE_FRAME_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    owner: str
    width: int
    height: int
    generator: str
    frames: int
    streaming: bool
    idle_s: float
    age_s: float
    memory: MemoryStats
    checkpoints: int
    durable_frame: int
    def __init__(self, session_id: _Optional[str] = ..., owner: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., generator: _Optional[str] = ..., frames: _Optional[int] = ..., streaming: _Optional[bool] = ..., idle_s: _Optional[float] = ..., age_s: _Optional[float] = ..., memory: _Optional[_Union[MemoryStats, _Mapping]] = ..., checkpoints: _Optional[int] = ..., durable_frame: _Optional[int] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions", "max_sessions", "admitted_budget_bytes", "total_budget_bytes", "stopping")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    ADMITTED_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    STOPPING_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[SessionSummary]
    max_sessions: int
    admitted_budget_bytes: int
    total_budget_bytes: int
    stopping: bool
    def __init__(self, sessions: _Optional[_Iterable[_Union[SessionSummary, _Mapping]]] = ..., max_sessions: _Optional[int] = ..., admitted_budget_bytes: _Optional[int] = ..., total_budget_bytes: _Optional[int] = ..., stopping: _Optional[bool] = ...) -> None: ...

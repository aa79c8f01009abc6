"""The client's domain types: plain dataclasses and numpy arrays, no protobuf (`plugin_bridge.wire`
converts them). Intrinsics live in `plugin_bridge.camera`."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from plugin_bridge.codec import DepthEncoding, FrameEncoding
from plugin_bridge.conventions import (
    Convention,
    canonical_to_engine,
    matrix_to_quat,
)

ORTHONORMAL_TOLERANCE = 1e-4
"""How far a pose matrix's rotation may be from orthonormal (|R^T R - I|, max entry)."""


def _convention(convention: Convention | str) -> Convention:
    return Convention(str(getattr(convention, "value", convention)).lower())


@dataclass(frozen=True)
class Pose:
    """A camera pose as the session's engine writes it: the camera object's position (engine units)
    and rotation quaternion (w, x, y, z) in the engine's own axes. The runtime converts it to the
    canonical frame with the convention the session declared."""

    position: tuple[float, float, float]
    rotation_wxyz: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        p = np.asarray(self.position, dtype=np.float64).reshape(-1)
        q = np.asarray(self.rotation_wxyz, dtype=np.float64).reshape(-1)
        if p.shape != (3,) or q.shape != (4,):
            raise ValueError(
                f"a pose needs 3 position values and 4 quaternion values, not {p.size} and {q.size}"
            )
        object.__setattr__(self, "position", tuple(float(v) for v in p))
        object.__setattr__(self, "rotation_wxyz", tuple(float(v) for v in q))

    @classmethod
    def from_matrix(cls, engine_cam_to_world, convention: Convention | str = Convention.OPENCV) -> Pose:
        """The pose of the engine's own camera-to-world 4x4 (its camera object's transform, column
        vectors, in the engine's axes and units: for OpenGL the camera looks down -z, for Unity down
        +z in a left-handed world). ``convention`` names the engine; it must be the session's. The
        rotation must be orthonormal with determinant +1 (no scale, no mirror): ValueError otherwise."""
        _convention(convention)  # a known engine
        m = np.asarray(engine_cam_to_world, dtype=np.float64)
        if m.shape != (4, 4) or not np.isfinite(m).all():
            raise ValueError("from_matrix needs a finite 4x4 camera-to-world matrix")
        if not np.allclose(m[3], (0.0, 0.0, 0.0, 1.0)):
            raise ValueError(
                "the matrix's last row must be (0, 0, 0, 1): pass camera-to-world, not a projection"
            )
        r = m[:3, :3]
        error = float(np.abs(r.T @ r - np.eye(3)).max())
        if error > ORTHONORMAL_TOLERANCE or np.linalg.det(r) < 0:
            raise ValueError(
                f"the matrix's rotation is not a rotation (|R^T R - I| = {error:.2g}, det {np.linalg.det(r):+.3f}): "
                "remove scale and mirroring (an engine's camera-to-world has neither)"
            )
        return cls(tuple(m[:3, 3]), tuple(matrix_to_quat(r)))

    @classmethod
    def from_canonical(
        cls,
        cam_to_world,
        convention: Convention | str = Convention.OPENCV,
        units_per_meter: float | None = None,
    ) -> Pose:
        """A canonical camera-to-world 4x4 (right-handed, metres, OpenCV camera axes), written as the
        engine ``convention`` writes poses (what a session of that convention sends)."""
        position, quat = canonical_to_engine(
            _convention(convention), np.asarray(cam_to_world, dtype=np.float64), units_per_meter
        )
        return cls(tuple(position), tuple(quat))


IDENTITY = Pose((0.0, 0.0, 0.0))


@dataclass
class Observation:
    """An engine's or an AR device's own frame: the truth memory is built from (observe mode)."""

    pose: Pose
    rgb: np.ndarray  # [H, W, 3] uint8
    depth: np.ndarray  # [H, W] planar metres: 0 unknown, +inf content at infinity
    instance_ids: np.ndarray | None = None
    """[H, W] signed integer object ids; 0 or negative: no object."""
    far_plane: float | None = None
    """Depth at or beyond this is content at infinity (an engine's far plane clears to it), sent as
    +inf; None: depth is sent as it is."""
    return_frame: bool = False
    """Whether the runtime answers with a frame (the observation, encoded) as well."""
    frame_encoding: FrameEncoding = FrameEncoding.RAW_RGB8
    depth_encoding: DepthEncoding = DepthEncoding.FLOAT16_METERS
    sequence: int | None = None
    """None: the stream numbers it."""
    timestamp_us: int | None = None
    """None: now."""


class Control(Enum):
    RESET_MEMORY = "reset_memory"
    REPORT_STATS = "report_stats"


class Provenance(Enum):
    """Where what memory holds came from."""

    OBSERVED = "observed"  # the client's own RGB-D frames
    GENERATED = "generated"  # the generator's completions
    IMPORTED = "imported"  # brought in by ImportMemory


@dataclass(frozen=True)
class MemoryStats:
    """A snapshot of memory size and history: what `runtime.memory` reports and the wire carries."""

    points: int = 0
    bytes_used: int = 0
    budget_bytes: int = 0
    points_pruned_total: int = 0
    points_carved_total: int = 0
    frames_ingested: int = 0
    environment_texels: int = 0
    window_frames: int = 0
    chunks: int = 0
    """World-space chunks holding points (`MemoryConfig.chunk_size_m` on the runtime)."""
    chunks_evicted_total: int = 0
    """Whole chunks the budget evicted so far (least relevant first)."""
    points_refined_total: int = 0
    """Coarse points retired so far because closer observations refined their whole footprint."""
    storage: str = "full"
    """Storage mode of this memory: "full" or "quantised"."""
    points_packed: int = 0
    """Of ``points``, those packed at 15 bytes each (quantised storage; 0 with full storage)."""


@dataclass(frozen=True)
class GeneratorInfo:
    name: str
    sha256: str
    kind: str
    providers: tuple[str, ...]
    detail_control: bool
    detail: float


@dataclass(frozen=True)
class SessionInfo:
    session_id: str
    server_version: str
    capabilities: tuple[str, ...]
    warnings: tuple[str, ...]
    generator: GeneratorInfo
    memory: MemoryStats
    convention: Convention
    intrinsics: object  # plugin_bridge.camera.Intrinsics
    max_message_bytes: int = 0


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
    memory: MemoryStats


@dataclass
class Event:
    kind: str  # e.g. "POSES_DROPPED"
    message: str
    sequences: list[int] = field(default_factory=list)
    memory: MemoryStats | None = None


@dataclass(frozen=True)
class StreamEnd:
    frames_sent: int
    poses_dropped: int


@dataclass(frozen=True)
class ClosedSession:
    memory: MemoryStats
    frames: int


@dataclass
class MemoryView:
    """A memory render answered by SpatialMemoryQuery."""

    rgb: np.ndarray
    depth: np.ndarray | None
    coverage: np.ndarray  # [H, W] float32 0..1
    coverage_fraction: float
    object_ids: np.ndarray | None = None  # [H, W] uint32: the object drawn at each pixel, 0 none
    provenance: np.ndarray | None = (
        None  # [H, W] uint8: Provenance values (1 observed, 2 generated, 3 imported), 0 none
    )
    confidence: np.ndarray | None = None  # [H, W] float32 0..1 (1 for the environment)


@dataclass(frozen=True)
class SurfaceHit:
    """One surface memory holds along a picked ray (session convention and units)."""

    point: tuple[float, float, float]
    distance: float  # from the ray's origin
    rgb: tuple[int, int, int]
    object_id: int  # 0: static scene
    provenance: Provenance | None
    confidence: float
    first_seen_frame: int
    last_seen_frame: int
    hit_count: int  # frames that confirmed the point
    radius: float  # the point's footprint radius
    points: int  # points of memory along the ray that make up the surface


@dataclass(frozen=True)
class RayPick:
    """What SpatialMemoryQuery's pick found, nearest surface first."""

    hits: tuple[SurfaceHit, ...]
    environment_rgb: tuple[int, int, int] | None  # the environment map's colour along the ray, if any
    chunks_tested: int
    points_tested: int


@dataclass(frozen=True)
class ObjectExtent:
    """One object id inside a queried box: its point count, centroid and the box of its points."""

    object_id: int
    points: int
    centroid: tuple[float, float, float]
    min: tuple[float, float, float]
    max: tuple[float, float, float]
    last_seen_frame: int


@dataclass
class BoxContents:
    """What SpatialMemoryQuery's box found: every point inside counted, a subsample returned."""

    inside: int
    xyz: np.ndarray  # [N, 3] float32, session convention and units
    rgb: np.ndarray  # [N, 3] uint8
    object_ids: np.ndarray  # [N] uint32
    provenance: np.ndarray  # [N] uint8 (Provenance values)
    last_seen_frames: np.ndarray  # [N] uint32
    objects: tuple[ObjectExtent, ...]
    chunks_tested: int


@dataclass(frozen=True)
class SealedExport:
    """A session's memory as the server sealed it (ExportMemory): its chunks in order, each an opaque
    serialized ``mirage.v1.SealedChunk``. Only a server holding the sealing key opens it; ``header`` is
    chunk 0's header as sent in the clear (key id, format version, the session's metadata), for
    information: the server authenticates it on import, nobody should trust it before."""

    chunks: tuple[bytes, ...]
    header: dict

    @property
    def nbytes(self) -> int:
        return sum(len(c) for c in self.chunks)


@dataclass(frozen=True)
class CheckpointInfo:
    checkpoint_id: str
    label: str
    frame_index: int
    points: int
    bytes: int
    created_unix_us: int


@dataclass(frozen=True)
class MemoryEdit:
    """What ManageMemory answered: the memory after the action and the session's checkpoints."""

    memory: MemoryStats
    checkpoints: tuple[CheckpointInfo, ...]
    checkpoint: CheckpointInfo | None = None
    """The checkpoint created or rolled back to."""
    points_forgotten: int = 0
    texels_forgotten: int = 0


@dataclass(frozen=True)
class ImportResult:
    memory: MemoryStats
    source_session: str
    export_id: str


@dataclass(frozen=True)
class SessionSummary:
    """One open session as the admin service lists it (`MirageClient.list_sessions`)."""

    session_id: str
    owner: str
    """The principal that opened it ("" on a server without tokens)."""
    width: int
    height: int
    generator: str
    frames: int
    streaming: bool
    idle_s: float
    age_s: float
    memory: MemoryStats
    checkpoints: int
    """In-memory checkpoints it holds."""
    durable_frame: int
    """Frame of its last durable checkpoint (0: none yet)."""


@dataclass(frozen=True)
class ServerSessions:
    """What the admin service says of a server: its sessions (oldest first) and what it admits."""

    sessions: tuple[SessionSummary, ...]
    max_sessions: int
    admitted_budget_bytes: int
    total_budget_bytes: int
    stopping: bool


__all__ = [
    "IDENTITY",
    "CheckpointInfo",
    "ClosedSession",
    "Control",
    "Event",
    "Frame",
    "GeneratorInfo",
    "ImportResult",
    "MemoryEdit",
    "MemoryStats",
    "MemoryView",
    "Observation",
    "Pose",
    "Provenance",
    "SealedExport",
    "ServerSessions",
    "SessionInfo",
    "SessionSummary",
    "StreamEnd",
]

"""Plain domain types passed between the wire layer and sessions (no protobuf, no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from plugin_bridge.camera import Intrinsics
from plugin_bridge.codec import DepthEncoding, FrameEncoding
from plugin_bridge.conventions import Convention


@dataclass(frozen=True)
class SessionSpec:
    """What a client declared at the handshake, validated and normalised."""

    convention: Convention
    units_per_meter: float
    intrinsics: Intrinsics
    frame_encoding: FrameEncoding
    depth_encoding: DepthEncoding
    jpeg_quality: int
    generator: str
    budget_bytes: int
    window_frames: int
    seed: int
    release_on_disconnect: bool
    client_capabilities: tuple[str, ...] = ()
    storage: str = "full"
    """Memory storage mode: "full" or "quantised" (`runtime.memory.MemoryConfig.storage`)."""
    detail: float | None = None
    """Generator detail strength (0..MAX_DETAIL) the client asked for; None: the card's default."""


@dataclass(frozen=True)
class PoseInput:
    """A generate-mode request: a canonical camera-to-world pose."""

    sequence: int
    client_timestamp_us: int
    cam_to_world: np.ndarray  # [4, 4] float64, canonical
    received_us: int = 0


@dataclass(frozen=True)
class ObservationInput:
    """An observe-mode request: the client's own RGB-D frame (the truth)."""

    sequence: int
    client_timestamp_us: int
    cam_to_world: np.ndarray  # [4, 4] float64, canonical
    rgb: np.ndarray  # [H, W, 3] uint8
    depth: np.ndarray  # [H, W] float32 metres; 0 unknown, +inf at infinity
    instance_ids: np.ndarray | None  # [H, W] uint32
    return_frame: bool
    depth_masked: int  # NaN / negative values that were turned into "unknown"
    depth_at_max: tuple[int, float] | None = None
    """(pixels, metres) when much of the frame sits at one far maximum depth (an engine's far plane
    sent as depth), else None: `runtime.wire.depth_at_one_maximum`."""
    decode_ms: float = 0.0
    received_us: int = 0


@dataclass
class FrameResult:
    """One frame out of the frame loop, before encoding."""

    sequence: int
    client_timestamp_us: int
    received_us: int
    frame_index: int
    rgb: np.ndarray  # [H, W, 3] uint8
    depth: np.ndarray  # [H, W] float32 metres; 0 unknown, +inf at infinity
    coverage: float
    observed: bool
    timings_ms: dict[str, float] = field(default_factory=dict)

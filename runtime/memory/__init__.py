"""Spatial memory: world-space surface points plus an environment map for content at infinity.

Plain tensors and dataclasses in and out (no gRPC, no protobuf). `SpatialMemory` is the entry point;
`splat_points` is the render kernel and `runtime.memory.reference` its slow twin for tests.
"""

from plugin_bridge.types import (
    MemoryStats,  # what `SpatialMemory.stats` returns (the wire carries it as it is)
)
from runtime.memory.config import (
    PROVENANCE_GENERATED,
    PROVENANCE_IMPORTED,
    PROVENANCE_NONE,
    PROVENANCE_OBSERVED,
    IngestStats,
    MemoryConfig,
)
from runtime.memory.environment import EnvironmentMap
from runtime.memory.spatial import SpatialMemory
from runtime.memory.splat import MemoryRender, SplatWinners, splat_points

__all__ = [
    "PROVENANCE_GENERATED",
    "PROVENANCE_IMPORTED",
    "PROVENANCE_NONE",
    "PROVENANCE_OBSERVED",
    "EnvironmentMap",
    "IngestStats",
    "MemoryConfig",
    "MemoryRender",
    "MemoryStats",
    "SpatialMemory",
    "SplatWinners",
    "splat_points",
]

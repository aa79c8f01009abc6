"""Spatial memory configuration and the plain records memory hands back (no torch, no gRPC).

Provenance numbers match the wire enum (mirage.v1 `Provenance`): 0 none, 1 observed, 2 generated,
3 imported.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 2**20

PROVENANCE_NONE = 0
PROVENANCE_OBSERVED = 1
PROVENANCE_GENERATED = 2
PROVENANCE_IMPORTED = 3
PROVENANCES = (PROVENANCE_OBSERVED, PROVENANCE_GENERATED, PROVENANCE_IMPORTED)

STORAGE_MODES = ("full", "quantised")

MIN_POINTS = 1024
"""The smallest point capacity a budget must leave once the environment map is paid for."""


@dataclass
class MemoryConfig:
    """Knobs of one session's spatial memory; the defaults are what `mirage serve` uses."""

    budget_bytes: int = 128 * MiB
    """Hard cap on the bytes memory holds (point storage + environment map); never exceeded."""
    window_frames: int = 0
    """0 keeps memory persistent; K > 0 keeps only what appeared in the last K frames (baselines)."""
    storage: str = "full"
    """"full": every point in full precision (54 bytes a point with its index); "quantised": only the
    chunks the current view needs stay in full precision, the rest are packed at 15 bytes a point
    (`runtime.memory.quantised`): more than 3x the points in the same budget, for small devices."""
    depth_tolerance: float = 0.02
    """Relative depth band in which two surfaces count as the same (z-buffer ties, matching)."""
    max_splat_radius_px: int = 4
    """Largest half-size, in pixels, a point's square splat may take when seen up close."""
    generated_depth_bias: float = 0.3
    """Generated points meet depth tests as if this fraction farther: a guess never hides an observed
    surface it is less than 30% in front of (observed content beats generated content)."""
    near: float = 0.05
    """Points nearer than this (metres, camera z) are not rendered or carved."""
    far: float = 1000.0
    """Observed or generated depth beyond this (metres) is content at infinity: environment map."""
    generated_far: float = 60.0
    """Generated depth beyond this (metres) is content at infinity too (environment map): a guess that
    far away gains nothing from being a point, and scattered far points fill the chunk table with
    sparse, distant chunks (each a row) that the current view keeps from being evicted."""
    env_width: int = 512
    """Environment map columns (azimuth)."""
    env_height: int = 256
    """Environment map rows (elevation, row 0 looks straight up)."""
    initial_capacity: int = 65536
    """Points allocated up front; storage then grows geometrically, never past the budget."""
    chunk_size_m: float = 2.0
    """Edge of the world-space voxels (chunks) that render, carving and eviction cull by, metres."""
    trajectory_step_m: float = 0.5
    """A camera position joins the remembered trajectory once it is this far from the last one kept."""
    trajectory_samples: int = 1024
    """Trajectory positions remembered for relevance (oldest forgotten first)."""
    trajectory_scale_m: float = 6.0
    """Relevance nearness term: exp(-distance to the trajectory / this)."""
    recency_frames: float = 600.0
    """Relevance recency term: 1 / (1 + frames since last seen / this)."""
    trajectory: float = 2.0
    """Weight of nearness to the recent trajectory in a chunk's relevance."""
    recency: float = 1.0
    """Weight of recency in a chunk's relevance."""
    provenance: float = 1.0
    """Weight of the observed share in a chunk's relevance (observed beats generated)."""
    refine: bool = True
    """Multi-scale refinement: an observed frame retires a coarse point (half-size over 1.5 px in its view)
    whose whole footprint it confirms and stores with finer points (see `SpatialMemory.ingest`)."""
    freespace_keyframes: int = 64
    """Observed views whose proven free space memory keeps (`runtime.memory.freespace`): generated points
    that would stand in it move back along their rays. At most one per 128 KiB of budget; 0 disables."""
    freespace_margin: float = 0.1
    """A point is in observed free space when a keyframe saw it in front of its surface by more than this
    fraction of that surface's depth."""

    def validate(self) -> None:
        """Raise ValueError naming the field to fix when a value makes no sense."""
        if self.budget_bytes < MiB:
            raise ValueError(f"budget_bytes={self.budget_bytes}: memory needs at least 1 MiB ({MiB} bytes)")
        if self.window_frames < 0:
            raise ValueError(
                f"window_frames={self.window_frames}: use 0 (persistent) or a positive frame count"
            )
        if self.storage not in STORAGE_MODES:
            raise ValueError(f"storage={self.storage!r}: use one of {', '.join(STORAGE_MODES)}")
        if self.storage == "quantised" and self.window_frames:
            raise ValueError(
                "storage='quantised' keeps memory persistent: use window_frames=0 with it (a window "
                "baseline uses full storage)"
            )
        if not 0.0 < self.depth_tolerance < 1.0:
            raise ValueError(f"depth_tolerance={self.depth_tolerance}: use a fraction in (0, 1), e.g. 0.02")
        if not 0.0 <= self.generated_depth_bias <= 10.0:
            raise ValueError(
                f"generated_depth_bias={self.generated_depth_bias}: use a fraction >= 0, e.g. 0.3 (0 disables)"
            )
        if not 0 <= self.max_splat_radius_px <= 64:
            raise ValueError(f"max_splat_radius_px={self.max_splat_radius_px}: use 0..64 pixels")
        if not self.near < self.generated_far:
            raise ValueError(
                f"generated_far={self.generated_far}: use metres beyond near={self.near}, e.g. 60"
            )
        if not 0.0 < self.near < self.far:
            raise ValueError(f"near={self.near}, far={self.far}: need 0 < near < far (metres)")
        if self.env_width < 4 or self.env_height < 2:
            raise ValueError(f"environment map {self.env_width}x{self.env_height}: use at least 4x2 texels")
        if not 0.05 <= self.chunk_size_m <= 1000.0:
            raise ValueError(f"chunk_size_m={self.chunk_size_m}: use 0.05..1000 metres, e.g. 2.0")
        if self.initial_capacity < 1:
            raise ValueError(f"initial_capacity={self.initial_capacity}: use a positive point count")
        if not (self.trajectory_step_m > 0 and self.trajectory_scale_m > 0 and self.recency_frames > 0):
            raise ValueError("trajectory_step_m, trajectory_scale_m and recency_frames must be > 0")
        if self.trajectory_samples < 1:
            raise ValueError(f"trajectory_samples={self.trajectory_samples}: keep at least 1 position")
        if min(self.trajectory, self.recency, self.provenance) < 0:
            raise ValueError("relevance weights (trajectory, recency, provenance) must be >= 0")
        if not 0 <= self.freespace_keyframes <= 4096:
            raise ValueError(f"freespace_keyframes={self.freespace_keyframes}: use 0 (off) .. 4096, e.g. 64")
        if not 0.0 <= self.freespace_margin < 1.0:
            raise ValueError(f"freespace_margin={self.freespace_margin}: use a fraction in [0, 1), e.g. 0.1")


@dataclass(frozen=True)
class IngestStats:
    """What one `SpatialMemory.ingest` call did."""

    added: int
    """New points appended."""
    updated: int
    """Existing points refreshed by a matching observation (colour, confidence, hit count)."""
    carved: int
    """Points removed because the observation saw through them (free space)."""
    pruned: int
    """Points evicted for the budget or expired from the window."""
    dropped: int
    """New points not stored because the budget had no room left for them."""
    env_texels_written: int
    """Environment texels whose colour this frame set."""
    refined: int = 0
    """Coarse points retired because this observed frame stored their whole footprint with finer points."""
    moved: int = 0
    """Generated points moved back along their rays out of observed free space (`runtime.memory.freespace`)."""
    refused: int = 0
    """Generated points not stored: no place along their rays outside observed free space."""

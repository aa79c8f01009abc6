"""SpatialMemory: world-space surface points plus a direction map for content at infinity.

Points live in a struct of arrays (torch tensors with spare capacity, grown geometrically but never
past the byte budget), indexed by world-space chunk (`runtime.memory.chunks`). `render` splats the
points of the chunks in the camera's frustum (`runtime.memory.splat`); `ingest` takes a frame back:
observed frames are the truth (carve free space, refresh matching points, add the rest, retire coarse
points whose whole footprint the frame stored finer: multi-scale refinement, and keep the free space
they prove), generated frames only add what memory did not cover, never inside space an observation
proved empty (`runtime.memory.freespace`). Removal is a swap-remove (the last points fill the holes),
so indices change on every removal. The budget holds after every call (`runtime.memory.eviction`).
`forget` and `relabel` edit it by provenance (`runtime.memory.editing`); `pick` and `box` ask it
what lies along a ray or in a box (`runtime.memory.query`).
"""

from __future__ import annotations

import math

import torch

from plugin_bridge.types import MemoryStats
from runtime.memory.chunks import BYTES_PER_CHUNK, BYTES_PER_POINT, ChunkIndex
from runtime.memory.config import MIN_POINTS, MemoryConfig
from runtime.memory.editing import Editing
from runtime.memory.environment import EnvironmentMap
from runtime.memory.freespace import FreeSpaceKeyframes, keyframe_capacity
from runtime.memory.ingest import Ingester
from runtime.memory.quantised import ColdStore
from runtime.memory.query import Queries
from runtime.memory.render import Renderer
from runtime.memory.store import SCHEMA, PointStore
from runtime.memory.tiering import Tiering

BUDGET_BYTES_PER_CHUNK_ROW = {"full": 4096, "quantised": 1024}
"""Budget bytes per chunk-table row: about 75 points a row either way (a row is 2% of its 4 KiB in full
storage; 10% of its 1 KiB quantised, where a packed point costs 15 bytes, not 54)."""


class SpatialMemory(Ingester, Renderer, Queries, Tiering, Editing, PointStore):
    """One session's spatial memory. Not thread-safe: the owning session serialises calls (its lock)."""

    def __init__(self, config: MemoryConfig | None = None, device: str | torch.device = "cpu"):
        self.config = config if config is not None else MemoryConfig()
        self.config.validate()
        self.device = torch.device(device)
        self.bytes_per_point, fixed, max_chunks = self.layout(self.config)
        self._fixed_bytes = fixed
        self.cold = ColdStore(max_chunks) if self.config.storage == "quantised" else None
        self._max_points = (self.config.budget_bytes - fixed) // self.bytes_per_point
        if self._max_points < MIN_POINTS:
            need = fixed + MIN_POINTS * self.bytes_per_point
            raise ValueError(
                f"memory budget {self.config.budget_bytes} bytes is too small: the environment map "
                f"({self.config.env_width}x{self.config.env_height}) and the chunk table take {fixed} bytes "
                f"and {MIN_POINTS} points take {MIN_POINTS * self.bytes_per_point}; use a budget of at "
                f"least {need} bytes (or a smaller environment map)"
            )
        self.env = EnvironmentMap(self.config.env_width, self.config.env_height, self.device)
        self.freespace = FreeSpaceKeyframes(
            keyframe_capacity(self.config.budget_bytes, self.config.freespace_keyframes), self.device
        )
        self.chunks = ChunkIndex(self.config.chunk_size_m, max_chunks, self.device)
        self.last_touched = 0  # points whose arrays the last render / ingest read (culling at work)
        self._trajectory = torch.zeros(self.config.trajectory_samples, 3, dtype=torch.float64)
        self._trajectory_len = 0  # positions kept, in a ring: newest at (_trajectory_next - 1)
        self._trajectory_next = 0
        self._version = 0  # bumped whenever point indices may change: older renders are refused
        self.reset()

    @staticmethod
    def layout(config: MemoryConfig) -> tuple[int, int, int]:
        """(bytes a point costs, bytes fixed up front, chunk table rows) of a memory with ``config``.

        A budget holds (budget_bytes - fixed) // bytes_per_point points; the fixed part is the
        environment map, the chunk table (a row per 4 KiB of budget, at least 256), the remembered
        trajectory and the free-space keyframes.
        """
        per_point = BYTES_PER_POINT + sum(d.itemsize * math.prod(s) for _, d, s in SCHEMA)
        max_chunks = max(256, config.budget_bytes // BUDGET_BYTES_PER_CHUNK_ROW[config.storage])
        env_bytes = EnvironmentMap.nbytes_for(config.env_width, config.env_height)
        trajectory_bytes = config.trajectory_samples * 3 * 8
        keyframe_bytes = FreeSpaceKeyframes.nbytes_for(
            keyframe_capacity(config.budget_bytes, config.freespace_keyframes)
        )
        fixed = env_bytes + max_chunks * BYTES_PER_CHUNK + trajectory_bytes + keyframe_bytes
        if config.storage == "quantised":
            fixed += ColdStore.nbytes_for(max_chunks)
        return per_point, fixed, max_chunks

    @property
    def max_points(self) -> int:
        """Most points the hot store (full precision) may hold now: with quantised storage, what the
        budget leaves beside the packed arena."""
        if self.cold is None:
            return self._max_points
        return (self.config.budget_bytes - self._fixed_bytes - self.cold.capacity) // self.bytes_per_point

    # -- storage ---------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything (points, environment, totals) and shrink storage to the initial capacity."""
        self._count = 0
        if self.cold is not None:
            self.cold.clear()
            self.cold.resize(0)
        self._fields = self._allocate(min(self.config.initial_capacity, self.max_points))
        self.chunks.reset(self.capacity)
        self.env.clear()
        self.freespace.clear()
        self._version += 1
        self._pruned_total = self._carved_total = self._frames = 0
        self._now = 0  # the newest frame index ingested (eviction's "now" outside an ingest)
        self._chunks_evicted_total = self._refined_total = 0
        self._trajectory_len = self._trajectory_next = 0
        self._idle_packed = 0  # the frame (`_now`) at which `_focus` last packed idle chunks in view

    def stats(self) -> MemoryStats:
        return MemoryStats(
            points=self.num_points,
            bytes_used=self.bytes_used(),
            budget_bytes=self.config.budget_bytes,
            points_pruned_total=self._pruned_total,
            points_carved_total=self._carved_total,
            frames_ingested=self._frames,
            environment_texels=self.env.filled_count,
            window_frames=self.config.window_frames,
            chunks=self.chunks.num_chunks,
            chunks_evicted_total=self._chunks_evicted_total,
            points_refined_total=self._refined_total,
            storage=self.config.storage,
            points_packed=self.cold.points if self.cold is not None else 0,
        )

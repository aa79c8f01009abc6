"""SpatialMemory: world-space surface points plus a direction map for content at infinity.

Points live in a struct of arrays (torch tensors with spare capacity, grown geometrically but never
past the byte budget), indexed by world-space chunk (`runtime.memory.chunks`). `render` splats the
points of the chunks in the camera's frustum (`runtime.memory.splat`); `ingest` takes a frame back:
observed frames are the truth (carve free space, refresh matching points, add the rest, retire coarse
points whose whole footprint the frame stored finer: multi-scale refinement, and keep the free space
they prove), generated frames only add what memory did not cover, never inside space an observation
proved empty (`runtime.memory.freespace`). Removal is a swap-remove (the last points fill the holes),
so indices change on every removal. The budget holds after every call (`runtime.memory.eviction`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from plugin_bridge.camera import Camera
from runtime.memory.backend import fast_kernels
from runtime.memory.chunks import BYTES_PER_CHUNK, BYTES_PER_POINT, ChunkIndex, segment_positions
from runtime.memory.config import (
    MIN_POINTS,
    PROVENANCE_GENERATED,
    PROVENANCE_IMPORTED,
    PROVENANCE_OBSERVED,
    IngestStats,
    MemoryConfig,
    MemoryStats,
)
from runtime.memory.environment import EnvironmentMap
from runtime.memory.eviction import choose_victims, lowest_k
from runtime.memory.freespace import HALF_DIAGONAL, FreeSpaceKeyframes, keyframe_capacity
from runtime.memory.geometry import float32_constants, unproject_pixels, world_to_cam_torch
from runtime.memory.ingest_frame import IngestFrame, check_frame
from runtime.memory.quantised import (
    ColdStore,
    check_blob,
    decode_chunk,
    decode_rows,
    decode_view,
    encode_chunks,
    packed_rmax,
    snap,
    snap_confidence,
    snap_positions,
    touch_packed,
)
from runtime.memory.splat import (
    MemoryRender,
    SplatWinners,
    check_camera,
    check_render,
    compose_render,
    free_space,
    splat_points,
)

SCHEMA: tuple[tuple[str, torch.dtype, tuple[int, ...]], ...] = (
    ("xyz", torch.float32, (3,)),  # world position, metres
    ("rgb", torch.uint8, (3,)),
    ("radius", torch.float32, ()),  # world half-size of the footprint (half a pixel diagonal at creation)
    ("confidence", torch.float16, ()),
    ("provenance", torch.uint8, ()),  # 1 observed, 2 generated, 3 imported
    ("last_seen", torch.int32, ()),  # frame index
    ("hit_count", torch.int32, ()),
    ("object_id", torch.int32, ()),  # 0 none
    ("frame_added", torch.int32, ()),
)
NEW_CONFIDENCE = {PROVENANCE_OBSERVED: 0.75, PROVENANCE_GENERATED: 0.5, PROVENANCE_IMPORTED: 0.75}
EVICTION_HEADROOM = 64  # evicting frees 1/64 of capacity beyond the need, so evictions are rare
BUDGET_BYTES_PER_CHUNK_ROW = {"full": 4096, "quantised": 1024}
"""Budget bytes per chunk-table row: about 75 points a row either way (a row is 2% of its 4 KiB in full
storage; 10% of its 1 KiB quantised, where a packed point costs 15 bytes, not 54)."""
HOT_IDLE_FRAMES = 16
"""Quantised storage: a chunk in view stays in full precision while frames keep adding points to it;
this many frames after the last did, it is packed (render reads it from the arena all the same)."""
_VIEW_FIELDS = ("xyz", "radius", "provenance", "rgb", "confidence", "object_id")
"""What a render reads of a point (`decode_view` gives these for packed ones)."""
MATCH_MAX_RADIUS_PX = 1.5  # a matched point must be at least this fine in the current view
REFINE_MAX_SLOPE = 1.0  # refinement accepts depth varying across a footprint as on a plane up to 45 deg


class SpatialMemory:
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

    def _remember_position(self, eye) -> None:
        """Add the camera position to the trajectory once it moved trajectory_step_m from the last kept."""
        eye = torch.as_tensor(eye, dtype=torch.float64)
        if self._trajectory_len:
            last = self._trajectory[(self._trajectory_next - 1) % self._trajectory.shape[0]]
            if float((eye - last).norm()) < self.config.trajectory_step_m:
                return
        self._trajectory[self._trajectory_next] = eye
        self._trajectory_next = (self._trajectory_next + 1) % self._trajectory.shape[0]
        self._trajectory_len = min(self._trajectory_len + 1, self._trajectory.shape[0])

    def trajectory(self, eye=None) -> torch.Tensor:
        """Remembered camera positions [T, 3] (float64, oldest first), plus ``eye`` when given (the
        current camera, last)."""
        n, size = self._trajectory_len, self._trajectory.shape[0]
        order = torch.arange(self._trajectory_next - n, self._trajectory_next) % size
        kept = self._trajectory[order]
        if eye is None:
            return kept
        return torch.cat([kept, torch.as_tensor(eye, dtype=torch.float64)[None]])

    def restore_trajectory(self, positions) -> None:
        """Replace the remembered trajectory with ``positions`` [K, 3] (oldest first; the newest
        trajectory_samples are kept), as a snapshot restores it."""
        pos = torch.as_tensor(positions, dtype=torch.float64).reshape(-1, 3)[-self._trajectory.shape[0] :]
        self._trajectory.zero_()
        self._trajectory[: pos.shape[0]] = pos
        self._trajectory_len = pos.shape[0]
        self._trajectory_next = pos.shape[0] % self._trajectory.shape[0]

    @property
    def num_points(self) -> int:
        """Points stored: in full precision, plus packed ones with quantised storage."""
        return self._count + (self.cold.points if self.cold is not None else 0)

    @property
    def hot_points(self) -> int:
        """Points in the full-precision store (all of them with full storage): what `points` returns."""
        return self._count

    @property
    def capacity(self) -> int:
        return self._fields["xyz"].shape[0]

    def bytes_used(self) -> int:
        """All storage held: point capacity (live or spare), the chunk index, the environment map, the
        remembered trajectory, the free-space keyframes."""
        return (
            self.capacity * (self.bytes_per_point - BYTES_PER_POINT)
            + self.chunks.nbytes()
            + self.env.nbytes
            + self._trajectory.numel() * self._trajectory.element_size()
            + self.freespace.nbytes
            + (self.cold.nbytes() if self.cold is not None else 0)
        )

    def points(self) -> dict[str, torch.Tensor]:
        """Views of the live points' arrays (for tests and queries; do not keep across mutations)."""
        return {name: t[: self._count] for name, t in self._fields.items()}

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

    def _allocate(self, capacity: int) -> dict[str, torch.Tensor]:
        return {n: torch.zeros((capacity, *s), dtype=d, device=self.device) for n, d, s in SCHEMA}

    def _reserve(self, total: int) -> None:
        if total <= self.capacity:
            return
        # quantised storage grows the hot store by a quarter (its bytes come out of the packed arena)
        grown = 2 * self.capacity if self.cold is None else self.capacity + self.capacity // 4
        self._resize_hot(min(self.max_points, max(total, grown)))

    def _resize_hot(self, capacity: int) -> None:
        fields = self._allocate(capacity)
        for name, t in self._fields.items():
            fields[name][: self._count] = t[: self._count]
        self._fields = fields
        if capacity < self.chunks.point_chunk.shape[0]:  # shrinking (quantised storage): rebuild the index
            self.chunks.shrink(capacity, self._count)
        else:
            self.chunks.reserve(self.capacity, self._count)

    def _remove(self, drop: torch.Tensor, keep_rows: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Remove live points ``drop`` ([N] bool, or distinct int64 indices); the last points fill the holes.

        Returns (holes, movers): point ``movers[i]`` now lives at ``holes[i]`` (see `_remap`).
        ``keep_rows``: chunks left empty keep their rows (their points were packed).
        """
        drop = drop.nonzero().squeeze(1) if drop.dtype == torch.bool else torch.sort(drop).values
        if drop.numel() == 0:
            return drop, drop
        holes, movers = self.chunks.remove(drop, self._count, self.points(), keep_rows=keep_rows)
        for t in self._fields.values():
            t[holes] = t[movers]
        self._count -= drop.numel()
        return holes, movers

    def _append(self, values: dict[str, torch.Tensor]) -> None:
        m = values["xyz"].shape[0]
        self._reserve(self._count + m)
        for name, t in self._fields.items():
            t[self._count : self._count + m] = values[name]
        f, end = self._fields, self._count + m
        self.chunks.append(
            self._count, f["xyz"][self._count : end], f["radius"][self._count : end],
            f["last_seen"][self._count : end], f["provenance"][self._count : end],
        )  # fmt: skip
        self._count = end

    def _candidates(self, camera: Camera) -> torch.Tensor:
        """Points (int64, ascending) of the chunks in ``camera``'s frustum: all the kernel could draw."""
        rows = self.chunks.in_frustum(camera, self.config.near, self.config.max_splat_radius_px)
        return self.chunks.members(rows, self._count)

    # -- quantised storage -----------------------------------------------------------------------
    def _focus(self, camera: Camera, pack_idle: bool = True) -> torch.Tensor:
        """Quantised storage: pack the hot chunks outside ``camera``'s frustum and, unless not
        ``pack_idle``, those in it that no frame added points to in the last HOT_IDLE_FRAMES (render
        reads packed chunks from the arena: only chunks an ingest writes to need full precision).
        Returns the chunk rows in the frustum."""
        rows = self.chunks.in_frustum(camera, self.config.near, self.config.max_splat_radius_px)
        used = self.chunks.used_rows()
        if used.numel() == 0:
            return rows
        leave = ~torch.isin(used, rows)
        if pack_idle and self._now >= self._idle_packed + HOT_IDLE_FRAMES // 2:  # in batches: fewer calls
            self._idle_packed = self._now
            leave |= torch.from_numpy(self.cold.written[used.numpy()] < self._now - HOT_IDLE_FRAMES)
        leave = used[(self.chunks.rows["size"][used] > 0) & leave]
        if leave.numel():
            self._pruned_total += self._pack(leave, camera, rows)
        return rows

    def _heat_view(self, camera: Camera, frame_index: int) -> bool:
        """Quantised storage, before an observed ingest (which may change or remove any point in view):
        unpack the packed chunks in ``camera``'s frustum and mark every hot one there written at
        ``frame_index`` (so it stays hot while observations go on). Returns whether any was unpacked."""
        rows = self.chunks.in_frustum(camera, self.config.near, self.config.max_splat_radius_px)
        enter = rows[torch.from_numpy(self.cold.count[rows.numpy()] > 0)]
        if enter.numel():
            self._pruned_total += self._unpack(enter, camera, rows)
        hot = rows[self.chunks.rows["size"][rows] > 0].numpy()
        self.cold.written[hot] = frame_index
        return bool(enter.numel())

    def _pack(self, rows: torch.Tensor, camera: Camera, in_view: torch.Tensor) -> int:
        """Pack the chunks ``rows`` (hot, outside the view) into the arena; their points leave the hot
        store. When the budget cannot hold every blob, the least relevant are dropped. Returns the
        points pruned (here and by the eviction of packed chunks it needed)."""
        f = self.points()
        rows = self._most_relevant_first(rows, camera)  # the first to get room
        sizes = self.chunks.rows["size"][rows]
        points = self.chunks.pool[segment_positions(self.chunks.rows["start"][rows], sizes)].long()
        chunk = torch.repeat_interleave(torch.arange(rows.numel()), sizes)
        points = points[torch.from_numpy(np.lexsort((points.numpy(), chunk.numpy())))]  # ascending in each
        bounds = np.concatenate([[0], np.cumsum(sizes.numpy())])
        blobs = encode_chunks(
            {name: f[name][points].numpy() for name, _, _ in SCHEMA},
            bounds,
            self.chunks.rows["last_seen"][rows].numpy(),
            self.config.chunk_size_m,
        )
        self._remove(points, keep_rows=True)
        self._version += 1
        # the hot store holds one view's chunks: when they need far less than it has, give the bytes
        # back to the arena (it grows again by a quarter at a time, see `_reserve`)
        target = max(MIN_POINTS, self._count + self._count // 4)
        if self.capacity > 2 * target:
            self._resize_hot(target)
        for row, blob in zip(rows.tolist(), blobs, strict=True):
            self.chunks.rows["rmax"][row] = packed_rmax(blob)  # as a restored snapshot's row
        return self._store_blobs(rows.tolist(), blobs, in_view, camera)

    def _store_blobs(
        self, rows: list[int], blobs: list[np.ndarray], keep: torch.Tensor, camera: Camera
    ) -> int:
        """Put ``blobs`` into the arena as the chunks ``rows`` (their rows filled, no blob held), after
        making room (`_arena_room`, never evicting ``keep``); a blob that still finds none is pruned
        with its row. Returns the points pruned."""
        pruned = self._arena_room(sum(b.shape[0] for b in blobs), keep, camera)
        for row, blob in zip(rows, blobs, strict=True):
            if blob.shape[0] > self.cold.room():  # no room left even after evicting: prune it
                pruned += int(self.chunks.rows["provenance"][row].sum())
                self._chunks_evicted_total += 1
                self.chunks.drop_row(row)
            else:
                self.cold.put(row, blob)
        return pruned

    def _most_relevant_first(self, rows: torch.Tensor, camera: Camera) -> torch.Tensor:
        """``rows`` by relevance, most relevant first: the reverse of `ChunkIndex.eviction_order` (ties in
        key order there), ranking only these rows (the whole table costs a distance per row and
        trajectory sample, every frame)."""
        rows = rows[torch.argsort(self.chunks.rows["key"][rows])]
        relevance = self.chunks.relevance(rows, self.trajectory(camera.position), self._now, self.config)
        return rows[torch.argsort(relevance, stable=True)].flip(0)

    def _arena_room(self, need: int, keep: torch.Tensor, camera: Camera) -> int:
        """Make ``need`` bytes free at the arena's end: compact, grow within the budget, or evict packed
        chunks (least relevant first, never ``keep`` rows), each with headroom so it stays rare.
        Returns the points evicted."""
        cold = self.cold
        if cold.room() >= need:
            return 0
        if cold.capacity - cold.live >= need + cold.capacity // 16:
            cold.compact()
            return 0
        limit = self.config.budget_bytes - self._fixed_bytes - self.capacity * self.bytes_per_point
        want = cold.live + need
        if want > limit and self.capacity > max(MIN_POINTS, self._count):
            # the hot store's spare capacity goes before any packed chunk does (it grows back by a quarter)
            self._resize_hot(max(MIN_POINTS, self._count))
            limit = self.config.budget_bytes - self._fixed_bytes - self.capacity * self.bytes_per_point
        if want <= limit:
            cold.resize(min(limit, max(want + want // 8, cold.capacity + cold.capacity // 4)))
            return 0
        pruned = self._evict_packed(camera, keep, nbytes=want + limit // EVICTION_HEADROOM - limit)
        cold.resize(max(cold.live, limit))
        return pruned

    def _hot_room(self, points: int, keep: torch.Tensor, camera: Camera) -> int:
        """Let the hot store grow by ``points`` (shrinking the arena, evicting packed chunks other than
        ``keep`` when the budget requires); returns the pruned point count."""
        cold = self.cold
        if self.max_points >= self._count + points:
            return 0
        allowed = self.config.budget_bytes - self._fixed_bytes - (self._count + points) * self.bytes_per_point
        pruned = 0
        if cold.live > allowed:
            pruned = self._evict_packed(
                camera, keep, nbytes=cold.live - allowed + max(allowed, 0) // EVICTION_HEADROOM
            )
        cold.resize(max(cold.live, min(cold.capacity, max(allowed, 0))))
        return pruned

    def _evict_packed(self, camera: Camera, keep: torch.Tensor, nbytes: int = 0, rows: int = 0) -> int:
        """Drop packed chunks (least relevant first, never ``keep``) until ``nbytes`` of blobs and ``rows``
        chunk rows are freed, or none is left; returns the points dropped."""
        order = self.chunks.eviction_order(keep, self.trajectory(camera.position), self._now, self.config)
        order = order[torch.from_numpy(self.cold.count[order.numpy()] > 0)].numpy()
        if order.shape[0] == 0 or (nbytes <= 0 and rows <= 0):
            return 0
        freed = np.cumsum(self.cold.length[order].astype(np.int64))
        take = max(int(np.searchsorted(freed, nbytes)) + 1 if nbytes > 0 else 0, rows)
        pruned = 0
        for row in order[: min(take, order.shape[0])].tolist():
            pruned += self.cold.drop(row)
            self.chunks.drop_row(row)
        self._chunks_evicted_total += min(take, order.shape[0])
        return pruned

    def packed_chunks(self) -> tuple[np.ndarray, np.ndarray]:
        """Quantised storage: (blob lengths int64 [C], the blobs concatenated uint8 [B]) of the packed
        chunks, in ascending chunk key order (what a snapshot stores)."""
        rows = self.chunks.used_rows().numpy()
        rows = rows[self.cold.count[rows] > 0]
        blobs = [self.cold.get(row) for row in rows.tolist()]
        data = np.concatenate(blobs) if blobs else np.zeros(0, dtype=np.uint8)
        return self.cold.length[rows].astype(np.int64), data

    def restore_packed(self, lengths: np.ndarray, blobs: np.ndarray, hot_points: int = 0) -> None:
        """Quantised storage: install packed chunks (as `packed_chunks` gives them) into a memory with no
        points yet, sizing the hot store for the ``hot_points`` that will follow. Raises ValueError
        when a blob is malformed or the budget cannot hold them."""
        if self.cold is None or self._count or self.cold.points:
            raise ValueError("restore_packed needs an empty memory with quantised storage")
        self._resize_hot(max(1, int(hot_points)))  # exactly what follows: the budget check counted that
        lengths = np.asarray(lengths, dtype=np.int64)
        if (lengths <= 0).any() or int(lengths.sum()) != blobs.shape[0]:
            raise ValueError("packed chunk lengths do not add up to the blob bytes")
        total = int(blobs.shape[0])
        if self._fixed_bytes + total + self.capacity * self.bytes_per_point > self.config.budget_bytes:
            raise ValueError(f"{total} bytes of packed chunks do not fit the budget beside the hot store")
        self.cold.resize(total)
        starts = np.cumsum(lengths) - lengths
        for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
            blob = np.ascontiguousarray(blobs[start : start + length])
            fields = check_blob(blob, self.config.chunk_size_m)
            key_cells = self.chunks.keys(torch.from_numpy(fields["xyz"]))
            if not bool((key_cells == key_cells[0]).all()):
                raise ValueError("a packed chunk's points span more than one chunk")
            counts = np.bincount(fields["provenance"], minlength=4)[:4]
            row = self.chunks.add_packed(
                fields["xyz"].min(axis=0), fields["xyz"].max(axis=0), float(fields["radius"].max()),
                int(fields["last_seen"].max()), counts,
            )  # fmt: skip
            self.cold.put(row, blob)

    def restore_written(self) -> None:
        """Quantised storage, after a snapshot restored the points: a hot chunk counts as last added to
        at its points' newest frame_added (what a snapshot keeps of it), and idle chunks are next
        packed HOT_IDLE_FRAMES // 2 frames on."""
        self._idle_packed = self._now
        if self.cold is None or self._count == 0:
            return
        written = torch.full((self.chunks.max_chunks,), -1, dtype=torch.int64)
        rows = self.chunks.point_chunk[: self._count].long()
        written.scatter_reduce_(0, rows, self._fields["frame_added"][: self._count].long(), "amax")
        self.cold.written[:] = written.numpy()

    def _unpack(self, rows: torch.Tensor, camera: Camera, in_view: torch.Tensor) -> int:
        """Unpack the packed chunks ``rows`` (in the view) into the hot store, most relevant first. When
        the budget cannot hold them even after evicting every other packed chunk (a view needing more
        points than the whole budget holds), the least relevant of them are dropped (pruned)."""
        cold = self.cold
        rows = self._most_relevant_first(rows, camera).numpy()
        counts = cold.count[rows]
        blobs = [cold.get(row).copy() for row in rows.tolist()]
        for row in rows.tolist():
            cold.drop(row)
        pruned = self._hot_room(int(counts.sum()), in_view, camera)
        fit = int(np.searchsorted(np.cumsum(counts), self.max_points - self._count, side="right"))
        for row in rows[fit:].tolist():
            self.chunks.drop_row(row)
        pruned += int(counts[fit:].sum())
        self._chunks_evicted_total += rows.shape[0] - fit
        if fit == 0:
            return pruned
        decoded = [decode_chunk(b, self.config.chunk_size_m) for b in blobs[:fit]]
        values = {
            name: torch.from_numpy(np.concatenate([d[name] for d in decoded])).to(self.device)
            for name, _, _ in SCHEMA
        }
        self.chunks.clear_rows(torch.from_numpy(rows[:fit]))
        self._append(values)
        return pruned

    # -- render ----------------------------------------------------------------------------------
    def render(self, camera: Camera) -> MemoryRender:
        """Memory seen from ``camera``: z-buffered splats, environment map behind them."""
        check_camera(camera)
        return self._render(camera)

    def _to_camera(self, camera: Camera, xyz: torch.Tensor) -> torch.Tensor:
        """World points [N, 3] in the camera frame ([N, 3] view of a contiguous [3, N]: faster to use).

        Row i of the frame is ((r_i0 x + r_i1 y) + r_i2 z) + t_i in float32, operation by operation:
        what the numba kernels compute (`kernels.to_camera_kernel`, the render's `render_kernel`), so
        that every path gives the same bits (a BLAS product may fuse or reorder them).
        """
        rot, trans = world_to_cam_torch(camera, self.device)
        fast = fast_kernels(xyz)
        if fast is not None and xyz.dtype == torch.float32 and xyz.dim() == 2 and xyz.shape[1] == 3:
            cam = fast.to_camera_kernel(np.ascontiguousarray(xyz.numpy()), rot.numpy(), trans.numpy())
            return torch.from_numpy(cam).T
        x, y, z = xyz.to(torch.float32).T
        return torch.stack([rot[i, 0] * x + rot[i, 1] * y + rot[i, 2] * z + trans[i] for i in range(3)]).T

    def _render(self, camera: Camera, pack_idle: bool = True) -> MemoryRender:
        if self.cold is not None:
            rows = self._focus(camera, pack_idle)
            packed = rows[torch.from_numpy(self.cold.count[rows.numpy()] > 0)]
            if packed.numel():
                return self._render_packed(camera, rows, packed)
        f = self._fields
        fast = fast_kernels(f["xyz"], self.chunks.pool)
        if fast is not None:  # members, camera frame, bias and splat in one pass over the chunks
            winners = self._splat_chunks(fast, camera)
            if winners is not None:
                return compose_render(
                    winners, self.points(), self.env, camera, self._version, take_depth=True
                )
        # candidates in ascending index order: the kernel's tie-break sees the order a full render does
        cand = self._candidates(camera)
        self.last_touched = int(cand.numel())
        winners = self._splat_candidates(camera, cand, f)
        return compose_render(winners, self.points(), self.env, camera, self._version)

    def _splat_candidates(
        self, camera: Camera, cand: torch.Tensor, f: dict[str, torch.Tensor]
    ) -> SplatWinners:
        """The torch path's splat of points ``cand`` (int64, ascending) of arrays ``f``: winners as
        indices into ``f``."""
        generated = f["provenance"].index_select(0, cand) == PROVENANCE_GENERATED
        winners = splat_points(
            self._to_camera(camera, f["xyz"].index_select(0, cand)),
            f["radius"].index_select(0, cand),
            camera.intrinsics,
            near=self.config.near,
            max_radius_px=self.config.max_splat_radius_px,
            depth_tolerance=self.config.depth_tolerance,
            depth_bias=generated.to(torch.float32) * self.config.generated_depth_bias,
        )
        if cand.numel():
            winners.index = torch.where(winners.index >= 0, cand[winners.index.clamp(min=0)], -1)
        return winners

    def _render_packed(self, camera: Camera, rows: torch.Tensor, packed: torch.Tensor) -> MemoryRender:
        """Quantised storage: render the chunks in view (``rows``) when some are packed (``packed``):
        their points are decoded from the arena (`decode_view`) after the hot store's live points, and
        the same splat runs over both. A winner's index from the hot count on is a packed point (the
        packed rows' points in ascending row order, each in blob order): `_touch` marks it in place."""
        count = self._count
        prow = np.sort(packed.numpy())
        decoded, first = decode_view(self.cold, prow, self.config.chunk_size_m)
        f = self._fields
        view = {
            name: torch.from_numpy(np.concatenate([f[name][:count].numpy(), decoded[name]]))
            for name in _VIEW_FIELDS
        }
        hot = rows[self.chunks.rows["size"][rows] > 0]
        total = count + int(first[-1])
        fast = fast_kernels(f["xyz"], self.chunks.pool)
        winners = None
        if fast is not None:
            pool = self.chunks.pool.numpy()
            starts = np.concatenate(
                [self.chunks.rows["start"].numpy()[hot.numpy()], pool.shape[0] + first[:-1]]
            )
            sizes = np.concatenate([self.chunks.rows["size"].numpy()[hot.numpy()], np.diff(first)])
            source = (
                np.arange(starts.shape[0], dtype=np.int64), starts, sizes,
                np.concatenate([pool, np.arange(count, total, dtype=np.int32)]), total,
                view["xyz"].numpy(), view["radius"].numpy(), view["provenance"].numpy(),
            )  # fmt: skip
            winners = self._splat_chunks(fast, camera, source)
        if winners is None:
            cand = torch.cat([self.chunks.members(hot, count), torch.arange(count, total)])
            self.last_touched = int(cand.numel())
            winners = self._splat_candidates(camera, cand, view)
        render = compose_render(winners, view, self.env, camera, self._version, take_depth=True)
        render.packed = (count, prow, first)
        return render

    def _splat_chunks(self, fast, camera: Camera, source: tuple | None = None) -> SplatWinners | None:
        """The numba twin of `_render`'s candidates and torch splat (`splat_fast.render_kernel`):
        winners as memory indices, or None (nothing done) where the chunk index holds a point past
        the count. ``source``: (rows, starts, sizes, pool, count, xyz, radius, provenance) to splat
        instead of the chunks in view and the hot store (`_render_packed`)."""
        f, cfg, k = self._fields, self.config, camera.intrinsics
        if source is None:
            rows = self.chunks.in_frustum(camera, cfg.near, cfg.max_splat_radius_px).numpy()
            starts, sizes = self.chunks.rows["start"].numpy(), self.chunks.rows["size"].numpy()
            source = (rows, starts, sizes, self.chunks.pool.numpy(), self._count, f["xyz"].numpy(),
                      f["radius"].numpy(), f["provenance"].numpy())  # fmt: skip
        c = np.float32
        w2c = camera.world_to_cam  # as `world_to_cam_torch`: float64 rounded to float32
        rot, trans = np.ascontiguousarray(w2c[:3, :3], dtype=c), np.ascontiguousarray(w2c[:3, 3], dtype=c)
        # the bias a generated point / any other point gets: `_render`'s bool-to-float32 product with
        # the scalar (torch multiplies a float32 tensor by the scalar's float32)
        bias = c(cfg.generated_depth_bias)
        bias_other, bias_generated = c(0.0) * bias, c(1.0) * bias
        fx, fy, cx, cy, f_mean = (c(v) for v in float32_constants(k))
        index, depth, in_view, touched = fast.render_split(
            *source, PROVENANCE_GENERATED, bias_other, bias_generated, rot, trans,
            fx, fy, cx, cy, f_mean, c(cfg.near), c(cfg.max_splat_radius_px),
            c(1.0 + cfg.depth_tolerance), k.width, k.height,
        )  # fmt: skip
        if touched < 0:
            return None
        self.last_touched = int(touched)
        return SplatWinners(torch.from_numpy(index), torch.from_numpy(depth), int(in_view))

    # -- ingest ----------------------------------------------------------------------------------
    def touch(self, render: MemoryRender, frame_index: int) -> None:
        """Mark what ``render`` showed (winning points, environment texels) as seen at ``frame_index``."""
        check_render(render, self._version, None)
        self._touch(render, int(frame_index))

    def _packed_from(self, render: MemoryRender) -> int:
        """The first point index of ``render`` (made by this memory as it is now) that is a packed
        point (`_render_packed`); past every index when none is."""
        return self._count if render.packed is None else render.packed[0]

    def _touch_packed(self, render: MemoryRender, points: torch.Tensor, frame_index: int) -> None:
        """`_touch` for packed points of ``render`` (distinct indices from its hot count on): written
        into their blobs in place, and their chunks' newest last_seen rises."""
        count, prow, first = render.packed
        j = points.numpy() - count
        seg = np.searchsorted(first, j, side="right") - 1
        rows = touch_packed(self.cold, prow[seg], j - first[seg], frame_index)
        touched = torch.from_numpy(rows)
        last = self.chunks.rows["last_seen"]
        last[touched] = torch.clamp(last[touched], min=int(frame_index))

    def _touch(self, render: MemoryRender, frame_index: int) -> None:
        index, texel = render.point_index.reshape(-1), render.env_texel.reshape(-1)
        if render.packed is not None:
            packed = index >= render.packed[0]
            if bool(packed.any()):
                self._touch_packed(render, torch.unique(index[packed]), int(frame_index))
                index = torch.where(packed, -1, index)
        f = self._fields
        fast = fast_kernels(index, texel, f["last_seen"])
        if (
            fast is not None
            and index.dtype == texel.dtype == torch.int64
            and -(2**31) <= frame_index < 2**31
            and fast.touch_kernel(
                index.numpy(),
                f["last_seen"].numpy(),
                f["hit_count"].numpy(),
                self.chunks.point_chunk.numpy(),
                self.chunks.rows["last_seen"].numpy(),
                texel.numpy(),
                self.env.last_seen.numpy(),
                frame_index,
                fast.bitmap_workspace(f["last_seen"].shape[0]),
            )  # fmt: skip
        ):
            return
        seen = index[index >= 0]  # repeats write equal values: no unique needed
        self._fields["last_seen"][seen] = frame_index
        self._fields["hit_count"][seen] += 1
        self.chunks.touch(seen, frame_index)
        self.env.touch(render.env_texel.reshape(-1), frame_index)

    def ingest(
        self,
        camera: Camera,
        rgb,  # [H, W, 3] uint8 or float 0..1 (numpy or torch)
        depth,  # [H, W] float metres: <= 0 / NaN unknown, +inf (or > far) at infinity
        *,
        provenance: int,
        frame_index: int,
        mask=None,  # [H, W] bool: pixels that may add content (default all)
        object_ids=None,  # [H, W] integer instance ids (0 none)
        render: MemoryRender | None = None,  # memory rendered at this camera just before
    ) -> IngestStats:
        """Take a frame into memory; observed frames (provenance 1) are the truth and carve free space.

        Observed: points in front of the observed surface are removed; points the render shows at the
        observed depth and at least as fine as 1.5 px are refreshed; every other valid pixel in
        ``mask`` becomes a point; then coarser points the frame confirmed are retired where it stored
        their whole footprint finer (`_retire_coarse`, unless ``config.refine`` is off); the frame's free
        space is kept as a keyframe. Generated / imported: the render's points are marked seen and only
        ``mask`` pixels are added; nothing is carved or retired; generated points that would stand in
        observed free space move back along their rays (`runtime.memory.freespace`). Pixels at infinity go to the environment map (observed colours overwrite
        it, others fill only empty texels). Then the budget is enforced and, in window mode, content
        older than the window is dropped.
        """
        check_camera(camera)
        frame = check_frame(
            camera, rgb, depth, provenance, frame_index, mask, object_ids, self.config.far, self.device
        )
        if render is None:
            render = self._render(camera)
        else:
            check_render(render, self._version, camera)
        if (
            self.cold is not None
            and provenance == PROVENANCE_OBSERVED
            and self._heat_view(camera, frame_index)
        ):
            # matching, carving and refinement change points in place: the view's chunks are hot now
            render = self._render(camera, pack_idle=False)
        hot_count = self._packed_from(render)  # the render's indices from here on are packed points
        carved = updated = refined = shifted = refused = 0
        moved = None  # (removed, holes, movers) once carving renumbered points
        coarse = None  # observed: coarse points the frame confirmed (render numbering)

        def protect() -> torch.Tensor:  # the hot points the render showed, now (only eviction needs it)
            shown = _shown(render)
            shown = shown[shown < hot_count]
            return shown if moved is None else _remap(shown, *moved)

        self.last_touched = 0
        self._now = max(self._now, int(frame_index))
        self._remember_position(camera.position)
        fast = fast_kernels(frame.depth, frame.mask)
        if fast is not None and not (
            frame.depth.dtype == torch.float32
            and frame.mask.dtype == torch.bool
            and frame.depth.shape == frame.mask.shape
            and frame.depth.is_contiguous()
            and frame.mask.is_contiguous()
        ):
            fast = None
        if provenance == PROVENANCE_GENERATED and self.config.generated_far < self.config.far:
            # a guess this far away has no parallax worth a point: it is content at infinity
            if fast is not None:  # torch compares a float32 tensor with the float32 of the scalar
                frame.depth = torch.from_numpy(
                    fast.beyond_kernel(frame.depth.numpy(), np.float32(self.config.generated_far))
                )
            else:
                frame.depth = torch.where(frame.depth > self.config.generated_far, float("inf"), frame.depth)
        if fast is not None:
            add = torch.from_numpy(fast.addable_kernel(frame.depth.numpy(), frame.mask.numpy()))
        else:
            add = frame.mask & (frame.depth > 0) & torch.isfinite(frame.depth)
        if provenance == PROVENANCE_OBSERVED:
            matched_pixels, updated, confirmed, coarse = self._match(camera, frame, render, frame_index)
            add &= ~matched_pixels
            cand = self._candidates(camera)  # carving reads only the chunks in the frustum
            self.last_touched = int(cand.numel())
            grid = frame.depth.reshape(camera.intrinsics.height, camera.intrinsics.width)
            carve = free_space(
                self._to_camera(camera, self._fields["xyz"].index_select(0, cand)),
                self._fields["radius"].index_select(0, cand), grid, camera.intrinsics,
                near=self.config.near, depth_tolerance=self.config.depth_tolerance,
            )  # fmt: skip
            carve = cand[carve & ~torch.isin(cand, confirmed)]
            carved = int(carve.numel())
            moved = (carve, *self._remove(carve))
            self.freespace.observe(camera, frame.depth, frame_index, self.config.trajectory_step_m)
        else:
            self._touch(render, frame_index)
            if provenance == PROVENANCE_GENERATED:
                frame.depth, add, shifted, refused = self.freespace.respect(
                    camera, frame.depth, add,
                    near=self.config.near, far=self.config.far, margin=self.config.freespace_margin,
                    max_radius_px=self.config.max_splat_radius_px,
                )  # fmt: skip
                # what this frame shows stays: its free space (stored depths, after the move) joins
                self.freespace.observe(
                    camera, frame.depth, frame_index, self.config.trajectory_step_m, observed=False
                )
        added, pruned, dropped, added_pixels, evicted = self._add_points(
            camera, frame, add, protect, provenance, frame_index
        )
        if coarse is not None and coarse.numel() and self.config.refine:
            # after `_add_points`: only pixels that really got a point count, so a pixel dropped for
            # the budget keeps every coarse point over it; the carve and the eviction renumbered points
            coarse = _remap(coarse, *moved)
            if evicted is not None:
                coarse = _remap(coarse, *evicted)
            refined_pixels = matched_pixels.clone()
            refined_pixels[added_pixels] = True
            refined = self._retire_coarse(camera, frame, coarse, refined_pixels)
        if fast is not None and frame.depth.is_contiguous() and frame.depth.shape == frame.mask.shape:
            at_infinity = torch.from_numpy(fast.infinite_kernel(frame.depth.numpy(), frame.mask.numpy()))
        else:
            at_infinity = (frame.depth == float("inf")) & frame.mask
        observed = provenance == PROVENANCE_OBSERVED
        env_written = self.env.write_view(camera, frame.rgb, at_infinity, frame_index, overwrite=observed)
        if self.config.window_frames > 0:
            horizon = frame_index - self.config.window_frames
            old = self._fields["last_seen"][: self._count] <= horizon  # O(N): windows hold little
            pruned += int(old.sum())
            self._remove(old)
            self.env.expire(horizon)
            self.freespace.expire(horizon)
        self._version += 1
        self._frames += 1
        self._carved_total += carved
        self._pruned_total += pruned
        self._refined_total += refined
        return IngestStats(added, updated, carved, pruned, dropped, env_written, refined, shifted, refused)

    def _match(self, camera: Camera, frame: IngestFrame, render: MemoryRender, frame_index: int):
        """Refresh points the observation confirms.

        Returns (matched pixels, count, confirmed points, coarse points): the last are the confirmed
        points coarser than MATCH_MAX_RADIUS_PX in this view (not refreshed; `_retire_coarse` input).
        """
        tol = self.config.depth_tolerance
        winner = render.point_index.reshape(-1)
        z_mem = render.depth.reshape(-1)
        z_obs = frame.depth
        confirmed_px = (
            (winner >= 0) & (z_obs > 0) & torch.isfinite(z_obs) & ((z_mem - z_obs).abs() <= tol * z_obs)
        )
        pix = confirmed_px.nonzero().squeeze(1)
        points = winner[pix]
        confirmed = torch.unique(points)
        self._fields["last_seen"][confirmed] = frame_index
        self.chunks.touch(confirmed, frame_index)
        # only points at least as fine as this view's pixels take its colour (a closer view refines)
        fx, fy, cx, cy, f_mean = float32_constants(camera.intrinsics)
        fine = self._fields["radius"][points] * f_mean / z_mem[pix] <= MATCH_MAX_RADIUS_PX
        coarse = torch.unique(points[~fine])
        pix, points = pix[fine], points[fine]
        matched_px = torch.zeros_like(confirmed_px)
        matched_px[pix] = True
        if pix.numel() == 0:
            return matched_px, 0, confirmed, coarse
        # several pixels may match one point: it takes the pixel nearest its projected centre
        cam = self._to_camera(camera, self._fields["xyz"][points])
        width = camera.intrinsics.width
        du = (pix % width).to(torch.float32) - (cam[:, 0] / cam[:, 2] * fx + cx)
        dv = torch.div(pix, width, rounding_mode="floor").to(torch.float32) - (
            cam[:, 1] / cam[:, 2] * fy + cy
        )
        key = ((du * du + dv * dv) * 65536.0).clamp(max=2**30).long() << 32 | pix
        hit, slot = torch.unique(points, return_inverse=True)
        best = torch.full((hit.numel(),), torch.iinfo(torch.int64).max, dtype=torch.int64, device=self.device)
        best.scatter_reduce_(0, slot, key, "amin")
        src = best & 0xFFFFFFFF
        f = self._fields
        f["rgb"][hit] = frame.rgb[src]
        confidence = (f["confidence"][hit].float() + 0.25).clamp(max=1.0).to(torch.float16)
        f["confidence"][hit] = confidence if self.cold is None else snap_confidence(confidence)
        f["hit_count"][hit] += 1
        if frame.object_ids is not None:
            f["object_id"][hit] = frame.object_ids[src]
        return matched_px, int(hit.numel()), confirmed, coarse

    def _retire_coarse(
        self, camera: Camera, frame: IngestFrame, coarse: torch.Tensor, refined_px: torch.Tensor
    ) -> int:
        """Remove the ``coarse`` points (distinct, current numbering) this observed frame refined.

        A coarse point (unclamped pixel half-size r = radius f_mean / z > MATCH_MAX_RADIUS_PX) retires
        when, in this view, its footprint (the pixels from round(u - r) to round(u + r) across and the
        same down: every pixel the square of half-size r about its projection (u, v) overlaps) lies in
        the image; its centre pixel's observed depth matches it within depth_tolerance (as `_match`
        tests); every footprint pixel has a valid observed depth in the band below; and every footprint
        pixel ends this ingest with a fine point (``refined_px``: matched fine or newly added, so a
        pixel dropped for the budget keeps the point). The finer points then cover the whole surface
        patch the coarse point stood for; kept, it would only cost bytes and, its splat clamped to
        max_splat_radius_px, win pixels from them. Vectorised: the refined test sums an integral
        image, the depth test reads a sparse table of box minima / maxima (both O(1) a point).

        Depth band: depth_tolerance alone would keep coarse points on slanted surfaces, whose observed
        depth drifts away from the centre's across the footprint. On a plane whose normal is at angle
        t from the line of sight, tilted along an image axis, the relative drift at a footprint pixel
        (at most r + 1/2 px from the centre) is about tan(t) (r + 1/2) / f_mean, so the band is
        max(depth_tolerance, REFINE_MAX_SLOPE (r + 1/2) / f_mean): planes up to about 45 degrees pass
        whatever the footprint, steeper ones only where the drift stays in the band. A larger depth
        step (an edge, a thin thing in front) keeps the coarse point: a kept point costs bytes only,
        a wrongly retired one could leave a hole seen from elsewhere. Returns the number retired.
        """
        k = camera.intrinsics
        height, width = k.height, k.width
        fx, fy, cx, cy, f_mean = float32_constants(k)
        f = self._fields
        cam = self._to_camera(camera, f["xyz"].index_select(0, coarse))
        z = cam[:, 2]
        r = f["radius"].index_select(0, coarse) * f_mean / z
        u, v = cam[:, 0] / z * fx + cx, cam[:, 1] / z * fy + cy
        x0, x1 = torch.floor(u - r + 0.5), torch.floor(u + r + 0.5)
        y0, y1 = torch.floor(v - r + 0.5), torch.floor(v + r + 0.5)
        ok = (z > self.config.near) & (r > MATCH_MAX_RADIUS_PX)
        ok &= (x0 >= 0) & (y0 >= 0) & (x1 <= width - 1) & (y1 <= height - 1)
        depth = frame.depth.reshape(height, width)
        tol = self.config.depth_tolerance
        sel = ok.nonzero().squeeze(1)
        if sel.numel() == 0:
            return 0
        coarse, z, r = coarse[sel], z[sel], r[sel]
        x0, x1, y0, y1 = (t[sel].long() for t in (x0, x1, y0, y1))
        centre = depth[torch.floor(v[sel] + 0.5).long(), torch.floor(u[sel] + 0.5).long()]
        ok = (centre > 0) & torch.isfinite(centre) & ((z - centre).abs() <= tol * centre)
        # every footprint pixel refined: integral image of the refined mask
        area = torch.zeros(height + 1, width + 1, dtype=torch.int32, device=self.device)
        area[1:, 1:] = refined_px.reshape(height, width).to(torch.int32).cumsum(0).cumsum(1)
        count = area[y1 + 1, x1 + 1] - area[y0, x1 + 1] - area[y1 + 1, x0] + area[y0, x0]
        ok &= count == (x1 - x0 + 1) * (y1 - y0 + 1)
        # every footprint pixel's depth in the band: |z_obs - z| <= band z_obs, i.e. z_obs in
        # [z / (1 + band), z / (1 - band)]; unknown depth (0) and infinity fail it
        lo, hi = _square_min_max(depth, x0, x1, y0, y1)
        band = torch.clamp(REFINE_MAX_SLOPE * (r + 0.5) / f_mean, min=tol, max=0.5)
        ok &= (lo >= z / (1.0 + band)) & (hi <= z / (1.0 - band))
        retire = coarse[ok]
        self._remove(retire)
        return int(retire.numel())

    def _add_points(
        self, camera, frame: IngestFrame, add, protect: Callable[[], torch.Tensor], provenance, frame_index
    ):
        """A point per ``add`` pixel, evicting or dropping to stay in budget.

        Returns (added, pruned, dropped, pixels that got a point (int64), eviction): eviction is
        (victims, holes, movers) when the budget removed points (see `_remap`), else None.
        """
        pix = add.nonzero().squeeze(1)
        if pix.numel() == 0:  # nothing to add: no room needed, nothing evicted or dropped
            return 0, 0, 0, pix, None
        z = frame.depth[pix]
        xyz = unproject_pixels(camera, pix, z)
        pruned = dropped = 0
        evicted = None
        packed_pix = pix[:0]
        if self.cold is not None:  # on the packed grid from the start, so each finds its chunk below
            xyz = snap_positions(xyz, self.config.chunk_size_m)
            if provenance != PROVENANCE_OBSERVED:  # straight into blobs, but for chunks already hot
                keys = self.chunks.keys(xyz).numpy()
                rows = self.chunks.row_of(keys)
                hot = (rows >= 0) & (self.chunks.rows["size"].numpy()[np.maximum(rows, 0)] > 0)
                if not hot.all():
                    cold_pix = pix[torch.from_numpy(~hot)]
                    values = self._new_values(
                        camera, frame, cold_pix, z[~hot], xyz[~hot], provenance, frame_index
                    )
                    kept, pruned, dropped = self._add_packed(camera, values, keys[~hot])
                    packed_pix = cold_pix[torch.from_numpy(kept)]
                    hot = torch.from_numpy(hot)
                    pix, z, xyz = pix[hot], z[hot], xyz[hot]
            if pix.numel() == 0:
                return packed_pix.numel(), pruned, dropped, packed_pix, None
            # observed: a packed chunk that gets new points is unpacked (points are added in full precision)
            targets = self.chunks.existing_rows(xyz)
            packed = targets[torch.from_numpy(self.cold.count[targets.numpy()] > 0)]
            short = self.chunks.new_chunks(xyz).numel() - self.chunks.free_chunks
            needs_room = self.max_points < self._count + pix.numel()
        if self.cold is not None and (packed.numel() or needs_room or short > 0):
            in_view = self.chunks.in_frustum(camera, self.config.near, self.config.max_splat_radius_px)
            if packed.numel():
                in_view = torch.unique(torch.cat([in_view, packed]))
                pruned += self._unpack(packed, camera, in_view)
            pruned += self._hot_room(pix.numel(), in_view, camera)
            # unpacking and making room may have freed rows already (evicting packed chunks)
            short = self.chunks.new_chunks(xyz).numel() - self.chunks.free_chunks
            if short > 0:
                pruned += self._evict_packed(
                    camera, in_view, rows=short + self.chunks.max_chunks // EVICTION_HEADROOM
                )
        room = self.max_points - self._count
        rows_short = self.chunks.new_chunks(xyz).numel() - self.chunks.free_chunks
        if pix.numel() > room or rows_short > 0:
            wanted = pix.numel()
            k = max(pix.numel() - room, 0)
            shown = protect()
            k = min(k + self.max_points // EVICTION_HEADROOM if k else 0, self._count - shown.numel())
            rows = rows_short + self.chunks.max_chunks // EVICTION_HEADROOM if rows_short > 0 else 0
            in_view = self.chunks.in_frustum(camera, self.config.near, self.config.max_splat_radius_px)
            before = self.chunks.num_chunks
            victims = choose_victims(
                self.chunks, self.points(), in_view, self.trajectory(camera.position), frame_index,
                self.config, k, rows, shown,
            )  # fmt: skip
            evicted = (victims, *self._remove(victims))
            self._chunks_evicted_total += max(before - self.chunks.num_chunks, 0)
            pruned += int(victims.numel())
            room = self.max_points - self._count
            if pix.numel() > room:  # still no room: keep the nearest new points
                keep = lowest_k(z, room)
                pix, z, xyz = pix[keep], z[keep], xyz[keep]
            new = self.chunks.new_chunks(xyz)
            if new.numel() > self.chunks.free_chunks:  # no chunk left for some: drop their points
                keys = self.chunks.keys(xyz)
                keep = ~torch.isin(keys, new) | torch.isin(keys, new[: self.chunks.free_chunks])
                pix, z, xyz = pix[keep], z[keep], xyz[keep]
            dropped += wanted - pix.numel()
        m = pix.numel()
        if m:
            first = self._count
            self._append(self._new_values(camera, frame, pix, z, xyz, provenance, frame_index))
            if self.cold is not None:  # these chunks stay hot while frames keep adding to them
                chunks = torch.unique(self.chunks.point_chunk[first : self._count]).numpy()
                self.cold.written[chunks] = frame_index
        if packed_pix.numel():
            pix = torch.cat([packed_pix, pix])
        return pix.numel(), pruned, dropped, pix, evicted

    def _new_values(
        self, camera, frame: IngestFrame, pix, z, xyz, provenance, frame_index
    ) -> dict[str, torch.Tensor]:
        """The arrays (named as SCHEMA) of new points for pixels ``pix`` at depths ``z`` and positions
        ``xyz``; with quantised storage on the packed grid (a chunk packed later changes nothing)."""
        m = pix.numel()
        f_mean = (camera.intrinsics.fx + camera.intrinsics.fy) / 2.0
        ids = frame.object_ids[pix] if frame.object_ids is not None else torch.zeros(m, dtype=torch.int32)

        def full(value, dtype):
            return torch.full((m,), value, dtype=dtype, device=self.device)

        values = {
            "xyz": xyz,
            "rgb": frame.rgb[pix],
            "radius": z * (HALF_DIAGONAL / f_mean),
            "confidence": full(NEW_CONFIDENCE[provenance], torch.float16),
            "provenance": full(provenance, torch.uint8),
            "last_seen": full(frame_index, torch.int32),
            "hit_count": full(1, torch.int32),
            "object_id": ids.to(device=self.device, dtype=torch.int32),
            "frame_added": full(frame_index, torch.int32),
        }
        if self.cold is not None:
            snap(values, self.config.chunk_size_m)
        return values

    def _add_packed(
        self, camera: Camera, values: dict[str, torch.Tensor], keys: np.ndarray
    ) -> tuple[np.ndarray, int, int]:
        """Quantised storage, a generated or imported frame: store new points ``values`` (on the packed
        grid, none in a hot chunk; ``keys`` their voxel keys) straight into blobs. A packed chunk they
        land in is decoded with them and packed again; a chunk without a row gets a packed one (rows
        come from evicting packed chunks out of view when the table is short; the points of chunks
        still without one are dropped); the blobs go in by `_store_blobs`, as `_pack`'s do. Returns
        (bool [M]: the points stored, pruned, dropped)."""
        cs = self.config.chunk_size_m
        ukeys, inverse = np.unique(keys, return_inverse=True)
        rows = self.chunks.row_of(ukeys)
        in_view = self.chunks.in_frustum(camera, self.config.near, self.config.max_splat_radius_px)
        keep = torch.unique(torch.cat([in_view, torch.from_numpy(rows[rows >= 0])]))
        pruned = 0
        new = rows < 0
        short = int(new.sum()) - self.chunks.free_chunks
        if short > 0:
            pruned += self._evict_packed(
                camera, keep, rows=short + self.chunks.max_chunks // EVICTION_HEADROOM
            )
        skip = np.zeros(ukeys.shape[0], dtype=bool)  # new chunks the table has no row for: dropped
        skip[np.flatnonzero(new)[self.chunks.free_chunks :]] = True
        kept = ~skip[inverse.reshape(-1)]
        dropped = int((~kept).sum())
        ukeys, rows, new = ukeys[~skip], rows[~skip], new[~skip]
        chunk_of = np.cumsum(~skip)[inverse.reshape(-1)][kept] - 1  # each kept point's target, 0..T-1
        added = {name: values[name].numpy()[kept] for name, _, _ in SCHEMA}
        old_rows = rows[~new]
        old, old_first = decode_rows(self.cold, old_rows, cs)
        target = np.concatenate([np.repeat(np.flatnonzero(~new), np.diff(old_first)), chunk_of])
        order = np.argsort(target, kind="stable")  # per chunk: its packed points, then the new ones
        fields = {name: np.concatenate([old[name], added[name]])[order] for name, _, _ in SCHEMA}
        counts = np.bincount(target, minlength=ukeys.shape[0])
        bounds = np.concatenate([[0], np.cumsum(counts)])
        starts = bounds[:-1]
        refs = np.maximum.reduceat(fields["last_seen"].astype(np.int64), starts)
        blobs = encode_chunks(fields, bounds, refs, cs)
        for row in old_rows.tolist():
            self.cold.drop(row)
        provenance = np.zeros((ukeys.shape[0], 4), dtype=np.int64)
        np.add.at(provenance, (np.repeat(np.arange(ukeys.shape[0]), counts), fields["provenance"]), 1)
        lo, hi = np.minimum.reduceat(fields["xyz"], starts), np.maximum.reduceat(fields["xyz"], starts)
        rmax = np.maximum.reduceat(fields["radius"], starts)
        if new.any():
            rows[new] = self.chunks.add_packed_rows(ukeys[new])
        r, at = self.chunks.rows, torch.from_numpy(rows)
        r["lo"][at], r["hi"][at] = torch.from_numpy(lo), torch.from_numpy(hi)
        r["rmax"][at] = torch.from_numpy(rmax)
        r["last_seen"][at] = torch.from_numpy(refs.astype(np.int32))
        r["provenance"][at] = torch.from_numpy(provenance.astype(np.int32))
        pruned += self._store_blobs(rows.tolist(), blobs, torch.unique(torch.cat([keep, at])), camera)
        self._version += 1
        return kept, pruned, dropped


def _shown(render: MemoryRender) -> torch.Tensor:
    """Distinct points (int64, ascending) that won a pixel of ``render``."""
    index = render.point_index.reshape(-1)
    return torch.unique(index[index >= 0])


def _square_min_max(grid: torch.Tensor, x0, x1, y0, y1) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum and maximum of ``grid`` [H, W] over each box [y0, y1] x [x0, x1] (inclusive, int64 [N],
    inside the grid, sides differing by at most one pixel), O(1) a box.

    A sparse table: level j holds the min / max over the 2^j x 2^j block at each pixel; a box of
    sides s and s + 1 is the union of the four level-floor(log2 s) blocks at its corners.
    """
    side = torch.minimum(x1 - x0, y1 - y0) + 1
    level = torch.frexp(side.to(torch.float32)).exponent.long() - 1  # floor(log2(side)), exact
    lo, hi = [grid], [grid]
    for j in range(1, int(level.max()) + 1):
        s = 1 << (j - 1)
        for table, op in ((lo, torch.minimum), (hi, torch.maximum)):
            rows = table[-1].clone()
            rows[:-s] = op(table[-1][:-s], table[-1][s:])
            block = rows.clone()
            block[:, :-s] = op(rows[:, :-s], rows[:, s:])
            table.append(block)
    height, width = grid.shape
    lo_t, hi_t = torch.stack(lo).reshape(-1), torch.stack(hi).reshape(-1)
    step = 1 << level
    base = level * (height * width)
    corners = [(y0, x0), (y0, x1 - step + 1), (y1 - step + 1, x0), (y1 - step + 1, x1 - step + 1)]
    flat = [base + y * width + x for y, x in corners]
    low = torch.stack([lo_t[i] for i in flat]).amin(0)
    high = torch.stack([hi_t[i] for i in flat]).amax(0)
    return low, high


def _remap(points: torch.Tensor, removed: torch.Tensor, holes: torch.Tensor, movers: torch.Tensor):
    """``points`` (distinct indices) after `SpatialMemory._remove`: removed ones gone, movers renumbered."""
    points = points[~torch.isin(points, removed)]
    if movers.numel() == 0 or points.numel() == 0:
        return points
    at = torch.searchsorted(movers, points).clamp(max=movers.numel() - 1)
    return torch.where(movers[at] == points, holes[at], points)

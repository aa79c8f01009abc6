"""The point store under `SpatialMemory`: world-space points in a struct of arrays (torch tensors
with spare capacity, grown geometrically but never past the byte budget) indexed by world-space
chunk (`runtime.memory.chunks`), and the remembered camera trajectory. Removal is a swap-remove (the
last points fill the holes), so indices change on every removal (`remap` follows them)."""

from __future__ import annotations

import torch

from plugin_bridge.camera import Camera
from runtime.memory.chunks import BYTES_PER_POINT

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
EVICTION_HEADROOM = 64  # evicting frees 1/64 of capacity beyond the need, so evictions are rare


class PointStore:
    """The arrays, their capacity, appends and removals, and the trajectory (state set up by
    `SpatialMemory.__init__` / `reset`)."""

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


def remap(points: torch.Tensor, removed: torch.Tensor, holes: torch.Tensor, movers: torch.Tensor):
    """``points`` (distinct indices) after `SpatialMemory._remove`: removed ones gone, movers renumbered."""
    points = points[~torch.isin(points, removed)]
    if movers.numel() == 0 or points.numel() == 0:
        return points
    at = torch.searchsorted(movers, points).clamp(max=movers.numel() - 1)
    return torch.where(movers[at] == points, holes[at], points)

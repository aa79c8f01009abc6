"""SpatialMemory: world-space surface points plus a direction map for content at infinity.

Points live in a struct of arrays (torch tensors with spare capacity, grown geometrically but never
past the byte budget). `render` splats them into a camera (`runtime.memory.splat`); `ingest` takes a
frame back: observed frames are the truth (carve free space, refresh matching points, add the rest),
generated frames only add what memory did not cover. The budget holds after every public call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from plugin_bridge.camera import Camera
from runtime.memory.config import (
    MIN_POINTS,
    PROVENANCE_GENERATED,
    PROVENANCE_IMPORTED,
    PROVENANCE_OBSERVED,
    PROVENANCES,
    IngestStats,
    MemoryConfig,
    MemoryStats,
)
from runtime.memory.environment import EnvironmentMap
from runtime.memory.splat import (
    MemoryRender,
    check_camera,
    check_render,
    compose_render,
    float32_constants,
    free_space,
    splat_points,
    unproject_pixels,
    world_to_cam_torch,
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
EVICTION_RANK = {PROVENANCE_GENERATED: 0, PROVENANCE_IMPORTED: 1, PROVENANCE_OBSERVED: 2}
EVICTION_HEADROOM = 64  # evicting frees 1/64 of capacity beyond the need, so evictions (O(N)) are rare
MATCH_MAX_RADIUS_PX = 1.5  # a matched point must be at least this fine in the current view
_HALF_DIAGONAL = 0.5 * math.sqrt(2.0)


@dataclass
class _Frame:  # one ingested frame, validated and flattened (pixels in raster order)
    rgb: torch.Tensor  # [P, 3] uint8
    depth: torch.Tensor  # [P] float32: 0 unknown, +inf at infinity, else metres
    mask: torch.Tensor  # [P] bool: pixels allowed to add content
    object_ids: torch.Tensor | None  # [P] int32


class SpatialMemory:
    """One session's spatial memory. Not thread-safe: the owning session serialises calls (its lock)."""

    def __init__(self, config: MemoryConfig | None = None, device: str | torch.device = "cpu"):
        self.config = config if config is not None else MemoryConfig()
        self.config.validate()
        self.device = torch.device(device)
        self.bytes_per_point = sum(dtype.itemsize * math.prod(shape) for _, dtype, shape in SCHEMA)
        env_bytes = EnvironmentMap.nbytes_for(self.config.env_width, self.config.env_height)
        self.max_points = (self.config.budget_bytes - env_bytes) // self.bytes_per_point
        if self.max_points < MIN_POINTS:
            need = env_bytes + MIN_POINTS * self.bytes_per_point
            raise ValueError(
                f"memory budget {self.config.budget_bytes} bytes is too small: the environment map "
                f"({self.config.env_width}x{self.config.env_height}) takes {env_bytes} bytes and "
                f"{MIN_POINTS} points take {MIN_POINTS * self.bytes_per_point}; use a budget of at least "
                f"{need} bytes (or a smaller environment map)"
            )
        self.env = EnvironmentMap(self.config.env_width, self.config.env_height, self.device)
        self._version = 0  # bumped whenever point indices may change: older renders are refused
        self.reset()

    # -- storage ---------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything (points, environment, totals) and shrink storage to the initial capacity."""
        self._count = 0
        self._fields = self._allocate(min(self.config.initial_capacity, self.max_points))
        self.env.clear()
        self._version += 1
        self._pruned_total = self._carved_total = self._frames = 0

    @property
    def num_points(self) -> int:
        return self._count

    @property
    def capacity(self) -> int:
        return self._fields["xyz"].shape[0]

    def bytes_used(self) -> int:
        """All storage held: point capacity (live or spare) plus the environment map."""
        return self.capacity * self.bytes_per_point + self.env.nbytes

    def points(self) -> dict[str, torch.Tensor]:
        """Views of the live points' arrays (for tests and queries; do not keep across mutations)."""
        return {name: t[: self._count] for name, t in self._fields.items()}

    def stats(self) -> MemoryStats:
        return MemoryStats(
            points=self._count,
            bytes_used=self.bytes_used(),
            budget_bytes=self.config.budget_bytes,
            points_pruned_total=self._pruned_total,
            points_carved_total=self._carved_total,
            frames_ingested=self._frames,
            environment_texels=self.env.filled_count,
            window_frames=self.config.window_frames,
        )

    def _allocate(self, capacity: int) -> dict[str, torch.Tensor]:
        return {n: torch.zeros((capacity, *s), dtype=d, device=self.device) for n, d, s in SCHEMA}

    def _reserve(self, total: int) -> None:
        if total <= self.capacity:
            return
        fields = self._allocate(min(self.max_points, max(total, 2 * self.capacity)))
        for name, t in self._fields.items():
            fields[name][: self._count] = t[: self._count]
        self._fields = fields

    def _remove(self, drop: torch.Tensor) -> int:
        """Remove the live points flagged in ``drop`` [N] bool, keeping the others dense and in order."""
        count = int(drop.sum())
        if count:
            keep = (~drop).nonzero().squeeze(1)
            for t in self._fields.values():
                t[: self._count - count] = t[: self._count].index_select(0, keep)
            self._count -= count
        return count

    def _append(self, values: dict[str, torch.Tensor]) -> None:
        m = values["xyz"].shape[0]
        self._reserve(self._count + m)
        for name, t in self._fields.items():
            t[self._count : self._count + m] = values[name]
        self._count += m

    # -- render ----------------------------------------------------------------------------------
    def render(self, camera: Camera) -> MemoryRender:
        """Memory seen from ``camera``: z-buffered splats, environment map behind them."""
        check_camera(camera)
        return self._render(camera)

    def _to_camera(self, camera: Camera, xyz: torch.Tensor) -> torch.Tensor:
        """World points [N, 3] in the camera frame ([N, 3] view of a contiguous [3, N]: faster to use)."""
        rot, trans = world_to_cam_torch(camera, self.device)
        return (rot @ xyz.T + trans[:, None]).T

    def _render(self, camera: Camera) -> MemoryRender:
        live = self.points()
        winners = splat_points(
            self._to_camera(camera, live["xyz"]),
            live["radius"],
            camera.intrinsics,
            near=self.config.near,
            max_radius_px=self.config.max_splat_radius_px,
            depth_tolerance=self.config.depth_tolerance,
        )
        return compose_render(winners, live, self.env, camera, self._version)

    # -- ingest ----------------------------------------------------------------------------------
    def touch(self, render: MemoryRender, frame_index: int) -> None:
        """Mark what ``render`` showed (winning points, environment texels) as seen at ``frame_index``."""
        check_render(render, self._version, None)
        self._touch(render, int(frame_index))

    def _touch(self, render: MemoryRender, frame_index: int) -> None:
        seen = torch.zeros(self._count, dtype=torch.bool, device=self.device)
        seen[render.point_index[render.point_index >= 0]] = True
        self._fields["last_seen"][: self._count].masked_fill_(seen, frame_index)
        self._fields["hit_count"][: self._count].add_(seen.to(torch.int32))
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
        ``mask`` becomes a point. Generated / imported: the render's points are marked seen and only
        ``mask`` pixels are added; nothing is carved. Pixels at infinity go to the environment map
        (observed colours overwrite it, others fill only empty texels). Then the budget is enforced
        and, in window mode, content older than the window is dropped.
        """
        check_camera(camera)
        frame = self._check_frame(camera, rgb, depth, provenance, frame_index, mask, object_ids)
        if render is None:
            render = self._render(camera)
        else:
            check_render(render, self._version, camera)
        carved = updated = 0
        protect = torch.zeros(self._count, dtype=torch.bool, device=self.device)
        protect[render.point_index[render.point_index >= 0]] = True
        add = frame.mask & (frame.depth > 0) & torch.isfinite(frame.depth)
        if provenance == PROVENANCE_OBSERVED:
            matched_pixels, updated, confirmed = self._match(camera, frame, render, frame_index)
            add &= ~matched_pixels
            live, grid = self.points(), frame.depth.reshape(camera.intrinsics.height, camera.intrinsics.width)
            carve = free_space(
                self._to_camera(camera, live["xyz"]), live["radius"], grid, camera.intrinsics,
                near=self.config.near, depth_tolerance=self.config.depth_tolerance,
            )  # fmt: skip
            carve &= ~confirmed
            protect = protect[~carve]
            carved = self._remove(carve)
        else:
            self._touch(render, frame_index)
        added, pruned, dropped = self._add_points(camera, frame, add, protect, provenance, frame_index)
        at_infinity = (frame.depth == float("inf")) & frame.mask
        observed = provenance == PROVENANCE_OBSERVED
        env_written = self.env.write_view(camera, frame.rgb, at_infinity, frame_index, overwrite=observed)
        if self.config.window_frames > 0:
            horizon = frame_index - self.config.window_frames
            pruned += self._remove(self._fields["last_seen"][: self._count] <= horizon)
            self.env.expire(horizon)
        self._version += 1
        self._frames += 1
        self._carved_total += carved
        self._pruned_total += pruned
        return IngestStats(added, updated, carved, pruned, dropped, env_written)

    def _match(self, camera: Camera, frame: _Frame, render: MemoryRender, frame_index: int):
        """Refresh points the observation confirms; returns (matched pixels, count, confirmed points)."""
        tol = self.config.depth_tolerance
        winner = render.point_index.reshape(-1)
        z_mem = render.depth.reshape(-1)
        z_obs = frame.depth
        confirmed_px = (
            (winner >= 0) & (z_obs > 0) & torch.isfinite(z_obs) & ((z_mem - z_obs).abs() <= tol * z_obs)
        )
        pix = confirmed_px.nonzero().squeeze(1)
        points = winner[pix]
        confirmed = torch.zeros(self._count, dtype=torch.bool, device=self.device)
        confirmed[points] = True
        self._fields["last_seen"][: self._count].masked_fill_(confirmed, frame_index)
        # only points at least as fine as this view's pixels take its colour (a closer view refines)
        fx, fy, cx, cy, f_mean = float32_constants(camera.intrinsics)
        fine = self._fields["radius"][points] * f_mean / z_mem[pix] <= MATCH_MAX_RADIUS_PX
        pix, points = pix[fine], points[fine]
        matched_px = torch.zeros_like(confirmed_px)
        matched_px[pix] = True
        if pix.numel() == 0:
            return matched_px, 0, confirmed
        # several pixels may match one point: it takes the pixel nearest its projected centre
        cam = self._to_camera(camera, self._fields["xyz"][points])
        width = camera.intrinsics.width
        du = (pix % width).to(torch.float32) - (cam[:, 0] / cam[:, 2] * fx + cx)
        dv = torch.div(pix, width, rounding_mode="floor").to(torch.float32) - (
            cam[:, 1] / cam[:, 2] * fy + cy
        )
        key = ((du * du + dv * dv) * 65536.0).clamp(max=2**30).long() << 32 | pix
        best = torch.full((self._count,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=self.device)
        best.scatter_reduce_(0, points, key, "amin")
        hit = (best != torch.iinfo(torch.int64).max).nonzero().squeeze(1)
        src = best[hit] & 0xFFFFFFFF
        f = self._fields
        f["rgb"][hit] = frame.rgb[src]
        f["confidence"][hit] = (f["confidence"][hit].float() + 0.25).clamp(max=1.0).to(torch.float16)
        f["hit_count"][hit] += 1
        if frame.object_ids is not None:
            f["object_id"][hit] = frame.object_ids[src]
        return matched_px, int(hit.numel()), confirmed

    def _add_points(self, camera, frame: _Frame, add, protect, provenance: int, frame_index: int):
        """A point per ``add`` pixel, evicting or dropping to stay in budget: (added, pruned, dropped)."""
        pix = add.nonzero().squeeze(1)
        z = frame.depth[pix]
        room = self.max_points - self._count
        pruned = dropped = 0
        if pix.numel() > room:
            evictable = ~protect
            k = min(pix.numel() - room + self.max_points // EVICTION_HEADROOM, int(evictable.sum()))
            if k:
                f = self._fields
                rank = torch.zeros(self._count, dtype=torch.int64, device=self.device)
                for prov, r in EVICTION_RANK.items():
                    rank[f["provenance"][: self._count] == prov] = r
                seen = f["last_seen"][: self._count].to(torch.int64).clamp(0, 2**31 - 1)
                conf = (f["confidence"][: self._count].float().clamp(0, 1) * 65535).round().to(torch.int64)
                key = (rank << 50) | (seen << 16) | conf
                key[protect] = torch.iinfo(torch.int64).max
                pruned = self._remove(lowest_k(key, k))
            room = self.max_points - self._count
            if pix.numel() > room:  # still no room: keep the nearest new points
                keep = lowest_k(z, room)
                dropped = pix.numel() - room
                pix, z = pix[keep], z[keep]
        m = pix.numel()
        if m == 0:
            return 0, pruned, dropped
        f_mean = (camera.intrinsics.fx + camera.intrinsics.fy) / 2.0
        ids = frame.object_ids[pix] if frame.object_ids is not None else torch.zeros(m, dtype=torch.int32)

        def full(value, dtype):
            return torch.full((m,), value, dtype=dtype, device=self.device)

        self._append(
            {
                "xyz": unproject_pixels(camera, pix, z),
                "rgb": frame.rgb[pix],
                "radius": z * (_HALF_DIAGONAL / f_mean),
                "confidence": full(NEW_CONFIDENCE[provenance], torch.float16),
                "provenance": full(provenance, torch.uint8),
                "last_seen": full(frame_index, torch.int32),
                "hit_count": full(1, torch.int32),
                "object_id": ids.to(device=self.device, dtype=torch.int32),
                "frame_added": full(frame_index, torch.int32),
            }
        )
        return m, pruned, dropped

    def _check_frame(self, camera, rgb, depth, provenance, frame_index, mask, object_ids) -> _Frame:
        """Validate an ingest's arrays against the camera and normalise them (flattened, on device)."""
        h, w = camera.intrinsics.height, camera.intrinsics.width
        if provenance not in PROVENANCES:
            raise ValueError(f"provenance={provenance!r}: use 1 (observed), 2 (generated) or 3 (imported)")
        if isinstance(frame_index, bool) or not isinstance(frame_index, int) or not 0 <= frame_index < 2**31:
            raise ValueError(f"frame_index={frame_index!r}: use an int in [0, 2**31)")
        rgb_t = _checked("rgb", rgb, (h, w, 3), "colour")
        depth_t = _checked("depth", depth, (h, w), "metres").to(self.device, torch.float32).reshape(-1)
        depth_t = torch.where(torch.isnan(depth_t) | (depth_t <= 0), 0.0, depth_t)
        depth_t = torch.where(depth_t > self.config.far, float("inf"), depth_t)
        if rgb_t.dtype != torch.uint8:
            rgb_t = torch.round(torch.nan_to_num(rgb_t.to(torch.float32)).clamp(0.0, 1.0) * 255.0).byte()
        mask_t = torch.ones(h * w, dtype=torch.bool, device=self.device)
        if mask is not None:
            mask_t = _checked("mask", mask, (h, w), "bool").to(self.device).reshape(-1)
        ids_t = None
        if object_ids is not None:
            ids_t = _checked("object_ids", object_ids, (h, w), "ids").to(self.device, torch.int64).reshape(-1)
            if ids_t.numel() and (int(ids_t.min()) < 0 or int(ids_t.max()) >= 2**31):
                raise ValueError("object_ids must lie in [0, 2**31)")
            ids_t = ids_t.to(torch.int32)
        return _Frame(rgb=rgb_t.to(self.device).reshape(-1, 3), depth=depth_t, mask=mask_t, object_ids=ids_t)


_KINDS = {  # what an ingest array may hold: (description for the error, dtype test)
    "colour": ("uint8 or float 0..1", lambda t: t.dtype == torch.uint8 or t.is_floating_point()),
    "metres": ("float metres", lambda t: t.is_floating_point()),
    "bool": ("bool", lambda t: t.dtype == torch.bool),
    "ids": ("integers", lambda t: not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)),
}


def _checked(name: str, value, shape: tuple[int, ...], kind: str) -> torch.Tensor:
    """``value`` (numpy array or torch tensor) as a tensor, or ValueError saying what was expected."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "u" and value.dtype.itemsize > 1:  # torch lacks most uint ops: widen
            value = value.astype(np.int64)
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}")
    what, dtype_ok = _KINDS[kind]
    if tuple(value.shape) != shape or not dtype_ok(value):
        raise ValueError(
            f"{name} must be {what} of shape {shape} for this camera, got {value.dtype} {tuple(value.shape)}"
        )
    return value


def lowest_k(key: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask [N] of the k smallest keys, ties to the lower index (a stable sort's first k, in O(N))."""
    chosen = torch.zeros(key.shape[0], dtype=torch.bool, device=key.device)
    if k <= 0:
        return chosen
    if k >= key.shape[0]:
        return ~chosen
    threshold = torch.topk(key, k, largest=False, sorted=False).values.max()  # faster than kthvalue
    chosen = key < threshold
    ties = (key == threshold).nonzero().squeeze(1)[: k - int(chosen.sum())]
    chosen[ties] = True
    return chosen

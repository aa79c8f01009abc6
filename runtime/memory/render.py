"""Render memory into a camera: a function of memory that changes nothing (no packing, no eviction,
no bookkeeping of what was seen: `touch` and `ingest` do that). The chunks in the frustum are splatted
(`runtime.memory.splat`) over the environment map; with quantised storage, packed chunks in view are
decoded from the arena after the hot store's points."""

from __future__ import annotations

import numpy as np
import torch

from plugin_bridge.camera import Camera
from runtime.memory.backend import fast_kernels
from runtime.memory.config import PROVENANCE_GENERATED
from runtime.memory.geometry import float32_constants, world_to_cam_torch
from runtime.memory.quantised import decode_view
from runtime.memory.splat import (
    MemoryRender,
    SplatWinners,
    check_camera,
    compose_render,
    splat_points,
)

_VIEW_FIELDS = ("xyz", "radius", "provenance", "rgb", "confidence", "object_id")
"""What a render reads of a point (`decode_view` gives these for packed ones)."""


class Renderer:
    """Rendering (a mixin of `SpatialMemory`)."""

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

    def _render(self, camera: Camera) -> MemoryRender:
        if self.cold is not None:
            rows = self.chunks.in_frustum(camera, self.config.near, self.config.max_splat_radius_px)
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
            rgb=f["rgb"].index_select(0, cand),
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
                view["xyz"].numpy(), view["radius"].numpy(), view["provenance"].numpy(), view["rgb"].numpy(),
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
        instead of the chunks in view and the hot store (`_render_packed`), with rgb last."""
        f, cfg, k = self._fields, self.config, camera.intrinsics
        if source is None:
            rows = self.chunks.in_frustum(camera, cfg.near, cfg.max_splat_radius_px).numpy()
            starts, sizes = self.chunks.rows["start"].numpy(), self.chunks.rows["size"].numpy()
            source = (rows, starts, sizes, self.chunks.pool.numpy(), self._count, f["xyz"].numpy(),
                      f["radius"].numpy(), f["provenance"].numpy(), f["rgb"].numpy())  # fmt: skip
        c = np.float32
        w2c = camera.world_to_cam  # as `world_to_cam_torch`: float64 rounded to float32
        rot, trans = np.ascontiguousarray(w2c[:3, :3], dtype=c), np.ascontiguousarray(w2c[:3, 3], dtype=c)
        # the bias a generated point / any other point gets: `_render`'s bool-to-float32 product with
        # the scalar (torch multiplies a float32 tensor by the scalar's float32)
        bias = c(cfg.generated_depth_bias)
        bias_other, bias_generated = c(0.0) * bias, c(1.0) * bias
        fx, fy, cx, cy, f_mean = (c(v) for v in float32_constants(k))
        index, depth, in_view, touched, colour = fast.render_split(
            *source[:8], PROVENANCE_GENERATED, bias_other, bias_generated, rot, trans,
            fx, fy, cx, cy, f_mean, c(cfg.near), c(cfg.max_splat_radius_px),
            c(1.0 + cfg.depth_tolerance), k.width, k.height, source[8],
        )  # fmt: skip
        if touched < 0:
            return None
        self.last_touched = int(touched)
        return SplatWinners(
            torch.from_numpy(index), torch.from_numpy(depth), int(in_view), torch.from_numpy(colour)
        )

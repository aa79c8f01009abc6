"""Ingest a frame into memory: observed frames are the truth (carve free space, refresh matching
points, add the rest, retire coarse points whose whole footprint the frame stored finer: multi-scale
refinement, and keep the free space they prove); generated frames only add what memory did not cover,
never inside space an observation proved empty (`runtime.memory.freespace`). The budget holds after
every call: eviction (`runtime.memory.eviction`) runs where new points need room."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from plugin_bridge.camera import Camera
from runtime.memory.backend import fast_kernels
from runtime.memory.config import (
    PROVENANCE_GENERATED,
    PROVENANCE_IMPORTED,
    PROVENANCE_OBSERVED,
    IngestStats,
)
from runtime.memory.eviction import choose_victims, lowest_k
from runtime.memory.freespace import HALF_DIAGONAL
from runtime.memory.geometry import float32_constants, unproject_pixels
from runtime.memory.ingest_frame import IngestFrame, check_frame
from runtime.memory.quantised import (
    snap,
    snap_confidence,
    snap_positions,
    touch_packed,
)
from runtime.memory.splat import (
    MemoryRender,
    check_camera,
    check_render,
    free_space,
)
from runtime.memory.store import EVICTION_HEADROOM, remap

NEW_CONFIDENCE = {PROVENANCE_OBSERVED: 0.75, PROVENANCE_GENERATED: 0.5, PROVENANCE_IMPORTED: 0.75}
MATCH_MAX_RADIUS_PX = 1.5  # a matched point must be at least this fine in the current view
REFINE_MAX_SLOPE = 1.0  # refinement accepts depth varying across a footprint as on a plane up to 45 deg


class Ingester:
    """Touching and ingesting (a mixin of `SpatialMemory`)."""

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
            self.tier(camera)  # as the frame loop does before it renders
            render = self._render(camera)
        else:
            check_render(render, self._version, camera)
        if (
            self.cold is not None
            and provenance == PROVENANCE_OBSERVED
            and self._heat_view(camera, frame_index)
        ):
            # matching, carving and refinement change points in place: the view's chunks are hot now
            self._focus(camera, pack_idle=False)
            render = self._render(camera)
        hot_count = self._packed_from(render)  # the render's indices from here on are packed points
        carved = updated = refined = shifted = refused = 0
        moved = None  # (removed, holes, movers) once carving renumbered points
        coarse = None  # observed: coarse points the frame confirmed (render numbering)

        def protect() -> torch.Tensor:  # the hot points the render showed, now (only eviction needs it)
            shown = _shown(render)
            shown = shown[shown < hot_count]
            return shown if moved is None else remap(shown, *moved)

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
            coarse = remap(coarse, *moved)
            if evicted is not None:
                coarse = remap(coarse, *evicted)
            refined_pixels = matched_pixels.clone()
            refined_pixels[added_pixels] = True
            refined = self._retire_coarse(camera, frame, coarse, refined_pixels)
        if fast is not None and frame.depth.is_contiguous() and frame.depth.shape == frame.mask.shape:
            at_infinity = torch.from_numpy(fast.infinite_kernel(frame.depth.numpy(), frame.mask.numpy()))
        else:
            at_infinity = (frame.depth == float("inf")) & frame.mask
        observed = provenance == PROVENANCE_OBSERVED
        env_written = self.env.write_view(
            camera, frame.rgb, at_infinity, frame_index, overwrite=observed, provenance=provenance
        )
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
        # colour fusion: a running mean over the views that confirm the point, each new view taking
        # half (the later, usually nearer, views of a surface weigh most: measured best of the means
        # tried on the truth test, docs/memory.md)
        old = f["rgb"][hit].to(torch.int16)
        f["rgb"][hit] = ((old + frame.rgb[src].to(torch.int16) + 1) // 2).to(torch.uint8)
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
        lo, hi = square_min_max(depth, x0, x1, y0, y1)
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


def _shown(render: MemoryRender) -> torch.Tensor:
    """Distinct points (int64, ascending) that won a pixel of ``render``."""
    index = render.point_index.reshape(-1)
    return torch.unique(index[index >= 0])


def square_min_max(grid: torch.Tensor, x0, x1, y0, y1) -> tuple[torch.Tensor, torch.Tensor]:
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

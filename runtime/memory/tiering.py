"""Tiering of quantised storage: chunks leave full precision for the packed arena when out of view
or idle (`tier`, the frame loop's explicit step before it renders), come back when an observation
writes to them, and are evicted from the arena by relevance when the budget needs room."""

from __future__ import annotations

import numpy as np
import torch

from plugin_bridge.camera import Camera
from runtime.memory.chunks import segment_positions
from runtime.memory.config import MIN_POINTS
from runtime.memory.quantised import (
    check_blob,
    decode_chunk,
    decode_rows,
    encode_chunks,
    packed_rmax,
)
from runtime.memory.store import EVICTION_HEADROOM, SCHEMA

HOT_IDLE_FRAMES = 16
"""Quantised storage: a chunk in view stays in full precision while frames keep adding points to it;
this many frames after the last did, it is packed (render reads it from the arena all the same)."""


class Tiering:
    """Quantised storage's packing, unpacking and arena room (a mixin of `SpatialMemory`)."""

    def tier(self, camera: Camera) -> None:
        """The frame loop's tiering step, before it renders ``camera``: with quantised storage, pack the
        hot chunks outside its frustum and those in it that no frame added to lately (`_focus`); with
        full storage, nothing. A render never does this itself: it changes nothing."""
        if self.cold is not None:
            self._focus(camera)

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

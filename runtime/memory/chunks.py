"""Chunk index: which stored points lie in which world-space voxel, so work follows what is visible.

Points stay in `SpatialMemory`'s dense struct of arrays; this index adds, per point, its chunk row
and its position in that chunk's member list, and per chunk (a row of a fixed-size table) its voxel
key, the AABB of its points' centres, its largest radius, its newest `last_seen`, its provenance
counts and a segment of a shared member pool (start, size, capacity). Every update costs what it
touches: appending m points writes m pool entries (a chunk that outgrows its segment moves to the
pool's end; the pool is compacted when full, amortised O(1) a point); removing r points is a
swap-remove in each chunk's segment and in the point arrays (the last live points fill the holes),
O(r). `in_frustum` tests the table only; `members` gathers only the chosen chunks' segments.

Culling is exact for the splat rule: the kernel keeps a point only if its centre projects within
max(max_radius_px, 0.5) pixels of the image, in front of the near plane, so a chunk whose centre AABB
lies outside that widened pyramid holds no point that could win a pixel (or be carved).
"""

from __future__ import annotations

import numpy as np
import torch

from plugin_bridge.camera import Camera
from runtime.memory.backend import fast_kernels

BYTES_PER_POINT = 4 + 4 + 8  # point's chunk row, its position in the row's segment, 2 pool slots
_ROW_FIELDS = (  # per chunk row: name, dtype, trailing shape, empty value
    ("key", torch.int64, (), -1),
    ("lo", torch.float32, (3,), float("inf")),  # AABB of the members' centres (grows; reset when empty)
    ("hi", torch.float32, (3,), float("-inf")),
    ("rmax", torch.float32, (), 0.0),  # largest member radius (grows)
    ("last_seen", torch.int32, (), -1),  # newest member last_seen
    ("provenance", torch.int32, (4,), 0),  # member count per provenance 0..3
    ("start", torch.int64, (), 0),
    ("size", torch.int64, (), 0),
    ("cap", torch.int64, (), 0),
)
INDEX_BYTES_PER_CHUNK = 8 + 4 + 4
"""Per row of the table, the key index beside the columns: a sorted key (int64), its row (int32) and
a slot of the free-row stack (int32)."""
BYTES_PER_CHUNK = sum(d.itemsize * int(np.prod(s)) for _, d, s, _ in _ROW_FIELDS) + INDEX_BYTES_PER_CHUNK
_KEY_BIAS = 2**20  # voxel coordinates are clamped to +-2**20 chunks and packed 21 bits each
_FRUSTUM_MARGIN_PX = 1.0  # slack for float32 (kernel) against float64 (planes) rounding
_NEAR_SLACK = 1e-3


def segment_positions(starts: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Flat positions [sum(sizes)] of the segments [start, start + size), in segment order."""
    total = int(sizes.sum()) if sizes.numel() else 0
    if total == 0:
        return torch.zeros(0, dtype=torch.int64, device=starts.device)
    seg = torch.repeat_interleave(torch.arange(sizes.numel(), device=starts.device), sizes)
    offset = torch.arange(total, device=starts.device) - (torch.cumsum(sizes, 0) - sizes)[seg]
    return starts[seg] + offset


class ChunkIndex:
    """Voxel-grid chunk index over the points [0, count) of a dense struct of arrays."""

    def __init__(self, chunk_size_m: float, max_chunks: int, device: torch.device):
        self.chunk_size_m = float(chunk_size_m)
        self.max_chunks = int(max_chunks)
        self.device = device
        self.rows = {
            n: torch.full((self.max_chunks, *s), e, dtype=d, device=device) for n, d, s, e in _ROW_FIELDS
        }
        # the key index, in arrays the budget counts (a dict and a list of Python ints cost ~100 bytes a
        # row, uncounted): used keys ascending with their rows, and the free rows as a stack
        self._keys = np.empty(self.max_chunks, dtype=np.int64)
        self._key_rows = np.empty(self.max_chunks, dtype=np.int32)
        self._free = np.empty(self.max_chunks, dtype=np.int32)
        self.reset(0)

    def reset(self, point_capacity: int) -> None:
        for name, _, _, empty in _ROW_FIELDS:
            self.rows[name].fill_(empty)
        self._used_count = 0  # _keys[:n] ascending, _key_rows[:n] their rows
        self._free[:] = np.arange(self.max_chunks - 1, -1, -1, dtype=np.int32)  # the top is the lowest row
        self._free_count = self.max_chunks
        self._used: torch.Tensor | None = None  # used rows in key order, until a row is taken or freed
        self.point_chunk = torch.zeros(point_capacity, dtype=torch.int32, device=self.device)
        self.point_pos = torch.zeros(point_capacity, dtype=torch.int32, device=self.device)
        self.pool = torch.zeros(2 * point_capacity, dtype=torch.int32, device=self.device)
        self._pool_end = 0

    @property
    def num_chunks(self) -> int:
        return self._used_count

    @property
    def free_chunks(self) -> int:
        return self._free_count

    def nbytes(self) -> int:
        return sum(
            t.numel() * t.element_size()
            for t in (*self.rows.values(), self.point_chunk, self.point_pos, self.pool)
        ) + sum(a.nbytes for a in (self._keys, self._key_rows, self._free))

    def row_of(self, keys) -> np.ndarray:
        """Rows (int64) of voxel ``keys`` (int64 array), -1 where a key has none."""
        keys = np.asarray(keys, dtype=np.int64)
        n = self._used_count
        if n == 0:
            return np.full(keys.shape, -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._keys[:n], keys), n - 1)
        return np.where(self._keys[at] == keys, self._key_rows[at], -1).astype(np.int64)

    def _take_rows(self, keys: np.ndarray) -> np.ndarray:
        """Rows for new voxel ``keys`` (distinct, ascending, none used yet): the lowest free rows in key
        order, entered in the index. Raises ValueError when the table has too few free rows."""
        m = keys.shape[0]
        if m > self._free_count:
            raise ValueError(f"chunk table full ({self.max_chunks} chunks): evict chunks before adding")
        rows = self._free[self._free_count - m : self._free_count][::-1].astype(np.int64)
        self._free_count -= m
        n = self._used_count
        at = np.searchsorted(self._keys[:n], keys)
        self._keys[: n + m] = np.insert(self._keys[:n], at, keys)
        self._key_rows[: n + m] = np.insert(self._key_rows[:n], at, rows.astype(np.int32))
        self._used_count = n + m
        self._used = None
        self.rows["key"][torch.from_numpy(rows).to(self.device)] = torch.from_numpy(keys).to(self.device)
        return rows

    def reserve(self, point_capacity: int, count: int) -> None:
        """Grow the per-point arrays and the pool with the point storage (keeping the first ``count``)."""
        if point_capacity <= self.point_chunk.shape[0]:
            return
        for name in ("point_chunk", "point_pos"):
            grown = torch.zeros(point_capacity, dtype=torch.int32, device=self.device)
            grown[:count] = getattr(self, name)[:count]
            setattr(self, name, grown)
        pool = torch.zeros(2 * point_capacity, dtype=torch.int32, device=self.device)
        pool[: self._pool_end] = self.pool[: self._pool_end]
        self.pool = pool

    def shrink(self, point_capacity: int, count: int) -> None:
        """Shrink the per-point arrays and the pool to ``point_capacity`` points (keeping the first
        ``count``; the pool is compacted first)."""
        for name in ("point_chunk", "point_pos"):
            small = torch.zeros(point_capacity, dtype=torch.int32, device=self.device)
            small[:count] = getattr(self, name)[:count]
            setattr(self, name, small)
        none = torch.zeros(0, dtype=torch.int64, device=self.device)
        self._compact(none, none)
        pool = torch.zeros(2 * point_capacity, dtype=torch.int32, device=self.device)
        pool[: self._pool_end] = self.pool[: self._pool_end]
        self.pool = pool

    def clear_rows(self, rows: torch.Tensor) -> None:
        """Reset the member-derived columns of ``rows`` (AABB, radius, last_seen, provenance counts) before
        their members are appended again (unpacking a quantised chunk)."""
        for name, _, _, empty in _ROW_FIELDS:
            if name in ("lo", "hi", "rmax", "last_seen", "provenance"):
                self.rows[name][rows] = empty

    def add_packed(self, lo, hi, rmax: float, last_seen: int, counts) -> int:
        """A row for a packed chunk (no members here) with the given AABB of its points' centres, largest
        radius, newest last_seen and provenance counts [4]; returns the row."""
        key = self.keys(torch.as_tensor(lo, dtype=torch.float32, device=self.device)[None]).cpu().numpy()
        if self.row_of(key)[0] >= 0:
            raise ValueError(f"chunk {int(key[0])} already has a row: a packed chunk cannot share it")
        if not self._free_count:
            raise ValueError(f"chunk table full ({self.max_chunks} chunks)")
        row = int(self._take_rows(key)[0])
        r = self.rows
        r["lo"][row] = torch.as_tensor(lo, dtype=torch.float32)
        r["hi"][row] = torch.as_tensor(hi, dtype=torch.float32)
        r["rmax"][row] = float(rmax)
        r["last_seen"][row] = int(last_seen)
        r["provenance"][row] = torch.as_tensor(counts, dtype=torch.int32)
        return row

    def add_packed_rows(self, keys: np.ndarray) -> np.ndarray:
        """Rows (int64) for packed chunks of voxel ``keys`` (distinct, ascending, none with a row yet),
        their columns left for the caller to fill. Raises ValueError when the table has too few rows."""
        return self._take_rows(np.asarray(keys, dtype=np.int64))

    def drop_row(self, row: int) -> None:
        """Forget an empty row (a packed chunk the budget evicts)."""
        if int(self.rows["size"][row]):
            raise ValueError(f"chunk row {row} still indexes {int(self.rows['size'][row])} points")
        self._free_row(row)

    def keys(self, xyz: torch.Tensor) -> torch.Tensor:
        """Packed voxel keys (int64 [N]) of world points [N, 3]."""
        cell = (
            torch.floor(xyz / self.chunk_size_m).to(torch.int64).clamp(-_KEY_BIAS + 1, _KEY_BIAS - 1)
            + _KEY_BIAS
        )
        return (cell[:, 0] << 42) | (cell[:, 1] << 21) | cell[:, 2]

    def existing_rows(self, xyz: torch.Tensor) -> torch.Tensor:
        """Rows (int64, ascending) of the chunks of ``xyz`` that already have one."""
        rows = self.row_of(torch.unique(self.keys(xyz)).cpu().numpy())
        return torch.from_numpy(np.sort(rows[rows >= 0])).to(self.device)

    def new_chunks(self, xyz: torch.Tensor) -> torch.Tensor:
        """Distinct keys (sorted) of ``xyz`` that have no chunk yet."""
        keys = torch.unique(self.keys(xyz)).cpu().numpy()
        return torch.from_numpy(keys[self.row_of(keys) < 0]).to(self.device)

    # -- updates ---------------------------------------------------------------------------------
    def append(self, first: int, xyz: torch.Tensor, radius: torch.Tensor, last_seen, provenance) -> None:
        """Index points [first, first + m) with centres ``xyz`` [m, 3] (their arrays are already stored)."""
        m = xyz.shape[0]
        if m == 0:
            return
        keys = self.keys(xyz)
        ukeys, inverse = torch.unique(keys, return_inverse=True)
        ukeys_np = ukeys.cpu().numpy()
        rows = self.row_of(ukeys_np)
        new = rows < 0
        if new.any():
            rows[new] = self._take_rows(ukeys_np[new])
        urow = torch.from_numpy(rows).to(self.device)
        row = urow[inverse]  # [m]
        counts = torch.bincount(inverse, minlength=urow.numel())
        self._make_room(urow, counts)
        order = torch.argsort(inverse, stable=True)
        group_start = torch.cumsum(counts, 0) - counts
        rank = torch.arange(m, device=self.device) - group_start[inverse[order]]
        pos = self.rows["size"][row[order]] + rank
        points = torch.arange(first, first + m, device=self.device)[order]
        self.pool[self.rows["start"][row[order]] + pos] = points.to(torch.int32)
        self.point_pos[points] = pos.to(torch.int32)
        self.point_chunk[first : first + m] = row.to(torch.int32)
        r = self.rows
        r["size"][urow] += counts
        r["lo"].scatter_reduce_(0, row[:, None].expand(-1, 3), xyz, "amin")
        r["hi"].scatter_reduce_(0, row[:, None].expand(-1, 3), xyz, "amax")
        r["rmax"].scatter_reduce_(0, row, radius.to(torch.float32), "amax")
        r["last_seen"].scatter_reduce_(0, row, last_seen.to(torch.int32), "amax")
        r["provenance"].view(-1).index_add_(
            0, row * 4 + provenance.long(), torch.ones_like(row, dtype=torch.int32)
        )

    def _make_room(self, urow: torch.Tensor, counts: torch.Tensor) -> None:
        """Give rows ``urow`` segments with room for ``counts`` more members each."""
        r = self.rows
        need = r["size"][urow] + counts
        over = need > r["cap"][urow]
        if not bool(over.any()):
            return
        grow, want = urow[over], need[over]
        cap = want + want // 2 + 4
        if self._pool_end + int(cap.sum()) > self.pool.shape[0]:
            self._compact(urow, counts)
            return
        starts = self._pool_end + torch.cumsum(cap, 0) - cap
        old = segment_positions(r["start"][grow], r["size"][grow])
        self.pool[segment_positions(starts, r["size"][grow])] = self.pool[old]
        r["start"][grow], r["cap"][grow] = starts, cap
        self._pool_end += int(cap.sum())

    def _compact(self, urow: torch.Tensor, counts: torch.Tensor) -> None:
        """Rewrite the pool densely, each used row with room for its pending ``counts`` plus a quarter."""
        r = self.rows
        used = torch.from_numpy(np.sort(self._key_rows[: self._used_count]).astype(np.int64)).to(self.device)
        extra = torch.zeros(self.max_chunks, dtype=torch.int64, device=self.device)
        extra[urow] = counts
        want = r["size"][used] + extra[used]
        cap = want + want // 4
        starts = torch.cumsum(cap, 0) - cap
        pool = torch.zeros_like(self.pool)
        pool[segment_positions(starts, r["size"][used])] = self.pool[
            segment_positions(r["start"][used], r["size"][used])
        ]
        self.pool = pool
        r["start"][used], r["cap"][used] = starts, cap
        self._pool_end = int(cap.sum())

    def remove(
        self, removed: torch.Tensor, count: int, fields: dict[str, torch.Tensor], keep_rows: bool = False
    ):
        """Unindex points ``removed`` (int64, sorted, distinct, < count) and plan the arrays' swap-remove.

        ``fields`` are the point arrays (not yet moved). The affected chunks' AABB, largest radius and
        newest last_seen are recomputed from their remaining members, so the table is a function of
        the stored points alone (a memory rebuilt from a snapshot gets the same one). Returns (holes,
        movers): the caller moves point ``movers[i]``'s arrays to ``holes[i]``; this index already
        reflects the move. With ``keep_rows`` a chunk left empty keeps its row as it was (key, AABB,
        radius, last_seen, provenance counts): quantised storage packs the chunk's points elsewhere.
        """
        provenance = fields["provenance"][removed]
        r = self.rows
        c = self.point_chunk[removed].long()
        p = self.point_pos[removed].long()
        ucs, kc = torch.unique(c, return_counts=True)
        new_size = r["size"][ucs] - kc
        new_size_of = torch.zeros(self.max_chunks, dtype=torch.int64, device=self.device)
        new_size_of[ucs] = new_size
        removed_at = r["start"][c] + p
        tails = segment_positions(r["start"][ucs] + new_size, kc)  # each chunk's last kc entries
        holes_at = torch.sort(removed_at[p < new_size_of[c]]).values
        movers_at = torch.sort(tails[~torch.isin(tails, removed_at)]).values  # same chunks, same counts
        moved = self.pool[movers_at].long()
        self.pool[holes_at] = self.pool[movers_at]
        self.point_pos[moved] = (holes_at - r["start"][self.point_chunk[moved].long()]).to(torch.int32)
        r["size"][ucs] = new_size
        if keep_rows:  # an emptied row keeps its counts; the others lose their removed members
            stays = new_size_of[c] > 0
            c, provenance = c[stays], provenance[stays]
        r["provenance"].view(-1).index_add_(
            0, c * 4 + provenance.long(), torch.full_like(c, -1, dtype=torch.int32)
        )
        for row in ucs[new_size == 0].tolist() if not keep_rows else ():
            self._free_row(row)
        self._refresh(ucs[new_size > 0], fields)
        # the point arrays: the last live points fill the holes below the new count
        new_count = count - removed.numel()
        holes = removed[removed < new_count]
        keep = torch.ones(count - new_count, dtype=torch.bool, device=self.device)
        keep[removed[removed >= new_count] - new_count] = False
        movers = torch.arange(new_count, count, device=self.device)[keep]
        mc, mp = self.point_chunk[movers], self.point_pos[movers]
        self.pool[r["start"][mc.long()] + mp.long()] = holes.to(torch.int32)
        self.point_chunk[holes], self.point_pos[holes] = mc, mp
        return holes, movers

    def _refresh(self, rows: torch.Tensor, fields: dict[str, torch.Tensor]) -> None:
        """Recompute the member-derived columns of ``rows`` from their members' arrays."""
        r = self.rows
        sizes = r["size"][rows]
        points = self.pool[segment_positions(r["start"][rows], sizes)].long()
        target = torch.repeat_interleave(rows, sizes)
        xyz, by_row = fields["xyz"][points], target[:, None].expand(-1, 3)
        r["lo"][rows], r["hi"][rows], r["rmax"][rows], r["last_seen"][rows] = (
            float("inf"),
            float("-inf"),
            0.0,
            -1,
        )
        r["lo"].scatter_reduce_(0, by_row, xyz, "amin")
        r["hi"].scatter_reduce_(0, by_row, xyz, "amax")
        r["rmax"].scatter_reduce_(0, target, fields["radius"][points], "amax")
        r["last_seen"].scatter_reduce_(0, target, fields["last_seen"][points], "amax")

    def _free_row(self, row: int) -> None:
        n, key = self._used_count, int(self.rows["key"][row])
        at = int(np.searchsorted(self._keys[:n], key))
        if at == n or self._keys[at] != key or self._key_rows[at] != row:
            raise ValueError(f"chunk row {row} is not in use")
        self._keys[at : n - 1] = self._keys[at + 1 : n]
        self._key_rows[at : n - 1] = self._key_rows[at + 1 : n]
        self._used_count = n - 1
        self._used = None
        for name, _, _, empty in _ROW_FIELDS:
            self.rows[name][row] = empty
        self._free[self._free_count] = row
        self._free_count += 1

    def touch(self, points: torch.Tensor, frame_index: int) -> None:
        """Record that ``points`` were seen at ``frame_index`` (their chunks' newest last_seen)."""
        if points.numel():
            row = self.point_chunk[points].long()  # may repeat: every write of a row is the same value
            last = self.rows["last_seen"]
            last[row] = last[row].clamp(min=int(frame_index))

    # -- queries ---------------------------------------------------------------------------------
    def used_rows(self) -> torch.Tensor:
        """Rows in use, in ascending key order (not row order: rows are handed out by history)."""
        if self._used is None:
            self._used = torch.from_numpy(self._key_rows[: self._used_count].astype(np.int64)).to(self.device)
        return self._used

    def in_frustum(self, camera: Camera, near: float, max_radius_px: float) -> torch.Tensor:
        """Used rows (int64, ascending) whose AABB meets the pyramid the splat kernel can draw from."""
        rows = self.used_rows()
        if rows.numel() == 0:
            return rows
        k = camera.intrinsics
        e = max(float(max_radius_px), 0.5) + _FRUSTUM_MARGIN_PX
        normals = np.array(  # camera frame, pointing inside; planes through the eye, then the near plane
            [[k.fx, 0.0, k.cx + e], [-k.fx, 0.0, k.width - 1 + e - k.cx],
             [0.0, k.fy, k.cy + e], [0.0, -k.fy, k.height - 1 + e - k.cy], [0.0, 0.0, 1.0]]
        )  # fmt: skip
        offsets = np.array([0.0, 0.0, 0.0, 0.0, -near * (1.0 - _NEAR_SLACK)])
        rot, eye = camera.cam_to_world[:3, :3], camera.cam_to_world[:3, 3]
        n_world = normals @ rot.T  # [5, 3]
        d_world = offsets - n_world @ eye
        fast = fast_kernels(rows, self.rows["lo"])
        if fast is not None:
            return torch.from_numpy(
                fast.frustum_kernel(
                    rows.numpy(),
                    self.rows["lo"].numpy(),
                    self.rows["hi"].numpy(),
                    np.ascontiguousarray(n_world, dtype=np.float64),
                    np.ascontiguousarray(d_world, dtype=np.float64),
                )  # fmt: skip
            )
        lo = self.rows["lo"][rows].to(torch.float64)
        hi = self.rows["hi"][rows].to(torch.float64)
        n = torch.as_tensor(n_world, device=self.device)
        corner = torch.where(n[None] > 0, hi[:, None], lo[:, None])  # [C, 5, 3]: the box's farthest-in corner
        inside = ((corner * n[None]).sum(-1) + torch.as_tensor(d_world, device=self.device) >= 0).all(1)
        return rows[inside]

    def members(self, rows: torch.Tensor, count: int | None = None) -> torch.Tensor:
        """Point indices (int64, ascending) of the chunks ``rows`` (``count``: points stored, if known)."""
        r = self.rows
        fast = fast_kernels(rows, self.pool) if count is not None else None
        if fast is not None and rows.dtype == torch.int64 and rows.dim() == 1:
            points, ok = fast.members_kernel(
                rows.contiguous().numpy(),
                r["start"].numpy(),
                r["size"].numpy(),
                self.pool.numpy(),
                int(count),
            )
            if ok:
                return torch.from_numpy(points)
        at = segment_positions(self.rows["start"][rows], self.rows["size"][rows])
        points = self.pool[at].long()
        if count is not None and 8 * points.numel() >= count:  # many: a mask of count bytes beats a sort
            mask = torch.zeros(count, dtype=torch.bool, device=self.device)
            mask[points] = True
            return mask.nonzero().squeeze(1)
        return torch.sort(points).values

    def relevance(self, rows: torch.Tensor, trajectory: torch.Tensor, now: int, weights) -> torch.Tensor:
        """Relevance score (float64 [len(rows)], higher is kept longer) of chunk ``rows``.

        A weighted sum of three terms in [0, 1]:
        - nearness to the recent trajectory: exp(-d / trajectory_scale_m), d the distance from the
          chunk's centre to the nearest camera position in ``trajectory`` [T, 3] (where the user has
          been is where they come back to; the newest sample is the current camera);
        - recency: 1 / (1 + age / recency_frames), age = frames since a member was last seen;
        - provenance: the share of observed members (imported count half; generated none).
        """
        r = self.rows
        centre = ((r["lo"][rows] + r["hi"][rows]) / 2).to(torch.float64)
        if trajectory.shape[0]:
            d = torch.cdist(centre, trajectory.to(torch.float64)).min(dim=1).values
            near = torch.exp(-d / weights.trajectory_scale_m)
        else:
            near = torch.zeros(rows.numel(), dtype=torch.float64, device=self.device)
        age = (float(now) - r["last_seen"][rows].to(torch.float64)).clamp(min=0.0)
        recent = 1.0 / (1.0 + age / weights.recency_frames)
        counts = r["provenance"][rows].to(torch.float64)
        size = counts.sum(dim=1).clamp(min=1.0)
        observed = (counts[:, 1] + 0.5 * counts[:, 3]) / size
        return weights.trajectory * near + weights.recency * recent + weights.provenance * observed

    def eviction_order(
        self, exclude: torch.Tensor, trajectory: torch.Tensor, now: int, weights
    ) -> torch.Tensor:
        """Used rows not in ``exclude``, least relevant first (``relevance``; ties in key order)."""
        rows = self.used_rows()
        rows = rows[~torch.isin(rows, exclude)]
        if rows.numel() == 0:
            return rows
        return rows[torch.argsort(self.relevance(rows, trajectory, now, weights), stable=True)]

    def sizes(self, rows: torch.Tensor) -> torch.Tensor:
        return self.rows["size"][rows]

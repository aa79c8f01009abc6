"""Quantised storage: chunks packed at 15 bytes a point in one byte arena, and rendered from there.

A memory created with ``MemoryConfig.storage = "quantised"`` keeps in full precision (the hot store:
`SpatialMemory`'s struct of arrays and chunk index) only the chunks frames are adding points to; a chunk
that leaves the view, or that no frame added to for `tiering.HOT_IDLE_FRAMES`, is packed into a blob
(`encode_chunk`) and its points leave the hot store. Render reads the packed chunks in view straight
from the arena (`decode_view`, the same values a hot chunk holds), and a generated frame marks the
packed points it showed as seen in their blobs (`touch_packed`). A chunk is unpacked (`decode_chunk`)
only when a frame adds points to it, or before an observed frame, which may change or carve any point
in view. A packed point costs 15 bytes instead of the hot store's 54, with no per-point index: a blob
is one chunk's points, found through its chunk row.

Blob layout (little-endian; every array starts 2-byte aligned)::

    int32[6]    header: count n, reference last_seen, earliest frame_added, palette length p,
                bytes per object index (1 or 2), 0
    float32[6]  the AABB of the points' centres: lo xyz, hi xyz
    int32[p]    palette: the distinct object ids of the chunk, ascending
    uint16[3n]  positions: x of every point, then y, then z, as fixed-point offsets in the chunk's
                voxel (q = round((x - o) / step), o = floor(lo / s) s the voxel's corner, step =
                s / 65535, s the chunk size; computed in float64)
    uint16[n]   age: reference last_seen - last_seen, saturating at 65535 frames
    uint16[n]   object index into the palette (only when 2 bytes an index)
    uint8[3n]   colour rgb, as stored
    uint8[n]    radius: round(RADIUS_STEPS (log2 r + RADIUS_OCTAVE0)), clamped to 0..255
    uint8[n]    confidence (6 bits: round(63 c)) << 2 | provenance (2 bits)
    uint8[n]    hit count, saturating at 255
    uint8[n]    object index into the palette (only when 1 byte an index)

The grid is fixed by the voxel, not by the other points, so a point can be put on it the moment it
is stored: a quantised memory snaps every new point's position, radius and confidence to the values
packing keeps (`snap`), and the hot store holds exactly what a packed chunk decodes to. What that
loses: positions move by at most half a step (2 m / 65535 / 2 = 0.015 mm with 2 m chunks), radii by at
most 2.5% (14 steps an octave), confidence by 1/126. Packing itself loses only what the hot store
keeps beyond that: ages saturate at 65535 frames, hit counts at 255, and ``frame_added`` keeps only
the chunk's earliest. Decoded values are a fixed point (snapping or packing them again changes
nothing), so a chunk may leave and enter the view any number of times.
"""

from __future__ import annotations

import numpy as np

from runtime.memory.backend import fast_kernels

RADIUS_STEPS = 14.0
"""Radius codes per octave (a step is 2^(1/14) - 1 = 5%, so rounding moves a radius by at most 2.5%)."""
RADIUS_OCTAVE0 = 14.0
"""Code 0 is a radius of 2^-14 m (0.06 mm); code 255 is 2^(255/14 - 14) m (18 m)."""
BYTES_PER_PACKED_POINT = 15
"""Positions 6, age 2, colour 3, radius 1, confidence and provenance 1, hit count 1, object index 1."""
HEADER_BYTES = 6 * 4 + 6 * 4
BYTES_PER_COLD_ROW = 8 + 3 * 4
"""Per chunk-table row: the blob's arena offset (int64), its length and point count, and the frame that
last added points to the chunk while it was hot (int32 each)."""
_Q = 65535.0


def blob_size(count: int, palette: int, index_bytes: int = 1) -> int:
    """Bytes of a blob with ``count`` points and ``palette`` distinct object ids."""
    return HEADER_BYTES + 4 * palette + (BYTES_PER_PACKED_POINT - 1 + index_bytes) * count


def _cells(xyz: np.ndarray, chunk_size: float) -> np.ndarray:
    """Voxel coordinates (int64) of float32 positions, as `ChunkIndex.keys` finds them (a float32
    division, then floor)."""
    return np.floor(np.asarray(xyz, dtype=np.float32) / np.float32(chunk_size)).astype(np.int64)


def _positions(q: np.ndarray, cells: np.ndarray, chunk_size: float) -> np.ndarray:
    return (cells * chunk_size + q.astype(np.float64) * (chunk_size / _Q)).astype(np.float32)


def _position_codes(xyz: np.ndarray, cells: np.ndarray, chunk_size: float) -> np.ndarray:
    """uint16 [N, 3] grid codes of float32 positions in the voxels ``cells`` (int64 [N, 3]), each chosen so
    that its position decodes inside that voxel: the nearest grid point, moved one step inwards while
    float32 rounding puts it on the next voxel's side of a face (the grid's last point is the face)."""
    q = np.clip(np.rint((xyz.astype(np.float64) - cells * chunk_size) * (_Q / chunk_size)), 0, 65535)
    for _ in range(64):  # far from the origin one float32 step spans several grid steps
        off = _cells(_positions(q, cells, chunk_size), chunk_size) - cells
        if not off.any():
            break
        q = np.clip(q - np.sign(off), 0, 65535)
    return q.astype(np.uint16)


def _radius_codes(radius: np.ndarray) -> np.ndarray:
    r = np.maximum(radius.astype(np.float64), 2.0**-40)
    return np.clip(np.rint(RADIUS_STEPS * (np.log2(r) + RADIUS_OCTAVE0)), 0, 255).astype(np.uint8)


def _radii(code: np.ndarray) -> np.ndarray:
    return np.exp2(code.astype(np.float64) / RADIUS_STEPS - RADIUS_OCTAVE0).astype(np.float32)


def _confidence_codes(confidence: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(confidence.astype(np.float64) * 63.0), 0, 63).astype(np.uint8)


def _confidences(code: np.ndarray) -> np.ndarray:
    return (code.astype(np.float64) / 63.0).astype(np.float16)


def snap(values: dict, chunk_size: float) -> None:
    """Put new points (torch tensors named as `store.SCHEMA`, CPU) on the packed grid in place:
    position, radius and confidence become what a packed chunk would decode them to."""
    import torch

    values["xyz"] = snap_positions(values["xyz"], chunk_size)
    values["radius"] = torch.from_numpy(_radii(_radius_codes(values["radius"].numpy())))
    values["confidence"] = torch.from_numpy(_confidences(_confidence_codes(values["confidence"].numpy())))


def snap_positions(xyz, chunk_size: float):
    """A float32 [N, 3] position tensor on the packed grid: each point stays in its voxel."""
    import torch

    xyz = xyz.numpy()
    cells = _cells(xyz, chunk_size)
    return torch.from_numpy(_positions(_position_codes(xyz, cells, chunk_size), cells, chunk_size))


def snap_confidence(confidence):
    """A float16 confidence tensor on the packed grid (after an update)."""
    import torch

    return torch.from_numpy(_confidences(_confidence_codes(confidence.numpy())))


def encode_chunk(fields: dict[str, np.ndarray], ref_last_seen: int, chunk_size: float) -> np.ndarray:
    """Pack one chunk's points (numpy arrays named as `store.SCHEMA`, n >= 1, all in one voxel of
    side ``chunk_size``) into a uint8 blob. ``ref_last_seen`` is the chunk's newest last_seen (ages
    are stored relative to it)."""
    n = fields["xyz"].shape[0]
    return encode_chunks(fields, np.array([0, n]), np.array([ref_last_seen]), chunk_size)[0]


def encode_chunks(
    fields: dict[str, np.ndarray], bounds: np.ndarray, refs: np.ndarray, chunk_size: float
) -> list[np.ndarray]:
    """`encode_chunk` for many chunks at once: chunk i is points [bounds[i], bounds[i + 1]) of
    ``fields`` (each chunk at least one point, all in one voxel), with reference last_seen refs[i].
    Every code is computed for all points together; only the blobs are put together chunk by chunk."""
    bounds = np.asarray(bounds, dtype=np.int64)
    starts, counts = bounds[:-1], np.diff(bounds)
    rows = counts.shape[0]
    row = np.repeat(np.arange(rows), counts)
    refs = np.asarray(refs, dtype=np.int64)
    xyz = np.ascontiguousarray(fields["xyz"], dtype=np.float32)
    lo, hi = np.minimum.reduceat(xyz, starts, axis=0), np.maximum.reduceat(xyz, starts, axis=0)
    cells = _cells(lo, chunk_size)  # a chunk's points share its voxel
    q = _position_codes(xyz, cells[row], chunk_size)
    age = np.clip(refs[row] - fields["last_seen"].astype(np.int64), 0, 65535).astype("<u2")
    # palettes: the distinct ids of each chunk, ascending; a point's index is its id's rank there
    keys = (row.astype(np.int64) << 32) | (fields["object_id"].astype(np.int64) + 2**31)
    distinct, index = np.unique(keys, return_inverse=True)
    palette = ((distinct & 0xFFFFFFFF) - 2**31).astype("<i4")
    palette_start = np.searchsorted(distinct >> 32, np.arange(rows))
    palette_len = np.diff(np.append(palette_start, distinct.shape[0]))
    index = index.reshape(-1) - palette_start[row]
    meta = (_confidence_codes(fields["confidence"]) << 2) | (fields["provenance"].astype(np.uint8) & 3)
    tail = np.stack(
        [_radius_codes(fields["radius"]), meta, np.clip(fields["hit_count"].astype(np.int64), 0, 255).astype(np.uint8)]
    )  # fmt: skip
    rgb = np.ascontiguousarray(fields["rgb"], dtype=np.uint8)
    added = np.minimum.reduceat(fields["frame_added"].astype(np.int64), starts)
    box = np.concatenate([lo, hi], axis=1).astype("<f4")
    blobs = []
    for i in range(rows):
        a, b, n, p = int(starts[i]), int(bounds[i + 1]), int(counts[i]), int(palette_len[i])
        index_bytes = 1 if p <= 256 else 2
        header = np.array([n, refs[i], added[i], p, index_bytes, 0], dtype="<i4")
        ids = index[a:b].astype("<u2" if index_bytes == 2 else np.uint8).view(np.uint8)
        parts = [
            header.view(np.uint8),
            box[i].view(np.uint8),
            palette[palette_start[i] : palette_start[i] + p].view(np.uint8),
            np.ascontiguousarray(q[a:b].T).view(np.uint8).reshape(-1),
            age[a:b].view(np.uint8),
            *([ids] if index_bytes == 2 else []),
            rgb[a:b].reshape(-1),
            tail[:, a:b].reshape(-1),
            *([ids] if index_bytes == 1 else []),
        ]
        blob = np.concatenate(parts)
        assert blob.shape[0] == blob_size(n, p, index_bytes)
        blobs.append(blob)
    return blobs


def blob_count(blob: np.ndarray) -> int:
    return int(blob[:4].view("<i4")[0])


def decode_chunk(blob: np.ndarray, chunk_size: float) -> dict[str, np.ndarray]:
    """Unpack a blob of `encode_chunk` into numpy arrays named and typed as `store.SCHEMA`."""
    blob = np.ascontiguousarray(blob, dtype=np.uint8)
    n, ref, added, p, index_bytes, _ = (int(v) for v in blob[:24].view("<i4"))
    lo = blob[24:36].view("<f4")  # the box's lower corner: its voxel is the grid's
    at = HEADER_BYTES

    def take(count: int, dtype: str) -> np.ndarray:
        nonlocal at
        size = count * np.dtype(dtype).itemsize
        out = blob[at : at + size].view(dtype)
        at += size
        return out

    palette = take(p, "<i4")
    q = take(3 * n, "<u2").reshape(3, n)
    age = take(n, "<u2")
    index = take(n, "<u2") if index_bytes == 2 else None
    rgb = take(3 * n, "u1").reshape(n, 3)
    r_code = take(n, "u1")
    meta = take(n, "u1")
    hits = take(n, "u1")
    if index is None:
        index = take(n, "u1")
    return {
        "xyz": np.ascontiguousarray(_positions(q.T, _cells(lo, chunk_size), chunk_size)),
        "rgb": rgb.copy(),
        "radius": _radii(r_code),
        "confidence": _confidences(meta >> 2),
        "provenance": (meta & 3).astype(np.uint8),
        "last_seen": (ref - age.astype(np.int64)).astype(np.int32),
        "hit_count": hits.astype(np.int32),
        "object_id": palette[np.minimum(index.astype(np.int64), p - 1)].astype(np.int32),
        "frame_added": np.full(n, added, dtype=np.int32),
    }


def packed_rmax(blob: np.ndarray) -> float:
    """The largest decoded radius of a blob (what its chunk row keeps while packed)."""
    n, _, _, p, index_bytes, _ = (int(v) for v in blob[:24].view("<i4"))
    at = HEADER_BYTES + 4 * p + 8 * n + (2 * n if index_bytes == 2 else 0) + 3 * n
    code = int(blob[at : at + n].max())
    return float(np.float32(np.exp2(code / RADIUS_STEPS - RADIUS_OCTAVE0)))


def check_blob(blob: np.ndarray, chunk_size: float) -> dict[str, np.ndarray]:
    """Decode a blob from outside (a snapshot), refusing one that is malformed (ValueError)."""
    if blob.dtype != np.uint8 or blob.ndim != 1 or blob.shape[0] < HEADER_BYTES:
        raise ValueError("packed chunk shorter than its header")
    n, _, _, p, index_bytes, zero = (int(v) for v in blob[:24].view("<i4"))
    if n < 1 or p < 1 or index_bytes not in (1, 2) or zero != 0 or (index_bytes == 1 and p > 256):
        raise ValueError(
            f"packed chunk header is invalid (count {n}, palette {p}, index bytes {index_bytes})"
        )
    if blob.shape[0] != blob_size(n, p, index_bytes):
        raise ValueError(
            f"packed chunk of {blob.shape[0]} bytes, its header says {blob_size(n, p, index_bytes)}"
        )
    box = blob[24:48].view("<f4")
    if not np.isfinite(box).all() or (box[:3] > box[3:]).any():
        raise ValueError("packed chunk box is not finite or inverted")
    fields = decode_chunk(blob, chunk_size)
    if not np.isin(fields["provenance"], (1, 2, 3)).all():
        raise ValueError("packed chunk provenance outside 1..3")
    at = HEADER_BYTES + 4 * p + 8 * n
    index = blob[at : at + 2 * n].view("<u2") if index_bytes == 2 else blob[-n:]
    if int(index.max()) >= p:
        raise ValueError("packed chunk object index past its palette")
    return fields


_RADIUS_TABLE = _radii(np.arange(256, dtype=np.uint8))
"""Every radius code decoded (a lookup gives `_radii`'s bits)."""
_CONFIDENCE_TABLE = _confidences(np.arange(64, dtype=np.uint8))


def _u16(arena: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Little-endian uint16 values at byte offsets ``at`` of ``arena`` (any alignment), as int64."""
    return arena[at].astype(np.int64) | (arena[at + 1].astype(np.int64) << 8)


def _put_u16(arena: np.ndarray, at: np.ndarray, values: np.ndarray) -> None:
    arena[at] = (values & 0xFF).astype(np.uint8)
    arena[at + 1] = (values >> 8).astype(np.uint8)


def _blob_layout(arena: np.ndarray, offsets: np.ndarray) -> dict[str, np.ndarray]:
    """Where each section of the blobs at ``offsets`` (int64 [R]) starts, from their headers (int64 [R]
    each): count n, ref, palette p, wide (2-byte object indices), palette / position / age / colour
    offsets in the arena; lo: float32 [R, 3] the box's lower corner."""
    raw = arena[offsets[:, None] + np.arange(36)]
    head = np.ascontiguousarray(raw[:, :24]).view("<i4").astype(np.int64)
    n, p, wide = head[:, 0], head[:, 3], head[:, 4] == 2
    palette = offsets + HEADER_BYTES
    position = palette + 4 * p
    age = position + 6 * n
    colour = age + 2 * n + np.where(wide, 2 * n, 0)
    return {
        "n": n, "ref": head[:, 1], "added": head[:, 2], "p": p, "wide": wide, "palette": palette, "position": position,
        "age": age, "colour": colour, "lo": np.ascontiguousarray(raw[:, 24:36]).view("<f4"),
    }  # fmt: skip


def decode_view(
    store: ColdStore, rows: np.ndarray, chunk_size: float
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The points of the packed chunks ``rows`` (int64 [R], each holding a blob) for a render, decoded
    straight from the arena, all chunks at once: (fields, first). fields: xyz float32 [N, 3], radius
    float32, provenance uint8, rgb uint8 [N, 3], confidence float16, object_id int32 (the values
    `decode_chunk` gives, bit for bit); chunk i's points are [first[i], first[i + 1]) in blob order."""
    fields, first, _ = _decode_view(store, np.asarray(rows, dtype=np.int64), chunk_size)
    return fields, first


def _decode_view(store: ColdStore, rows: np.ndarray, chunk_size: float):
    """`decode_view` (``rows`` int64) with the blobs' layout as well (`_blob_layout`; None when the
    blobs hold no point): (fields, first, layout)."""
    arena = store.arena
    first = np.zeros(rows.shape[0] + 1, dtype=np.int64)
    np.cumsum(store.count[rows], out=first[1:])
    total = int(first[-1])
    if total == 0:
        empty = {"xyz": np.zeros((0, 3), np.float32), "radius": np.zeros(0, np.float32),
                 "provenance": np.zeros(0, np.uint8), "rgb": np.zeros((0, 3), np.uint8),
                 "confidence": np.zeros(0, np.float16), "object_id": np.zeros(0, np.int32)}  # fmt: skip
        return empty, first, None
    at = _blob_layout(arena, store.offset[rows])
    fast = fast_kernels()
    if fast is not None:
        out = {"xyz": np.empty((total, 3), np.float32), "radius": np.empty(total, np.float32),
               "provenance": np.empty(total, np.uint8), "rgb": np.empty((total, 3), np.uint8),
               "confidence": np.empty(total, np.float16), "object_id": np.empty(total, np.int32)}  # fmt: skip
        fast.decode_view_kernel(
            arena, first, at["n"], at["position"], at["colour"], at["age"], at["wide"], at["palette"], at["p"],
            _cells(at["lo"], chunk_size) * chunk_size, chunk_size / _Q, _RADIUS_TABLE,
            _CONFIDENCE_TABLE.view(np.uint16), out["xyz"], out["radius"], out["provenance"], out["rgb"],
            out["confidence"].view(np.uint16), out["object_id"],
        )  # fmt: skip
        return out, first, at
    seg = np.repeat(np.arange(rows.shape[0]), at["n"])
    j = np.arange(total, dtype=np.int64) - first[seg]
    n = at["n"][seg]
    pos = at["position"][seg] + 2 * j
    q = np.stack([_u16(arena, pos), _u16(arena, pos + 2 * n), _u16(arena, pos + 4 * n)], axis=1)
    xyz = _positions(q, _cells(at["lo"], chunk_size)[seg], chunk_size)
    colour = at["colour"][seg]
    rgb = arena[(colour + 3 * j)[:, None] + np.arange(3)]
    meta = arena[colour + 4 * n + j]
    wide = at["wide"][seg]
    index = np.empty(total, dtype=np.int64)
    index[wide] = _u16(arena, (at["age"][seg] + 2 * n + 2 * j)[wide])
    index[~wide] = arena[(colour + 6 * n + j)[~wide]]
    index = np.minimum(index, at["p"][seg] - 1)
    ids = arena[(at["palette"][seg] + 4 * index)[:, None] + np.arange(4)]
    return (
        {
            "xyz": xyz,
            "radius": _RADIUS_TABLE[arena[colour + 3 * n + j]],
            "provenance": (meta & 3).astype(np.uint8),
            "rgb": rgb,
            "confidence": _CONFIDENCE_TABLE[meta >> 2],
            "object_id": np.ascontiguousarray(ids).view("<i4").reshape(-1).astype(np.int32),
        },
        first,
        at,
    )


def decode_rows(
    store: ColdStore, rows: np.ndarray, chunk_size: float
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """`decode_view` with every field of `store.SCHEMA` (last_seen, hit_count and frame_added too):
    what `decode_chunk` gives for each of ``rows``, all chunks at once."""
    rows = np.asarray(rows, dtype=np.int64)
    fields, first, at = _decode_view(store, rows, chunk_size)
    total = int(first[-1])
    if total == 0:
        fields.update({name: np.zeros(0, np.int32) for name in ("last_seen", "hit_count", "frame_added")})
        return fields, first
    arena = store.arena
    seg = np.repeat(np.arange(rows.shape[0]), at["n"])
    j = np.arange(total, dtype=np.int64) - first[seg]
    fields["last_seen"] = (at["ref"][seg] - _u16(arena, at["age"][seg] + 2 * j)).astype(np.int32)
    fields["hit_count"] = arena[at["colour"][seg] + 5 * at["n"][seg] + j].astype(np.int32)
    fields["frame_added"] = at["added"][seg].astype(np.int32)
    return fields, first


def touch_packed(store: ColdStore, rows: np.ndarray, points: np.ndarray, frame_index: int) -> np.ndarray:
    """Mark packed points seen at ``frame_index`` in their blobs, in place: ``rows`` (int64) and
    ``points`` (int64, the point's position in its blob) name each, a point at most once. As a hot
    point's touch: last_seen = frame_index (its age from the blob's reference), hit count + 1
    (saturating at 255); a blob whose reference is older moves it to frame_index, every age of the
    blob growing by the difference (saturating at 65535). Returns the distinct rows touched."""
    arena = store.arena
    urows, inv = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
    if urows.shape[0] == 0:
        return urows
    inv, points = inv.reshape(-1).astype(np.int64), np.asarray(points, dtype=np.int64)
    at = _blob_layout(arena, store.offset[urows])
    ref = np.maximum(at["ref"], int(frame_index))
    shift = ref - at["ref"]
    moved = np.flatnonzero(shift > 0)
    fast = fast_kernels()
    if fast is not None:
        fast.touch_packed_kernel(
            arena, at["age"], at["colour"], at["n"], shift, ref, inv, points, int(frame_index)
        )
    else:
        n = at["n"][moved]
        seg = np.repeat(np.arange(moved.shape[0]), n)
        ages = at["age"][moved][seg] + 2 * (np.arange(int(n.sum()), dtype=np.int64) - (np.cumsum(n) - n)[seg])
        _put_u16(arena, ages, np.minimum(_u16(arena, ages) + shift[moved][seg], 65535))
        ages = at["age"][inv] + 2 * points
        _put_u16(arena, ages, np.clip(ref[inv] - int(frame_index), 0, 65535))
        hits = at["colour"][inv] + 5 * at["n"][inv] + points
        arena[hits] = np.minimum(arena[hits].astype(np.int64) + 1, 255).astype(np.uint8)
    header = store.offset[urows[moved]] + 4  # the new references
    arena[header[:, None] + np.arange(4)] = ref[moved].astype("<i4").view(np.uint8).reshape(-1, 4)
    return urows


class ColdStore:
    """Packed chunks in one byte arena, addressed by chunk-table row.

    Blobs are appended at the arena's end; taking or dropping one leaves a hole that `compact` closes
    (in place, moving blobs towards the start, in arena order). The arena's capacity grows or shrinks
    only by `resize` (the memory decides, within its budget).
    """

    def __init__(self, max_rows: int):
        self.offset = np.zeros(max_rows, dtype=np.int64)
        self.length = np.zeros(max_rows, dtype=np.int32)  # a blob is one chunk: far below 2 GiB
        self.count = np.zeros(max_rows, dtype=np.int32)  # points packed in the row's blob (0: none)
        self.written = np.full(max_rows, -1, dtype=np.int32)  # frame that last added points to the hot chunk
        self.arena = np.zeros(0, dtype=np.uint8)
        self.end = 0  # arena bytes in use from the start (blobs and holes)
        self.live = 0  # bytes of live blobs

    def clear(self) -> None:
        self.offset[:] = 0
        self.length[:] = 0
        self.count[:] = 0
        self.written[:] = -1
        self.end = self.live = 0

    @property
    def capacity(self) -> int:
        return int(self.arena.shape[0])

    @property
    def points(self) -> int:
        return int(self.count.sum())

    def nbytes(self) -> int:
        return (
            self.capacity + self.offset.nbytes + self.length.nbytes + self.count.nbytes + self.written.nbytes
        )

    @staticmethod
    def nbytes_for(max_rows: int) -> int:
        """Bytes of the per-row tables (the arena comes on top)."""
        return max_rows * BYTES_PER_COLD_ROW

    def rows(self) -> np.ndarray:
        """Rows holding a blob (int64, ascending)."""
        return np.flatnonzero(self.count)

    def room(self) -> int:
        """Bytes a blob may take at the arena's end without compacting."""
        return self.capacity - self.end

    def put(self, row: int, blob: np.ndarray) -> None:
        size = blob.shape[0]
        if self.count[row]:
            raise ValueError(f"chunk row {row} already holds a packed blob")
        if size > self.room():
            raise ValueError(f"cold arena has {self.room()} bytes left at its end, blob needs {size}")
        self.arena[self.end : self.end + size] = blob
        self.offset[row], self.length[row], self.count[row] = self.end, size, blob_count(blob)
        self.end += size
        self.live += size

    def get(self, row: int) -> np.ndarray:
        """The row's blob (a view into the arena: copy it before changing the store)."""
        return self.arena[self.offset[row] : self.offset[row] + self.length[row]]

    def drop(self, row: int) -> int:
        """Forget the row's blob; returns the points it held."""
        n = int(self.count[row])
        self.live -= int(self.length[row])
        self.offset[row] = self.length[row] = self.count[row] = 0
        return n

    def compact(self) -> None:
        """Move the live blobs to the arena's start, in arena order (in place)."""
        rows = self.rows()
        rows = rows[np.argsort(self.offset[rows], kind="stable")]
        fast = fast_kernels()
        if fast is not None:
            self.end = int(fast.compact_kernel(self.arena, rows, self.offset, self.length))
            return
        at = 0
        for row in rows.tolist():
            start, size = int(self.offset[row]), int(self.length[row])
            if start != at:
                self.arena[at : at + size] = self.arena[start : start + size]  # overlap-safe copy
                self.offset[row] = at
            at += size
        self.end = at

    def resize(self, capacity: int) -> None:
        """A new arena of ``capacity`` bytes holding the live blobs compacted (capacity >= live)."""
        if capacity < self.live:
            raise ValueError(f"cold arena of {capacity} bytes cannot hold {self.live} bytes of blobs")
        self.compact()
        arena = np.zeros(capacity, dtype=np.uint8)
        arena[: self.end] = self.arena[: self.end]
        self.arena = arena

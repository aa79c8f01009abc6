"""Compiled (numba) kernels for memory's frame loop, each the twin of a torch path, bit for bit.

`runtime.memory.splat_fast` holds the splat kernels (with the render's `render_split`: the chunks'
members gathered, taken into the camera frame, biased and splatted, over two threads, re-exported
here); this module the rest of a render and an ingest that touch every candidate or every pixel:

* `frustum_kernel`: `ChunkIndex.in_frustum`'s test of the chunk boxes against the view pyramid;
* `members_kernel`: `ChunkIndex.members` (with a point count): the chunks' members in ascending
  order, through a bitmap of the points instead of a mask and a nonzero (or a sort);
* `to_camera_kernel`: `SpatialMemory._to_camera` (world points into the camera frame);
* `compose_kernel`, `env_fill_kernel`: `splat.compose_render`'s gathers of the winners' attributes
  and its fill of the holes from the environment map (the holes' texels stay torch's: its float32
  trigonometry rounds as it does);
* `touch_kernel`: `SpatialMemory._touch` (points, their chunks and environment texels marked seen);
* `beyond_kernel`, `addable_kernel`, `infinite_kernel`: the per-pixel masks of `SpatialMemory.ingest`;
* `any_kernel`, `write_view_kernel`: `EnvironmentMap.write_view` once the texel -> pixel map is known;
* `decode_view_kernel`, `touch_packed_kernel`: quantised storage's per-point work on packed chunks
  (`quantised.decode_view`, `quantised.touch_packed`: the numpy code there is their reference);
  `compact_kernel`: `quantised.ColdStore.compact`'s moves, blob by blob;
* `free_space_kernel`: `splat.free_space_torch` (ingest's carving test).

Each takes numpy views of the memory's CPU tensors and writes through them. The callers dispatch as
`splat.splat_points` does (`runtime.memory.backend`): CPU tensors take these kernels unless
``MIRAGE_SPLAT_KERNEL=torch``; the torch code stays the reference and the fallback, and the tests
(tests/runtime/memory/test_kernels.py) hold the two equal. Kernels that could meet an index outside
its array check it and report it (the caller then runs the torch path, which raises as before)
rather than read or write past it.
"""

from __future__ import annotations

import threading

import numba
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

# the render's kernels live next to the splat passes they run (numba's cache checks a function's own file
# only, not its callees'); render_split is handed out here with the frame loop's other kernels
from runtime.memory.splat_fast import _JIT, render_split  # noqa: F401


@numba.njit(**_JIT)
def members_kernel(rows, start, size, pool, count):
    """(points int64 ascending, ok): the members of chunk ``rows`` as `ChunkIndex.members(rows, count)`.

    rows int64 [R]; start, size int64 [rows]; pool int32. ``members`` keeps repeats (a sort) when
    8 K < count for K gathered entries, else drops them (a mask); a bitmap of count bits gives both
    orders at once, and the rare repeat on the sort branch, like an entry outside [0, count), makes
    it answer ok=False (the caller takes the torch path), as does a row outside the table.
    """
    words = (count + 63) >> 6
    bits = np.zeros(max(words, 1), np.uint64)
    total = 0
    distinct = 0
    for j in range(rows.shape[0]):
        row = rows[j]
        if row < 0 or row >= min(start.shape[0], size.shape[0]):
            return np.empty(0, np.int64), False
        first = start[row]
        end = first + size[row]
        total += end - first
        for q in range(first, end):
            p = np.int64(pool[q])
            if p < 0 or p >= count:
                return np.empty(0, np.int64), False
            w = p >> 6
            b = np.uint64(1) << np.uint64(p & 63)
            old = bits[w]
            distinct += (old & b) == 0
            bits[w] = old | b
    if distinct != total and 8 * total < count:
        return np.empty(0, np.int64), False
    out = np.empty(distinct, np.int64)
    k = 0
    for w in range(words):
        word = bits[w]
        while word != 0:
            out[k] = (w << 6) + np.int64(trailing_zeros(word))
            k += 1
            word &= word - np.uint64(1)
    return out, True


@numba.njit(**_JIT)
def frustum_kernel(rows, lo, hi, normals, offsets):
    """`ChunkIndex.in_frustum`'s box test: the ``rows`` (int64, in order) whose AABB [lo, hi] (float32
    [rows, 3]) has, for every plane (float64 ``normals`` [P, 3], ``offsets`` [P]), its farthest-in
    corner c on the inner side: (c0 n0 + c1 n1) + c2 n2 + d >= 0 in float64 (torch's sum over the
    last axis of three, in its order)."""
    out = np.empty(rows.shape[0], np.int64)
    k = 0
    for j in range(rows.shape[0]):
        row = rows[j]
        inside = True
        for i in range(normals.shape[0]):
            n0 = normals[i, 0]
            n1 = normals[i, 1]
            n2 = normals[i, 2]
            c0 = np.float64(hi[row, 0] if n0 > 0 else lo[row, 0])
            c1 = np.float64(hi[row, 1] if n1 > 0 else lo[row, 1])
            c2 = np.float64(hi[row, 2] if n2 > 0 else lo[row, 2])
            if not (c0 * n0 + c1 * n1 + c2 * n2 + offsets[i] >= 0):
                inside = False
                break
        if inside:
            out[k] = row
            k += 1
    return out[:k].copy()


@numba.njit(**_JIT)
def to_camera_kernel(xyz, rot, trans):
    """World points xyz float32 [N, 3] in the camera frame: float32 [3, N], row i ((r_i0 x + r_i1 y) +
    r_i2 z) + t_i (rot float32 [3, 3], trans float32 [3]), as `SpatialMemory._to_camera` computes."""
    n = xyz.shape[0]
    out = np.empty((3, n), np.float32)
    for i in range(3):
        r0 = rot[i, 0]
        r1 = rot[i, 1]
        r2 = rot[i, 2]
        t = trans[i]
        for j in range(n):
            out[i, j] = r0 * xyz[j, 0] + r1 * xyz[j, 1] + r2 * xyz[j, 2] + t
    return out


@numba.njit(**_JIT)
def compose_kernel(
    index, rgb, confidence, object_id, provenance, out_rgb, out_conf, out_id, out_prov, out_cov, holes,
    gather_rgb,
):  # fmt: skip
    """`compose_render`'s gathers: per pixel q of ``index`` (int64 [HW], memory indices, -1 none) the
    winner's colour / 255 (float32 [HW, 3]; only when ``gather_rgb``, else out_rgb is left as it is:
    the splat's fused colour), confidence bits (int16 [HW]: the float16's, widened by the caller),
    object id, provenance and coverage 1, or zeros where no point won; the pixels no point won go to
    ``holes`` (int64 [HW], ascending). Returns the number of holes, or -1 when an index lies past the
    points (torch's gather raises there)."""
    points = min(rgb.shape[0], confidence.shape[0], object_id.shape[0], provenance.shape[0])
    scale = np.float32(255.0)
    k = 0
    for q in range(index.shape[0]):
        p = index[q]
        if p >= points:
            return -1
        if p >= 0:
            if gather_rgb:
                out_rgb[q, 0] = np.float32(rgb[p, 0]) / scale
                out_rgb[q, 1] = np.float32(rgb[p, 1]) / scale
                out_rgb[q, 2] = np.float32(rgb[p, 2]) / scale
            out_conf[q] = confidence[p]
            out_id[q] = object_id[p]
            out_prov[q] = provenance[p]
            out_cov[q] = 1.0
        else:
            if gather_rgb:
                out_rgb[q, 0] = 0.0
                out_rgb[q, 1] = 0.0
                out_rgb[q, 2] = 0.0
            out_conf[q] = 0
            out_id[q] = 0
            out_prov[q] = 0
            out_cov[q] = 0.0
            holes[k] = q
            k += 1
    return k


@numba.njit(**_JIT)
def env_fill_kernel(holes, texel, env_last, env_rgb, out_rgb, out_depth, out_cov, out_conf, out_texel):
    """`compose_render`'s environment fill: hole pixel holes[j] (flat) whose texel texel[j] is filled
    shows the texel's colour / 255 at depth +inf, coverage and confidence 1. Returns False, having
    changed nothing, when a texel lies outside the map (torch raises there)."""
    texels = env_last.shape[0]
    for j in range(texel.shape[0]):
        if texel[j] < -texels or texel[j] >= texels:
            return False
    scale = np.float32(255.0)
    for j in range(texel.shape[0]):
        t = texel[j]
        if t < 0:  # torch reads a negative index from the end
            t += texels
        if env_last[t] >= 0:
            q = holes[j]
            out_rgb[q, 0] = np.float32(env_rgb[t, 0]) / scale
            out_rgb[q, 1] = np.float32(env_rgb[t, 1]) / scale
            out_rgb[q, 2] = np.float32(env_rgb[t, 2]) / scale
            out_depth[q] = np.inf
            out_cov[q] = 1.0
            out_conf[q] = 1.0
            out_texel[q] = texel[j]
    return True


@numba.njit(**_JIT)
def touch_kernel(
    index, last_seen, hit_count, point_chunk, chunk_last, env_texel, env_last, frame_index, seen
):
    """`SpatialMemory._touch`: the points of ``index`` (int64 [HW], < 0 none; repeats allowed) take
    last_seen = frame_index and hit_count + 1 (once each, as torch's gather-then-scatter does), their
    chunks' newest last_seen rises to frame_index, and filled environment texels of ``env_texel``
    (int64 [HW], < 0 none) take frame_index. Returns False, having changed nothing, where torch would
    raise (an index past its array). seen: uint64 work space of at least ceil(points / 64) words."""
    points = min(last_seen.shape[0], hit_count.shape[0], point_chunk.shape[0])
    rows = chunk_last.shape[0]
    for q in range(index.shape[0]):
        p = index[q]
        if p >= points or (p >= 0 and (point_chunk[p] < 0 or point_chunk[p] >= rows)):
            return False
    texels = env_last.shape[0]
    for q in range(env_texel.shape[0]):
        if env_texel[q] >= texels:
            return False
    seen[: (points + 63) >> 6] = 0
    frame = np.int32(frame_index)
    # neighbouring pixels mostly show neighbouring points of one chunk (and one texel): the bitmap
    # word and the chunk row in hand are updated in registers, written back when another comes
    word = -1
    bits = np.uint64(0)
    last_row = -1
    for q in range(index.shape[0]):
        p = index[q]
        if p >= 0:
            last_seen[p] = frame
            w = p >> 6
            if w != word:
                if word >= 0:
                    seen[word] = bits
                word = w
                bits = seen[w]
            bit = np.uint64(1) << np.uint64(p & 63)
            if bits & bit == 0:  # a repeat keeps the count its first visit gave
                bits |= bit
                hit_count[p] = hit_count[p] + np.int32(1)
            row = point_chunk[p]
            if row != last_row:
                chunk_last[row] = max(chunk_last[row], frame)
                last_row = row
    if word >= 0:
        seen[word] = bits
    last_texel = -1
    for q in range(env_texel.shape[0]):
        t = env_texel[q]
        if t >= 0 and t != last_texel:
            if env_last[t] >= 0:
                env_last[t] = frame
            last_texel = t
    return True


@numba.njit(**_JIT)
def beyond_kernel(depth, limit):
    """``torch.where(depth > limit, inf, depth)`` (float32 [P], a new array; limit float32)."""
    out = np.empty_like(depth)
    for q in range(depth.shape[0]):
        d = depth[q]
        out[q] = np.inf if d > limit else d
    return out


@numba.njit(**_JIT)
def addable_kernel(depth, mask):
    """``mask & (depth > 0) & isfinite(depth)`` (bool [P], a new array): the pixels ingest may add."""
    out = np.empty(depth.shape[0], np.bool_)
    for q in range(depth.shape[0]):
        d = depth[q]
        out[q] = mask[q] and d > 0 and np.isfinite(d)
    return out


@numba.njit(**_JIT)
def infinite_kernel(depth, mask):
    """``(depth == inf) & mask`` (bool [P], a new array): the pixels ingest sends to the environment."""
    out = np.empty(depth.shape[0], np.bool_)
    for q in range(depth.shape[0]):
        out[q] = depth[q] == np.inf and mask[q]
    return out


@numba.njit(**_JIT)
def any_kernel(flags):
    """Whether any entry of the bool array ``flags`` is set (torch's ``any``, stopping at the first)."""
    for q in range(flags.shape[0]):
        if flags[q]:
            return True
    return False


@numba.njit(**_JIT)
def write_view_kernel(
    texels, pix, at_infinity, rgb, env_rgb, env_last, env_provenance, frame_index, overwrite, provenance
):
    """`EnvironmentMap.write_view` past its texel -> pixel map: texel texels[j] (distinct, ascending)
    whose pixel pix[j] is at infinity is marked seen, and takes the pixel's colour and ``provenance``
    if ``overwrite`` or it was empty. Returns (texels that took a colour, filled texels after)."""
    frame = np.int32(frame_index)
    source = np.uint8(provenance)
    written = 0
    for j in range(texels.shape[0]):
        src = pix[j]
        if at_infinity[src]:
            t = texels[j]
            if overwrite or env_last[t] < 0:
                env_rgb[t, 0] = rgb[src, 0]
                env_rgb[t, 1] = rgb[src, 1]
                env_rgb[t, 2] = rgb[src, 2]
                env_provenance[t] = source
                written += 1
            env_last[t] = frame
    filled = 0
    for t in range(env_last.shape[0]):
        filled += np.int64(env_last[t] >= 0)
    return written, filled


_local = threading.local()


@numba.njit(**_JIT)
def decode_view_kernel(
    arena, first, n, position, colour, age, wide, palette, p, corner, step, radius_table, confidence_bits,
    xyz, radius, provenance, rgb, confidence, object_id,
):  # fmt: skip
    """`quantised.decode_view` per point: blob i's n[i] points go to [first[i], first[i] + n[i]) of
    the outputs. position, colour, age, palette: the sections' arena offsets (int64 [R]); wide: 2-byte
    object indices; p: palette lengths; corner: float64 [R, 3] the voxel corners (cells * chunk size);
    step: chunk size / 65535; radius_table: float32 [256]; confidence_bits: the float16 bits [64] (and
    ``confidence`` is the output's uint16 view). Positions are float64 corner + q step, rounded to
    float32, as `quantised._positions` computes them."""
    for i in range(first.shape[0] - 1):
        m, pos, col, base = n[i], position[i], colour[i], first[i]
        for j in range(m):
            k = base + j
            for a in range(3):
                at = pos + 2 * (a * m + j)
                q = np.int64(arena[at]) | (np.int64(arena[at + 1]) << 8)
                xyz[k, a] = np.float32(corner[i, a] + np.float64(q) * step)
            at = col + 3 * j
            rgb[k, 0], rgb[k, 1], rgb[k, 2] = arena[at], arena[at + 1], arena[at + 2]
            radius[k] = radius_table[arena[col + 3 * m + j]]
            meta = arena[col + 4 * m + j]
            provenance[k] = meta & np.uint8(3)
            confidence[k] = confidence_bits[meta >> np.uint8(2)]
            if wide[i]:
                at = age[i] + 2 * m + 2 * j
                index = np.int64(arena[at]) | (np.int64(arena[at + 1]) << 8)
            else:
                index = np.int64(arena[col + 6 * m + j])
            at = palette[i] + 4 * min(index, p[i] - 1)
            v = np.int64(arena[at]) | (np.int64(arena[at + 1]) << 8) | (np.int64(arena[at + 2]) << 16)
            v |= np.int64(arena[at + 3]) << 24
            object_id[k] = v - (np.int64(1) << 32) if v >= (np.int64(1) << 31) else v


@numba.njit(**_JIT)
def touch_packed_kernel(arena, age, colour, n, shift, ref, row, point, frame_index):
    """`quantised.touch_packed` per point: blob r's ages grow by shift[r] (saturating at 65535); point
    t (point[t] of blob row[t], each once) gets age ref[row[t]] - frame_index (clipped to 0..65535) and
    hit count + 1 (saturating at 255). age, colour: the sections' arena offsets (int64 [R])."""
    for r in range(age.shape[0]):
        s = shift[r]
        if s > 0:
            for j in range(n[r]):
                at = age[r] + 2 * j
                v = min((np.int64(arena[at]) | (np.int64(arena[at + 1]) << 8)) + s, 65535)
                arena[at], arena[at + 1] = v & 0xFF, v >> 8
    for t in range(point.shape[0]):
        r, j = row[t], point[t]
        at = age[r] + 2 * j
        v = min(max(ref[r] - frame_index, 0), 65535)
        arena[at], arena[at + 1] = v & 0xFF, v >> 8
        at = colour[r] + 5 * n[r] + j
        arena[at] = min(np.int64(arena[at]) + 1, 255)


@numba.njit(**_JIT)
def compact_kernel(arena, rows, offset, length):
    """`quantised.ColdStore.compact`: the blobs of ``rows`` (in arena order) moved to the arena's start,
    in that order, in place (each moves towards the start, so a forward copy never overwrites bytes
    still to be read); ``offset`` is updated. Returns the end of the last blob."""
    at = np.int64(0)
    for row in rows:
        start, size = offset[row], np.int64(length[row])
        if start != at:
            for i in range(size):
                arena[at + i] = arena[start + i]
            offset[row] = at
        at += size
    return at


def bitmap_workspace(bits: int) -> np.ndarray:
    """This thread's uint64 scratch of at least ``bits`` bits."""
    words = (bits + 63) >> 6
    ws = getattr(_local, "bitmap", None)
    if ws is None or ws.shape[0] < words:
        ws = np.empty(max(1024, words + words // 4), np.uint64)
        _local.bitmap = ws
    return ws


@numba.njit(**_JIT)
def free_space_kernel(x, y, z, radius, depth, fx, fy, cx, cy, near, tolerance, u_end, v_end, width):
    """`splat.free_space_torch` bit for bit: bool [N], the points an observation saw through.

    x, y, z, radius: float32 [N]; depth float32 [H * W] (flat); fx .. tolerance float32 (near and
    tolerance rounded to float32 as torch rounds a Python scalar); u_end, v_end: float32(W - 0.5),
    float32(H - 0.5).
    """
    n = z.shape[0]
    height = depth.shape[0] // width
    zero = np.float32(0.0)
    two = np.float32(2.0)
    lo = np.float32(-0.5)
    carve = np.zeros(n, np.bool_)
    for i in range(n):
        zi = z[i]
        u = x[i] / zi * fx + cx
        v = y[i] / zi * fy + cy
        if not (zi > near and u > lo and u < u_end and v > lo and v < v_end):
            continue
        x0 = np.int64(np.floor(u))
        y0 = np.int64(np.floor(v))
        xa = min(max(x0, 0), width - 1)
        xb = min(x0 + 1, width - 1)
        ya = min(max(y0, 0), height - 1) * width
        yb = min(y0 + 1, height - 1) * width
        # torch.minimum / maximum propagate nan (and nan fails every test below)
        z_obs = _min_nan(_min_nan(_min_nan(depth[ya + xa], depth[ya + xb]), depth[yb + xa]), depth[yb + xb])
        if not z_obs > zero:
            continue
        if z_obs == np.inf:
            carve[i] = True
            continue
        a = tolerance * z_obs
        b = two * radius[i]
        if a != a or b != b:
            continue
        carve[i] = z_obs - zi > max(a, b)
    return carve


@numba.njit(inline="always", **_JIT)
def _min_nan(a, b):
    return a if a < b or a != a else b

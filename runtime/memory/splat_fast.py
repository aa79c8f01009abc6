"""Compiled (numba) twins of the torch kernels in `runtime.memory.splat`, bit for bit.

`splat_kernel` is `splat.splat_points_torch` with plain loops over the points, one thread, GIL
released. It reproduces the torch kernel, not merely the rule: every float32 operation is the one
torch performs, in the same order (u = x / z * fx + cx, ...), with every constant a float32 (in numba
a float32 mixed with a Python float or an int becomes a float64, so constants are made float32
first) and no fused multiply-add (numba's default, no fastmath); each point's fragments are the cells
of the very window torch builds for its footprint bucket (side floor(2 ext) + 1, placed as
`splat._fragments` places it) that pass the same test, |px - u| <= ext with px inside the image;
pass 1 takes the minimum of the test depth's float32 bits read as int32 (what torch's
``scatter_reduce(amin)`` on the int32 view does); pass 2 keeps the least int64 key
((floor(dy^2 2^16) << 32) + local index) + (floor(dx^2 2^16) << 32) among the fragments with test
depth <= zmin * float32(1 + depth_tolerance), where the point's own index stands for its local index
(the same order). Only the order in which fragments are visited differs, and both reductions are
order-free minima. The projection, cull and pixel range of the usual sub-pixel splat run first in a
branch-free loop over all points (it vectorises); the passes then visit the points in view.

`render_kernel` is `SpatialMemory._render`'s splat in one call: it reads the members of the chunks in
view straight from the chunk index (in the chunks' order, not ascending), takes them into the camera
frame as ``SpatialMemory._to_camera`` does, gives generated points their depth bias and runs the same
passes, with each point's memory index as its tie-break (the order the ascending candidates of the
torch path give); its winners come back as memory indices.

``error_model="numpy"`` keeps IEEE division (x / 0 is inf or nan, as in torch, where numba's default
would raise). Work arrays are kept per thread (`workspaces.workspace`): allocating them afresh each call costs
more, in page faults, than the kernel. The first call in a process compiles (a few seconds) unless
``cache=True`` finds the machine code in ``__pycache__`` next to this file (then well under a second).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from runtime.memory.workspaces import release_render_workspace, render_workspace

_NO_KEY = np.iinfo(np.int64).max
_LOW32 = 0xFFFFFFFF
_F32_INF_BITS = 0x7F800000
BLEND_SCALE = 65536.0
BLEND_EPS = 0.0625
"""A fragment's colour-fusion weight is floor(tx ty (BLEND_SCALE / a^2) / (dx^2 + dy^2 + BLEND_EPS))
(`splat` module docstring)."""
FUSION_STEP_PX = 2
FUSION_REACH = 2.0
FUSION_CAP = 1.2
"""The fused front's reach (`splat.fusion_thresholds`; the same values, held equal by a test)."""


_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}  # numpy: x / 0 is inf / nan, as in torch


@numba.njit(inline="always", **_JIT)
def _quad(c0, c1, r0, r1, width, hw):
    """Flat pixels of a splat covering [c0, c1] x [r0, r1], at most 2 x 2: the four corners, with the
    spare slots hw, hw + 1, hw + 2 standing in for the ones a narrower splat does not have."""
    p00 = r0 * width + c0
    p01 = p00 + 1 if c1 > c0 else hw
    p10 = p00 + width if r1 > r0 else hw + 1
    p11 = p00 + width + 1 if c1 > c0 and r1 > r0 else hw + 2
    return p00, p01, p10, p11


@numba.njit(inline="always", **_JIT)
def _offer(kbuf, zmin, p, key, zt, tolerance):
    """Pass 2 at pixel p: keep ``key`` if the fragment is on the front surface and its key is lower."""
    cur = kbuf[p]
    kbuf[p] = key if zt <= zmin[p] * tolerance and key < cur else cur


@numba.njit(**_JIT)
def splat_kernel(
    x, y, z, radius, bias, has_bias, fx, fy, cx, cy, f_mean, near, max_r, tolerance, width, height,
    pu, pv, pz, ranges, zbits, kbuf, rgb, has_rgb,
):  # fmt: skip
    """Winners of the splat rule: (index int64 [H, W], depth float32 [H, W], points in view, colour
    float32 [H, W, 3]: the front surface's fused colour when ``has_rgb`` (rgb uint8 [N, 3] the points'
    colours), else zeros [0, 0, 3]).

    x, y, z, radius, bias: float32 [N] C-contiguous (bias is read only when ``has_bias``); fx .. near,
    max_r (= float32(max_radius_px)) and tolerance (= float32(1 + depth_tolerance)) are float32.
    Work space (contents ignored, overwritten): pu, pv, pz float32 [>= N], ranges int32 [5, >= N],
    zbits int32 [>= H W + 3], kbuf int64 [>= H W + 3].
    """
    hw = width * height
    wsum = np.zeros(hw + 3 if has_rgb else 0, np.int64)
    csum = np.zeros(3 * (hw + 3) if has_rgb else 0, np.int64)
    if has_rgb:
        m, s = splat_passes(
            x, y, z, radius, bias, has_bias, None, fx, fy, cx, cy, f_mean, near, max_r, tolerance, width, height,
            pu, pv, pz, ranges, zbits, kbuf, rgb, wsum, csum,
        )  # fmt: skip
    else:
        m, s = splat_passes(
            x, y, z, radius, bias, has_bias, None, fx, fy, cx, cy, f_mean, near, max_r, tolerance, width, height,
            pu, pv, pz, ranges, zbits, kbuf, None, wsum, csum,
        )  # fmt: skip
    index = np.full(hw, -1, np.int64)
    depth = np.zeros(hw, np.float32)
    colour = np.zeros((0, 0, 3), np.float32)
    if s > 0:
        for p in range(hw):
            key = kbuf[p]
            if key != _NO_KEY:
                win = key & _LOW32
                index[p] = win
                depth[p] = z[win]
    if has_rgb:
        if s == 0:
            kbuf[:hw] = _NO_KEY
        colour = blended_colour(kbuf, wsum, csum, rgb, hw).reshape(height, width, 3)
    return index.reshape(height, width), depth.reshape(height, width), m, colour


@numba.njit(**_JIT)
def splat_passes(
    x, y, z, radius, bias, has_bias, ids, fx, fy, cx, cy, f_mean, near, max_r, tolerance, width, height,
    pu, pv, pz, ranges, zbits, kbuf, rgb, wsum, csum,
):  # fmt: skip
    """The two passes of `splat_kernel`: (points in view m, points in view with fragments s); the
    second fuses the front surface's colours into wsum, csum when ``rgb`` is not None (`_select`).

    Leaves, when s > 0, kbuf[p] (p < H W) the least key of pixel p, _NO_KEY where none: the key's
    low 32 bits are the winner's index i (< 2**32) when ``ids`` is None, else ids[i] (int64 [N],
    distinct, in [0, 2**32)): equal distances go to the lower index, which orders the points as
    their ranks among those in view (torch's local index) do, or to the lower id.
    """
    n = z.shape[0]
    zbits[: width * height + 3] = _F32_INF_BITS  # 3 spare slots past the image
    m, s = _footprints(x, y, z, radius, bias, has_bias, n, fx, fy, cx, cy, f_mean, near, max_r, width, height,
                       pu, pv, pz, ranges)  # fmt: skip
    _front(n, ranges, pz, zbits, width, height)
    if s == 0:
        return m, s
    kbuf[: width * height + 3] = _NO_KEY
    fthr = np.empty(width * height + 3 if rgb is not None else 0, np.float32)
    if rgb is not None:
        fusion_front(zbits, tolerance, width, height, fthr)
    _select(n, pu, pv, pz, ranges, ids, zbits, kbuf, tolerance, width, height, z, radius, f_mean, max_r,
            rgb, wsum, csum, fthr, bias, has_bias)  # fmt: skip
    return m, s


@numba.njit(**_JIT)
def _footprints(
    x, y, z, radius, bias, has_bias, n, fx, fy, cx, cy, f_mean, near, max_r, width, height, pu, pv, pz, ranges
):  # fmt: skip
    """Pass 1 of the splat rule without the depth test: each of the first n points' projection (pu, pv),
    test depth (pz) and clipped pixel window (ranges[:4]), flag ranges[4] (0 culled or no pixel, else
    in view). Returns (points in view m, of them with pixels s). Depends on each point alone, so a
    block of points gives the same entries as the whole set."""
    zero = np.float32(0.0)
    half_px = np.float32(0.5)
    one = np.float32(1.0)
    two = np.float32(2.0)
    last_col = np.float32(width - 1)
    last_row = np.float32(height - 1)
    last_c = np.int32(width - 1)
    last_r = np.int32(height - 1)

    # pass 1a, branch-free (so it vectorises): project every point (u, v and its test depth), cull it
    # (torch's in_view) and, for the usual sub-pixel splat, find its pixels.
    #
    # torch's window (splat._fragments): side j + 1 for footprint bucket j = floor(2 ext), and its
    # test |px - u| <= ext with px in the image. px - u rounds monotonically in px, so the window
    # cells failing px - u >= -ext are a prefix and those failing px - u <= ext a suffix; the cells
    # are integer-valued floats, exact below 2^24, so the fragments are the pixels [c0, c1] x
    # [r0, r1] (the window less that prefix and suffix, clipped to the image), dx = float32(c) - u.
    # The usual splat has side 2 (0.5 <= ext < 1: window floor(u) + {0, 1}); flags[i] is 0 for a
    # culled point, 1 for an in-view one of side 2 (its clipped pixels in ranges[:4, i]), 2 for an
    # in-view one of another side (left to pass 1b). Culled points compute on u = v = 0 (so that no
    # conversion meets a non-finite value) and their entries are never read.
    flags = ranges[4]
    for i in range(n):
        zi = z[i]
        u = x[i] / zi * fx + cx
        v = y[i] / zi * fy + cy
        e = radius[i] * f_mean / zi
        pu[i] = u
        pv[i] = v
        pz[i] = zi * (bias[i] + one) if has_bias else zi  # test depth
        # clamp(0, max) then clamp(min=0.5): max(min(max(e, 0), max_r), 0.5) wherever e is a number (a
        # NaN half-size stays NaN through torch's clamp, and such a point is culled)
        ext = e if e > zero else zero
        ext = ext if ext < max_r else max_r
        ext = ext if ext > half_px else half_px
        inview = (
            (zi > near) & (e == e) & (u >= -ext) & (u <= ext + last_col) & (v >= -ext) & (v <= ext + last_row)
        )
        us = u if inview else zero
        vs = v if inview else zero
        bu = np.floor(us)
        bv = np.floor(vs)
        c0 = np.int32(bu) + np.int32(bu - us < -ext)
        c1 = np.int32(bu) + np.int32(1) - np.int32((bu + one) - us > ext)
        r0 = np.int32(bv) + np.int32(bv - vs < -ext)
        r1 = np.int32(bv) + np.int32(1) - np.int32((bv + one) - vs > ext)
        ranges[0, i] = c0 if c0 > 0 else np.int32(0)
        ranges[1, i] = c1 if c1 < last_c else last_c
        ranges[2, i] = r0 if r0 > 0 else np.int32(0)
        ranges[3, i] = r1 if r1 < last_r else last_r
        flags[i] = np.int32(inview) * (np.int32(1) + np.int32(ext * two >= two))

    # pass 1b: m counts the points in view, s those of them with fragments (the others' flags drop to
    # 0)
    m = 0
    s = 0
    for i in range(n):
        flag = flags[i]
        if flag == 0:
            continue
        m += 1
        if flag == 1:
            c0 = np.int64(ranges[0, i])
            c1 = np.int64(ranges[1, i])
            r0 = np.int64(ranges[2, i])
            r1 = np.int64(ranges[3, i])
        else:  # a wider window: the same test over its side, cell by cell
            u = pu[i]
            v = pv[i]
            ext = max(min(max(radius[i] * f_mean / z[i], zero), max_r), half_px)
            side = np.int64(np.floor(ext * two)) + 1
            half = np.float32(side // 2)
            if side % 2 == 1:
                bu = np.floor(u + half_px) - half
                bv = np.floor(v + half_px) - half
            else:
                bu = np.floor(u) - (half - one)
                bv = np.floor(v) - (half - one)
            before_u = 0
            after_u = 0
            before_v = 0
            after_v = 0
            for o in range(side):
                du = (bu + np.float32(o)) - u
                before_u += du < -ext
                after_u += du > ext
                dv = (bv + np.float32(o)) - v
                before_v += dv < -ext
                after_v += dv > ext
            c0 = max(np.int64(bu) + before_u, 0)
            c1 = min(np.int64(bu) + (side - 1 - after_u), width - 1)
            r0 = max(np.int64(bv) + before_v, 0)
            r1 = min(np.int64(bv) + (side - 1 - after_v), height - 1)
            ranges[0, i] = c0
            ranges[1, i] = c1
            ranges[2, i] = r0
            ranges[3, i] = r1
        if c1 < c0 or r1 < r0:
            flags[i] = 0
            continue
        s += 1
    return m, s


@numba.njit(**_JIT)
def _front(n, ranges, pz, zbits, width, height):
    """The least test depth per pixel over the first n points (`_footprints`' output), compared as
    int32 bits (as torch does), folded into zbits (a minimum: the order of points does not matter)."""
    hw = width * height
    flags = ranges[4]
    ztbits = pz.view(np.int32)
    for i in range(n):
        if flags[i] == 0:
            continue
        c0 = np.int64(ranges[0, i])
        c1 = np.int64(ranges[1, i])
        r0 = np.int64(ranges[2, i])
        r1 = np.int64(ranges[3, i])
        bits = ztbits[i]
        if c1 - c0 <= 1 and r1 - r0 <= 1:  # up to 2 x 2 pixels: branch-free, absent ones go to spare slots
            p00, p01, p10, p11 = _quad(c0, c1, r0, r1, width, hw)
            zbits[p00] = min(zbits[p00], bits)
            zbits[p01] = min(zbits[p01], bits)
            zbits[p10] = min(zbits[p10], bits)
            zbits[p11] = min(zbits[p11], bits)
        else:
            for r in range(r0, r1 + 1):
                for c in range(c0, c1 + 1):
                    p = r * width + c
                    zbits[p] = min(zbits[p], bits)


@numba.njit(inline="always", **_JIT)
def _axis_slope(zmin, p, before_ok, after_ok, step, z):
    """`splat.fusion_thresholds`' g along one axis at pixel p: neighbours p - step, p + step
    (inside the image when before_ok / after_ok)."""
    zero = np.float32(0.0)
    inf = np.float32(np.inf)
    za = zmin[p + step if after_ok else p]
    zb = zmin[p - step if before_ok else p]
    has_a = after_ok and za < inf
    has_b = before_ok and zb < inf
    da = za - z if has_a else zero
    db = z - zb if has_b else zero
    if has_a and has_b:
        if (da > zero and db > zero) or (da < zero and db < zero):
            return min(abs(da), abs(db))
        return zero
    return abs(da) if has_a else abs(db)


@numba.njit(**_JIT)
def fusion_front(zbits, tolerance, width, height, fthr):
    """fthr[p] (float32 [>= H W + 3]): the deepest test depth that fuses colour at pixel p, as
    `splat.fusion_thresholds` computes it from the front depth (zbits read as float32); the spare
    slots past the image take zmin x tolerance."""
    zmin = zbits.view(np.float32)
    inf = np.float32(np.inf)
    reach = np.float32(FUSION_REACH)
    cap = np.float32(FUSION_CAP)
    cap = cap if cap > tolerance else tolerance  # never nearer than the winners' front
    k = FUSION_STEP_PX
    hw = width * height
    for r in range(height):
        for c in range(width):
            p = r * width + c
            z = zmin[p]
            if not z < inf:
                fthr[p] = z * tolerance
                continue
            gx = _axis_slope(zmin, p, c - k >= 0, c + k < width, k, z)
            gy = _axis_slope(zmin, p, r - k >= 0, r + k < height, k * width, z)
            g = gx if gx > gy else gy
            factor = (g / z) * reach + tolerance
            fthr[p] = z * (factor if factor < cap else cap)
    for p in range(hw, hw + 3):
        fthr[p] = zmin[p] * tolerance


@numba.njit(inline="always", **_JIT)
def _offer_fused(kbuf, zmin, fthr, p, key, zt, tolerance, deep, w, red, green, blue, wsum, csum):
    """`_offer`, and a fragment on the front, or (``deep``: its point has no depth bias) no deeper than
    fthr[p] (the fused front), adds weight w and w x colour to pixel p's sums."""
    front = zt <= zmin[p] * tolerance
    cur = kbuf[p]
    kbuf[p] = key if front and key < cur else cur
    fused = front | (deep & (zt <= fthr[p]))  # no short-circuit: the 2 x 2 path stays branch-free
    w = w if fused else np.int64(0)
    wsum[p] += w
    csum[3 * p] += w * red
    csum[3 * p + 1] += w * green
    csum[3 * p + 2] += w * blue


@numba.njit(inline="always", **_JIT)
def _w(tx, ty, norm, dx, dy):
    """A fragment's fusion weight: floor(tx ty norm / (dx^2 + dy^2 + BLEND_EPS)), in float32."""
    return np.int64(tx * ty * norm / (dx * dx + dy * dy + np.float32(BLEND_EPS)))


@numba.njit(inline="always", **_JIT)
def _tent(d, a):
    """1 - |d| / a: the fusion tent at offset d of a splat whose tent reaches a."""
    return np.float32(1.0) - abs(d) / a


@numba.njit(**_JIT)
def _select(
    n, pu, pv, pz, ranges, ids, zbits, kbuf, tolerance, width, height, z, rad, f_mean, max_r, rgb, wsum, csum,
    fthr, bias, has_bias,
):  # fmt: skip
    """Pass 2 over the first n points: among the front surface (test depth <= zmin * tolerance), the
    least key per pixel, folded into kbuf (a minimum of distinct keys: order does not matter). A
    point's tie-break is its index i, or ids[i] when ``ids`` is given.

    With ``rgb`` (uint8 [P, 3], a point's colour rgb[ids[i]], or rgb[i] without ids) the same pass
    fuses colour: every front fragment adds its weight `_w` (a = half-size + 1/2, tx = 1 - |dx| / a,
    ty likewise, norm = BLEND_SCALE / a^2; the half-size as `_footprints` computes it from z and rad)
    to wsum[p] and weight x colour to csum[3 p + k], over the fragments no deeper than fthr[p] (the
    fused front, `fusion_front`; unread without rgb; a point with a depth bias, bias[i] > 0 when
    ``has_bias``, fuses on the front only). Integer sums: any order, any split of the
    points among threads, gives the same totals."""
    scale = np.float32(65536.0)  # DIST_SCALE
    blend_scale = np.float32(BLEND_SCALE)
    zero = np.float32(0.0)
    half_px = np.float32(0.5)
    hw = width * height
    flags = ranges[4]
    zmin = zbits.view(np.float32)
    for i in range(n):
        if flags[i] == 0:
            continue
        u = pu[i]
        v = pv[i]
        zt = pz[i]
        tie = i if ids is None else ids[i]
        c0 = np.int64(ranges[0, i])
        c1 = np.int64(ranges[1, i])
        r0 = np.int64(ranges[2, i])
        r1 = np.int64(ranges[3, i])
        if rgb is not None:
            e = rad[i] * f_mean / z[i]
            ext = e if e > zero else zero
            ext = ext if ext < max_r else max_r
            ext = ext if ext > half_px else half_px
            a = ext + half_px
            norm = blend_scale / (a * a)
            q = tie
            deep = not has_bias or bias[i] == zero  # a biased point (a guess) keeps to the front
            red = np.int64(rgb[q, 0])
            green = np.int64(rgb[q, 1])
            blue = np.int64(rgb[q, 2])
        if c1 - c0 <= 1 and r1 - r0 <= 1:  # up to 2 x 2 pixels: branch-free, absent ones go to spare slots
            dx0 = np.float32(c0) - u
            qx0 = np.int64(dx0 * dx0 * scale) << 32
            dx1 = np.float32(c1) - u
            qx1 = np.int64(dx1 * dx1 * scale) << 32
            dy0 = np.float32(r0) - v
            ky0 = (np.int64(dy0 * dy0 * scale) << 32) + tie
            dy1 = np.float32(r1) - v
            ky1 = (np.int64(dy1 * dy1 * scale) << 32) + tie
            p00, p01, p10, p11 = _quad(c0, c1, r0, r1, width, hw)
            if rgb is None:
                _offer(kbuf, zmin, p00, ky0 + qx0, zt, tolerance)
                _offer(kbuf, zmin, p01, ky0 + qx1, zt, tolerance)
                _offer(kbuf, zmin, p10, ky1 + qx0, zt, tolerance)
                _offer(kbuf, zmin, p11, ky1 + qx1, zt, tolerance)
            else:
                tx0 = _tent(dx0, a)
                tx1 = _tent(dx1, a)
                ty0 = _tent(dy0, a)
                ty1 = _tent(dy1, a)
                _offer_fused(kbuf, zmin, fthr, p00, ky0 + qx0, zt, tolerance, deep, _w(tx0, ty0, norm, dx0, dy0),
                             red, green, blue, wsum, csum)  # fmt: skip
                _offer_fused(kbuf, zmin, fthr, p01, ky0 + qx1, zt, tolerance, deep, _w(tx1, ty0, norm, dx1, dy0),
                             red, green, blue, wsum, csum)  # fmt: skip
                _offer_fused(kbuf, zmin, fthr, p10, ky1 + qx0, zt, tolerance, deep, _w(tx0, ty1, norm, dx0, dy1),
                             red, green, blue, wsum, csum)  # fmt: skip
                _offer_fused(kbuf, zmin, fthr, p11, ky1 + qx1, zt, tolerance, deep, _w(tx1, ty1, norm, dx1, dy1),
                             red, green, blue, wsum, csum)  # fmt: skip
            continue
        for r in range(r0, r1 + 1):
            dy = np.float32(r) - v
            row = r * width
            key_y = (np.int64(dy * dy * scale) << 32) + tie
            if rgb is None:
                for c in range(c0, c1 + 1):
                    dx = np.float32(c) - u
                    _offer(kbuf, zmin, row + c, key_y + (np.int64(dx * dx * scale) << 32), zt, tolerance)
            else:
                ty = _tent(dy, a)
                for c in range(c0, c1 + 1):
                    dx = np.float32(c) - u
                    _offer_fused(kbuf, zmin, fthr, row + c, key_y + (np.int64(dx * dx * scale) << 32), zt, tolerance,
                                 deep, _w(_tent(dx, a), ty, norm, dx, dy), red, green, blue, wsum, csum)  # fmt: skip


@numba.njit(**_JIT)
def blended_colour(kbuf, wsum, csum, rgb, hw):
    """float32 [hw, 3] colour 0..1 per pixel: csum / wsum / 255 where wsum > 0, the winner's own colour
    (rgb[key's low 32 bits]) where the fused front has no weight (only far off-centre fragments of
    clamped splats), 0 where no point covers."""
    out = np.zeros((hw, 3), np.float32)
    inv = np.float32(255.0)
    for p in range(hw):
        key = kbuf[p]
        if key == _NO_KEY:
            continue
        w = wsum[p]
        if w > 0:
            for k in range(3):
                out[p, k] = np.float32(csum[3 * p + k] / w) / inv
        else:
            q = key & _LOW32
            for k in range(3):
                out[p, k] = np.float32(rgb[q, k]) / inv
    return out


@numba.njit(**_JIT)
def _gather_block(
    rows, start, size, pool, count, xyz, radius, provenance, generated, bias_other, bias_generated,
    rot, trans, j, q, x, y, z, rad, bias, ids,
):  # fmt: skip
    """Camera-space members from chunk ``rows[j]``, pool slot ``q`` on, until the block (x's length)
    is full or the rows end: (points gathered, next j, next q), or points = -1 when a member lies
    outside [0, count)."""
    r00, r01, r02 = rot[0, 0], rot[0, 1], rot[0, 2]
    r10, r11, r12 = rot[1, 0], rot[1, 1], rot[1, 2]
    r20, r21, r22 = rot[2, 0], rot[2, 1], rot[2, 2]
    t0, t1, t2 = trans[0], trans[1], trans[2]
    cap = x.shape[0]
    n = 0
    while j < rows.shape[0]:
        row = rows[j]
        if q < start[row]:
            q = start[row]
        end = start[row] + size[row]
        while q < end:
            if n == cap:
                return n, j, q
            p = np.int64(pool[q])
            if p < 0 or p >= count:
                return -1, j, q
            a = xyz[p, 0]
            b = xyz[p, 1]
            c = xyz[p, 2]
            x[n] = r00 * a + r01 * b + r02 * c + t0
            y[n] = r10 * a + r11 * b + r12 * c + t1
            z[n] = r20 * a + r21 * b + r22 * c + t2
            rad[n] = radius[p]
            bias[n] = bias_generated if provenance[p] == generated else bias_other
            ids[n] = p
            n += 1
            q += 1
        j += 1
        q = np.int64(-1)
    return n, j, q


@numba.njit(**_JIT)
def render_front(
    rows, start, size, pool, count, xyz, radius, provenance, generated, bias_other, bias_generated,
    rot, trans, fx, fy, cx, cy, f_mean, near, max_r, width, height,
    x, y, z, rad, bias, ids, pu, pv, pz, ranges, zbits,
):  # fmt: skip
    """First pass of `render_kernel` over the members of chunk ``rows``: zbits (initialised here) gets
    the least test depth per pixel. Returns (points in view m, of them with pixels s, members read
    or -1 when a member lies outside [0, count), blocks)."""
    zbits[: width * height + 3] = _F32_INF_BITS  # 3 spare slots past the image
    m = 0
    s = 0
    total = 0
    blocks = 0
    j = 0
    q = np.int64(-1)
    while True:
        n, j, q = _gather_block(
            rows, start, size, pool, count, xyz, radius, provenance, generated, bias_other, bias_generated,
            rot, trans, j, q, x, y, z, rad, bias, ids,
        )  # fmt: skip
        if n < 0:
            return 0, 0, -1, blocks
        if n == 0:
            break
        blocks += 1
        total += n
        mb, sb = _footprints(x, y, z, rad, bias, True, n, fx, fy, cx, cy, f_mean, near, max_r, width, height,
                             pu, pv, pz, ranges)  # fmt: skip
        m += mb
        s += sb
        _front(n, ranges, pz, zbits, width, height)
    return m, s, total, blocks


@numba.njit(**_JIT)
def render_select(
    rows, start, size, pool, count, xyz, radius, provenance, generated, bias_other, bias_generated,
    rot, trans, fx, fy, cx, cy, f_mean, near, max_r, tolerance, width, height,
    x, y, z, rad, bias, ids, pu, pv, pz, ranges, zbits, kbuf, kept, rgb, wsum, csum, fthr,
):  # fmt: skip
    """Second pass of `render_kernel`: kbuf (initialised here) gets the least key per pixel among the
    members of ``rows`` on the front surface of zbits (which may hold the front over more members
    than these: the two passes can be split among threads and their buffers merged by minimum).
    ``kept``: members read when `render_front` left this thread's work space holding all of them in
    one block (its footprints are reused), else 0 (they are gathered and projected again). The same
    blocks fuse the colours of the fused front (fthr: `fusion_front` of the merged zbits; rgb: the
    points' uint8 [P, 3]) into wsum, csum (`_select`; zeroed by the caller)."""
    kbuf[: width * height + 3] = _NO_KEY
    if kept > 0:
        _select(kept, pu, pv, pz, ranges, ids, zbits, kbuf, tolerance, width, height, z, rad, f_mean, max_r,
                rgb, wsum, csum, fthr, bias, True)  # fmt: skip
        return
    j = 0
    q = np.int64(-1)
    while True:
        n, j, q = _gather_block(
            rows, start, size, pool, count, xyz, radius, provenance, generated, bias_other, bias_generated,
            rot, trans, j, q, x, y, z, rad, bias, ids,
        )  # fmt: skip
        if n <= 0:
            break
        _footprints(x, y, z, rad, bias, True, n, fx, fy, cx, cy, f_mean, near, max_r, width, height,
                    pu, pv, pz, ranges)  # fmt: skip
        _select(n, pu, pv, pz, ranges, ids, zbits, kbuf, tolerance, width, height, z, rad, f_mean, max_r,
                rgb, wsum, csum, fthr, bias, True)  # fmt: skip


@numba.njit(**_JIT)
def render_winners(kbuf, xyz, rot, trans, width, height):
    """(index int64 [H, W], depth float32 [H, W]) from the least keys: the winner's memory index and
    its camera z, computed as the gathering does (the same float32 operations, so the same bits)."""
    r20, r21, r22 = rot[2, 0], rot[2, 1], rot[2, 2]
    t2 = trans[2]
    hw = width * height
    index = np.full(hw, -1, np.int64)
    depth = np.zeros(hw, np.float32)
    for p in range(hw):
        key = kbuf[p]
        if key != _NO_KEY:
            w = key & _LOW32
            index[p] = w
            depth[p] = r20 * xyz[w, 0] + r21 * xyz[w, 1] + r22 * xyz[w, 2] + t2
    return index.reshape(height, width), depth.reshape(height, width)


@numba.njit(**_JIT)
def render_kernel(
    rows, start, size, pool, count, xyz, radius, provenance, generated, bias_other, bias_generated,
    rot, trans, fx, fy, cx, cy, f_mean, near, max_r, tolerance, width, height,
    x, y, z, rad, bias, ids, pu, pv, pz, ranges, zbits, kbuf, rgb,
):  # fmt: skip
    """Winners of the splat rule over the members of chunk ``rows``: (index int64 [H, W] memory
    indices, -1 none; depth float32 [H, W]; points in view; members read; fused colour float32
    [H, W, 3] of the memory's colours ``rgb`` uint8 [P, 3]), as `splat_kernel` on
    the camera-space points of ``ChunkIndex.members(rows, count)``, or members read = -1 (nothing
    drawn) when a member lies outside [0, count).

    The members are read segment by segment (the chunks' order, not ascending): their memory index
    is the tie-break key (`splat_passes`' ``ids``), which orders ties as the ascending candidates'
    ranks do. rows int64 [R]; start, size int64 [rows]; pool int32 (the chunk index); xyz float32
    [P, 3], radius float32 [P], provenance uint8 [P] (the memory's arrays); a point of provenance
    ``generated`` takes depth bias ``bias_generated``, others ``bias_other`` (float32: what torch's
    bias product gives); rot float32 [3, 3], trans float32 [3]: world -> camera, applied as
    ((r0 x + r1 y) + r2 z) + t per row (what `SpatialMemory._to_camera` computes).

    Work space: x, y, z, rad, bias float32, ids int64 and pu, pv, pz float32, ranges int32 [5, B]
    for a block of B members, then zbits and kbuf (H W + 3). Members go through in blocks of B: the
    front depth per pixel over every block first (`render_front`), then the winners
    (`render_select`); both are minima, so blocks (or threads, each with its share of the rows)
    give the bits one pass over all members would. When the members fill more than one block, the
    second pass gathers and projects them again (the same operations, so the same values): the work
    space stays the size of a block however many points the view reaches.
    """
    m, s, total, blocks = render_front(
        rows, start, size, pool, count, xyz, radius, provenance, generated, bias_other, bias_generated,
        rot, trans, fx, fy, cx, cy, f_mean, near, max_r, width, height,
        x, y, z, rad, bias, ids, pu, pv, pz, ranges, zbits,
    )  # fmt: skip
    hw = width * height
    if total < 0:
        nothing = np.full(hw, -1, np.int64).reshape(height, width)
        return (
            nothing,
            np.zeros(hw, np.float32).reshape(height, width),
            0,
            -1,
            np.zeros((height, width, 3), np.float32),
        )
    kept = total if blocks == 1 else 0
    wsum = np.zeros(hw + 3, np.int64)
    csum = np.zeros(3 * (hw + 3), np.int64)
    if s == 0:
        kbuf[: hw + 3] = _NO_KEY
    else:
        fthr = np.empty(hw + 3, np.float32)
        fusion_front(zbits, tolerance, width, height, fthr)
        render_select(
            rows, start, size, pool, count, xyz, radius, provenance, generated, bias_other, bias_generated,
            rot, trans, fx, fy, cx, cy, f_mean, near, max_r, tolerance, width, height,
            x, y, z, rad, bias, ids, pu, pv, pz, ranges, zbits, kbuf, kept, rgb, wsum, csum, fthr,
        )  # fmt: skip
    index, depth = render_winners(kbuf, xyz, rot, trans, width, height)
    colour = blended_colour(kbuf, wsum, csum, rgb, hw).reshape(height, width, 3)
    return index, depth, m, total, colour


SPLIT_MIN_MEMBERS = 16384
"""`render_split` shares a render with a helper thread from this many members on."""
THREADS_ENV = "MIRAGE_RENDER_THREADS"
"""Set to 1 to render on the calling thread only (default: 2 where the machine has 2 cores or more)."""
_helper: dict[str, ThreadPoolExecutor] = {}
_helper_lock = threading.Lock()


def _render_threads() -> int:
    wanted = os.environ.get(THREADS_ENV, "")
    if wanted.strip():
        return max(1, min(2, int(wanted)))
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def _helper_pool() -> ThreadPoolExecutor:
    with _helper_lock:
        pool = _helper.get("pool")
        if pool is None:
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mirage-render")
            _helper["pool"] = pool
        return pool


class _BadMember(Exception):
    """A chunk segment lists a point past the count (the caller falls back, as `render_kernel`)."""


def render_split(rows, start, size, pool, count, xyz, radius, provenance, generated, bias_other, bias_generated,
                 rot, trans, fx, fy, cx, cy, f_mean, near, max_r, tolerance, width, height, rgb):  # fmt: skip
    """`render_kernel`'s result (the same bits), shared with a helper thread when the view's chunks
    hold at least SPLIT_MIN_MEMBERS members: each thread takes the rows holding half of them, the
    front depths of both are merged (minimum) before the winners pass (which both take the fused
    front's thresholds of, `fusion_front`), and the winners' keys are merged the same way. The kernels release the GIL, so on 2 cores the two halves run at once. One helper
    thread serves every caller; a caller's half runs there as one task (front, wait for the merged
    front, select), so callers never interleave inside the helper's work space."""
    hw = width * height
    front_args = (start, size, pool, count, xyz, radius, provenance, generated, bias_other, bias_generated,
                  rot, trans, fx, fy, cx, cy, f_mean, near, max_r)  # fmt: skip
    members = np.cumsum(size[rows]) if rows.shape[0] else np.zeros(0, np.int64)
    total = int(members[-1]) if members.shape[0] else 0
    if total < SPLIT_MIN_MEMBERS or rows.shape[0] < 2 or _render_threads() < 2:
        ws = render_workspace(hw)
        try:
            return render_kernel(rows, *front_args, tolerance, width, height, *ws, rgb)
        finally:
            release_render_workspace(ws)
    cut = min(max(int(np.searchsorted(members, total // 2)) + 1, 1), rows.shape[0] - 1)
    mine, theirs = rows[:cut], rows[cut:]
    front_done, merged = threading.Event(), threading.Event()
    shared: dict = {}

    def helper_half():
        try:
            ws = shared["ws"] = render_workspace(hw)
            shared["front"] = render_front(theirs, *front_args, width, height, *ws[:-1])
        finally:
            front_done.set()
        merged.wait()
        if shared.get("abort"):
            return None
        _, _, read, blocks = shared["front"]
        sums = shared["sums"] = (np.zeros(hw + 3, np.int64), np.zeros(3 * (hw + 3), np.int64))
        render_select(theirs, *front_args, tolerance, width, height, *ws[:-2], shared["zbits"], ws[-1],
                      read if blocks == 1 else 0, rgb, *sums, shared["fthr"])  # fmt: skip
        return ws[-1]

    future = _helper_pool().submit(helper_half)
    ws = None
    try:
        try:
            ws = render_workspace(hw)
            m_a, _, read_a, blocks_a = render_front(mine, *front_args, width, height, *ws[:-1])
            front_done.wait()
            m_b, _, read_b, _ = shared["front"]  # a KeyError here: the helper failed (its error follows)
            if read_a < 0 or read_b < 0:
                raise _BadMember
            zbits = ws[-2]
            np.minimum(zbits[: hw + 3], shared["ws"][-2][: hw + 3], out=zbits[: hw + 3])
            shared["zbits"] = zbits
            fthr = shared["fthr"] = np.empty(hw + 3, np.float32)  # the fused front, of the merged front
            fusion_front(zbits, tolerance, width, height, fthr)
            merged.set()
            wsum, csum = np.zeros(hw + 3, np.int64), np.zeros(3 * (hw + 3), np.int64)
            render_select(mine, *front_args, tolerance, width, height, *ws[:-2], zbits, ws[-1],
                          read_a if blocks_a == 1 else 0, rgb, wsum, csum, fthr)  # fmt: skip
            theirs_keys = future.result()
        except BaseException as exc:
            shared["abort"] = True
            merged.set()
            future.result()  # the helper's own error, if it had one, comes first
            if isinstance(exc, _BadMember):
                nothing = np.full(hw, -1, np.int64).reshape(height, width)
                blank = np.zeros((height, width, 3), np.float32)
                return nothing, np.zeros(hw, np.float32).reshape(height, width), 0, -1, blank
            raise
        kbuf = ws[-1]
        np.minimum(kbuf[: hw + 3], theirs_keys[: hw + 3], out=kbuf[: hw + 3])
        wsum += shared["sums"][0]  # integer sums: the split changes nothing
        csum += shared["sums"][1]
        index, depth = render_winners(kbuf, xyz, rot, trans, width, height)
        colour = blended_colour(kbuf, wsum, csum, rgb, hw).reshape(height, width, 3)
        return index, depth, m_a + m_b, read_a + read_b, colour
    finally:  # the helper is done with its work space here (its result was awaited)
        for used in (ws, shared.get("ws")):
            if used is not None:
                release_render_workspace(used)

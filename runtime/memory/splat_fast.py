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
depth <= zmin * float32(1 + depth_tolerance). Only the order in which fragments are visited differs,
and both reductions are order-free minima. `free_space_kernel` is `splat.free_space_torch` likewise.

``error_model="numpy"`` keeps IEEE division (x / 0 is inf or nan, as in torch, where numba's default
would raise). Work arrays are kept per thread (`workspace`): allocating them afresh each call costs
more, in page faults, than the kernel. The first call in a process compiles (a few seconds) unless
``cache=True`` finds the machine code in ``__pycache__`` next to this file (then well under a second).
"""

from __future__ import annotations

import threading

import numba
import numpy as np

_NO_KEY = np.iinfo(np.int64).max
_LOW32 = 0xFFFFFFFF
_F32_INF_BITS = 0x7F800000


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
    pu, pv, pz, ranges, sidx, zbits, kbuf,
):  # fmt: skip
    """Winners of the splat rule: (index int64 [H, W], depth float32 [H, W], points in view).

    x, y, z, radius, bias: float32 [N] C-contiguous (bias is read only when ``has_bias``); fx .. near,
    max_r (= float32(max_radius_px)) and tolerance (= float32(1 + depth_tolerance)) are float32.
    Work space (contents ignored, overwritten): pu, pv, pz float32 [>= N], ranges int32 [>= N, 4],
    sidx int64 [>= N], zbits int32 [>= H W + 3], kbuf int64 [>= H W + 3].
    """
    n = z.shape[0]
    zero = np.float32(0.0)
    half_px = np.float32(0.5)
    one = np.float32(1.0)
    two = np.float32(2.0)
    scale = np.float32(65536.0)  # DIST_SCALE
    last_col = np.float32(width - 1)
    last_row = np.float32(height - 1)
    hw = width * height

    # project every point (branch-free, so it vectorises): u, v and the half-size before the clamp
    for i in range(n):
        zi = z[i]
        pu[i] = x[i] / zi * fx + cx
        pv[i] = y[i] / zi * fy + cy
        pz[i] = radius[i] * f_mean / zi

    # cull (torch's in_view); m counts the survivors. A survivor's rank among them is its tie-break
    # (torch's local index). Only survivors with fragments are kept (s of them, compacted in place:
    # s <= i), in the same order, so their keys compare alike.
    zbits[: hw + 3] = _F32_INF_BITS  # 3 spare slots past the image
    ztbits = pz.view(np.int32)
    m = 0
    s = 0
    for i in range(n):
        zi = z[i]
        ext = pz[i]
        if not zi > near or ext != ext:  # a NaN half-size stays NaN through torch's clamp: culled
            continue
        ext = max(min(max(ext, zero), max_r), half_px)  # clamp(0, max) then clamp(min=0.5)
        u = pu[i]
        v = pv[i]
        if not (u >= -ext and u <= ext + last_col and v >= -ext and v <= ext + last_row):
            continue
        m += 1
        # torch's window (splat._fragments): side j + 1 for footprint bucket j = floor(2 ext), and its
        # test |px - u| <= ext with px in the image. px - u rounds monotonically in px, so the window
        # cells failing px - u >= -ext are a prefix and those failing px - u <= ext a suffix; the cells
        # are integer-valued floats, exact below 2^24, so the fragments are the pixels [c0, c1] x
        # [r0, r1] (the window less that prefix and suffix, clipped to the image), dx = float32(c) - u.
        side = np.int64(np.floor(ext * two)) + 1
        if side == 2:  # the usual sub-pixel splat: window floor(u) + {0, 1}
            bu = np.floor(u)
            bv = np.floor(v)
            c0 = np.int64(bu) + (bu - u < -ext)
            c1 = np.int64(bu) + 1 - ((bu + one) - u > ext)
            r0 = np.int64(bv) + (bv - v < -ext)
            r1 = np.int64(bv) + 1 - ((bv + one) - v > ext)
        else:
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
            c0 = np.int64(bu) + before_u
            c1 = np.int64(bu) + (side - 1 - after_u)
            r0 = np.int64(bv) + before_v
            r1 = np.int64(bv) + (side - 1 - after_v)
        c0 = max(c0, 0)
        c1 = min(c1, width - 1)
        r0 = max(r0, 0)
        r1 = min(r1, height - 1)
        if c1 < c0 or r1 < r0:
            continue
        pu[s] = u
        pv[s] = v
        pz[s] = zi * (bias[i] + one) if has_bias else zi  # test depth
        ranges[s, 0] = c0
        ranges[s, 1] = c1
        ranges[s, 2] = r0
        ranges[s, 3] = r1
        sidx[s] = i
        # pass 1, on the way: the least test depth per pixel, compared as int32 bits (as torch does)
        bits = ztbits[s]
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
        s += 1

    index = np.full(hw, -1, np.int64)
    depth = np.zeros(hw, np.float32)
    if s == 0:
        return index.reshape(height, width), depth.reshape(height, width), m

    # pass 2: among the front surface (test depth <= zmin * tolerance) the least key
    zmin = zbits.view(np.float32)
    kbuf[: hw + 3] = _NO_KEY
    for k in range(s):
        u = pu[k]
        v = pv[k]
        zt = pz[k]
        c0 = ranges[k, 0]
        c1 = ranges[k, 1]
        r0 = ranges[k, 2]
        r1 = ranges[k, 3]
        if c1 - c0 <= 1 and r1 - r0 <= 1:  # up to 2 x 2 pixels: branch-free, absent ones go to spare slots
            dx = np.float32(c0) - u
            qx0 = np.int64(dx * dx * scale) << 32
            dx = np.float32(c1) - u
            qx1 = np.int64(dx * dx * scale) << 32
            dy = np.float32(r0) - v
            ky0 = (np.int64(dy * dy * scale) << 32) + k
            dy = np.float32(r1) - v
            ky1 = (np.int64(dy * dy * scale) << 32) + k
            p00, p01, p10, p11 = _quad(c0, c1, r0, r1, width, hw)
            _offer(kbuf, zmin, p00, ky0 + qx0, zt, tolerance)
            _offer(kbuf, zmin, p01, ky0 + qx1, zt, tolerance)
            _offer(kbuf, zmin, p10, ky1 + qx0, zt, tolerance)
            _offer(kbuf, zmin, p11, ky1 + qx1, zt, tolerance)
            continue
        for r in range(r0, r1 + 1):
            dy = np.float32(r) - v
            row = r * width
            key_y = (np.int64(dy * dy * scale) << 32) + k
            for c in range(c0, c1 + 1):
                dx = np.float32(c) - u
                _offer(kbuf, zmin, row + c, key_y + (np.int64(dx * dx * scale) << 32), zt, tolerance)

    for p in range(hw):
        key = kbuf[p]
        if key != _NO_KEY:
            win = sidx[key & _LOW32]
            index[p] = win
            depth[p] = z[win]
    return index.reshape(height, width), depth.reshape(height, width), m


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


_local = threading.local()


def workspace(n: int, hw: int) -> tuple[np.ndarray, ...]:
    """This thread's work arrays for `splat_kernel` (grown as needed, then reused: fresh arrays of this
    size would cost more in page faults than the kernel itself)."""
    ws = getattr(_local, "splat", None)
    cap, cap_hw = (0, 0) if ws is None else (ws[0].shape[0], ws[5].shape[0] - 3)
    if cap < n or cap_hw < hw:
        cap = cap if cap >= n else max(1024, n + n // 4)
        cap_hw = max(cap_hw, hw)
        ws = (
            np.empty(cap, np.float32),
            np.empty(cap, np.float32),
            np.empty(cap, np.float32),
            np.empty((cap, 4), np.int32),
            np.empty(cap, np.int64),
            np.empty(cap_hw + 3, np.int32),
            np.empty(cap_hw + 3, np.int64),
        )
        _local.splat = ws
    return ws

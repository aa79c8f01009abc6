"""Render memory into a camera: project, cull, z-buffered square splats, front-surface tie-break.

The kernel `splat_points` is a pure function of camera-space points; `runtime.memory.reference`
implements the same rule with plain loops and the tests hold the two equal. The rule:

* a point at camera-space (x, y, z) with z > near projects to u = fx x/z + cx, v = fy y/z + cy and
  has a pixel half-size r = radius f_mean / z, clamped to [0, max_radius_px];
* it covers pixel (px, py) iff |px - u| <= max(r, 0.5) and |py - v| <= max(r, 0.5): a Chebyshev
  square that always holds the pixel containing the centre (pixel centres sit at integers);
* depth tests use zt = z (1 + bias) with a per-point bias >= 0 (0 by default): memory gives
  generated points a bias so that a guess never hides an observed surface it is only a little in
  front of (confidence-weighted z-test);
* per pixel, pass 1 finds the nearest test depth zmin; pass 2 picks, among fragments with test depth
  <= zmin (1 + depth_tolerance), the one whose centre is nearest the pixel centre, ties to the lower
  point index. The distance is floor(dx^2 2^16) + floor(dy^2 2^16): squared pixel distance, each
  axis quantised to 2^-16 px^2, so that the key splits into a row part plus a column part. A point
  rendered from the pose it was made at has distance 0 to its own pixel, so such a render gives
  back the ingested pixels exactly;
* colour fusion (when colours are given): every fragment on that front surface adds its point's
  colour with the integer weight floor(tx ty (BLEND_SCALE / a^2) / (dx^2 + dy^2 + BLEND_EPS)), a =
  half-size + 1/2, tx = 1 - |dx| / a, ty = 1 - |dy| / a (a tent over the splat, per area, sharpened
  towards the point's centre), and the pixel's colour is sum(w c) / sum(w) / 255 (the winner's own
  colour where the weights sum to 0). Integer sums make it order-free, so kernels, reference and
  the render's thread split agree bit for bit. The winner still gives depth, id and provenance;
* the front surface that fuses reaches deeper where the front itself slopes (`fusion_thresholds`):
  a square splat holds one depth over its footprint, so on a surface seen at a grazing angle the
  splat of a nearer sample lies in front of the samples centred on the pixels it reaches, and a
  fixed tolerance would fuse only that one, smearing it along the slope. The colour therefore sums
  the fragments with test depth <= zmin min(1 + depth_tolerance + FUSION_REACH s, FUSION_CAP),
  where s is the front's relative depth change over FUSION_STEP_PX pixels, measured on the zmin
  map where it runs one way on both sides of the pixel (a depth jump, a thin object or a gap is a
  turn or a step on one side only, and keeps the plain tolerance: edges stay sharp). On a
  fronto-parallel face s = 0: nothing behind it enters its colour. A fragment whose
  point has a depth bias (memory's generated points: guesses) fuses on the plain front only: the
  deeper reach recovers observed samples, and what was invented looks the same each time it is seen.

All arithmetic of the rule is float32 with constants rounded to float32 first, so that the kernel and
the reference agree bit for bit. Fragments are generated in buckets by footprint: a half-size in
[j/2, (j+1)/2) px uses a (j+1)^2 window (2x2 for the usual sub-pixel points, 9x9 at the 4 px clamp).

Two implementations give bit-identical results (index, depth, points_in_view and the fused colour): the torch kernel
`splat_points_torch` (any device) and a compiled numba twin, `runtime.memory.splat_fast.splat_kernel`
(CPU, one thread, several times faster). `splat_points` uses the numba kernel for CPU tensors when
numba imports, else the torch one; the environment variable ``MIRAGE_SPLAT_KERNEL=torch`` forces the
torch kernel (read at every call). The numba kernel compiles on its first call and caches the machine
code in ``runtime/memory/__pycache__``. `free_space` (ingest's carving test) dispatches the same way,
to `free_space_torch` or the numba `kernels.free_space_kernel`, and so does the rest of memory's frame loop
(`compose_render` here, the render's fused candidates-and-splat, ingest's bookkeeping;
`runtime.memory.kernels`). `runtime.memory.backend` makes that choice for all of them:
``MIRAGE_SPLAT_KERNEL=torch`` forces every torch path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from plugin_bridge.camera import Camera, Intrinsics
from runtime.memory.backend import fast_kernels, splat_kernels
from runtime.memory.environment import EnvironmentMap
from runtime.memory.geometry import f32, float32_constants
from runtime.memory.workspaces import workspace

BLEND_SCALE = 65536.0
BLEND_EPS = 0.0625
"""Colour fusion weights are floor(tx ty (BLEND_SCALE / a^2) / (dx^2 + dy^2 + BLEND_EPS)) (module
docstring)."""
DIST_SCALE = 65536.0
"""Squared pixel distances are quantised to multiples of 1/DIST_SCALE in the tie-break key."""
FUSION_STEP_PX = 2
"""The front's slope is measured between pixels this far apart (`fusion_thresholds`)."""
FUSION_REACH = 2.0
"""Colour fusion reaches behind the front by FUSION_REACH times its relative depth change over one
step: the depth the front spans over 4 px, the reach of a splat at the usual half-sizes."""
FUSION_CAP = 1.2
"""Colour fusion never reaches more than 20 % behind the front."""
_NO_KEY = torch.iinfo(torch.int64).max
_LOW32 = 0xFFFFFFFF


@dataclass
class MemoryRender:
    """Memory seen from one camera (torch tensors on the memory's device)."""

    rgb: torch.Tensor  # [H, W, 3] float32 0..1, 0 where uncovered
    depth: torch.Tensor  # [H, W] float32 metres; 0 uncovered, +inf where only the environment covers
    coverage: torch.Tensor  # [H, W] float32: 1 where a point or environment texel covers, else 0
    confidence: torch.Tensor  # [H, W] float32: winning point's confidence (1 for environment texels)
    point_index: torch.Tensor  # [H, W] int64: winning point, -1 where none
    object_id: torch.Tensor  # [H, W] int32, 0 none
    provenance: torch.Tensor  # [H, W] uint8, 0 none
    points_in_view: int  # points that passed the frustum test
    env_texel: torch.Tensor  # [H, W] int64: environment texel shown, -1 where none
    camera: Camera | None = None  # the camera rendered (ingest checks it is handed the right render)
    memory_version: int = -1  # layout version of the memory when rendered (stale renders are refused)
    packed: tuple[int, np.ndarray, np.ndarray] | None = None
    """Quantised storage, a render that read packed chunks: (hot points h, the packed rows, their first
    points): a point_index i >= h is point i - h of those rows' points (rows ascending, each in blob
    order; chunk k's are [first[k], first[k + 1]))."""


@dataclass
class SplatWinners:
    """Per-pixel result of the splat kernel."""

    index: torch.Tensor  # [H, W] int64: winning point (index into the kernel's input), -1 where none
    depth: torch.Tensor  # [H, W] float32: the winner's camera z, 0 where none
    points_in_view: int
    rgb: torch.Tensor | None = None  # [H, W, 3] float32 0..1: the front surface's fused colour, 0 where none


def splat_points(
    xyz_cam: torch.Tensor,  # [N, 3] float32 camera-space points
    radius: torch.Tensor,  # [N] float32 world-space half-size
    intrinsics: Intrinsics,
    *,
    near: float,
    max_radius_px: int,
    depth_tolerance: float,
    depth_bias: torch.Tensor | None = None,  # [N] float32 >= 0: depth tests see z (1 + bias)
    rgb: torch.Tensor | None = None,  # [N, 3] uint8: colours to fuse over the front surface
) -> SplatWinners:
    """Z-buffered square splats with the front-surface tie-break (see the module docstring), and with
    ``rgb`` the front surface's fused colour (`SplatWinners.rgb`).

    The numba kernel for CPU tensors (when numba imports and ``MIRAGE_SPLAT_KERNEL`` is not
    ``torch``), else `splat_points_torch`; both give the same bits.
    """
    tensors = (xyz_cam, radius) if depth_bias is None else (xyz_cam, radius, depth_bias)
    tensors = tensors if rgb is None else (*tensors, rgb)
    n = xyz_cam.shape[0]
    usable = xyz_cam.shape == (n, 3) and radius.shape == (n,)
    usable = usable and (depth_bias is None or depth_bias.shape == (n,))
    usable = usable and (rgb is None or (rgb.shape == (n, 3) and rgb.dtype == torch.uint8))
    usable = usable and all(t.device.type == "cpu" for t in tensors)
    # the numba kernel's pixel arithmetic is exact for windows and images well inside 2^24 px
    usable = usable and max_radius_px <= 2**20 and intrinsics.width < 2**23 and intrinsics.height < 2**23
    fast = splat_kernels() if usable else None
    if fast is None:
        return splat_points_torch(
            xyz_cam, radius, intrinsics, near=near, max_radius_px=max_radius_px,
            depth_tolerance=depth_tolerance, depth_bias=depth_bias, rgb=rgb,
        )  # fmt: skip
    # numpy views of float32 CPU tensors: the .T.contiguous() is free for a transposed [3, N] (what
    # memory passes); the conversions and copies happen only for other dtypes and layouts
    x, y, z = xyz_cam.detach().to(torch.float32).T.contiguous().numpy()
    rad = radius.detach().to(torch.float32).contiguous().numpy()
    if depth_bias is None:
        bias, has_bias = z, False
    else:
        bias, has_bias = depth_bias.detach().to(torch.float32).contiguous().numpy(), True
    c = np.float32
    fx, fy, cx, cy, f_mean = (c(v) for v in float32_constants(intrinsics))
    colours = np.zeros((0, 3), np.uint8) if rgb is None else rgb.detach().contiguous().numpy()
    index, depth, in_view, colour = fast.splat_kernel(
        x, y, z, rad, bias, has_bias, fx, fy, cx, cy, f_mean, c(near), c(max_radius_px),
        c(1.0 + depth_tolerance), intrinsics.width, intrinsics.height,
        *workspace(n, intrinsics.width * intrinsics.height), colours, rgb is not None,
    )  # fmt: skip
    return SplatWinners(
        torch.from_numpy(index), torch.from_numpy(depth), int(in_view),
        None if rgb is None else torch.from_numpy(colour),
    )  # fmt: skip


def splat_points_torch(
    xyz_cam: torch.Tensor,  # [N, 3] float32 camera-space points
    radius: torch.Tensor,  # [N] float32 world-space half-size
    intrinsics: Intrinsics,
    *,
    near: float,
    max_radius_px: int,
    depth_tolerance: float,
    depth_bias: torch.Tensor | None = None,  # [N] float32 >= 0: depth tests see z (1 + bias)
    rgb: torch.Tensor | None = None,  # [N, 3] uint8: colours to fuse over the front surface
) -> SplatWinners:
    """The torch kernel of `splat_points` (any device): the same rule, vectorised."""
    device = xyz_cam.device
    height, width = intrinsics.height, intrinsics.width
    hw = height * width
    pts = xyz_cam.to(torch.float32).T.contiguous()  # [3, N] (free if xyz_cam is a transposed [3, N])
    radius = radius.to(torch.float32)
    u, v, z, ext = _project(pts, radius, intrinsics, max_radius_px)
    bias = None if depth_bias is None else depth_bias.to(torch.float32)
    in_view = (z > f32(near)) & (u >= -ext) & (u <= ext + float(width - 1))
    in_view &= (v >= -ext) & (v <= ext + float(height - 1))
    idx = in_view.nonzero().squeeze(1)  # [M] ascending: keeps the index order for ties
    winners = SplatWinners(
        torch.full((height, width), -1, dtype=torch.int64, device=device),
        torch.zeros(height, width, dtype=torch.float32, device=device),
        int(idx.numel()),
        None if rgb is None else torch.zeros(height, width, 3, dtype=torch.float32, device=device),
    )
    if idx.numel() == 0:
        return winners
    if idx.numel() < in_view.numel():  # recomputed on the survivors (same float32 operations and values)
        u, v, z, ext = _project(
            pts.index_select(1, idx), radius.index_select(0, idx), intrinsics, max_radius_px
        )
        bias = None if bias is None else bias.index_select(0, idx)
    zt = z if bias is None else z * (bias + 1.0)  # test depth
    local = torch.arange(idx.numel(), device=device)

    # bucket by footprint: half-size ext in [j/2, (j+1)/2) needs a window of j + 1 pixels a side
    bucket = torch.floor(ext * 2.0).long()
    counts = torch.bincount(bucket).tolist()
    fragments = []
    for j, count in enumerate(counts):
        if count == 0:
            continue
        if count == idx.numel():
            cols = (u, v, zt, ext, local)
        else:
            sel = (bucket == j).nonzero().squeeze(1)
            cols = tuple(t.index_select(0, sel) for t in (u, v, zt, ext, local))
        fragments.append(_fragments(*cols, side=j + 1, width=width, height=height, weights=rgb is not None))

    # pass 1: nearest depth per pixel, on the float32 bits (monotone for positive floats, faster);
    # slot hw absorbs fragments off the image
    zbits = torch.full((hw + 1,), 0x7F800000, dtype=torch.int32, device=device)  # +inf
    for pix, zf, *_ in fragments:
        zbits.scatter_reduce_(0, pix, zf.view(torch.int32), "amin")
    zthr = zbits.view(torch.float32) * f32(1.0 + depth_tolerance)
    if rgb is not None:  # the fused front surface reaches deeper where the front slopes
        fthr = torch.cat([fusion_thresholds(zbits[:hw].view(torch.float32).reshape(height, width),
                                            f32(1.0 + depth_tolerance)).reshape(-1), zthr[hw:]])  # fmt: skip
    # pass 2: nearest centre among the front surface, ties to the lower index
    kbuf = torch.full((hw + 1,), _NO_KEY, dtype=torch.int64, device=device)
    wsum = torch.zeros(hw + 1, dtype=torch.int64, device=device)
    csum = torch.zeros(hw + 1, 3, dtype=torch.int64, device=device)
    colours = None if rgb is None else rgb.index_select(0, idx).to(torch.int64)
    for pix, zf, key, weight in fragments:
        front = torch.where(zf <= zthr.index_select(0, pix), pix, hw)
        kbuf.scatter_reduce_(0, front, key, "amin")
        if colours is not None:  # colour fusion: integer sums over the fused front's fragments
            fused = (zf <= fthr.index_select(0, pix)) | (front < hw)
            if bias is not None:  # a point with a depth bias (a guess) keeps to the front
                fused &= (bias.index_select(0, key & _LOW32) == 0.0) | (front < hw)
            fused_pix = torch.where(fused, pix, hw)
            wsum.index_add_(0, fused_pix, weight)
            csum.index_add_(0, fused_pix, weight[:, None] * colours.index_select(0, key & _LOW32))
    key = kbuf[:hw]
    has = key != _NO_KEY
    win = torch.where(has, key & _LOW32, 0)
    winners.index = torch.where(has, idx.index_select(0, win), -1).reshape(height, width)
    winners.depth = torch.where(has, z.index_select(0, win), 0.0).reshape(height, width)
    if colours is not None:
        w = wsum[:hw]
        fused = (csum[:hw].to(torch.float64) / w.clamp(min=1).to(torch.float64)[:, None]).to(torch.float32)
        own = colours.index_select(0, win).to(
            torch.float32
        )  # no weight: only far off-centre fragments of clamped splats
        fused = torch.where((w > 0)[:, None], fused, own) / 255.0
        winners.rgb = torch.where(has[:, None], fused, 0.0).reshape(height, width, 3)
    return winners


def fusion_thresholds(zmin: torch.Tensor, tolerance: float) -> torch.Tensor:
    """[H, W] float32: the deepest test depth that fuses colour at each pixel, from the front depth
    ``zmin`` [H, W] float32 (+inf where no fragment) and ``tolerance`` = float32(1 + depth_tolerance).

    Along each axis, the front's depth differences to the pixels FUSION_STEP_PX before and after
    (those inside the image with a finite front): where both exist and have the same sign (the
    front runs one way through the pixel), the smaller magnitude; where one exists, it; else 0. g is
    the larger of the two axes' and the threshold zmin min(tolerance + FUSION_REACH (g / zmin),
    FUSION_CAP), every operation float32 in that order (what the numba twin and the reference
    compute); zmin tolerance where zmin is not finite.
    """
    k = FUSION_STEP_PX
    height, width = zmin.shape
    inf = torch.tensor(float("inf"), dtype=torch.float32, device=zmin.device)
    pad = torch.full((height + 2 * k, width + 2 * k), float("inf"), dtype=torch.float32, device=zmin.device)
    pad[k : k + height, k : k + width] = zmin
    finite = torch.isfinite(zmin)
    zero = torch.zeros((), dtype=torch.float32, device=zmin.device)

    def axis(after: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
        has_a, has_b = torch.isfinite(after) & finite, torch.isfinite(before) & finite
        da = torch.where(has_a, after - zmin, zero)
        db = torch.where(has_b, zmin - before, zero)
        one_way = ((da > 0) & (db > 0)) | ((da < 0) & (db < 0))
        both = torch.where(one_way, torch.minimum(da.abs(), db.abs()), zero)
        return torch.where(has_a & has_b, both, torch.where(has_a, da.abs(), db.abs()))

    gx = axis(pad[k : k + height, 2 * k :], pad[k : k + height, :width])
    gy = axis(pad[2 * k :, k : k + width], pad[:height, k : k + width])
    g = torch.maximum(gx, gy)
    safe = torch.where(finite, zmin, inf)
    cap = max(f32(FUSION_CAP), f32(tolerance))  # never nearer than the winners' front
    factor = torch.minimum((g / safe) * f32(FUSION_REACH) + f32(tolerance), torch.full_like(g, cap))
    return torch.where(finite, zmin * factor, zmin * f32(tolerance))


def _project(pts: torch.Tensor, radius: torch.Tensor, intrinsics: Intrinsics, max_radius_px: int):
    """u, v, z and splat half-size max(clamp(radius f / z, 0, max), 0.5) of points [3, N] (float32)."""
    fx, fy, cx, cy, f_mean = float32_constants(intrinsics)
    x, y, z = pts
    u = x / z * fx + cx
    v = y / z * fy + cy
    ext = (radius * f_mean / z).clamp(0.0, float(max_radius_px)).clamp(min=0.5)
    return u, v, z, ext


def _fragments(u, v, z, ext, local, *, side: int, width: int, height: int, weights: bool = False):
    """(flat pixel int64 [F], depth float32 [F], key int64 [F], weight int64 [F] or None) of points
    over a square window; ``weights``: each fragment's colour-fusion weight (module docstring).

    A window ``side`` pixels wide holds every pixel a splat of half-size ext < side / 2 can cover:
    when odd, centred on round(u) (|px - round(u)| <= ext + 1/2 < side / 2 + 1/2); when even, from
    floor(u) - side/2 + 1 (the covered pixels lie in (u - side/2, u + side/2)). Tables are
    [side, m] so that every operation runs along the long, contiguous point axis.
    """
    n = side
    if side % 2:
        bu, bv = torch.floor(u + 0.5) - side // 2, torch.floor(v + 0.5) - side // 2
    else:
        bu, bv = torch.floor(u) - (side // 2 - 1), torch.floor(v) - (side // 2 - 1)
    hw = width * height
    off = torch.arange(n, dtype=torch.float32, device=u.device)[:, None]
    px, py = bu + off, bv + off  # [n, m] integer-valued float32
    dx, dy = px - u, py - v
    okx = (dx.abs() <= ext) & (px >= 0) & (px <= width - 1)
    oky = (dy.abs() <= ext) & (py >= 0) & (py <= height - 1)
    col = torch.where(okx, px.int(), hw)
    row = torch.where(oky, py.int() * width, hw)
    pix = (row[:, None, :] + col[None, :, :]).clamp_(max=hw).reshape(-1).long()  # [n(y), n(x), m]
    key_y = ((dy * dy * DIST_SCALE).long() << 32) + local
    key_x = (dx * dx * DIST_SCALE).long() << 32
    key = (key_y[:, None, :] + key_x[None, :, :]).reshape(-1)
    weight = None
    if weights:
        a = ext + 0.5
        norm = f32(BLEND_SCALE) / (a * a)
        tx, ty = 1.0 - dx.abs() / a, 1.0 - dy.abs() / a
        d2 = (dx * dx)[None, :, :] + (dy * dy)[:, None, :]
        weight = (((tx[None, :, :] * ty[:, None, :]) * norm) / (d2 + f32(BLEND_EPS))).long().reshape(-1)
    return pix, z.expand(n * n, -1).reshape(-1), key, weight


def free_space(
    xyz_cam: torch.Tensor,  # [N, 3] float32 camera-space points
    radius: torch.Tensor,  # [N] float32 world half-size
    depth: torch.Tensor,  # [H, W] float32 observed depth: 0 unknown, +inf at infinity
    intrinsics: Intrinsics,
    *,
    near: float,
    depth_tolerance: float,
) -> torch.Tensor:
    """Points [N] bool that an observation saw through: in front of the observed surface by more than
    max(depth_tolerance * z_obs, 2 * radius), or anywhere in front of a pixel at infinity.

    The observed depth at a point is the minimum over the 2x2 pixels around its projected centre, so a
    point on a silhouette seen a fraction of a pixel off is kept, and unknown depth (0) carves nothing.
    Float32 CPU tensors take the numba kernel (as `splat_points` does), others `free_space_torch`.
    """
    tensors = (xyz_cam, radius, depth)
    n = xyz_cam.shape[0]
    usable = xyz_cam.shape == (n, 3) and radius.shape == (n,) and depth.dim() == 2
    usable = usable and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
    height, width = depth.shape
    usable = usable and 0 < width < 2**23 and 0 < height < 2**23
    fast = fast_kernels() if usable else None
    if fast is None:
        return free_space_torch(
            xyz_cam, radius, depth, intrinsics, near=near, depth_tolerance=depth_tolerance
        )
    x, y, z = xyz_cam.detach().T.contiguous().numpy()  # free if xyz_cam is a transposed [3, N]
    c = np.float32
    fx, fy, cx, cy, _ = (c(v) for v in float32_constants(intrinsics))
    carve = fast.free_space_kernel(
        x, y, z, radius.detach().contiguous().numpy(), depth.detach().contiguous().reshape(-1).numpy(),
        fx, fy, cx, cy, c(near), c(depth_tolerance), c(width - 0.5), c(height - 0.5), width,
    )  # fmt: skip
    return torch.from_numpy(carve)


def free_space_torch(
    xyz_cam: torch.Tensor,
    radius: torch.Tensor,
    depth: torch.Tensor,
    intrinsics: Intrinsics,
    *,
    near: float,
    depth_tolerance: float,
) -> torch.Tensor:
    """The torch kernel of `free_space` (any device and dtype)."""
    height, width = depth.shape
    fx, fy, cx, cy, _ = float32_constants(intrinsics)
    x, y, z = xyz_cam.unbind(-1)
    u = x / z * fx + cx
    v = y / z * fy + cy
    inside = (z > near) & (u > -0.5) & (u < width - 0.5) & (v > -0.5) & (v < height - 0.5)
    sel = inside.nonzero().squeeze(1)
    x0, y0 = torch.floor(u.index_select(0, sel)).long(), torch.floor(v.index_select(0, sel)).long()
    xs = (x0.clamp(0, width - 1), (x0 + 1).clamp(max=width - 1))
    rows = (y0.clamp(0, height - 1) * width, (y0 + 1).clamp(max=height - 1) * width)
    flat = depth.reshape(-1)
    z_obs = flat.index_select(0, rows[0] + xs[0])
    for index in (rows[0] + xs[1], rows[1] + xs[0], rows[1] + xs[1]):
        z_obs = torch.minimum(z_obs, flat.index_select(0, index))
    margin = torch.maximum(depth_tolerance * z_obs, 2.0 * radius.index_select(0, sel))
    through = (z_obs > 0) & (torch.isinf(z_obs) | (z_obs - z.index_select(0, sel) > margin))
    carve = torch.zeros(xyz_cam.shape[0], dtype=torch.bool, device=xyz_cam.device)
    carve[sel[through]] = True
    return carve


def check_camera(camera: Camera) -> None:
    """Raise ValueError saying what to fix when ``camera`` cannot be rendered into."""
    if not isinstance(camera, Camera):
        raise ValueError(f"expected a plugin_bridge.camera.Camera, got {type(camera).__name__}")
    intr = camera.intrinsics
    if not (intr.width > 0 and intr.height > 0 and intr.width * intr.height < 2**24):
        raise ValueError(
            f"image size {intr.width}x{intr.height}: width and height must be positive, under 16M pixels"
        )
    if not (np.isfinite([intr.fx, intr.fy, intr.cx, intr.cy]).all() and intr.fx > 0 and intr.fy > 0):
        raise ValueError(f"intrinsics {intr}: fx, fy must be positive and all values finite")
    pose = np.asarray(camera.cam_to_world)
    if pose.shape != (4, 4) or not np.isfinite(pose).all():
        raise ValueError(f"cam_to_world must be a finite 4x4 matrix, got shape {pose.shape}")
    rot = pose[:3, :3]
    if np.abs(rot.T @ rot - np.eye(3)).max() > 1e-3 or np.linalg.det(rot) < 0:
        raise ValueError("cam_to_world rotation must be orthonormal and right-handed (det +1)")


def check_render(render: MemoryRender, memory_version: int, camera: Camera | None) -> None:
    """Raise ValueError unless ``render`` was made by this memory as it is now (and at ``camera``)."""
    if not isinstance(render, MemoryRender):
        raise ValueError(f"expected a MemoryRender, got {type(render).__name__}")
    if render.memory_version != memory_version:
        raise ValueError("render was made before memory last changed: render again (or pass render=None)")
    if camera is not None and (
        render.camera is None
        or render.camera.intrinsics != camera.intrinsics
        or not np.array_equal(render.camera.cam_to_world, camera.cam_to_world)
    ):
        raise ValueError("render was made at another camera: pass the render of this very camera (or None)")


def compose_render(
    winners: SplatWinners,
    points: dict[str, torch.Tensor],  # the memory's live point arrays
    env: EnvironmentMap,
    camera: Camera,
    memory_version: int,
    *,
    take_depth: bool = False,
) -> MemoryRender:
    """Gather the winners' attributes; pixels no point covers look up the environment map.

    The colour is the winners' fused colour where the splat made one (`SplatWinners.rgb`), else the
    winning point's. ``take_depth``: the winners' depth (and fused colour) arrays become the render's
    (the environment writes into them) instead of copies, for a caller that keeps no other use of them.
    """
    index = winners.index
    height, width = index.shape
    device = index.device
    fused = winners.rgb
    if fused is not None and not take_depth:
        fused = fused.clone()
    gathered = _gather_fast(index, points, fused)
    if gathered is not None:
        rgb, confidence, object_id, provenance, coverage, holes = gathered
    else:
        has = index >= 0
        safe = index.clamp(min=0)
        if points["xyz"].shape[0] == 0:  # nothing to gather from; every pixel is a hole
            safe = torch.zeros(0, dtype=torch.int64, device=device)
        rgb = torch.zeros(height, width, 3, dtype=torch.float32, device=device)
        confidence = torch.zeros(height, width, dtype=torch.float32, device=device)
        object_id = torch.zeros(height, width, dtype=torch.int32, device=device)
        provenance = torch.zeros(height, width, dtype=torch.uint8, device=device)
        if safe.numel():
            flat = safe.reshape(-1)

            def gather(name: str) -> torch.Tensor:
                values = points[name].index_select(0, flat)
                return values.reshape(height, width, *values.shape[1:])

            rgb = torch.where(has[..., None], gather("rgb").to(torch.float32) / 255.0, rgb)
            confidence = torch.where(has, gather("confidence").to(torch.float32), confidence)
            object_id = torch.where(has, gather("object_id"), object_id)
            provenance = torch.where(has, gather("provenance"), provenance)
        coverage = has.to(torch.float32)
        holes = None
    if fused is not None:  # the front surface's fused colour (zero where no point covers)
        rgb = fused
    depth = winners.depth if take_depth else winners.depth.clone()
    env_texel = torch.full((height, width), -1, dtype=torch.int64, device=device)
    if env.filled_count > 0:
        if holes is None:
            holes = (~has).reshape(-1).nonzero().squeeze(1)
        if holes.numel():
            texel = env.pixel_texels(camera, holes)
            fast = None if gathered is None else fast_kernels(env.rgb, env.last_seen, texel)
            if fast is not None and depth.is_contiguous() and env.rgb.is_contiguous():
                done = fast.env_fill_kernel(
                    holes.numpy(), texel.numpy(), env.last_seen.numpy(), env.rgb.numpy(),
                    rgb.view(-1, 3).numpy(), depth.view(-1).numpy(), coverage.view(-1).numpy(),
                    confidence.view(-1).numpy(), env_texel.view(-1).numpy(),
                )  # fmt: skip
                if done:
                    holes = holes[:0]  # filled: the torch lines below see nothing to do
        if holes.numel():
            filled = env.last_seen[texel] >= 0
            pix, texel = holes[filled], texel[filled]
            rgb.view(-1, 3)[pix] = env.rgb[texel].to(torch.float32) / 255.0
            depth.view(-1)[pix] = float("inf")
            coverage.view(-1)[pix] = 1.0
            confidence.view(-1)[pix] = 1.0
            env_texel.view(-1)[pix] = texel
    return MemoryRender(
        rgb=rgb,
        depth=depth,
        coverage=coverage,
        confidence=confidence,
        point_index=index,
        object_id=object_id,
        provenance=provenance,
        points_in_view=winners.points_in_view,
        env_texel=env_texel,
        camera=camera,
        memory_version=memory_version,
    )


def _gather_fast(index: torch.Tensor, points: dict[str, torch.Tensor], fused: torch.Tensor | None = None):
    """`compose_render`'s gathers by the numba kernel: (rgb, confidence, object_id, provenance,
    coverage, holes int64 ascending), or None where the torch path runs (no kernel, an empty memory,
    other dtypes or layouts, an index past the points: torch raises as before). With ``fused`` (the
    splat's fused colour, float32 [H, W, 3]) the winners' colours are not gathered: rgb is ``fused``."""
    names = ("rgb", "confidence", "object_id", "provenance")
    fast = fast_kernels(index, *(points[name] for name in names))
    if fast is None or index.dtype != torch.int64 or points["xyz"].shape[0] == 0:
        return None
    arrays = [points[name] for name in names]
    dtypes = (torch.uint8, torch.float16, torch.int32, torch.uint8)
    if any(t.dtype != d or not t.is_contiguous() for t, d in zip(arrays, dtypes, strict=True)):
        return None
    if arrays[0].shape[1:] != (3,) or any(t.dim() != 1 for t in arrays[1:]):
        return None
    height, width = index.shape
    hw = height * width
    gather_rgb = fused is None or fused.dtype != torch.float32 or not fused.is_contiguous()
    rgb = torch.empty(height, width, 3, dtype=torch.float32) if gather_rgb else fused
    confidence = torch.empty(height, width, dtype=torch.int16)  # the float16 bits, widened below
    object_id = torch.empty(height, width, dtype=torch.int32)
    provenance = torch.empty(height, width, dtype=torch.uint8)
    coverage = torch.empty(height, width, dtype=torch.float32)
    holes = torch.empty(hw, dtype=torch.int64)
    k = fast.compose_kernel(
        index.reshape(-1).numpy(), arrays[0].numpy(), arrays[1].view(torch.int16).numpy(),
        arrays[2].numpy(), arrays[3].numpy(), rgb.view(hw, 3).numpy(), confidence.view(hw).numpy(),
        object_id.view(hw).numpy(), provenance.view(hw).numpy(), coverage.view(hw).numpy(), holes.numpy(),
        gather_rgb,
    )  # fmt: skip
    if k < 0:
        return None
    return rgb, confidence.view(torch.float16).to(torch.float32), object_id, provenance, coverage, holes[:k]

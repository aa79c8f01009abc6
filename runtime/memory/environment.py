"""Content at infinity (sky, far background) remembered by direction, not as points.

An equirectangular map over world directions (world +z is up): column from azimuth
``atan2(dy, dx)`` in [-pi, pi), row from elevation ``asin(dz)``, row 0 looking straight up. Each texel
holds an RGB colour, the frame it was last seen at and the provenance of its colour (observed,
generated, imported: what `SpatialMemory.forget` goes by); ``last_seen == -1`` marks an empty texel,
so a texel costs 8 bytes (a 512x256 map is 1 MiB).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from plugin_bridge.camera import Camera
from runtime.memory.backend import fast_kernels
from runtime.memory.geometry import pixel_rays_world

BYTES_PER_TEXEL = 3 + 4 + 1  # rgb uint8 + last_seen int32 (-1 = empty) + provenance uint8 (0 = empty)
_OBSERVED, _GENERATED = 1, 2  # runtime.memory.config's PROVENANCE_OBSERVED / _GENERATED


def _provenance_of(overwrite: bool, provenance: int | None) -> int:
    """A write's provenance: as given, else observed for overwriting writes, generated for the others."""
    if provenance is None:
        return _OBSERVED if overwrite else _GENERATED
    return int(provenance)


def camera_key(camera: Camera) -> tuple:
    """A key equal for two cameras exactly when their intrinsics and pose are (bit for bit)."""
    pose = np.asarray(camera.cam_to_world)
    return repr(camera.intrinsics), pose.dtype.str, pose.shape, pose.tobytes()


class EnvironmentMap:
    """Direction -> colour map; observed writes overwrite, generated writes fill only empty texels."""

    def __init__(self, width: int, height: int, device: str | torch.device = "cpu"):
        self.width, self.height = int(width), int(height)
        self.device = torch.device(device)
        n = self.width * self.height
        self.rgb = torch.zeros(n, 3, dtype=torch.uint8, device=self.device)  # [T, 3]
        self.last_seen = torch.full((n,), -1, dtype=torch.int32, device=self.device)  # [T]
        self.provenance = torch.zeros(n, dtype=torch.uint8, device=self.device)  # [T], 0 where empty
        self.filled_count = 0
        self._view_cache = None  # (camera key, `_view_map` of that camera)
        self._pixel_cache = None  # (camera key, pixels, `pixel_texels` of them)

    @staticmethod
    def nbytes_for(width: int, height: int) -> int:
        return int(width) * int(height) * BYTES_PER_TEXEL

    @property
    def nbytes(self) -> int:
        return (
            self.rgb.numel() * self.rgb.element_size()
            + self.last_seen.numel() * self.last_seen.element_size()
            + self.provenance.numel() * self.provenance.element_size()
        )

    @property
    def filled(self) -> torch.Tensor:  # [T] bool
        return self.last_seen >= 0

    def clear(self) -> None:
        self.rgb.zero_()
        self.last_seen.fill_(-1)
        self.provenance.zero_()
        self.filled_count = 0

    def texel_index(self, dirs: torch.Tensor) -> torch.Tensor:
        """Flat texel index (int64 [M]) of world directions ``dirs`` [M, 3] (any length > 0)."""
        d = dirs.to(torch.float32)
        d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        azimuth = torch.atan2(d[:, 1], d[:, 0])
        elevation = torch.asin(d[:, 2].clamp(-1.0, 1.0))
        col = torch.floor((azimuth + math.pi) * (self.width / (2.0 * math.pi))).long() % self.width
        row = torch.floor((math.pi / 2.0 - elevation) * (self.height / math.pi)).long()
        return row.clamp(0, self.height - 1) * self.width + col

    def pixel_texels(self, camera: Camera, pix: torch.Tensor) -> torch.Tensor:
        """`texel_index` of the rays through flat pixels ``pix`` (int64 [K], K > 0) of ``camera``.

        Kept for the last camera and pixels (a camera holding still looks up the same holes every
        frame). The very call is repeated on a miss, as torch's float32 trigonometry may round an
        element differently with its place in the batch: the cache only returns what that call gave.
        """

        key = camera_key(camera)
        cached = self._pixel_cache
        if (
            cached is not None
            and cached[0] == key
            and cached[1].shape == pix.shape
            and cached[1].dtype == pix.dtype
            and torch.equal(cached[1], pix)
        ):
            return cached[2]
        texel = self.texel_index(pixel_rays_world(camera, pix))
        self._pixel_cache = (key, pix.clone(), texel)
        return texel

    def texel_directions(self, first_row: int = 0, end_row: int | None = None) -> torch.Tensor:
        """Unit world directions through the texel centres of rows [first_row, end_row), [K, 3] float32.

        Row-major, so row r column c is entry (r - first_row) * width + c.
        """
        end_row = self.height if end_row is None else end_row
        f32 = {"dtype": torch.float32, "device": self.device}
        azimuth = (torch.arange(self.width, **f32) + 0.5) * (2.0 * math.pi / self.width) - math.pi
        rows = torch.arange(first_row, end_row, **f32)
        elevation = math.pi / 2.0 - (rows + 0.5) * (math.pi / self.height)
        cos_el, sin_el = elevation.cos()[:, None], elevation.sin()[:, None]
        dirs = torch.stack(
            (cos_el * azimuth.cos(), cos_el * azimuth.sin(), sin_el.expand(-1, self.width)), dim=-1
        )
        return dirs.reshape(-1, 3)

    def _rows_in_view(self, camera: Camera) -> tuple[int, int]:
        """Texel rows [first, end) holding every direction inside the image's outer edges (plus a row)."""
        k = camera.intrinsics
        along_u, along_v = (
            np.linspace(-0.5, k.width - 0.5, k.width + 1),
            np.linspace(-0.5, k.height - 0.5, k.height + 1),
        )
        u = np.concatenate(
            [along_u, along_u, np.full_like(along_v, -0.5), np.full_like(along_v, k.width - 0.5)]
        )
        v = np.concatenate(
            [np.full_like(along_u, -0.5), np.full_like(along_u, k.height - 0.5), along_v, along_v]
        )
        rays = (
            np.stack(((u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)), -1)
            @ camera.cam_to_world[:3, :3].T
        )
        elevation = np.arcsin(rays[:, 2] / np.linalg.norm(rays, axis=1))  # extremes lie on the edges...
        top, bottom = float(elevation.max()), float(elevation.min())
        for pole in (1.0, -1.0):  # ...unless the view holds straight up or straight down
            local = camera.cam_to_world[2, :3] * pole  # the pole's direction in the camera frame
            if local[2] > 0:
                pu, pv = local[0] / local[2] * k.fx + k.cx, local[1] / local[2] * k.fy + k.cy
                if -0.5 <= pu <= k.width - 0.5 and -0.5 <= pv <= k.height - 0.5:
                    top, bottom = (math.pi / 2, bottom) if pole > 0 else (top, -math.pi / 2)
        first = math.floor((math.pi / 2 - top) / math.pi * self.height) - 1
        end = math.floor((math.pi / 2 - bottom) / math.pi * self.height) + 2
        return max(first, 0), min(end, self.height)

    def lookup(self, dirs_world: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Colour (float32 [M, 3] in 0..1, 0 where empty) and filled flag (bool [M]) along directions."""
        if dirs_world.shape[0] == 0:
            return torch.zeros(0, 3, device=self.device), torch.zeros(0, dtype=torch.bool, device=self.device)
        texel = self.texel_index(dirs_world)
        filled = self.last_seen[texel] >= 0
        rgb = self.rgb[texel].to(torch.float32) / 255.0
        return rgb * filled[:, None], filled

    def write(
        self,
        dirs_world: torch.Tensor,
        rgb: torch.Tensor,
        frame_index: int,
        overwrite: bool,
        provenance: int | None = None,
    ) -> int:
        """Write colours seen along world directions ``dirs_world`` [M, 3]; ``rgb`` [M, 3] uint8 or 0..1.

        Returns how many texels took a colour. Samples falling into one texel are averaged (integer
        sums: deterministic). Every texel hit is marked seen at ``frame_index``; its colour changes
        only if ``overwrite`` (observation is the truth) or if it was empty (generated content never
        replaces what is there). A texel that takes a colour takes ``provenance`` with it (default:
        observed when ``overwrite``, else generated).
        """
        if dirs_world.shape[0] == 0:
            return 0
        if rgb.dtype != torch.uint8:
            rgb = torch.round(rgb.to(torch.float32).clamp(0.0, 1.0) * 255.0)
        texel, inverse = torch.unique(self.texel_index(dirs_world), return_inverse=True)
        sums = torch.zeros(texel.shape[0], 3, dtype=torch.int64, device=self.device)
        sums.index_add_(0, inverse, rgb.to(torch.int64))
        counts = torch.bincount(inverse, minlength=texel.shape[0])[:, None]
        mean = torch.div(sums * 2 + counts, counts * 2, rounding_mode="floor")  # rounded to nearest
        return self._write_texels(
            texel, mean.to(torch.uint8), frame_index, overwrite, _provenance_of(overwrite, provenance)
        )

    def _write_texels(
        self, texel: torch.Tensor, rgb: torch.Tensor, frame_index: int, overwrite: bool, provenance: int
    ) -> int:
        """Set distinct texels [K] to colours [K, 3] uint8 (see `write`); returns how many took them."""
        if not overwrite:
            empty = self.last_seen[texel] < 0
            self.last_seen[texel] = int(frame_index)
            texel, rgb = texel[empty], rgb[empty]
        self.rgb[texel] = rgb
        self.provenance[texel] = provenance
        self.last_seen[texel] = int(frame_index)
        self.filled_count = int((self.last_seen >= 0).sum())
        return int(texel.shape[0])

    def write_view(
        self,
        camera: Camera,
        rgb: torch.Tensor,  # [H, W, 3] or [H * W, 3] uint8
        at_infinity: torch.Tensor,  # [H, W] or [H * W] bool: pixels whose content is at infinity
        frame_index: int,
        overwrite: bool,
        provenance: int | None = None,
    ) -> int:
        """Write a camera's pixels at infinity into the map, hole-free (``provenance`` as in `write`).

        Maps texels into the image (not pixels into the map), so every texel inside the view takes
        the nearest pixel's colour even when texels are finer than pixels.
        """

        provenance = _provenance_of(overwrite, provenance)
        flat, colours = at_infinity.reshape(-1), rgb.reshape(-1, 3)
        fast = fast_kernels(flat, colours, self.last_seen)
        if (
            fast is not None
            and flat.dtype == torch.bool
            and colours.dtype == torch.uint8
            and flat.shape[0] == colours.shape[0] == camera.intrinsics.width * camera.intrinsics.height
            and -(2**31) <= frame_index < 2**31
        ):
            flat, colours = flat.contiguous().numpy(), colours.contiguous().numpy()
            if not fast.any_kernel(flat):
                return 0
            _, _, _, texels, pix = self._view_map(camera)
            written, self.filled_count = fast.write_view_kernel(
                texels.numpy(), pix.numpy(), flat, colours, self.rgb.numpy(), self.last_seen.numpy(),
                self.provenance.numpy(), int(frame_index), bool(overwrite), int(provenance),
            )  # fmt: skip
            return int(written)
        if not bool(at_infinity.any()):
            return 0
        first, inside, pix, _, _ = self._view_map(camera)
        at_infinity, rgb = at_infinity.reshape(-1), rgb.reshape(-1, 3)
        local = (inside & at_infinity[pix]).nonzero().squeeze(1)  # ascending: distinct
        texels = local + first * self.width
        return self._write_texels(texels, rgb[pix[local]], frame_index, overwrite, provenance)

    def _view_map(self, camera: Camera) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(first texel row, inside [K] bool, pixel [K] int64, and the same for the texels inside alone:
        texel [J] int64 ascending, pixel [J] int64) of `write_view`: texel (first row) + k lies in the
        image at the pixel nearest it when inside[k]. A function of the camera alone, kept for the
        last camera (a camera holding still writes the same texels every frame)."""
        key = camera_key(camera)
        cached = self._view_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        intr = camera.intrinsics
        first, end = self._rows_in_view(camera)
        w2c = torch.as_tensor(
            np.asarray(camera.world_to_cam[:3, :3]), dtype=torch.float32, device=self.device
        )
        cam = (w2c @ self.texel_directions(first, end).T).contiguous()  # [3, K] in the camera frame
        ahead = cam[2] > 1e-6
        z = torch.where(ahead, cam[2], 1.0)
        px = torch.floor(cam[0] / z * intr.fx + intr.cx + 0.5)
        py = torch.floor(cam[1] / z * intr.fy + intr.cy + 0.5)
        inside = ahead & (px >= 0) & (px <= intr.width - 1) & (py >= 0) & (py <= intr.height - 1)
        pix = torch.where(inside, py * intr.width + px, 0).long()
        local = inside.nonzero().squeeze(1)
        view = (first, inside, pix, local + first * self.width, pix[local])
        self._view_cache = (key, view)
        return view

    def touch(self, texels: torch.Tensor, frame_index: int) -> None:
        """Mark filled texels (int64 [K], -1 entries ignored) as seen at ``frame_index``."""
        texels = texels[texels >= 0]
        if texels.numel():
            filled = self.last_seen[texels] >= 0
            self.last_seen[texels[filled]] = int(frame_index)

    def expire(self, last_seen_at_most: int) -> int:
        """Empty the texels last seen at or before the given frame; returns how many."""
        old = (self.last_seen >= 0) & (self.last_seen <= last_seen_at_most)
        count = int(old.sum())
        if count:
            self.rgb[old] = 0
            self.last_seen[old] = -1
            self.provenance[old] = 0
            self.filled_count -= count
        return count

    def forget(self, provenance: int) -> int:
        """Empty the texels whose colour came with ``provenance``; returns how many."""
        gone = (self.last_seen >= 0) & (self.provenance == int(provenance))
        count = int(gone.sum())
        if count:
            self.rgb[gone] = 0
            self.last_seen[gone] = -1
            self.provenance[gone] = 0
            self.filled_count -= count
        return count

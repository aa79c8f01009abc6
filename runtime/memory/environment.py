"""Content at infinity (sky, far background) remembered by direction, not as points.

An equirectangular map over world directions (world +z is up): column from azimuth
``atan2(dy, dx)`` in [-pi, pi), row from elevation ``asin(dz)``, row 0 looking straight up. Each texel
holds an RGB colour and the frame it was last seen at; ``last_seen == -1`` marks an empty texel, so
a texel costs 7 bytes (a 512x256 map is 896 KiB).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from plugin_bridge.camera import Camera

BYTES_PER_TEXEL = 3 + 4  # rgb uint8 + last_seen int32 (-1 = empty)


class EnvironmentMap:
    """Direction -> colour map; observed writes overwrite, generated writes fill only empty texels."""

    def __init__(self, width: int, height: int, device: str | torch.device = "cpu"):
        self.width, self.height = int(width), int(height)
        self.device = torch.device(device)
        n = self.width * self.height
        self.rgb = torch.zeros(n, 3, dtype=torch.uint8, device=self.device)  # [T, 3]
        self.last_seen = torch.full((n,), -1, dtype=torch.int32, device=self.device)  # [T]
        self.filled_count = 0

    @staticmethod
    def nbytes_for(width: int, height: int) -> int:
        return int(width) * int(height) * BYTES_PER_TEXEL

    @property
    def nbytes(self) -> int:
        return (
            self.rgb.numel() * self.rgb.element_size()
            + self.last_seen.numel() * self.last_seen.element_size()
        )

    @property
    def filled(self) -> torch.Tensor:  # [T] bool
        return self.last_seen >= 0

    def clear(self) -> None:
        self.rgb.zero_()
        self.last_seen.fill_(-1)
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

    def texel_directions(self) -> torch.Tensor:
        """Unit world direction through the centre of every texel, [T, 3] float32, row-major."""
        f32 = {"dtype": torch.float32, "device": self.device}
        azimuth = (torch.arange(self.width, **f32) + 0.5) * (2.0 * math.pi / self.width) - math.pi
        elevation = math.pi / 2.0 - (torch.arange(self.height, **f32) + 0.5) * (math.pi / self.height)
        cos_el, sin_el = elevation.cos()[:, None], elevation.sin()[:, None]
        dirs = torch.stack(
            (cos_el * azimuth.cos(), cos_el * azimuth.sin(), sin_el.expand(-1, self.width)), dim=-1
        )
        return dirs.reshape(-1, 3)

    def lookup(self, dirs_world: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Colour (float32 [M, 3] in 0..1, 0 where empty) and filled flag (bool [M]) along directions."""
        if dirs_world.shape[0] == 0:
            return torch.zeros(0, 3, device=self.device), torch.zeros(0, dtype=torch.bool, device=self.device)
        texel = self.texel_index(dirs_world)
        filled = self.last_seen[texel] >= 0
        rgb = self.rgb[texel].to(torch.float32) / 255.0
        return rgb * filled[:, None], filled

    def write(self, dirs_world: torch.Tensor, rgb: torch.Tensor, frame_index: int, overwrite: bool) -> int:
        """Write colours seen along world directions ``dirs_world`` [M, 3]; ``rgb`` [M, 3] uint8 or 0..1.

        Returns how many texels took a colour. Samples falling into one texel are averaged (integer
        sums: deterministic). Every texel hit is marked seen at ``frame_index``; its colour changes
        only if ``overwrite`` (observation is the truth) or if it was empty (generated content never
        replaces what is there).
        """
        if dirs_world.shape[0] == 0:
            return 0
        if rgb.dtype != torch.uint8:
            rgb = torch.round(rgb.to(torch.float32).clamp(0.0, 1.0) * 255.0)
        texel, inverse = torch.unique(self.texel_index(dirs_world), return_inverse=True)
        sums = torch.zeros(texel.shape[0], 3, dtype=torch.int64, device=self.device)
        sums.index_add_(0, inverse, rgb.to(torch.int64))
        counts = torch.bincount(inverse, minlength=texel.shape[0])[:, None]
        mean = torch.div(sums * 2 + counts, counts * 2, rounding_mode="floor").to(torch.uint8)  # rounded
        take = texel if overwrite else texel[self.last_seen[texel] < 0]
        if not overwrite:
            mean = mean[self.last_seen[texel] < 0]
        self.rgb[take] = mean
        self.last_seen[texel] = int(frame_index)
        self.filled_count = int((self.last_seen >= 0).sum())
        return int(take.shape[0])

    def write_view(
        self,
        camera: Camera,
        rgb: torch.Tensor,  # [H, W, 3] or [H * W, 3] uint8
        at_infinity: torch.Tensor,  # [H, W] or [H * W] bool: pixels whose content is at infinity
        frame_index: int,
        overwrite: bool,
    ) -> int:
        """Write a camera's pixels at infinity into the map, hole-free.

        Maps texels into the image (not pixels into the map), so every texel inside the view takes
        the nearest pixel's colour even when texels are finer than pixels.
        """
        if not bool(at_infinity.any()):
            return 0
        intr = camera.intrinsics
        w2c = torch.as_tensor(
            np.asarray(camera.world_to_cam[:3, :3]), dtype=torch.float32, device=self.device
        )
        dirs = self.texel_directions()
        cam = dirs @ w2c.T  # [T, 3] directions in the camera frame
        ahead = cam[:, 2] > 1e-6
        z = torch.where(ahead, cam[:, 2], torch.ones_like(cam[:, 2]))
        px = torch.floor(cam[:, 0] / z * intr.fx + intr.cx + 0.5)
        py = torch.floor(cam[:, 1] / z * intr.fy + intr.cy + 0.5)
        inside = ahead & (px >= 0) & (px <= intr.width - 1) & (py >= 0) & (py <= intr.height - 1)
        texels = inside.nonzero().squeeze(1)
        pix = (py[texels] * intr.width + px[texels]).long()
        keep = at_infinity.reshape(-1)[pix]
        texels, pix = texels[keep], pix[keep]
        return self.write(dirs[texels], rgb.reshape(-1, 3)[pix], frame_index, overwrite)

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
            self.filled_count -= count
        return count

"""Pinhole camera types shared by the client and the runtime (pure numpy, no engine imports).

Conventions (see docs/conventions.md): intrinsics follow OpenCV, pixel (u, v) has its centre at
integer coordinates, u to the right and v down, row 0 is the top row. A centred principal point is
therefore ``cx = (width - 1) / 2``. Poses are camera-to-world 4x4 matrices in the canonical frame
(world right-handed, metres; camera x right, y down, z forward).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels for an image of ``width`` x ``height``."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_fov(cls, width: int, height: int, fov_x_deg: float) -> Intrinsics:
        """Square pixels, centred principal point, horizontal field of view in degrees."""
        fx = (width / 2.0) / math.tan(math.radians(fov_x_deg) / 2.0)
        return cls(fx, fx, (width - 1) / 2.0, (height - 1) / 2.0, int(width), int(height))

    @classmethod
    def from_matrix(cls, k, width: int, height: int, pixel_centers: str = "integer") -> Intrinsics:
        """From a 3x3 K. Mirage puts pixel centres at integer coordinates (OpenCV's convention: a
        centred principal point is ((w - 1) / 2, (h - 1) / 2)). ``pixel_centers="half"`` takes a K
        whose pixel centres sit at half-integers (a centred principal point is (w / 2, h / 2), as
        graphics engines and OpenGL projections write it) and shifts it by half a pixel."""
        m = np.asarray(k, dtype=np.float64)
        if m.shape != (3, 3) or not np.isfinite(m).all():
            raise ValueError("K must be a finite 3x3 matrix")
        if m[0, 1] != 0 or m[1, 0] != 0 or tuple(m[2]) != (0.0, 0.0, 1.0):
            raise ValueError("K must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (no skew)")
        if pixel_centers not in ("integer", "half"):
            raise ValueError(
                f"pixel_centers={pixel_centers!r}: use 'integer' (OpenCV) or 'half' (OpenGL, engines)"
            )
        shift = 0.5 if pixel_centers == "half" else 0.0
        return cls(
            float(m[0, 0]),
            float(m[1, 1]),
            float(m[0, 2]) - shift,
            float(m[1, 2]) - shift,
            int(width),
            int(height),
        )

    def matrix(self) -> np.ndarray:
        """3x3 K matrix (float64)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, width: int, height: int) -> Intrinsics:
        """The same field of view at another resolution."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(
            self.fx * sx,
            self.fy * sy,
            (self.cx + 0.5) * sx - 0.5,
            (self.cy + 0.5) * sy - 0.5,
            int(width),
            int(height),
        )


@dataclass(frozen=True)
class Camera:
    """A canonical camera: intrinsics plus a camera-to-world pose (4x4, float64)."""

    intrinsics: Intrinsics
    cam_to_world: np.ndarray  # [4, 4]

    @property
    def world_to_cam(self) -> np.ndarray:
        r = self.cam_to_world[:3, :3]
        t = self.cam_to_world[:3, 3]
        out = np.eye(4)
        out[:3, :3] = r.T
        out[:3, 3] = -r.T @ t
        return out

    @property
    def position(self) -> np.ndarray:
        return self.cam_to_world[:3, 3].copy()

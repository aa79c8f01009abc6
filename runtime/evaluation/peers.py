"""The peer a user would pick instead of Mirage's memory: Open3D's TSDF fusion.

`Open3DTSDF` integrates the same observed RGB-D frames into Open3D's tensor `VoxelBlockGrid` (TSDF,
weight and colour per voxel) and ray-casts it at any pose, so memory can be judged beside it on the
same frames and held-out poses. Open3D is the optional ``[peers]`` extra (on Debian it needs
``libusb-1.0-0``); `open3d_available` says whether it imports, and why not. Its threads follow
``OMP_NUM_THREADS``, read when open3d is first imported (2 on this machine's two cores).

Conventions: poses are canonical camera-to-world (OpenCV camera axes, which Open3D's extrinsics use
as world-to-camera); depth is planar metres with 0 unknown and +inf at infinity (a TSDF has no
notion of infinity: such pixels integrate nothing, and the render leaves them uncovered).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from plugin_bridge.camera import Intrinsics


def open3d_available() -> tuple[bool, str]:
    """(True, "") when open3d imports, else (False, what to install)."""
    try:
        import open3d  # noqa: F401
    except ImportError as exc:  # missing package, or libusb-1.0.so.0 on Debian
        return False, (
            f"open3d is not usable here ({exc}): `pip install -e .[peers]` and, on Debian, "
            "`apt-get install libusb-1.0-0`"
        )
    return True, ""


@dataclass
class TSDFConfig:
    voxel_size: float = 0.02
    """Voxel edge, metres (2 cm: the setting the issue's comparison used)."""
    block_resolution: int = 16
    """Voxels per block edge."""
    block_count: int = 40_000
    """Blocks the hash map holds (grown by Open3D when needed)."""
    depth_max: float = 40.0
    """Depth beyond this integrates nothing (and rendering stops there)."""
    depth_min: float = 0.05
    """Rendering starts this far from the camera."""
    trunc_voxels: float = 8.0
    """Truncation distance in voxels."""


class Open3DTSDF:
    """TSDF fusion of RGB-D frames, ray-cast into any camera with the same intrinsics."""

    def __init__(self, intrinsics: Intrinsics, config: TSDFConfig | None = None):
        ok, why = open3d_available()
        if not ok:
            raise RuntimeError(why)
        import open3d as o3d
        import open3d.core as o3c

        self._o3d, self._o3c = o3d, o3c
        o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)  # its range-map notices are noise
        self.config = config or TSDFConfig()
        self.intrinsics = intrinsics
        self._k = o3c.Tensor(intrinsics.matrix(), o3c.float64)
        c = self.config
        self.grid = o3d.t.geometry.VoxelBlockGrid(
            attr_names=("tsdf", "weight", "color"),
            attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
            attr_channels=((1), (1), (3)),
            voxel_size=c.voxel_size,
            block_resolution=c.block_resolution,
            block_count=c.block_count,
            device=o3c.Device("CPU:0"),
        )
        self.frames = 0

    def _extrinsic(self, cam_to_world: np.ndarray):
        return self._o3c.Tensor(np.linalg.inv(np.asarray(cam_to_world, dtype=np.float64)), self._o3c.float64)

    def integrate(self, cam_to_world: np.ndarray, rgb: np.ndarray, depth: np.ndarray) -> None:
        """Fuse one observed frame (rgb uint8 [H, W, 3], planar depth metres [H, W])."""
        o3d, o3c, c = self._o3d, self._o3c, self.config
        d = np.asarray(depth, dtype=np.float32)
        d = np.where(np.isfinite(d) & (d > 0) & (d <= c.depth_max), d, 0.0).astype(np.float32)
        colour = np.ascontiguousarray(np.asarray(rgb, dtype=np.float32) / 255.0)
        depth_image = o3d.t.geometry.Image(o3c.Tensor(d))
        colour_image = o3d.t.geometry.Image(o3c.Tensor(colour))
        extrinsic = self._extrinsic(cam_to_world)
        blocks = self.grid.compute_unique_block_coordinates(
            depth_image, self._k, extrinsic, 1.0, c.depth_max, c.trunc_voxels
        )
        self.grid.integrate(
            blocks, depth_image, colour_image, self._k, self._k, extrinsic, 1.0, c.depth_max, c.trunc_voxels
        )
        self.frames += 1

    def render(self, cam_to_world: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ray-cast the fused surface at a pose: (rgb uint8 [H, W, 3], planar depth float32 [H, W] with
        0 where no surface, covered bool [H, W])."""
        o3c, c, k = self._o3c, self.config, self.intrinsics
        if self.frames == 0:
            return (np.zeros((k.height, k.width, 3), np.uint8), np.zeros((k.height, k.width), np.float32),
                    np.zeros((k.height, k.width), bool))  # fmt: skip
        hashmap = self.grid.hashmap()
        blocks = hashmap.key_tensor()[hashmap.active_buf_indices().to(o3c.int64)]
        extrinsic = self._extrinsic(cam_to_world)
        # Open3D sizes its range map (the blocks a view needs) on a cast and, when it was too small,
        # grows it and returns a partial image (a third of the pixels, measured): cast until two
        # casts in a row cover the same pixels (the same mask, not only as many: under load a cast
        # was seen to differ from the next in which pixels it covered), at most 8 casts
        previous = None
        for _ in range(8):
            result = self.grid.ray_cast(
                block_coords=blocks, intrinsic=self._k, extrinsic=extrinsic, width=k.width, height=k.height,
                render_attributes=["depth", "color"], depth_scale=1.0, depth_min=c.depth_min,
                depth_max=c.depth_max, weight_threshold=1.0, trunc_voxel_multiplier=c.trunc_voxels,
                range_map_down_factor=8,
            )  # fmt: skip
            depth = result["depth"].numpy().reshape(k.height, k.width).astype(np.float32)
            mask = depth > 0
            if previous is not None and np.array_equal(mask, previous):
                break
            previous = mask
        colour = result["color"].numpy().reshape(k.height, k.width, 3)
        covered = depth > 0
        rgb = np.where(covered[..., None], np.clip(np.rint(colour * 255.0), 0, 255), 0).astype(np.uint8)
        return rgb, np.where(covered, depth, 0.0).astype(np.float32), covered

"""Camera geometry in memory's float32 arithmetic: the constants the kernels use, world-to-camera,
pixel rays and unprojection (torch, any device). Below every other memory module."""

from __future__ import annotations

import numpy as np
import torch

from plugin_bridge.camera import Camera, Intrinsics


def float32_constants(intrinsics: Intrinsics) -> tuple[float, float, float, float, float]:
    """fx, fy, cx, cy and f_mean = (fx + fy) / 2, each rounded to float32 (as the kernel uses them)."""
    f32 = np.float32
    values = (intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy, (intrinsics.fx + intrinsics.fy) / 2)
    return tuple(float(f32(v)) for v in values)  # type: ignore[return-value]


def f32(value: float) -> float:
    """A python float holding the float32 nearest ``value``."""
    return float(np.float32(value))


def world_to_cam_torch(camera: Camera, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation [3, 3] and translation [3] (float32) taking world points into the camera frame."""
    w2c = camera.world_to_cam
    rot = torch.as_tensor(np.ascontiguousarray(w2c[:3, :3]), dtype=torch.float32, device=device)
    return rot, torch.as_tensor(w2c[:3, 3].copy(), dtype=torch.float32, device=device)


def pixel_rays_world(camera: Camera, pix: torch.Tensor) -> torch.Tensor:
    """World directions (float32 [K, 3], camera z component 1 before rotation) of flat pixel indices."""
    intr = camera.intrinsics
    u = (pix % intr.width).to(torch.float32)
    v = torch.div(pix, intr.width, rounding_mode="floor").to(torch.float32)
    dirs = torch.stack(((u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, torch.ones_like(u)), dim=-1)
    c2w = torch.as_tensor(
        np.ascontiguousarray(camera.cam_to_world[:3, :3]), dtype=torch.float32, device=pix.device
    )
    return dirs @ c2w.T


def unproject_pixels(camera: Camera, pix: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """World points (float32 [K, 3]) at planar ``depth`` [K] through the centres of flat pixels ``pix``."""
    intr = camera.intrinsics
    z = depth.to(torch.float64)
    u = (pix % intr.width).to(torch.float64)
    v = torch.div(pix, intr.width, rounding_mode="floor").to(torch.float64)
    cam = torch.stack(((u - intr.cx) / intr.fx * z, (v - intr.cy) / intr.fy * z, z), dim=-1)
    c2w = torch.as_tensor(camera.cam_to_world, dtype=torch.float64, device=pix.device)
    return (cam @ c2w[:3, :3].T + c2w[:3, 3]).to(torch.float32)

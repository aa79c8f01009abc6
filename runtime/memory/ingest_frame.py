"""Validation of what `SpatialMemory.ingest` is handed: arrays checked against the camera, normalised.

Errors say what was expected; nothing reaches memory before every check has passed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from runtime.memory.config import PROVENANCES


@dataclass
class IngestFrame:  # one ingested frame, validated and flattened (pixels in raster order)
    rgb: torch.Tensor  # [P, 3] uint8
    depth: torch.Tensor  # [P] float32: 0 unknown, +inf at infinity, else metres
    mask: torch.Tensor  # [P] bool: pixels allowed to add content
    object_ids: torch.Tensor | None  # [P] int32


def check_frame(
    camera, rgb, depth, provenance, frame_index, mask, object_ids, far: float, device
) -> IngestFrame:
    """Validate an ingest's arrays against the camera and normalise them (flattened, on device)."""
    h, w = camera.intrinsics.height, camera.intrinsics.width
    if provenance not in PROVENANCES:
        raise ValueError(f"provenance={provenance!r}: use 1 (observed), 2 (generated) or 3 (imported)")
    if isinstance(frame_index, bool) or not isinstance(frame_index, int) or not 0 <= frame_index < 2**31:
        raise ValueError(f"frame_index={frame_index!r}: use an int in [0, 2**31)")
    rgb_t = _checked("rgb", rgb, (h, w, 3), "colour")
    depth_t = _checked("depth", depth, (h, w), "metres").to(device, torch.float32).reshape(-1)
    depth_t = torch.where(torch.isnan(depth_t) | (depth_t <= 0), 0.0, depth_t)
    depth_t = torch.where(depth_t > far, float("inf"), depth_t)
    if rgb_t.dtype != torch.uint8:
        rgb_t = torch.round(torch.nan_to_num(rgb_t.to(torch.float32)).clamp(0.0, 1.0) * 255.0).byte()
    mask_t = torch.ones(h * w, dtype=torch.bool, device=device)
    if mask is not None:
        mask_t = _checked("mask", mask, (h, w), "bool").to(device).reshape(-1)
    ids_t = None
    if object_ids is not None:
        ids_t = _checked("object_ids", object_ids, (h, w), "ids").to(device, torch.int64).reshape(-1)
        if ids_t.numel() and (int(ids_t.min()) < 0 or int(ids_t.max()) >= 2**31):
            raise ValueError("object_ids must lie in [0, 2**31)")
        ids_t = ids_t.to(torch.int32)
    return IngestFrame(rgb=rgb_t.to(device).reshape(-1, 3), depth=depth_t, mask=mask_t, object_ids=ids_t)


_KINDS = {  # what an ingest array may hold: (description for the error, dtype test)
    "colour": ("uint8 or float 0..1", lambda t: t.dtype == torch.uint8 or t.is_floating_point()),
    "metres": ("float metres", lambda t: t.is_floating_point()),
    "bool": ("bool", lambda t: t.dtype == torch.bool),
    "ids": ("integers", lambda t: not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)),
}


def _checked(name: str, value, shape: tuple[int, ...], kind: str) -> torch.Tensor:
    """``value`` (numpy array or torch tensor) as a tensor, or ValueError saying what was expected."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "u" and value.dtype.itemsize > 1:  # torch lacks most uint ops: widen
            value = value.astype(np.int64)
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}")
    what, dtype_ok = _KINDS[kind]
    if tuple(value.shape) != shape or not dtype_ok(value):
        raise ValueError(
            f"{name} must be {what} of shape {shape} for this camera, got {value.dtype} {tuple(value.shape)}"
        )
    return value

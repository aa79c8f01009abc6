"""Free-space keyframes: what observations proved empty, so that generated content never lands there.

An observed RGB-D frame proves more than its surfaces: every ray from the camera to the surface it hit
passed through empty space. Carving (`runtime.memory.splat.free_space`) applies that to the points
memory holds when the frame arrives, but a generator guessing later, from another pose, knows nothing
of it: from B it may complete an unseen patch with a surface standing in the air between A and what
A saw. Back at A, that guess is drawn in front of the observed scene (the revisit no longer matches).

This module keeps the proof. Each observed frame refreshes a keyframe: its camera and its depth
min-pooled onto a grid of at most GRID x GRID cells (a cell holds the nearest surface any of its
pixels saw, so "in front of the cell's depth" is free for every pixel of the cell: conservative).
A point is in observed free space when some keyframe sees it in front of its cell's depth by more
than ``freespace_margin`` (relative). `FreeSpaceKeyframes.respect` moves each generated point that
would land there back along its own camera ray (depth x STEP until no keyframe sees it in free space,
so the generating view, and a return to it, show the same pixel) and refuses the few it cannot place
(still in free space after MAX_STEPS, or beyond ``far``).

A new observation replaces the keyframe it nearly repeats (within ``trajectory_step_m`` and
SAME_VIEW_DEG of its optical axis, so a camera standing still keeps one fresh keyframe); otherwise it
takes a free slot or the oldest. Memory holds at most one keyframe per KEYFRAME_BUDGET_SHARE bytes of
budget (up to ``freespace_keyframes``), counted in the budget.
"""

from __future__ import annotations

import math

import torch

from plugin_bridge.camera import Camera
from runtime.memory.splat import float32_constants, unproject_pixels

GRID = 32
"""Keyframe depth grids are at most GRID x GRID cells (square cells of ceil(max(W, H) / GRID) pixels)."""
SAME_VIEW_DEG = 15.0
"""An observation within this angle (optical axes) and trajectory_step_m of a keyframe replaces it."""
STEP = 1.2
"""A generated point in observed free space moves back along its ray by this factor per try."""
MAX_STEPS = 16
"""Tries before a generated point is refused (1.2 ** 16: about 185 times its generated depth)."""
KEYFRAME_BUDGET_SHARE = 128 * 1024
"""Memory keeps at most one keyframe per this many bytes of budget (under 2% of it)."""
HALF_DIAGONAL = 0.5 * math.sqrt(
    2.0
)  # a new point's radius: half a pixel diagonal (as SpatialMemory makes it)
_BLOCK = 8192  # points tested against all keyframes at once ([K, block] intermediates)
_FIELDS = (  # name, dtype, trailing shape, empty value (KEYFRAME_FIELDS: what a snapshot stores)
    ("w2c", torch.float32, (3, 4), 0.0),  # world -> camera rows
    ("intrinsics", torch.float32, (4,), 0.0),  # fx, fy, cx, cy of the observed image (float32-rounded)
    ("size", torch.int32, (3,), 0),  # image width, height, cell side in pixels
    ("frame", torch.int32, (), -1),  # frame index of the observation (-1: empty slot)
    ("position", torch.float64, (3,), 0.0),  # camera position (world)
    ("axis", torch.float64, (3,), 0.0),  # optical axis (world, unit)
    ("depth", torch.float16, (GRID, GRID), 0.0),  # min-pooled depth, +inf where all saw infinity
)
KEYFRAME_FIELDS = tuple((name, dtype, shape) for name, dtype, shape, _ in _FIELDS)


def keyframe_capacity(budget_bytes: int, wanted: int) -> int:
    """Keyframes a memory of ``budget_bytes`` keeps when ``wanted`` are asked for."""
    return max(0, min(int(wanted), int(budget_bytes) // KEYFRAME_BUDGET_SHARE))


class FreeSpaceKeyframes:
    """Up to ``capacity`` keyframes of observed free space (slots; empty ones have frame -1)."""

    def __init__(self, capacity: int, device: torch.device):
        self.capacity = int(capacity)
        self.device = device
        self.slots = {n: torch.full((self.capacity, *s), e, dtype=d, device=device) for n, d, s, e in _FIELDS}

    @staticmethod
    def nbytes_for(capacity: int) -> int:
        return int(capacity) * sum(d.itemsize * math.prod(s) for _, d, s, _ in _FIELDS)

    @property
    def nbytes(self) -> int:
        return self.nbytes_for(self.capacity)

    def clear(self) -> None:
        for name, _, _, empty in _FIELDS:
            self.slots[name].fill_(empty)

    def used(self) -> torch.Tensor:
        """Slots holding a keyframe, oldest observation first (int64)."""
        frame = self.slots["frame"]
        used = (frame >= 0).nonzero().squeeze(1)
        return used[torch.argsort(frame[used], stable=True)]

    @property
    def count(self) -> int:
        return int((self.slots["frame"] >= 0).sum())

    def expire(self, horizon: int) -> None:
        """Forget keyframes observed at or before frame ``horizon`` (window mode)."""
        old = (self.slots["frame"] >= 0) & (self.slots["frame"] <= horizon)
        self.slots["frame"][old] = -1

    # -- writing -----------------------------------------------------------------------------------
    def observe(self, camera: Camera, depth: torch.Tensor, frame_index: int, step_m: float) -> None:
        """Keep the free space observed ``depth`` ([P] or [H, W] float32: 0 unknown, +inf at infinity)
        proves, from ``camera``."""
        if self.capacity == 0:
            return
        position = torch.as_tensor(camera.position, dtype=torch.float64, device=self.device)
        axis = torch.as_tensor(camera.cam_to_world[:3, 2], dtype=torch.float64, device=self.device)
        slot = self._slot_for(position, axis, step_m)
        k = camera.intrinsics
        width, height = k.width, k.height
        cell = -(-max(width, height) // GRID)
        grid = torch.full((GRID * cell, GRID * cell), float("inf"), dtype=torch.float32, device=self.device)
        grid[:height, :width] = depth.reshape(height, width)
        pooled = grid.reshape(GRID, cell, GRID, cell).amin(dim=(1, 3))
        s = self.slots
        s["w2c"][slot] = torch.as_tensor(camera.world_to_cam[:3, :4], dtype=torch.float32, device=self.device)
        s["intrinsics"][slot] = torch.tensor(
            float32_constants(k)[:4], dtype=torch.float32, device=self.device
        )
        s["size"][slot] = torch.tensor((width, height, cell), dtype=torch.int32, device=self.device)
        s["frame"][slot] = int(frame_index)
        s["position"][slot] = position
        s["axis"][slot] = axis
        s["depth"][slot] = pooled.to(torch.float16)  # float16 rounds by under 0.05%, far below the margin

    def _slot_for(self, position: torch.Tensor, axis: torch.Tensor, step_m: float) -> int:
        """The keyframe this view nearly repeats, else a free slot, else the oldest."""
        frame = self.slots["frame"]
        used = frame >= 0
        near = (self.slots["position"] - position).norm(dim=1) < step_m
        aligned = (self.slots["axis"] @ axis) >= math.cos(math.radians(SAME_VIEW_DEG))
        same = (used & near & aligned).nonzero().squeeze(1)
        if same.numel():
            return int(same[0])
        free = (~used).nonzero().squeeze(1)
        if free.numel():
            return int(free[0])
        return int(torch.argmin(frame))

    def restore(self, slots: dict[str, torch.Tensor]) -> None:
        """Load keyframes [K, ...] (oldest first, K <= capacity) as a snapshot stores them."""
        self.clear()
        count = int(slots["frame"].shape[0])
        if count > self.capacity:
            raise ValueError(f"{count} keyframes do not fit a memory that keeps {self.capacity}")
        for name, *_ in _FIELDS:
            self.slots[name][:count] = slots[name].to(self.device, self.slots[name].dtype)

    def ordered(self) -> dict[str, torch.Tensor]:
        """The keyframes [K, ...], oldest first (what a snapshot stores)."""
        order = self.used()
        return {name: self.slots[name].index_select(0, order) for name, *_ in _FIELDS}

    # -- testing points ------------------------------------------------------------------------------
    def in_free_space(
        self, xyz: torch.Tensor, radius: torch.Tensor, *, near: float, margin: float, max_radius_px: int
    ) -> torch.Tensor:
        """[M] bool: world points [M, 3] some keyframe saw in front of its surface by more than ``margin``
        (relative), or anywhere along a ray that reached infinity.

        A point counts as seen by a keyframe when its splat (half-size ``radius`` [M], world, in
        pixels as the render clamps it) reaches the keyframe's image: one just off the edge would
        still be drawn on the edge pixels; it is tested against the nearest edge cell.
        """
        free = torch.zeros(xyz.shape[0], dtype=torch.bool, device=self.device)
        used = self.used()
        if used.numel() == 0 or xyz.shape[0] == 0:
            return free
        s = {name: self.slots[name].index_select(0, used) for name, *_ in _FIELDS}
        rot, trans = s["w2c"][:, :, :3], s["w2c"][:, :, 3]
        fx, fy, cx, cy = (s["intrinsics"][:, i, None] for i in range(4))
        width, height, cell = (s["size"][:, i, None].to(torch.float32) for i in range(3))
        cells = s["depth"].to(torch.float32).reshape(-1)
        base = (torch.arange(used.numel(), device=self.device) * GRID * GRID)[:, None]
        keep = 1.0 - margin
        f_mean = (fx + fy) / 2.0
        for start in range(0, xyz.shape[0], _BLOCK):
            pts = xyz[start : start + _BLOCK].to(torch.float32)
            cam = torch.einsum("kij,mj->kmi", rot, pts) + trans[:, None, :]  # [K, m, 3]
            z = cam[..., 2]
            safe = torch.where(z > near, z, 1.0)
            u = cam[..., 0] / safe * fx + cx
            v = cam[..., 1] / safe * fy + cy
            ext = (radius[None, start : start + pts.shape[0]] * f_mean / safe).clamp(
                0.5, float(max_radius_px)
            )
            inside = (z > near) & (u >= -0.5 - ext) & (u < width - 0.5 + ext)
            inside &= (v >= -0.5 - ext) & (v < height - 0.5 + ext)
            col = torch.floor((u + 0.5) / cell).clamp(0, GRID - 1).long()
            row = torch.floor((v + 0.5) / cell).clamp(0, GRID - 1).long()
            seen = cells[base + row * GRID + col]  # [K, m]
            hit = inside & (z < seen * keep)  # inf * keep stays inf: a ray to infinity frees all of it
            free[start : start + pts.shape[0]] = hit.any(dim=0)
        return free

    def respect(
        self,
        camera: Camera,
        depth: torch.Tensor,
        add: torch.Tensor,
        *,
        near: float,
        far: float,
        margin: float,
        max_radius_px: int,
    ) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """Move generated pixels out of observed free space along their rays.

        ``depth`` [P] (the frame's, metres), ``add`` [P] bool (pixels about to become points). Returns
        (depth with moved pixels farther, add without refused pixels, moved count, refused count).
        """
        pix = add.nonzero().squeeze(1)
        if pix.numel() == 0 or self.count == 0:
            return depth, add, 0, 0
        z = depth.index_select(0, pix)
        k = camera.intrinsics
        per_metre = HALF_DIAGONAL / ((k.fx + k.fy) / 2.0)  # a new point's radius per metre of depth

        def free(pixels: torch.Tensor, zs: torch.Tensor) -> torch.Tensor:
            return self.in_free_space(
                unproject_pixels(camera, pixels, zs), zs * per_metre,
                near=near, margin=margin, max_radius_px=max_radius_px,
            )  # fmt: skip

        bad = free(pix, z)
        if not bool(bad.any()):
            return depth, add, 0, 0
        moving, zm = pix[bad], z[bad]
        placed = torch.zeros_like(moving, dtype=torch.bool)
        todo = torch.arange(moving.numel(), device=self.device)
        for _ in range(MAX_STEPS):
            zm[todo] = zm[todo] * STEP
            todo = todo[zm[todo] <= far]  # past far it would be content at infinity: refused
            if todo.numel() == 0:
                break
            still = free(moving[todo], zm[todo])
            placed[todo[~still]] = True
            todo = todo[still]
        depth = depth.clone()
        add = add.clone()
        depth[moving[placed]] = zm[placed]
        add[moving[~placed]] = False
        moved = int(placed.sum())
        return depth, add, moved, int(moving.numel()) - moved

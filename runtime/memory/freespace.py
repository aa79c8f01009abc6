"""Free-space keyframes: what observations proved empty, so that generated content never lands there.

An observed RGB-D frame proves more than its surfaces: every ray from the camera to the surface it hit
passed through empty space. Carving (`runtime.memory.splat.free_space`) applies that to the points
memory holds when the frame arrives, but a generator guessing later, from another pose, knows nothing
of it: from B it may complete an unseen patch with a surface standing in the air between A and what
A saw. Back at A, that guess is drawn in front of the observed scene (the revisit no longer matches).

This module keeps the proof. An observed frame becomes a keyframe: its camera and its depth
max-pooled onto a grid of GRID x GRID cells (a cell holds the farthest surface any of its pixels
saw; unknown depth counts only where the whole cell is unknown, and then proves nothing). A point
is in a keyframe's free space when the keyframe sees it (its splat reaches the image) in front of
its cell's depth by more than ``freespace_margin`` (relative). The farthest surface, not the nearest:
a point in front of any part of a cell could, with its splat, hide that part when the keyframe's
view is seen again (the usual case is a disocclusion sliver next to a silhouette, whose guessed
depth lands between the object and the background behind it). `FreeSpaceKeyframes.respect` moves
each generated point that would stand there back along its own camera ray (so the generating view,
and a return to it, show the same pixel) until no keyframe sees it in free space, jumping by what
the worst keyframe asks, and refuses those it cannot place (still in free space after MAX_STEPS, or
more than MAX_MOVE times farther than guessed, or beyond ``far``).

Generated frames keep keyframes too, of what was shown to the client: once a view showed a surface at
some depth, a later guess from elsewhere must not stand in front of it either (a return to that view
would show the guess). A frame that nearly repeats a keyframe (within
``trajectory_step_m`` and SAME_VIEW_DEG of its optical axis) adds nothing, unless it is observed and
the keyframe generated (the truth takes over); keeping the older view, rather than refreshing it,
stops a keyframe from sliding along with a slowly moving camera and so leaves one every half metre
or so of the path. Otherwise a frame takes a free slot, else the oldest generated keyframe's, else
(observed frames only) the oldest's. Memory holds at most one keyframe per KEYFRAME_BUDGET_SHARE bytes of
budget (up to ``freespace_keyframes``), counted in the budget.
"""

from __future__ import annotations

import math

import torch

from plugin_bridge.camera import Camera
from runtime.memory.geometry import float32_constants, unproject_pixels

GRID = 32
"""Keyframe depth grids are at most GRID x GRID cells (square cells of ceil(max(W, H) / GRID) pixels)."""
SAME_VIEW_DEG = 15.0
"""An observation within this angle (optical axes) and trajectory_step_m of a keyframe replaces it."""
STEP = 1.2
"""A generated point in a keyframe's free space moves back along its ray at least this factor a try ..."""
MAX_JUMP = 4.0
"""... and at most this factor (a keyframe that saw infinity there asks for an infinite one)."""
JUMP_SLACK = 1.02
"""A try moves a point 2% past what the worst keyframe asks (which is exact along that keyframe's rays)."""
MAX_STEPS = 8
"""Tries before a generated point is refused."""
MAX_MOVE = 3.0
"""A generated point is refused rather than moved more than this many times its generated depth (or
past ``far``): one that far off its guess belongs nowhere in particular, and scattering such points
far away would fill the chunk table with sparse, distant chunks."""
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
    ("observed", torch.uint8, (), 0),  # 1: an observed frame's (the truth), 0: a generated frame's
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
    def observe(
        self, camera: Camera, depth: torch.Tensor, frame_index: int, step_m: float, *, observed: bool = True
    ) -> None:
        """Keep the free space ``depth`` ([P] or [H, W] float32: 0 unknown, +inf at infinity) shows from
        ``camera``: an observed frame's (proven), or a generated frame's as shown to the client (what
        was shown stays: a later guess must not appear in front of it)."""
        if self.capacity == 0:
            return
        position = torch.as_tensor(camera.position, dtype=torch.float64, device=self.device)
        axis = torch.as_tensor(camera.cam_to_world[:3, 2], dtype=torch.float64, device=self.device)
        slot = self._slot_for(position, axis, step_m, observed)
        if slot < 0:
            return
        k = camera.intrinsics
        width, height = k.width, k.height
        cell = -(-max(width, height) // GRID)
        grid = torch.zeros(GRID * cell, GRID * cell, dtype=torch.float32, device=self.device)
        grid[:height, :width] = depth.reshape(height, width)  # past the image: 0, proves nothing
        pooled = grid.reshape(GRID, cell, GRID, cell).amax(dim=(1, 3))
        s = self.slots
        s["w2c"][slot] = torch.as_tensor(camera.world_to_cam[:3, :4], dtype=torch.float32, device=self.device)
        s["intrinsics"][slot] = torch.tensor(
            float32_constants(k)[:4], dtype=torch.float32, device=self.device
        )
        s["size"][slot] = torch.tensor((width, height, cell), dtype=torch.int32, device=self.device)
        s["frame"][slot] = int(frame_index)
        s["observed"][slot] = int(observed)
        s["position"][slot] = position
        s["axis"][slot] = axis
        s["depth"][slot] = pooled.to(torch.float16)  # float16 rounds by under 0.05%, far below the margin

    def _slot_for(self, position: torch.Tensor, axis: torch.Tensor, step_m: float, observed: bool) -> int:
        """The keyframe this view nearly repeats, else a free slot, else the oldest generated one, else
        (for an observed view) the oldest; -1 when a generated view would displace an observed one."""
        frame = self.slots["frame"]
        used = frame >= 0
        kept_observed = self.slots["observed"] == 1
        near = (self.slots["position"] - position).norm(dim=1) < step_m
        aligned = (self.slots["axis"] @ axis) >= math.cos(math.radians(SAME_VIEW_DEG))
        same = (used & near & aligned).nonzero().squeeze(1)
        if same.numel():  # already kept: an observed view takes over a generated keyframe, else no change
            generated_same = same[~kept_observed[same]]
            return int(generated_same[0]) if observed and generated_same.numel() else -1
        free = (~used).nonzero().squeeze(1)
        if free.numel():
            return int(free[0])
        generated = (~kept_observed).nonzero().squeeze(1)
        if generated.numel():
            return int(generated[torch.argmin(frame[generated])])
        return int(torch.argmin(frame)) if observed else -1

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
        """[M] bool: world points [M, 3] that some keyframe would see in front of what it showed (see
        `needed_factor`)."""
        return self.needed_factor(xyz, radius, near=near, margin=margin, max_radius_px=max_radius_px) > 1.0

    def needed_factor(
        self,
        xyz: torch.Tensor,
        radius: torch.Tensor,
        *,
        near: float,
        margin: float,
        max_radius_px: int,
        arrays: tuple | None = None,
    ) -> torch.Tensor:
        """[M] float: how many times farther from each keyframe a world point [M, 3] would have to be so
        that no keyframe sees it in front of its cell's farthest surface by more than ``margin``
        (relative); <= 1 where none does, +inf where a keyframe saw its ray reach infinity.

        A point counts as seen by a keyframe when its splat (half-size ``radius`` [M], world, in
        pixels as the render clamps it) reaches the keyframe's image: one just off the edge would
        still be drawn on the edge pixels; it is tested against the nearest edge cell. ``arrays``:
        `_gathered()` taken once for several calls while the keyframes do not change.
        """
        need = torch.zeros(xyz.shape[0], dtype=torch.float32, device=self.device)
        arrays = self._gathered() if arrays is None else arrays
        if arrays is None or xyz.shape[0] == 0:
            return need
        rot, trans, fx, fy, cx, cy, width, height, cell, last_col, last_row, cells, base = arrays
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
            col = torch.minimum(torch.floor((u + 0.5) / cell).clamp(min=0), last_col).long()
            row = torch.minimum(torch.floor((v + 0.5) / cell).clamp(min=0), last_row).long()
            seen = cells[base + row * GRID + col]  # [K, m]
            ratio = torch.where(inside, seen * keep / safe, 0.0)  # inf * keep stays inf
            need[start : start + pts.shape[0]] = ratio.amax(dim=0)
        return need

    def _gathered(self) -> tuple | None:
        """The kept keyframes' arrays as `needed_factor` reads them ([K, 1] columns, flat cell depths
        and each keyframe's first cell), or None when there are none."""
        used = self.used()
        if used.numel() == 0:
            return None
        s = {name: self.slots[name].index_select(0, used) for name, *_ in _FIELDS}
        fx, fy, cx, cy = (s["intrinsics"][:, i, None] for i in range(4))
        width, height, cell = (s["size"][:, i, None].to(torch.float32) for i in range(3))
        last_col, last_row = (
            torch.ceil(width / cell) - 1.0,
            torch.ceil(height / cell) - 1.0,
        )  # the image's cells
        cells = s["depth"].to(torch.float32).reshape(-1)
        base = (torch.arange(used.numel(), device=self.device) * GRID * GRID)[:, None]
        rot, trans = s["w2c"][:, :, :3], s["w2c"][:, :, 3]
        return rot, trans, fx, fy, cx, cy, width, height, cell, last_col, last_row, cells, base

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
        arrays = self._gathered() if pix.numel() else None  # the keyframes do not change in here
        if arrays is None:
            return depth, add, 0, 0
        z = depth.index_select(0, pix)
        k = camera.intrinsics
        per_metre = HALF_DIAGONAL / ((k.fx + k.fy) / 2.0)  # a new point's radius per metre of depth

        def need(pixels: torch.Tensor, zs: torch.Tensor) -> torch.Tensor:
            return self.needed_factor(
                unproject_pixels(camera, pixels, zs), zs * per_metre,
                near=near, margin=margin, max_radius_px=max_radius_px, arrays=arrays,
            )  # fmt: skip

        factor = need(pix, z)
        bad = factor > 1.0
        if not bool(bad.any()):
            return depth, add, 0, 0
        moving, zm, factor = pix[bad], z[bad], factor[bad]
        limit = torch.clamp(zm * MAX_MOVE, max=far)  # farther: content at infinity, or far off the guess
        placed = torch.zeros_like(moving, dtype=torch.bool)
        todo = torch.arange(moving.numel(), device=self.device)
        for _ in range(MAX_STEPS):
            # jump by what the worst keyframe asks (exact when it looks along the same ray), at least STEP
            zm[todo] = zm[todo] * (factor * JUMP_SLACK).clamp(STEP, MAX_JUMP)
            todo = todo[zm[todo] <= limit[todo]]  # refused past the limit
            if todo.numel() == 0:
                break
            factor = need(moving[todo], zm[todo])
            placed[todo[factor <= 1.0]] = True
            todo, factor = todo[factor > 1.0], factor[factor > 1.0]
        depth = depth.clone()
        add = add.clone()
        depth[moving[placed]] = zm[placed]
        add[moving[~placed]] = False
        moved = int(placed.sum())
        return depth, add, moved, int(moving.numel()) - moved

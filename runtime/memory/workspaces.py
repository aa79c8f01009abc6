"""Work arrays for the splat and render kernels (`runtime.memory.splat_fast`), kept and reused: fresh
arrays of these sizes would cost more in page faults than the kernels themselves. Plain numpy (no
numba), so the kernels' files keep their compiled cache."""

from __future__ import annotations

import threading

import numpy as np

RENDER_BLOCK = 1 << 14
"""Members `render_kernel` projects at a time: its work space (60 bytes a member, 0.94 MiB) does not
grow with what the view reaches. A view with more members than a block (per thread) is gathered and
projected again for its winners pass: blocks of 65,536 kept that pass cheaper at 256x256 (about
0.2 ms) but held 3.75 MiB a work space, 6 MiB more resident memory for a session's render split over
two threads."""


_local = threading.local()


def workspace(n: int, hw: int) -> tuple[np.ndarray, ...]:
    """This thread's work arrays for `splat_kernel` (grown as needed, then reused: fresh arrays of this
    size would cost more in page faults than the kernel itself)."""
    ws = getattr(_local, "splat", None)
    cap, cap_hw = (0, 0) if ws is None else (ws[0].shape[0], ws[4].shape[0] - 3)
    if cap < n or cap_hw < hw:
        cap = cap if cap >= n else max(1024, n + n // 4)
        cap_hw = max(cap_hw, hw)
        ws = (
            np.empty(cap, np.float32),
            np.empty(cap, np.float32),
            np.empty(cap, np.float32),
            np.empty((5, cap), np.int32),
            np.empty(cap_hw + 3, np.int32),
            np.empty(cap_hw + 3, np.int64),
        )
        _local.splat = ws
    return ws


def render_workspace(hw: int) -> tuple[np.ndarray, ...]:
    """A work space for `render_kernel` at an image of ``hw`` pixels, taken from the shared spares (or
    made): a block of RENDER_BLOCK members (x, y, z, radius, bias float32, ids int64; pu, pv, pz
    float32, ranges int32 [5, B]) and the per-pixel zbits, kbuf. Hand it back with
    `release_render_workspace` when the render is done: spares are shared by all threads, so the
    process holds as many work spaces as renders ever ran at once (two for one session's render split
    over two threads), not one per thread that ever rendered (every gRPC worker and the helper)."""
    with _spare_lock:
        for i, ws in enumerate(_spare):
            if ws[-2].shape[0] >= hw + 3:
                return _spare.pop(i)
        if _spare:
            _spare.pop()  # too small for this image: made again at this size below
    return new_render_workspace(RENDER_BLOCK, hw)


def release_render_workspace(ws: tuple[np.ndarray, ...]) -> None:
    """Give back a work space from `render_workspace` (one of another block size is dropped)."""
    if ws[0].shape[0] == RENDER_BLOCK:
        with _spare_lock:
            _spare.append(ws)


_spare: list[tuple[np.ndarray, ...]] = []
_spare_lock = threading.Lock()


def new_render_workspace(block: int, hw: int) -> tuple[np.ndarray, ...]:
    """Fresh `render_kernel` work space for blocks of ``block`` members and ``hw`` pixels."""
    return (
        *(np.empty(block, np.float32) for _ in range(5)),
        np.empty(block, np.int64),
        *(np.empty(block, np.float32) for _ in range(3)),
        np.empty((5, block), np.int32),
        np.empty(hw + 3, np.int32),
        np.empty(hw + 3, np.int64),
    )

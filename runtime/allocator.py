"""Keep the process's resident memory flat over long sessions (glibc malloc tuning).

The frame loop allocates and frees the same few hundred kilobyte-to-megabyte torch buffers every
frame. glibc serves a freed large block's successors from the heap once its adaptive mmap threshold
has risen (it rises each time an mmapped block is freed, up to 32 MiB), and per-thread arenas keep
their freed pages; over thousands of frames resident memory creeps up although nothing is leaked.
Fixing the mmap threshold (large buffers are mmapped and returned to the system when freed), capping
the arena count and trimming after bursts keeps it flat. No effect (and no error) off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

MMAP_THRESHOLD_BYTES = 256 * 1024
"""Blocks at least this large are mmapped (and unmapped when freed) instead of carved from a heap."""
TRIM_THRESHOLD_BYTES = 4 * 1024 * 1024
"""Free memory at the top of the heap beyond this goes back to the system."""
ARENA_MAX = 2
"""malloc arenas (the default is 8 per core; worker threads then each grow their own)."""

DISABLE_ENV = "MIRAGE_MALLOC_TUNING"
"""Set to 0 to leave malloc as it is (to measure the difference)."""
TRIM_EVERY = 500
"""Frames (all sessions together) between calls to malloc_trim."""

_lock = threading.Lock()
_state: dict[str, object] = {"tuned": None, "frames": 0}


def _libc():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018 - present on glibc only
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def tune_malloc() -> bool:
    """Apply the settings above once per process; True when glibc accepted all of them."""
    with _lock:
        if _state["tuned"] is not None:
            return bool(_state["tuned"])
        libc = None if os.environ.get(DISABLE_ENV) == "0" else _libc()
        ok = False
        if libc is not None:
            ok = all(
                libc.mallopt(param, value) == 1
                for param, value in (
                    (M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
                    (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
                    (M_ARENA_MAX, ARENA_MAX),
                )
            )
        _state["tuned"] = ok
        _state["libc"] = libc
        if not ok:
            log.info(
                "malloc tuning not applied (off, or not glibc); resident memory may creep on long sessions"
            )
        return ok


def trim() -> None:
    """Return free heap memory to the system (a few milliseconds; call every few hundred frames)."""
    libc = _state.get("libc")
    if libc is not None:
        libc.malloc_trim(0)


def frame_done() -> None:
    """Count a served frame; every TRIM_EVERY frames, trim (on the calling worker thread)."""
    with _lock:
        _state["frames"] = int(_state["frames"]) + 1
        due = int(_state["frames"]) % TRIM_EVERY == 0
    if due:
        trim()

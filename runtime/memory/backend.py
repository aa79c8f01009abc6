"""The one place that chooses memory's kernels: compiled numba, or the torch reference twin.

Every optimised path in memory (splat, free-space test, the fused render, ingest's bookkeeping,
packed-chunk decoding) has a torch twin that gives the same bits; the numba kernels are used for CPU
tensors when numba imports and the environment variable ``MIRAGE_SPLAT_KERNEL`` is not ``torch``
(read at every call, so tests can force either path). Callers ask here and take their torch path on
None; nothing else reads the variable or imports the kernel modules.
"""

from __future__ import annotations

import os

import torch

KERNEL_ENV = "MIRAGE_SPLAT_KERNEL"
"""Set to ``torch`` to force every torch path (the reference); anything else leaves numba in use."""

_splat_module = None  # runtime.memory.splat_fast once imported; False when numba is missing
_kernels_module = None  # runtime.memory.kernels once imported; False when numba is missing


def torch_forced() -> bool:
    """Whether ``MIRAGE_SPLAT_KERNEL=torch`` asks for the torch paths."""
    return os.environ.get(KERNEL_ENV, "") == "torch"


def splat_kernels():
    """`runtime.memory.splat_fast` (the splat and free-space kernels) when numba imports and the torch
    path is not forced, else None."""
    global _splat_module
    if torch_forced():
        return None
    if _splat_module is None:
        try:
            from runtime.memory import splat_fast
        except ImportError:
            _splat_module = False
        else:
            _splat_module = splat_fast
    return _splat_module or None


def fast_kernels(*tensors: torch.Tensor):
    """`runtime.memory.kernels` (the frame loop's numba kernels) when numba imports, every tensor
    given lives on the CPU and the torch path is not forced; else None: the caller takes its torch
    path (the reference, bit for bit the same)."""
    global _kernels_module
    if torch_forced() or any(t.device.type != "cpu" for t in tensors):
        return None
    if _kernels_module is None:
        try:
            from runtime.memory import kernels
        except ImportError:
            _kernels_module = False
        else:
            _kernels_module = kernels
    return _kernels_module or None

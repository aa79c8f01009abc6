"""Warm before SERVING: the first frame of the first session as fast as any other.

A fresh process pays once for what later frames get for free: numba loads (or compiles) the memory
kernels, torch and onnxruntime run their first operations, onnxruntime plans the generator for a new
input size, and memory's buffers are allocated. `warm_up` pays it before health says SERVING: for
each size of ``ServerConfig.warm_sizes`` it builds a throwaway session of the default generator
(never registered, never seen by a client), ingests one synthetic RGB-D observation, makes and
encodes two generate-mode frames, and closes it.
"""

from __future__ import annotations

import math
import time

import numpy as np

from plugin_bridge.camera import Intrinsics
from plugin_bridge.codec import DepthEncoding, FrameEncoding
from plugin_bridge.conventions import Convention
from runtime import wire
from runtime.registry import SessionRegistry
from runtime.session import Session
from runtime.types import ObservationInput, PoseInput, SessionSpec

WARM_BUDGET_BYTES = 16 * 2**20


def _yaw(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    pose = np.eye(4)
    pose[:3, :3] = [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]
    return pose


def warm_up(registry: SessionRegistry, sizes: tuple[int, ...]) -> dict[int, float]:
    """Run a throwaway session at each size (square frames); returns the milliseconds each took."""
    config = registry.config
    generator = registry.generator(config.generator.name)
    taken: dict[int, float] = {}
    for size in sizes:
        start = time.perf_counter()
        spec = SessionSpec(
            convention=Convention.OPENCV,
            units_per_meter=1.0,
            intrinsics=Intrinsics.from_fov(size, size, 60.0),
            frame_encoding=FrameEncoding.RAW_RGB8,
            depth_encoding=DepthEncoding.FLOAT16_METERS,
            jpeg_quality=90,
            generator=generator.name,
            budget_bytes=max(WARM_BUDGET_BYTES, config.memory.budget_bytes // 8),
            window_frames=0,
            seed=0,
            release_on_disconnect=False,
        )
        session = Session(spec, generator, config.memory)
        try:
            rng = np.random.default_rng(size)
            rgb = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
            depth = np.full((size, size), 3.0, dtype=np.float32)
            depth[: size // 4] = np.inf  # some sky: the environment map's kernels run too
            session.step_observation(
                ObservationInput(0, 0, _yaw(0.0), rgb, depth, None, return_frame=False, depth_masked=0)
            )
            for i, angle in enumerate((0.3, -0.3)):
                result = session.step_pose(PoseInput(i + 1, 0, _yaw(angle)))
                wire.frame_to_proto(result, spec, session.stats())
        finally:
            session.close()
        taken[size] = (time.perf_counter() - start) * 1e3
    return taken

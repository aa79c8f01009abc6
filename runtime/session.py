"""Sessions: one client's memory, generator and frame loop (no gRPC here).

The frame loop, per DESIGN.md: normalise the pose (done at the wire edge), render memory into the
target camera, then either observe (the client's RGB-D frame is the truth: ingest it and carve free
space) or generate (the ONNX generator completes what memory does not cover; covered pixels are kept
from memory), ingest the final frame, and prune to the budget inside ingest.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, replace

import numpy as np
import torch

from plugin_bridge.camera import Camera, Intrinsics
from runtime import allocator
from runtime.generator.host import GeneratorHost
from runtime.memory import (
    PROVENANCE_GENERATED,
    PROVENANCE_OBSERVED,
    MemoryConfig,
    MemoryRender,
    MemoryStats,
    SpatialMemory,
)
from runtime.types import FrameResult, ObservationInput, PoseInput, SessionSpec


@dataclass
class RenderView:
    """A memory render as plain numpy, for queries."""

    rgb: np.ndarray  # [H, W, 3] uint8
    depth: np.ndarray  # [H, W] float32; 0 uncovered, +inf environment
    coverage: np.ndarray  # [H, W] float32 0..1


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


class Session:
    """One client's state. Every public method takes the session lock; call them from worker threads."""

    def __init__(
        self, spec: SessionSpec, generator: GeneratorHost, memory_config: MemoryConfig, owner: str = ""
    ):
        self.id = uuid.uuid4().hex
        self.spec = spec
        self.owner = owner
        self.generator = generator
        self.memory = SpatialMemory(
            replace(
                memory_config,
                budget_bytes=spec.budget_bytes,
                window_frames=spec.window_frames,
                storage=spec.storage,
            )
        )
        self.frame_index = 0
        self.lock = threading.Lock()
        self.closed = False
        self.streaming = False
        self.last_used = time.monotonic()

    # -- frame loop ------------------------------------------------------------------------------
    def step_pose(self, request: PoseInput, commit: bool = True) -> FrameResult:
        """Generate mode: memory render completed by the generator; committed to memory unless told not."""
        with self.lock:
            self._check_open()
            t_start = time.perf_counter()
            camera = Camera(self.spec.intrinsics, request.cam_to_world)
            t0 = time.perf_counter()
            if commit:  # a what-if view changes nothing, tiering included
                self.memory.tier(camera)
            render = self.memory.render(camera)
            t1 = time.perf_counter()
            mem_rgb = render.rgb.numpy()
            mem_depth = render.depth.numpy()
            coverage = render.coverage.numpy()
            gen_rgb, gen_depth = self.generator.generate(
                mem_rgb,
                np.where(np.isfinite(mem_depth), mem_depth, 0.0).astype(np.float32),
                coverage,
                intrinsics=self.spec.intrinsics,
                seed=(self.spec.seed * 1_000_003 + self.frame_index) & 0x7FFFFFFF,
                detail=self.spec.detail,
            )
            t2 = time.perf_counter()
            covered = coverage >= 0.5
            rgb = _to_uint8(np.where(covered[..., None], mem_rgb, gen_rgb))
            depth = np.where(covered, mem_depth, gen_depth).astype(np.float32)
            t3 = time.perf_counter()
            if commit:
                self.memory.ingest(
                    camera,
                    rgb,
                    depth,
                    provenance=PROVENANCE_GENERATED,
                    frame_index=self.frame_index,
                    mask=torch.from_numpy(~covered),
                    render=render,
                )
            t4 = time.perf_counter()
            result = FrameResult(
                sequence=request.sequence,
                client_timestamp_us=request.client_timestamp_us,
                received_us=request.received_us,
                frame_index=self.frame_index,
                rgb=rgb,
                depth=depth,
                coverage=float(covered.mean()),
                observed=False,
                timings_ms={
                    "render_ms": (t1 - t0) * 1e3,
                    "generate_ms": (t2 - t1) * 1e3,
                    "compose_ms": (t3 - t2) * 1e3,
                    "ingest_ms": (t4 - t3) * 1e3,
                    "total_ms": (t4 - t_start) * 1e3,
                },
            )
            if commit:
                self.frame_index += 1
            self.last_used = time.monotonic()
        allocator.frame_done()
        return result

    def step_observation(self, obs: ObservationInput) -> FrameResult:
        """Observe mode: ingest the client's frame as the truth (carving free space)."""
        with self.lock:
            self._check_open()
            t_start = time.perf_counter()
            camera = Camera(self.spec.intrinsics, obs.cam_to_world)
            self.memory.tier(camera)
            render = self.memory.render(camera)
            t1 = time.perf_counter()
            ids = None if obs.instance_ids is None else torch.from_numpy(obs.instance_ids.astype(np.int32))
            self.memory.ingest(
                camera,
                torch.from_numpy(obs.rgb),
                torch.from_numpy(obs.depth),
                provenance=PROVENANCE_OBSERVED,
                frame_index=self.frame_index,
                object_ids=ids,
                render=render,
            )
            t2 = time.perf_counter()
            result = FrameResult(
                sequence=obs.sequence,
                client_timestamp_us=obs.client_timestamp_us,
                received_us=obs.received_us,
                frame_index=self.frame_index,
                rgb=obs.rgb,
                depth=obs.depth,
                coverage=float(render.coverage.numpy().mean()),
                observed=True,
                timings_ms={
                    "decode_ms": obs.decode_ms,
                    "render_ms": (t1 - t_start) * 1e3,
                    "ingest_ms": (t2 - t1) * 1e3,
                    "total_ms": (t2 - t_start) * 1e3 + obs.decode_ms,
                },
            )
            self.frame_index += 1
            self.last_used = time.monotonic()
        allocator.frame_done()
        return result

    # -- queries ---------------------------------------------------------------------------------
    def render_view(self, cam_to_world: np.ndarray, intrinsics: Intrinsics | None = None) -> RenderView:
        """Render memory from a pose without changing it."""
        with self.lock:
            self._check_open()
            render: MemoryRender = self.memory.render(
                Camera(intrinsics or self.spec.intrinsics, cam_to_world)
            )
            self.last_used = time.monotonic()
            return RenderView(
                rgb=_to_uint8(render.rgb.numpy()),
                depth=render.depth.numpy().astype(np.float32),
                coverage=render.coverage.numpy().astype(np.float32),
            )

    def stats(self) -> MemoryStats:
        with self.lock:
            return self.memory.stats()

    def reset_memory(self) -> None:
        with self.lock:
            self._check_open()
            self.memory.reset()

    def close(self) -> MemoryStats:
        with self.lock:
            stats = self.memory.stats()
            self.closed = True
            self.memory.reset()
            return stats

    def _check_open(self) -> None:
        if self.closed:
            raise SessionClosedError(f"session {self.id} is closed: open a new session")


class SessionClosedError(RuntimeError):
    pass

"""Sessions: one client's memory, generator and frame loop (no gRPC here).

The frame loop, per DESIGN.md: normalise the pose (done at the wire edge), render memory into the
target camera, then either observe (the client's RGB-D frame is the truth: ingest it and carve free
space) or generate (the ONNX generator completes what memory does not cover; covered pixels are kept
from memory), ingest the final frame, and prune to the budget inside ingest.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch

from plugin_bridge.camera import Camera, Intrinsics
from runtime import allocator
from runtime.generator.host import GeneratorHost
from runtime.memory import (
    PROVENANCE_GENERATED,
    PROVENANCE_IMPORTED,
    PROVENANCE_OBSERVED,
    MemoryConfig,
    MemoryRender,
    MemoryStats,
    SpatialMemory,
)
from runtime.memory.editing import ForgetStats
from runtime.memory.query import BoxContents, RayPick
from runtime.memory.snapshot import snapshot_bytes, snapshot_stream
from runtime.memory.snapshot_load import load_snapshot
from runtime.types import FrameResult, ObservationInput, PoseInput, SessionSpec

MAX_LABEL_CHARS = 128


@dataclass
class RenderView:
    """A memory render as plain numpy, for queries."""

    rgb: np.ndarray  # [H, W, 3] uint8
    depth: np.ndarray  # [H, W] float32; 0 uncovered, +inf environment
    coverage: np.ndarray  # [H, W] float32 0..1
    object_id: np.ndarray  # [H, W] uint32, 0 none
    provenance: np.ndarray  # [H, W] uint8, 0 where nothing covers
    confidence: np.ndarray  # [H, W] float32 0..1 (1 for the environment)


@dataclass(frozen=True)
class Checkpoint:
    """A session's memory as it was: its snapshot, held on the server."""

    id: str
    label: str
    frame_index: int
    points: int
    created_unix_us: int
    payload: bytes

    @property
    def nbytes(self) -> int:
        return len(self.payload)


class CheckpointNotFound(LookupError):
    """No checkpoint of this session has that id (NOT_FOUND)."""


class CheckpointLimit(RuntimeError):
    """The session holds as many checkpoints as it may (RESOURCE_EXHAUSTED)."""


class IncompatibleMemory(ValueError):
    """An imported memory the session cannot take (FAILED_PRECONDITION): other storage or window."""


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


class Session:
    """One client's state. Every public method takes the session lock; call them from worker threads."""

    def __init__(
        self,
        spec: SessionSpec,
        generator: GeneratorHost,
        memory_config: MemoryConfig,
        owner: str = "",
        session_id: str | None = None,
    ):
        self.id = session_id or uuid.uuid4().hex
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
        self.checkpoints: dict[str, Checkpoint] = {}  # oldest first
        self.durable_frame = 0  # frame_index at the last durable checkpoint (runtime.durable)
        self.lock = threading.Lock()
        self.closed = False
        self.streaming = False
        self.last_used = time.monotonic()
        self.opened_at = self.last_used
        self.last_stats = self.memory.stats()  # as of the last stats() (metrics read it without the lock)

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
            covered = coverage >= 0.5
            if covered.all():  # memory covers every pixel: the generator's output would go unused
                gen_rgb, gen_depth = mem_rgb, mem_depth
            else:
                gen_rgb, gen_depth = self.generator.generate(
                    mem_rgb,
                    np.where(np.isfinite(mem_depth), mem_depth, 0.0).astype(np.float32),
                    coverage,
                    intrinsics=self.spec.intrinsics,
                    seed=(self.spec.seed * 1_000_003 + self.frame_index) & 0x7FFFFFFF,
                    detail=self.spec.detail,
                )
            t2 = time.perf_counter()
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
                object_id=render.object_id.numpy().astype(np.uint32),
                provenance=render.provenance.numpy().astype(np.uint8),
                confidence=render.confidence.numpy().astype(np.float32),
            )

    def pick(self, origin: np.ndarray, direction: np.ndarray, **limits) -> RayPick:
        """The surfaces memory holds along a canonical ray (``SpatialMemory.pick``); changes nothing."""
        with self.lock:
            self._check_open()
            self.last_used = time.monotonic()
            return self.memory.pick(origin, direction, **limits)

    def box(self, lo: np.ndarray, hi: np.ndarray, max_points: int) -> BoxContents:
        """The points and objects in a canonical box (``SpatialMemory.box``); changes nothing."""
        with self.lock:
            self._check_open()
            self.last_used = time.monotonic()
            return self.memory.box(lo, hi, max_points=max_points)

    def stats(self) -> MemoryStats:
        with self.lock:
            self.last_stats = self.memory.stats()
            return self.last_stats

    def reset_memory(self) -> None:
        with self.lock:
            self._check_open()
            self.memory.reset()

    # -- export, import, checkpoints, provenance -------------------------------------------------
    @property
    def checkpoint_bytes(self) -> int:
        """Bytes the session's checkpoints hold (they count against the server's memory)."""
        return sum(c.nbytes for c in list(self.checkpoints.values()))

    def metadata(self) -> dict:
        """What an export of this session says about it (bound to the sealed stream)."""
        stats = self.memory.stats()
        return {
            "session_id": self.id,
            "owner": self.owner,
            "storage": self.memory.config.storage,
            "window_frames": self.memory.config.window_frames,
            "budget_bytes": self.memory.config.budget_bytes,
            "points": stats.points,
            "frames_ingested": stats.frames_ingested,
            "frame_index": self.frame_index,
        }

    def export_payload(self, chunk_bytes: int) -> tuple[int, Iterator[bytes], dict]:
        """(size, pieces, metadata) of the memory's snapshot, copied now (later frames do not change it)."""
        with self.lock:
            self._check_open()
            size, pieces = snapshot_stream(self.memory, chunk_bytes)
            self.last_used = time.monotonic()
            return size, pieces, self.metadata()

    def import_payload(self, payload: bytes, keep_provenance: bool) -> MemoryStats:
        """Replace the memory with the snapshot ``payload`` (SnapshotError / IncompatibleMemory leave it
        as it was). Unless ``keep_provenance``, everything it holds becomes imported."""
        memory = self._load(payload)
        if not keep_provenance:
            memory.relabel(PROVENANCE_IMPORTED)
        with self.lock:
            self._check_open()
            self.memory = memory
            self.last_used = time.monotonic()
            return memory.stats()

    def restore(self, payload: bytes, frame_index: int) -> MemoryStats:
        """Resume: the memory of a durable checkpoint (`runtime.durable`) and the frames counted then."""
        memory = self._load(payload)
        with self.lock:
            self._check_open()
            self.memory = memory
            self.frame_index = int(frame_index)
            self.durable_frame = self.frame_index
            return memory.stats()

    def _load(self, payload: bytes) -> SpatialMemory:
        """A memory from a snapshot, fitted to this session's budget; refused when the session could not
        serve it as it is (another storage or window)."""
        memory = load_snapshot(payload, budget_bytes=self.spec.budget_bytes)
        config = memory.config
        if config.storage != self.spec.storage or config.window_frames != self.spec.window_frames:
            raise IncompatibleMemory(
                f"the memory holds storage={config.storage!r}, window_frames={config.window_frames}; this session "
                f"has storage={self.spec.storage!r}, window_frames={self.spec.window_frames}: open a session "
                "with the same memory options to take it"
            )
        return memory

    def checkpoint(
        self, label: str, admit: Callable[[int, Callable[[], None]], None], limit: int
    ) -> Checkpoint:
        """Keep the memory as it is now (at most ``limit`` checkpoints); ``admit(nbytes, keep)`` calls
        ``keep`` (which adds the checkpoint) if the server can hold it, else raises
        (`SessionRegistry.admit_checkpoint`, called outside the session lock: the registry takes session
        locks under its own)."""
        if len(label) > MAX_LABEL_CHARS:
            raise ValueError(f"checkpoint label of {len(label)} characters: use at most {MAX_LABEL_CHARS}")

        def full() -> CheckpointLimit:
            return CheckpointLimit(
                f"session {self.id} holds {len(self.checkpoints)} checkpoints (the limit): delete one first"
            )

        with self.lock:
            self._check_open()
            if len(self.checkpoints) >= limit:
                raise full()
            checkpoint = Checkpoint(
                id=secrets.token_hex(8),
                label=label,
                frame_index=self.frame_index,
                points=self.memory.num_points,
                created_unix_us=time.time_ns() // 1000,
                payload=snapshot_bytes(self.memory),
            )
            self.last_used = time.monotonic()

        def keep() -> None:
            self._check_open()
            if len(self.checkpoints) >= limit:  # another call took the last place meanwhile
                raise full()
            self.checkpoints[checkpoint.id] = checkpoint

        admit(checkpoint.nbytes, keep)
        return checkpoint

    def rollback(self, checkpoint_id: str) -> tuple[Checkpoint, MemoryStats]:
        """The memory becomes exactly what it was at the checkpoint (which stays)."""
        with self.lock:
            self._check_open()
            checkpoint = self._checkpoint(checkpoint_id)
        memory = load_snapshot(
            checkpoint.payload, budget_bytes=self.spec.budget_bytes
        )  # frames go on meanwhile
        with self.lock:
            self._check_open()
            self.memory = memory
            self.last_used = time.monotonic()
            return checkpoint, memory.stats()

    def delete_checkpoint(self, checkpoint_id: str) -> Checkpoint:
        with self.lock:
            self._check_open()
            checkpoint = self._checkpoint(checkpoint_id)
            del self.checkpoints[checkpoint_id]
            return checkpoint

    def _checkpoint(self, checkpoint_id: str) -> Checkpoint:
        checkpoint = self.checkpoints.get(checkpoint_id)
        if checkpoint is None:
            raise CheckpointNotFound(
                f"session {self.id} has no checkpoint {checkpoint_id!r}: list them with ListCheckpoints"
            )
        return checkpoint

    def forget(self, provenance: int) -> tuple[ForgetStats, MemoryStats]:
        """Remove everything of one provenance from the memory."""
        with self.lock:
            self._check_open()
            stats = self.memory.forget(provenance)
            self.last_used = time.monotonic()
            return stats, self.memory.stats()

    def close(self) -> MemoryStats:
        with self.lock:
            stats = self.memory.stats()
            self.closed = True
            self.memory.reset()
            self.checkpoints.clear()
            return stats

    def _check_open(self) -> None:
        if self.closed:
            raise SessionClosedError(f"session {self.id} is closed: open a new session")


class SessionClosedError(RuntimeError):
    pass

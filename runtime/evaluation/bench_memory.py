"""Memory-side pieces of `mirage bench`: render+ingest cost against memory size, RSS, an exploring path.

`memory_scaling` fills a `SpatialMemory` directly (no gRPC, no generator) with a fixed visible set (engine
observations around one camera), times render + ingest at that camera, then grows memory about 10x with
content that camera cannot see (synthetic walls behind it) and times it again. A memory whose cost
follows what is visible gives a ratio near 1; one that projects every point grows with the total.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch

from plugin_bridge.camera import Camera
from plugin_bridge.conventions import look_at
from runtime.memory import PROVENANCE_GENERATED, PROVENANCE_OBSERVED, MemoryConfig, SpatialMemory

MiB = 2**20
SCALING_EYE = (0.0, -6.0, 1.6)
"""The fixed camera of the scaling measurement: on the lawn, where the cycle paths start ..."""
SCALING_TARGET = (0.0, 2.0, 0.8)
"""... looking at the object area (world +y, slightly down)."""
_WALL_DEPTH_M = 3.0  # synthetic walls stand this far in front of their own cameras
_WALL_SPACING_M = 4.0  # grid pitch of the synthetic cameras (their walls never overlap at 60 degrees)


def rss_mib(pid: int | None = None) -> float:
    """Resident set size (VmRSS) of process ``pid`` (None: this one), MiB; 0.0 where /proc is not
    available."""
    try:
        with open(f"/proc/{'self' if pid is None else int(pid)}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return 0.0


def exploring_path(
    frames: int,
    *,
    seed: int = 0,
    centre: tuple[float, float] = (0.0, 3.0),
    half_extent_m: tuple[float, float] = (8.5, 13.0),
    eye_height_m: float = 3.0,
) -> list[np.ndarray]:
    """``frames`` canonical poses on a Lissajous walk with an irrational frequency ratio over the lawn.

    The walk never closes on itself, so it keeps reaching new viewpoints (new positions, and old
    crossings at new headings) for as long as it runs: ~0.08 m per frame on average, within
    ``half_extent_m`` of ``centre`` (the open lawn of the built-in scenes), eye ``eye_height_m`` +- 0.3 m
    (above the props, never through them), looking ~3 m ahead and about 12 degrees down.
    """
    rng = np.random.default_rng(seed)
    ax, ay = half_extent_m
    w1, w2 = 1.0, math.sqrt(2.0)
    phase = float(rng.uniform(0.0, 2.0 * math.pi))
    dt = 0.08 / (0.64 * math.hypot(ax * w1, ay * w2))  # mean speed of the curve ~0.64 of its peak

    def point(t: float) -> np.ndarray:
        return np.array(
            [
                centre[0] + ax * math.sin(w1 * t),
                centre[1] + ay * math.sin(w2 * t + phase),
                eye_height_m + 0.3 * math.sin(3.1 * t),
            ]
        )

    poses: list[np.ndarray] = []
    forward = np.array([0.0, 1.0, 0.0])
    for i in range(int(frames)):
        t = i * dt
        eye = point(t)
        chord = point(t + 40 * dt) - eye
        chord[2] = 0.0
        if np.linalg.norm(chord) > 0.5:
            forward = chord / np.linalg.norm(chord)
        poses.append(look_at(eye, eye + 3.0 * forward + np.array([0.0, 0.0, -0.65])))
    return poses


def _wall_frame(k: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic observation k: a camera behind the fixed one looking away (-y) at a random-textured wall."""
    col, row = k % 8, k // 8
    eye = np.array(
        [(col - 3.5) * _WALL_SPACING_M, SCALING_EYE[1] - 1.0, SCALING_EYE[2] + row * _WALL_SPACING_M]
    )
    pose = look_at(eye, eye + np.array([0.0, -10.0, 0.0]))
    rgb = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    depth = np.full((size, size), _WALL_DEPTH_M, dtype=np.float32)
    return pose, rgb, depth


def _step(memory: SpatialMemory, camera: Camera, fill, frame_index: int) -> tuple[float, float]:
    """One generate-mode frame loop at ``camera`` without a generator (uncovered pixels take ``fill``,
    the fixed camera's own observation); returns (render ms, ingest ms)."""
    obs_rgb, obs_depth = fill
    t0 = time.perf_counter()
    render = memory.render(camera)
    t1 = time.perf_counter()
    covered = render.coverage.numpy() >= 0.5  # what Session.step_pose keeps from memory
    rgb = np.where(covered[..., None], np.rint(render.rgb.numpy() * 255.0), obs_rgb).astype(np.uint8)
    depth = np.where(covered, render.depth.numpy(), obs_depth).astype(np.float32)
    t2 = time.perf_counter()
    memory.ingest(
        camera,
        rgb,
        depth,
        provenance=PROVENANCE_GENERATED,
        frame_index=frame_index,
        mask=torch.from_numpy(~covered),
        render=render,
    )
    return (t1 - t0) * 1e3, (time.perf_counter() - t2) * 1e3


def _grow(memory: SpatialMemory, intrinsics, goal: int, frame_index: int, seed: int) -> tuple[int, int]:
    """Ingest synthetic walls behind the fixed camera until ``goal`` points; returns (walls, frame index)."""
    size = intrinsics.width
    rng = np.random.default_rng(seed)
    wall = 0
    while memory.num_points < goal:
        pose, rgb, depth = _wall_frame(wall, size, rng)
        mask = np.zeros(size * size, dtype=bool)
        mask[: goal - memory.num_points] = True  # the last wall lands exactly on the goal
        before = memory.num_points
        memory.ingest(
            Camera(intrinsics, pose),
            rgb,
            depth,
            provenance=PROVENANCE_OBSERVED,
            frame_index=frame_index,
            mask=mask.reshape(size, size),
        )
        if memory.num_points <= before:
            raise RuntimeError(f"synthetic wall {wall} added no points: the growth would never finish")
        frame_index += 1
        wall += 1
    return wall, frame_index


def memory_scaling(
    scene,  # PandaSceneSource: .intrinsics, .render(pose) -> (rgb, depth)
    *,
    reps: int = 20,
    warmup: int = 3,
    visible_views: int = 5,
    growth: int = 10,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Render+ingest median at a fixed camera with memory at 1x and at ``growth`` x (hidden content added).

    Two memories get the same visible set (``visible_views`` engine observations from the fixed camera
    and small offsets of it) and one settling frame loop at the camera; the second then grows to
    ``growth`` x the first's point count with synthetic walls behind the camera. Their frame loops are
    timed alternately (1x, 10x, 1x, ...), so a busy machine slows both alike and the ratio holds. The
    budget is large enough that nothing is pruned: both see the same visible set (``in_view_1x`` /
    ``in_view_10x``: points that passed the view test, to check it).
    """
    k = scene.intrinsics
    memories = [SpatialMemory(MemoryConfig(budget_bytes=4096 * MiB)) for _ in range(2)]
    target = np.asarray(SCALING_TARGET)
    offsets = [(0.0, 0.0), (-0.4, 0.0), (0.4, 0.0), (0.0, 0.25), (0.0, -0.25), (-0.8, 0.1), (0.8, -0.1)]
    views = []
    for dx, dz in offsets[: max(1, visible_views)]:
        pose = look_at(np.asarray(SCALING_EYE) + np.array([dx, 0.0, dz]), target)
        views.append((pose, *scene.render(pose)))
    fill = views[0][1:]  # the first view is the fixed camera's own
    camera = Camera(k, look_at(np.asarray(SCALING_EYE), target))
    frames = [0, 0]
    for m, memory in enumerate(memories):
        for pose, rgb, depth in views:
            memory.ingest(Camera(k, pose), rgb, depth, provenance=PROVENANCE_OBSERVED, frame_index=frames[m])
            frames[m] += 1
        _step(memory, camera, fill, frames[m])  # settle: uncovered pixels filled once
        frames[m] += 1
    walls, frames[1] = _grow(memories[1], k, growth * memories[0].num_points, frames[1], seed)

    times: list[list[tuple[float, float]]] = [[], []]
    for rep in range(warmup + reps):
        for m, memory in enumerate(memories):
            step = _step(memory, camera, fill, frames[m])
            frames[m] += 1
            if rep >= warmup:
                times[m].append(step)
            if progress is not None:
                progress(1)
    (render_1x, ingest_1x), (render_nx, ingest_nx) = (np.median(np.asarray(t), axis=0) for t in times)
    ri_1x, ri_nx = float(render_1x + ingest_1x), float(render_nx + ingest_nx)
    return {
        "size": int(k.width),
        "points_1x": int(memories[0].num_points),
        "points_10x": int(memories[1].num_points),
        "render_ingest_ms": ri_1x,
        "render_ingest_ms_10x": ri_nx,
        "ratio_10x": ri_nx / ri_1x if ri_1x > 0 else 0.0,
        "render_ms": float(render_1x),
        "ingest_ms": float(ingest_1x),
        "render_ms_10x": float(render_nx),
        "ingest_ms_10x": float(ingest_nx),
        "in_view_1x": int(memories[0].render(camera).points_in_view),
        "in_view_10x": int(memories[1].render(camera).points_in_view),
        "hidden_frames": walls,
    }

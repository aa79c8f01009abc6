"""Cycle tests through the real gRPC path: a camera path goes out and comes back along the same
poses; every return frame is compared with the outbound frame at the same pose (DESIGN.md).

Methods differ only in memory: `mirage` keeps persistent spatial memory, `windowK` keeps only what
the last K frames showed (the temporal-window baselines), `no_memory` keeps the previous frame only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from plugin_bridge.client import AsyncMirageClient
from plugin_bridge.types import Observation, Pose
from runtime.metrics import RevisitScores, revisit_scores

METHOD_WINDOWS: dict[str, int] = {"mirage": 0, "window16": 16, "window8": 8, "no_memory": 1}
"""Memory window per method (0: persistent)."""


@dataclass
class CycleRun:
    method: str
    frames: int  # outbound length N
    scores: RevisitScores
    seconds: float
    frames_rgb: list[np.ndarray]  # every streamed frame, in order
    pairs: list[tuple[int, int]]
    memory_points: list[int] = field(default_factory=list)
    memory_bytes: list[int] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    def pair_frames(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        return [self.frames_rgb[i] for i, _ in self.pairs], [self.frames_rgb[j] for _, j in self.pairs]

    def as_row(self) -> dict:
        return {
            "method": self.method,
            "frames": self.frames,
            "revisit_psnr": self.scores.psnr,
            "revisit_ssim": self.scores.ssim,
            "contextual_accuracy": self.scores.contextual_accuracy,
            "seconds": self.seconds,
        }


async def run_cycle(
    client: AsyncMirageClient,
    scene,  # PandaSceneSource: .intrinsics, .render(pose) -> (rgb, depth)
    path: list[np.ndarray],
    pairs: list[tuple[int, int]],
    *,
    method: str,
    seed_poses: list[np.ndarray],
    seed: int = 0,
    budget_bytes: int = 0,
    generator: str = "",
    progress: Callable[[int], None] | None = None,
) -> CycleRun:
    """Seed memory with engine observations at `seed_poses`, then stream `path` in generate mode
    (``generator``: exported model name, or ``NAME@DETAIL`` for a detail strength; empty for the
    server's default)."""
    from runtime.training.scoring import parse_generator

    started = time.perf_counter()
    name, detail = parse_generator(generator)
    info = await client.open_session(
        scene.intrinsics,
        window_frames=METHOD_WINDOWS[method],
        seed=seed,
        budget_bytes=budget_bytes,
        generator=name,
        generator_detail=detail,
    )
    stream = client.stream(info.session_id)
    try:
        for k, pose in enumerate(seed_poses):
            rgb, depth = scene.render(pose)
            await stream.send_observation(
                Observation(Pose.from_canonical(pose), rgb, depth, sequence=10_000_000 + k)
            )
        frames: list[np.ndarray] = []
        run = CycleRun(method, len(path) // 2, RevisitScores(0.0, 0.0, 0.0), 0.0, frames, pairs)
        for pose in path:
            t0 = time.perf_counter()
            frame = await stream.step(Pose.from_canonical(pose))
            run.latencies_ms.append((time.perf_counter() - t0) * 1e3)
            frames.append(frame.rgb)
            run.memory_points.append(frame.memory.points)
            run.memory_bytes.append(frame.memory.bytes_used)
            if progress is not None:
                progress(1)
        await stream.close()
    finally:
        await client.close_session(info.session_id)
    outbound, returned = run.pair_frames()
    run.scores = revisit_scores(outbound, returned)
    run.seconds = time.perf_counter() - started
    return run


def write_contact_sheet(runs: list[CycleRun], path: Path, columns: int = 6) -> None:
    """PNG of outbound against return frames at the same poses, two rows a run."""
    h, w = runs[0].frames_rgb[0].shape[:2]
    label_w = 90
    pad = 2
    pick = np.linspace(0, len(runs[0].pairs) - 2, num=columns).round().astype(int)
    sheet = Image.new("RGB", (label_w + columns * (w + pad), len(runs) * 2 * (h + pad)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, run in enumerate(runs):
        outbound, returned = run.pair_frames()
        for row, (name, frames) in enumerate((("out", outbound), ("return", returned))):
            y = (2 * r + row) * (h + pad)
            draw.text((4, y + h // 2 - 12), f"{run.method}\n{name}", fill=(0, 0, 0))
            for c, i in enumerate(pick):
                sheet.paste(Image.fromarray(frames[i]), (label_w + c * (w + pad), y))
    sheet.save(path)

"""`mirage demo`: an embedded runtime, the real client, a Panda3D scene, an out-and-back path.

Seeds memory with a few engine observations near the start, streams a generate-mode out-and-back
path for Mirage and for the memory baselines (16-frame window, 8-frame window, previous frame only),
then writes DIR/demo.gif, DIR/contact_sheet.png and DIR/metrics.json and prints the revisit table.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from plugin_bridge.client import AsyncMirageClient
from runtime.config import RuntimeConfig
from runtime.evaluation.cycle import METHOD_WINDOWS, CycleRun, run_cycle, write_contact_sheet
from runtime.scenes.panda_source import PandaSceneSource, SceneConfig
from runtime.scenes.paths import out_and_back, revisit_pairs, seed_poses_for
from runtime.server import run_server, stop_server


@dataclass
class DemoConfig:
    out: Path = Path("demo_out")
    """Output folder for demo.gif, contact_sheet.png and metrics.json."""
    frames: int = 200
    """Outbound frames N; the path then comes back along the same N poses."""
    size: int = 128
    """Square frame size in pixels (multiple of 8)."""
    scene: str = "garden"
    """Panda3D arrangement to walk through."""
    seed: int = 0
    """Seed for the path and the sessions (deterministic replay)."""
    seed_observations: int = 6
    """Engine RGB-D observations sent before the walk, spread over the first quarter of the path."""


def format_table(rows: list[dict]) -> str:
    lines = [
        f"{'method':<11} {'frames':>6} {'revisit PSNR':>13} {'SSIM':>7} {'ctx accuracy':>13} {'ctx loss':>9}",
    ]
    for r in rows:
        lines.append(
            f"{r['method']:<11} {r['frames']:>6} {r['revisit_psnr']:>10.2f} dB {r['revisit_ssim']:>7.4f} "
            f"{r['contextual_accuracy']:>13.4f} {1 - r['contextual_accuracy']:>9.4f}"
        )
    return "\n".join(lines)


def write_animation(runs: list[CycleRun], path: Path, step: int = 2) -> None:
    frames = []
    for t in range(0, len(runs[0].frames_rgb), step):
        frames.append(Image.fromarray(np.concatenate([run.frames_rgb[t] for run in runs], axis=1)))
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=66, loop=0, optimize=False)


async def _run(config: DemoConfig) -> dict:
    runtime_config = RuntimeConfig()
    runtime_config.server.port = 0
    server, port = await run_server(runtime_config)
    scene = PandaSceneSource(
        SceneConfig(name=config.scene, width=config.size, height=config.size, seed=config.seed)
    )
    path = out_and_back(config.frames, seed=config.seed)
    pairs = revisit_pairs("out_and_back", config.frames)
    seeds = seed_poses_for(path, config.frames, config.seed_observations)
    runs: list[CycleRun] = []
    try:
        async with AsyncMirageClient(f"127.0.0.1:{port}") as client:
            with tqdm(total=len(path) * len(METHOD_WINDOWS), desc="demo", unit="frame") as bar:
                for method in METHOD_WINDOWS:
                    bar.set_postfix_str(method)
                    runs.append(
                        await run_cycle(
                            client,
                            scene,
                            path,
                            pairs,
                            method=method,
                            seed_poses=seeds,
                            seed=config.seed,
                            progress=bar.update,
                        )
                    )
    finally:
        scene.close()
        await stop_server(server, 1.0)
    config.out.mkdir(parents=True, exist_ok=True)
    write_contact_sheet([runs[0], runs[1]], config.out / "contact_sheet.png")
    write_animation([runs[0], runs[1]], config.out / "demo.gif")
    lat = np.array(runs[0].latencies_ms)
    metrics = {
        "scene": config.scene,
        "size": config.size,
        "path": "out_and_back",
        "seed": config.seed,
        "seed_observations": config.seed_observations,
        "runs": [run.as_row() for run in runs],
        "mirage_latency_ms": {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95))},
    }
    (config.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def run_demo(config: DemoConfig) -> dict:
    started = time.perf_counter()
    metrics = asyncio.run(_run(config))
    elapsed = time.perf_counter() - started
    print()
    print(
        f"Revisit consistency, {config.scene} scene, {config.size}x{config.size}, out-and-back N={config.frames} "
        f"(each return frame vs the outbound frame at the same pose):"
    )
    print(format_table(metrics["runs"]))
    lat = metrics["mirage_latency_ms"]
    print(f"mirage latency pose->frame over gRPC: p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms")
    print(
        f"wrote {config.out / 'demo.gif'}, {config.out / 'contact_sheet.png'}, {config.out / 'metrics.json'} "
        f"in {elapsed:.1f} s"
    )
    return metrics

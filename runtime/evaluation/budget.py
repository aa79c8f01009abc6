"""`mirage eval --suite budget`: memory persistence against the byte budget, on ground that keeps changing.

For each budget, out-and-back cycle tests (DESIGN.md) through the real gRPC path with mirage's
persistent memory only: the outbound leg is N frames of an exploring walk (``bench_memory.exploring_path``:
a Lissajous walk over the lawn that never closes on itself, so it keeps reaching new viewpoints), then
the same poses come back in reverse. Memory is seeded with a few engine observations, then streams in
generate mode, as in the cycle suite. N grows along ``frames``; a budget stops at the first N whose
contextual accuracy falls below 0.90 (persistence is the longest N at which it stays >= 0.90, so
larger N cannot count). Writes OUT/budget.json and OUT/budget.md and prints the table.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from plugin_bridge.client import AsyncMirageClient
from plugin_bridge.types import Observation, Pose
from runtime.config import RuntimeConfig
from runtime.evaluation.bench_memory import exploring_path
from runtime.metrics import PSNR_CAP_DB, contextual_accuracy, memory_persistence, psnr
from runtime.scenes.panda_source import PandaSceneSource, SceneConfig
from runtime.server import run_server, stop_server

MiB = 2**20


@dataclass
class BudgetConfig:
    budgets_mib: tuple[int, ...] = (8, 32, 128)
    """Session memory budgets to test, MiB."""
    frames: tuple[int, ...] = (300, 1000, 3000, 10000)
    """Outbound lengths N, ascending (each comes back along N more frames)."""
    size: int = 128
    """Square frame size in pixels."""
    scene: str = "garden"
    seed: int = 0
    seed_observations: int = 6
    """Engine RGB-D observations sent first, over the first quarter of the outbound leg."""
    threshold: float = 0.90
    out: Path = Path("eval_out")
    progress: bool = True
    storage: tuple[str, ...] = field(default=("full", "quantised"))
    """Storage modes compared (`MemoryConfig.storage`)."""


async def _cycle(
    client, scene, path: list[np.ndarray], n: int, budget: int, storage: str, config: BudgetConfig
) -> dict:
    """One out-and-back of outbound length ``n``; per-pair contextual accuracy and the memory's figures."""
    info = await client.open_session(scene.intrinsics, seed=config.seed, budget_bytes=budget, storage=storage)
    stream = client.stream(info.session_id)
    started = time.perf_counter()
    accuracy: list[float] = []
    psnrs: list[float] = []
    try:
        idx = np.linspace(0, max(n // 4, 1), num=config.seed_observations).round().astype(int)
        for k, i in enumerate(idx):
            rgb, depth = scene.render(path[i])
            await stream.send_observation(
                Observation(Pose.from_canonical(path[i]), rgb, depth, sequence=10_000_000 + k)
            )
        outbound: list[np.ndarray] = []
        stats = None
        with tqdm(total=2 * n, desc=f"budget {budget // MiB} MiB N={n}", unit="frame", leave=False,
                  disable=not config.progress) as bar:  # fmt: skip
            for pose in path[:n]:
                frame = await stream.step(Pose.from_canonical(pose))
                outbound.append(frame.rgb)
                stats = frame.memory
                bar.update(1)
            for i in range(n - 1, -1, -1):  # the same poses in reverse: compare with the outbound frame
                frame = await stream.step(Pose.from_canonical(path[i]))
                accuracy.append(contextual_accuracy(outbound[i], frame.rgb))
                psnrs.append(min(psnr(outbound[i], frame.rgb), PSNR_CAP_DB))
                outbound[i] = None  # scored: keep memory flat
                stats = frame.memory
                bar.update(1)
        await stream.close()
    finally:
        await client.close_session(info.session_id)
    acc = np.asarray(accuracy[::-1])  # by outbound index i: revisited 2 (n - i) - 1 frames later
    return {
        "frames": n,
        "contextual_accuracy": float(acc.mean()),
        "accuracy_first_tenth": float(acc[: max(1, n // 10)].mean()),
        "accuracy_last_tenth": float(acc[-max(1, n // 10) :].mean()),
        "revisit_psnr": float(np.mean(psnrs)),
        "storage": storage,
        "points_end": int(stats.points),
        "points_packed_end": int(stats.points_packed),
        "bytes_used_end": int(stats.bytes_used),
        "points_pruned": int(stats.points_pruned_total),
        "seconds": time.perf_counter() - started,
    }


async def _run(config: BudgetConfig) -> list[dict]:
    runtime_config = RuntimeConfig()
    runtime_config.server.port = 0
    server, port = await run_server(runtime_config)
    rows = []
    path = exploring_path(max(config.frames), seed=config.seed)
    try:
        async with AsyncMirageClient(f"127.0.0.1:{port}") as client:
            with PandaSceneSource(
                SceneConfig(name=config.scene, width=config.size, height=config.size)
            ) as scene:
                for storage in config.storage:
                    for mib in config.budgets_mib:
                        runs = []
                        for n in sorted(config.frames):
                            run = await _cycle(client, scene, path, n, mib * MiB, storage, config)
                            runs.append(run)
                            print(f"  {storage} {mib} MiB N={n}: contextual accuracy {run['contextual_accuracy']:.3f} "
                                  f"({run['points_end']} points, {run['points_pruned']} pruned, {run['seconds']:.0f} s)",
                                  flush=True)  # fmt: skip
                            if run["contextual_accuracy"] < config.threshold:
                                break
                        by_n = {r["frames"]: r["contextual_accuracy"] for r in runs}
                        n_best, never = memory_persistence(by_n, config.threshold)
                        rows.append({"storage": storage, "budget_mib": mib, "persistence": n_best,
                                     "never_dropped": never, "runs": runs})  # fmt: skip
    finally:
        await stop_server(server, 1.0)
    return rows


def budget_table(rows: list[dict], frames: tuple[int, ...]) -> list[str]:
    ns = sorted(frames)
    head = ["storage", "budget MiB", "persistence N", *[f"ctx acc N={n}" for n in ns],
            "revisit PSNR dB (last N)", "points held (last N)", "pruned (last N)"]  # fmt: skip
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join([":--", "--:", "--:", *["--:"] * (len(ns) + 3)]) + "|",
    ]
    for r in rows:
        acc = {run["frames"]: run["contextual_accuracy"] for run in r["runs"]}
        if r["persistence"] is None:
            shown = f"< {ns[0]}"
        elif r["never_dropped"]:
            shown = f">= {r['persistence']}"
        else:
            shown = str(r["persistence"])
        cells = [f"{acc[n]:.3f}" if n in acc else "not run" for n in ns]
        last = r["runs"][-1]
        cells += [f"{last['revisit_psnr']:.2f}", f"{last['points_end']:,}", f"{last['points_pruned']:,}"]
        lines.append("| " + " | ".join([r["storage"], str(r["budget_mib"]), shown, *cells]) + " |")
    return lines


def run_budget(config: BudgetConfig) -> dict:
    started = time.perf_counter()
    rows = asyncio.run(_run(config))
    from runtime.evaluation.report import clean_json, environment

    report = clean_json({
        "suite": "budget",
        "config": {"budgets_mib": list(config.budgets_mib), "frames": list(config.frames), "size": config.size,
                   "scene": config.scene, "seed": config.seed, "seed_observations": config.seed_observations,
                   "threshold": config.threshold, "path": "exploring_path (Lissajous walk) out and back"},
        "rows": rows,
        "seconds": time.perf_counter() - started,
        "environment": environment(),
    })  # fmt: skip
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / "budget.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    table = budget_table(rows, config.frames)
    md = [
        "# Memory persistence against the byte budget",
        "",
        f"Out-and-back on an exploring walk at {config.size}x{config.size}, scene {config.scene}, mirage memory "
        f"only, {config.seed_observations} seed observations then generate mode; persistence = longest N with "
        f"contextual accuracy >= {config.threshold:.2f} (a budget stops at its first N below it). "
        f"Wall time {report['seconds'] / 60:.1f} min.",
        "",
        *table,
        "",
    ]
    (config.out / "budget.md").write_text("\n".join(md))
    print("\n".join(table))
    print(f"wrote {config.out / 'budget.json'} and {config.out / 'budget.md'}")
    return report

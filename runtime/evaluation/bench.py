"""`mirage bench`: speed and memory figures over loopback gRPC and in-process, side by side.

Per size: an embedded server on a free port and the real async client; memory is seeded with a few
Panda3D observations, then an out-and-back path is streamed in generate mode, lock-step (send a pose,
wait for its frame), so latency is clean. The same seeds and poses then run in-process (a `Session`
built with the server's GeneratorHost and MemoryConfig, `step_pose` called directly), so the gRPC
overhead reads as a ratio. Every shipped generator is then timed alone (onnxruntime, median) and in
the frame loop over gRPC at each size, side by side. Then memory render+ingest cost against memory size
(`bench_memory`) and an RSS soak over a long exploring path with a small budget, so pruning runs (on a
`mirage serve` process of its own, so that only the runtime's memory is measured).
Prints a table; writes JSON.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from plugin_bridge.client import AsyncMirageClient
from plugin_bridge.types import Observation, Pose
from plugin_bridge.wire import observation_to_proto
from runtime import wire
from runtime.config import RuntimeConfig
from runtime.evaluation.bench_memory import exploring_path, memory_scaling, rss_mib
from runtime.evaluation.bench_queries import format_queries, query_latency
from runtime.evaluation.bench_serving import format_serving, observe_and_query, sessions_throughput
from runtime.evaluation.processes import server_process, stop_process
from runtime.generator.host import available_models
from runtime.scenes.panda_source import PandaSceneSource, SceneConfig
from runtime.scenes.paths import out_and_back, seed_poses_for
from runtime.server import run_server, stop_server
from runtime.session import Session
from runtime.training.scoring import time_generator
from runtime.types import PoseInput

MiB = 2**20
STAGES = ("decode", "render", "generate", "compose", "ingest", "encode", "transport")
"""Keys of stages_ms (medians, ms, over gRPC). render..encode: the server's StageTimings of the timed pose
frames; decode: of the seed observations (a pose carries no image); transport: client-measured latency
minus the server's span (server_sent_us - server_received_us): serialisation, HTTP/2, client decoding."""
RSS_EVERY = 50
"""Soak frames between RSS samples."""
STORAGES = ("full", "quantised")
"""Memory storage modes timed side by side in-process (`MemoryConfig.storage`)."""
SOAK_WARMUP_FRAMES = 200
"""Frames of the soak server's warm-up session (at most soak_frames)."""
SOAK_WARMUP_MIB = 4
"""Budget of the warm-up session, MiB: small enough that pruning runs in it."""
SECTIONS = ("frames", "observe", "sessions", "scaling", "queries", "soak")
"""What `mirage bench` can measure (`BenchConfig.sections`): the generate-mode frame loop per size with
its generators and storage modes, observe mode beside Open3D, sessions at once, memory scaling, every
memory query with a full memory, the RSS soak."""


@dataclass
class BenchConfig:
    """What `mirage bench` measures; the defaults are the CLI's."""

    sizes: tuple[int, ...] = (128, 256)
    """Square frame sizes in pixels (multiples of 8), each measured over gRPC and in-process."""
    frames: int = 200
    """Timed frames per size and path (after the warm-up)."""
    soak_frames: int = 2000
    """Generate-mode frames of the RSS soak over gRPC, at the smallest size (0 skips it)."""
    json_path: str = ""
    """Also write the figures to this JSON file ("" writes none)."""
    warmup: int = 10
    """Untimed frames streamed first (the same poses on both paths)."""
    soak_budget_mib: int = 64
    """Memory budget of the soak session, MiB: small, so that pruning is exercised."""
    soak_storage: str = "full"
    """Memory storage mode of the soak sessions (`MemoryConfig.storage`: "full" or "quantised")."""
    soak_observe_every: int = 4
    """The soak also sends an engine RGB-D observation every this many frames (0: poses only)."""
    scene: str = "garden"
    """Panda3D arrangement for the seed observations and the scaling test's visible set."""
    seed: int = 0
    """Seed for paths, sessions and synthetic content."""
    seed_observations: int = 6
    """Engine RGB-D observations sent before each timed stream."""
    scaling_reps: int = 20
    """Timed render+ingest repetitions per memory size in the scaling test."""
    generators: tuple[str, ...] = ()
    """Generators to compare; empty: the runtime's default first, then every other shipped model."""
    observe_frames: int = 60
    """Observe-mode RGB-D frames streamed per size (beside Open3D's integrate of the same frames)."""
    queries: int = 20
    """Memory render and stats queries per size, after the observations."""
    session_counts: tuple[int, ...] = (1, 2, 4, 8)
    """Sessions at once for the throughput test, at the smallest size."""
    session_frames: int = 60
    """Lock-step frames each of those sessions streams."""
    sections: tuple[str, ...] = SECTIONS
    """What to measure, of frames, observe, sessions, scaling, queries, soak (`SECTIONS`)."""
    query_size: int = 256
    """Square frame size of the query-latency section (a multiple of 8)."""
    query_points: int = 1_000_000
    """Points memory is filled to (RGB-D observations along an exploring path) before queries are timed."""
    query_count: int = 50
    """Queries of each kind timed in the query-latency section."""

    def validate(self) -> None:
        if not self.sizes or any(int(s) < 8 or int(s) % 8 for s in self.sizes):
            raise ValueError(f"sizes={self.sizes}: give square sizes that are positive multiples of 8")
        if self.frames < 1 or self.warmup < 0 or self.soak_frames < 0:
            raise ValueError("frames must be >= 1, warmup and soak_frames >= 0")
        if self.soak_storage not in STORAGES:
            raise ValueError(f"soak_storage={self.soak_storage!r}: use one of {', '.join(STORAGES)}")
        if self.soak_budget_mib < 2:
            raise ValueError(f"soak_budget_mib={self.soak_budget_mib}: use at least 2 MiB")
        if self.observe_frames < 1 or self.queries < 1 or self.session_frames < 1:
            raise ValueError("observe_frames, queries and session_frames must be >= 1")
        if not self.session_counts or min(self.session_counts) < 1:
            raise ValueError(f"session_counts={self.session_counts}: give counts of 1 or more")
        unknown = sorted(set(self.sections) - set(SECTIONS))
        if not self.sections or unknown:
            raise ValueError(f"sections={self.sections}: use some of {', '.join(SECTIONS)}")
        if self.query_size < 8 or self.query_size % 8 or self.query_points < 1 or self.query_count < 1:
            raise ValueError("query_size must be a positive multiple of 8, query_points and query_count >= 1")


def _median(values) -> float:
    return float(np.median(values)) if len(values) else 0.0


def _percentiles(values) -> tuple[float, float, float]:
    p50, p95, p99 = np.percentile(np.asarray(values, dtype=np.float64), [50, 95, 99])
    return float(p50), float(p95), float(p99)


async def _bench_grpc(
    client, registry, scene, path, observations, config: BenchConfig, bar, generator: str = ""
) -> tuple:
    """Seed, then stream ``path`` lock-step; returns (row figures, session spec)."""
    info = await client.open_session(scene.intrinsics, seed=config.seed, generator=generator)
    spec = registry.get(info.session_id).spec
    stream = client.stream(info.session_id)
    decode_ms: list[float] = []
    try:
        for msg in observations:
            await stream.send_observation(msg)
            decode_ms.append((await stream.next_frame()).timings_ms["decode_ms"])
        poses = [Pose.from_canonical(p) for p in path]
        latency, server, stages = [], [], {s: [] for s in (*STAGES, "server_other")}
        started = 0.0
        for i, pose in enumerate(poses):
            if i == config.warmup:
                started = time.perf_counter()
            t0 = time.perf_counter()
            frame = await stream.step(pose)
            lat = (time.perf_counter() - t0) * 1e3
            bar.update(1)
            if i < config.warmup:
                continue
            t = frame.timings_ms
            server_ms = (frame.server_sent_us - frame.server_received_us) / 1e3
            latency.append(lat)
            server.append(server_ms)
            for s in ("render", "generate", "compose", "ingest", "encode"):
                stages[s].append(t[f"{s}_ms"])
            stages["transport"].append(max(lat - server_ms, 0.0))
            stages["server_other"].append(max(server_ms - t["total_ms"], 0.0))
        seconds = time.perf_counter() - started
        await stream.close()
    finally:
        await client.close_session(info.session_id)
    p50, p95, p99 = _percentiles(latency)
    medians = {s: _median(v) for s, v in stages.items()}
    medians["decode"] = _median(decode_ms)
    figures = {
        "fps_grpc": len(latency) / seconds,
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "server_ms": _median(server),
        "stages_ms": {s: medians[s] for s in STAGES},
        "server_other_ms": medians["server_other"],
    }
    return figures, spec


def _bench_inprocess(spec, generator, memory_config, path, observations, warmup: int, bar) -> dict:
    """The same seeds and poses through a Session built directly (no gRPC, no encoding)."""
    session = Session(spec, generator, memory_config)
    try:
        for obs in observations:  # as the server decodes them (untimed: the seeds)
            session.step_observation(
                wire.observation_from_proto(observation_to_proto(obs, obs.sequence), spec)
            )
        latency = []
        started = 0.0
        for i, pose in enumerate(path):
            if i == warmup:
                started = time.perf_counter()
            t0 = time.perf_counter()
            session.step_pose(PoseInput(sequence=i + 1, client_timestamp_us=0, cam_to_world=pose))
            latency.append((time.perf_counter() - t0) * 1e3)
            bar.update(1)
        seconds = time.perf_counter() - started
    finally:
        session.close()
    timed = latency[warmup:]
    p50, p95, _ = _percentiles(timed)
    return {"fps_inprocess": len(timed) / seconds, "inprocess_p50_ms": p50, "inprocess_p95_ms": p95}


async def _bench_size(
    client, registry, memory_config, size: int, config: BenchConfig, generators: list[str]
) -> dict:
    total = config.warmup + config.frames
    n_out = math.ceil(total / 2)
    path = out_and_back(n_out, seed=config.seed)[:total]
    scene = PandaSceneSource(SceneConfig(name=config.scene, width=size, height=size, seed=config.seed))
    try:
        observations = []
        for k, pose in enumerate(seed_poses_for(path, n_out, config.seed_observations)):
            rgb, depth = scene.render(pose)
            msg = Observation(
                Pose.from_canonical(pose), rgb, depth, return_frame=True, sequence=10_000_000 + k
            )
            observations.append(msg)
        with tqdm(total=2 * total, desc=f"bench {size}x{size}", unit="frame", leave=False) as bar:
            bar.set_postfix_str("gRPC")
            grpc_figures, spec = await _bench_grpc(client, registry, scene, path, observations, config, bar)
            bar.set_postfix_str("in-process")
            generator = registry.generator(spec.generator)
            inproc = await asyncio.to_thread(
                _bench_inprocess, spec, generator, memory_config, path, observations, config.warmup, bar
            )
            by_storage = {spec.storage: inproc}
            for storage in STORAGES:  # the other storage mode, in-process on the same poses
                if storage not in by_storage:
                    bar.set_postfix_str(f"in-process, {storage} storage")
                    bar.total += total
                    by_storage[storage] = await asyncio.to_thread(
                        _bench_inprocess, dataclasses.replace(spec, storage=storage), generator, memory_config,
                        path, observations, config.warmup, bar,
                    )  # fmt: skip
            by_generator = {
                spec.generator: {
                    "generator_ms": time_generator(generator, size),
                    "fps_grpc": grpc_figures["fps_grpc"],
                    "p50_ms": grpc_figures["p50_ms"],
                }
            }
            for name in generators:
                if name in by_generator:
                    continue
                bar.set_postfix_str(f"gRPC, {name}")
                bar.total += total
                figures, _ = await _bench_grpc(client, registry, scene, path, observations, config, bar, name)
                by_generator[name] = {
                    "generator_ms": time_generator(registry.generator(name), size),
                    "fps_grpc": figures["fps_grpc"],
                    "p50_ms": figures["p50_ms"],
                }
    finally:
        scene.close()
    row = {
        "size": int(size),
        "generator": spec.generator,
        **grpc_figures,
        **inproc,
        "generators": by_generator,
        "storage": {
            name: {
                "fps": f["fps_inprocess"],
                "p50_ms": f["inprocess_p50_ms"],
                "p95_ms": f["inprocess_p95_ms"],
            }
            for name, f in by_storage.items()
        },
    }
    row["overhead_ratio"] = row["fps_inprocess"] / row["fps_grpc"]
    return row


async def _soak(config: BenchConfig) -> dict:
    """RSS of a runtime serving one long session: a `mirage serve` process of its own (so the client,
    the engine rendering the observations and the bench's own figures stay out of what is measured)
    first serves a short warm-up session with a tiny budget (kernels loaded, the generator's buffers at
    this size, pruning run once), then soak_frames generate-mode frames along an exploring path with an
    engine observation every soak_observe_every frames, so memory keeps growing into its budget; its
    RSS is sampled every RSS_EVERY frames from the session's start."""
    size = min(config.sizes)
    scene = PandaSceneSource(SceneConfig(name=config.scene, width=size, height=size, seed=config.seed))
    proc = readers = None
    try:
        scene.render(exploring_path(1, seed=config.seed)[0])
        proc, port, errors, readers = await server_process()
        try:
            async with AsyncMirageClient(f"127.0.0.1:{port}") as client:
                warm = min(SOAK_WARMUP_FRAMES, config.soak_frames)
                await _soak_session(client, scene, config, warm, SOAK_WARMUP_MIB * MiB, None, "soak warm-up")
                soak = await _soak_session(
                    client, scene, config, config.soak_frames, config.soak_budget_mib * MiB, proc.pid, "soak"
                )
                return {**soak, "warmup_frames": int(warm)}
        except Exception:
            if errors:
                print("the soak's server process said:\n" + "\n".join(errors), file=sys.stderr)
            raise
    finally:
        scene.close()
        if proc is not None:
            await stop_process(proc, readers)


async def _soak_session(client, scene, config: BenchConfig, frames: int, budget: int, pid, desc: str) -> dict:
    """Stream one soak session of ``frames`` frames with ``budget`` bytes; sample process ``pid``'s RSS."""
    every = config.soak_observe_every
    info = await client.open_session(
        scene.intrinsics, seed=config.seed, budget_bytes=budget, storage=config.soak_storage
    )
    stream = client.stream(info.session_id)
    rss = [rss_mib(pid)]
    full_at = None  # index into rss of the first sample with memory at its budget
    max_bytes = points = pruned = observations = 0
    latency: list[float] = []
    try:
        started = time.perf_counter()
        with tqdm(
            exploring_path(frames, seed=config.seed), desc=desc, unit="frame", leave=pid is not None
        ) as bar:
            for i, pose in enumerate(bar):
                message = Pose.from_canonical(pose)
                if every > 0 and i % every == 0:
                    rgb, depth = scene.render(pose)
                    await stream.send_observation(Observation(message, rgb, depth, sequence=20_000_000 + i))
                    observations += 1
                t0 = time.perf_counter()
                frame = await stream.step(message)
                latency.append((time.perf_counter() - t0) * 1e3)
                max_bytes = max(max_bytes, frame.memory.bytes_used)
                points, pruned = frame.memory.points, frame.memory.points_pruned_total
                if (i + 1) % RSS_EVERY == 0:
                    rss.append(rss_mib(pid))
                    if full_at is None and frame.memory.bytes_used >= 0.99 * budget:
                        full_at = len(rss) - 1
                    bar.set_postfix(rss_mib=f"{rss[-1]:.0f}", mem_mib=f"{max_bytes / MiB:.1f}", points=points)
        seconds = time.perf_counter() - started
        rss.append(rss_mib(pid))
        await stream.close()
    finally:
        await client.close_session(info.session_id)
    return {
        "frames": int(frames),
        "storage": config.soak_storage,
        "size": int(scene.intrinsics.width),
        "server_process": True,
        "peak_rss_mb": max(rss),
        "start_rss_mb": rss[0],
        "end_rss_mb": rss[-1],
        "rss_mb_every_frames": RSS_EVERY,
        "rss_mb_series": [round(r, 1) for r in rss],
        "full_at_frame": None if full_at is None else full_at * RSS_EVERY,
        "rss_at_full_mb": None if full_at is None else rss[full_at],
        "growth_mb": max(rss) - rss[0],
        "growth_after_full_mb": None if full_at is None else max(rss[full_at:]) - rss[full_at],
        "rss_samples": len(rss),
        "budget_mb": budget / MiB,
        "max_bytes_used_mb": max_bytes / MiB,
        "max_bytes_used": int(max_bytes),
        "points_end": int(points),
        "points_pruned": int(pruned),
        "observations": int(observations),
        "fps": frames / seconds,
        "last_quarter_p50_ms": _median(latency[-max(1, len(latency) // 4) :]),
    }


async def _scaling(config: BenchConfig) -> dict:
    """Memory render+ingest against memory size, at the largest size (in-process, no gRPC)."""
    size = max(config.sizes)
    with PandaSceneSource(SceneConfig(name=config.scene, width=size, height=size, seed=config.seed)) as scene:
        reps = 2 * (config.scaling_reps + 3)
        with tqdm(total=reps, desc=f"memory scaling {size}x{size}", unit="rep", leave=False) as bar:
            return await asyncio.to_thread(
                memory_scaling, scene, reps=config.scaling_reps, seed=config.seed, progress=bar.update
            )


async def _run(config: BenchConfig) -> dict:
    runtime_config = RuntimeConfig()
    runtime_config.server.port = 0
    server, port = await run_server(runtime_config)
    registry = server.mirage_registry
    want = set(config.sections)
    report: dict = {}
    try:
        async with AsyncMirageClient(f"127.0.0.1:{port}") as client:
            if "frames" in want:
                default = runtime_config.generator.name
                generators = list(config.generators) or [
                    default,
                    *(n for n in available_models() if n != default),
                ]
                report["sizes"] = [
                    await _bench_size(client, registry, runtime_config.memory, s, config, generators)
                    for s in config.sizes
                ]
            if "observe" in want:
                report["observe"] = [
                    await observe_and_query(
                        client, s, config.observe_frames, config.scene, config.seed, config.queries
                    )
                    for s in config.sizes
                ]
            if "sessions" in want:
                report["sessions"] = await sessions_throughput(
                    f"127.0.0.1:{port}",
                    min(config.sizes),
                    tuple(config.session_counts),
                    config.session_frames,
                )
            if "queries" in want:
                report["queries"] = await query_latency(
                    client, config.query_size, target_points=config.query_points, queries=config.query_count,
                    scene_name=config.scene, seed=config.seed,
                )  # fmt: skip
            if "scaling" in want:
                report["memory_scaling"] = await _scaling(config)
    finally:
        await stop_server(server, 1.0)
    if "soak" in want:
        report["soak"] = await _soak(config) if config.soak_frames > 0 else {"frames": 0}
    return report


def format_report(report: dict) -> str:
    lines = _format_frames(report["sizes"]) if "sizes" in report else []
    lines += format_serving(report.get("observe", []), report.get("sessions", []))
    if "queries" in report:
        lines += format_queries(report["queries"])
    if "memory_scaling" in report:
        lines += _format_scaling(report["memory_scaling"])
    if "soak" in report:
        lines += _format_soak(report["soak"])
    e = report["environment"]
    dirty = " (+ local changes)" if e.get("git_dirty") else ""
    lines.append(
        f"\n{e['cpu']}, {e['threads']} CPUs, {e['torch_threads']} torch threads, commit {e['git_commit']}{dirty}"
    )
    return "\n".join(lines).lstrip("\n")


def _format_frames(rows: list[dict]) -> list[str]:
    lines = [
        f"{'size':>7} {'fps gRPC':>9} {'fps in-proc':>12} {'overhead':>9} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'in-proc p50':>12}"
    ]
    for r in rows:
        lines.append(
            f"{r['size']:>3}x{r['size']:<3} {r['fps_grpc']:>9.1f} {r['fps_inprocess']:>12.1f} "
            f"{r['overhead_ratio']:>8.2f}x {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['p99_ms']:>8.1f} "
            f"{r['inprocess_p50_ms']:>12.1f}"
        )
    lines += ["", "stage split over gRPC, median ms (decode: seed observations; pose frames carry no image):"]
    lines.append(f"{'size':>7} " + " ".join(f"{s:>9}" for s in STAGES) + f" {'srv other':>9}")
    for r in rows:
        stages = " ".join(f"{r['stages_ms'][s]:>9.2f}" for s in STAGES)
        lines.append(f"{r['size']:>3}x{r['size']:<3} {stages} {r['server_other_ms']:>9.2f}")
    lines.append(
        "  transport = client latency - (server_sent - server_received); srv other = server span - "
        "frame-loop total (executor hops, stats)"
    )
    names = list(rows[0].get("generators", {})) if rows else []
    if names:
        lines += [
            "",
            "generators side by side (alone: onnxruntime median ms; loop: frames/s and p50 over gRPC):",
        ]
        lines.append(f"{'generator':>14} " + " ".join(
            f"{str(r['size']) + ' alone':>10} {str(r['size']) + ' fps':>9} {str(r['size']) + ' p50':>9}" for r in rows
        ))  # fmt: skip
        for name in names:
            cells = []
            for r in rows:
                g = r["generators"][name]
                cells.append(f"{g['generator_ms']:>10.2f} {g['fps_grpc']:>9.1f} {g['p50_ms']:>9.1f}")
            mark = "*" if name == rows[0]["generator"] else " "
            lines.append(f"{name + mark:>14} " + " ".join(cells))
        lines.append("  * the runtime's default (the rows above)")
    lines += ["", "storage side by side (in-process, the same poses; frames/s, p50 / p95 ms):"]
    for r in rows:
        cells = [
            f"{name} {f['fps']:.1f} fps, {f['p50_ms']:.1f} / {f['p95_ms']:.1f} ms"
            for name, f in r["storage"].items()
        ]
        lines.append(f"{r['size']:>3}x{r['size']:<3} " + "; ".join(cells))
    return lines


def _format_scaling(m: dict) -> list[str]:
    return [
        "",
        f"memory scaling at {m['size']}x{m['size']} (fixed camera, hidden content added; generate-mode "
        "render+ingest, median):",
        f"  1x  {m['points_1x']:>9} points: {m['render_ingest_ms']:8.2f} ms "
        f"(render {m['render_ms']:.2f}, ingest {m['ingest_ms']:.2f}; {m['in_view_1x']} in view)",
        f"  10x {m['points_10x']:>9} points: {m['render_ingest_ms_10x']:8.2f} ms "
        f"(render {m['render_ms_10x']:.2f}, ingest {m['ingest_ms_10x']:.2f}; {m['in_view_10x']} in view)",
        f"  ratio_10x {m['ratio_10x']:.2f} (1.0 = cost follows what is visible)",
    ]


def _format_soak(s: dict) -> list[str]:
    if s["frames"]:
        return [
            f"\nsoak: {s['frames']} frames at {s['size']}x{s['size']} over gRPC, budget {s['budget_mb']:.0f} MiB "
            f"({s['storage']} storage), "
            f"RSS of the server process (after a {s['warmup_frames']}-frame warm-up session): "
            f"peak RSS {s['peak_rss_mb']:.0f} MiB (start {s['start_rss_mb']:.0f}, end {s['end_rss_mb']:.0f}; "
            f"growth {s['growth_mb']:.0f} MiB = {s['growth_mb'] / s['budget_mb']:.2f}x the budget"
            + (
                f", {s['growth_after_full_mb']:.0f} MiB after memory reached its budget at frame "
                f"{s['full_at_frame']}"
                if s["full_at_frame"] is not None
                else ""
            )
            + "), "
            f"max bytes_used {s['max_bytes_used']} B (<= {int(s['budget_mb'] * MiB)} B); "
            f"{s['observations']} observations sent, "
            f"{s['points_end']} points at the end, {s['points_pruned']} pruned; {s['fps']:.1f} frames/s overall, "
            f"pose->frame p50 {s['last_quarter_p50_ms']:.0f} ms over the last quarter"
        ]
    return ["\nsoak: skipped (--soak-frames 0)"]


def run_bench(config: BenchConfig) -> dict:
    """Run every measurement, print the table, write JSON when asked; returns the report."""
    config.validate()
    report = asyncio.run(_run(config))
    # imported after the soak: report pulls in matplotlib, which would add to the RSS measured
    from runtime.evaluation.report import clean_json, environment

    report["environment"] = {**environment(), "torch_threads": torch.get_num_threads()}
    report = clean_json(report)
    print(format_report(report), flush=True)
    if config.json_path:
        path = Path(config.json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
        print(f"wrote {path}")
    return report

"""What users run, beside the generate-mode loop: observe-mode ingest (with Open3D's TSDF `integrate`
of the same frames beside it when the ``[peers]`` extra is installed), memory queries, and the
throughput of 1, 2, 4 and 8 sessions at once. Parts of `mirage bench`; each over the real gRPC path.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from plugin_bridge.camera import Intrinsics
from plugin_bridge.client import AsyncMirageClient
from plugin_bridge.types import Observation, Pose
from runtime.evaluation.bench_memory import exploring_path
from runtime.evaluation.loadtest import lockstep_session
from runtime.evaluation.peers import Open3DTSDF, open3d_available
from runtime.scenes.panda_source import PandaSceneSource, SceneConfig


def percentile(values, q: float) -> float:
    """The ``q``th percentile of ``values`` (0 when there are none)."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else 0.0


async def observe_and_query(
    client: AsyncMirageClient, size: int, frames: int, scene_name: str, seed: int, queries: int
) -> dict:
    """``frames`` RGB-D observations of a Panda3D scene along an exploring path, each answered with a
    frame (for the server's stage timings): the server's decode and ingest per frame, the client's
    round trip, and Open3D's `integrate` of the same frames; then ``queries`` (at least one) memory
    renders at poses between the observed ones, each with a stats query."""
    path = exploring_path(2 * frames, seed=seed)
    observed, between = path[0::2], path[1::2][: max(1, min(queries, frames))]
    with PandaSceneSource(SceneConfig(name=scene_name, width=size, height=size, seed=seed)) as scene:
        shots = [scene.render(pose) for pose in observed]
        k = scene.intrinsics
    sid = (await client.open_session(k, seed=seed)).session_id
    stream = client.stream(sid)
    decode, ingest, server_total, trip = [], [], [], []
    try:
        for pose, (rgb, depth) in zip(observed, shots, strict=True):
            start = time.perf_counter()
            await stream.send_observation(
                Observation(Pose.from_canonical(pose), rgb, depth, return_frame=True)
            )
            frame = await stream.next_frame()
            trip.append((time.perf_counter() - start) * 1e3)
            decode.append(frame.timings_ms.get("decode_ms", 0.0))
            ingest.append(frame.timings_ms.get("ingest_ms", 0.0))
            server_total.append(frame.timings_ms.get("total_ms", 0.0))
        await stream.close()
        render_ms, stats_ms = [], []
        for pose in between:  # between the observed poses
            start = time.perf_counter()
            await client.render(sid, Pose.from_canonical(pose))
            render_ms.append((time.perf_counter() - start) * 1e3)
            start = time.perf_counter()
            stats = await client.stats(sid)
            stats_ms.append((time.perf_counter() - start) * 1e3)
    finally:
        await client.close_session(sid)
    out = {
        "size": int(size),
        "frames": int(frames),
        "decode_ms_p50": percentile(decode, 50),
        "ingest_ms_p50": percentile(ingest, 50),
        "ingest_ms_p99": percentile(ingest, 99),
        "server_total_ms_p50": percentile(server_total, 50),
        "round_trip_ms_p50": percentile(trip, 50),
        "round_trip_ms_p99": percentile(trip, 99),
        "points": int(stats.points),
        "render_query_ms_p50": percentile(render_ms, 50),
        "render_query_ms_p99": percentile(render_ms, 99),
        "stats_query_ms_p50": percentile(stats_ms, 50),
        "open3d_integrate_ms_p50": None,
        "open3d": open3d_available()[1] or "open3d",
    }
    if open3d_available()[0]:
        out["open3d_integrate_ms_p50"] = await asyncio.to_thread(_open3d_integrate, k, observed, shots)
    return out


def _open3d_integrate(k: Intrinsics, poses, shots) -> float:
    tsdf = Open3DTSDF(k)
    times = []
    for pose, (rgb, depth) in zip(poses, shots, strict=True):
        start = time.perf_counter()
        tsdf.integrate(pose, rgb, depth)
        times.append((time.perf_counter() - start) * 1e3)
    return percentile(times, 50)


async def sessions_throughput(target: str, size: int, counts: tuple[int, ...], frames: int) -> list[dict]:
    """For each count S: S sessions streaming ``frames`` lock-step generate-mode frames each, all at
    once (`mirage loadtest`'s sessions): frames/s in all and the pose-to-frame p50 / p99."""
    k = Intrinsics.from_fov(size, size, 60.0)
    rows = []
    for count in counts:
        clients = [AsyncMirageClient(target) for _ in range(count)]
        try:
            start = time.perf_counter()
            results = await asyncio.gather(
                *(lockstep_session(c, k, i, frames) for i, c in enumerate(clients))
            )
            wall = time.perf_counter() - start
        finally:
            for c in clients:
                await c.close()
        latencies = [x for lat, _ in results for x in lat]
        rows.append({
            "size": int(size),
            "sessions": int(count),
            "frames": len(latencies),
            "errors": int(sum(e for _, e in results)),
            "fps_total": len(latencies) / wall,
            "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99),
        })  # fmt: skip
    return rows


def format_serving(observe: list[dict], throughput: list[dict]) -> list[str]:
    lines = []
    if observe:
        lines += _format_observe(observe)
    if throughput:
        size = throughput[0]["size"]
        lines.append(
            f"sessions at once, {size}x{size}, lock-step generate mode (frames/s in all, p50 / p99 ms):"
        )
        for t in throughput:
            lines.append(
                f"  {t['sessions']} session(s): {t['fps_total']:.1f} frames/s, {t['p50_ms']:.1f} / "
                f"{t['p99_ms']:.1f} ms, {t['errors']} errors"
            )
    return lines


def _format_observe(observe: list[dict]) -> list[str]:
    lines = ["", "observe mode over gRPC (RGB-D in, a frame back; median ms unless said):"]
    lines.append(
        f"{'size':>7} {'decode':>7} {'ingest':>7} {'ing p99':>8} {'server':>7} {'round trip':>11} "
        f"{'rt p99':>7} {'Open3D integrate':>17}"
    )
    for o in observe:
        peer = f"{o['open3d_integrate_ms_p50']:.2f}" if o["open3d_integrate_ms_p50"] is not None else "n/a"
        lines.append(
            f"{o['size']:>3}x{o['size']:<3} {o['decode_ms_p50']:>7.2f} {o['ingest_ms_p50']:>7.2f} "
            f"{o['ingest_ms_p99']:>8.2f} {o['server_total_ms_p50']:>7.2f} {o['round_trip_ms_p50']:>11.2f} "
            f"{o['round_trip_ms_p99']:>7.2f} {peer:>17}"
        )
    if any(o["open3d_integrate_ms_p50"] is None for o in observe):
        lines.append(f"  Open3D: {observe[0]['open3d']}")
    lines.append("memory queries after the observations (SpatialMemoryQuery, ms p50 / p99):")
    for o in observe:
        lines.append(
            f"  {o['size']}x{o['size']}, {o['points']} points: render {o['render_query_ms_p50']:.2f} / "
            f"{o['render_query_ms_p99']:.2f}, stats {o['stats_query_ms_p50']:.2f}"
        )
    return lines

"""Latency of every `SpatialMemoryQuery` kind with a full memory, over the real gRPC path.

A session at the given size is filled with Panda3D RGB-D observations along an exploring path until
memory holds ``target_points`` (or ``max_frames`` were sent), then each query kind is timed at poses
between the observed ones, client-measured (request out to response decoded): a render (colour,
depth, coverage, confidence, object ids, provenance), a pixel pick (a ray through a random pixel of
the pose, up to 4 surfaces), a world-ray pick (from the pose's eye along its view axis, up to 4), a
box of ``box_m`` on a side centred on a surface the pose sees (at most ``box_points`` points back, and
count only), and stats. Part of `mirage bench`; `mirage bench --only queries` runs it alone.
"""

from __future__ import annotations

import time

import numpy as np
from tqdm import tqdm

from plugin_bridge.client import AsyncMirageClient
from plugin_bridge.types import Observation, Pose
from runtime.evaluation.bench_memory import exploring_path
from runtime.evaluation.bench_serving import percentile
from runtime.scenes.panda_source import PandaSceneSource, SceneConfig

QUERY_KINDS = ("render", "pick_pixel", "pick_ray", "box", "box_count", "stats")
"""Keys of the report's ``ms`` (each p50 / p99 over the timed queries)."""
OBSERVE_CHECK_EVERY = 25
"""Observations between two stats calls while memory fills."""


async def query_latency(
    client: AsyncMirageClient,
    size: int,
    *,
    target_points: int = 1_000_000,
    max_frames: int = 1200,
    queries: int = 50,
    scene_name: str = "garden",
    seed: int = 0,
    box_m: float = 1.0,
    box_points: int = 10_000,
) -> dict:
    """Fill one session to ``target_points`` and time ``queries`` of each kind (see the module)."""
    rng = np.random.default_rng(seed)
    path = exploring_path(2 * max_frames, seed=seed)
    observed, between = path[0::2], path[1::2]
    config = SceneConfig(name=scene_name, width=size, height=size, seed=seed)
    with PandaSceneSource(config) as scene:
        sid = (await client.open_session(scene.intrinsics, seed=seed)).session_id
        try:
            sent, points = 0, 0
            stream = client.stream(sid)
            with tqdm(
                total=target_points, desc=f"filling memory {size}x{size}", unit="pt", leave=False
            ) as bar:
                for pose in observed:
                    rgb, depth = scene.render(pose)
                    await stream.send_observation(
                        Observation(Pose.from_canonical(pose), rgb, depth, return_frame=True)
                    )
                    await stream.next_frame()  # lock-step: ingested before the next is sent
                    sent += 1
                    if sent % OBSERVE_CHECK_EVERY == 0:
                        points = (await client.stats(sid)).points
                        bar.update(min(points, target_points) - bar.n)
                        if points >= target_points:
                            break
            await stream.close()
            stats = await client.stats(sid)
            times: dict[str, list[float]] = {kind: [] for kind in QUERY_KINDS}
            inside, hits = [], []

            async def timed(kind: str, call):
                start = time.perf_counter()
                out = await call
                times[kind].append((time.perf_counter() - start) * 1e3)
                return out

            for pose in tqdm(between[:queries], desc=f"queries {size}x{size}", unit="pose", leave=False):
                p = Pose.from_canonical(pose)
                view = await timed("render", client.render(sid, p))
                u, v = (float(x) for x in rng.uniform(0, size - 1, size=2))
                pick = await timed("pick_pixel", client.pick(sid, pose=p, pixel=(u, v), max_hits=4))
                hits.append(len(pick.hits))
                eye, forward = pose[:3, 3], pose[:3, 2]  # canonical: +z looks ahead
                await timed(
                    "pick_ray", client.pick(sid, origin=tuple(eye), direction=tuple(forward), max_hits=4)
                )
                centre = _seen_point(view, pose, scene.intrinsics, rng)
                lo, hi = tuple(centre - box_m / 2), tuple(centre + box_m / 2)
                box = await timed("box", client.box(sid, lo, hi, max_points=box_points))
                inside.append(box.inside)
                await timed("box_count", client.box(sid, lo, hi, max_points=0))
                await timed("stats", client.stats(sid))
        finally:
            await client.close_session(sid)
    return {
        "size": int(size),
        "frames": int(sent),
        "points": int(stats.points),
        "bytes_used": int(stats.bytes_used),
        "queries": len(times["render"]),
        "box_m": float(box_m),
        "box_points": int(box_points),
        "box_inside_p50": percentile(inside, 50),
        "pixel_hits_mean": float(np.mean(hits)) if hits else 0.0,
        "ms": {kind: {"p50": percentile(t, 50), "p99": percentile(t, 99)} for kind, t in times.items()},
    }


def _seen_point(view, pose: np.ndarray, k, rng) -> np.ndarray:
    """A world point (canonical) the memory render at ``pose`` covers: a random covered pixel's depth
    lifted through the intrinsics; the pose's eye 3 m ahead when nothing is covered."""
    depth = np.asarray(view.depth)
    ok = np.argwhere(np.isfinite(depth) & (depth > 0))
    if not ok.shape[0]:
        return pose[:3, 3] + 3.0 * pose[:3, 2]
    y, x = ok[int(rng.integers(ok.shape[0]))]
    z = float(depth[y, x])
    cam = np.array([(x - k.cx) / k.fx * z, (y - k.cy) / k.fy * z, z])
    return pose[:3, :3] @ cam + pose[:3, 3]


def format_queries(q: dict) -> list[str]:
    s = q["size"]
    lines = [
        "",
        f"memory queries at {s}x{s} with a full memory ({q['points']} points, {q['bytes_used'] / 2**20:.0f} MiB, "
        f"after {q['frames']} observations), client-measured over gRPC, {q['queries']} of each, ms p50 / p99:",
    ]
    labels = {
        "render": "render (colour, depth, coverage, confidence, ids, provenance)",
        "pick_pixel": f"pick through a pixel (up to 4 surfaces; {q['pixel_hits_mean']:.1f} found on average)",
        "pick_ray": "pick along a world ray (up to 4 surfaces)",
        "box": f"box {q['box_m']:g} m on a side (median {q['box_inside_p50']:.0f} points inside, "
        f"<= {q['box_points']} back)",
        "box_count": "box, count and objects only",
        "stats": "stats",
    }
    for kind in QUERY_KINDS:
        m = q["ms"][kind]
        lines.append(f"  {labels[kind]:<72} {m['p50']:>7.2f} / {m['p99']:>7.2f}")
    return lines

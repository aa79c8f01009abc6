"""`mirage loadtest`: S sessions x F frames at once over loopback gRPC, then a pose flood.

The server is a `mirage serve` process of its own (as a user runs it), or ``--target`` for one that
is running. Every session streams its own orbit in lock-step (one pose, wait for its frame) after
one RGB-D observation; all sessions run at once. Printed: frames done, errors (any failed call or
frame that did not come), pose-to-frame latency percentiles over every frame, and throughput. Then
one session is flooded with ``flood_rate`` poses a second for ``flood_seconds``: how many frames
came back, how many poses latest-wins dropped (reported by the server as events), and the age of the
frames (now - when their pose was sent) against the frame time (the flood's seconds per frame).
Last, the faults (on a server of its own only): a session on a server with durable checkpoints, the
server killed (-9) and restarted on the same directory, the session resumed by id, then the same with
SIGTERM: the frames each lost.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plugin_bridge.camera import Intrinsics
from plugin_bridge.client import AsyncMirageClient, MirageError
from plugin_bridge.types import Event, Frame, Observation, Pose, StreamEnd
from runtime.evaluation.processes import server_process, stop_process


@dataclass
class LoadtestConfig:
    """What `mirage loadtest` runs; the defaults are the CLI's."""

    sessions: int = 8
    """Sessions streaming at once."""
    frames: int = 1000
    """Generate-mode frames each session streams (lock-step)."""
    size: int = 64
    """Square frame size in pixels."""
    flood_rate: int = 1000
    """Poses a second the flood sends to one session (0: no flood)."""
    flood_seconds: float = 3.0
    """How long the flood lasts."""
    target: str = ""
    """A running server (host:port); empty: start a `mirage serve` process for the test."""
    fault_frames: int = 37
    """The fault phase (a server of its own, durable checkpoints every fault_every frames): frames
    streamed before kill -9, then before SIGTERM (0: no fault phase)."""
    fault_every: int = 10
    """--checkpoint-every of the fault phase's server."""
    json_path: str = ""
    """Also write the figures to this JSON file ("" writes none)."""

    def validate(self) -> None:
        if self.sessions < 1 or self.frames < 1 or self.size < 8 or self.size % 8:
            raise ValueError("sessions and frames >= 1; size a positive multiple of 8")
        if self.flood_rate < 0 or self.flood_seconds <= 0:
            raise ValueError("flood_rate >= 0 and flood_seconds > 0")
        if self.fault_frames < 0 or self.fault_every < 1:
            raise ValueError("fault_frames >= 0 and fault_every >= 1")


def _pose(angle: float) -> Pose:
    return Pose((0.3 * math.sin(angle), 0.0, 0.0), (math.cos(angle / 2), 0.0, math.sin(angle / 2), 0.0))


def _seed_frame(size: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(index)
    tiles = rng.integers(30, 225, size=(size // 8, size // 8, 3), dtype=np.uint8)
    rgb = np.repeat(np.repeat(tiles, 8, axis=0), 8, axis=1)
    return rgb, np.full((size, size), 3.0, dtype=np.float32)


async def lockstep_session(
    client: AsyncMirageClient, k: Intrinsics, index: int, frames: int
) -> tuple[list[float], int]:
    """(latencies of the frames that came, errors: frames that did not and calls that failed)."""
    latencies, failed = [], 0
    try:
        sid = (await client.open_session(k, seed=index)).session_id
    except MirageError:
        return latencies, frames + 1
    stream = client.stream(sid)
    try:
        rgb, depth = _seed_frame(k.width, index)
        await stream.send_observation(Observation(_pose(0.0), rgb, depth, return_frame=True))
        await stream.next_frame()
        for i in range(frames):
            start = time.perf_counter()
            await stream.step(_pose(0.01 * i + index))
            latencies.append((time.perf_counter() - start) * 1e3)
        await stream.close()
        await client.close_session(sid)
    except MirageError:
        failed += 1
    return latencies, failed + frames - len(latencies)


async def _flood(client: AsyncMirageClient, k: Intrinsics, rate: int, seconds: float) -> dict:
    sid = (await client.open_session(k)).session_id
    stream = client.stream(sid)
    for i in range(5):  # warm: the first frames pay one-off costs
        await stream.step(_pose(0.01 * i))
    sent: dict[int, float] = {}
    ages, frames, dropped = [], 0, 0

    async def send() -> int:
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            sent[await stream.send_pose(_pose(0.001 * n))] = time.perf_counter()
            n += 1
            await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
        await stream.end()
        return n

    sender = asyncio.create_task(send())
    began = time.perf_counter()
    while True:
        item = await stream.recv()
        if isinstance(item, Frame):
            frames += 1
            if item.sequence in sent:
                ages.append((time.perf_counter() - sent[item.sequence]) * 1e3)
        elif isinstance(item, Event):
            dropped += len(item.sequences)
        elif item is None or isinstance(item, StreamEnd):
            break
    poses = await sender
    elapsed = time.perf_counter() - began
    await client.close_session(sid)
    frame_ms = elapsed * 1e3 / max(frames, 1)
    a = np.asarray(ages) if ages else np.zeros(1)
    return {
        "rate": rate,
        "seconds": seconds,
        "poses": poses,
        "frames": frames,
        "dropped": dropped,
        "age_p50_ms": float(np.median(a)),
        "age_p99_ms": float(np.percentile(a, 99)),
        "frame_ms": frame_ms,
        "age_p99_frames": float(np.percentile(a, 99)) / frame_ms,
    }


async def _fault(config: LoadtestConfig) -> dict:
    """kill -9 and SIGTERM of a `mirage serve` with durable checkpoints, each followed by a restart on
    the same directory and a resume by id: how many frames each lost (at most fault_every after
    kill -9; none after SIGTERM)."""
    import signal
    import tempfile

    from plugin_bridge.exports import load_export
    from runtime.sealing import write_key_file

    k = Intrinsics.from_fov(config.size, config.size, 60.0)
    with tempfile.TemporaryDirectory(prefix="mirage-fault-") as tmp:
        keys, directory = Path(tmp) / "memory.keys", Path(tmp) / "checkpoints"
        write_key_file(keys)
        flags = ("--memory-key-file", str(keys), "--checkpoint-dir", str(directory),
                 "--checkpoint-every", str(config.fault_every))  # fmt: skip
        out: dict = {"every": config.fault_every, "frames": config.fault_frames}
        session_id, made = "", 0
        for how in ("kill -9", "SIGTERM"):
            proc, port, _, readers = await server_process(*flags)
            try:
                async with AsyncMirageClient(f"127.0.0.1:{port}") as client:
                    if session_id:
                        await client.open_session(k, resume_session_id=session_id)
                        stream = client.stream(session_id)
                        # a frame's index counts the frames before it: the first after the resume's
                        resumed = (await stream.step(_pose(0.01 * made))).frame_index
                        out["kill -9"]["resumed_at"] = resumed
                        out["kill -9"]["lost"] = made - resumed
                        made = resumed + 1
                    else:
                        session_id = (await client.open_session(k)).session_id
                        stream = client.stream(session_id)
                    for _ in range(config.fault_frames):
                        await stream.step(_pose(0.01 * made))
                        made += 1
                    if how == "kill -9":  # the background checkpoint of the last multiple of N
                        want = made - made % config.fault_every
                        path = directory / f"{session_id}.sealed"
                        for _ in range(600):
                            try:
                                if load_export(path).header["session"]["frame_index"] >= want:
                                    break
                            except (OSError, ValueError, KeyError):
                                pass
                            await asyncio.sleep(0.05)
                        proc.send_signal(signal.SIGKILL)
                    else:
                        proc.send_signal(signal.SIGTERM)
                    out[how] = {"frames_made": made}
                    await proc.wait()
            finally:
                await stop_process(proc, readers)
        proc, port, _, readers = await server_process(*flags)
        try:
            async with AsyncMirageClient(f"127.0.0.1:{port}") as client:
                await client.open_session(k, resume_session_id=session_id)
                frame = await client.stream(session_id).step(_pose(0.01 * made))
                out["SIGTERM"]["resumed_at"] = frame.frame_index
                out["SIGTERM"]["lost"] = made - frame.frame_index
                await client.close_session(session_id)
        finally:
            await stop_process(proc, readers)
    return out


async def _run(config: LoadtestConfig) -> dict:
    proc = readers = None
    target = config.target
    if not target:
        proc, port, _, readers = await server_process()
        target = f"127.0.0.1:{port}"
    k = Intrinsics.from_fov(config.size, config.size, 60.0)
    try:
        clients = [AsyncMirageClient(target) for _ in range(config.sessions)]
        start = time.perf_counter()
        results = await asyncio.gather(
            *(lockstep_session(c, k, i, config.frames) for i, c in enumerate(clients))
        )
        wall = time.perf_counter() - start
        latencies = np.asarray([x for lat, _ in results for x in lat])
        report = {
            "sessions": config.sessions,
            "frames_each": config.frames,
            "size": config.size,
            "frames": int(latencies.size),
            "errors": int(sum(e for _, e in results)),
            "p50_ms": float(np.median(latencies)) if latencies.size else 0.0,
            "p99_ms": float(np.percentile(latencies, 99)) if latencies.size else 0.0,
            "throughput_fps": latencies.size / wall,
            "wall_s": wall,
        }
        if config.flood_rate:
            report["flood"] = await _flood(clients[0], k, config.flood_rate, config.flood_seconds)
        for c in clients:
            await c.close()
    finally:
        if proc is not None:
            await stop_process(proc, readers)
    if config.fault_frames and not config.target:
        report["fault"] = await _fault(config)
    return report


def format_report(r: dict) -> str:
    lines = [
        f"load: {r['sessions']} sessions x {r['frames_each']} frames at {r['size']}x{r['size']} over loopback gRPC, "
        f"all at once: {r['frames']} frames, {r['errors']} errors in {r['wall_s']:.1f} s; pose->frame p50 "
        f"{r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms; {r['throughput_fps']:.1f} frames/s in all"
    ]
    f = r.get("flood")
    if f:
        lines.append(
            f"flood: {f['poses']} poses at {f['rate']}/s for {f['seconds']:g} s to one session: {f['frames']} frames, "
            f"{f['dropped']} poses dropped (latest wins, reported); frame age p50 {f['age_p50_ms']:.1f} ms, p99 "
            f"{f['age_p99_ms']:.1f} ms = {f['age_p99_frames']:.2f} frame times ({f['frame_ms']:.1f} ms a frame)"
        )
    f = r.get("fault")
    if f:
        k9, term = f["kill -9"], f["SIGTERM"]
        lines.append(
            f"fault: checkpoints every {f['every']} frames; kill -9 after {k9['frames_made']} frames: resumed at "
            f"frame {k9['resumed_at']}, {k9['lost']} lost; SIGTERM after {term['frames_made']}: resumed at "
            f"frame {term['resumed_at']}, {term['lost']} lost"
        )
    return "\n".join(lines)


def run_loadtest(config: LoadtestConfig) -> dict:
    config.validate()
    report = asyncio.run(_run(config))
    print(format_report(report), flush=True)
    if config.json_path:
        path = Path(config.json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {path}")
    return report

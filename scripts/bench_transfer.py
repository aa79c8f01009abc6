"""Sealed memory transfer and checkpoints, timed over the real gRPC path.

    python scripts/bench_transfer.py [--walls 12] [--size 256] [--reps 5]

Starts a server (loopback, a fresh memory key in a temporary directory), fills a session over gRPC
with observed walls (`--walls` frames of `--size` x `--size` RGB-D; ~65,000 points each at 256), then
times, as medians of `--reps` runs: ExportMemory (sealing on the server, every chunk to the client),
ImportMemory of that export into a second session (every chunk verified, the snapshot loaded and
swapped in), a checkpoint, a rollback, and forgetting observed content (on a fresh import each time),
and prints the sizes and rates side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from plugin_bridge.camera import Intrinsics
from plugin_bridge.client import AsyncMirageClient
from plugin_bridge.types import Observation, Pose, Provenance
from runtime.config import RuntimeConfig
from runtime.evaluation.bench_memory import _wall_frame
from runtime.sealing import write_key_file
from runtime.server import run_server, stop_server

MiB = 2**20


async def _timed(fn, reps: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(reps):
        start = time.perf_counter()
        result = await fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), result


async def main(walls: int, size: int, reps: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "memory.keys"
        write_key_file(keys)
        config = RuntimeConfig()
        config.server.port = 0
        config.server.memory_key_file = str(keys)
        server, port = await run_server(config)
        try:
            async with AsyncMirageClient(f"127.0.0.1:{port}") as client:
                k = Intrinsics.from_fov(size, size, 60.0)
                source = (await client.open_session(k)).session_id
                stream = client.stream(source)
                rng = np.random.default_rng(0)
                for i in range(walls):
                    pose, rgb, depth = _wall_frame(i, size, rng)
                    obs = Observation(Pose.from_matrix(pose), rgb, depth, return_frame=True, sequence=i + 1)
                    await stream.send_observation(obs)
                    await stream.next_frame()
                await stream.close()
                stats = await client.stats(source)
                target = (await client.open_session(k)).session_id

                export_ms, export = await _timed(lambda: client.export_memory(source), reps)
                import_ms, _ = await _timed(lambda: client.import_memory(target, export), reps)
                checkpoint_ms, checkpoint = await _timed(lambda: client.checkpoint(source), 1)
                rollback_ms, _ = await _timed(lambda: client.rollback(source, checkpoint.checkpoint_id), reps)

                async def forget():
                    await client.import_memory(target, export, keep_provenance=True)
                    start = time.perf_counter()
                    edit = await client.forget(target, Provenance.OBSERVED)
                    return (time.perf_counter() - start) * 1e3, edit

                forgets = [await forget() for _ in range(reps)]
                forget_ms = statistics.median(f[0] for f in forgets)
        finally:
            await stop_server(server, 1.0)
    mb = export.nbytes / MiB
    print(
        f"sealed transfer over loopback gRPC, {walls} observed walls at {size}x{size}: {stats.points} points,"
    )
    print(f"memory {stats.bytes_used / MiB:.1f} MiB used of {stats.budget_bytes / MiB:.0f} MiB; export {mb:.1f} MiB "
          f"in {len(export.chunks)} chunks; medians of {reps}:")  # fmt: skip
    print(f"  ExportMemory  {export_ms:8.1f} ms  ({mb / export_ms * 1e3:6.1f} MiB/s)")
    print(f"  ImportMemory  {import_ms:8.1f} ms  ({mb / import_ms * 1e3:6.1f} MiB/s)")
    print(
        f"  checkpoint    {checkpoint_ms:8.1f} ms  ({checkpoint.bytes / MiB:.1f} MiB held on the server; one run)"
    )
    print(f"  rollback      {rollback_ms:8.1f} ms")
    print(f"  forget observed {forget_ms:6.1f} ms  ({forgets[0][1].points_forgotten} points removed)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--walls", type=int, default=12)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.walls, args.size, args.reps))

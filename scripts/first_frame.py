"""The first frames of a freshly started server: a `mirage serve` process, a client that connects as
soon as health says SERVING, opens a session and steps poses; the time of each of its first frames
beside the median of frames 20-40 (a warm frame), for each frame size asked.

    python scripts/first_frame.py [--sizes 64,128,256] [--serve-flag=--warm-sizes=0]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from plugin_bridge.camera import Intrinsics  # noqa: E402
from plugin_bridge.client import MirageClient  # noqa: E402
from plugin_bridge.types import Pose  # noqa: E402


def yaw(angle: float) -> Pose:
    return Pose((0.0, 0.0, 0.0), (math.cos(angle / 2), 0.0, math.sin(angle / 2), 0.0))


def first_frames(size: int, serve_flags: list[str]) -> dict:
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "runtime", "serve", "--port", "0", *serve_flags],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        target = next(
            m.group(1) for line in server.stdout if (m := re.search(r"on (127\.0\.0\.1:\d+)", line))
        )
        with grpc.insecure_channel(target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while (
                health.Check(health_pb2.HealthCheckRequest(), timeout=60).status
                != health_pb2.HealthCheckResponse.SERVING
            ):
                time.sleep(0.01)
        serving_s = time.perf_counter() - started
        times = []
        with MirageClient(target) as client:
            sid = client.open_session(Intrinsics.from_fov(size, size, 60.0)).session_id
            stream = client.stream(sid)
            for i in range(40):
                t0 = time.perf_counter()
                stream.step(yaw(0.01 * i))
                times.append((time.perf_counter() - t0) * 1e3)
            stream.close()
    finally:
        server.terminate()
        server.wait(30)
    return {
        "size": size,
        "serving_s": serving_s,
        "first_ms": times[:3],
        "warm_median_ms": float(np.median(times[20:])),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="64,128,256")
    p.add_argument("--serve-flag", action="append", default=[], help="a flag for mirage serve (repeatable)")
    args = p.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        r = first_frames(size, args.serve_flag)
        print(json.dumps(r), flush=True)
        print(f"{size}x{size}: SERVING after {r['serving_s']:.1f} s; first frames "
              f"{', '.join(f'{t:.0f}' for t in r['first_ms'])} ms; a warm frame {r['warm_median_ms']:.1f} ms",
              flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

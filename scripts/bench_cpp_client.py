"""Round trips of the C++ client beside the Python client's: the same lock-step loop (the C++ example's
Unreal-convention path) against one `mirage serve` process, alternating, twice each.

    python scripts/bench_cpp_client.py [--frames 300] [--size 64] [--build build/cpp]

Builds plugin_bridge/cpp with CMake into --build first (the C++ toolchain: see plugin_bridge/cpp/
CMakeLists.txt). Prints p50 / p99 of each run; the first session of the server (its warm-up) is a
Python session that is not counted.
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from plugin_bridge.camera import Intrinsics  # noqa: E402
from plugin_bridge.client import MirageClient  # noqa: E402
from plugin_bridge.types import Pose  # noqa: E402


def unreal_pose(i: int) -> Pose:
    angle = 0.02 * i
    return Pose((10.0 * math.sin(0.05 * i), 0.0, 170.0), (math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2)))


def python_run(target: str, frames: int, size: int) -> dict:
    trips = []
    with MirageClient(target) as client:
        sid = client.open_session(
            Intrinsics.from_fov(size, size, 60.0), convention="unreal", seed=7
        ).session_id
        stream = client.stream(sid)
        for i in range(frames):
            start = time.perf_counter()
            stream.step(unreal_pose(i))
            trips.append((time.perf_counter() - start) * 1e3)
        stream.close()
        client.close_session(sid)
    return {"p50_ms": float(np.median(trips)), "p99_ms": float(np.percentile(trips, 99))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--build", default=str(ROOT / "build" / "cpp"))
    args = p.parse_args()
    subprocess.run(["cmake", "-S", str(ROOT / "plugin_bridge" / "cpp"), "-B", args.build], check=True,
                   capture_output=True)  # fmt: skip
    subprocess.run(["cmake", "--build", args.build, "-j", "2"], check=True, capture_output=True)
    server = subprocess.Popen([sys.executable, "-m", "runtime", "serve", "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        target = next(
            m.group(1) for line in server.stdout if (m := re.search(r"on (127\.0\.0\.1:\d+)", line))
        )
        python_run(target, 20, args.size)  # the server's warm-up
        runs = {"C++": [], "Python": []}
        for _ in range(2):
            out = subprocess.run([str(Path(args.build) / "mirage_stream"), target, str(args.frames), str(args.size)],
                                 check=True, capture_output=True, text=True).stdout  # fmt: skip
            runs["C++"].append(json.loads(out))
            runs["Python"].append(python_run(target, args.frames, args.size))
    finally:
        server.terminate()
        server.wait(30)
    for name, results in runs.items():
        figures = ", ".join(f"p50 {r['p50_ms']:.2f} / p99 {r['p99_ms']:.2f} ms" for r in results)
        print(
            f"{name:6} client, {args.frames} lock-step frames at {args.size}x{args.size} over loopback: {figures}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The C++ client (plugin_bridge/cpp): built with CMake from the same .proto, its example streaming
Unreal-convention poses to the real server on port 0. Its last frame must be bit for bit the frame
the Python client gets for the same poses and seed; the server's refusals arrive with their status
and message. Skips (with what to install) where the toolchain is missing; CI installs it and fails
instead of skipping."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import make_config, start_server_thread

from plugin_bridge.camera import Intrinsics
from plugin_bridge.client import MirageClient
from plugin_bridge.types import Pose

ROOT = Path(__file__).resolve().parents[2]
TOOLCHAIN = "cmake g++ pkg-config libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc"


def _missing() -> list[str]:
    missing = [
        tool for tool in ("cmake", "c++", "pkg-config", "protoc", "grpc_cpp_plugin") if not shutil.which(tool)
    ]
    if (
        shutil.which("pkg-config")
        and subprocess.run(["pkg-config", "--exists", "grpc++", "protobuf"]).returncode
    ):
        missing.append("grpc++ / protobuf development files")
    return missing


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    missing = _missing()
    if missing:
        message = f"the C++ toolchain is missing ({', '.join(missing)}): apt-get install {TOOLCHAIN}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI installs it: see .ci/run)")
        pytest.skip(message)
    build = tmp_path_factory.mktemp("cpp-build")
    for cmd in (["cmake", "-S", str(ROOT / "plugin_bridge" / "cpp"), "-B", str(build)],
                ["cmake", "--build", str(build), "-j", "2"]):  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return build / "mirage_stream"


def fnv1a(data: bytes) -> str:
    h = 1469598103934665603
    for b in data:
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def unreal_pose(i: int) -> Pose:
    """The example's path: (10 sin(0.05 i), 0, 170) cm, a yaw of 0.02 i about Unreal's up axis."""
    angle = 0.02 * i
    return Pose((10.0 * math.sin(0.05 * i), 0.0, 170.0), (math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2)))


def test_the_cpp_example_streams_and_matches_the_python_client(example):
    running, stop = start_server_thread(make_config())
    try:
        proc = subprocess.run(
            [str(example), running.target, "40", "48"], capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        assert out["frames_sent"] == out["frames_made"] == out["last_sequence"] == 40
        assert (
            (out["width"], out["height"]) == (48, 48)
            and out["points"] > 0
            and 0 < out["render_coverage"] <= 1
        )
        assert out["generator"] == "learned_v2_int8" and out["session_id"] not in running.registry  # closed
        assert out["error_code"] == "NOT_FOUND" and "unknown or closed session" in out["error_message"]
        with MirageClient(running.target) as client:
            sid = client.open_session(
                Intrinsics.from_fov(48, 48, 60.0), convention="unreal", seed=7
            ).session_id
            stream = client.stream(sid)
            for i in range(40):
                frame = stream.step(unreal_pose(i))
            stream.close()
            client.close_session(sid)
        assert fnv1a(frame.rgb.tobytes()) == out["last_rgb_fnv1a"]
    finally:
        stop()


def test_the_cpp_client_carries_the_servers_refusal(example, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("alice alice-token-0123456789abcdef\n")
    tokens.chmod(0o600)
    running, stop = start_server_thread(make_config(token_file=str(tokens)))
    try:
        proc = subprocess.run(
            [str(example), running.target, "3", "32"], capture_output=True, text=True, timeout=120
        )
    finally:
        stop()
    assert proc.returncode == 1
    assert "mirage: UNAUTHENTICATED: this server needs a token" in proc.stderr

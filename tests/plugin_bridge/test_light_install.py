"""The client installs alone: `pip install ./plugin_bridge` into a fresh virtual environment brings
grpcio, protobuf and numpy, not torch, onnxruntime, numba or Panda3D, and streams a frame from a
real server with nothing of the repository on its path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "onnxruntime", "numba", "panda3d", "matplotlib", "runtime")


def _run(cmd: list[str], cwd: Path, timeout: float = 600) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory) -> Path:
    """A fresh venv (no system site-packages) with the client wheel, built from plugin_bridge/."""
    work = tmp_path_factory.mktemp("light_client")
    source = work / "source"  # a copy: the build leaves its build/ folder there, not in the repo
    ignore = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    shutil.copytree(ROOT / "plugin_bridge", source / "plugin_bridge", ignore=ignore)
    shutil.copytree(ROOT / "proto" / "mirage", source / "proto" / "mirage", ignore=ignore)
    wheels = work / "wheels"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels),
         str(source / "plugin_bridge")],
        cwd=work,
    )  # fmt: skip
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=work)
    python = venv / "bin" / "python"
    _run(
        [str(python), "-m", "pip", "install", "--quiet", *map(str, wheels.glob("mirage_client-*.whl"))],
        cwd=work,
    )
    return python


def test_the_client_installs_without_the_runtime_stack(client_venv):
    out = _run(
        [str(client_venv), "-c", textwrap.dedent(f"""
            import importlib.util, plugin_bridge.client, mirage.v1.mirage_pb2
            print(plugin_bridge.client.__file__)
            for name in {HEAVY!r}:
                print(name, importlib.util.find_spec(name) is not None)
        """)],
        cwd=client_venv.parent,
    )  # fmt: skip
    lines = out.splitlines()
    assert "site-packages" in lines[0] and str(ROOT) not in lines[0]  # the installed copy, not the repo
    assert lines[1:] == [f"{name} False" for name in HEAVY]
    dists = _run([str(client_venv), "-m", "pip", "list", "--format=freeze"], cwd=client_venv.parent).lower()
    assert "mirage-client==0.1.0" in dists and "grpcio==" in dists and "numpy==" in dists


def test_the_light_client_streams_a_frame(client_venv, mirage_server):
    script = textwrap.dedent(f"""
        from plugin_bridge.camera import Intrinsics
        from plugin_bridge.client import MirageClient
        from plugin_bridge.types import Pose

        with MirageClient({mirage_server.target!r}) as client:
            info = client.open_session(Intrinsics.from_fov(32, 32, 60.0), convention="unity", seed=3)
            stream = client.stream(info.session_id)
            frame = stream.step(Pose((0, 1.6, 0), (1, 0, 0, 0)))
            stream.close()
            client.close_session(info.session_id)
            print(frame.sequence, frame.rgb.shape, frame.rgb.dtype, info.generator.name)
    """)
    out = _run([str(client_venv), "-c", script], cwd=client_venv.parent, timeout=120).split()
    assert out[0] == "1" and out[1:4] == ["(32,", "32,", "3)"] and out[4] == "uint8"

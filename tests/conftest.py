"""Shared fixtures: a real Mirage server on port 0, run on its own event loop in a thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from runtime.config import RuntimeConfig


@dataclass
class RunningServer:
    port: int
    registry: object
    loop: asyncio.AbstractEventLoop
    server: object = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def start_server_thread(config: RuntimeConfig) -> tuple[RunningServer, callable]:
    from runtime.server import run_server, stop_server

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict = {}

    def main() -> None:
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            try:
                server, port = await run_server(config)
                holder["server"], holder["port"] = server, port
            except BaseException as exc:  # surface start-up failures to the test
                holder["error"] = exc
            finally:
                ready.set()

        loop.run_until_complete(boot())
        if "server" in holder:
            loop.run_forever()

    thread = threading.Thread(target=main, daemon=True, name="mirage-test-server")
    thread.start()
    ready.wait(120)
    if "error" in holder:
        raise holder["error"]
    server = holder["server"]

    def stop() -> None:
        fut = asyncio.run_coroutine_threadsafe(stop_server(server, 0.5), loop)
        fut.result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)

    return RunningServer(holder["port"], server.mirage_registry, loop, server), stop


def make_config(**server_overrides) -> RuntimeConfig:
    config = RuntimeConfig()
    config.server.port = 0
    config.server.warm_sizes = ()  # dozens of servers a run: warm-up has its own test (test_warmup.py)
    for key, value in server_overrides.items():
        setattr(config.server, key, value)
    return config


@pytest.fixture(scope="session")
def mirage_server() -> Iterator[RunningServer]:
    running, stop = start_server_thread(make_config())
    yield running
    stop()


def synthetic_rgbd(width: int = 64, height: int = 64, depth_m: float = 3.0, seed: int = 0):
    """A textured fronto-parallel wall at `depth_m` with a nearer box in the middle (numpy only)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    tiles = rng.integers(30, 225, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    rgb = np.repeat(np.repeat(tiles, 8, axis=0), 8, axis=1)[:height, :width].copy()
    depth = np.full((height, width), depth_m, dtype=np.float32)
    h0, h1, w0, w1 = height // 3, 2 * height // 3, width // 3, 2 * width // 3
    depth[h0:h1, w0:w1] = depth_m * 0.6
    rgb[h0:h1, w0:w1] = (200, 40, 40)
    return rgb, depth


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A tiny engine-rendered generator dataset (64x64), built once: (folder, DatasetConfig, cache root)."""
    from runtime.training.dataset import DatasetConfig, build_dataset

    tiny = DatasetConfig(
        size=64, examples={"train": 6, "val": 3, "test": 4}, per_arrangement=3, context_views=(1, 3)
    )
    root = tmp_path_factory.mktemp("mirage-cache")
    return build_dataset(tiny, root, progress=False), tiny, root


def _train_tiny(tiny_dataset, run_dir, **overrides):
    """``mirage train`` for 2 steps on the tiny dataset with small widths; returns the run folder."""
    from runtime.training import dataset as ds
    from runtime.training.learned import LearnedConfig
    from runtime.training.train import TrainConfig, train

    _, data, root = tiny_dataset
    config = TrainConfig(
        run_dir=str(run_dir),
        data=data,
        model=LearnedConfig(
            widths=(8, 8, 16),
            dilations=(1, 2),
            detail=overrides.pop("detail", False),
            anchored=overrides.pop("anchored", False),
        ),
        steps=2,
        batch=2,
        crop=32,
        val_every=2,
        checkpoint_every=2,
        progress=False,
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    saved = ds.default_cache_dir
    ds.default_cache_dir = lambda: root
    try:
        return train(config)
    finally:
        ds.default_cache_dir = saved


@pytest.fixture(scope="session")
def tiny_learned_models(tiny_dataset, tmp_path_factory):
    """A models folder holding a learned_v1 trained for 2 steps on the tiny dataset (small widths)."""
    from runtime.training.export import export_model
    from runtime.training.train import FINAL

    run = _train_tiny(tiny_dataset, tmp_path_factory.mktemp("learned-run"))
    out = tmp_path_factory.mktemp("learned-models")
    export_model("learned_v1", out, weights=str(run / FINAL), verbose=False)
    return out


@pytest.fixture(scope="session")
def tiny_detail_models(tiny_dataset, tiny_learned_models, tmp_path_factory):
    """(models folder, run folder): learned_v2 trained for 2 steps with detail on the tiny dataset,
    started from tiny_learned_models' run (as the shipped model starts from learned_v1's), exported
    next to copies of that learned_v1 and of the shipped pushpull_v1."""
    import shutil
    from pathlib import Path

    from runtime.training.export import export_model
    from runtime.training.train import FINAL

    first = next(tiny_learned_models.parent.glob("learned-run*/model.safetensors"))
    run = _train_tiny(
        tiny_dataset, tmp_path_factory.mktemp("detail-run"), detail=True, init=str(first), lr=5e-4, warmup=1
    )
    out = tmp_path_factory.mktemp("detail-models")
    export_model("learned_v2", out, weights=str(run / FINAL), verbose=False)
    for path in tiny_learned_models.iterdir():
        shutil.copy(path, out / path.name)
    shipped = Path(__file__).resolve().parents[1] / "exported_models"
    for name in ("pushpull_v1.onnx", "pushpull_v1.card.json"):
        shutil.copy(shipped / name, out / name)
    return out, run

"""GeneratorHost: integrity check, discovery, card validation, the I/O contract and parity with torch."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from plugin_bridge.camera import Intrinsics
from runtime.generator.card import ModelCard, ModelCardError
from runtime.generator.host import (
    GeneratorConfig,
    GeneratorHost,
    ModelContractError,
    ModelIntegrityError,
    ModelNotFoundError,
    available_models,
    default_models_dir,
    ray_directions,
    sha256_file,
)
from runtime.training.pushpull import PushPullFiller

NAME = "pushpull_v1"


@pytest.fixture(scope="module")
def host() -> GeneratorHost:
    return GeneratorHost.load(GeneratorConfig(name=NAME))


def copy_model(dst: Path) -> tuple[Path, Path]:
    src = default_models_dir()
    onnx, card = dst / f"{NAME}.onnx", dst / f"{NAME}.card.json"
    shutil.copy(src / onnx.name, onnx)
    shutil.copy(src / card.name, card)
    return onnx, card


def frame(h: int, w: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    cov = (rng.random((h, w)) > 0.35).astype(np.float32)
    cov[h // 3 : h // 2, w // 4 : w // 2] = 0.0
    rgb = rng.random((h, w, 3), dtype=np.float32) * cov[..., None]
    depth = (rng.random((h, w), dtype=np.float32) * 8 + 0.5) * cov
    return rgb, depth, cov


def test_shipped_model_loads_and_verifies(host):
    card = ModelCard.load(default_models_dir() / f"{NAME}.card.json")
    assert host.name == NAME and host.sha256 == card.sha256
    assert host.sha256 == sha256_file(default_models_dir() / card.file)
    assert host.input_names == ("memory_rgb", "memory_depth", "memory_coverage")
    assert host.providers[-1] == "CPUExecutionProvider"
    assert NAME in available_models()
    assert (default_models_dir() / card.file).stat().st_size < 200_000
    assert card.export["parity_max_abs_diff"] <= 1e-4 and card.size_multiple == 8


def test_models_dir_env_is_honoured(tmp_path, monkeypatch):
    copy_model(tmp_path)
    monkeypatch.setenv("MIRAGE_MODELS_DIR", str(tmp_path))
    assert default_models_dir() == tmp_path and available_models() == [NAME]
    assert GeneratorHost.load(GeneratorConfig(name=NAME)).path == tmp_path / f"{NAME}.onnx"


def test_tampered_model_is_refused(tmp_path, monkeypatch):
    onnx, card_path = copy_model(tmp_path)
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx.write_bytes(bytes(data))
    declared = json.loads(card_path.read_text())["sha256"]
    actual = sha256_file(onnx)

    def no_session(*args, **kwargs):  # the session must never be built from a mismatching file
        raise AssertionError("InferenceSession created before the sha256 check")

    monkeypatch.setattr("runtime.generator.host.ort.InferenceSession", no_session)
    with pytest.raises(ModelIntegrityError) as info:
        GeneratorHost.load(GeneratorConfig(name=NAME, models_dir=str(tmp_path)))
    message = str(info.value)
    assert declared in message and actual in message and str(onnx) in message
    assert f"python -m runtime.training.export {NAME}" in message


def test_missing_model_lists_available(tmp_path):
    copy_model(tmp_path)
    with pytest.raises(ModelNotFoundError, match=rf"'nope'.*available: {NAME}"):
        GeneratorHost.load(GeneratorConfig(name="nope", models_dir=str(tmp_path)))
    (tmp_path / f"{NAME}.onnx").unlink()  # card without its model file
    assert available_models(tmp_path) == []
    with pytest.raises(ModelNotFoundError, match="restore it or re-export"):
        GeneratorHost.load(GeneratorConfig(name=NAME, models_dir=str(tmp_path)))
    assert available_models(tmp_path / "absent") == []


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda d: d.pop("sha256"), "'sha256'"),
        (lambda d: d.update(sha256="abc"), "64 lower-case hex"),
        (lambda d: d.update(inputs="memory_rgb"), "'inputs'"),
        (lambda d: d["inputs"][0].pop("shape"), "lacks 'shape'"),
        (lambda d: d.update(native_resolution=[128]), "native_resolution"),
        (lambda d: d.update(opset="17"), "'opset'"),
        (lambda d: d.update(file="../elsewhere.onnx"), "bare file name"),
        (lambda d: d.update(name="other"), "card names model 'other'"),
        (lambda d: d.update(inputs=d["inputs"][:2]), "card lists inputs"),
    ],
)
def test_malformed_card_is_refused(tmp_path, mutate, needle):
    _, card_path = copy_model(tmp_path)
    data = json.loads(card_path.read_text())
    mutate(data)
    card_path.write_text(json.dumps(data))
    with pytest.raises(ModelCardError) as info:
        GeneratorHost.load(GeneratorConfig(name=NAME, models_dir=str(tmp_path)))
    assert needle in str(info.value)


def test_card_that_is_not_json_is_refused(tmp_path):
    _, card_path = copy_model(tmp_path)
    card_path.write_text("{not json")
    with pytest.raises(ModelCardError, match="not valid JSON"):
        GeneratorHost.load(GeneratorConfig(name=NAME, models_dir=str(tmp_path)))


def test_card_round_trips(tmp_path):
    card = ModelCard.load(default_models_dir() / f"{NAME}.card.json")
    card.write(tmp_path / "c.card.json")
    assert ModelCard.load(tmp_path / "c.card.json") == card


def test_model_asking_for_unknown_input_is_refused(tmp_path):
    class Odd(torch.nn.Module):
        def forward(self, memory_rgb, lidar):
            return memory_rgb, lidar

    onnx = tmp_path / "odd.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            Odd(),
            (torch.zeros(1, 3, 8, 8), torch.zeros(1, 1, 8, 8)),
            str(onnx),
            dynamo=False,
            opset_version=17,
            input_names=["memory_rgb", "lidar"],
            output_names=["rgb", "depth"],
        )
    card = ModelCard.load(default_models_dir() / f"{NAME}.card.json")
    card.name, card.file, card.sha256 = "odd", onnx.name, sha256_file(onnx)
    card.write(tmp_path / "odd.card.json")
    with pytest.raises(ModelContractError, match="'lidar'.*does not provide"):
        GeneratorHost.load(GeneratorConfig(name="odd", models_dir=str(tmp_path)))


@pytest.mark.parametrize("hw", [(128, 128), (120, 160)])
def test_generate_shapes_and_covered_pixels(host, hw):
    h, w = hw
    rgb, depth, cov = frame(h, w, seed=h)
    depth[0, 0] = np.inf  # at infinity: treated as unknown depth
    out_rgb, out_depth = host.generate(rgb, depth, cov, intrinsics=Intrinsics.from_fov(w, h, 60.0), seed=3)
    assert out_rgb.shape == (h, w, 3) and out_rgb.dtype == np.float32 and out_rgb.flags.c_contiguous
    assert out_depth.shape == (h, w) and out_depth.dtype == np.float32
    covered = cov >= 0.999
    assert np.array_equal(out_rgb[covered], rgb[covered])
    finite = covered & np.isfinite(depth)
    assert np.array_equal(out_depth[finite], depth[finite]) and out_depth[0, 0] == 0.0
    assert np.isfinite(out_rgb).all() and np.isfinite(out_depth).all()
    assert out_rgb.min() >= 0 and out_rgb.max() <= 1 and out_depth.min() >= 0
    assert out_depth[~covered].min() > 0.4  # holes got depth from the surrounding surface


def test_generate_rejects_bad_sizes(host):
    k = Intrinsics.from_fov(128, 128, 60.0)
    rgb, depth, cov = frame(128, 128)
    with pytest.raises(ValueError, match="multiples of 8.*128x128"):
        host.generate(rgb[:125, :124], depth[:125, :124], cov[:125, :124], intrinsics=k.scaled(124, 125))
    with pytest.raises(ValueError, match="memory_depth"):
        host.generate(rgb, depth[:120], cov, intrinsics=k)
    with pytest.raises(ValueError, match="memory_coverage"):
        host.generate(rgb, depth, cov[None], intrinsics=k)
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        host.generate(rgb[..., :2], depth, cov, intrinsics=k)
    with pytest.raises(ValueError, match=r"intrinsics.scaled\(128, 128\)"):
        host.generate(rgb, depth, cov, intrinsics=Intrinsics.from_fov(64, 64, 60.0))


def test_onnx_matches_torch(host):
    rgb, depth, cov = frame(96, 136, seed=11)
    cov[::5, ::3] = 0.4  # partial coverage too
    out_rgb, out_depth = host.generate(rgb, depth, cov, intrinsics=Intrinsics.from_fov(136, 96, 70.0))
    with torch.no_grad():
        ref_rgb, ref_depth = PushPullFiller()(
            torch.from_numpy(rgb).permute(2, 0, 1)[None],
            torch.from_numpy(depth)[None, None],
            torch.from_numpy(cov)[None, None],
        )
    assert np.abs(out_rgb - ref_rgb[0].permute(1, 2, 0).numpy()).max() < 1e-5
    assert np.abs(out_depth - ref_depth[0, 0].numpy()).max() < 1e-5


def test_ray_directions_are_unit_opencv_rays():
    k = Intrinsics(fx=100.0, fy=80.0, cx=3.5, cy=1.5, width=8, height=4)
    rays = ray_directions(k)
    assert rays.shape == (3, 4, 8) and rays.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rays, axis=0), 1.0, atol=1e-6)
    assert rays[0, 0, 0] < 0 and rays[0, 0, -1] > 0 and rays[1, 0, 0] < 0 and rays[1, -1, 0] > 0
    np.testing.assert_allclose(
        rays[:, 0, 0] / rays[2, 0, 0], [(0 - 3.5) / 100, (0 - 1.5) / 80, 1.0], rtol=1e-6
    )

"""The learned generator: contract properties, export with parity and a true card, the host runs it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from learned_inputs import SMALL, inputs, randomised

from runtime.generator.card import ModelCard
from runtime.generator.host import GeneratorConfig, GeneratorHost, sha256_file
from runtime.training.export import ExportError, export_model
from runtime.training.learned import (
    FAR_INV,
    INPUTS,
    LearnedFiller,
    depth_from_inverse,
    inverse_depth,
)
from runtime.training.pushpull import PushPullFiller
from runtime.training.train import FINAL, TrainConfig, train


def test_covered_pixels_come_back_exactly():
    rgb, depth, cov, rays, noise = inputs(40, 48, seed=3)
    with torch.no_grad():
        out_rgb, out_depth = randomised()(rgb, depth, cov, rays, noise)
    keep = cov >= 0.999
    assert torch.equal(out_rgb[keep.expand_as(rgb)], rgb[keep.expand_as(rgb)])
    assert torch.equal(out_depth[keep], depth[keep])
    assert ((out_rgb >= 0) & (out_rgb <= 1)).all() and (out_depth >= 0).all()
    assert not torch.equal(out_rgb, rgb)  # and the holes were filled with something else


def test_untrained_model_is_the_push_pull_fill():
    # the head starts at zero: before training the model returns exactly push-pull's colour
    rgb, depth, cov, rays, noise = inputs(32, 32, seed=5)
    with torch.no_grad():
        ours = LearnedFiller(SMALL).eval()(rgb, depth, cov, rays, noise)
        base = PushPullFiller()(rgb, depth, cov)
    torch.testing.assert_close(ours[0], base[0], atol=1e-6, rtol=0)


def test_inverse_depth_round_trip_and_infinity():
    z = torch.tensor([0.0, 0.5, 2.0, 80.0, float("inf"), float("nan")])
    inv = inverse_depth(z)
    torch.testing.assert_close(inv, torch.tensor([0.0, 1 / 1.5, 1 / 3.0, 1 / 81.0, 0.0, 0.0]))
    back = depth_from_inverse(torch.tensor([1 / 1.5, 1 / 3.0, FAR_INV * 0.5, 0.0]))
    torch.testing.assert_close(back[:2], torch.tensor([0.5, 2.0]))
    assert torch.equal(back[2:], torch.full((2,), back[2].item())) and back[2] > 1000.0  # beyond memory far


def test_noise_changes_only_generated_pixels():
    rgb, depth, cov, rays, noise = inputs(32, 32, seed=7)
    model = randomised()
    with torch.no_grad():
        a = model(rgb, depth, cov, rays, noise)[0]
        b = model(rgb, depth, cov, rays, torch.randn_like(noise))[0]
    keep = (cov >= 0.999).expand_as(a)
    assert torch.equal(a[keep], b[keep]) and not torch.equal(a[~keep], b[~keep])


def test_export_needs_weights(tmp_path):
    with pytest.raises(ExportError, match="--weights"):
        export_model("learned_v1", tmp_path, verbose=False)


def test_trained_weights_export_with_parity_and_a_true_card(tiny_dataset, tmp_path, monkeypatch):
    _, data, root = tiny_dataset
    monkeypatch.setattr("runtime.training.dataset.default_cache_dir", lambda: root)
    cfg = TrainConfig(run_dir=str(tmp_path / "run"), data=data, model=SMALL, steps=2, batch=2, crop=32,
                      val_every=2, checkpoint_every=2, progress=False)  # fmt: skip
    run = train(cfg)
    out = tmp_path / "models"
    result = export_model("learned_v1", out, weights=str(run / FINAL), verbose=False)
    card = ModelCard.load(result.card_path)
    assert card.sha256 == sha256_file(result.onnx_path)
    assert card.export["parity_max_abs_diff"] <= 1e-4
    assert tuple(card.input_names) == INPUTS and card.opset == 17
    assert card.training["steps"] == 2 and card.training["seed"] == 0
    assert (
        card.training["command"].startswith("mirage train")
        and card.training["checkpoint_format"] == "safetensors"
    )
    assert card.training["validation_last"]["step"] == 2
    host = GeneratorHost.load(GeneratorConfig(name="learned_v1", models_dir=str(out)))
    from plugin_bridge.camera import Intrinsics

    k = Intrinsics.from_fov(64, 48, 60.0)
    rng = np.random.default_rng(0)
    cov = (rng.random((48, 64)) > 0.5).astype(np.float32)
    mem_rgb = rng.random((48, 64, 3), dtype=np.float32) * cov[..., None]
    mem_depth = (rng.random((48, 64), dtype=np.float32) * 10) * cov
    rgb, depth = host.generate(mem_rgb, mem_depth, cov, intrinsics=k, seed=4)
    again = host.generate(mem_rgb, mem_depth, cov, intrinsics=k, seed=4)
    assert np.array_equal(rgb, again[0])  # the noise comes from the seed: deterministic replay
    np.testing.assert_array_equal(rgb[cov >= 0.999], mem_rgb[cov >= 0.999])
    assert rgb.shape == (48, 64, 3) and depth.shape == (48, 64) and not np.isnan(depth).any()


def test_a_pose_only_stream_builds_memory_from_the_learned_model(tiny_learned_models):
    # with nothing in memory, push-pull returns depth 0 (nothing to ingest); the learned model predicts
    # depth, so the very first generated frame already leaves points (and sky) in memory
    from plugin_bridge.camera import Intrinsics
    from plugin_bridge.conventions import Convention, look_at
    from runtime.memory import MemoryConfig
    from runtime.session import Session
    from runtime.types import DepthEncoding, FrameEncoding, PoseInput, SessionSpec

    host = GeneratorHost.load(GeneratorConfig(name="learned_v1", models_dir=str(tiny_learned_models)))
    k = Intrinsics.from_fov(64, 48, 60.0)
    spec = SessionSpec(Convention.OPENCV, 1.0, k, FrameEncoding.RAW_RGB8, DepthEncoding.FLOAT16_METERS, 0,
                       "learned_v1", 8 * 2**20, 0, 3, False)  # fmt: skip
    session = Session(spec, host, MemoryConfig(budget_bytes=8 * 2**20))
    pose = look_at((0.0, 0.0, 1.5), (5.0, 0.0, 1.2))
    frame = session.step_pose(PoseInput(sequence=1, client_timestamp_us=0, cam_to_world=pose))
    stats = session.stats()
    assert frame.coverage == 0.0 and frame.rgb.shape == (48, 64, 3)
    assert stats.points + stats.environment_texels > 0
    # and what it generated is what memory now shows from the same pose
    again = session.step_pose(PoseInput(sequence=2, client_timestamp_us=0, cam_to_world=pose), commit=False)
    assert again.coverage > 0.5


def test_int8_variant_is_written_with_its_own_card(tiny_dataset, tiny_learned_models, tmp_path, monkeypatch):
    import shutil

    from runtime.training.export import export_int8

    _, data, root = tiny_dataset
    monkeypatch.setattr("runtime.training.dataset.default_cache_dir", lambda: root)
    out = tmp_path / "models"
    shutil.copytree(tiny_learned_models, out)
    weights = next(p for p in tiny_learned_models.parent.glob("learned-run*/model.safetensors"))
    result = export_int8("learned_v1", out, weights=str(weights), data=data, verbose=False)
    card = ModelCard.load(result.card_path)
    assert card.name == "learned_v1_int8" and card.sha256 == sha256_file(result.onnx_path)
    assert card.export["quantization"]["weights"] == "int8 per channel"
    assert 0.0 <= card.export["parity_max_abs_diff"] < 0.25  # int8: close to the fp32 model, not exact
    host = GeneratorHost.load(GeneratorConfig(name="learned_v1_int8", models_dir=str(out)))
    from plugin_bridge.camera import Intrinsics

    cov = np.ones((32, 32), np.float32)
    cov[:, 16:] = 0.0
    rgb = np.full((32, 32, 3), 0.4, np.float32) * cov[..., None]
    out_rgb, out_depth = host.generate(rgb, 3.0 * cov, cov, intrinsics=Intrinsics.from_fov(32, 32, 60.0))
    np.testing.assert_array_equal(out_rgb[:, :16], rgb[:, :16])  # covered pixels kept, as in fp32
    assert np.isfinite(out_depth).all()

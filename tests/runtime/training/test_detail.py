"""Noise-modulated detail (learned_v2): the noise input scales the detail and nothing else, the detail
head learns from its own loss alone, a model with detail starts from one without, export records the
whole training chain, the host and the evaluation honour the detail strength."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from learned_inputs import SMALL, inputs, randomised
from safetensors.torch import save_file

from plugin_bridge.camera import Intrinsics
from runtime.generator.card import ModelCard
from runtime.generator.host import GeneratorConfig, GeneratorHost, models_with_detail
from runtime.metrics import gradient_energy
from runtime.training.export import DETAIL_DEFAULT, ExportError, export_model, random_inputs
from runtime.training.learned import INPUTS, LearnedConfig, LearnedFiller
from runtime.training.scoring import host_runner, load_generator, parse_generator
from runtime.training.train import FINAL, LossWeights, detail_loss, init_from, losses, window_energy

DETAIL = LearnedConfig(widths=(8, 8, 16), dilations=(1, 2), detail=True)


def test_noise_scales_the_detail_and_zero_is_the_mean_prediction():
    rgb, depth, cov, rays, noise = inputs(32, 40, seed=2)
    model = randomised(DETAIL)
    with torch.no_grad():
        mean, _, amp = model.complete(rgb, depth, cov, rays, noise)
        zero, zero_depth = model(rgb, depth, cov, rays, noise * 0)
        half, half_depth = model(rgb, depth, cov, rays, noise * 0.5)
        other = model(rgb, depth, cov, rays, torch.randn_like(noise) * 0)[0]
    keep = (cov >= 0.999).expand_as(rgb)
    torch.testing.assert_close(zero[~keep], mean[~keep], rtol=0, atol=0)
    assert torch.equal(zero, other)  # without detail the noise's values do not matter at all
    assert torch.equal(zero_depth, half_depth)  # detail is colour only
    assert torch.equal(half[keep], rgb[keep])  # covered pixels still come back exactly
    expected = (mean + 0.5 * amp * noise).clamp(0, 1)
    torch.testing.assert_close(half[~keep], expected[~keep], rtol=0, atol=1e-6)
    assert (amp > 0).all() and not torch.equal(half[~keep], zero[~keep])


def test_detail_head_learns_only_from_the_detail_loss():
    rgb, depth, cov, rays, noise = inputs(32, 32, seed=4)
    model = randomised(DETAIL).train()
    truth = torch.rand(1, 3, 32, 32)
    batch = {
        "filled": (cov < 0.999).float(),
        "truth_rgb": truth,
        "memory_rgb": rgb,
        "truth_inv": torch.rand(1, 1, 32, 32),
        "noise": noise,
    }
    mean, inv, amp = model.complete(rgb, depth, cov, rays, noise)
    terms = losses(mean, inv, batch, LossWeights(), amp)
    terms["detail"].backward(retain_graph=True)
    head = {n for n, _ in model.named_parameters() if n.startswith("detail_head.")}
    for name, p in model.named_parameters():
        moved = p.grad is not None and bool(p.grad.abs().sum() > 0)
        assert moved == (name in head), name
    model.zero_grad(set_to_none=True)
    (terms["total"] - terms["detail"]).backward()
    for name, p in model.named_parameters():
        if name in head:
            assert p.grad is None or not p.grad.abs().any(), name


def test_window_energy_agrees_with_the_metric():
    torch.manual_seed(0)
    img = torch.rand(1, 3, 9, 9)
    full = torch.ones(1, 1, 9, 9)
    energy, share = window_energy(img, full)
    assert energy.shape == (1, 1, 2, 2) and torch.equal(share, torch.ones_like(share))
    metric = gradient_energy(img[0].permute(1, 2, 0).numpy())
    assert float(energy.mean()) == pytest.approx(metric, rel=1e-5)
    # with a mask: only pairs with both ends inside count, as in the metric
    mask = torch.zeros(1, 1, 9, 9)
    mask[..., :5, :5] = 1.0
    energy, share = window_energy(img, mask)
    m = mask[0, 0].numpy() > 0
    assert float(energy[0, 0, 0, 0]) == pytest.approx(
        gradient_energy(img[0].permute(1, 2, 0).numpy(), m), rel=1e-5
    )
    assert float(share[0, 0, 1, 1]) == 0.0


def test_detail_loss_is_zero_for_the_truth_and_grows_with_wrong_strength():
    torch.manual_seed(1)
    truth = torch.rand(2, 3, 32, 32)
    m = torch.ones(2, 1, 32, 32)
    smooth = torch.full_like(truth, 0.5)
    assert float(detail_loss(truth, truth, m)) < 1e-6
    assert float(detail_loss(smooth, truth, m)) > 3.0  # log(1e-4) vs log of the truth's energy
    strong = (truth - 0.5) * 3 + 0.5
    assert 0.5 < float(detail_loss(strong, truth, m)) < float(detail_loss(smooth, truth, m))


def test_a_model_with_detail_starts_from_one_without(tmp_path):
    source = randomised(SMALL, seed=3)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    target = LearnedFiller(DETAIL)
    init_from(target, path)
    rgb, depth, cov, rays, noise = inputs(32, 32, seed=6)
    with torch.no_grad():
        want = source.complete(rgb, depth, cov, rays, torch.zeros_like(noise))
        got = target.eval().complete(rgb, depth, cov, rays, noise)
    # the source's mean prediction without noise is the new model's mean prediction
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="do not fit"):
        init_from(LearnedFiller(LearnedConfig(widths=(8, 8, 32), dilations=(1, 2), detail=True)), path)


def test_export_refuses_weights_of_the_other_kind(tiny_learned_models, tmp_path):
    weights = next(tiny_learned_models.parent.glob("learned-run*/model.safetensors"))
    with pytest.raises(ExportError, match="--detail"):
        export_model("learned_v2", tmp_path, weights=str(weights), verbose=False)


def test_card_records_both_training_stages_and_the_detail_control(tiny_detail_models):
    models, run = tiny_detail_models
    card = ModelCard.load(models / "learned_v2.card.json")
    stages = card.training["stages"]
    assert len(stages) == 2 and [s["steps"] for s in stages] == [2, 2] and card.training["steps"] == 4
    first, second = (s["command"] for s in stages)
    assert first.startswith("mirage train") and "--init" not in first
    assert "--init" in second and "--detail" in second and "--lr 0.0005" in second and "--warmup 1" in second
    assert card.training["command"] == f"{first} && {second}"
    assert card.training["wall_minutes"] == pytest.approx(sum(s["wall_minutes"] for s in stages), abs=0.11)
    assert card.extra["detail"]["default"] == DETAIL_DEFAULT and card.extra["detail"]["input"] == "noise"
    assert "mean" in card.training["validation_last"]  # validation also scores the mean prediction
    assert models_with_detail(models) == ["learned_v2"]


def test_host_applies_the_detail_strength(tiny_detail_models):
    models, _ = tiny_detail_models
    host = GeneratorHost.load(GeneratorConfig(name="learned_v2", models_dir=str(models)))
    assert host.detail_control and host.detail_default == DETAIL_DEFAULT
    k = Intrinsics.from_fov(48, 40, 60.0)
    rng = np.random.default_rng(0)
    cov = (rng.random((40, 48)) > 0.5).astype(np.float32)
    rgb = rng.random((40, 48, 3), dtype=np.float32) * cov[..., None]
    depth = rng.random((40, 48), dtype=np.float32) * 10 * cov
    base = host.generate(rgb, depth, cov, intrinsics=k, seed=1)[0]
    same = host.generate(rgb, depth, cov, intrinsics=k, seed=1, detail=DETAIL_DEFAULT)[0]
    mean_a = host.generate(rgb, depth, cov, intrinsics=k, seed=1, detail=0.0)[0]
    mean_b = host.generate(rgb, depth, cov, intrinsics=k, seed=2, detail=0.0)[0]
    assert np.array_equal(base, same)  # detail=None is the card's default
    assert np.array_equal(mean_a, mean_b)  # no detail: the seed no longer matters
    holes = cov < 0.999
    assert not np.array_equal(base[holes], mean_a[holes])
    np.testing.assert_array_equal(mean_a[~holes], rgb[~holes])
    plain = GeneratorHost.load(GeneratorConfig(name="learned_v1", models_dir=str(models)))
    assert not plain.detail_control
    with pytest.raises(ValueError, match="no detail control"):
        plain.generate(rgb, depth, cov, intrinsics=k, detail=0.5)


def test_evaluation_labels_pick_the_detail(tiny_detail_models):
    models, _ = tiny_detail_models
    assert parse_generator("learned_v2@0.5") == ("learned_v2", 0.5)
    assert parse_generator("pushpull_v1") == ("pushpull_v1", None)
    for bad in ("learned_v2@x", "learned_v2@-1", "learned_v2@nan"):
        with pytest.raises(ValueError, match="after '@'"):
            parse_generator(bad)
    with pytest.raises(ValueError, match="no detail control"):
        load_generator("learned_v1@0.5", str(models))
    host, detail = load_generator("learned_v2@0", str(models))
    feeds = random_inputs(INPUTS, 32, 32, seed=9)
    zero = host_runner(host, detail)(feeds)
    other = host_runner(host, detail)({**feeds, "noise": feeds["noise"] * 3})
    assert np.array_equal(zero, other) and not np.array_equal(zero, host_runner(host)(feeds))


def test_int8_variant_keeps_the_detail_control(tiny_dataset, tiny_detail_models, tmp_path, monkeypatch):
    import shutil

    from runtime.training.export import export_int8

    _, data, root = tiny_dataset
    monkeypatch.setattr("runtime.training.dataset.default_cache_dir", lambda: root)
    models, run = tiny_detail_models
    out = tmp_path / "models"
    shutil.copytree(models, out)
    export_int8("learned_v2", out, weights=str(run / FINAL), data=data, verbose=False)
    host = GeneratorHost.load(GeneratorConfig(name="learned_v2_int8", models_dir=str(out)))
    assert host.detail_control and host.detail_default == DETAIL_DEFAULT
    k = Intrinsics.from_fov(32, 32, 60.0)
    cov = np.ones((32, 32), np.float32)
    cov[:, 16:] = 0.0
    rgb = np.full((32, 32, 3), 0.4, np.float32) * cov[..., None]
    a = host.generate(rgb, 3.0 * cov, cov, intrinsics=k, seed=1, detail=0.0)[0]
    b = host.generate(rgb, 3.0 * cov, cov, intrinsics=k, seed=2, detail=0.0)[0]
    assert np.array_equal(a, b)
    np.testing.assert_array_equal(a[:, :16], rgb[:, :16])

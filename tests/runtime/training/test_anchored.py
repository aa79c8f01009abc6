"""The anchored generator (learned_v3): it paints only colours the memory render has, starts as the
push-pull fill, trains on recoloured examples, and exports without a noise input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from learned_inputs import SMALL, inputs, randomised

from runtime.generator.card import ModelCard
from runtime.generator.host import GeneratorConfig, GeneratorHost
from runtime.training.export import ExportError, export_model
from runtime.training.learned import CANDIDATES, LearnedConfig, LearnedFiller
from runtime.training.pushpull import PushPullFiller
from runtime.training.train import FINAL, random_colour_map, recolour

ANCHORED = dataclasses.replace(SMALL, anchored=True)


def test_a_world_of_one_colour_is_filled_with_that_colour_only():
    # every candidate is made of the memory's colours: with one colour in memory, every hole gets it,
    # whatever the weights (a randomised model's are far from the push-pull start)
    rgb, depth, cov, rays, _ = inputs(40, 48, seed=2)
    colour = torch.tensor([0.93, 0.91, 0.15]).view(1, 3, 1, 1)
    flat = torch.where(cov > 0, colour.expand_as(rgb), torch.zeros_like(rgb))
    with torch.no_grad():
        out, _ = randomised(ANCHORED)(flat, depth, cov, rays)
    torch.testing.assert_close(out, colour.expand_as(out), atol=1e-5, rtol=0)


def test_a_channel_the_scene_lacks_stays_empty():
    # no green anywhere in memory: a convex combination of its colours has none either (a residual
    # model can paint it: the failure this model is built against)
    rgb, depth, cov, rays, noise = inputs(40, 48, seed=4)
    rgb = rgb.clone()
    rgb[:, 1] = 0.0
    with torch.no_grad():
        out, _ = randomised(ANCHORED)(rgb, depth, cov, rays)
        residual, _ = randomised(SMALL)(rgb, depth, cov, rays, noise)
    assert float(out[:, 1].abs().max()) < 1e-6
    assert float(residual[:, 1].max()) > 0.05
    # and within each pixel the colour stays inside the memory's range, channel by channel
    for c in (0, 2):
        covered = rgb[:, c][cov[:, 0] > 0]
        assert float(out[:, c].min()) >= float(covered.min()) - 1e-6
        assert float(out[:, c].max()) <= float(covered.max()) + 1e-6


def test_covered_pixels_come_back_exactly_and_the_noise_is_not_used():
    rgb, depth, cov, rays, noise = inputs(32, 40, seed=6)
    model = randomised(ANCHORED)
    with torch.no_grad():
        a_rgb, a_depth = model(rgb, depth, cov, rays)
        b_rgb, b_depth = model(rgb, depth, cov, rays, noise)
    assert torch.equal(a_rgb, b_rgb) and torch.equal(a_depth, b_depth)
    keep = cov >= 0.999
    assert torch.equal(a_rgb[keep.expand_as(rgb)], rgb[keep.expand_as(rgb)])
    assert torch.equal(a_depth[keep], depth[keep])
    assert not torch.equal(a_rgb, rgb)


def test_untrained_it_is_nearly_the_push_pull_fill():
    rgb, depth, cov, rays, _ = inputs(32, 32, seed=8)
    with torch.no_grad():
        ours, _ = LearnedFiller(ANCHORED).eval()(rgb, depth, cov, rays)
        base, _ = PushPullFiller()(rgb, depth, cov)
    # the fill's starting weight: e^6 / (e^6 + CANDIDATES - 1)
    w0 = np.exp(6.0) / (np.exp(6.0) + CANDIDATES - 1)
    assert float((ours - base).abs().max()) <= (1.0 - w0) + 1e-6


def test_a_residual_model_cannot_be_anchored_with_detail():
    with pytest.raises(ValueError, match="anchored"):
        LearnedFiller(LearnedConfig(widths=(8, 8, 16), dilations=(1,), detail=True, anchored=True))
    with pytest.raises(ValueError, match="noise"):
        rgb, depth, cov, rays, _ = inputs(16, 16, seed=1)
        LearnedFiller(SMALL)(rgb, depth, cov, rays)


def test_recolouring_maps_memory_and_truth_alike_and_keeps_the_holes():
    rng = np.random.default_rng(3)
    h, w = 24, 32
    truth = rng.random((h, w, 3)).astype(np.float32)
    truth_sky = np.zeros((h, w), bool)
    truth_sky[:8] = True
    covered = rng.random((h, w)) > 0.3
    memory = np.where(covered[..., None], truth, 0.0).astype(np.float32)
    memory_sky = covered & truth_sky
    seen_two_maps = False
    for _ in range(12):
        mem, tru = recolour(memory, covered, memory_sky, truth, truth_sky, rng)
        assert mem.dtype == np.float32 and (mem >= 0).all() and (tru <= 1).all()
        assert not mem[~covered].any()  # holes stay empty
        np.testing.assert_allclose(mem[covered], tru[covered], atol=1e-6)  # the same map on both
        assert not np.allclose(tru, truth, atol=0.02)  # and it did change the colours
        # the sky's map differs from the ground's in some draws: a grey pixel tells the maps apart
        grey = np.full((h, w, 3), 0.5, np.float32)
        _, g = recolour(np.zeros_like(grey), np.zeros((h, w), bool), np.zeros((h, w), bool), grey, truth_sky,
                        np.random.default_rng(rng.integers(1 << 30)))  # fmt: skip
        seen_two_maps |= not np.allclose(g[0, 0], g[-1, -1], atol=1e-4)
    assert seen_two_maps


def test_random_colour_maps_are_invertible_and_vary():
    rng = np.random.default_rng(0)
    maps = [random_colour_map(rng) for _ in range(20)]
    for m, o in maps:
        assert abs(np.linalg.det(m)) > 1e-3 and (np.abs(o) <= 0.15).all()
    assert len({tuple(np.round(m, 3).ravel()) for m, _ in maps}) == 20


def test_trained_with_recolouring_it_exports_without_noise_and_runs_in_the_host(tiny_dataset, tmp_path):
    import conftest

    run = conftest._train_tiny(tiny_dataset, tmp_path / "run", anchored=True, palette=True)
    out = tmp_path / "models"
    with pytest.raises(ExportError, match="anchored"):
        export_model("learned_v1", out, weights=str(run / FINAL), verbose=False)
    result = export_model("learned_v3", out, weights=str(run / FINAL), verbose=False)
    card = ModelCard.load(result.card_path)
    assert tuple(card.input_names) == ("memory_rgb", "memory_depth", "memory_coverage", "ray_dirs")
    assert card.export["parity_max_abs_diff"] <= 1e-4
    assert "--anchored" in card.training["command"] and "--palette" in card.training["command"]
    host = GeneratorHost.load(GeneratorConfig(name="learned_v3", models_dir=str(out)))
    assert not host.detail_control
    from plugin_bridge.camera import Intrinsics

    k = Intrinsics.from_fov(64, 48, 60.0)
    rng = np.random.default_rng(0)
    cov = (rng.random((48, 64)) > 0.5).astype(np.float32)
    mem_rgb = np.zeros((48, 64, 3), np.float32)
    mem_rgb[..., 0] = rng.random((48, 64), dtype=np.float32) * cov  # red only
    mem_depth = (rng.random((48, 64), dtype=np.float32) * 10) * cov
    rgb, depth = host.generate(mem_rgb, mem_depth, cov, intrinsics=k, seed=4)
    assert np.abs(rgb[..., 1:]).max() < 1e-5  # trained or not, it paints no colour memory lacks
    np.testing.assert_array_equal(rgb[cov >= 0.999], mem_rgb[cov >= 0.999])
    assert depth.shape == (48, 64) and not np.isnan(depth).any()

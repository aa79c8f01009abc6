"""Push-pull hole filler (torch) and its export to ONNX."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from runtime.generator.card import ModelCard
from runtime.generator.host import sha256_file
from runtime.training.export import export_model, random_inputs
from runtime.training.pushpull import PushPullFiller, push_pull

FILLER = PushPullFiller()


def run(rgb: torch.Tensor, depth: torch.Tensor, cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return FILLER(rgb, depth, cov)


def random_case(h: int, w: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(1, 3, h, w, generator=g)
    depth = torch.rand(1, 1, h, w, generator=g) * 10 + 0.5
    cov = (torch.rand(1, 1, h, w, generator=g) > 0.4).float()
    cov[..., h // 4 : h // 2, w // 4 : w // 2] = 0.0
    return rgb * cov, depth * cov, cov


def test_has_no_parameters():
    assert list(FILLER.parameters()) == [] and list(FILLER.buffers()) == []


@pytest.mark.parametrize("hw", [(128, 128), (120, 160), (8, 8), (64, 24)])
def test_covered_pixels_are_exact_and_shapes_hold(hw):
    h, w = hw
    rgb, depth, cov = random_case(h, w, seed=h * w)
    cov[..., 0, 0] = 0.9995  # above the 0.999 threshold counts as covered
    rgb_out, depth_out = run(rgb, depth, cov)
    assert rgb_out.shape == (1, 3, h, w) and depth_out.shape == (1, 1, h, w)
    assert rgb_out.dtype == torch.float32 and depth_out.dtype == torch.float32
    keep = (cov >= 0.999).expand_as(rgb)
    assert torch.equal(rgb_out[keep], rgb[keep])
    assert torch.equal(depth_out[cov >= 0.999], depth[cov >= 0.999])
    assert torch.isfinite(rgb_out).all() and torch.isfinite(depth_out).all()
    assert rgb_out.min() >= 0 and rgb_out.max() <= 1 and depth_out.min() >= 0


def test_constant_image_fills_holes_with_the_constant():
    h, w = 96, 128
    colour = torch.tensor([0.2, 0.6, 0.9]).view(1, 3, 1, 1)
    cov = torch.ones(1, 1, h, w)
    cov[..., 10:60, 20:100] = 0.0  # a big hole
    cov[..., ::7, ::5] = 0.0  # speckle
    cov[..., 80:, :8] = 0.3  # partial coverage
    rgb = colour.expand(1, 3, h, w) * (cov > 0)
    depth = torch.full((1, 1, h, w), 4.0) * (cov > 0)
    rgb_out, depth_out = run(rgb, depth, cov)
    torch.testing.assert_close(rgb_out, colour.expand_as(rgb_out), atol=1e-5, rtol=0)
    torch.testing.assert_close(depth_out, torch.full_like(depth_out, 4.0), atol=1e-5, rtol=0)


def test_hole_between_red_and_blue_fills_with_a_blend():
    h, w = 64, 64
    rgb = torch.zeros(1, 3, h, w)
    rgb[:, 0, :, : w // 2] = 1.0  # left red
    rgb[:, 2, :, w // 2 :] = 1.0  # right blue
    cov = torch.ones(1, 1, h, w)
    cov[..., 16:48, 16:48] = 0.0
    rgb = rgb * cov
    out, _ = run(rgb, torch.ones(1, 1, h, w) * cov, cov)
    hole = out[0, :, 16:48, 16:48]
    assert hole[1].abs().max() < 1e-6  # no green appears
    torch.testing.assert_close(hole[0] + hole[2], torch.ones(32, 32), atol=1e-5, rtol=0)  # convex blend
    red = hole[0]
    assert red[:, 0].mean() > 0.7 and red[:, -1].mean() < 0.3  # red near the red side, blue near blue
    assert (red[:, 1:] <= red[:, :-1] + 1e-5).float().mean() > 0.95  # mostly monotone left to right
    assert 0.3 < red[:, 15:17].mean() < 0.7  # a blend in the middle


def test_fill_stays_within_neighbour_range():
    rgb, depth, cov = random_case(64, 96, seed=3)
    rgb = 0.3 + 0.4 * rgb  # covered colours in [0.3, 0.7]
    depth = torch.where(cov > 0, 2.0 + depth / 10.5 * 3.0, torch.zeros_like(depth))  # depths in [2, 5]
    rgb = rgb * cov
    rgb_out, depth_out = run(rgb, depth, cov)
    hole = (cov == 0).expand_as(rgb)
    assert rgb_out[hole].min() >= 0.3 - 1e-5 and rgb_out[hole].max() <= 0.7 + 1e-5
    hole_d = cov == 0
    assert depth_out[hole_d].min() >= 2.0 - 1e-5 and depth_out[hole_d].max() <= 5.0 + 1e-5


def test_nothing_covered_is_mid_grey_and_zero_depth():
    h, w = 40, 56
    rgb_out, depth_out = run(torch.zeros(1, 3, h, w), torch.zeros(1, 1, h, w), torch.zeros(1, 1, h, w))
    assert torch.equal(rgb_out, torch.full_like(rgb_out, 0.5))
    assert torch.equal(depth_out, torch.zeros_like(depth_out))


def test_everything_covered_is_identity():
    rgb, depth, _ = random_case(32, 48, seed=5)
    cov = torch.ones(1, 1, 32, 48)
    rgb_out, depth_out = run(rgb, depth, cov)
    assert torch.equal(rgb_out, rgb) and torch.equal(depth_out, depth)


def test_depth_is_filled_only_from_valid_depth():
    h, w = 64, 64
    cov = torch.ones(1, 1, h, w)
    cov[..., 20:44, 20:44] = 0.0
    depth = torch.full((1, 1, h, w), 3.0) * cov
    depth[..., :, :10] = 0.0  # covered but depth unknown / at infinity (e.g. the environment map)
    rgb = torch.full((1, 3, h, w), 0.5) * cov
    _, depth_out = run(rgb, depth, cov)
    torch.testing.assert_close(
        depth_out[..., 20:44, 20:44], torch.full((1, 1, 24, 24), 3.0), atol=1e-5, rtol=0
    )
    assert torch.equal(depth_out[..., :, :10], torch.zeros(1, 1, h, 10))  # covered zeros are kept
    # no valid depth at all: depth stays 0 everywhere, colour is still filled
    rgb_out, depth_out = run(rgb, torch.zeros(1, 1, h, w), cov)
    assert torch.equal(depth_out, torch.zeros_like(depth_out))
    torch.testing.assert_close(rgb_out, torch.full_like(rgb_out, 0.5), atol=1e-5, rtol=0)


def test_garbage_under_holes_is_ignored():
    rgb, depth, cov = random_case(32, 32, seed=9)
    hole = cov == 0
    rgb_bad = torch.where(hole.expand_as(rgb), torch.full_like(rgb, float("nan")), rgb)
    depth_bad = torch.where(hole, torch.full_like(depth, float("inf")), depth)
    ref = run(rgb, depth, cov)
    got = run(rgb_bad, depth_bad, cov)
    assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])


def test_fill_down_columns_is_the_row_fill_of_the_transposed_image():
    gen = torch.Generator().manual_seed(3)
    value = torch.rand(1, 4, 37, 53, generator=gen)
    weight = (torch.rand(1, 1, 37, 53, generator=gen) > 0.6).float()
    weight[:, :, :, 7] = 0.0  # an empty column: it takes the empty value, as an empty row would
    cols = push_pull(value, weight, 0.5, along="cols")
    rows = push_pull(value.transpose(2, 3), weight.transpose(2, 3), 0.5, along="rows").transpose(2, 3)
    assert torch.allclose(cols, rows, atol=1e-6)
    assert torch.all(cols[:, :, :, 7] == 0.5)
    with pytest.raises(ValueError, match="along='diagonal'"):
        push_pull(value, weight, 0.5, along="diagonal")


def test_export_writes_a_matching_card_and_a_working_model(tmp_path):
    result = export_model("pushpull_v1", tmp_path, verbose=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pushpull_v1.card.json", "pushpull_v1.onnx"]
    card = ModelCard.load(result.card_path)
    assert card.sha256 == sha256_file(result.onnx_path) == result.sha256
    assert card.export["parity_max_abs_diff"] <= 1e-4 and result.size_bytes < 200_000
    session = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["memory_rgb", "memory_depth", "memory_coverage"]
    for h, w in [(128, 128), (256, 256), (120, 160)]:
        feeds = random_inputs(card.input_names, h, w, seed=h + w)
        rgb, depth = session.run(["rgb", "depth"], feeds)
        with torch.no_grad():
            ref = FILLER(*(torch.from_numpy(feeds[n]) for n in card.input_names))
        assert rgb.shape == (1, 3, h, w) and depth.shape == (1, 1, h, w)
        assert np.abs(rgb - ref[0].numpy()).max() < 1e-5
        assert np.abs(depth - ref[1].numpy()).max() < 1e-4  # depths up to 20 m

"""Generators side by side: the scores mean what they say, the contact sheet is drawn."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from runtime.evaluation.generators import contact_sheet
from runtime.training.dataset import Split
from runtime.training.scoring import compare_generators, score_examples


def _truth_runner(split):
    """A 'generator' that returns the engine's frame: what a perfect model would output."""
    lookup = {split["memory_rgb"][i].tobytes(): i for i in range(len(split))}

    def run(feeds):
        out = []
        for rgb in feeds["memory_rgb"]:
            i = lookup[np.clip(np.rint(rgb.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8).tobytes()]
            out.append(split["truth_rgb"][i].transpose(2, 0, 1).astype(np.float32) / 255.0)
        return np.stack(out)

    return run


def test_a_perfect_generator_scores_the_cap_and_ratio_one(tiny_dataset):
    folder, data, _ = tiny_dataset
    split = Split(folder / "test")
    scores = score_examples(_truth_runner(split), split, data.fov_x_deg)
    assert scores["examples"] == len(split)
    assert scores["psnr_filled"] == 100.0  # the cap: filled pixels are exact
    assert math.isclose(scores["gradient_ratio"], 1.0)
    # covered pixels come from memory (not exactly the engine's frame), so SSIM is below 1 but above a guess
    flat = score_examples(lambda f: np.full_like(f["memory_rgb"], 0.5), split, data.fov_x_deg)
    assert flat["ssim_all"] < scores["ssim_all"] < 1.0


def test_a_flat_generator_has_no_gradient_energy(tiny_dataset):
    folder, data, _ = tiny_dataset
    split = Split(folder / "test")
    flat = score_examples(lambda f: np.full_like(f["memory_rgb"], 0.5), split, data.fov_x_deg)
    assert flat["gradient_ratio"] == 0.0 and flat["psnr_filled"] < 30.0


def test_shipped_models_are_compared_and_drawn(tiny_dataset, tmp_path):
    folder, data, _ = tiny_dataset
    split = Split(folder / "test")
    rows = compare_generators(["pushpull_v1"], split, data.fov_x_deg, timing=False)
    (row,) = rows
    assert row["generator"] == "pushpull_v1" and row["examples"] == len(split)
    assert row["courtyard"]["examples"] + row["arrangements"]["examples"] == len(split)
    assert 0.0 < row["ssim_all"] <= 1.0 and row["model_bytes"] > 0
    shown = contact_sheet(["pushpull_v1"], split, data.fov_x_deg, tmp_path / "sheet.png", count=3)
    assert 1 <= len(shown) <= 3
    sheet = Image.open(tmp_path / "sheet.png")
    assert sheet.width > 3 * 64 and sheet.height > len(shown) * 64

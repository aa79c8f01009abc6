"""`mirage train` on a tiny engine-rendered dataset: the 2-step smoke test and exact resume."""

from __future__ import annotations

import json

import torch
from safetensors import safe_open

from runtime.training.learned import LearnedConfig
from runtime.training.train import CHECKPOINT, FINAL, LossWeights, TrainConfig, losses, train

SMALL = LearnedConfig(widths=(8, 8, 16), dilations=(1, 2))


def _config(run_dir, data, steps: int) -> TrainConfig:
    return TrainConfig(run_dir=str(run_dir), data=data, model=SMALL, steps=steps, batch=2, crop=32,
                       val_every=2, checkpoint_every=1, progress=False)  # fmt: skip


def _weights(path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}


def test_two_steps_write_weights_curves_and_a_log(tiny_dataset, tmp_path, monkeypatch):
    folder, data, root = tiny_dataset
    monkeypatch.setattr("runtime.training.dataset.default_cache_dir", lambda: root)
    run = train(_config(tmp_path / "run", data, steps=2))
    assert {p.name for p in run.iterdir()} >= {
        FINAL,
        CHECKPOINT,
        "loss_curves.png",
        "log.jsonl",
        "config.json",
    }
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    val = [e["val"] for e in log if "val" in e]
    assert [v["step"] for v in val] == [0, 2]
    for v in val:
        assert v["examples"] == data.examples["val"] and 0.0 < v["ssim_all"] <= 1.0
    weights = _weights(run / FINAL)
    assert weights and all(torch.isfinite(t).all() for t in weights.values())
    # the head starts at zero; two steps of Adam moved it
    assert weights["head.weight"].abs().sum() > 0


def test_an_interrupted_run_resumes_to_the_same_weights(tiny_dataset, tmp_path, monkeypatch):
    folder, data, root = tiny_dataset
    monkeypatch.setattr("runtime.training.dataset.default_cache_dir", lambda: root)
    straight = train(_config(tmp_path / "straight", data, steps=4))
    # stop after 2 steps (as if killed after a checkpoint), then run again to 4
    train(_config(tmp_path / "resumed", data, steps=2))
    (tmp_path / "resumed" / FINAL).unlink()
    resumed = train(_config(tmp_path / "resumed", data, steps=4))
    a, b = _weights(straight / FINAL), _weights(resumed / FINAL)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_losses_vanish_for_a_perfect_prediction():
    torch.manual_seed(0)
    truth = torch.rand(2, 3, 32, 32)
    inv = torch.rand(2, 1, 32, 32)
    cov = (torch.rand(2, 1, 32, 32) > 0.5).float()
    batch = {"filled": 1.0 - cov, "truth_rgb": truth, "memory_rgb": truth * cov, "truth_inv": inv}
    perfect = losses(truth, inv, batch, LossWeights())
    assert all(float(v) < 1e-5 for v in perfect.values())
    worse = losses(truth.flip(-1), inv * 0.5, batch, LossWeights())
    assert all(float(worse[k]) > 1e-3 for k in ("l1", "ssim", "grad", "depth", "total"))


def test_a_run_resumes_only_with_its_own_settings(tiny_dataset, tmp_path, monkeypatch):
    import pytest

    folder, data, root = tiny_dataset
    monkeypatch.setattr("runtime.training.dataset.default_cache_dir", lambda: root)
    train(_config(tmp_path / "run", data, steps=1))
    other = _config(tmp_path / "run", data, steps=2)
    other.model = LearnedConfig(widths=(8, 8, 16), dilations=(1, 2), detail=True)
    with pytest.raises(ValueError, match="other settings \\(model"):
        train(other)
    train(_config(tmp_path / "run", data, steps=2))  # the same settings, more steps: resumes
    assert json.loads((tmp_path / "run" / "config.json").read_text())["steps"] == 2


def test_a_run_from_before_the_detail_field_still_resumes(tiny_dataset, tmp_path, monkeypatch):
    folder, data, root = tiny_dataset
    monkeypatch.setattr("runtime.training.dataset.default_cache_dir", lambda: root)
    run = train(_config(tmp_path / "run", data, steps=1))
    saved = json.loads((run / "config.json").read_text())
    del saved["model"]["detail"], saved["loss"]["detail"]  # as written before those fields existed
    (run / "config.json").write_text(json.dumps(saved))
    train(_config(tmp_path / "run", data, steps=2))
    assert json.loads((run / "config.json").read_text())["steps"] == 2

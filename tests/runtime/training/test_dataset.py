from __future__ import annotations

import json

import numpy as np

from runtime.training.dataset import ARRAYS, KINDS, DatasetConfig, Split, _arrangements, build_dataset


def test_splits_have_the_documented_arrays(tiny_dataset):
    folder, config, _ = tiny_dataset
    for split, n in config.examples.items():
        data = Split(folder / split)
        assert len(data) == n
        for name, (dtype, tail) in ARRAYS.items():
            assert data[name].shape == (n, 64, 64, *tail) and data[name].dtype == np.dtype(dtype)
        assert set(np.unique(data["memory_coverage"])) <= {0, 255}
        for i, meta in enumerate(data.meta):
            assert meta["kind"] in KINDS
            covered = data["memory_coverage"][i] > 0
            assert abs(meta["coverage"] - covered.mean()) < 1e-9
            if meta["kind"] == "empty":
                assert meta["context_views"] == 0 and not covered.any()
            # memory colour only where memory covers; truth depth positive (inf = sky)
            assert not data["memory_rgb"][i][~covered].any()
            assert (data["truth_depth"][i] > 0).all()


def test_build_is_deterministic_and_cached(tiny_dataset, tmp_path):
    folder, config, root = tiny_dataset
    again = build_dataset(config, tmp_path, progress=False)
    for split in config.examples:
        a, b = Split(folder / split), Split(again / split)
        for name in ARRAYS:
            np.testing.assert_array_equal(a[name], b[name])
        assert a.meta == b.meta
    # a second call reuses the cache (same folder, nothing rewritten)
    stamp = (folder / "train" / "meta.json").stat().st_mtime_ns
    assert build_dataset(config, root, progress=False) == folder
    assert (folder / "train" / "meta.json").stat().st_mtime_ns == stamp
    assert json.loads((folder / "config.json").read_text())["seed"] == config.seed


def test_held_out_scene_and_arrangements_never_reach_training():
    config = DatasetConfig()  # the shipped model's data
    train = _arrangements(config, "train")
    val, test = _arrangements(config, "val"), _arrangements(config, "test")
    assert all(scene != "courtyard" for scene, _ in train)
    assert any(scene == "courtyard" for scene, _ in test)
    train_random = {seed for scene, seed in train if scene == "random"}
    held_out = {seed for scene, seed in val + test if scene == "random"}
    assert train_random and held_out and not (train_random & held_out)


def test_every_kind_is_drawn(tiny_dataset):
    folder, _, _ = tiny_dataset
    config = DatasetConfig(examples={"train": 400, "val": 0, "test": 0})
    rng = np.random.default_rng(0)
    from runtime.training.dataset import _kinds

    drawn = _kinds(rng, config.examples["train"])
    assert set(drawn) == set(KINDS)
    assert tiny_dataset[1].key() != config.key()

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


def test_held_out_families_never_reach_training_and_test_worlds_are_held_out():
    from runtime.training.dataset import HELD_OUT_FAMILIES, TRAIN_FAMILIES, family_test_config

    trained = DatasetConfig(train_families=TRAIN_FAMILIES, family_share=0.25)
    scenes = _arrangements(trained, "train")
    family_worlds = {(s, seed) for s, seed in scenes if s in TRAIN_FAMILIES}
    assert family_worlds and not any(s in HELD_OUT_FAMILIES for s, _ in scenes)
    assert abs(len(family_worlds) / len(scenes) - 0.25) < 0.05
    test = _arrangements(family_test_config(), "test")
    # every family gets the same number of worlds, the held-out ones first; no world is a training one
    per_family = {f: [seed for s, seed in test if s == f] for f in (*HELD_OUT_FAMILIES, *TRAIN_FAMILIES)}
    assert len({len(v) for v in per_family.values()}) == 1 and all(per_family.values())
    assert [s for s, _ in test][0] == HELD_OUT_FAMILIES[0]
    assert not ({(s, seed) for s, seed in test} & family_worlds)
    # a dataset without families keeps the key it had before the family fields existed
    assert DatasetConfig().key() == "22681899fedf"
    assert trained.key() != DatasetConfig().key()


def test_the_camera_walks_the_family_ring():
    from runtime.training.dataset import _RING_CENTRE, _RING_WALK, _start, _target

    rng = np.random.default_rng(5)
    for _ in range(200):
        walker = _start(rng, ring=True)
        for kind in KINDS:
            walker = _target(rng, kind, walker)
            r = float(np.hypot(*(walker.eye[:2] - _RING_CENTRE)))
            assert _RING_WALK[0] - 1e-9 <= r <= _RING_WALK[1] + 1e-9 and 0.9 <= walker.eye[2] <= 2.4


def test_family_examples_render_in_their_world(tmp_path):
    from runtime.training.dataset import family_test_config

    config = family_test_config(size=48, per_family=1, per_arrangement=1)
    data = Split(build_dataset(config, tmp_path, progress=False) / "test")
    assert [m["scene"] for m in data.meta] == list(config.test_families)
    for i, meta in enumerate(data.meta):
        sky = ~np.isfinite(data["truth_depth"][i])
        if meta["scene"] == "hall":
            assert not sky.any()  # indoors: the room closes every view
        assert (data["truth_depth"][i][~sky] > 0.2).all()  # not inside a shape

"""`mirage eval`: the tiny suite end to end, the forward warp of the fidelity baseline, and the
persistence display strings."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from plugin_bridge.camera import Intrinsics
from plugin_bridge.conventions import look_at
from runtime.evaluation.cycle import METHOD_WINDOWS
from runtime.evaluation.fidelity import FIDELITY_METHODS, forward_warp, held_out_poses
from runtime.evaluation.peers import open3d_available
from runtime.evaluation.report import PLOTS, clean_json, persistence_display
from runtime.evaluation.suite import SUITES, EvalConfig, persistence, run_eval
from runtime.evaluation.truth import TRUTH_METHODS
from runtime.scenes.families import FAMILIES
from runtime.training.dataset import HELD_OUT_FAMILIES, TRAIN_FAMILIES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METHODS = list(METHOD_WINDOWS)


def _is_num(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ---------------------------------------------------------------- the tiny suite, end to end


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_tiny")
    returned = run_eval(EvalConfig(suite="tiny", out=out, progress=False))
    return out, returned


def test_tiny_report_json_has_every_required_key(tiny):
    out, _ = tiny
    text = (out / "report.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    report = json.loads(text)
    assert report["suite"] == "tiny"
    assert _is_num(report["seconds"]) and report["seconds"] > 0

    groups: dict[tuple, list[dict]] = {}
    for row in report["cycle"]:
        for key in ("scene", "path", "method"):
            assert isinstance(row[key], str)
        assert row["path"] in ("out_and_back", "abc_loop")
        assert isinstance(row["frames"], int) and row["frames"] > 0
        for key in ("revisit_psnr", "revisit_ssim", "contextual_accuracy", "context_loss"):
            assert _is_num(row[key]) and math.isfinite(row[key]), (key, row)
        assert 0.0 <= row["contextual_accuracy"] <= 1.0
        assert row["context_loss"] == pytest.approx(1.0 - row["contextual_accuracy"])
        if row["method"] == "mirage":
            clr = row["context_loss_reduction"]
            assert set(clr) == {"window16", "window8", "no_memory"}
            assert all(v is None or _is_num(v) for v in clr.values())
        else:
            assert "context_loss_reduction" not in row
        groups.setdefault((row["scene"], row["path"], row["frames"]), []).append(row)
    spec = SUITES["tiny"]
    expected = {(s, "out_and_back", n) for s, r in spec.scenes.items() for n in r.out_and_back}
    expected |= {(s, "abc_loop", 3 * r.abc_n_per_leg) for s, r in spec.scenes.items()}
    assert set(groups) == expected
    # every memory method with the default generator, and mirage again with each other compared model
    default = report["generator_default"]
    others = [f"{default}@0", *[g for g in ("pushpull_v1", "learned_v1") if g != default][:1]]
    for rows in groups.values():
        assert sorted(r["method"] for r in rows) == sorted([*METHODS, *(f"mirage ({g})" for g in others)])
    assert {r["generator"] for r in report["generators"]} >= {
        default,
        f"{default}@0",
        "learned_v1",
        "pushpull_v1",
    }
    assert {r["generator"] for r in report["fidelity"]} == {default, *others}

    assert set(report["persistence"]) == set(METHODS)
    for entry in report["persistence"].values():
        assert entry["frames"] is None or isinstance(entry["frames"], int)
        assert isinstance(entry["never_dropped"], bool)
        assert isinstance(entry["display"], str) and entry["display"]

    fidelity = report["fidelity"]
    assert {(r["scene"], r["method"]) for r in fidelity} == {
        (s, m) for s in (*spec.scenes, *spec.fidelity_families) for m in FIDELITY_METHODS
    }
    for row in fidelity:
        for key in ("psnr_all", "ssim_all"):
            assert _is_num(row[key]) and math.isfinite(row[key])
        for key in ("psnr_covered", "psnr_filled"):
            assert row[key] is None or (_is_num(row[key]) and math.isfinite(row[key]))
        assert row["psnr_covered"] is not None  # observations always leave something covered
        assert -1.0 <= row["ssim_all"] <= 1.0

    truth = report["truth"]
    methods = set(TRUTH_METHODS) if open3d_available()[0] else {"mirage"}
    assert {(r["family"], r["method"]) for r in truth} == {(f, m) for f in FAMILIES for m in methods}
    for row in truth:
        assert row["views"] == spec.truth.views
        for key in ("psnr_all", "ssim_all", "coverage", "see_through", "unobserved"):
            assert _is_num(row[key]) and math.isfinite(row[key]), (row, key)
        assert 0.0 <= row["coverage"] <= 1.0 and 0.0 <= row["see_through"] <= 1.0
        if row["method"] == "mirage":
            assert row["coverage"] > 0.5  # memory of what the observations saw, even at 48x48

    # every shipped generator per scene family, in held-out worlds, the held-out families first
    fam_split = report["generator_family_split"]
    assert fam_split["held_out"] == list(HELD_OUT_FAMILIES) and fam_split["trained"] == list(TRAIN_FAMILIES)
    assert {r["generator"] for r in report["generator_families"]} == {
        r["generator"] for r in report["generators"]
    }
    for r in report["generator_families"]:
        assert list(r["by_scene"]) == [*HELD_OUT_FAMILIES, *TRAIN_FAMILIES]
        for sub in r["by_scene"].values():
            assert sub["examples"] == 2 and _is_num(sub["ssim_all"]) and math.isfinite(sub["ssim_all"])

    env = report["environment"]
    assert isinstance(env["cpu"], str) and isinstance(env["threads"], int)
    assert set(env["versions"]) >= {"python", "torch", "onnxruntime", "grpcio", "numpy", "panda3d"}
    assert "git_commit" in env


def test_tiny_returns_what_it_wrote(tiny):
    out, returned = tiny
    assert clean_json(returned) == json.loads((out / "report.json").read_text())


def test_tiny_report_md_and_plots(tiny):
    out, _ = tiny
    md = (out / "report.md").read_text()
    for heading in (
        "Cycle tests",
        "Memory persistence",
        "Fidelity",
        "Memory against the truth per scene family",
        "Generators per scene family",
        "mean of held out",
    ):
        assert heading in md
    for method in [*METHODS, "warp_nearest"]:
        assert method in md
    assert "| scene | path | N | method |" in md
    for name in PLOTS.values():
        assert f"({name})" in md
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, name


# ---------------------------------------------------------------- forward warp


def _textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_warp_into_its_own_pose_reproduces_the_frame():
    k = Intrinsics.from_fov(48, 40, 60.0)
    rgb = _textured(40, 48)
    depth = np.random.default_rng(1).uniform(1.0, 20.0, size=(40, 48)).astype(np.float32)
    depth[:5] = np.inf  # sky
    depth[10, 10] = 0.0  # unknown
    pose = look_at((1.0, -2.0, 1.5), (3.0, 4.0, 1.0))
    out_rgb, out_depth, covered = forward_warp(rgb, depth, k, pose, pose)
    assert covered.sum() == 40 * 48 - 1 and not covered[10, 10]
    np.testing.assert_array_equal(out_rgb[covered], rgb[covered])
    np.testing.assert_allclose(out_depth[covered], depth[covered], rtol=1e-5)
    assert out_depth[10, 10] == 0.0


def test_sideways_move_shifts_a_plane_by_its_disparity():
    h, w, z, baseline = 32, 64, 4.0, 0.5
    k = Intrinsics(64.0, 64.0, (w - 1) / 2, (h - 1) / 2, w, h)  # disparity fx * b / z = 8 px
    rgb = _textured(h, w, seed=2)
    depth = np.full((h, w), z, dtype=np.float32)
    src = look_at((0.0, 0.0, 1.0), (0.0, 10.0, 1.0))
    dst = src.copy()
    dst[:3, 3] += baseline * src[:3, 0]  # along the camera's x axis (image right)
    out_rgb, out_depth, covered = forward_warp(rgb, depth, k, src, dst)
    shift = round(k.fx * baseline / z)
    assert shift == 8
    np.testing.assert_array_equal(out_rgb[:, : w - shift], rgb[:, shift:])
    assert covered[:, : w - shift].all() and not covered[:, w - shift :].any()
    np.testing.assert_allclose(out_depth[:, : w - shift], z, rtol=1e-6)


def test_warp_z_buffer_keeps_the_nearest_surface():
    h, w = 16, 16
    k = Intrinsics(16.0, 16.0, 7.5, 7.5, w, h)
    rgb = np.zeros((h, w, 3), dtype=np.uint8)
    rgb[:, :8] = (255, 0, 0)  # a near strip on the left...
    rgb[:, 8:] = (0, 0, 255)  # ...and a far wall on the right
    depth = np.full((h, w), 8.0, dtype=np.float32)
    depth[:, :8] = 1.0
    src = look_at((0.0, 0.0, 1.0), (0.0, 10.0, 1.0))
    dst = src.copy()
    dst[:3, 3] -= 0.25 * src[:3, 0]  # step left: the near strip slides right over the far wall
    out_rgb, out_depth, covered = forward_warp(rgb, depth, k, src, dst)
    # the near strip moves 4 px, the far wall 0.5 px (rounds to 0 or 1): columns 8..11 are contested
    contested = out_rgb[:, 8:12]
    assert (contested == (255, 0, 0)).all()
    assert np.allclose(out_depth[:, 8:12], 1.0)


def test_held_out_poses_are_near_but_off_the_path_and_deterministic():
    path = [look_at((0.0, y, 1.5), (0.0, y + 5.0, 1.5)) for y in np.linspace(0, 5, 30)]  # walks +y
    a = held_out_poses(path, 6, seed=3)
    b = held_out_poses(path, 6, seed=3)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    for pose in a:
        assert 0.3 <= abs(pose[0, 3]) <= 0.6  # sideways off the path (x = 0)
        r = pose[:3, :3]
        np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-9)
        yaw = np.degrees(np.arccos(np.clip(r[:, 2] @ np.array([0.0, 1.0, 0.0]), -1, 1)))
        assert 5.0 - 1e-9 <= yaw <= 15.0 + 1e-9
        assert abs(r[2, 0]) < 1e-9  # image x stays horizontal: a pure yaw


# ---------------------------------------------------------------- persistence


@pytest.mark.parametrize(
    ("frames", "never", "tested", "expected"),
    [
        (300, True, [100, 300], "> 300"),
        (100, False, [100, 300], "100"),
        (None, False, [100, 300], "< 100"),
        (4, True, [4], "> 4"),
    ],
)
def test_persistence_display(frames, never, tested, expected):
    assert persistence_display(frames, never, tested) == expected


def test_persistence_from_rows():
    def row(method, n, acc):
        return {
            "scene": "garden",
            "path": "out_and_back",
            "method": method,
            "frames": n,
            "contextual_accuracy": acc,
        }

    accs = {
        "mirage": (0.99, 0.95, 0.93),
        "window16": (0.95, 0.5, 0.97),  # drops at 300: later recoveries do not count
        "window8": (0.5, 0.95, 0.95),
        "no_memory": (math.nan, 0.95, 0.95),
    }
    rows = [row(m, n, a) for m, vals in accs.items() for n, a in zip((100, 300, 1000), vals, strict=True)]
    rows.append({**row("mirage", 100, 0.0), "scene": "courtyard"})  # other scenes are ignored
    result = persistence(rows, "garden")
    assert result["mirage"] | {"accuracy": None} == {
        "frames": 1000,
        "never_dropped": True,
        "display": "> 1000",
        "accuracy": None,
    }
    assert (result["window16"]["frames"], result["window16"]["display"]) == (100, "100")
    assert (result["window8"]["frames"], result["window8"]["display"]) == (None, "< 100")
    assert result["no_memory"]["display"] == "< 100"


def test_eval_config_rejects_an_unknown_suite():
    with pytest.raises(ValueError, match="unknown suite"):
        EvalConfig(suite="huge")

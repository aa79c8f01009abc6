"""`mirage bench` end to end on a tiny configuration: well-formed figures, never timing assertions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from runtime.evaluation.bench import STAGES, BenchConfig, run_bench
from runtime.evaluation.bench_memory import exploring_path

ROW_NUMBERS = (
    "fps_grpc",
    "fps_inprocess",
    "overhead_ratio",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "inprocess_p50_ms",
    "inprocess_p95_ms",
)
SCALING_KEYS = ("render_ingest_ms", "render_ingest_ms_10x", "ratio_10x")
SOAK_KEYS = ("peak_rss_mb", "budget_mb", "max_bytes_used_mb")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_bench_runs_end_to_end_and_writes_well_formed_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    config = BenchConfig(
        sizes=(64,), frames=6, soak_frames=20, warmup=2, json_path=str(out), scaling_reps=3,
        observe_frames=4, queries=2, session_counts=(1, 2), session_frames=3, query_size=64,
        query_points=5000, query_count=2,
    )  # fmt: skip
    returned = run_bench(config)
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    report = json.loads(text)
    assert report == returned
    assert set(report) == {"sizes", "observe", "sessions", "queries", "memory_scaling", "soak", "environment"}
    (observe,) = report["observe"]
    assert observe["frames"] == 4 and observe["ingest_ms_p50"] > 0 and observe["points"] > 0
    assert observe["render_query_ms_p50"] > 0 and observe["open3d_integrate_ms_p50"] > 0  # [peers] installed
    assert [(t["sessions"], t["frames"], t["errors"]) for t in report["sessions"]] == [(1, 3, 0), (2, 6, 0)]

    (row,) = report["sizes"]
    assert row["size"] == 64 and isinstance(row["size"], int)
    for key in ROW_NUMBERS:
        assert _number(row[key]), key
    assert row["fps_grpc"] > 0 and row["fps_inprocess"] > 0
    assert set(row["storage"]) == {"full", "quantised"}  # both storage modes timed on the same poses
    for figures in row["storage"].values():
        assert _number(figures["fps"]) and 0 < figures["p50_ms"] <= figures["p95_ms"]
    assert row["storage"]["full"]["p50_ms"] == row["inprocess_p50_ms"]
    assert row["overhead_ratio"] == pytest.approx(row["fps_inprocess"] / row["fps_grpc"])
    assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    assert set(row["stages_ms"]) == set(STAGES)
    assert set(STAGES) == {"decode", "render", "generate", "compose", "ingest", "encode", "transport"}
    for stage, value in row["stages_ms"].items():
        assert _number(value) and value >= 0, stage

    scaling = report["memory_scaling"]
    assert isinstance(scaling["points_1x"], int) and isinstance(scaling["points_10x"], int)
    assert scaling["points_10x"] > scaling["points_1x"] > 0
    assert scaling["points_10x"] == pytest.approx(10 * scaling["points_1x"], rel=0.05)
    for key in SCALING_KEYS:
        assert _number(scaling[key]) and scaling[key] > 0, key
    assert scaling["in_view_10x"] == scaling["in_view_1x"]  # the added content is hidden from the camera

    soak = report["soak"]
    assert soak["frames"] == 20 and isinstance(soak["frames"], int)
    for key in SOAK_KEYS:
        assert _number(soak[key]), key
    assert soak["budget_mb"] == 64 and soak["storage"] == "full"
    assert 0 < soak["max_bytes_used_mb"] <= soak["budget_mb"]
    assert soak["peak_rss_mb"] > 0
    # measured on a server process of its own, after its warm-up session (not this process's RSS)
    assert soak["server_process"] is True and soak["warmup_frames"] == 20
    assert (
        soak["rss_mb_series"][0] == round(soak["start_rss_mb"], 1)
        and len(soak["rss_mb_series"]) == 1 + 20 // 50 + 1
    )
    assert soak["growth_mb"] == soak["peak_rss_mb"] - soak["start_rss_mb"]
    assert (
        soak["full_at_frame"] is None and soak["growth_after_full_mb"] is None
    )  # 20 frames never fill 64 MiB

    env = report["environment"]
    assert isinstance(env["cpu"], str) and isinstance(env["git_commit"], str | None)
    assert isinstance(env["threads"], int) and env["threads"] >= 1
    assert isinstance(env["torch_threads"], int) and env["torch_threads"] >= 1
    assert isinstance(env["versions"], dict) and "python" in env["versions"]

    printed = capsys.readouterr().out
    assert "64x64" in printed
    assert "ratio_10x" in printed and "soak:" in printed and "transport" in printed


def test_config_rejects_sizes_the_runtime_cannot_serve():
    with pytest.raises(ValueError, match="multiples of 8"):
        BenchConfig(sizes=(100,)).validate()
    with pytest.raises(ValueError, match="frames"):
        BenchConfig(frames=0).validate()
    with pytest.raises(ValueError, match="soak_storage='packed'"):
        BenchConfig(soak_storage="packed").validate()


def test_exploring_path_is_smooth_and_stays_on_the_lawn():
    poses = exploring_path(3000)
    assert len(poses) == 3000
    eyes = np.array([p[:3, 3] for p in poses])
    steps = np.linalg.norm(np.diff(eyes[:, :2], axis=0), axis=1)
    assert steps.max() < 0.2 and 0.05 < steps.mean() < 0.12
    assert np.all(np.abs(eyes[:, 0]) <= 8.5 + 1e-6) and np.all(np.abs(eyes[:, 1] - 3.0) <= 13.0 + 1e-6)
    for p in poses[::97]:
        r = p[:3, :3]
        assert np.allclose(r.T @ r, np.eye(3), atol=1e-9) and np.linalg.det(r) > 0
    # it keeps exploring: the second half reaches places the first half never came within 1 m of
    first, second = eyes[:1500, :2], eyes[1500:, :2]
    nearest = np.min(np.linalg.norm(second[::25, None, :] - first[None, ::5, :], axis=-1), axis=1)
    assert nearest.max() > 1.0


def test_bench_times_every_query_kind_alone_with_a_filled_memory(capsys):
    config = BenchConfig(sections=("queries",), query_size=64, query_points=20_000, query_count=3)
    report = run_bench(config)
    assert set(report) == {"queries", "environment"}  # only the section asked for ran
    q = report["queries"]
    assert q["size"] == 64 and q["queries"] == 3
    assert q["points"] >= 20_000 and q["frames"] % 25 == 0  # filled until the target, checked every 25
    assert set(q["ms"]) == {"render", "pick_pixel", "pick_ray", "box", "box_count", "stats"}
    for kind, m in q["ms"].items():
        assert _number(m["p50"]) and 0 < m["p50"] <= m["p99"], kind
    assert q["box_inside_p50"] > 0  # the box sits on a surface the render showed
    assert q["pixel_hits_mean"] > 0
    printed = capsys.readouterr().out
    assert "memory queries at 64x64" in printed and "pick through a pixel" in printed
    assert "soak" not in printed and "memory scaling" not in printed


def test_config_rejects_unknown_sections():
    with pytest.raises(ValueError, match="sections"):
        BenchConfig(sections=("queries", "vibes")).validate()
    with pytest.raises(ValueError, match="query_size"):
        BenchConfig(query_size=60).validate()

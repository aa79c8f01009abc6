"""`mirage loadtest` end to end on a tiny load (a real `mirage serve` process, real clients)."""

from __future__ import annotations

import json

from runtime.evaluation.loadtest import LoadtestConfig, format_report, run_loadtest


def test_loadtest_runs_sessions_at_once_and_a_flood(tmp_path):
    out = tmp_path / "load.json"
    report = run_loadtest(
        LoadtestConfig(sessions=2, frames=10, size=32, flood_rate=500, flood_seconds=0.5, json_path=str(out))
    )
    assert report["errors"] == 0 and report["frames"] == 20
    assert 0 < report["p50_ms"] <= report["p99_ms"] and report["throughput_fps"] > 0
    flood = report["flood"]
    assert flood["frames"] > 0 and flood["poses"] > flood["frames"]
    assert flood["dropped"] > 0 and flood["frames"] + flood["dropped"] <= flood["poses"] + 5
    assert json.loads(out.read_text()) == report
    assert "0 errors" in format_report(report)

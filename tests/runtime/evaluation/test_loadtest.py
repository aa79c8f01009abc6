"""`mirage loadtest` end to end on a tiny load (a real `mirage serve` process, real clients)."""

from __future__ import annotations

import json

from runtime.evaluation.loadtest import LoadtestConfig, format_report, run_loadtest


def test_loadtest_runs_sessions_at_once_and_a_flood(tmp_path):
    out = tmp_path / "load.json"
    report = run_loadtest(
        LoadtestConfig(
            sessions=2,
            frames=10,
            size=32,
            flood_rate=500,
            flood_seconds=0.5,
            fault_frames=0,
            json_path=str(out),
        )
    )
    assert report["errors"] == 0 and report["frames"] == 20
    assert 0 < report["p50_ms"] <= report["p99_ms"] and report["throughput_fps"] > 0
    flood = report["flood"]
    assert flood["frames"] > 0 and flood["poses"] > flood["frames"]
    assert flood["dropped"] > 0 and flood["frames"] + flood["dropped"] <= flood["poses"] + 5
    assert json.loads(out.read_text()) == report
    assert "0 errors" in format_report(report)


def test_loadtest_faults_lose_at_most_the_frames_since_the_checkpoint_and_none_on_sigterm():
    report = run_loadtest(
        LoadtestConfig(sessions=1, frames=3, size=32, flood_rate=0, fault_frames=13, fault_every=5)
    )
    fault = report["fault"]
    killed, stopped = fault["kill -9"], fault["SIGTERM"]
    # the checkpoint starts at frame 10 in the background and seals the session as it finds it: on a
    # busy machine the frame loop may have made a frame or two more by then (never fewer than 10)
    resumed = killed["resumed_at"]
    assert killed["frames_made"] == 13 and 10 <= resumed <= 12 and killed["lost"] == 13 - resumed
    assert stopped["frames_made"] == resumed + 1 + 13 and stopped["lost"] == 0
    assert f"kill -9 after 13 frames: resumed at frame {resumed}, {13 - resumed} lost" in format_report(
        report
    )

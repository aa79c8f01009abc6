"""End to end: `mirage demo` on a tiny path, through Panda3D, the real server and the real client."""

from __future__ import annotations

import json

from runtime.cli import main


def test_demo_writes_its_three_outputs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--frames", "6", "--size", "64"]) == 0
    assert (out / "demo.gif").stat().st_size > 0
    assert (out / "contact_sheet.png").stat().st_size > 0
    metrics = json.loads((out / "metrics.json").read_text())
    methods = [r["method"] for r in metrics["runs"]]
    assert methods == ["mirage", "window16", "window8", "no_memory"]
    for row in metrics["runs"]:
        assert row["frames"] == 6
        assert 0.0 <= row["contextual_accuracy"] <= 1.0
        assert 0.0 <= row["revisit_ssim"] <= 1.0
        assert row["revisit_psnr"] > 0
    printed = capsys.readouterr().out
    assert "window16" in printed and "revisit PSNR" in printed

"""The budget suite on a tiny plan: real server, real client, real scene; the table says what ran."""

from __future__ import annotations

import json

from runtime.evaluation.budget import BudgetConfig, budget_table, run_budget


def test_tiny_budget_suite_writes_its_table(tmp_path):
    config = BudgetConfig(budgets_mib=(2, 16), frames=(4, 8), size=64, out=tmp_path, progress=False,
                          seed_observations=2)  # fmt: skip
    report = run_budget(config)
    saved = json.loads((tmp_path / "budget.json").read_text())
    assert saved["rows"] == report["rows"]
    assert [(r["storage"], r["budget_mib"]) for r in saved["rows"]] == [
        ("full", 2),
        ("full", 16),
        ("quantised", 2),
        ("quantised", 16),
    ]
    for row in saved["rows"]:
        runs = row["runs"]
        assert [r["frames"] for r in runs] == [4, 8][: len(runs)]
        for r in runs:
            assert 0.0 <= r["contextual_accuracy"] <= 1.0 and r["bytes_used_end"] <= row["budget_mib"] * 2**20
            assert r["storage"] == row["storage"] and r["revisit_psnr"] > 0
            assert row["storage"] == "quantised" or r["points_packed_end"] == 0
        if row["persistence"] is not None:
            assert all(r["contextual_accuracy"] >= 0.9 for r in runs if r["frames"] <= row["persistence"])
    text = (tmp_path / "budget.md").read_text()
    assert "| full | 2 |" in text and "| quantised | 16 |" in text


def test_table_marks_what_did_not_run():
    rows = [{"storage": "full", "budget_mib": 8, "persistence": None, "never_dropped": False,
             "runs": [{"frames": 300, "contextual_accuracy": 0.5, "revisit_psnr": 21.5, "points_end": 12345,
                       "points_pruned": 678}]}]  # fmt: skip
    (line,) = budget_table(rows, (300, 1000))[2:]
    assert line == "| full | 8 | < 300 | 0.500 | not run | 21.50 | 12,345 | 678 |"

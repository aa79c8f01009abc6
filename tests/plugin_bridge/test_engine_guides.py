"""docs/engines.md's worked examples are what the runtime does: every row of its checked table,
converted with the conversion the runtime applies at the edge."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from plugin_bridge.conventions import engine_to_canonical

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "engines.md"


def _rows() -> list[list[str]]:
    text = GUIDE.read_text()
    table = text[text.index("<!-- checked by tests/plugin_bridge/test_engine_guides.py -->") :]
    rows = [line.strip().strip("|").split("|") for line in table.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row] for row in rows[1:]]  # the first is the header


def _vector(cell: str) -> np.ndarray:
    return np.array([float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", cell)])


def test_every_worked_example_is_what_the_runtime_does():
    rows = _rows()
    assert len(rows) >= 9 and {r[0] for r in rows} >= {"unreal", "unity", "godot", "panda3d"}
    for convention, position, rotation, canonical_position, canonical_forward in rows:
        pose = engine_to_canonical(convention, _vector(position), _vector(rotation))
        assert np.allclose(pose[:3, 3], _vector(canonical_position), atol=1e-6), (convention, position)
        forward = pose[:3, :3] @ [0.0, 0.0, 1.0]  # the canonical camera's z: where it looks
        assert np.allclose(forward, _vector(canonical_forward), atol=1e-6), (convention, rotation, forward)

"""``bench/objectives.py`` run as a user would, at a tiny budget: every row and summary is there
and finite, and the reward calls of the multi-objective run equal the two single-objective
runs' together."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_objectives_bench_at_a_tiny_budget(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "objectives.py"),
        "--iterations=2",
        "--grid=2",
        "--heldout-prompts=8",
        "--eval-samples=1",
        "--base-samples=1",
        "--set",
        "online.prompts_per_iteration=8",
        "--no-progress",
        f"--out={out}",
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "objectives.json").read_text())
    assert (out / "objectives.png").stat().st_size > 0
    methods = [r["method"] for r in report["rows"]]
    assert methods == ["multi"] * 4 + ["sentiment"] * 2 + ["brevity"] * 2
    for row in report["rows"]:
        assert all(math.isfinite(x) for x in row["achieved"])
        assert sum(e is not None for e in row["error_normalised"]) == (
            2 if row["method"] == "multi" else 1
        )
    multi, singles = report["summary"]["multi"], report["summary"]["two single-objective runs"]
    assert multi["reward_calls"] == singles["reward_calls"] == 2 * 8 * 4
    for summary in (multi, singles):
        assert 0.0 <= summary["achieved_front"]["front_hypervolume"] <= 4.0
        for errors in summary["calibration_error_normalised"].values():
            assert math.isfinite(errors["mean"])
    assert "two single-objective runs" in done.stdout and "hypervolume" in done.stdout

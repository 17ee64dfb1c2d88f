"""``bench/learner.py`` runs as a user would and compares like with like."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_learner_bench_trains_both_sides_on_the_same_batches(tmp_path):
    out = tmp_path / "learner.json"
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "learner.py"),
        "--rounds=1",
        "--steps=2",
        "--samples=64",
        "--threads=1",
        f"--json={out}",
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "conditioned / plain tokens/s:" in done.stdout
    report = json.loads(out.read_text())
    conditioned, plain = report["conditioned"], report["plain"]
    assert conditioned["steps"] == plain["steps"] == 2
    # the same batches: the same labelled tokens (completion tokens and EOS) on both sides
    assert conditioned["tokens_per_step"] == plain["tokens_per_step"] > 0
    ratio = report["conditioned_over_plain"]
    assert math.isfinite(ratio) and ratio > 0

"""``bench/soak.py``: its drift and growth checks on made-up series, and the script itself run
as a user would on a few iterations (slow)."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.soak import (
    ENDPOINTS,
    count_files,
    count_shards,
    rss_growth,
    wall_drift,
    window_usage,
    windows,
)

ROOT = Path(__file__).resolve().parents[1]


def test_windows_shrink_to_fit_the_iterations():
    assert windows(300, 10, 50) == (10, 50)
    assert windows(20, 10, 50) == (10, 5)
    assert windows(11, 10, 50) == (2, 4)  # not even a window of 1 after 10: warm-up n // 4
    assert windows(2, 0, 50) == (0, 1)
    with pytest.raises(ValueError):
        windows(1, 0, 50)


def test_wall_drift_passes_a_flat_run_and_flags_a_slowing_one():
    warm = [5.0] * 10  # a slow warm-up is left out
    flat = wall_drift(warm + [1.0, 1.1] * 100, 10, 50, 0.10)
    assert flat["ok"] and abs(flat["drift"]) < 1e-9
    assert flat["first"] == [10, 59] and flat["last"] == [160, 209]
    slowing = wall_drift(warm + [1.0 + 0.002 * i for i in range(200)], 10, 50, 0.10)
    assert not slowing["ok"] and slowing["drift"] > 0.10
    # the mean decides, not the median: one slow iteration in the last window
    spike = wall_drift(warm + [1.0] * 199 + [8.0], 10, 50, 0.10)
    assert not spike["ok"] and spike["last_median_s"] == 1.0
    with pytest.raises(ValueError):
        wall_drift([1.0, float("nan"), 1.0], 0, 1, 0.1)


def sample(it: int, **rss: float | None) -> dict[str, Any]:
    return {"iteration": it, "rss_mib": rss, "buffer_shards": 1, "run_dir_files": 1}


def test_rss_growth_from_the_end_of_the_warm_up_to_the_last_sample():
    samples = [
        sample(0, driver=100.0, learner=50.0),  # before the warm-up's end: not the start
        sample(10, driver=500.0, learner=1000.0),
        {"iteration": 20, "error": "psutil failed"},  # skipped
        sample(30, driver=505.0, learner=1090.0),
    ]
    ok = rss_growth(samples, 10, 0.10)
    assert ok["from_iteration"] == 10 and ok["to_iteration"] == 30
    assert ok["processes"]["learner"]["growth"] == pytest.approx(0.09)
    # the least-squares line through (10, 1000) and (30, 1090): 4.5 MiB per iteration
    assert ok["processes"]["learner"]["slope_kib_per_iteration"] == pytest.approx(4.5 * 1024)
    assert ok["total"]["growth"] == pytest.approx(95 / 1500)
    assert ok["ok"]
    samples.append(sample(40, driver=505.0, learner=1110.0))
    grown = rss_growth(samples, 10, 0.10)
    assert not grown["ok"] and grown["max_growth"] == pytest.approx(0.11)
    # a process gone at the end (restarted, new pid unknown) is left out of the check
    samples.append(sample(50, driver=505.0, learner=None))
    assert list(rss_growth(samples, 10, 0.10)["processes"]) == ["driver"]
    with pytest.raises(ValueError, match=r"no RSS sample at or after iteration 10$"):
        rss_growth(samples[:1], 10, 0.10)
    with pytest.raises(ValueError, match="the first error: psutil failed"):
        rss_growth(samples[:3:2], 10, 0.10)


def usage(it: int, driver: float, learner: float, learner_pid: int = 2, load: float = 2.0):
    return {
        "iteration": it,
        "pids": {"driver": 1, "learner": learner_pid},
        "cpu_s": {"driver": driver, "learner": learner},
        "load_avg_1m": load,
    }


def test_window_usage_counts_cpu_seconds_per_iteration_across_the_window():
    samples = [usage(i, 0.1 * i, 0.2 * i, load=1.0 + i) for i in range(10)]
    # iterations 4..7: from the sample after iteration 3 to the one after 7, 4 iterations
    got = window_usage(samples, [4, 7])
    assert (got["from_iteration"], got["to_iteration"]) == (3, 7)
    assert got["cpu_s_per_iteration"] == pytest.approx(0.3)
    assert got["load_avg_1m"] == pytest.approx(statistics.fmean([5.0, 6.0, 7.0, 8.0]))
    # no sample before the window: from its first sample; a restarted learner is left out
    sparse = [usage(0, 0.0, 0.0), usage(5, 1.0, 0.5, learner_pid=3)]
    assert window_usage(sparse, [0, 9])["cpu_s_per_iteration"] == pytest.approx(0.2)
    assert window_usage(sparse[:1], [0, 9])["cpu_s_per_iteration"] is None
    with pytest.raises(ValueError):
        window_usage(samples, [20, 30])


def test_file_and_shard_counts(tmp_path):
    from online_dt.config import ReplayBufferConfig
    from online_dt.replay.buffer import ReplayBuffer

    assert count_files(tmp_path / "absent") == (0, 0)
    assert count_shards(tmp_path / "absent") == 0
    buf = ReplayBuffer(ReplayBufferConfig(shard_size=4), tmp_path / "buffer")
    rows = [
        {
            "prompt": f"p{i}",
            "completion": "c",
            "achieved_reward": 0.1 * i,
            "target_reward": 0.5,
            "policy_version": 0,
            "iteration": 0,
            "created_at": 0.0,
            "scored_at": 0.0,
            "completion_tokens": 1,
        }
        for i in range(10)
    ]
    buf.append(rows)  # shards of 4, 4 and 2 samples
    (tmp_path / "buffer" / ".shard-x.parquet.abc.tmp").write_bytes(b"x")  # not a shard
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    assert count_shards(tmp_path / "buffer") == 3
    files, size = count_files(tmp_path)
    assert files == 5 and size > 4


def finite_numbers(value: Any, where: str = "") -> list[str]:
    """Paths of every number in ``value`` that is not finite (``None`` counts as not)."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in finite_numbers(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in finite_numbers(v, f"{where}[{i}]")]
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return [where]
    return []


@pytest.mark.slow
def test_soak_script_writes_every_figure(tmp_path):
    out = tmp_path / "soak.json"
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "soak.py"),
        "--iterations=12",
        "--warmup=4",
        "--resumes=1",
        f"--json={out}",
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "wall time: iterations 4..7" in done.stdout and "RSS from iteration 4" in done.stdout
    report = json.loads(out.read_text())
    assert [m["iteration"] for m in report["per_iteration"]] == list(range(12))
    assert [s["iteration"] for s in report["samples"]] == list(range(12))
    for s in report["samples"]:
        assert "error" not in s, s
        assert {"driver", "LearnerActor", "SamplerActor-0", "RewardModelActor"} == set(s["rss_mib"])
        assert s["buffer_shards"] >= 1 and s["run_dir_files"] > s["buffer_shards"]
    # 8 samples an iteration in 32-sample shards: a new shard every 4 iterations
    assert report["samples"][-1]["buffer_shards"] == 3
    drift, growth = report["wall_drift"], report["rss_growth"]
    assert drift["first"] == [4, 7] and drift["last"] == [8, 11]
    assert growth["from_iteration"] == 4 and growth["to_iteration"] == 11
    assert isinstance(drift["ok"], bool) and isinstance(growth["ok"], bool)
    assert drift["first_usage"]["cpu_s_per_iteration"] > 0
    assert drift["last_usage"]["from_iteration"] == 7
    assert len(report["resume"]) == 1
    assert report["resume"][0]["startup_s"] > 0
    assert set(report["dashboard"]) == set(ENDPOINTS)
    assert all(e["status"] == 200 for e in report["dashboard"].values())
    assert report["shard_cost"]["samples"] == 13 * 8  # the resumed iteration's samples too
    report.pop("run_dir")  # None unless the run directory is kept
    assert finite_numbers(report) == []

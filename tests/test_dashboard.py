"""The dashboard's JSON API over a synthetic run directory and over a short real run: values,
torn lines, path traversal and symlinks (nothing outside the run directory is readable),
malformed query parameters, the server thread, the CLI and the run's start-up."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from online_dt.config import DashboardConfig, OnlineRunConfig, ReplayBufferConfig
from online_dt.dashboard import DashboardError, create_app, serve, start_for_run
from online_dt.launch.rundir import RunDir
from online_dt.replay.buffer import ReplayBuffer
from online_dt.samples import Sample
from tests.dashboard_run import ITERATIONS, evaluated_run, real_run, run_config

REPO = Path(__file__).resolve().parents[1]
SECRET = "TOP-SECRET-OUTSIDE-THE-RUN"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


# ---------------------------------------------------------------------------------------------
# a synthetic run directory
# ---------------------------------------------------------------------------------------------


def metrics_record(it: int, **extra) -> dict:
    return {
        "iteration": it,
        "target": 0.1 * it,
        "achieved_mean": 0.1 * it - 0.05,
        "achieved_median": 0.1 * it,
        "achieved_p10": 0.1 * it - 0.5,
        "achieved_p90": 0.1 * it + 0.4,
        "achieved_std": 0.3,
        "distinct_1": 0.4,
        "distinct_2": 0.7 - 0.01 * it,
        "kl_to_base": 1.0 + it,
        "loss": 2.0,
        "buffer_size": 4 * (it + 1),
        "policy_version": it + 1,
        "samples_per_s": 50.0,
        "rollout_s": 0.2,
        "scoring_s": 0.01,
        "training_s": 0.1,
        "sync_s": 0.05,
        "other_s": 0.0,
        "time": 1.7e9 + it,
        **extra,
    }


def reference_bin(center: float, count: int, samples: int = 100) -> dict:
    """A bin of the binned-base reference as ``online-dt eval`` writes it."""
    kl = -math.log(count / samples) if count else float("inf")
    return {
        "center": center,
        "half_width": 0.1,
        "count": count,
        "fraction": count / samples,
        "reward_mean": center + 0.01 if count else float("nan"),
        "nll_per_token": 1.5 + center if count else float("nan"),
        "mean_tokens": 10.0,
        "distinct_2": 0.8,
        "distinct_2_samples": count,
        "kl_ideal_lower_bound": kl,
        "kl_ideal_lower_bound_per_token": kl / 10,
    }


def make_synthetic_run(root: Path) -> Path:
    """5 iterations (one with a NaN loss and an ``errors`` list), a torn last metrics line,
    samples, 20 buffer samples in 4-sample shards (plus a covered shard and a temp file),
    rejected batches (one malformed, one not JSON), an evaluation report and plot."""
    run = root / "run"
    run.mkdir(parents=True)
    cfg = OnlineRunConfig.model_validate({"online": {"run_dir": str(run), "iterations": 10}})
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    lines = [json.dumps(metrics_record(it)) for it in range(5)]
    lines[2] = json.dumps(metrics_record(2, loss=float("nan"), errors=["sampler 1 restarted"]))
    (run / "metrics.jsonl").write_text("\n".join(lines) + '\n{"iteration": 5, "tar')
    samples = [
        {
            "iteration": i // 2,
            "prompt": f"prompt {i}",
            "completion": f"completion {i}",
            "target": 0.1 * i,
            "achieved_reward": -0.2 + 0.05 * i,
            "policy_version": i // 2,
        }
        for i in range(10)
    ]
    samples[-1]["completion"] = "<img src=x onerror=alert(1)> & <b>bold</b>"
    (run / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    buf = ReplayBuffer(ReplayBufferConfig(shard_size=4), run / "buffer")
    for it in range(5):
        buf.append(
            [
                {
                    "prompt": "p",
                    "completion": "c",
                    "achieved_reward": -1.0 + 0.1 * (4 * it + k),
                    "target_reward": 0.0,
                    "policy_version": it,
                    "iteration": it,
                    "created_at": 0.0,
                    "scored_at": 0.0,
                    "completion_tokens": 3,
                }
                for k in range(4)
            ]
        )
    shards = sorted((run / "buffer").glob("shard-*.parquet"))
    assert len(shards) == 5
    # a stale open shard left by an interrupted rewrite, and a temporary file: both ignored
    shutil.copy(shards[0], run / "buffer" / "shard-000000000000-000000000001.parquet")
    (run / "buffer" / ".shard-x.parquet.123.tmp").write_bytes(b"garbage")
    rejected = run / "rejected"
    rejected.mkdir()
    for k, reason in enumerate(["reward model returned NaN", "wrong count", "timeout"]):
        path = rejected / f"batch-{k}.json"
        path.write_text(json.dumps({"reason": reason, "iteration": k}))
        os.utime(path, (1_000 + k, 1_000 + k))
    (rejected / "broken.json").write_text("{not json")
    os.utime(rejected / "broken.json", (900, 900))
    (rejected / "notes.txt").write_text("not a batch")
    (run / "eval").mkdir()
    report = {
        "created_at": 123.0,
        "iteration": 4,
        "policy_version": 5,
        "samples_per_target": 8,
        "buffer": {"best_reward": 0.9, "samples": 20},
        "rows": [
            {"target": 0.0, "mean": 0.1, "kl_to_base": float("inf"), "extrapolation": False},
            {"target": 1.15, "mean": 0.5, "kl_to_base": 3.0, "extrapolation": True},
            {"target": 0.5, "mean": 0.3, "kl_to_base": 2.0, "kl_to_base_per_token": 0.2},
        ],
        "reference": {
            "samples": 100,
            "half_width": 0.1,
            "min_count": 5,
            "grid": [  # out of order; one bin too small, one empty (inf KL), one without KL
                reference_bin(0.2, 30),
                reference_bin(-0.2, 50),
                reference_bin(0.4, 4),
                reference_bin(0.6, 0),
                {**reference_bin(0.8, 10), "kl_ideal_lower_bound": None},
            ],
        },
    }
    (run / "eval" / "calibration.json").write_text(json.dumps(report))
    (run / "eval" / "calibration.png").write_bytes(PNG)
    return run


@pytest.fixture
def synthetic(tmp_path):
    return make_synthetic_run(tmp_path)


@pytest.fixture
def client(synthetic):
    return TestClient(create_app(synthetic, poll_interval_s=0.5, recent_samples=4))


def test_metrics_samples_and_status(client, synthetic):
    data = client.get("/api/metrics").json()
    assert [r["iteration"] for r in data["records"]] == [0, 1, 2, 3, 4]  # torn line left out
    assert data["records"][2]["loss"] is None  # NaN becomes null: valid JSON
    assert data["records"][3]["target"] == pytest.approx(0.3)
    assert [r["iteration"] for r in client.get("/api/metrics?since=2").json()["records"]] == [3, 4]
    assert client.get("/api/metrics?since=4").json()["records"] == []

    samples = client.get("/api/samples").json()
    assert samples["total"] == 10
    assert [s["prompt"] for s in samples["records"]] == [f"prompt {i}" for i in (9, 8, 7, 6)]
    assert samples["records"][0]["completion"].startswith("<img")  # raw text; the page escapes
    assert len(client.get("/api/samples?limit=10000").json()["records"]) == 10

    st = client.get("/api/status").json()
    assert st["iteration"] == 4 and st["iterations_total"] == 10
    assert st["policy_version"] == 5 and st["buffer_size"] == 20
    assert st["state"] in ("running", "stalled")
    assert st["eval_available"] is True
    assert st["errors"] == [{"iteration": 2, "error": "sampler 1 restarted"}]
    assert st["rejected"]["count"] == 4  # three batches and one unreadable file; notes.txt no
    latest = st["rejected"]["latest"]
    assert [r["reason"] for r in latest[:3]] == [
        "timeout",
        "wrong count",
        "reward model returned NaN",
    ]
    assert latest[3]["file"] == "broken.json" and "cannot be read" in latest[3]["reason"]
    assert st["warm_start"] is None
    warm = {"samples": 7168, "prompts": 512, "steps": 300, "loss": 1.43, "wall_s": 45.3}
    (synthetic / "warm_start.json").write_text(json.dumps(warm))
    assert client.get("/api/status").json()["warm_start"] == warm
    (synthetic / "warm_start.json").write_text("[1, 2]")
    assert client.get("/api/status").json()["warm_start"] is None
    (synthetic / "warm_start.json").unlink()

    cfg = client.get("/api/config").json()
    assert cfg["config"]["online"]["iterations"] == 10
    assert cfg["summary"]["schedule"].startswith("quantile")
    assert cfg["summary"]["prompts x samples"] == "64 x 4"

    settings = client.get("/api/settings").json()
    assert settings == {
        "poll_interval_s": 0.5,
        "recent_samples": 4,
        "run_dir": str(synthetic.resolve()),
        "name": "run",
    }


def test_buffer_histogram(client):
    data = client.get("/api/buffer?bins=4").json()
    assert data["total"] == 20 and data["iterations"] == [0, 1, 2, 3, 4]
    assert data["edges"][0] == pytest.approx(-1.0) and data["edges"][-1] == pytest.approx(0.9)
    assert sum(data["current"]) == 20 and data["at"]["iteration"] == 4
    assert data["best"] == pytest.approx(0.9) and data["error"] is None
    at1 = client.get("/api/buffer?bins=4&iteration=1").json()["at"]
    assert at1["total"] == 8 and sum(at1["counts"]) == 8
    # the first 8 rewards (-1.0 .. -0.3) fall in the lowest bins of [-1, 0.9] cut in 4
    assert at1["counts"][2:] == [0, 0]
    assert client.get("/api/buffer?iteration=-1").json()["at"]["total"] == 0


def test_evaluation_endpoints(client):
    data = client.get("/api/eval").json()
    assert data["plot_available"] is True and data["error"] is None
    assert data["kind"] == "calibration" and data["file"] == "eval/calibration.json"
    assert data["grid"] is None  # one reward: the calibration table as before
    assert client.get("/api/status").json()["eval_kind"] == "calibration"
    assert data["report"]["rows"][0]["kl_to_base"] is None  # inf becomes null
    assert data["report"]["rows"][1]["extrapolation"] is True
    png = client.get("/api/eval/plot.png?v=123.0")
    assert png.status_code == 200 and png.content == PNG
    assert png.headers["content-type"] == "image/png"


def test_kl_plane(client, synthetic):
    data = client.get("/api/klplane").json()
    # every iteration: its KL to the base (nats per completion) and achieved mean
    assert data["iterations"] == [
        {
            "iteration": it,
            "kl_to_base": pytest.approx(1.0 + it),
            "achieved_mean": pytest.approx(0.1 * it - 0.05),
            "target": pytest.approx(0.1 * it),
        }
        for it in range(5)
    ]
    # the evaluation's rows with a KL estimate (not the inf one), sorted by target
    ev = data["eval"]
    assert (ev["created_at"], ev["iteration"], ev["policy_version"]) == (123.0, 4, 5)
    assert ev["points"] == [
        {
            "target": 0.5,
            "achieved": 0.3,
            "kl_to_base": 2.0,
            "kl_to_base_per_token": 0.2,
            "extrapolation": False,
        },
        {
            "target": 1.15,
            "achieved": 0.5,
            "kl_to_base": 3.0,
            "kl_to_base_per_token": None,
            "extrapolation": True,
        },
    ]
    # the base's own curve: bins with >= min_count samples and a finite bound, by centre
    ref = data["reference"]
    assert (ref["samples"], ref["half_width"], ref["min_count"]) == (100, 0.1, 5)
    assert [b["center"] for b in ref["points"]] == [-0.2, 0.2]
    low = ref["points"][0]
    assert low["kl_lower_bound"] == pytest.approx(-math.log(0.5))
    assert low["kl_lower_bound_per_token"] == pytest.approx(-math.log(0.5) / 10)
    assert low["reward_mean"] == pytest.approx(-0.19) and low["count"] == 50
    assert low["nll_per_token"] == pytest.approx(1.3) and low["fraction"] == 0.5
    assert data["error"] is None and isinstance(data["generation"], int)

    # a line appended to metrics.jsonl shows up; one without a KL estimate does not
    with open(synthetic / "metrics.jsonl", "a") as f:  # completes the torn line first
        f.write("\n" + json.dumps(metrics_record(6, kl_to_base=None)) + "\n")
        f.write(json.dumps(metrics_record(7, kl_to_base=0.0)) + "\n")
    its = client.get("/api/klplane").json()["iterations"]
    assert [p["iteration"] for p in its] == [0, 1, 2, 3, 4, 7] and its[-1]["kl_to_base"] == 0.0

    # an evaluation without a reference, and an unreadable one
    report = json.loads((synthetic / "eval" / "calibration.json").read_text())
    del report["reference"]
    (synthetic / "eval" / "calibration.json").write_text(json.dumps(report))
    data = client.get("/api/klplane").json()
    assert data["reference"] is None and len(data["eval"]["points"]) == 2
    (synthetic / "eval" / "calibration.json").write_text("[1, 2]")
    data = client.get("/api/klplane").json()
    assert data["eval"] is None and data["reference"] is None
    assert "not a JSON object" in data["error"] and len(data["iterations"]) == 6


def test_missing_run_dir_answers_empty(tmp_path):
    client = TestClient(create_app(tmp_path / "not-yet"))
    assert client.get("/api/metrics").json()["records"] == []
    st = client.get("/api/status").json()
    assert st["state"] == "not started" and st["exists"] is False
    assert st["rejected"] == {"count": 0, "latest": []}
    assert client.get("/api/buffer").json()["total"] == 0
    assert client.get("/api/eval").json()["report"] is None
    assert client.get("/api/eval/plot.png").status_code == 404
    assert client.get("/api/config").json()["config"] is None
    plane = client.get("/api/klplane").json()
    assert plane["iterations"] == [] and plane["eval"] is None and plane["reference"] is None


def test_torn_line_is_read_once_complete_and_rewrites_reset(client, synthetic):
    metrics = synthetic / "metrics.jsonl"
    first = client.get("/api/metrics").json()
    assert first["total"] == 5
    with open(metrics, "a") as f:  # the writer finishes the torn line
        f.write('get": 0.5}\n')
    data = client.get("/api/metrics?since=4").json()
    assert [r["iteration"] for r in data["records"]] == [5]
    assert data["generation"] == first["generation"]
    # a resume rewrites the file (atomic rename): the reader starts over, generation changes
    RunDir(synthetic).truncate_logs(2)
    data = client.get("/api/metrics").json()
    assert [r["iteration"] for r in data["records"]] == [0, 1, 2]
    assert data["generation"] != first["generation"]
    # a line that is not JSON in the middle is skipped, the next ones are read
    with open(metrics, "a") as f:
        f.write("garbage\n" + json.dumps(metrics_record(3)) + "\n")
    assert [r["iteration"] for r in client.get("/api/metrics").json()["records"]] == [0, 1, 2, 3]


# ---------------------------------------------------------------------------------------------
# several objectives
# ---------------------------------------------------------------------------------------------

OBJECTIVES = [
    {"name": "sentiment", "low": -1.0, "high": 1.0},
    {"name": "brevity", "low": -20.0, "high": 0.0},
    {"name": "safety", "low": 0.0, "high": 1.0},
]
MO_ITERATIONS = 4
MO_PER_ITERATION = 6


def mo_reward(it: int, k: int, m: int) -> tuple[float, ...]:
    """Sample ``k`` of iteration ``it``'s achieved reward vector (``m`` objectives): a spread
    of trade-offs, some dominated, a few duplicated."""
    sentiment = round(-0.9 + 0.07 * ((7 * it + 5 * k) % 27), 4)
    brevity = float(-((3 * it + 11 * k) % 19) - 1)
    safety = round(0.1 * ((it + 2 * k) % 9), 4)
    return (sentiment, brevity, safety)[:m]


def mo_target(it: int, m: int) -> tuple[float, ...]:
    return (0.1 * it, -10.0 + it, 0.5)[:m]


def make_multi_objective_run(root: Path, m: int = 2) -> Path:
    """A run with ``m`` objectives: config, 4 metrics records (iteration 2 a skipped batch,
    without achieved figures), samples with vector targets and rewards, and 24 buffer samples
    with reward vectors in 8-sample shards."""
    from online_dt.loop.records import objective_metrics

    run = root / "mo-run"
    run.mkdir(parents=True)
    objectives = OBJECTIVES[:m]
    names = [o["name"] for o in objectives]
    cfg = OnlineRunConfig.model_validate(
        {
            "conditioning": {"objectives": objectives},
            "schedule": {"kind": "pareto"},
            "online": {"run_dir": str(run), "iterations": 10},
        }
    )
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    scalar = ("target", "achieved_mean", "achieved_median", "achieved_p10", "achieved_p90")
    lines = []
    for it in range(MO_ITERATIONS):
        record = {k: v for k, v in metrics_record(it).items() if k not in scalar}
        record.update(objectives=names, target=list(mo_target(it, m)))
        if it != 2:  # iteration 2: the reward model failed, the batch was skipped
            rewards = [mo_reward(it, k, m) for k in range(MO_PER_ITERATION)]
            record.update(objective_metrics(names, [mo_target(it, m)] * len(rewards), rewards))
        record.update(front_size=it + 1, front_hypervolume=0.5 * it)
        lines.append(json.dumps(record))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    samples = [
        {
            "iteration": it,
            "prompt": f"prompt {it}",
            "completion": "text",
            "target": list(mo_target(it, m)),
            "achieved_reward": list(mo_reward(it, 0, m)),
            "policy_version": it,
        }
        for it in range(MO_ITERATIONS)
    ]
    (run / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    buf = ReplayBuffer(ReplayBufferConfig(shard_size=8), run / "buffer")
    for it in range(MO_ITERATIONS):
        buf.append(
            [
                Sample(
                    prompt="p",
                    completion="c",
                    achieved_reward=mo_reward(it, k, m),
                    target_reward=mo_target(it, m),
                    policy_version=it,
                    iteration=it,
                    created_at=0.0,
                    scored_at=0.0,
                    completion_tokens=3,
                )
                for k in range(MO_PER_ITERATION)
            ]
        )
    return run


def dominates(q: list[float], p: list[float]) -> bool:
    return all(a >= b for a, b in zip(q, p, strict=True)) and q != p


def brute_front(points: list[list[float]]) -> list[list[float]]:
    """The distinct non-dominated points, by pairwise comparison, sorted."""
    return sorted({tuple(p) for p in points if not any(dominates(q, p) for q in points)})


@pytest.fixture
def mo_run(tmp_path):
    return make_multi_objective_run(tmp_path)


@pytest.mark.parametrize("m", [2, 3])
def test_pareto_front_and_targets(tmp_path, m):
    run = make_multi_objective_run(tmp_path, m)
    client = TestClient(create_app(run))
    data = client.get("/api/pareto").json()
    assert data["objectives"] == OBJECTIVES[:m] and data["error"] is None
    everything = [
        list(mo_reward(it, k, m)) for it in range(MO_ITERATIONS) for k in range(MO_PER_ITERATION)
    ]
    assert data["samples"] == len(everything) and sorted(data["cloud"]) == sorted(everything)
    front = data["front"]
    # exactly the non-dominated vectors of the buffer, each once, by the first objective
    assert [tuple(p) for p in front] == brute_front(everything)
    assert data["front_total"] == len(front) and 2 <= len(front) < len(everything)
    assert all(len(p) == m for p in front)
    assert not any(dominates(q, p) for p in front for q in everything)
    # each iteration's target vector; the skipped iteration has no achieved mean
    assert [t["iteration"] for t in data["targets"]] == list(range(MO_ITERATIONS))
    for t in data["targets"]:
        assert t["target"] == pytest.approx(list(mo_target(t["iteration"], m)))
    assert data["targets"][2]["achieved"] is None
    achieved = [mo_reward(1, k, m) for k in range(MO_PER_ITERATION)]
    assert data["targets"][1]["achieved"] == pytest.approx(
        [sum(col) / len(col) for col in zip(*achieved, strict=True)]
    )
    assert data["hypervolume"] == [
        {"iteration": it, "front_size": it + 1, "front_hypervolume": 0.5 * it}
        for it in range(MO_ITERATIONS)
    ]


def test_pareto_cloud_is_thinned_and_capped(mo_run):
    client = TestClient(create_app(mo_run))
    data = client.get("/api/pareto?cloud=5").json()
    assert len(data["cloud"]) == 5 and data["samples"] == MO_ITERATIONS * MO_PER_ITERATION
    # an even thinning in id order, first and last kept
    assert data["cloud"][0] == list(mo_reward(0, 0, 2))
    assert data["cloud"][-1] == list(mo_reward(MO_ITERATIONS - 1, MO_PER_ITERATION - 1, 2))
    assert client.get("/api/pareto?cloud=0").json()["cloud"] == []
    assert len(client.get("/api/pareto?cloud=1").json()["cloud"]) == 1
    for bad in ("cloud=-1", "cloud=5001", "cloud=abc"):
        assert client.get(f"/api/pareto?{bad}").status_code == 422, bad


def test_pareto_of_a_large_buffer_sends_a_capped_front(tmp_path):
    """20,000 samples, all on the front: the answer carries at most MAX_FRONT_POINTS of them
    (the two ends kept) and the requested cloud, and the front is computed once."""
    from online_dt.dashboard import reader as reader_module

    run = tmp_path / "big"
    run.mkdir()
    n = 20_000
    buf = ReplayBuffer(ReplayBufferConfig(capacity=n, shard_size=4096), run / "buffer")
    buf.append(
        [Sample("p", "c", (i / n, -i / n), (0.0, 0.0), 0, i // 1000, 0.0, 0.0, 1) for i in range(n)]
    )
    (run / "metrics.jsonl").write_text(
        json.dumps({"iteration": 0, "objectives": ["a", "b"], "target": [0.5, -0.5]}) + "\n"
    )
    reader = reader_module.RunReader(run)
    data = reader.pareto(cloud=300)
    assert data["objectives"] == [
        {"name": "a", "low": None, "high": None},
        {"name": "b", "low": None, "high": None},
    ]
    assert data["front_total"] == n and data["samples"] == n
    front = data["front"]
    assert len(front) == reader_module.MAX_FRONT_POINTS and len(data["cloud"]) == 300
    assert front[0] == [0.0, 0.0] and front[-1] == [(n - 1) / n, -(n - 1) / n]
    assert front == sorted(front)
    assert len(json.dumps(data)) < 200_000


def test_pareto_front_is_cached_until_the_buffer_changes(mo_run, monkeypatch):
    from online_dt.dashboard import reader as reader_module
    from online_dt.util.pareto import pareto_front

    calls = []

    def counted(points):
        calls.append(len(points))
        return pareto_front(points)

    monkeypatch.setattr(reader_module, "pareto_front", counted)
    client = TestClient(create_app(mo_run))
    first = client.get("/api/pareto").json()
    assert client.get("/api/pareto").json() == first and calls == [24]
    # the writer appends a sample that dominates everything: the front is that one point
    buf = ReplayBuffer.load(ReplayBufferConfig(shard_size=8), mo_run / "buffer")
    buf.append([Sample("p", "c", (2.0, 1.0), (0.0, 0.0), 5, 4, 0.0, 0.0, 1)])
    data = client.get("/api/pareto").json()
    assert calls == [24, 25] and data["front"] == [[2.0, 1.0]] and data["front_total"] == 1


def test_pareto_of_a_run_with_one_reward_or_none(client, tmp_path):
    data = client.get("/api/pareto").json()  # the scalar synthetic run: nothing to draw
    assert data["objectives"] == [] and data["front"] == [] and data["cloud"] == []
    assert data["targets"] == [] and data["hypervolume"] == [] and data["error"] is None
    empty = TestClient(create_app(tmp_path / "not-yet")).get("/api/pareto").json()
    assert empty["objectives"] == [] and empty["front"] == [] and empty["samples"] == 0


def test_pareto_without_a_buffer_or_config(mo_run):
    """Before the first append, and without config.yaml: names from the metrics, targets,
    no front; a buffer shard that cannot be read is reported."""
    shutil.rmtree(mo_run / "buffer")
    (mo_run / "config.yaml").unlink()
    client = TestClient(create_app(mo_run))
    data = client.get("/api/pareto").json()
    assert [o["name"] for o in data["objectives"]] == ["sentiment", "brevity"]
    assert data["objectives"][0]["low"] is None
    assert data["front"] == [] and data["samples"] == 0 and len(data["targets"]) == MO_ITERATIONS
    (mo_run / "buffer").mkdir()
    (mo_run / "buffer" / "shard-000000000000-000000000003.parquet").write_bytes(b"not parquet")
    data = client.get("/api/pareto").json()
    assert data["front"] == [] and "cannot be read" in data["error"]


def test_existing_endpoints_on_a_multi_objective_run(mo_run):
    client = TestClient(create_app(mo_run, recent_samples=2))
    records = client.get("/api/metrics").json()["records"]
    assert [r["iteration"] for r in records] == list(range(MO_ITERATIONS))
    assert records[1]["target"] == pytest.approx([0.1, -9.0])

    st = client.get("/api/status").json()
    assert st["objectives"] == ["sentiment", "brevity"] and st["iteration"] == MO_ITERATIONS - 1
    assert st["target"] == pytest.approx(list(mo_target(MO_ITERATIONS - 1, 2)))
    assert len(st["achieved_mean"]) == 2 and st["front_size"] == MO_ITERATIONS
    assert st["errors_count"] == 0

    samples = client.get("/api/samples").json()["records"]
    assert [s["iteration"] for s in samples] == [3, 2]
    assert samples[0]["achieved_reward"] == list(mo_reward(3, 0, 2))

    # the histogram is the first objective's (the buffer's scalar column)
    hist = client.get("/api/buffer?bins=5").json()
    first = [mo_reward(it, k, 2)[0] for it in range(MO_ITERATIONS) for k in range(6)]
    assert hist["total"] == 24 and hist["best"] == pytest.approx(max(first))
    assert hist["error"] is None and sum(hist["current"]) == 24

    # the reward-vs-KL plane needs one reward: no iterations, and it says why
    plane = client.get("/api/klplane").json()
    assert plane["objectives"] == ["sentiment", "brevity"] and plane["iterations"] == []
    assert client.get("/api/config").json()["config"]["conditioning"]["objectives"][1] == {
        "name": "brevity",
        "low": -20.0,
        "high": 0.0,
    }
    assert client.get("/api/eval").json()["report"] is None
    for path in ("/api/settings", "/api/buffer?iteration=1", "/api/pareto", "/"):
        assert client.get(path).status_code == 200, path


def test_scalar_status_has_no_objectives(client):
    st = client.get("/api/status").json()
    assert st["objectives"] is None and st["front_size"] is None
    assert client.get("/api/klplane").json()["objectives"] is None


def test_vector_columns_with_nulls_and_short_rows():
    import numpy as np
    import pyarrow as pa

    from online_dt.dashboard.fronts import stack_vectors, vector_rows

    column = pa.chunked_array([[[1.0, 2.0], None], [[3.0], [4.0, None]]])
    rows = vector_rows(column)
    assert rows.shape == (4, 2)
    assert np.array_equal(
        rows, [[1.0, 2.0], [np.nan, np.nan], [3.0, np.nan], [4.0, np.nan]], equal_nan=True
    )
    assert vector_rows(pa.chunked_array([[None, None]], type=pa.list_(pa.float64()))) is None
    regular = vector_rows(pa.chunked_array([[[1.0, 2.0]], [[3.0, 4.0]]]))
    assert regular.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    # a shard without vectors (one reward) before one with: its rows are NaN
    stacked = stack_vectors([None, regular], [3, 2])
    assert stacked.shape == (5, 2) and np.isnan(stacked[:3]).all()
    assert stacked[3:].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert stack_vectors([None, None], [2, 2]) is None


# ---------------------------------------------------------------------------------------------
# the latest evaluation of several objectives (eval/objectives.json)
# ---------------------------------------------------------------------------------------------

# the policy's mean achieved reward per target, off the target by these normalised errors
# (sentiment: half-width 1; brevity: half-width 10); the grid goal is 0.1
EVAL_OFFSETS = [(0.02, -0.05), (0.3, 0.0), (0.0, -0.2), (-0.05, -0.15)]
EVAL_RADIUS, EVAL_MIN_COUNT = 0.2, 2  # targets 1 and 2 of the buffer's 2 x 2 grid achievable


def write_objectives_report(run: Path, created_at: float = 456.0, names=None) -> dict:
    """An ``online-dt eval --grid 2`` report of :func:`make_multi_objective_run` (2 objectives)
    built as ``online_dt.eval.run`` builds it, from the evaluation's own functions: the buffer's
    2 x 2 target grid, 4 fake samples per target whose mean misses it by ``EVAL_OFFSETS``
    (normalised), a KL per row; written as strict JSON to ``eval/objectives.json`` with a
    plot. ``names`` renames the objectives in the report only."""
    from online_dt.config import ObjectiveConfig
    from online_dt.eval.objectives import achievable, grid_targets
    from online_dt.eval.objectives_rows import objective_row, summarize_grid
    from online_dt.eval.source import buffer_rewards
    from online_dt.launch.rundir import finite_or_none

    objectives = [ObjectiveConfig.model_validate(o) for o in OBJECTIVES[:2]]
    buffer = buffer_rewards(run)
    assert buffer.shape == (MO_ITERATIONS * MO_PER_ITERATION, 2)
    targets = grid_targets(objectives, buffer, 2)
    flags = achievable(targets, buffer, objectives, radius=EVAL_RADIUS, min_count=EVAL_MIN_COUNT)
    assert flags == [False, True, True, False]
    rows = []
    for k, (target, offset) in enumerate(zip(targets, EVAL_OFFSETS, strict=True)):
        mean = [t + e * o.half_width for t, e, o in zip(target, offset, objectives, strict=True)]
        rewards = [
            [v + d * o.half_width * 0.01 for v, o in zip(mean, objectives, strict=True)]
            for d in (-1.0, 1.0, -2.0, 2.0)
        ]
        row = objective_row(
            target,
            objectives,
            ["p"] * 4,
            ["c"] * 4,
            [[1, 2, 3]] * 4,
            rewards,
            is_achievable=flags[k],
        )
        row.update(kl_to_base=0.5 * k, kl_to_base_per_token=0.1 * k, seconds=0.1)
        rows.append(row)
    report = {
        "kind": "objectives",
        "created_at": created_at,
        "iteration": MO_ITERATIONS - 1,
        "policy_version": MO_ITERATIONS,
        "objectives": [
            {"name": n, "low": o.low, "high": o.high}
            for n, o in zip(names or [o.name for o in objectives], objectives, strict=True)
        ],
        "grid_points": 2,
        "achievable_rule": {"radius_normalised": EVAL_RADIUS, "min_count": EVAL_MIN_COUNT},
        "goal": 0.1,
        "samples_per_target": 4,
        "buffer": {"samples": len(buffer), "best": buffer.max(axis=0).tolist()},
        "kl_error": None,
        "rows": rows,
        "summary": summarize_grid(rows, objectives, buffer),
        "reference": None,
        "reference_error": "skipped",
    }
    report = finite_or_none(report)
    (run / "eval").mkdir(exist_ok=True)
    (run / "eval" / "objectives.json").write_text(json.dumps(report, allow_nan=False))
    (run / "eval" / "objectives.png").write_bytes(PNG + b"objectives")
    return report


def test_objectives_evaluation_is_the_latest_evaluation(mo_run):
    client = TestClient(create_app(mo_run))
    assert client.get("/api/eval").json() == {
        "kind": None,
        "file": None,
        "report": None,
        "plot_available": False,
        "error": None,
        "grid": None,
    }
    assert client.get("/api/status").json()["eval_available"] is False
    report = write_objectives_report(mo_run)

    st = client.get("/api/status").json()
    assert st["eval_available"] is True and st["eval_kind"] == "objectives"
    data = client.get("/api/eval").json()
    assert data["kind"] == "objectives" and data["file"] == "eval/objectives.json"
    assert data["error"] is None and data["plot_available"] is True
    assert data["report"] == report
    png = client.get("/api/eval/plot.png?v=objectives%7C456.0")
    assert png.status_code == 200 and png.content == PNG + b"objectives"

    # the grid table: per target vector the achieved vector and normalised errors
    grid = data["grid"]
    assert grid["objectives"] == ["sentiment", "brevity"] and grid["goal"] == 0.1
    assert [r["target"] for r in grid["rows"]] == [r["target"] for r in report["rows"]]
    assert [r["achievable"] for r in grid["rows"]] == [False, True, True, False]
    for row, offset in zip(grid["rows"], EVAL_OFFSETS, strict=True):
        assert row["errors_normalised"] == pytest.approx([abs(e) for e in offset])
        assert row["max_error_normalised"] == pytest.approx(max(abs(e) for e in offset))
        assert row["within_goal"] is (max(abs(e) for e in offset) <= 0.1)
        assert row["achieved"] == pytest.approx(
            [t + e * h for t, e, h in zip(row["target"], offset, (1.0, 10.0), strict=True)]
        )
        assert row["count"] == 4
    assert [r["kl_to_base"] for r in grid["rows"]] == [0.0, 0.5, 1.0, 1.5]

    # the summary: per objective over the achievable targets (rows 1 and 2), by hand
    summary = grid["summary"]
    assert summary["targets"] == 4 and summary["achievable"] == 2
    assert summary["within_goal"] == 0 and summary["within_goal_all"] == 1
    sentiment, brevity = summary["per_objective"]
    assert sentiment["name"] == "sentiment" and brevity["name"] == "brevity"
    assert sentiment["mean_error_normalised"] == pytest.approx((0.3 + 0.0) / 2)
    assert sentiment["max_error_normalised"] == pytest.approx(0.3)
    assert sentiment["within_goal"] == 1 and brevity["within_goal"] == 1
    assert brevity["mean_error_normalised"] == pytest.approx(0.1)
    assert brevity["max_error_normalised"] == pytest.approx(0.2)
    assert brevity["mean_abs_error"] == pytest.approx(1.0)  # 0.2 x half-width 10, over 2
    written = report["summary"]
    for key in ("achieved_hypervolume", "buffer_hypervolume", "hypervolume_ratio"):
        assert summary[key] == pytest.approx(written[key]) and summary[key] > 0, key
    assert summary["buffer_samples"] == MO_ITERATIONS * MO_PER_ITERATION
    assert summary["achieved_front_size"] == written["achieved_front_size"] >= 1

    # the reward-vs-KL plane takes no vector evaluation
    plane = client.get("/api/klplane").json()
    assert plane["eval"] is None and plane["reference"] is None


def test_pareto_shows_the_latest_evaluation(mo_run):
    client = TestClient(create_app(mo_run))
    assert client.get("/api/pareto").json()["eval"] is None
    report = write_objectives_report(mo_run)
    data = client.get("/api/pareto").json()
    ev = data["eval"]
    assert (ev["created_at"], ev["iteration"], ev["policy_version"]) == (456.0, 3, 4)
    achieved = [r["achieved_mean"] for r in report["rows"]]
    assert [p["achieved"] for p in ev["points"]] == achieved
    assert [p["target"] for p in ev["points"]] == [r["target"] for r in report["rows"]]
    assert [p["achievable"] for p in ev["points"]] == [False, True, True, False]
    # its front: exactly the non-dominated achieved means
    expected = brute_front(achieved)
    assert len(ev["front"]) == len(expected) == 3  # all but row 0 (via normalised units)
    assert sorted(ev["front"]) == [pytest.approx(list(p)) for p in expected]
    assert ev["achieved_hypervolume"] == pytest.approx(report["summary"]["achieved_hypervolume"])
    assert ev["buffer_hypervolume"] == pytest.approx(report["summary"]["buffer_hypervolume"])
    assert ev["hypervolume_ratio"] == pytest.approx(report["summary"]["hypervolume_ratio"])
    # the buffer's own front is unchanged by the evaluation
    assert [tuple(p) for p in data["front"]] == brute_front(
        [list(mo_reward(it, k, 2)) for it in range(MO_ITERATIONS) for k in range(MO_PER_ITERATION)]
    )
    # a report over other objectives is not drawn in this run's plane
    write_objectives_report(mo_run, created_at=789.0, names=["brevity", "sentiment"])
    assert client.get("/api/pareto").json()["eval"] is None
    assert client.get("/api/eval").json()["report"]["created_at"] == 789.0


def test_the_newer_evaluation_report_is_shown(mo_run, monkeypatch):
    """A run holding both reports shows the one written last, its plot with it; each report
    is parsed once per version of its file."""
    from online_dt.dashboard import run_files as run_files_module

    write_objectives_report(mo_run)
    calibration = {"created_at": 999.0, "rows": [{"target": 0.5, "mean": 0.4}]}
    (mo_run / "eval" / "calibration.json").write_text(json.dumps(calibration))
    (mo_run / "eval" / "calibration.png").write_bytes(PNG + b"calibration")
    objectives = mo_run / "eval" / "objectives.json"
    os.utime(mo_run / "eval" / "calibration.json", (2_000, 2_000))
    os.utime(objectives, (1_000, 1_000))
    parsed = []
    original = run_files_module.RunFiles.json_file

    def counted(self, relative):
        parsed.append(relative)
        return original(self, relative)

    monkeypatch.setattr(run_files_module.RunFiles, "json_file", counted)
    client = TestClient(create_app(mo_run))
    data = client.get("/api/eval").json()
    assert data["kind"] == "calibration" and data["grid"] is None
    assert data["report"]["created_at"] == 999.0
    assert client.get("/api/eval/plot.png").content == PNG + b"calibration"
    assert client.get("/api/status").json()["eval_kind"] == "calibration"
    assert client.get("/api/pareto").json()["eval"] is None

    os.utime(objectives, (3_000, 3_000))
    parsed.clear()
    for _ in range(3):
        data = client.get("/api/eval").json()
        assert data["kind"] == "objectives" and data["grid"]["summary"]["targets"] == 4
        assert client.get("/api/pareto").json()["eval"]["created_at"] == 456.0
    assert parsed.count("eval/objectives.json") == 1
    assert client.get("/api/eval/plot.png").content == PNG + b"objectives"
    # a new version of the file is read again; one that is not an object is an error
    objectives.write_text("[1, 2]")
    os.utime(objectives, (4_000, 4_000))
    data = client.get("/api/eval").json()
    assert data["kind"] == "objectives" and data["report"] is None and data["grid"] is None
    assert "not a JSON object" in data["error"]
    assert client.get("/api/pareto").json()["eval"] is None
    assert parsed.count("eval/objectives.json") == 2


def test_a_malformed_objectives_report_is_shown_as_far_as_it_goes(mo_run):
    from online_dt.dashboard.fronts import objectives_grid, pareto_eval

    report = write_objectives_report(mo_run)
    report["rows"][0] = {"target": "x", "objectives": None, "achievable": "yes"}
    report["rows"].append(7)
    report["summary"] = {"per_objective": {"sentiment": {"within_goal": 1.0}}, "targets": None}
    del report["goal"]
    grid = objectives_grid(report)
    assert grid["goal"] == 0.1 and len(grid["rows"]) == 4
    assert grid["rows"][0] == {
        "target": None,
        "achieved": None,
        "errors_normalised": [None, None],
        "max_error_normalised": None,
        "within_goal": False,
        "achievable": False,
        "distinct_2": None,
        "kl_to_base": None,
        "count": None,
    }
    assert grid["summary"]["per_objective"][0]["within_goal"] == 1
    assert grid["summary"]["per_objective"][1]["mean_error_normalised"] is None
    assert grid["summary"]["targets"] is None and grid["summary"]["achieved_hypervolume"] is None
    ev = pareto_eval(report, ["sentiment", "brevity"])
    assert len(ev["points"]) == 3 and ev["front"] == [] and ev["achieved_hypervolume"] is None
    assert objectives_grid({})["rows"] == [] and objectives_grid({})["objectives"] == []


@pytest.mark.slow
def test_objectives_evaluation_in_a_browser(mo_run):
    """The page in headless Chromium (as tests/test_dashboard_browser.py): the latest
    evaluation panel shows the grid table and summary, the Pareto panel the evaluation's
    targets, achieved points and front next to the buffer's, without console errors."""
    from playwright.sync_api import sync_playwright

    from tests.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, chart, wait_for

    if not CHROMIUM.exists():
        pytest.fail(f"no {CHROMIUM}: run scripts/install_browser.sh")
    report = write_objectives_report(mo_run)
    handle = serve(mo_run, port=0, poll_interval_s=0.25)
    problems: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: m.type in ("error", "warning") and problems.append(m.text))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(handle.url)
            wait_for(page, "document.body.dataset.evalKind === 'objectives'")
            wait_for(page, "Number(document.body.dataset.paretoPolls || 0) >= 1")
            assert page.is_hidden("#eval-table") and page.is_visible("#eval-grid-table")
            assert "wide" in page.get_attribute("#panel-eval", "class")
            head = page.inner_text("#eval-grid-table thead")
            assert "achieved mean" in head and "sentiment" in head and "brevity" in head
            rows = page.query_selector_all("#eval-grid-table tbody tr")
            assert len(rows) == 4
            cells = [c.inner_text() for c in rows[1].query_selector_all("td")]
            target = report["rows"][1]["target"]
            assert cells[:2] == [f"{v:.3f}" for v in target] and cells[4:6] == ["0.300", "0.000"]
            assert rows[1].query_selector_all("td")[4].get_attribute("class") == "num bad"
            assert rows[0].get_attribute("class") == "unreachable" and cells[7] == "yes"
            summary = page.inner_text("#eval-grid-summary tbody")
            assert "sentiment" in summary and "0.150" in summary and "1 / 2" in summary
            front = page.inner_text("#eval-grid-front")
            hv = report["summary"]["buffer_hypervolume"]
            assert "achieved front" in front and f"{hv:.3f}" in front
            assert page.is_visible("#eval-plot")

            datasets = chart(page, "pareto")["datasets"]
            assert [len(d["data"]) for d in datasets[5:]] == [4, 4, 3]
            achieved = [[p["x"], p["y"]] for p in datasets[6]["data"]]
            assert achieved == [r["achieved_mean"] for r in report["rows"]]
            assert "evaluation" in datasets[6]["label"]
            assert "latest evaluation (iteration 3)" in page.inner_text("#pareto-summary")
            calibration = chart(page, "calibration")["datasets"]
            assert len(calibration[-1]["data"]) == 4 * 2  # per row and objective
        assert problems == []
    finally:
        handle.stop()


def test_page_has_the_objectives_evaluation(client):
    page = client.get("/").text
    assert 'id="eval-grid" hidden' in page and 'id="eval-grid-table"' in page
    assert 'id="eval-grid-summary"' in page and 'id="eval-grid-front"' in page
    js = client.get("/static/app.js").text
    assert "renderEvalGrid(grid)" in js and "data.eval" in js


def test_page_has_the_pareto_panel(client):
    page = client.get("/").text
    assert 'id="panel-pareto" hidden' in page  # shown by the page for several objectives only
    assert 'id="chart-pareto"' in page and 'id="chart-hypervolume"' in page
    js = client.get("/static/app.js").text
    assert "/api/pareto?cloud=" in js


# ---------------------------------------------------------------------------------------------
# static assets, traversal, unknown routes
# ---------------------------------------------------------------------------------------------


def test_page_and_static_assets(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="chart-schedule"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    chart = client.get("/static/vendor/chartjs/chart.umd.min.js")
    assert chart.status_code == 200 and "Chart.js v4.6.1" in chart.text[:200]
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/static/vendor/chartjs/LICENSE.md").status_code == 200
    # the page loads nothing from another origin
    assert "http://" not in page.text and "https://" not in page.text


TRAVERSALS = [
    "/static/../../etc/passwd",
    "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/..%2f..%2f..%2fetc%2fpasswd",
    "/static/%2e%2e%2f%2e%2e%2fapp.py",
    "/static/../app.py",
    "/static/..%2fapp.py",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/..%5c..%5capp.py",
    "/static/vendor/../../app.py",
    "/static/",
    "/static/vendor",
    "/etc/passwd",
    "/api/../../etc/passwd",
    "/api/eval/../../../etc/passwd",
    "/metrics.jsonl",
    "/config.yaml",
    "/samples.jsonl",
    "/buffer/shard-000000000000-000000000003.parquet",
    "/eval/calibration.json",
    "/rejected/batch-0.json",
    "/run/metrics.jsonl",
    "/api/file?path=/etc/passwd",
    "/api/eval/plot.png/../../../config.yaml",
    "/api/nope",
    "/favicon.ico",
    "/docs",
    "/openapi.json",
    "/redoc",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_and_unknown_paths_are_404(client, path):
    response = client.get(path)
    assert response.status_code == 404, (path, response.text[:200])
    assert "root:" not in response.text and "import" not in response.text


def raw_get(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, bytes]:
    """A GET whose request line is sent exactly as given (no client-side normalisation)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    return int(raw.split(b" ", 2)[1]), raw


def test_raw_traversal_requests_over_http(synthetic):
    handle = serve(synthetic, port=0)
    try:
        assert raw_get(handle.port, "/api/status")[0] == 200
        for path in [*TRAVERSALS, "/static/../../../../etc/passwd", "/static/....//etc/passwd"]:
            status, raw = raw_get(handle.port, path)
            assert status in (400, 404), (path, raw[:200])
            assert b"root:" not in raw and b"import " not in raw
        # an absolute-form request target names a host, never a file
        status, raw = raw_get(handle.port, "http://127.0.0.1/etc/passwd")
        assert status in (400, 404) and b"root:" not in raw
        # a loopback-bound server refuses other Host names (DNS rebinding)
        assert raw_get(handle.port, "/api/status", host="evil.example")[0] == 400
        assert raw_get(handle.port, "/api/status", host=f"localhost:{handle.port}")[0] == 200
    finally:
        handle.stop()


def test_symlinks_pointing_outside_are_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.json"
    secret.write_text(json.dumps({"reason": SECRET, "iteration": 1, "target": SECRET}) + "\n")
    (outside / "eval").mkdir()
    (outside / "eval" / "calibration.json").write_text(json.dumps({"rows": [], "x": SECRET}))
    (outside / "eval" / "calibration.png").write_bytes(PNG + SECRET.encode())
    real = make_synthetic_run(tmp_path / "real")
    shutil.copytree(real / "buffer", outside / "buffer")

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").symlink_to(secret)
    (run / "samples.jsonl").symlink_to(secret)
    (run / "config.yaml").symlink_to(secret)
    (run / "eval").symlink_to(outside / "eval")
    (run / "buffer").symlink_to(outside / "buffer")
    (run / "rejected").mkdir()
    (run / "rejected" / "evil.json").symlink_to(secret)
    (run / "rejected" / "ok.json").write_text(json.dumps({"reason": "inside"}))
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "latest.json").symlink_to(secret)

    client = TestClient(create_app(run))
    bodies = [
        client.get(path)
        for path in (
            "/api/metrics",
            "/api/samples",
            "/api/config",
            "/api/status",
            "/api/buffer",
            "/api/eval",
            "/api/eval/plot.png",
        )
    ]
    for response in bodies:
        assert SECRET not in response.text
    assert client.get("/api/metrics").json()["records"] == []
    assert client.get("/api/buffer").json()["total"] == 0
    assert client.get("/api/eval").json()["report"] is None
    assert client.get("/api/eval/plot.png").status_code == 404
    st = client.get("/api/status").json()
    assert st["rejected"]["count"] == 1 and st["rejected"]["latest"][0]["reason"] == "inside"
    # the run directory itself may be a symlink: it is resolved once, and reads stay inside it
    link = tmp_path / "link-to-real"
    link.symlink_to(real)
    assert TestClient(create_app(link)).get("/api/metrics").json()["total"] == 5


# ---------------------------------------------------------------------------------------------
# malformed queries
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/metrics?since=abc",
        "/api/metrics?since=-2",
        "/api/metrics?since=1e3",
        "/api/metrics?since=99999999999999999999999999999",
        "/api/metrics?since=",
        "/api/metrics?since=%00",
        "/api/samples?limit=0",
        "/api/samples?limit=-5",
        "/api/samples?limit=10001",
        "/api/samples?limit=ten",
        "/api/buffer?bins=0",
        "/api/buffer?bins=201",
        "/api/buffer?bins=1.5",
        "/api/buffer?iteration=-7",
        "/api/buffer?iteration=x",
        "/api/buffer?iteration=18446744073709551616",
        "/api/eval/plot.png?v=" + "x" * 65,
    ],
)
def test_malformed_query_parameters_get_422(client, path):
    response = client.get(path)
    assert response.status_code == 422, (path, response.text[:200])
    assert client.get("/api/status").status_code == 200  # the app still answers


def test_only_get_is_allowed(client):
    assert client.post("/api/status").status_code == 405
    assert client.delete("/api/metrics").status_code == 405
    assert client.put("/static/app.js", content=b"x").status_code == 405


def test_create_app_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="poll_interval_s"):
        create_app(tmp_path, poll_interval_s=0)
    with pytest.raises(ValueError, match="recent_samples"):
        create_app(tmp_path, recent_samples=0)


# ---------------------------------------------------------------------------------------------
# the server thread, busy ports, the run's start-up and the CLI
# ---------------------------------------------------------------------------------------------


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_serve_binds_and_stops(synthetic, caplog):
    handle = serve(synthetic, port=0, poll_interval_s=1.0)
    assert handle.url == f"http://127.0.0.1:{handle.port}/" and handle.alive
    assert get_json(handle.url + "api/status")["iteration"] == 4
    # the port is busy now: without fallback a clear error, with fallback another port
    with pytest.raises(DashboardError, match=f"cannot listen on 127.0.0.1:{handle.port}"):
        serve(synthetic, port=handle.port)
    with caplog.at_level(logging.WARNING, logger="online_dt.dashboard"):
        other = serve(synthetic, port=handle.port, fallback=True)
    assert other.port != handle.port and "is busy" in caplog.text
    assert get_json(other.url + "api/settings")["name"] == "run"
    other.stop()
    handle.stop()
    assert not handle.alive and not other.alive
    with pytest.raises(urllib.error.URLError):
        get_json(handle.url + "api/status")


def test_start_for_run_never_raises(synthetic, caplog):
    assert start_for_run(synthetic, DashboardConfig(enabled=False)) is None
    with caplog.at_level(logging.WARNING, logger="online_dt.dashboard"):
        assert start_for_run(synthetic, DashboardConfig(host="256.1.1.1", port=0)) is None
    assert "dashboard not started" in caplog.text
    with caplog.at_level(logging.INFO, logger="online_dt.dashboard"):
        handle = start_for_run(synthetic, DashboardConfig(port=0))
    assert handle is not None and f"dashboard: {handle.url}" in caplog.text
    handle.stop()


@pytest.mark.slow
def test_run_main_starts_and_stops_its_dashboard(tmp_path, embedded_model_dir, caplog):
    """``online-dt run --local`` logs the dashboard's URL (falling back from a busy port) and
    stops it at the end; the run itself is unaffected."""
    from online_dt.run import main

    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    busy = blocker.getsockname()[1]
    cfg = run_config(tmp_path / "run", embedded_model_dir, iterations=1)
    data = cfg.model_dump(mode="json")
    data["dashboard"] = {"enabled": True, "port": busy, "poll_interval_s": 1.0}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="online_dt.run")  # "dashboard stopped" is DEBUG
    try:
        assert main(["--config", str(path), "--local", "--no-progress"]) == 0
    finally:
        blocker.close()
    assert f"dashboard port {busy} on 127.0.0.1 is busy" in caplog.text
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("dashboard: "))
    url = line.removeprefix("dashboard: ")
    assert url.startswith("http://127.0.0.1:") and url.endswith("/")
    assert "dashboard stopped" in caplog.text
    with pytest.raises(urllib.error.URLError):
        get_json(url + "api/status")
    assert len(RunDir(tmp_path / "run").read_metrics()) == 1


def test_cli_dashboard_serves_a_run_dir(synthetic, tmp_path):
    from online_dt.cli import main

    assert main(["dashboard", str(tmp_path / "missing")]) == 2
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    try:  # an explicitly asked-for busy port is an error, not a silent move
        assert main(["dashboard", str(synthetic), "--port", str(blocker.getsockname()[1])]) == 2
    finally:
        blocker.close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "online_dt.cli", "dashboard", str(synthetic), "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert found, (line, proc.poll())
        url = found.group(0)
        assert get_json(url + "api/status")["iteration"] == 4
    finally:
        proc.terminate()
        proc.wait(timeout=20)


# ---------------------------------------------------------------------------------------------
# a short real run
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def real_run_dir(tmp_path_factory, embedded_model_dir):
    return real_run(tmp_path_factory, embedded_model_dir)


@pytest.mark.slow
def test_api_over_a_real_run(real_run_dir, tmp_path_factory, embedded_model_dir):
    from online_dt.replay.export import export_dataset

    run = RunDir(real_run_dir)
    client = TestClient(create_app(real_run_dir))
    metrics = client.get("/api/metrics").json()["records"]
    assert metrics == json.loads(json.dumps(run.read_metrics()))
    assert len(metrics) == ITERATIONS
    for record in metrics:
        for key in ("target", "achieved_mean", "achieved_p10", "achieved_p90", "kl_to_base"):
            assert math.isfinite(record[key]), key
        for key in ("rollout_s", "scoring_s", "training_s", "sync_s", "other_s", "samples_per_s"):
            assert record[key] >= 0, key

    st = client.get("/api/status").json()
    assert st["state"] == "finished" and st["iteration"] == ITERATIONS - 1
    assert st["buffer_size"] == metrics[-1]["buffer_size"]
    assert st["checkpoint"] == f"iter-{ITERATIONS - 1:06d}"
    assert st["rejected"]["count"] == 0 and st["eval_available"] is False

    data = export_dataset(run.buffer_dir)
    hist = client.get("/api/buffer?bins=10").json()
    assert hist["total"] == len(data) == metrics[-1]["buffer_size"]
    assert hist["best"] == pytest.approx(max(data["achieved_reward"]))
    at0 = client.get("/api/buffer?bins=10&iteration=0").json()["at"]
    assert at0["total"] == data["iteration"].count(0) == metrics[0]["samples"]

    logged = [json.loads(line) for line in run.samples_file.read_text().splitlines()]
    samples = client.get("/api/samples?limit=5").json()["records"]
    assert samples == logged[::-1][:5]

    evaluated = TestClient(create_app(evaluated_run(tmp_path_factory, embedded_model_dir)))
    report = evaluated.get("/api/eval").json()
    assert report["plot_available"] and len(report["report"]["rows"]) == 4
    assert evaluated.get("/api/eval/plot.png").content[:8] == b"\x89PNG\r\n\x1a\n"

    # the reward-vs-KL plane of the evaluated run: iterations, targets and the base's reference
    plane = evaluated.get("/api/klplane").json()
    assert [p["iteration"] for p in plane["iterations"]] == list(range(ITERATIONS))
    assert [p["kl_to_base"] for p in plane["iterations"]] == [m["kl_to_base"] for m in metrics]
    rows = report["report"]["rows"]
    assert [p["target"] for p in plane["eval"]["points"]] == [r["target"] for r in rows]
    assert [p["kl_to_base"] for p in plane["eval"]["points"]] == [r["kl_to_base"] for r in rows]
    ref = report["report"]["reference"]
    kept = [b for b in ref["grid"] if b["count"] >= ref["min_count"]]
    assert ref["samples"] == 256 and 3 <= len(kept) == len(plane["reference"]["points"])
    for point, b in zip(plane["reference"]["points"], kept, strict=True):
        assert point["center"] == b["center"] and point["reward_mean"] == b["reward_mean"]
        assert point["kl_lower_bound"] == pytest.approx(-math.log(b["count"] / 256))


def test_reader_keeps_up_with_a_writer(tmp_path):
    """Appends landing in small pieces (as a concurrent writer's) are each read exactly once."""
    run = tmp_path / "run"
    run.mkdir()
    client = TestClient(create_app(run))
    text = "".join(json.dumps(metrics_record(it)) + "\n" for it in range(30))
    with open(run / "metrics.jsonl", "w") as f:
        for start in range(0, len(text), 97):
            f.write(text[start : start + 97])
            f.flush()
            client.get("/api/metrics?since=-1")
    records = client.get("/api/metrics").json()["records"]
    assert [r["iteration"] for r in records] == list(range(30))


def test_buffer_reader_survives_a_writer_and_reports_gaps(synthetic, monkeypatch):
    from online_dt.dashboard.reader import RunReader

    view = RunReader(synthetic).buffer
    real = view._read_buffer
    calls = []

    def flaky(folder):
        calls.append(folder)
        if len(calls) == 1:  # the open shard was renamed between listing and reading
            raise FileNotFoundError(folder / "shard-gone.parquet")
        return real(folder)

    monkeypatch.setattr(view, "_read_buffer", flaky)
    rewards, iterations, error = view.buffer_rewards()
    assert len(calls) == 2 and len(rewards) == 20 and error is None
    assert list(iterations) == [it for it in range(5) for _ in range(4)]

    def gone(folder):
        raise FileNotFoundError(folder)

    monkeypatch.setattr(view, "_read_buffer", gone)
    assert view.buffer_rewards()[2] == "the buffer is being rewritten"

    # a missing shard in the middle: what comes before it is shown, with the error
    (synthetic / "buffer" / "shard-000000000008-000000000011.parquet").unlink()
    hist = TestClient(create_app(synthetic)).get("/api/buffer").json()
    assert hist["total"] == 8 and "samples 8..11 are missing" in hist["error"]


def test_config_secrets_are_redacted(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    config = {
        "reward_model": {"kind": "custom", "kwargs": {"api_token": "s3cr3t", "url": "http://x"}},
        "online": {"iterations": 3},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    body = TestClient(create_app(run)).get("/api/config")
    assert body.status_code == 200 and "s3cr3t" not in body.text
    kwargs = body.json()["config"]["reward_model"]["kwargs"]
    assert kwargs == {"api_token": "***", "url": "http://x"}


# ---------------------------------------------------------------------------------------------
# token authentication
# ---------------------------------------------------------------------------------------------

TOKEN = "tok-" + "A1b2C3d4" * 4
OTHER_TOKEN = "other-" + "Z9y8X7w6" * 4
BEARER = {"Authorization": f"Bearer {TOKEN}"}
NO_TOKEN_ANSWER = {"detail": "missing or wrong token"}


def route_requests(app) -> list[tuple[str, str]]:
    """``(method, path)`` for every route the app registers, path parameters filled in with a
    real asset's name, so that a route added later is checked without editing the tests."""
    requests = []
    for route in app.routes:
        path = re.sub(r"\{[^}]*\}", "app.js", route.path)
        methods = getattr(route, "methods", None) or {"GET"}  # a Mount has none
        requests.extend((method, path) for method in sorted(methods))
    return requests


@pytest.fixture
def token_client(synthetic):
    return TestClient(create_app(synthetic, poll_interval_s=0.5, recent_samples=4, token=TOKEN))


def test_every_route_needs_the_token(token_client, synthetic):
    from online_dt.dashboard.auth import LOGIN_PATH

    requests = route_requests(token_client.app)
    guarded = [(m, p) for m, p in requests if p != LOGIN_PATH]
    # every route of the app, the login form's two included (and checked below)
    assert len(guarded) >= 11 and ("GET", "/api/status") in guarded and ("GET", "/") in guarded
    assert {(m, p) for m, p in requests if p == LOGIN_PATH} == {
        ("GET", LOGIN_PATH),
        ("POST", LOGIN_PATH),
    }
    wrong = [
        {},
        {"Authorization": f"Bearer {OTHER_TOKEN}"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer"},
        {"Authorization": ("Bearer \xfc" + TOKEN).encode("latin-1")},  # not ASCII: a 401
        {"Cookie": f"online_dt_dashboard_x={TOKEN}"},
    ]
    for method, path in guarded:
        for headers in wrong:
            response = token_client.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.status_code)
            assert response.json() == NO_TOKEN_ANSWER, (method, path)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert "set-cookie" not in response.headers
        # a browser asking for HTML gets the login form, and nothing of the run either
        html = token_client.request(method, path, headers={"Accept": "text/html"})
        assert html.status_code == 401 and '<form method="post" action="/login">' in html.text
        assert "prompt" not in html.text and "chart" not in html.text
        # the right token opens each of them
        response = token_client.request(method, path, headers=BEARER)
        assert response.status_code == 200, (method, path, response.status_code)
    # the login form itself shows nothing of the run
    form = token_client.get(LOGIN_PATH)
    assert form.status_code == 200 and 'name="token"' in form.text
    assert str(synthetic) not in form.text and "iteration" not in form.text
    assert "form-action 'self'" in form.headers["content-security-policy"]


@pytest.mark.parametrize("path", [*TRAVERSALS[:6], "/api/nope", "/docs", "/static/app.js"])
def test_unknown_paths_need_the_token_too(token_client, path):
    assert token_client.get(path).status_code == 401  # not even whether a path exists
    assert token_client.get(path, headers=BEARER).status_code in (200, 404)


def test_login_with_the_query_token_sets_a_cookie_and_drops_the_token(token_client):
    wrong = token_client.get(f"/?token={OTHER_TOKEN}", follow_redirects=False)
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    assert token_client.get("/api/status").status_code == 401
    login = token_client.get(f"/?token={TOKEN}", follow_redirects=False)
    assert login.status_code == 303 and login.headers["location"] == "/"
    cookie = login.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert TOKEN not in cookie  # the cookie is derived from the token, it does not hold it
    # the cookie alone opens the page and the API
    page = token_client.get("/")
    assert page.status_code == 200 and 'id="chart-schedule"' in page.text
    assert token_client.get("/api/metrics").json()["total"] == 5
    assert token_client.get("/static/app.js").status_code == 200
    # a ?token= is answered by a redirect (or 401) even with the cookie: never left in the URL
    again = token_client.get(f"/api/status?token={TOKEN}", follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"] == "/"
    assert token_client.get(f"/?token={OTHER_TOKEN}", follow_redirects=False).status_code == 401


def test_login_form(synthetic):
    client = TestClient(create_app(synthetic, token=TOKEN))
    for data in ({"token": OTHER_TOKEN}, {"token": ""}, {}, {"token": TOKEN[:-1]}):
        response = client.post("/login", data=data, follow_redirects=False)
        assert response.status_code == 401 and "Wrong token." in response.text
        assert "set-cookie" not in response.headers
    assert client.post("/login", content=b"x" * 5000).status_code == 413
    bad = client.post(
        "/login",
        content=b"token=\xff",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert bad.status_code == 400
    assert client.get("/api/status").status_code == 401
    login = client.post("/login", data={"token": TOKEN}, follow_redirects=False)
    assert login.status_code == 303 and login.headers["location"] == "/"
    assert client.get("/api/status").json()["iteration"] == 4
    assert client.get("/").status_code == 200


def test_a_cookie_opens_only_its_own_dashboard(synthetic):
    first = TestClient(create_app(synthetic, token=TOKEN))
    first.get(f"/?token={TOKEN}", follow_redirects=False)
    assert first.get("/api/status").status_code == 200
    ((name, value),) = first.cookies.items()
    # a dashboard with another token on the same host: another cookie name, and the value of
    # this one under that name does not open it either
    other = TestClient(create_app(synthetic, token=OTHER_TOKEN))
    other.cookies.set(name, value)
    assert other.get("/api/status").status_code == 401
    from online_dt.dashboard.auth import TokenAuth

    other_name = TokenAuth(OTHER_TOKEN).cookie_name
    assert other_name != name
    other.cookies.set(other_name, value)
    assert other.get("/api/status").status_code == 401


def test_without_a_token_nothing_changes(client):
    assert client.get("/api/status").status_code == 200
    assert client.get("/").status_code == 200
    assert client.get("/login").status_code == 404  # no login route without a token
    assert client.get(f"/?token={TOKEN}", follow_redirects=False).status_code == 200


def test_token_sources_and_validation(tmp_path, monkeypatch):
    from online_dt.config import ConfigError, load_config
    from online_dt.config.dashboard import TOKEN_ENV, resolve_token

    assert resolve_token(None, environ={}) is None
    assert resolve_token(TOKEN, environ={}) == TOKEN
    assert resolve_token(TOKEN, environ={TOKEN_ENV: OTHER_TOKEN}) == OTHER_TOKEN  # env wins
    assert resolve_token(TOKEN, environ={TOKEN_ENV: ""}) == TOKEN  # empty: not set
    assert resolve_token(TOKEN, explicit=OTHER_TOKEN, environ={TOKEN_ENV: "x" * 20}) == OTHER_TOKEN
    monkeypatch.setenv(TOKEN_ENV, OTHER_TOKEN)
    assert resolve_token(None) == OTHER_TOKEN  # os.environ by default
    for bad in (
        "short-token",
        "has space" + "x" * 16,
        "semi;colon" + "x" * 16,
        "é" * 20,
        "x" * 513,
    ):
        with pytest.raises(ValueError, match=TOKEN_ENV) as err:
            resolve_token(None, environ={TOKEN_ENV: bad})
        assert bad not in str(err.value)
        with pytest.raises(ValueError, match="dashboard token"):
            DashboardConfig(token=bad)
        with pytest.raises(ValueError):
            create_app(tmp_path, token=bad)
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump({"dashboard": {"token": bad}}))
        with pytest.raises(ConfigError, match=r"dashboard\.token") as err:
            load_config(path, OnlineRunConfig)
        assert bad not in str(err.value)
    assert DashboardConfig(token=TOKEN).token == TOKEN and DashboardConfig().token is None


def test_config_token_is_redacted(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    cfg = OnlineRunConfig.model_validate({"dashboard": {"token": TOKEN}})
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    body = TestClient(create_app(run, token=TOKEN)).get("/api/config", headers=BEARER)
    assert body.status_code == 200 and TOKEN not in body.text
    assert body.json()["config"]["dashboard"]["token"] == "***"


def test_serve_with_a_token_over_http(synthetic, caplog):
    with caplog.at_level(logging.INFO, logger="online_dt.dashboard"):
        handle = serve(synthetic, port=0, token=TOKEN)
    try:
        assert handle.token_required
        assert raw_get(handle.port, "/api/status")[0] == 401
        request = urllib.request.Request(handle.url + "api/status", headers=BEARER)
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["iteration"] == 4
        with pytest.raises(urllib.error.HTTPError) as err:
            get_json(handle.url + "api/metrics")
        assert err.value.code == 401
    finally:
        handle.stop()
    assert TOKEN not in caplog.text
    with pytest.raises(DashboardError, match="dashboard token"):
        serve(synthetic, port=0, token="short")


def test_exposed_without_a_token_warns(synthetic, caplog, monkeypatch):
    from online_dt.config.dashboard import TOKEN_ENV

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with caplog.at_level(logging.WARNING, logger="online_dt.dashboard"):
        handle = serve(synthetic, host="0.0.0.0", port=0)
    handle.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("has no token" in w and TOKEN_ENV in w for w in warnings), warnings
    # the run's dashboard goes through the same check
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="online_dt.dashboard"):
        handle = start_for_run(synthetic, DashboardConfig(host="0.0.0.0", port=0))
    assert handle is not None and not handle.token_required
    handle.stop()
    assert "has no token" in caplog.text
    # loopback, or a token: no warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="online_dt.dashboard"):
        serve(synthetic, port=0).stop()
        serve(synthetic, host="0.0.0.0", port=0, token=TOKEN).stop()
    assert "has no token" not in caplog.text


def test_start_for_run_with_a_token(synthetic, caplog, monkeypatch):
    from online_dt.config.dashboard import TOKEN_ENV

    monkeypatch.setenv(TOKEN_ENV, OTHER_TOKEN)
    with caplog.at_level(logging.INFO, logger="online_dt.dashboard"):
        handle = start_for_run(synthetic, DashboardConfig(port=0, token=TOKEN))
    try:
        assert handle is not None and handle.token_required
        assert f"dashboard: {handle.url} (token required: log in at {handle.url}login)" in (
            caplog.text
        )
        # the variable wins over dashboard.token
        other = urllib.request.Request(
            handle.url + "api/status", headers={"Authorization": f"Bearer {OTHER_TOKEN}"}
        )
        with urllib.request.urlopen(other, timeout=10) as response:
            assert response.status == 200
        assert raw_get(handle.port, "/api/status")[0] == 401
    finally:
        handle.stop()
    assert TOKEN not in caplog.text and OTHER_TOKEN not in caplog.text
    # a malformed variable: the dashboard does not start (never without its token), the run goes on
    monkeypatch.setenv(TOKEN_ENV, "too short")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="online_dt.dashboard"):
        assert start_for_run(synthetic, DashboardConfig(port=0)) is None
    assert "dashboard not started" in caplog.text and TOKEN_ENV in caplog.text
    assert "too short" not in caplog.text


def test_cli_dashboard_token(synthetic, tmp_path, capsys, monkeypatch):
    from online_dt.cli import main
    from online_dt.config.dashboard import TOKEN_ENV

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert main(["dashboard", str(synthetic), "--token", "short"]) == 2
    assert "--token: a dashboard token must be" in capsys.readouterr().err
    # a run whose dashboard.token cannot be read is never served without a token
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.yaml").write_text(yaml.safe_dump({"dashboard": {"token": "bad token!"}}))
    assert main(["dashboard", str(broken), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "dashboard.token is not usable" in err and "bad token!" not in err

    # the run's own dashboard.token applies; the variable wins over it
    cfg = yaml.safe_load((synthetic / "config.yaml").read_text())
    cfg["dashboard"]["token"] = TOKEN
    (synthetic / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen(
        [sys.executable, "-m", "online_dt.cli", "dashboard", str(synthetic), "--port", "0"],
        cwd=REPO,
        env={**os.environ, TOKEN_ENV: OTHER_TOKEN},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert found and "token required" in line, (line, proc.poll())
        assert TOKEN not in line and OTHER_TOKEN not in line
        port = int(found.group(1))
        assert raw_get(port, "/api/status")[0] == 401
        request = urllib.request.Request(
            found.group(0) + "api/status", headers={"Authorization": f"Bearer {OTHER_TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["iteration"] == 4
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(
                urllib.request.Request(found.group(0) + "api/status", headers=BEARER), timeout=10
            )
    finally:
        proc.terminate()
        proc.wait(timeout=20)

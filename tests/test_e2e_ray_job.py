"""End to end: a local Ray head, ``ray job submit`` of the default config (its warm start, then
fewer iterations), and assertions on the run directory it leaves behind."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from online_dt.config import OnlineRunConfig, load_config
from online_dt.replay.export import export_dataset

REPO = Path(__file__).resolve().parents[1]
ITERATIONS = 14


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path):
    """A Ray head on this machine (2 CPUs), stopped afterwards."""
    bin_dir = Path(sys.executable).parent
    # a throw-away cluster on loopback: no token authentication (Ray 2.60 turns it on when a
    # token file exists, e.g. after an earlier ray.init, and the CLI then needs the token)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    dashboard = free_port()
    temp = Path("/tmp") / f"ray-e2e-{os.getpid()}"
    subprocess.run(
        [
            str(bin_dir / "ray"),
            "start",
            "--head",
            "--num-cpus",
            "2",
            "--port",
            str(free_port()),
            "--dashboard-port",
            str(dashboard),
            "--dashboard-host",
            "127.0.0.1",
            "--include-dashboard",
            "true",
            "--temp-dir",
            str(temp),
            "--disable-usage-stats",
        ],
        check=True,
        env=env,
        capture_output=True,
        timeout=180,
    )
    try:
        yield env, f"http://127.0.0.1:{dashboard}"
    finally:
        subprocess.run([str(bin_dir / "ray"), "stop", "--force"], env=env, capture_output=True)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_ray_job_submit_default_config(ray_head, embedded_model_dir, tmp_path):
    env, address = ray_head
    run_dir = tmp_path / "run"
    runtime_env = {
        "excludes": [".venv", ".git", "runs", "*.egg-info", "__pycache__"],
        "env_vars": {"ONLINE_DT_CACHE": str(embedded_model_dir.parent)},
    }
    cmd = [
        str(Path(sys.executable).parent / "ray"),
        "job",
        "submit",
        "--address",
        address,
        "--working-dir",
        str(REPO),
        "--runtime-env-json",
        json.dumps(runtime_env),
        "--",
        "python",
        "-m",
        "online_dt.run",
        "--config",
        "configs/default.yaml",
        "--no-progress",
        "--set",
        f"online.run_dir={run_dir}",
        "--set",
        f"online.iterations={ITERATIONS}",
    ]
    start = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500)
    print(proc.stdout[-4000:], proc.stderr[-2000:], f"\nseconds: {time.time() - start:.0f}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "succeeded" in proc.stdout.lower()

    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == list(range(ITERATIONS))
    cfg = load_config(REPO / "configs" / "default.yaml", OnlineRunConfig)
    targets = [m["target"] for m in metrics]
    # the target follows the schedule: rises, never by more than the cap
    cap = cfg.schedule.max_increase
    assert all(b - a <= cap + 1e-9 for a, b in zip(targets, targets[1:], strict=False))
    assert targets[-1] > targets[0] + 0.2
    # the achieved reward rises with it
    first = sum(m["achieved_mean"] for m in metrics[:3]) / 3
    last = sum(m["achieved_mean"] for m in metrics[-3:]) / 3
    print("achieved first 3 / last 3:", round(first, 3), round(last, 3))
    assert last - first >= 0.2
    # every scored sample is in the buffer exactly once, from a published version: the warm
    # start's (the default has one; it publishes version 1), then each iteration's but the
    # best command's asks (online.best_asks_in_buffer: false keeps them out)
    warm = json.loads((run_dir / "warm_start.json").read_text())["samples"]
    assert warm == cfg.online.warm_start_prompt_count * cfg.online.warm_start_samples_per_prompt
    kept_best = cfg.online.best_asks_in_buffer
    per_iteration = [m["samples"] - (0 if kept_best else m["best_asks"]) for m in metrics]
    assert all(m["best_asks"] > 0 for m in metrics)
    data = export_dataset(run_dir / "buffer")
    assert len(data) == warm + sum(per_iteration)
    assert sorted(data["sample_id"]) == list(range(len(data)))
    assert metrics[0]["policy_version"] == 2
    published = {0, 1} | {m["policy_version"] for m in metrics}
    assert set(data["policy_version"]) <= published

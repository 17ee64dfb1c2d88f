"""Async mode on a real Ray cluster: the next rollouts run while the learner trains.

The in-process handles run every call at once, so only real actors can show an overlap. The
intervals come from timestamps taken inside the actors: each rollout's ``created_at`` minus
its ``generate_seconds`` (sampler actor) and the learner's ``started_at`` / ``finished_at``
of ``train`` (learner actor), recorded per iteration in ``metrics.jsonl``. Sync mode is the
negative control: its next rollouts start only after the new weights are loaded.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from online_dt.config import OnlineRunConfig
from online_dt.loop.loop import STAGES
from online_dt.loop.plan import plan_run
from tests.tiny import build_tiny_model

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["the movie was", "the food was", "honestly the game is", "this hotel is"]


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster with 2 CPUs: one for the sampler actor, one for the learner."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}}, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("gpt2"), "gpt2")


def run_mode(tmp_path: Path, base: Path, mode: str) -> list[dict]:
    from actors.controller import run_on_ray

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    cfg = OnlineRunConfig.model_validate(
        {
            "model": {"name_or_path": str(base), "device": "cpu"},
            # async: the sampler actor also scores the rollouts under the base model for the
            # learner's importance weights (sampler.base_logprobs), off the learner's path
            "sampler": {"backend": "hf", "base_logprobs": mode == "async"},
            "buffer": {"importance_weighting": mode == "async"},
            "sampling": {"max_new_tokens": 16},
            "training": {"batch_size": 32, "lr": 1e-3},
            "schedule": {"kind": "quantile", "iterations": 4, "max_increase": 0.1},
            "prompts": {"source": "file", "path": str(prompts)},
            "dashboard": {"enabled": False},
            "online": {
                "run_dir": str(tmp_path / mode),
                "iterations": 4,
                "prompts_per_iteration": 32,
                "samples_per_prompt": 4,
                "train_steps_per_iteration": 8,
                "kl_samples": 0,
                "mode": mode,
            },
        }
    )
    plan = plan_run(cfg, None)
    assert run_on_ray(plan, progress=False) == 0
    # each actor's output went to its own file, not to this console
    logs = sorted(p.name for p in plan.run.logs_dir.iterdir())
    assert logs == ["learner.log", "reward.log", "sampler-0.log"]
    sampler_log = (plan.run.logs_dir / "sampler-0.log").read_text()
    assert "sampler backend: HF reference" in sampler_log
    # no progress bar per loaded version (transformers' "Loading weights" on from_pretrained)
    assert "Loading weights" not in sampler_log
    assert ("sampler.base_logprobs: the sampler scores" in sampler_log) == (mode == "async")
    return plan.run.read_metrics()


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether the closed intervals ``a`` and ``b`` share more than an end point."""
    return a[0] < b[1] and b[0] < a[1]


def intervals(metrics: list[dict]) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """(training interval of iteration i, rollout interval of iteration i + 1), for each i."""
    return [
        (
            (prev["train_started_at"], prev["train_finished_at"]),
            (nxt["rollout_started_at"], nxt["rollout_finished_at"]),
        )
        for prev, nxt in itertools.pairwise(metrics)
    ]


def test_async_rollouts_overlap_training_sync_ones_do_not(ray_cluster, tiny, tmp_path):
    sync = run_mode(tmp_path, tiny, "sync")
    asynchronous = run_mode(tmp_path, tiny, "async")
    # sync: each rollout starts after the training it waits for has finished
    for train, rollout in intervals(sync):
        assert rollout[0] >= train[1], (train, rollout)
    # async: every next rollout intersects the current training
    for train, rollout in intervals(asynchronous):
        assert overlaps(train, rollout), (train, rollout)
    assert [m["policy_lag_max"] for m in asynchronous] == [0, 1, 1, 1]
    assert [m["policy_lag_max"] for m in sync] == [0, 0, 0, 0]
    assert all(m["samples_over_lag"] == 0 for m in sync + asynchronous)
    # the same stage timer as in process: the stages add up to wall_s, and wall_s is the real
    # time from one record to the next, within 5 %
    for metrics in (sync, asynchronous):
        for m in metrics:
            stages = sum(m[f"{s}_s"] for s in STAGES) + m["other_s"]
            assert stages == pytest.approx(m["wall_s"], rel=1e-9)
        for prev, m in itertools.pairwise(metrics):
            assert m["time"] - prev["time"] == pytest.approx(m["wall_s"], rel=0.05)

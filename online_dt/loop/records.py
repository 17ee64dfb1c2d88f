"""What the loop writes per iteration: the metrics record and the sample log.

The record's keys are the columns of ``metrics.jsonl`` (the README lists them); the sample log
is a few completions of each iteration for ``samples.jsonl``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from online_dt.loop.rollout_batch import RolloutBatch
from online_dt.loop.scoring import ScoreOutcome
from online_dt.loop.timing import StageTimer
from online_dt.rollout.weight_sync import WeightUpdate
from online_dt.samples import Rollout
from online_dt.util.metrics import distinct_n, reward_summary


def rollout_metrics(
    iteration: int,
    target: float,
    rollouts: Sequence[Rollout],
    rewards: Sequence[float],
    learner_version: int,
) -> dict[str, Any]:
    """Reward, calibration, diversity and length figures of one iteration's rollouts.

    ``learner_version`` is the version the learner trained these samples on (before this
    iteration's update); ``policy_lag_max`` is how many versions the oldest sample is behind it
    (0 in sync mode, up to 1 in async mode). With no rollouts (a skipped batch) only
    ``iteration``, ``target`` and ``samples`` are set.
    """
    record: dict[str, Any] = {"iteration": iteration, "target": target, "samples": len(rollouts)}
    if not rollouts:  # the batch was skipped (reward model failed) or every replica was lost
        return record
    tokens = [r.token_ids for r in rollouts]
    summary = reward_summary(rewards)
    versions = [r.policy_version for r in rollouts]
    return {
        **record,
        "achieved_mean": summary["mean"],
        "achieved_median": summary["median"],
        "achieved_p10": summary["p10"],
        "achieved_p90": summary["p90"],
        "achieved_std": summary["std"],
        "calibration_error": abs(summary["mean"] - target),
        "distinct_1": distinct_n(tokens, 1),
        "distinct_2": distinct_n(tokens, 2),
        "completion_tokens_mean": sum(map(len, tokens)) / len(tokens),
        "sample_policy_version_min": min(versions),
        "policy_lag_max": learner_version - min(versions),
        **rollout_interval(rollouts),
    }


def rollout_interval(rollouts: Sequence[Rollout]) -> dict[str, float]:
    """When the sampler replicas generated ``rollouts``, as recorded inside them (UNIX seconds):
    ``rollout_started_at`` is the earliest start of a generate call (its ``created_at`` minus
    its ``generate_seconds``), ``rollout_finished_at`` the latest end. Empty when a sampler
    did not record its times (``created_at`` 0)."""
    timed = [r for r in rollouts if r.created_at > 0]
    if not timed:
        return {}
    return {
        "rollout_started_at": min(r.created_at - r.generate_seconds for r in timed),
        "rollout_finished_at": max(r.created_at for r in timed),
    }


def iteration_record(
    iteration: int,
    target: float,
    batch: RolloutBatch,
    scored: ScoreOutcome,
    appended: Mapping[str, Any],
    trained: Mapping[str, float],
    kl_to_base: float | None,
    update: WeightUpdate,
    timer: StageTimer,
) -> dict[str, Any]:
    """One ``metrics.jsonl`` record.

    Args:
        iteration: the iteration.
        target: its target reward.
        batch: its rollouts and their recovery counts.
        scored: the scoring outcome (``rewards`` is ``None`` when the batch was skipped).
        appended: the learner's ``append`` result (``buffer_size``, ``first_id``, ``last_id``).
        trained: the learner's ``train`` result (``loss``, ``kl_penalty``, and the UNIX times
            ``started_at`` / ``finished_at`` of the training steps).
        kl_to_base: the KL estimate to the base model (nats per completion) or ``None``.
        update: the version published after this iteration's training.
        timer: the iteration's stage timer (``<stage>_s``, ``other_s``, ``wall_s``).
    """
    rollouts, rewards = scored.kept(batch.rollouts)
    seconds = timer.seconds()
    policy_version = update.version
    wall = seconds["wall_s"]
    return {
        **rollout_metrics(iteration, target, rollouts, rewards, policy_version - 1),
        "kl_to_base": kl_to_base,
        "loss": trained["loss"],
        "kl_penalty": trained["kl_penalty"],
        "train_started_at": trained.get("started_at"),
        "train_finished_at": trained.get("finished_at"),
        "buffer_size": appended["buffer_size"],
        "first_sample_id": appended["first_id"],
        "last_sample_id": appended["last_id"],
        "policy_version": policy_version,
        "samples_per_s": len(rollouts) / wall,
        "rollout_tokens_per_s": sum(len(r.token_ids) for r in rollouts)
        / max(seconds.get("rollout_s", 0.0), 1e-9),
        **seconds,
        **scored.metrics(),
        **batch.recovery.metrics(),
        "time": time.time(),
    }


def sample_log(
    iteration: int, rollouts: Sequence[Rollout], rewards: Sequence[float], limit: int
) -> Iterator[dict[str, Any]]:
    """The first ``limit`` samples of an iteration as ``samples.jsonl`` lines: prompt,
    completion, target, achieved reward and policy version."""
    for r, reward in list(zip(rollouts, rewards, strict=True))[:limit]:
        yield {
            "iteration": iteration,
            "prompt": r.prompt,
            "completion": r.completion,
            "target": r.target,
            "achieved_reward": reward,
            "policy_version": r.policy_version,
        }

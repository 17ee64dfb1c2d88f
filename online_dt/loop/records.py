"""What the loop writes per iteration: the metrics record and the sample log.

The record's keys are the columns of ``metrics.jsonl`` (the README lists them); the sample log
is a few completions of each iteration for ``samples.jsonl``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from online_dt.loop.rollout_batch import RolloutBatch
from online_dt.loop.scoring import ScoreOutcome
from online_dt.loop.timing import StageTimer
from online_dt.rollout.weight_sync import WeightUpdate
from online_dt.samples import Reward, Rollout
from online_dt.util.metrics import distinct_n, reward_summary


def rollout_metrics(
    iteration: int,
    target: Reward,
    rollouts: Sequence[Rollout],
    rewards: Sequence[Reward],
    learner_version: int,
    objectives: Sequence[str] = (),
    best_above: float | None = None,
) -> dict[str, Any]:
    """Reward, calibration, diversity and length figures of one iteration's rollouts.

    With ``best_above`` (``conditioning.reward_max`` of a run with ``best_command``), the
    rollouts asked for a target above it asked for the best command: the reward and
    calibration figures describe the others (the schedule's asks; absent when every kept
    sample asked for the best command), and ``best_asks`` and ``best_achieved_mean`` /
    ``best_achieved_max`` describe these.

    ``learner_version`` is the version the learner trained these samples on (before this
    iteration's update); ``policy_lag_max`` is how many versions the oldest sample is behind it
    (0 in sync mode, up to 1 in async mode). With no rollouts (a skipped batch) only
    ``iteration``, ``target`` and ``samples`` are set. With several ``objectives`` (their
    names), ``target`` and the rewards are vectors: see :func:`objective_metrics`.
    """
    record: dict[str, Any] = {"iteration": iteration, "target": target, "samples": len(rollouts)}
    if objectives:
        record["target"] = [float(t) for t in target]  # type: ignore[union-attr]
        record["objectives"] = list(objectives)
    if not rollouts:  # the batch was skipped (reward model failed) or every replica was lost
        return record
    tokens = [r.token_ids for r in rollouts]
    versions = [r.policy_version for r in rollouts]
    if objectives:
        rewards_part = objective_metrics(objectives, [r.target for r in rollouts], rewards)
    else:
        if best_above is not None:
            best = [float(r.target) > best_above for r in rollouts]  # type: ignore[arg-type]
            asked = [x for x, b in zip(rewards, best, strict=True) if b]
            record["best_asks"] = len(asked)
            if asked:
                record["best_achieved_mean"] = float(np.mean(asked))  # type: ignore[arg-type]
                record["best_achieved_max"] = float(np.max(asked))  # type: ignore[arg-type]
            rewards = [x for x, b in zip(rewards, best, strict=True) if not b]
        rewards_part = {}  # none when every kept sample asked for the best command
        if rewards:
            summary = reward_summary(rewards)  # type: ignore[arg-type]
            rewards_part = {
                "achieved_mean": summary["mean"],
                "achieved_median": summary["median"],
                "achieved_p10": summary["p10"],
                "achieved_p90": summary["p90"],
                "achieved_std": summary["std"],
                "calibration_error": abs(summary["mean"] - target),  # type: ignore[operator]
            }
    return {
        **record,
        **rewards_part,
        "distinct_1": distinct_n(tokens, 1),
        "distinct_2": distinct_n(tokens, 2),
        "completion_tokens_mean": sum(map(len, tokens)) / len(tokens),
        "sample_policy_version_min": min(versions),
        "policy_lag_max": learner_version - min(versions),
        **rollout_interval(rollouts),
    }


def objective_metrics(
    objectives: Sequence[str], targets: Sequence[Reward], rewards: Sequence[Reward]
) -> dict[str, Any]:
    """Per-objective figures of an iteration with several objectives.

    Args:
        objectives: the ``M`` names, in order.
        targets: each sample's target vector (``M`` floats, reward units).
        rewards: each sample's achieved reward vector (``M`` floats, reward units).

    Returns:
        ``achieved_mean`` (a list of ``M`` means), and per objective ``NAME``:
        ``achieved_NAME_mean``, ``achieved_NAME_p10``, ``achieved_NAME_p90``,
        ``target_NAME`` (mean target) and ``calibration_error_NAME``, the mean over samples
        of ``|achieved - target|`` (each sample against its own target: the schedule asks
        every prompt for a different vector).
    """
    achieved = np.asarray(rewards, dtype=np.float64).reshape(len(rewards), len(objectives))
    asked = np.asarray(targets, dtype=np.float64).reshape(len(targets), len(objectives))
    record: dict[str, Any] = {"achieved_mean": [float(x) for x in achieved.mean(axis=0)]}
    for m, name in enumerate(objectives):
        column = achieved[:, m]
        record[f"achieved_{name}_mean"] = float(column.mean())
        record[f"achieved_{name}_p10"] = float(np.quantile(column, 0.1))
        record[f"achieved_{name}_p90"] = float(np.quantile(column, 0.9))
        record[f"target_{name}"] = float(asked[:, m].mean())
        record[f"calibration_error_{name}"] = float(np.abs(column - asked[:, m]).mean())
    return record


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
    target: Reward,
    batch: RolloutBatch,
    scored: ScoreOutcome,
    appended: Mapping[str, Any],
    trained: Mapping[str, float],
    kl_to_base: float | None,
    update: WeightUpdate,
    timer: StageTimer,
    objectives: Sequence[str] = (),
    best_above: float | None = None,
) -> dict[str, Any]:
    """One ``metrics.jsonl`` record.

    Args:
        iteration: the iteration.
        target: its target reward (with several objectives, the mean target vector).
        batch: its rollouts and their recovery counts.
        scored: the scoring outcome (``rewards`` is ``None`` when the batch was skipped).
        appended: the learner's ``append`` result (``buffer_size``, ``first_id``, ``last_id``).
        trained: the learner's ``train`` result (``loss``, ``kl_penalty``, ``entropy``, and
            the UNIX times ``started_at`` / ``finished_at`` of the training steps).
        kl_to_base: the KL estimate to the base model (nats per completion) or ``None``.
        update: the version published after this iteration's training.
        timer: the iteration's stage timer (``<stage>_s``, ``other_s``, ``wall_s``).
        objectives: the objectives' names (several objectives; see :func:`rollout_metrics`).
            The learner's ``front_size`` and ``front_hypervolume`` are copied when present.
        best_above: see :func:`rollout_metrics`.
    """
    rollouts, rewards = scored.kept(batch.rollouts)
    seconds = timer.seconds()
    policy_version = update.version
    wall = seconds["wall_s"]
    return {
        **rollout_metrics(
            iteration, target, rollouts, rewards, policy_version - 1, objectives, best_above
        ),
        **{k: appended[k] for k in ("front_size", "front_hypervolume") if k in appended},
        "kl_to_base": kl_to_base,
        "loss": trained["loss"],
        "kl_penalty": trained["kl_penalty"],
        "entropy": trained["entropy"],
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
    iteration: int, rollouts: Sequence[Rollout], rewards: Sequence[Reward], limit: int
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

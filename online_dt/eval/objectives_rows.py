"""The rows of a grid evaluation of several objectives, and their summary (pure: no model).

:func:`evaluate_grid` samples, scores and summarises completions for each target vector of
:func:`~online_dt.eval.objectives.grid_targets` (or explicit ones), one row per target
(:func:`objective_row`); :func:`summarize_grid` gives per objective the normalised calibration
error over the achievable targets (:func:`~online_dt.eval.objectives.achievable`), how many
targets meet the goal (:data:`~online_dt.eval.objectives.CALIBRATION_GOAL`), and the Pareto
front of the achieved means with its hypervolume next to the buffer's. Units as in
:mod:`online_dt.eval.objectives`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from online_dt.config import ObjectiveConfig
from online_dt.eval.objectives import (
    CALIBRATION_GOAL,
    as_buffer,
    as_targets,
    check_objectives,
)
from online_dt.objectives import denormalize, front_summary, normalize
from online_dt.util.metrics import distinct_n, reward_summary
from online_dt.util.pareto import pareto_front

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# rows
# ---------------------------------------------------------------------------------------------


def objective_row(
    target: Sequence[float],
    objectives: Sequence[ObjectiveConfig],
    prompts: Sequence[str],
    completions: Sequence[str],
    token_ids: Sequence[Sequence[int]],
    rewards: Sequence[Sequence[float]],
    *,
    is_achievable: bool,
    goal: float = CALIBRATION_GOAL,
    examples: int = 3,
) -> dict[str, Any]:
    """One row of the grid table: what the policy achieved when asked for ``target``.

    Args:
        target: the target vector (``M`` floats, reward units).
        objectives: the run's ``conditioning.objectives``.
        prompts, completions, token_ids, rewards: ``N >= 1`` aligned samples; each reward is
            ``M`` floats (reward units, the objectives' order).
        is_achievable: the target's :func:`~online_dt.eval.objectives.achievable` flag.
        goal: the calibration goal (normalised units) for ``within_goal``.
        examples: how many (prompt, completion, rewards) examples to keep in ``samples``.

    Returns:
        ``target`` (list, reward units); ``target_normalised`` (list); ``achieved_mean`` (list,
        reward units); ``objectives``: per objective name ``target``, ``achieved_mean``,
        ``std``, ``p10``, ``median``, ``p90`` (reward units), ``abs_error``
        (``|achieved_mean - target|``, reward units) and ``abs_error_normalised`` (that over
        the objective's half-width); ``max_abs_error_normalised`` (over objectives);
        ``within_goal`` (it is ``<= goal``); ``achievable``; ``distinct_1``/``distinct_2``
        over the completion tokens (in ``[0, 1]``); ``count`` (N); ``samples``.

    Raises:
        ValueError: no samples, the sequences differ in length, or a reward or the target
            does not have ``M`` values.
    """
    m = len(objectives)
    if not (len(prompts) == len(completions) == len(token_ids) == len(rewards)):
        raise ValueError(
            f"lengths differ: {len(prompts)} prompts, {len(completions)} completions, "
            f"{len(token_ids)} token lists, {len(rewards)} rewards"
        )
    if len(rewards) == 0:
        raise ValueError("no samples to summarise")
    wanted = as_targets([target], objectives)[0]
    values = np.asarray(rewards, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != m:
        raise ValueError(f"rewards must be {m} floats per sample, got shape {values.shape}")
    per: dict[str, dict[str, float]] = {}
    for k, o in enumerate(objectives):
        summary = reward_summary(values[:, k])
        error = abs(summary["mean"] - float(wanted[k]))
        per[o.name] = {
            "target": float(wanted[k]),
            "achieved_mean": summary["mean"],
            "std": summary["std"],
            "p10": summary["p10"],
            "median": summary["median"],
            "p90": summary["p90"],
            "abs_error": error,
            "abs_error_normalised": error / o.half_width,
        }
    worst = max(p["abs_error_normalised"] for p in per.values())
    return {
        "target": [float(v) for v in wanted],
        "target_normalised": [float(v) for v in normalize(wanted, objectives)],
        "achieved_mean": [per[o.name]["achieved_mean"] for o in objectives],
        "objectives": per,
        "max_abs_error_normalised": worst,
        "within_goal": bool(worst <= goal),
        "achievable": bool(is_achievable),
        "distinct_1": distinct_n(token_ids, 1),
        "distinct_2": distinct_n(token_ids, 2),
        "count": len(rewards),
        "samples": [
            {"prompt": p, "completion": c, "rewards": [float(v) for v in r]}
            for p, c, r in list(zip(prompts, completions, values, strict=True))[:examples]
        ],
    }


def evaluate_grid(
    sampler: Any,
    score: Callable[[list[str], list[str]], Sequence[Sequence[float]]],
    prompts: Sequence[str],
    targets: Sequence[Sequence[float]],
    samples_per_target: int,
    params: Callable[[int], Any],
    objectives: Sequence[ObjectiveConfig],
    *,
    achievable_flags: Sequence[bool] | None = None,
    kl: Callable[[list[Any]], list[float]] | None = None,
    goal: float = CALIBRATION_GOAL,
) -> list[dict[str, Any]]:
    """Sample, score and summarise completions for each target vector.

    As :func:`online_dt.eval.calibration.evaluate_calibration` does for one reward: every
    target sees the same prompts (the first ``samples_per_target``, cycling) and target ``k``
    samples with ``params(k)`` (its own seed).

    Args:
        sampler: anything with ``generate(prompts, targets, params) -> list[Rollout]`` that
            takes tuple targets (:class:`online_dt.rollout.hf_sampler.HFSampler`).
        score: validated vector reward function of (prompts, completions) -> ``M`` floats per
            sample in the objectives' order (``score_checked(..., objectives=names)``).
        prompts: the prompt set.
        targets: ``T`` target vectors (``M`` floats each, reward units).
        samples_per_target: completions per target (``>= 1``).
        params: ``params(k)``: the :class:`~online_dt.rollout.sampler.SamplingParams` of target k.
        objectives: the run's ``conditioning.objectives``.
        achievable_flags: ``T`` bools (:func:`~online_dt.eval.objectives.achievable`); default all
            ``False``.
        kl: optional per-completion KL(policy || base) estimator over rollouts (nats).
        goal: the calibration goal (normalised units).

    Returns:
        One :func:`objective_row` per target, plus ``kl_to_base`` (mean nats per completion,
        or ``None``), ``kl_to_base_per_token`` (summed KL over summed completion tokens, nats
        per token, or ``None``) and ``seconds`` (sampling, scoring and KL time).

    Raises:
        ValueError: ``samples_per_target < 1``, no prompts, a target that is not ``M`` finite
            floats, or ``achievable_flags`` of another length than ``targets``.
    """
    check_objectives(objectives)
    if samples_per_target < 1:
        raise ValueError(f"samples_per_target must be >= 1, got {samples_per_target}")
    if not prompts:
        raise ValueError("no prompts to evaluate on")
    wanted = as_targets(targets, objectives)
    flags = [False] * len(wanted) if achievable_flags is None else list(achievable_flags)
    if len(flags) != len(wanted):
        raise ValueError(f"{len(flags)} achievable flags for {len(wanted)} targets")
    batch = [prompts[i % len(prompts)] for i in range(samples_per_target)]
    rows = []
    for k, (target, flag) in enumerate(zip(wanted, flags, strict=True)):
        start = time.perf_counter()
        vector = tuple(float(v) for v in target)
        rollouts = sampler.generate(batch, [vector] * len(batch), params(k))
        completions = [r.completion for r in rollouts]
        rewards = score([r.prompt for r in rollouts], completions)
        row = objective_row(
            vector,
            objectives,
            [r.prompt for r in rollouts],
            completions,
            [r.token_ids for r in rollouts],
            rewards,
            is_achievable=flag,
            goal=goal,
        )
        kls = kl(rollouts) if kl is not None else []
        tokens = sum(len(r.token_ids) for r in rollouts)
        row["kl_to_base"] = float(np.mean(kls)) if kls else None
        row["kl_to_base_per_token"] = float(np.sum(kls) / tokens) if kls and tokens else None
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        log.info(
            "target %s: achieved %s (max normalised error %.3f%s)",
            _vec(row["target"]),
            _vec(row["achieved_mean"]),
            row["max_abs_error_normalised"],
            "" if flag else ", not achievable",
        )
    return rows


def _vec(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"


# ---------------------------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------------------------


def summarize_grid(
    rows: Sequence[dict[str, Any]],
    objectives: Sequence[ObjectiveConfig],
    buffer_rewards: Any | None,
    goal: float = CALIBRATION_GOAL,
) -> dict[str, Any]:
    """The grid evaluation in a few numbers.

    Args:
        rows: :func:`objective_row` results (``target``, ``achieved_mean``, ``objectives``,
            ``achievable``).
        objectives: the run's ``conditioning.objectives``.
        buffer_rewards: float ``[N, M]`` achieved reward vectors of the buffer, or ``None``.
        goal: the calibration goal (normalised units).

    Returns:
        * ``goal``; ``targets`` (how many rows); ``achievable`` (how many of them are);
          ``within_goal``: achievable targets whose mean achieved reward is within ``goal``
          (normalised) of the target in *every* objective; ``within_goal_all``: the same over
          every target, achievable or not;
        * ``per_objective``: per objective name, over the achievable targets,
          ``mean_abs_error_normalised`` and ``max_abs_error_normalised`` (normalised units),
          ``mean_abs_error`` (reward units) and ``within_goal`` (how many are within ``goal``
          in this objective); the errors are ``None`` when no target is achievable;
        * ``achieved_front``: the Pareto front of the rows' mean achieved vectors (reward
          units, sorted by the first objective), ``achieved_front_size`` and
          ``achieved_hypervolume``: its hypervolume in normalised units against the reference
          point ``(-1, ..., -1)`` (every objective's ``low``; at most ``2 ** M``);
        * ``buffer_front``, ``buffer_front_size``, ``buffer_hypervolume``, ``buffer_samples``:
          the same for the buffer's samples (``buffer_hypervolume`` is ``None`` without one);
          ``hypervolume_ratio``: achieved over buffer (``None`` when the buffer's is 0 or
          missing).

    Raises:
        ValueError: a row without ``M`` values, or ``buffer_rewards`` not ``[N, M]``.
    """
    check_objectives(objectives)
    m = len(objectives)
    chosen = [r for r in rows if r["achievable"]]
    per: dict[str, dict[str, Any]] = {}
    for o in objectives:
        errors = np.array([r["objectives"][o.name]["abs_error_normalised"] for r in chosen])
        raw = np.array([r["objectives"][o.name]["abs_error"] for r in chosen])
        per[o.name] = {
            "mean_abs_error_normalised": float(errors.mean()) if len(errors) else None,
            "max_abs_error_normalised": float(errors.max()) if len(errors) else None,
            "mean_abs_error": float(raw.mean()) if len(raw) else None,
            "within_goal": int((errors <= goal).sum()),
        }

    means = np.array([r["achieved_mean"] for r in rows], dtype=np.float64).reshape(len(rows), m)
    achieved = front_summary(means, objectives)
    points = as_buffer(buffer_rewards, objectives)
    buffer = front_summary(points, objectives) if len(points) else None
    ratio = None
    if buffer is not None and buffer["front_hypervolume"] > 0:
        ratio = achieved["front_hypervolume"] / buffer["front_hypervolume"]
    return {
        "goal": goal,
        "targets": len(rows),
        "achievable": len(chosen),
        "within_goal": sum(bool(r["max_abs_error_normalised"] <= goal) for r in chosen),
        "within_goal_all": sum(bool(r["max_abs_error_normalised"] <= goal) for r in rows),
        "per_objective": per,
        "achieved_front": _front_points(means, objectives),
        "achieved_front_size": achieved["front_size"],
        "achieved_hypervolume": achieved["front_hypervolume"],
        "buffer_front": _front_points(points, objectives),
        "buffer_front_size": buffer["front_size"] if buffer else 0,
        "buffer_hypervolume": buffer["front_hypervolume"] if buffer else None,
        "buffer_samples": len(points),
        "hypervolume_ratio": ratio,
        "hypervolume_reference": [o.low for o in objectives],
    }


def _front_points(points: np.ndarray, objectives: Sequence[ObjectiveConfig]) -> list[list[float]]:
    """The Pareto front of ``[N, M]`` points (reward units) as lists, computed in normalised
    units (the same front: normalising is an increasing map per objective)."""
    if len(points) == 0:
        return []
    front = denormalize(pareto_front(normalize(points, objectives)), objectives)
    return [[float(v) for v in row] for row in front]

"""``online-dt eval`` of a run with several objectives: calibration on a grid of target vectors.

A run with ``conditioning.objectives`` conditions its policy on a vector of ``M`` rewards, so
"achieved vs target" becomes a question about a region of the objective space. This module
holds the pure pieces of that evaluation (no model, no Ray; tested with fakes):

* :func:`grid_targets`: a full grid of ``per_axis ** M`` target vectors spanning the bulk
  (10th to 90th percentile) of what the replay buffer achieved in each objective;
* :func:`achievable`: which targets the buffer supports, i.e. has at least ``min_count``
  samples near (in normalised units): only there is the policy expected to be calibrated,
  since those are the labels it was trained on;
* :func:`evaluate_grid`: sample, score and summarise completions for each target vector, one
  row per target (:func:`objective_row`);
* :func:`summarize_grid`: per objective the normalised calibration error over the achievable
  targets, how many targets meet the goal (:data:`CALIBRATION_GOAL`), and the Pareto front of
  the achieved means with its hypervolume next to the buffer's;
* the console output is in :mod:`online_dt.eval.objectives_table`;
* :func:`buffer_reward_vectors`: the ``[N, M]`` achieved reward vectors of a run directory's
  persisted replay buffer (:func:`online_dt.eval.source.buffer_rewards`, checked against the
  objectives).

Units: "reward units" are each objective's own (as the reward model returns them);
"normalised" units map each objective's configured ``[low, high]`` to ``[-1, 1]``
(:func:`online_dt.objectives.normalize`), so a normalised error of 0.1 is 5 % of the
objective's range whatever its scale. :mod:`online_dt.eval.run` wires these pieces to a
policy and writes ``eval/objectives.json`` and ``eval/objectives.png``.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from online_dt.config import ObjectiveConfig
from online_dt.objectives import denormalize, front_summary, normalize
from online_dt.util.metrics import distinct_n, reward_summary
from online_dt.util.pareto import pareto_front

log = logging.getLogger(__name__)

DEFAULT_GRID_POINTS = 3
"""Grid points per objective by default (``online-dt eval --grid``): ``3 ** M`` targets."""

GRID_QUANTILES = (0.1, 0.9)
"""The buffer quantiles each grid axis spans (per objective, in reward units)."""

GRID_RANGE_MARGIN = 0.1
"""Without a buffer, each axis spans ``[low + 10 %, high - 10 %]`` of the objective's range."""

ACHIEVABLE_RADIUS = 0.1
"""A target is achievable when the buffer holds samples within this L-infinity distance of it
(normalised units: 0.1 is 5 % of each objective's range) ..."""

ACHIEVABLE_MIN_COUNT = 5
"""... at least this many of them."""

CALIBRATION_GOAL = 0.1
"""The goal of multi-objective conditioning: where a target is achievable, the mean achieved
reward lies within 0.1 (normalised units) of it in every objective."""


# ---------------------------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------------------------


def _as_buffer(
    buffer_rewards: Any, objectives: Sequence[ObjectiveConfig], name: str = "buffer_rewards"
) -> np.ndarray:
    """``buffer_rewards`` as float64 ``[N, M]`` with its non-finite rows dropped (``None``:
    ``[0, M]``).

    Raises:
        ValueError: not ``[N, M]`` with ``M = len(objectives)``.
    """
    m = len(objectives)
    if buffer_rewards is None:
        return np.zeros((0, m))
    array = np.asarray(buffer_rewards, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, m))
    if array.ndim != 2 or array.shape[1] != m:
        raise ValueError(f"{name} must be [N, {m}] (one column per objective), got {array.shape}")
    return array[np.isfinite(array).all(axis=1)]


def _check_objectives(objectives: Sequence[ObjectiveConfig]) -> None:
    if len(objectives) == 0:
        raise ValueError("no objectives: this evaluation is for runs with conditioning.objectives")


def grid_targets(
    objectives: Sequence[ObjectiveConfig],
    buffer_rewards: Any | None,
    per_axis: int = DEFAULT_GRID_POINTS,
) -> list[tuple[float, ...]]:
    """A full grid of target vectors over the region the run has reached.

    Axis ``m`` holds ``per_axis`` evenly spaced values from the 10th to the 90th percentile of
    objective ``m`` over the buffer's samples (reward units; rows with a non-finite value are
    ignored). Without a buffer (``None`` or no finite row) it spans
    ``[low + 0.1 (high - low), high - 0.1 (high - low)]`` of the configured range. With
    ``per_axis = 1`` each axis is the middle of that span. The percentiles are taken per
    objective, so a grid corner may be a combination no sample reached (see
    :func:`achievable`).

    Args:
        objectives: the run's ``conditioning.objectives`` (``M >= 1``).
        buffer_rewards: float ``[N, M]`` achieved reward vectors (reward units), or ``None``.
        per_axis: grid points per objective (``>= 1``).

    Returns:
        ``per_axis ** M`` tuples of ``M`` floats (reward units), in row-major order: the last
        objective varies fastest.

    Raises:
        ValueError: no objectives, ``per_axis < 1``, or ``buffer_rewards`` is not ``[N, M]``.
    """
    _check_objectives(objectives)
    if isinstance(per_axis, bool) or not isinstance(per_axis, int) or per_axis < 1:
        raise ValueError(f"per_axis (grid points per objective) must be >= 1, got {per_axis!r}")
    points = _as_buffer(buffer_rewards, objectives)
    if len(points):
        lows, highs = np.quantile(points, GRID_QUANTILES, axis=0)
    else:
        lows = np.array([o.low + GRID_RANGE_MARGIN * (o.high - o.low) for o in objectives])
        highs = np.array([o.high - GRID_RANGE_MARGIN * (o.high - o.low) for o in objectives])
    if per_axis == 1:
        axes = [[float((lo + hi) / 2)] for lo, hi in zip(lows, highs, strict=True)]
    else:
        axes = [
            [float(v) for v in np.linspace(lo, hi, per_axis)]
            for lo, hi in zip(lows, highs, strict=True)
        ]
    return [tuple(point) for point in itertools.product(*axes)]


def achievable(
    targets: Sequence[Sequence[float]],
    buffer_rewards: Any | None,
    objectives: Sequence[ObjectiveConfig],
    radius: float = ACHIEVABLE_RADIUS,
    min_count: int = ACHIEVABLE_MIN_COUNT,
) -> list[bool]:
    """Which targets are *achievable*: where the calibration goal applies.

    A target counts as achievable when the replay buffer holds at least ``min_count`` samples
    whose achieved reward vector lies within L-infinity distance ``radius`` of it in
    normalised units (``max_m |r_m - t_m| / half_width_m <= radius``). Such samples are what
    the policy was trained on with labels near the target (hindsight relabelling), so it has
    seen that the combination can be reached; a target no sample came near (e.g. a grid
    corner trading both objectives up at once) may lie beyond the front, where missing it
    says nothing about calibration. Buffer rows with a non-finite value are ignored.

    Args:
        targets: ``T`` target vectors of ``M`` floats (reward units).
        buffer_rewards: float ``[N, M]`` achieved reward vectors (reward units), or ``None``
            (then nothing is achievable).
        objectives: the run's ``conditioning.objectives``, ``M`` of them.
        radius: the neighbourhood's half-width (normalised units, ``> 0``).
        min_count: samples needed in it (``>= 1``).

    Returns:
        ``T`` bools, in the order of ``targets``.

    Raises:
        ValueError: no objectives, a target without ``M`` finite values, ``buffer_rewards``
            not ``[N, M]``, ``radius <= 0`` or ``min_count < 1``.
    """
    _check_objectives(objectives)
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    wanted = _as_targets(targets, objectives)
    points = normalize(_as_buffer(buffer_rewards, objectives), objectives)
    if len(points) < min_count:
        return [False] * len(wanted)
    centres = normalize(wanted, objectives)
    # one target at a time: memory stays at [N, M] however many targets there are
    return [
        int((np.abs(points - c).max(axis=1) <= radius + 1e-12).sum()) >= min_count for c in centres
    ]


def _as_targets(targets: Sequence[Sequence[float]], objectives: Sequence[ObjectiveConfig]):
    """Targets as float64 ``[T, M]``.

    Raises:
        ValueError: a target is not ``M`` finite floats.
    """
    m = len(objectives)
    rows = []
    for t in targets:
        if isinstance(t, str | bytes) or not isinstance(t, Sequence | np.ndarray):
            raise ValueError(f"a target must be a vector of {m} floats, got {t!r}")
        row = np.asarray(t, dtype=np.float64).reshape(-1)
        if row.shape != (m,) or not np.isfinite(row).all():
            raise ValueError(f"a target must be a vector of {m} finite floats, got {list(row)}")
        rows.append(row)
    return np.array(rows, dtype=np.float64).reshape(len(rows), m)


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
        is_achievable: the target's :func:`achievable` flag.
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
    wanted = _as_targets([target], objectives)[0]
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
        achievable_flags: ``T`` bools (:func:`achievable`); default all ``False``.
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
    _check_objectives(objectives)
    if samples_per_target < 1:
        raise ValueError(f"samples_per_target must be >= 1, got {samples_per_target}")
    if not prompts:
        raise ValueError("no prompts to evaluate on")
    wanted = _as_targets(targets, objectives)
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
    _check_objectives(objectives)
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
    points = _as_buffer(buffer_rewards, objectives)
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


def buffer_reward_vectors(run_dir: Path | None, num_objectives: int) -> np.ndarray:
    """The achieved reward vectors of every sample persisted in ``run_dir/buffer``:
    :func:`online_dt.eval.source.buffer_rewards`, checked against the run's objectives.

    Returns:
        float64 ``[N, M]`` with ``M = num_objectives`` (reward units, the config's order;
        samples without a full vector left out); ``[0, M]`` without a run directory, buffer or
        persisted sample.

    Raises:
        BufferCorruptError: the shards do not cover the persisted ids.
        EvalError: the buffer holds one reward per sample, or vectors of another length than
            ``num_objectives`` (the config does not describe the run that filled the buffer).
    """
    from online_dt.eval.source import EvalError, buffer_rewards

    rewards = buffer_rewards(run_dir)
    if rewards.size == 0:
        return np.zeros((0, num_objectives))
    if rewards.ndim != 2 or rewards.shape[1] != num_objectives:
        held = "one reward" if rewards.ndim == 1 else f"{rewards.shape[1]} rewards"
        raise EvalError(
            f"the replay buffer of {run_dir} holds {held} per sample, but the config names "
            f"{num_objectives} objectives (conditioning.objectives)"
        )
    return rewards

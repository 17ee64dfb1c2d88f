"""Several-objective eval targets: target grid, achievability, buffer reward vectors, input checks.

A run with ``conditioning.objectives`` conditions its policy on a vector of ``M`` rewards, so
"achieved vs target" becomes a question about a region of the objective space, evaluated on a
grid of target vectors. The pure pieces of that evaluation (no model, no Ray; tested with fakes)
are this module's target side and the rows and summary built on it:

* :func:`grid_targets`: a full grid of ``per_axis ** M`` target vectors spanning the bulk
  (10th to 90th percentile) of what the replay buffer achieved in each objective;
* :func:`achievable`: which targets the buffer supports, i.e. has at least ``min_count``
  samples near (in normalised units): only there is the policy expected to be calibrated,
  since those are the labels it was trained on;
* :func:`~online_dt.eval.objectives_rows.evaluate_grid`: sample, score and summarise
  completions for each target vector, one row per target
  (:func:`~online_dt.eval.objectives_rows.objective_row`);
* :func:`~online_dt.eval.objectives_rows.summarize_grid`: per objective the normalised
  calibration error over the achievable targets, how many targets meet the goal
  (:data:`CALIBRATION_GOAL`), and the Pareto front of the achieved means with its hypervolume
  next to the buffer's;
* the console output is in :mod:`online_dt.eval.objectives_table`;
* :func:`buffer_reward_vectors`: the ``[N, M]`` achieved reward vectors of a run directory's
  persisted replay buffer (:func:`online_dt.eval.source.buffer_rewards`, checked against the
  objectives);
* input checks, also used by :mod:`online_dt.eval.objectives_rows`: :func:`check_objectives`,
  :func:`as_buffer` (the buffer's reward vectors, non-finite rows dropped) and :func:`as_targets`.

Units: "reward units" are each objective's own (as the reward model returns them);
"normalised" units map each objective's configured ``[low, high]`` to ``[-1, 1]``
(:func:`online_dt.objectives.normalize`), so a normalised error of 0.1 is 5 % of the
objective's range whatever its scale. :mod:`online_dt.eval.run_objectives` wires these
pieces to a policy and writes ``eval/objectives.json`` and ``eval/objectives.png``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from online_dt.config import ObjectiveConfig
from online_dt.objectives import normalize

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


def as_buffer(
    buffer_rewards: Any, objectives: Sequence[ObjectiveConfig], name: str = "buffer_rewards"
) -> np.ndarray:
    """``buffer_rewards`` as float64 ``[N, M]`` with its non-finite rows dropped (``None``:
    ``[0, M]``).

    Args:
        buffer_rewards: achieved reward vectors, ``[N, M]`` array-like (reward units, the
            config's order), or ``None``.
        objectives: the run's ``conditioning.objectives`` (``M`` of them).
        name: what to call ``buffer_rewards`` in the error message.

    Returns:
        float64 ``[N', M]`` (reward units), the rows with every value finite.

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


def check_objectives(objectives: Sequence[ObjectiveConfig]) -> None:
    """Check that there is at least one objective to evaluate.

    Args:
        objectives: the run's ``conditioning.objectives``.

    Raises:
        ValueError: ``objectives`` is empty (a run with a single reward).
    """
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
    check_objectives(objectives)
    if isinstance(per_axis, bool) or not isinstance(per_axis, int) or per_axis < 1:
        raise ValueError(f"per_axis (grid points per objective) must be >= 1, got {per_axis!r}")
    points = as_buffer(buffer_rewards, objectives)
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
    check_objectives(objectives)
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    wanted = as_targets(targets, objectives)
    points = normalize(as_buffer(buffer_rewards, objectives), objectives)
    if len(points) < min_count:
        return [False] * len(wanted)
    centres = normalize(wanted, objectives)
    # one target at a time: memory stays at [N, M] however many targets there are
    return [
        int((np.abs(points - c).max(axis=1) <= radius + 1e-12).sum()) >= min_count for c in centres
    ]


def as_targets(targets: Sequence[Sequence[float]], objectives: Sequence[ObjectiveConfig]):
    """Targets as float64 ``[T, M]``.

    Args:
        targets: ``T`` target vectors (reward units, the config's order).
        objectives: the run's ``conditioning.objectives`` (``M`` of them).

    Returns:
        float64 ``[T, M]`` (reward units; ``[0, M]`` without targets).

    Raises:
        ValueError: a target is not ``M`` finite floats (or is a string).
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

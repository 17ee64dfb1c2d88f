"""The ``pareto`` schedule: per-prompt target vectors on the replay buffer's Pareto front.

A run with several objectives (``conditioning.objectives``) asks each prompt for a vector of
targets, one per objective. Following Rewards-in-Context (Yang et al., ICML 2024, arXiv
2402.10207), a preference vector ``w`` on the probability simplex is mapped to a target on the
empirical Pareto front of the rewards seen so far; here, as issue #14 of this project states
the mapping, the target is the front point that maximises the preference-weighted sum of
normalised rewards. Each iteration:

1. the buffer's achieved reward vectors are normalised per objective to ``[-1, 1]`` over
   ``[low, high]`` (:class:`~online_dt.config.ObjectiveConfig`);
2. the ``P`` prompts get ``P`` preference vectors spread evenly over the simplex
   (:func:`~online_dt.util.pareto.simplex_grid`), in an order shuffled by the iteration's
   seed, so a prompt is not tied to one trade-off;
3. each preference picks the front point that maximises ``w . u`` (``u``: normalised rewards;
   ``schedule.front_mapping: weighted_sum``) or, with ``chebyshev``, the point where the ray
   from ``(-1, ..., -1)`` along ``w`` leaves the dominated region, and steps ``front_step``
   beyond it along ``w / |w|``, the step that pushes the front outwards (upside-down RL and
   ODT ask above what the data shows; a step, not a jump: targets too far above the data
   hamper online fine-tuning, arXiv 2410.24108);
4. each objective gets uniform noise in ``± front_spread`` (exploration along the front),
   and the target is clamped to ``[low, high]``.

With an empty buffer (the first iteration) the front is not known yet and the preference maps
linearly onto the ranges: ``u_m = 2 w_m - 1`` (a one-hot preference asks for the top of its
objective and the bottom of the others).

Everything random comes from generators seeded by ``(schedule.seed, iteration, stream)``, so
the :class:`~online_dt.loop.schedule.ScheduleState` (its iteration) is enough to resume.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from online_dt.config import ObjectiveConfig, ScheduleConfig
from online_dt.loop.schedule import ScheduleState
from online_dt.objectives import denormalize, normalize
from online_dt.util.pareto import chebyshev_point, pareto_front, preferred_point, simplex_grid
from online_dt.util.seeds import derived_rng

STREAM_PREFERENCES = 3
"""RNG stream of the preferences' order (the other schedules use 0 and 1, sampling 2)."""
STREAM_FRONT_SPREAD = 4
"""RNG stream of the per-objective noise."""


def front_targets(
    cfg: ScheduleConfig,
    objectives: Sequence[ObjectiveConfig],
    state: ScheduleState,
    rewards: Sequence[Sequence[float]] | np.ndarray,
    count: int,
) -> tuple[list[tuple[float, ...]], ScheduleState]:
    """The target vectors of one iteration's ``count`` prompts, and the state after it.

    Args:
        cfg: the schedule config (``front_step``, ``front_spread``, ``seed``).
        objectives: the run's objectives (``M`` of them), in order.
        state: the schedule state (its ``iteration`` seeds the draws).
        rewards: the replay buffer's achieved reward vectors, ``[N, M]`` reward units
            (``N`` may be 0).
        count: number of prompts, >= 0.

    Returns:
        ``count`` tuples of ``M`` targets (reward units, each within its objective's
        ``[low, high]``), and the state with ``iteration + 1``.

    Raises:
        ValueError: ``rewards`` is not ``[N, M]``, ``count < 0``, or ``state.seed`` differs
            from ``cfg.seed``.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if state.seed is not None and state.seed != cfg.seed:
        raise ValueError(
            f"schedule state was produced with seed {state.seed}, config has seed {cfg.seed}"
        )
    m = len(objectives)
    points = np.asarray(rewards, dtype=np.float64) if len(rewards) else None
    if points is not None and (points.ndim != 2 or points.shape[1] != m):
        raise ValueError(f"rewards must be [N, {m}], got {np.shape(rewards)}")
    i = state.iteration
    after = ScheduleState(iteration=i + 1, previous_target=None, seed=cfg.seed)
    if count == 0:
        return [], after
    order = derived_rng(cfg.seed, i, STREAM_PREFERENCES).permutation(count)
    preferences = simplex_grid(m, count)[order]
    if points is None or len(points) == 0:
        chosen = 2.0 * preferences - 1.0
    else:
        front = pareto_front(normalize(points, objectives))
        low = np.full(m, -1.0)
        pick = {
            "weighted_sum": lambda w: preferred_point(front, w),
            "chebyshev": lambda w: chebyshev_point(front, w, low),
        }[cfg.front_mapping]
        chosen = np.stack([front[pick(w)] for w in preferences])
        directions = preferences / np.linalg.norm(preferences, axis=1, keepdims=True)
        chosen = chosen + cfg.front_step * directions
    if cfg.front_spread > 0:
        noise = derived_rng(cfg.seed, i, STREAM_FRONT_SPREAD).uniform(
            -cfg.front_spread, cfg.front_spread, size=chosen.shape
        )
        chosen = chosen + noise
    targets = denormalize(np.clip(chosen, -1.0, 1.0), objectives)
    return [tuple(float(x) for x in row) for row in targets], after


def mean_target(targets: Sequence[Sequence[float]]) -> tuple[float, ...]:
    """The per-objective mean of an iteration's target vectors (what its record shows)."""
    return tuple(float(x) for x in np.mean(np.asarray(targets, dtype=np.float64), axis=0))

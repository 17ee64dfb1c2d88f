"""Several objectives: normalised reward vectors and the Pareto front of a set of them.

A run with ``conditioning.objectives`` scores every sample with ``M`` named rewards. Each
objective's ``[low, high]`` (:class:`~online_dt.config.ObjectiveConfig`) maps to ``[-1, 1]``
(:func:`normalize`); the front and its hypervolume are measured in those units, with the
reference point at every objective's ``low``, so figures of different objectives and runs
compare (the hypervolume is at most ``2 ** M``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from online_dt.config import ObjectiveConfig
from online_dt.util.pareto import hypervolume, pareto_front


def normalize(rewards: Any, objectives: Sequence[ObjectiveConfig]) -> np.ndarray:
    """Rewards ``[N, M]`` (reward units) to normalised units: ``(r - centre) / half_width``
    per objective, so each ``[low, high]`` maps to ``[-1, 1]`` (values outside the range map
    outside ``[-1, 1]``)."""
    centre = np.array([o.center for o in objectives])
    half = np.array([o.half_width for o in objectives])
    return (np.asarray(rewards, dtype=np.float64) - centre) / half


def denormalize(values: Any, objectives: Sequence[ObjectiveConfig]) -> np.ndarray:
    """Inverse of :func:`normalize`: normalised ``[N, M]`` back to reward units."""
    centre = np.array([o.center for o in objectives])
    half = np.array([o.half_width for o in objectives])
    return np.asarray(values, dtype=np.float64) * half + centre


def front_summary(rewards: Any, objectives: Sequence[ObjectiveConfig]) -> dict[str, Any]:
    """The empirical Pareto front of reward vectors ``[N, M]`` (reward units).

    Returns:
        ``front_size``: how many distinct points are on the front; ``front_hypervolume``: the
        hypervolume of the normalised points against the reference point ``(-1, ..., -1)``
        (every objective's ``low``), in ``[0, 2 ** M]``; points below a ``low`` count only
        in the objectives where they are above it, i.e. not at all (a box needs every
        coordinate above the reference).
    """
    m = len(objectives)
    points = np.asarray(rewards, dtype=np.float64).reshape(-1, m)
    if len(points) == 0:
        return {"front_size": 0, "front_hypervolume": 0.0}
    front = pareto_front(normalize(points, objectives))
    return {"front_size": len(front), "front_hypervolume": hypervolume(front, [-1.0] * m)}

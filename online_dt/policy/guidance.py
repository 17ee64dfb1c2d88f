"""The reference mixture of guided sampling: which rewards, with which prior weights.

Guided sampling against the policy's own mixture over rewards
(:meth:`~online_dt.policy.policy.RewardConditionedPolicy.generate`'s ``guidance_mixture``)
contrasts the conditional at the target with ``sum_k pi_k p(y | r_k)``. That mixture is the
policy's unconditional model when ``pi`` is the distribution of rewards it was trained on:
the replay buffer's. Then ``p(y | t) / p_mix(y)`` is ``p(t | y) / p(t)`` and guidance
sharpens the conditional around its target. With a flat prior over a base model whose rewards
pile up at two modes, the middle rewards get too much weight in the denominator, and guidance
pushes targets between the modes towards them (docs/method.md, round 7).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

GUIDANCE_POINTS = 5
"""Rewards in a default guidance mixture: evenly over the buffer's range. On the embedded task
five calibrated as well as nine at about 0.6x the sampling cost (6 rows per sample against 10;
docs/method.md, round 7)."""


def even_grid(rewards: Sequence[float] | np.ndarray, points: int = GUIDANCE_POINTS) -> list[float]:
    """``points`` rewards evenly from the lowest of ``rewards`` to the highest (reward units).

    Raises:
        ValueError: ``rewards`` is empty or ``points < 2``.
    """
    values = np.asarray(rewards, dtype=np.float64)
    if values.size == 0 or points < 2:
        raise ValueError(f"need rewards and points >= 2, got {values.size} rewards, {points}")
    return [float(x) for x in np.linspace(values.min(), values.max(), points)]


def buffer_prior(rewards: Sequence[float] | np.ndarray, grid: Sequence[float]) -> list[float]:
    """The mixture's prior weights from the rewards the policy was trained on: the fraction of
    ``rewards`` nearest to each grid reward (ties to the lower one).

    Args:
        rewards: N achieved rewards (reward units), e.g. the replay buffer's.
        grid: K mixture rewards, ascending.

    Returns:
        K fractions in ``[0, 1]`` summing to 1 (a grid reward that no reward is nearest to
        gets 0 and drops out of the mixture).

    Raises:
        ValueError: ``rewards`` or ``grid`` is empty, or ``grid`` is not ascending.
    """
    values = np.asarray(rewards, dtype=np.float64)
    centres = np.asarray(grid, dtype=np.float64)
    if values.size == 0 or centres.size == 0:
        raise ValueError("buffer_prior needs rewards and a grid")
    if np.any(np.diff(centres) <= 0):
        raise ValueError(f"the grid must be strictly ascending, got {list(grid)}")
    nearest = np.abs(values[:, None] - centres[None, :]).argmin(1)
    counts = np.bincount(nearest, minlength=centres.size)
    return [float(c) for c in counts / counts.sum()]

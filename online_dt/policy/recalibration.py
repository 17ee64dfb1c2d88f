"""Recalibration: which conditioning value to ask the policy for, to achieve a target reward.

A reward-conditioned policy asked for ``c`` achieves a mean reward ``a(c)`` that is not ``c``:
on the embedded task the conditional is blurred towards the rewards the buffer holds most of,
so asked for 0 the default policy gives about 0.1 and asked for -0.8 about -0.65
(docs/method.md). Recalibration measures ``a`` at a grid of conditioning values on training
prompts, fits it as a non-decreasing function (isotonic regression over the grid means,
weighted by their sample counts), and inverts it: to achieve ``t``, ask for the conditioning
values around the first crossing of ``t``. This is the recalibration of a regressor's output
by isotonic regression (Zadrozny and Elkan 2002; Kuleshov et al. 2018), applied to the
input of a conditional generator.

Two ways to use the bracket ``c_lo < c_hi`` with ``a(c_lo) < t <= a(c_hi)``:

- ``mix`` (the default): ask a share ``p = (t - a(c_lo)) / (a(c_hi) - a(c_lo))`` of the
  samples for ``c_hi`` and the rest for ``c_lo``. The expected achieved reward is then exactly
  the interpolation of the two measured means, with no assumption about ``a`` between grid
  points. In token mode, where every value in a bin is the same token, it is the only way to
  ask for a reward between two tokens' means;
- ``interpolate``: ask every sample for ``c_lo + p (c_hi - c_lo)``. It assumes ``a`` is linear
  between grid points. On the embedded task ``a`` bends near the ends, and with grid values
  0.5 apart this overshot target 0.8 by 0.03–0.05 in three seeds, where ``mix`` was within
  0.004 (docs/method.md, round 8).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.optimize import isotonic_regression

Strategy = Literal["interpolate", "mix"]
"""How a target between two grid points is asked for (see the module docstring)."""

RECALIBRATION_POINTS = 5
"""Conditioning values evenly over the rewards the policy was trained on, in a default scalar
grid (:func:`default_grid`), before one more step beyond each end."""


def default_grid(
    rewards: Sequence[float] | np.ndarray, points: int = RECALIBRATION_POINTS
) -> list[float]:
    """``points`` values evenly from the lowest of ``rewards`` to the highest, plus one step
    beyond each end (reward units): a conditional blurred towards the middle of its training
    rewards reaches its extreme rewards only when asked for more than them. For VADER's
    ``[-1, 1]``: ``-1.5, -1, -0.5, 0, 0.5, 1, 1.5``. On the embedded task 512 samples at each
    of -1, -0.5, ..., 1 calibrated as well as 256 at each of 9 values 0.25 apart, and adding
    -1.5 reached -0.8 where -1 did not (docs/method.md, round 8).

    Raises:
        ValueError: ``rewards`` is empty or spans no range, or ``points < 2``.
    """
    values = np.asarray(rewards, dtype=np.float64)
    if values.size == 0 or points < 2 or not values.max() > values.min():
        raise ValueError(
            f"a default recalibration grid needs rewards spanning a range and points >= 2, "
            f"got {values.size} rewards, {points} points"
        )
    lo, hi = float(values.min()), float(values.max())
    step = (hi - lo) / (points - 1)
    return [lo + step * k for k in range(-1, points + 1)]


def without_best_command(grid: Sequence[float], reward_max: float) -> list[float]:
    """``grid`` without its values above ``reward_max`` (reward units), for a policy with
    ``conditioning.best_command``: there a conditioning value above ``reward_max`` asks for the
    best command, not for a reward, so it has no place on a map from conditioning values to
    the rewards they achieve. For VADER's default grid (:func:`default_grid`) that drops the
    step beyond the top, 1.5.

    Raises:
        ValueError: fewer than two values remain.
    """
    kept = [float(c) for c in grid if c <= reward_max]
    if len(kept) < 2:
        raise ValueError(
            f"a recalibration grid needs two values at or below conditioning.reward_max "
            f"({reward_max:g}; above it the best command is asked for), got {list(grid)}"
        )
    return kept


def conditioning_grid(conditioner: Any, scalar_grid: Sequence[float]) -> list[float]:
    """The conditioning values to measure for ``conditioner``
    (:class:`~online_dt.policy.conditioner.RewardConditioner`, one reward): ``scalar_grid``
    sorted in scalar mode; in token mode the midpoint of each reward bin, one value per token,
    the outer bins' open ends replaced by the range of rewards the bins were last cut from
    (fixed bins, which have no such range: by the neighbouring bin's width).

    Raises:
        ValueError: fewer than two grid values.
    """
    binning, span = conditioner.binning, conditioner.bin_range
    if binning is None:
        grid = sorted({float(c) for c in scalar_grid})
    else:
        bounds = [list(binning.bounds(k)) for k in range(binning.num_bins)]
        if len(bounds) < 2:
            raise ValueError(f"recalibration needs at least two reward bins, got {len(bounds)}")
        for end, inner, side in ((bounds[0], bounds[1], 0), (bounds[-1], bounds[-2], 1)):
            if math.isinf(end[side]):  # the open end: the cut range, else the neighbour's width
                width = inner[1] - inner[0]
                edge = end[1 - side]
                fallback = edge - width if side == 0 else edge + width
                end[side] = span[side] if span is not None else fallback
        grid = [float((low + high) / 2) for low, high in bounds]
    if len(grid) < 2:
        raise ValueError(f"recalibration needs at least two conditioning values, got {grid}")
    return grid


@dataclass(frozen=True)
class Bracket:
    """Where a target falls on a :class:`Recalibration`.

    Attributes:
        low, high: the two conditioning values (reward units of the policy's input),
            ``low <= high``; equal when the target is outside the measured range.
        share_high: the share of samples to ask for ``high`` under ``mix``, in ``[0, 1]``;
            the interpolation weight under ``interpolate``.
        reachable: whether the target lies within the fitted achieved rewards; if not, the
            bracket is the grid value whose measured mean came nearest to the target, and
            the target will be missed.
    """

    low: float
    high: float
    share_high: float
    reachable: bool

    def interpolated(self) -> float:
        """The one conditioning value ``low + share_high (high - low)``."""
        return self.low + self.share_high * (self.high - self.low)


@dataclass(frozen=True)
class Recalibration:
    """A fitted map between conditioning values and the mean reward they achieve.

    Attributes:
        conditioning: K grid values, strictly ascending (reward units of the policy's input).
        measured: K mean achieved rewards of the samples asked for each grid value.
        achieved: K isotonic fits of ``measured`` (non-decreasing), weighted by ``counts``.
        counts: K sample counts (>= 1).
    """

    conditioning: tuple[float, ...]
    measured: tuple[float, ...]
    achieved: tuple[float, ...]
    counts: tuple[int, ...]

    @classmethod
    def fit(cls, conditioning: Sequence[float], achieved: Sequence[float]) -> Recalibration:
        """Fit from N samples: the conditioning value each was asked for and the reward it
        achieved (reward units). Samples are grouped by conditioning value (exact equality).

        Raises:
            ValueError: lengths differ, fewer than two distinct conditioning values, or a
                non-finite value.
        """
        c = np.asarray(conditioning, dtype=np.float64)
        r = np.asarray(achieved, dtype=np.float64)
        if c.shape != r.shape or c.ndim != 1:
            raise ValueError(
                f"conditioning and achieved must be aligned 1-D, got {c.shape}, {r.shape}"
            )
        if not (np.isfinite(c).all() and np.isfinite(r).all()):
            raise ValueError("recalibration samples must be finite")
        grid, inverse, counts = np.unique(c, return_inverse=True, return_counts=True)
        if grid.size < 2:
            raise ValueError(f"need at least two distinct conditioning values, got {grid.size}")
        means = np.bincount(inverse, weights=r) / counts
        fitted = isotonic_regression(means, weights=counts.astype(np.float64), increasing=True).x
        return cls(
            conditioning=tuple(float(x) for x in grid),
            measured=tuple(float(x) for x in means),
            achieved=tuple(float(x) for x in fitted),
            counts=tuple(int(x) for x in counts),
        )

    def bracket(self, target: float) -> Bracket:
        """The two grid values around the first point where the fitted curve reaches
        ``target`` (reward units).

        Below the curve's lowest value or above its highest, the target is marked unreachable
        and the bracket is the one grid value whose *measured* mean came nearest to it (the
        end-most of ties). That is the grid's end when the measured means rise there, but not
        when the fit pooled a violator at the end: on the embedded task in token mode the
        lowest token, trained on few samples, achieved -0.72 and the next one -0.79, the fit
        pooled both at -0.75, and asking -0.8 for the end token gave -0.71 where the next
        token gave -0.79 (docs/method.md, round 9)."""
        a = np.asarray(self.achieved)
        if target < a[0] or target > a[-1]:
            distance = np.abs(np.asarray(self.measured) - target)
            order = distance if target < a[0] else distance[::-1]
            k = int(np.argmin(order))
            value = self.conditioning[k] if target < a[0] else self.conditioning[-1 - k]
            return Bracket(value, value, 0.0, False)
        k = int(np.argmax(a >= target))
        if k == 0:
            return Bracket(self.conditioning[0], self.conditioning[0], 0.0, True)
        share = (target - a[k - 1]) / (a[k] - a[k - 1])
        return Bracket(self.conditioning[k - 1], self.conditioning[k], float(share), True)

    def conditionings(
        self, target: float, n: int, strategy: Strategy, seed: int = 0
    ) -> list[float]:
        """The conditioning value to ask each of ``n`` samples for, to achieve ``target``.

        ``interpolate``: ``n`` copies of :meth:`Bracket.interpolated`. ``mix``:
        ``round(share_high * n)`` samples, chosen by a permutation seeded with ``seed``, ask
        for ``high`` and the rest for ``low`` (stratified, so the share is exact up to
        rounding).

        Raises:
            ValueError: ``n < 0`` or an unknown strategy.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        b = self.bracket(target)
        if strategy == "interpolate":
            return [b.interpolated()] * n
        if strategy != "mix":
            raise ValueError(f"unknown strategy {strategy!r}: use 'interpolate' or 'mix'")
        high = np.zeros(n, dtype=bool)
        high[: round(b.share_high * n)] = True
        np.random.default_rng(seed).shuffle(high)
        return [b.high if h else b.low for h in high]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values: the four tuples as lists."""
        return {k: list(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recalibration:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: missing keys, lengths differ, the grid is not strictly ascending or the
                fit decreases.
        """
        try:
            fields = [tuple(data[k]) for k in ("conditioning", "measured", "achieved", "counts")]
        except KeyError as e:
            raise ValueError(f"recalibration is missing {e.args[0]!r}") from e
        if len({len(f) for f in fields}) != 1 or len(fields[0]) < 2:
            raise ValueError("recalibration fields must have one equal length >= 2")
        if np.any(np.diff(fields[0]) <= 0) or np.any(np.diff(fields[2]) < 0):
            raise ValueError("recalibration grid must ascend and its fit must not decrease")
        c, m, a, n = fields
        return cls(
            tuple(map(float, c)), tuple(map(float, m)), tuple(map(float, a)), tuple(map(int, n))
        )


def recalibrated_asks(
    fit: Recalibration,
    target: float,
    n: int,
    strategy: Strategy,
    seed: int = 0,
    best_above: float | None = None,
) -> list[float]:
    """:meth:`Recalibration.conditionings` of ``target``, except for a target above
    ``best_above`` (``conditioning.reward_max`` of a policy with ``best_command``), which asks
    for the best command and is passed through ``n`` times unchanged.

    Raises:
        ValueError: as :meth:`Recalibration.conditionings`.
    """
    if best_above is not None and target > best_above:
        return [float(target)] * n
    return fit.conditionings(target, n, strategy, seed)

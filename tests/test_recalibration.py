"""online_dt.policy.recalibration: the isotonic fit, its inversion, and both strategies."""

from __future__ import annotations

import numpy as np
import pytest

from online_dt.policy.recalibration import (
    Bracket,
    Recalibration,
    default_grid,
    recalibrated_asks,
    without_best_command,
)


def _fit(points: dict[float, list[float]]) -> Recalibration:
    conditioning = [c for c, rs in points.items() for _ in rs]
    achieved = [r for rs in points.values() for r in rs]
    return Recalibration.fit(conditioning, achieved)


def test_fit_groups_by_conditioning_and_keeps_monotone_means():
    recal = _fit({0.0: [0.1, 0.3], -1.0: [-0.6, -0.4], 1.0: [0.6]})
    assert recal.conditioning == (-1.0, 0.0, 1.0)
    assert recal.measured == pytest.approx((-0.5, 0.2, 0.6))
    assert recal.achieved == pytest.approx((-0.5, 0.2, 0.6))
    assert recal.counts == (2, 2, 1)


def test_fit_pools_violators_weighted_by_counts():
    # 0.5 on three samples then 0.3 on one: the weighted mean 0.45 for both
    recal = _fit({0.0: [0.0], 0.5: [0.5, 0.5, 0.5], 1.0: [0.3], 1.5: [0.9]})
    assert recal.measured == pytest.approx((0.0, 0.5, 0.3, 0.9))
    assert recal.achieved == pytest.approx((0.0, 0.45, 0.45, 0.9))


def test_bracket_interpolates_between_the_first_crossing():
    recal = _fit({-1.0: [-0.5], 0.0: [0.2], 1.0: [0.6]})
    b = recal.bracket(0.0)
    assert (b.low, b.high, b.reachable) == (-1.0, 0.0, True)
    assert b.share_high == pytest.approx(0.5 / 0.7)
    assert b.interpolated() == pytest.approx(-1.0 + 0.5 / 0.7)
    assert recal.bracket(0.6) == Bracket(0.0, 1.0, pytest.approx(1.0), True)
    # on a flat stretch the first grid value reaching the target is asked for
    flat = _fit({0.0: [0.0], 0.5: [0.4], 1.0: [0.4], 1.5: [0.9]})
    assert flat.bracket(0.4).interpolated() == pytest.approx(0.5)


def test_targets_outside_the_fit_are_the_grid_ends_and_unreachable():
    recal = _fit({-1.0: [-0.5], 1.0: [0.6]})
    assert recal.bracket(-0.8) == Bracket(-1.0, -1.0, 0.0, False)
    assert recal.bracket(0.9) == Bracket(1.0, 1.0, 0.0, False)
    assert recal.bracket(-0.5) == Bracket(-1.0, -1.0, 0.0, True)


def test_unreachable_targets_ask_the_value_whose_measured_mean_came_nearest():
    # the lowest value's mean (-0.72) violates the order and is pooled with the next (-0.79)
    recal = _fit({-1.0: [-0.72], -0.9: [-0.79], 0.0: [0.1], 1.0: [0.7], 1.1: [0.65]})
    assert recal.achieved[:2] == pytest.approx((-0.755, -0.755))
    assert recal.bracket(-0.8) == Bracket(-0.9, -0.9, 0.0, False)
    assert recal.bracket(-0.76) == Bracket(-0.9, -0.9, 0.0, False)
    # the same at the top: 1.0 measured 0.7, the pooled end 0.675
    assert recal.bracket(0.9) == Bracket(1.0, 1.0, 0.0, False)
    # ties go to the end of the grid
    tie = _fit({0.0: [0.5], 1.0: [0.5], 2.0: [0.9]})
    assert tie.bracket(0.2) == Bracket(0.0, 0.0, 0.0, False)


def test_mix_asks_the_exact_share_for_the_upper_value():
    recal = _fit({0.0: [0.0], 1.0: [1.0]})
    mixed = recal.conditionings(0.3, 10, "mix", seed=1)
    assert sorted(mixed) == [0.0] * 7 + [1.0] * 3
    assert mixed == recal.conditionings(0.3, 10, "mix", seed=1)  # seeded
    assert recal.conditionings(0.3, 3, "interpolate") == [pytest.approx(0.3)] * 3
    with pytest.raises(ValueError, match="strategy"):
        recal.conditionings(0.3, 3, "nearest")  # type: ignore[arg-type]


def test_recalibration_hits_targets_of_a_biased_noisy_policy():
    """A policy that achieves 0.1 + 0.6 c (plus noise) asked for c: the recalibrated asks land
    within 0.02 of every target in the fitted range; asking for 0.8 itself misses by 0.22."""
    rng = np.random.default_rng(0)
    grid = np.linspace(-1, 1, 9)

    def achieved(c: float | np.ndarray, n: int) -> np.ndarray:
        return 0.1 + 0.6 * np.asarray(c) + rng.normal(0, 0.3, n)

    conditioning = np.repeat(grid, 2000)
    recal = Recalibration.fit(conditioning, achieved(conditioning, conditioning.size))
    for target in (-0.4, 0.0, 0.4):
        asked = np.asarray(recal.conditionings(target, 4000, "interpolate"))
        assert abs(achieved(asked, asked.size).mean() - target) < 0.02
        mixed = np.asarray(recal.conditionings(target, 4000, "mix", seed=3))
        assert abs(achieved(mixed, mixed.size).mean() - target) < 0.02
    assert abs(achieved(np.full(4000, 0.8), 4000).mean() - 0.8) > 0.2  # uncalibrated


def test_round_trip_and_refusals():
    recal = _fit({-1.0: [-0.5], 0.0: [0.2], 1.0: [0.6]})
    assert Recalibration.from_dict(recal.to_dict()) == recal
    with pytest.raises(ValueError, match="missing 'counts'"):
        Recalibration.from_dict({k: v for k, v in recal.to_dict().items() if k != "counts"})
    bad = recal.to_dict() | {"achieved": [0.6, 0.2, -0.5]}
    with pytest.raises(ValueError, match="must not decrease"):
        Recalibration.from_dict(bad)
    with pytest.raises(ValueError, match="two distinct"):
        Recalibration.fit([0.5, 0.5], [0.1, 0.2])
    with pytest.raises(ValueError, match="aligned"):
        Recalibration.fit([0.0, 1.0], [0.1])
    with pytest.raises(ValueError, match="finite"):
        Recalibration.fit([0.0, 1.0], [0.1, float("nan")])
    with pytest.raises(ValueError, match="n must be"):
        recal.conditionings(0.0, -1, "mix")


def test_conditioning_grid_scalar_and_token_mode():
    from types import SimpleNamespace

    from online_dt.policy.normalization import RewardBinning
    from online_dt.policy.recalibration import conditioning_grid

    scalar = SimpleNamespace(binning=None, bin_range=None)
    assert conditioning_grid(scalar, [0.5, -1.0, 0.5]) == [-1.0, 0.5]
    with pytest.raises(ValueError, match="two conditioning values"):
        conditioning_grid(scalar, [0.5])
    # quantile bins: the open ends closed by the rewards they were cut from
    cut = SimpleNamespace(binning=RewardBinning([-0.2, 0.4]), bin_range=(-0.9, 0.8))
    assert conditioning_grid(cut, []) == pytest.approx([-0.55, 0.1, 0.6])
    # fixed bins have no range: the open ends mirror the neighbouring bin's width
    fixed = SimpleNamespace(binning=RewardBinning.evenly(-1.0, 1.0, 4), bin_range=None)
    assert conditioning_grid(fixed, []) == pytest.approx([-0.75, -0.25, 0.25, 0.75])


def test_default_grid_steps_beyond_the_trained_rewards():
    from online_dt.policy.recalibration import default_grid

    assert default_grid([0.2, -1.0, 1.0]) == pytest.approx([-1.5, -1, -0.5, 0, 0.5, 1, 1.5])
    assert default_grid([0.0, 3.0], points=4) == pytest.approx([-1.0, 0, 1, 2, 3, 4])
    for bad in ([], [0.5, 0.5]):
        with pytest.raises(ValueError, match="spanning a range"):
            default_grid(bad)


def test_a_best_command_policy_is_recalibrated_below_reward_max_only():
    grid = default_grid([-0.99, 0.99])
    assert max(grid) > 1.0
    kept = without_best_command(grid, 1.0)
    assert kept == [c for c in grid if c <= 1.0] and len(kept) == len(grid) - 1
    with pytest.raises(ValueError, match="two values at or below"):
        without_best_command([0.5, 1.5, 2.0], 1.0)
    fit = Recalibration.fit([-1.0, 0.0, 1.0], [-0.5, 0.0, 0.5])
    assert recalibrated_asks(fit, 2.0, 3, "interpolate", best_above=1.0) == [2.0] * 3
    assert recalibrated_asks(fit, 0.25, 2, "interpolate", best_above=1.0) == [0.5, 0.5]
    assert recalibrated_asks(fit, 2.0, 1, "interpolate") == [1.0], "no best command: the end"

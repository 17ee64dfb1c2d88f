"""Tests for online_dt.util.pareto: fronts, hypervolume, preference grids, preferred points."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from online_dt.util.pareto import (
    chebyshev_point,
    hypervolume,
    pareto_front,
    pareto_front_mask,
    preferred_point,
    simplex_grid,
)


def brute_front_mask(points: np.ndarray) -> np.ndarray:
    """The definition, pair by pair, in plain Python."""
    rows = [tuple(float(v) for v in row) for row in points]
    mask = []
    for p in rows:
        dominated = any(
            all(a >= b for a, b in zip(q, p, strict=True))
            and any(a > b for a, b in zip(q, p, strict=True))
            for q in rows
        )
        mask.append(not dominated)
    return np.array(mask, dtype=bool)


def row_loop_front_mask(points: np.ndarray) -> np.ndarray:
    """The definition, one point at a time against all the others (for the larger sets)."""
    return np.array(
        [not ((points >= p).all(axis=1) & (points > p).any(axis=1)).any() for p in points]
    )


def grid_hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Exact hypervolume by coordinate compression: sum the grid cells whose upper corner is
    dominated by some point (each cell is either wholly inside the union or wholly outside)."""
    above = points[(points > reference).all(axis=1)]
    if len(above) == 0:
        return 0.0
    axes = [np.unique(np.r_[reference[m], above[:, m]]) for m in range(points.shape[1])]
    total = 0.0
    for cell in itertools.product(*(range(1, len(axis)) for axis in axes)):
        upper = np.array([axes[m][i] for m, i in enumerate(cell)])
        if (above >= upper).all(axis=1).any():
            total += float(np.prod([axes[m][i] - axes[m][i - 1] for m, i in enumerate(cell)]))
    return total


def monte_carlo_hypervolume(
    points: np.ndarray, reference: np.ndarray, samples: int, seed: int
) -> float:
    rng = np.random.default_rng(seed)
    upper = points.max(axis=0)
    box = float(np.prod(upper - reference))
    hits = 0
    for start in range(0, samples, 20_000):
        size = min(20_000, samples - start)
        draws = reference + rng.random((size, points.shape[1])) * (upper - reference)
        hits += int((points[None, :, :] >= draws[:, None, :]).all(axis=2).any(axis=1).sum())
    return box * hits / samples


# --- pareto_front_mask / pareto_front -------------------------------------------------------


@pytest.mark.parametrize("objectives", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_front_mask_matches_brute_force(objectives: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Rounding to one decimal makes many ties and exact duplicates.
    points = np.round(rng.random((150, objectives)), 1)
    points = np.concatenate([points, points[:20]])  # explicit duplicates too
    np.testing.assert_array_equal(pareto_front_mask(points), brute_front_mask(points))


@pytest.mark.parametrize("objectives", [2, 3])
def test_front_mask_matches_brute_force_across_blocks(objectives: int) -> None:
    # More than one 1024-row block, anti-correlated so that the front is large.
    rng = np.random.default_rng(7)
    raw = rng.random((2500, objectives))
    points = np.round(raw / raw.sum(axis=1, keepdims=True), 2)
    mask = pareto_front_mask(points)
    assert mask.sum() > 100
    np.testing.assert_array_equal(mask, row_loop_front_mask(points))


def test_front_mask_keeps_duplicates_and_drops_weakly_dominated() -> None:
    points = np.array(
        [
            [1.0, 2.0],
            [1.0, 2.0],  # duplicate of a front point: kept
            [1.0, 1.0],  # equal first objective, worse second: dominated
            [2.0, 1.0],
            [0.5, 0.5],  # strictly dominated
            [2.0, 0.0],  # equal first objective to [2, 1], worse second: dominated
        ]
    )
    assert pareto_front_mask(points).tolist() == [True, True, False, True, False, False]


def test_front_mask_simple_cases() -> None:
    assert pareto_front_mask(np.zeros((0, 3))).shape == (0,)
    assert pareto_front_mask(np.array([[3.0, -1.0]])).tolist() == [True]
    assert pareto_front_mask(np.array([[1.0], [3.0], [3.0], [2.0]])).tolist() == [
        False,
        True,
        True,
        False,
    ]
    # Two points equal on every axis but the last, in 3-D.
    assert pareto_front_mask(np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 2.0]])).tolist() == [
        False,
        True,
    ]


def test_front_mask_large_three_objective_set_is_correct_on_sample() -> None:
    rng = np.random.default_rng(3)
    points = rng.random((20_000, 3))
    mask = pareto_front_mask(points)
    front = points[mask]
    # No front point dominates another, and sampled off-front points are dominated by the front.
    assert brute_front_mask(front).all()
    for p in points[~mask][:200]:
        assert ((front >= p).all(axis=1) & (front > p).any(axis=1)).any()


def test_pareto_front_sorted_and_unique() -> None:
    points = np.array([[2.0, 1.0], [1.0, 2.0], [1.0, 2.0], [0.0, 0.0], [3.0, 0.5], [2.0, 1.0]])
    front = pareto_front(points)
    np.testing.assert_array_equal(front, [[1.0, 2.0], [2.0, 1.0], [3.0, 0.5]])
    assert pareto_front(np.zeros((0, 2))).shape == (0, 2)


def test_pareto_front_ties_sorted_by_later_objectives() -> None:
    points = np.array([[1.0, 2.0, 0.0], [1.0, 0.0, 2.0], [0.0, 5.0, 5.0]])
    np.testing.assert_array_equal(
        pareto_front(points), [[0.0, 5.0, 5.0], [1.0, 0.0, 2.0], [1.0, 2.0, 0.0]]
    )


# --- hypervolume -----------------------------------------------------------------------------


def test_hypervolume_hand_cases() -> None:
    assert hypervolume(np.array([[3.0]]), [1.0]) == pytest.approx(2.0)
    assert hypervolume(np.array([[3.0], [5.0], [0.0]]), [1.0]) == pytest.approx(4.0)
    assert hypervolume(np.array([[2.0, 3.0]]), [0.0, 0.0]) == pytest.approx(6.0)
    # Two boxes 2x1 and 1x2 overlapping in a 1x1 square.
    assert hypervolume(np.array([[2.0, 1.0], [1.0, 2.0]]), [0.0, 0.0]) == pytest.approx(3.0)
    # Shifted reference.
    assert hypervolume(np.array([[2.0, 1.0], [1.0, 2.0]]), [-1.0, -1.0]) == pytest.approx(8.0)
    # Three unit-thick slabs of a 2x2x2 cube, pairwise overlapping: 8 - 1 = 7.
    cubes = np.array([[2.0, 2.0, 1.0], [2.0, 1.0, 2.0], [1.0, 2.0, 2.0]])
    assert hypervolume(cubes, [0.0, 0.0, 0.0]) == pytest.approx(7.0)
    assert hypervolume(np.array([[1.0, 1.0, 1.0, 1.0]]) * 2, np.zeros(4)) == pytest.approx(16.0)


def test_hypervolume_empty_and_below_reference() -> None:
    assert hypervolume(np.zeros((0, 3)), [0.0, 0.0, 0.0]) == 0.0
    assert hypervolume(np.array([]), [0.0, 0.0]) == 0.0
    # On the reference in one coordinate, or below it: nothing.
    below = np.array([[0.0, 5.0], [5.0, -1.0], [-2.0, -2.0]])
    assert hypervolume(below, [0.0, 0.0]) == 0.0
    assert hypervolume(np.r_[below, [[1.0, 1.0]]], [0.0, 0.0]) == pytest.approx(1.0)
    assert hypervolume(np.array([[1.0, 1.0, 0.0], [2.0, 2.0, 2.0]]), np.zeros(3)) == (
        pytest.approx(8.0)
    )


@pytest.mark.parametrize("objectives", [2, 3, 4])
def test_hypervolume_matches_grid_exact(objectives: int) -> None:
    rng = np.random.default_rng(10 + objectives)
    points = np.round(rng.random((9, objectives)), 1)
    reference = np.full(objectives, 0.05)
    assert hypervolume(points, reference) == pytest.approx(
        grid_hypervolume(points, reference), rel=1e-12, abs=1e-12
    )


@pytest.mark.parametrize("objectives", [2, 3, 4])
def test_hypervolume_matches_monte_carlo(objectives: int) -> None:
    rng = np.random.default_rng(20 + objectives)
    # Points near the sphere make a front with many members.
    raw = np.abs(rng.normal(size=(25, objectives)))
    points = raw / np.linalg.norm(raw, axis=1, keepdims=True) + 0.1 * rng.random((25, objectives))
    reference = np.full(objectives, -0.2)
    exact = hypervolume(points, reference)
    estimate = monte_carlo_hypervolume(points, reference, samples=200_000, seed=objectives)
    assert exact == pytest.approx(estimate, rel=0.02)


@pytest.mark.parametrize("objectives", [2, 3, 4])
def test_hypervolume_unchanged_by_dominated_points(objectives: int) -> None:
    rng = np.random.default_rng(30 + objectives)
    points = rng.random((20, objectives))
    reference = np.zeros(objectives)
    base = hypervolume(points, reference)
    # Each extra point is a front point shrunk towards the reference: dominated by it.
    shrink = rng.random((40, objectives))
    extra = points[rng.integers(0, len(points), 40)] * shrink
    with_extra = np.concatenate([points, extra, points[:5]])
    assert hypervolume(with_extra, reference) == pytest.approx(base, rel=1e-12)
    assert hypervolume(pareto_front(points), reference) == pytest.approx(base, rel=1e-12)


# --- simplex_grid ----------------------------------------------------------------------------


@pytest.mark.parametrize(("objectives", "count"), [(1, 4), (2, 1), (2, 7), (3, 50), (5, 200)])
def test_simplex_grid_rows_on_simplex_distinct_deterministic(objectives: int, count: int) -> None:
    grid = simplex_grid(objectives, count)
    assert grid.shape == (count, objectives)
    assert (grid >= 0.0).all()
    np.testing.assert_allclose(grid.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    if objectives > 1:
        assert len(np.unique(grid, axis=0)) == count
    np.testing.assert_array_equal(grid, simplex_grid(objectives, count))


def test_simplex_grid_two_objectives_midpoints() -> None:
    np.testing.assert_allclose(simplex_grid(2, 4)[:, 0], [0.125, 0.375, 0.625, 0.875])
    np.testing.assert_allclose(simplex_grid(2, 4)[:, 1], [0.875, 0.625, 0.375, 0.125])
    np.testing.assert_array_equal(simplex_grid(1, 3), np.ones((3, 1)))


def test_simplex_grid_three_objectives_spread_evenly() -> None:
    # Uniform on the simplex: each coordinate has mean 1/M, and every region near a vertex
    # (weight > 0.6 on one objective; area fraction 0.4^2 = 0.16) gets its share of points.
    grid = simplex_grid(3, 600)
    np.testing.assert_allclose(grid.mean(axis=0), 1 / 3, atol=0.01)
    for m in range(3):
        assert (grid[:, m] > 0.6).mean() == pytest.approx(0.16, abs=0.02)


# --- preferred_point -------------------------------------------------------------------------


def test_preferred_point_one_hot_picks_extremes() -> None:
    front = np.array([[0.0, 3.0, 1.0], [1.0, 2.0, 0.5], [3.0, 0.0, 0.0], [2.0, 1.0, 2.5]])
    for m in range(3):
        assert preferred_point(front, np.eye(3)[m]) == int(np.argmax(front[:, m]))


def test_preferred_point_scale_and_ties() -> None:
    front = np.array([[10.0, 0.0], [0.0, 1.0], [4.0, 0.7]])
    assert preferred_point(front, np.array([0.5, 0.5])) == 0
    # With the first objective in units of its range (10), the balanced point wins.
    assert preferred_point(front, np.array([0.5, 0.5]), scale=np.array([10.0, 1.0])) == 2
    # Exact ties: the lowest index.
    assert preferred_point(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0.5, 0.5])) == 0
    assert preferred_point(np.array([[2.0, 2.0], [2.0, 2.0]]), np.array([1.0, 0.0])) == 0


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "points",
    [np.zeros(3), np.zeros((2, 2, 2)), np.array([[1.0, np.nan]]), np.array([[np.inf, 0.0]])],
)
def test_front_functions_reject_bad_points(points: np.ndarray) -> None:
    with pytest.raises(ValueError):
        pareto_front_mask(points)
    with pytest.raises(ValueError):
        pareto_front(points)


def test_hypervolume_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="reference"):
        hypervolume(np.ones((2, 3)), [0.0, 0.0])
    with pytest.raises(ValueError, match="reference"):
        hypervolume(np.ones((2, 2)), [0.0, np.nan])
    with pytest.raises(ValueError, match="finite"):
        hypervolume(np.array([[1.0, np.inf]]), [0.0, 0.0])
    with pytest.raises(ValueError, match="2-D"):
        hypervolume(np.ones(3), [0.0, 0.0, 0.0])


def test_simplex_grid_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_objectives"):
        simplex_grid(0, 5)
    with pytest.raises(ValueError, match="count"):
        simplex_grid(3, 0)


def test_preferred_point_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        preferred_point(np.zeros((0, 2)), np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="preference"):
        preferred_point(np.ones((3, 2)), np.array([1.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="scale"):
        preferred_point(np.ones((3, 2)), np.array([1.0, 0.0]), scale=np.array([1.0]))
    with pytest.raises(ValueError, match="scale"):
        preferred_point(np.ones((3, 2)), np.array([1.0, 0.0]), scale=np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="2-D"):
        preferred_point(np.ones(2), np.array([1.0, 0.0]))


KNEE_FRONT = np.array(
    [
        [0.0, 1.0],
        [0.66, 0.9],
        [0.78, 0.8],
        [0.85, 0.7],
        [0.86, 0.6],
        [0.86, 0.5],
        [0.9, 0.4],
        [0.92, 0.3],
        [0.92, 0.2],
        [0.93, 0.1],
        [0.94, -0.1],
        [0.94, -0.2],
        [0.95, -0.3],
        [0.95, -0.5],
    ]
)
"""A front with a knee: a sentiment-and-brevity run's replay buffer (normalised units)."""


def test_chebyshev_point_spreads_preferences_along_a_front_with_a_knee():
    prefs = simplex_grid(2, 16)
    low = np.array([-1.0, -1.0])
    chebyshev = {chebyshev_point(KNEE_FRONT, w, low) for w in prefs}
    weighted = {preferred_point(KNEE_FRONT, w) for w in prefs}
    # the weighted sum sticks to the convex hull's corners; the ray meets every part of the front
    assert len(chebyshev) > len(weighted)
    skipped = {8, 9, 10, 11}  # the flat stretch between the hull's corners 7 and 12
    assert not weighted & skipped and len(chebyshev & skipped) >= 2
    # one-hot-ish preferences reach the ends
    top = KNEE_FRONT[chebyshev_point(KNEE_FRONT, np.array([1.0, 0.0]), low)]
    assert top[0] == KNEE_FRONT[:, 0].max()
    assert chebyshev_point(KNEE_FRONT, np.array([0.0, 1.0]), low) == 0


def test_chebyshev_point_is_where_the_ray_leaves_the_dominated_region():
    front = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    # along the diagonal from (-1, -1) the ray meets the middle point first
    assert chebyshev_point(front, np.array([0.5, 0.5]), np.array([-1.0, -1.0])) == 1


def test_chebyshev_point_errors():
    with pytest.raises(ValueError, match="empty"):
        chebyshev_point(np.zeros((0, 2)), np.array([0.5, 0.5]), np.array([-1.0, -1.0]))
    with pytest.raises(ValueError, match="preference"):
        chebyshev_point(KNEE_FRONT, np.array([0.0, 0.0]), np.array([-1.0, -1.0]))
    with pytest.raises(ValueError, match="preference"):
        chebyshev_point(KNEE_FRONT, np.array([-0.5, 1.5]), np.array([-1.0, -1.0]))

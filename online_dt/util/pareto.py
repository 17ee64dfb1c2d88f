"""Pareto fronts, hypervolume and preference vectors for multi-objective reward conditioning.

Every objective is a reward, and *higher is better*. A point ``q`` dominates ``p`` when
``q >= p`` in every objective and ``q > p`` in at least one; the Pareto front of a set is its
non-dominated points. Arrays of points are ``[N, M]`` (``N`` points, ``M >= 1`` objectives, in
each reward's own units). Pure numpy; no model code.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "chebyshev_point",
    "hypervolume",
    "pareto_front",
    "pareto_front_mask",
    "preferred_point",
    "simplex_grid",
]

# Rows of a block of points compared against the running front in ``pareto_front_mask`` (M >= 3).
_BLOCK_ROWS = 1024
# Most booleans in one [rows, columns] comparison mask (4 MiB; a few such masks live at once).
_MAX_COMPARE_ELEMENTS = 1 << 22


def _as_points(points: np.ndarray, name: str = "points") -> np.ndarray:
    """``points`` as a float64 ``[N, M]`` array with ``M >= 1``.

    Raises:
        ValueError: not 2-D, no objective column, or a non-finite value.
    """
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [N, M] array, got shape {array.shape}")
    if array.shape[1] < 1:
        raise ValueError(f"{name} must have at least one objective column, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return array


def _as_vector(values: Sequence[float] | np.ndarray, length: int, name: str) -> np.ndarray:
    """``values`` as a finite float64 vector of ``length`` entries.

    Raises:
        ValueError: not 1-D of that length, or a non-finite value.
    """
    vector = np.asarray(values, dtype=np.float64)
    if vector.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},), got {vector.shape}")
    if not np.isfinite(vector).all():
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return vector


def _front_mask_2d(points: np.ndarray) -> np.ndarray:
    """Front mask of ``[N, 2]`` points, ``N >= 1``, in O(N log N): one sort, then a sweep."""
    x, y = points[:, 0], points[:, 1]
    # Descending x, and descending y within equal x.
    order = np.lexsort((-y, -x))
    xs, ys = x[order], y[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    sizes = np.diff(np.r_[starts, len(xs)])
    # Best y among points of strictly greater x: the running max up to the previous group.
    running = np.maximum.accumulate(ys)
    best_before = np.r_[-np.inf, running[starts[1:] - 1]]
    # Within a group (same x) the first y is the group's largest, as ys descends there.
    group_max = ys[starts]
    # p = (x, y) is dominated iff a point of greater x has y' >= y, or one of equal x has y' > y.
    dominated = (ys < np.repeat(group_max, sizes)) | (ys <= np.repeat(best_before, sizes))
    mask = np.empty(len(xs), dtype=bool)
    mask[order] = ~dominated
    return mask


def _dominated_by(block: np.ndarray, others: np.ndarray) -> np.ndarray:
    """bool ``[len(block)]``: True where some row of ``others`` dominates the block's row.

    Builds ``[rows, columns]`` comparison masks one objective at a time (cheaper than one
    ``[rows, columns, M]`` array reduced over its short last axis), over column chunks of
    ``others`` so that each mask holds at most ``_MAX_COMPARE_ELEMENTS`` booleans.
    """
    rows, objectives = block.shape
    dominated = np.zeros(rows, dtype=bool)
    step = max(1, _MAX_COMPARE_ELEMENTS // max(1, rows))
    for start in range(0, len(others), step):
        chunk = others[start : start + step]
        weakly = chunk[None, :, 0] >= block[:, 0, None]
        equal = chunk[None, :, 0] == block[:, 0, None]
        for m in range(1, objectives):
            weakly &= chunk[None, :, m] >= block[:, m, None]
            equal &= chunk[None, :, m] == block[:, m, None]
        # q >= p everywhere and q != p somewhere: q > p in at least one objective.
        dominated |= (weakly & ~equal).any(axis=1)
    return dominated


def _front_mask_nd(points: np.ndarray) -> np.ndarray:
    """Front mask of ``[N, M]`` points, ``N >= 1``, any ``M``: block-wise pairwise comparison.

    The points are visited in descending lexicographic order, so a point's dominators all come
    before it (``q`` dominates ``p`` implies ``q`` is lexicographically greater); each block of
    ``_BLOCK_ROWS`` rows is compared with the front found so far and with itself. Comparing with
    the front only is enough, since dominance is transitive and every dominated point has a
    dominator on the front. This is the sort-filter-skyline scheme (Chomicki, Godfrey, Gryz and
    Liang, "Skyline with Presorting", ICDE 2003); its worst case, every point on the front, is
    the plain O(N^2 M) pairwise test.
    """
    order = np.lexsort(tuple(-points[:, m] for m in reversed(range(points.shape[1]))))
    ordered = points[order]
    keep = np.zeros(len(ordered), dtype=bool)
    front = ordered[:0]
    for start in range(0, len(ordered), _BLOCK_ROWS):
        block = ordered[start : start + _BLOCK_ROWS]
        on_front = ~_dominated_by(block, front) if len(front) else np.ones(len(block), dtype=bool)
        on_front[on_front] = ~_dominated_by(block[on_front], block[on_front])
        keep[start : start + len(block)] = on_front
        front = np.concatenate([front, block[on_front]])
    mask = np.empty(len(ordered), dtype=bool)
    mask[order] = keep
    return mask


def pareto_front_mask(points: np.ndarray) -> np.ndarray:
    """Which points are on the Pareto front (maximisation).

    Point ``p`` is on the front unless some ``q`` has ``q >= p`` in every objective and
    ``q > p`` in at least one. Identical points do not dominate each other, so duplicates on
    the front are all kept.

    Algorithms: ``M = 1``, the points equal to the maximum; ``M = 2``, one sort and a sweep,
    O(N log N) (Kung, Luccio and Preparata, "On Finding the Maxima of a Set of Vectors", JACM
    1975); ``M >= 3``, a vectorised pairwise comparison, O(N^2 M) at worst, in blocks of 1024
    rows against the running front after a lexicographic presort (sort-filter-skyline, Chomicki
    et al., ICDE 2003), so memory stays bounded (tens of MiB) for N up to ~20,000.

    Args:
        points: ``[N, M]`` float, one row per point, ``M >= 1`` objectives in reward units.

    Returns:
        bool ``[N]``, True for the points on the front; ``[0]`` for ``N = 0``.

    Raises:
        ValueError: ``points`` is not 2-D, has no column, or has a NaN or infinite value.
    """
    array = _as_points(points)
    if len(array) == 0:
        return np.zeros(0, dtype=bool)
    if array.shape[1] == 1:
        return array[:, 0] == array[:, 0].max()
    if array.shape[1] == 2:
        return _front_mask_2d(array)
    return _front_mask_nd(array)


def pareto_front(points: np.ndarray) -> np.ndarray:
    """The Pareto front's points (maximisation), without duplicates.

    Args:
        points: ``[N, M]`` float, ``M >= 1`` objectives in reward units.

    Returns:
        ``[K, M]`` float64, ``K <= N``, sorted by the first objective ascending, ties broken by
        the next objectives ascending; ``[0, M]`` for ``N = 0``.

    Raises:
        ValueError: as :func:`pareto_front_mask`.
    """
    array = _as_points(points)
    front = array[pareto_front_mask(array)]
    if len(front) == 0:
        return front
    # np.unique over rows sorts them lexicographically, first column first.
    return np.unique(front, axis=0)


def _hv_2d(front: np.ndarray) -> float:
    """Area dominated by ``[K, 2]`` mutually non-dominated, distinct, positive points and
    dominating the origin: a sweep in descending first objective (so ascending second)."""
    order = np.argsort(-front[:, 0], kind="stable")
    xs, ys = front[order, 0], front[order, 1]
    heights = np.diff(np.r_[0.0, ys])
    return float(np.dot(xs, heights))


def _hv_translated(points: np.ndarray) -> float:
    """Hypervolume of ``[N, M]`` points, all > 0, with respect to the origin.

    Slices over the last objective (HSO): between consecutive distinct values of it, the
    dominated region is a prism over the (M - 1)-dimensional region of the points at least that
    high in the last objective.
    """
    if len(points) == 0:
        return 0.0
    objectives = points.shape[1]
    if objectives == 1:
        return float(points[:, 0].max())
    front = np.unique(points[pareto_front_mask(points)], axis=0)
    if objectives == 2:
        return _hv_2d(front)
    order = np.argsort(-front[:, -1], kind="stable")
    front = front[order]
    depths = front[:, -1]
    total = 0.0
    for k in range(len(front)):
        lower = depths[k + 1] if k + 1 < len(front) else 0.0
        thickness = depths[k] - lower
        if thickness <= 0.0:
            continue
        total += thickness * _hv_translated(front[: k + 1, :-1])
    return total


def hypervolume(points: np.ndarray, reference: Sequence[float] | np.ndarray) -> float:
    """Exact hypervolume (maximisation) of ``points`` with respect to ``reference``.

    The volume of the union of the boxes ``[reference, p]`` over the points ``p`` strictly
    above the reference in every objective; the others contribute nothing. Units: the product
    of the objectives' units.

    Algorithms: ``M = 1``, ``max - reference``; ``M = 2``, a sort and a sweep, O(N log N);
    ``M >= 3``, Hypervolume by Slicing Objectives (While, Hingston, Barone and Huband, "A Faster
    Algorithm for Calculating Hypervolume", IEEE Trans. Evolutionary Computation 10(1), 2006),
    recursing on the last objective, with the points first reduced to their Pareto front at each
    level. Exact for any ``M``; quick enough for a few hundred front points at ``M = 3``, and its
    cost grows steeply with ``M``.

    Args:
        points: ``[N, M]`` float, ``M >= 1`` objectives; an empty array (``N = 0``, or shape
            ``(0,)``) gives 0.0.
        reference: ``[M]`` float, the reference (worst acceptable) point.

    Returns:
        The hypervolume, >= 0.0.

    Raises:
        ValueError: ``points`` is not 2-D (other than empty) or not finite; ``reference`` does
            not have ``M`` entries or is not finite.
    """
    array = np.asarray(points, dtype=np.float64)
    if array.size == 0 and array.ndim == 1:
        array = array.reshape(0, np.asarray(reference).size)
    array = _as_points(array)
    ref = _as_vector(reference, array.shape[1], "reference")
    shifted = array - ref
    shifted = shifted[(shifted > 0.0).all(axis=1)]
    return _hv_translated(shifted)


def _kronecker(count: int, dimensions: int) -> np.ndarray:
    """``[count, dimensions]`` points of the additive recurrence ``frac(0.5 + i * alpha)``,
    ``i = 1..count``, with ``alpha_j = phi_d^-(j + 1)``, ``phi_d`` the real root > 1 of
    ``x^(d + 1) = x + 1`` (Roberts, "The Unreasonable Effectiveness of Quasirandom Sequences",
    2018; the R_d sequence)."""
    phi = 2.0
    for _ in range(60):  # fixed-point iteration, converges to double precision
        phi = (1.0 + phi) ** (1.0 / (dimensions + 1))
    alpha = phi ** -np.arange(1, dimensions + 1, dtype=np.float64)
    index = np.arange(1, count + 1, dtype=np.float64)[:, None]
    return np.mod(0.5 + index * alpha[None, :], 1.0)


def simplex_grid(num_objectives: int, count: int) -> np.ndarray:
    """``count`` preference vectors spread evenly over the probability simplex; deterministic.

    ``M = 1``: all ones. ``M = 2``: ``w1 = (i + 0.5) / count``, ``w2 = 1 - w1``,
    ``i = 0..count - 1``. ``M >= 3``: the first ``count`` points of the R_(M-1) Kronecker
    low-discrepancy sequence in the unit cube (Roberts 2018) mapped to the simplex by sorted
    uniform spacings: sort each point's ``M - 1`` coordinates, and take the ``M`` gaps between
    0, the sorted coordinates and 1 (a map that sends the uniform distribution on the cube to
    the uniform distribution on the simplex; Devroye, "Non-Uniform Random Variate Generation",
    1986, ch. V.2). Each row is renormalised to sum to 1 against rounding.

    Args:
        num_objectives: ``M >= 1``.
        count: number of vectors, ``>= 1``.

    Returns:
        float64 ``[count, M]``, entries in ``[0, 1]``, each row summing to 1.

    Raises:
        ValueError: ``num_objectives < 1`` or ``count < 1``.
    """
    if num_objectives < 1:
        raise ValueError(f"num_objectives must be >= 1, got {num_objectives}")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if num_objectives == 1:
        return np.ones((count, 1), dtype=np.float64)
    if num_objectives == 2:
        first = (np.arange(count, dtype=np.float64) + 0.5) / count
        return np.stack([first, 1.0 - first], axis=1)
    cuts = np.sort(_kronecker(count, num_objectives - 1), axis=1)
    edges = np.concatenate([np.zeros((count, 1)), cuts, np.ones((count, 1))], axis=1)
    weights = np.diff(edges, axis=1)
    return weights / weights.sum(axis=1, keepdims=True)


def preferred_point(
    front: np.ndarray, preference: np.ndarray, scale: np.ndarray | None = None
) -> int:
    """Index of the front point that maximises ``sum_m preference[m] * front[i, m] / scale[m]``.

    This is the preference-to-target mapping of Rewards-in-Context (Yang et al., ICML 2024,
    arXiv 2402.10207) as this project uses it: a preference vector picks, as the conditioning
    target, the point of the current front with the largest preference-weighted reward.

    Args:
        front: ``[K, M]`` float, ``K >= 1`` points (usually a Pareto front), reward units.
        preference: ``[M]`` float weights, usually non-negative and summing to 1.
        scale: ``[M]`` float > 0, each objective's unit (e.g. the width of its range) so that
            the weights compare like with like; default all ones.

    Returns:
        The row index in ``[0, K)``; among equal weighted sums, the lowest index.

    Raises:
        ValueError: ``front`` is empty, not 2-D or not finite; ``preference`` or ``scale`` does
            not have ``M`` entries or is not finite; a ``scale`` entry is not positive.
    """
    points = _as_points(front, "front")
    if len(points) == 0:
        raise ValueError("front is empty")
    objectives = points.shape[1]
    weights = _as_vector(preference, objectives, "preference")
    if scale is None:
        units = np.ones(objectives, dtype=np.float64)
    else:
        units = _as_vector(scale, objectives, "scale")
        if not (units > 0.0).all():
            raise ValueError(f"scale entries must be > 0, got {units.tolist()}")
    scores = (points / units) @ weights
    return int(np.argmax(scores))  # argmax returns the first of equal maxima


def chebyshev_point(front: np.ndarray, preference: np.ndarray, reference: np.ndarray) -> int:
    """Index of the front point that maximises ``min_m (front[i, m] - reference[m]) /
    preference[m]`` over the objectives with ``preference[m] > 0``: the point where the ray from
    ``reference`` along ``preference`` leaves the region the front dominates.

    The (weighted) Chebyshev scalarisation (Miettinen, "Nonlinear Multiobjective
    Optimization", 1999; the Tchebycheff decomposition of MOEA/D, Zhang & Li, 2007): unlike a
    weighted sum, which picks only the front's convex-hull corners, evenly spread preferences
    pick points spread along the whole front.

    Args:
        front: ``[K, M]`` float, ``K >= 1`` points (usually a Pareto front).
        preference: ``[M]`` float weights ``>= 0``, at least one positive.
        reference: ``[M]`` float, a point below the front (e.g. every objective's low end).

    Returns:
        The row index in ``[0, K)``; among equal scores, the lowest index.

    Raises:
        ValueError: ``front`` is empty, not 2-D or not finite; ``preference`` or ``reference``
            does not have ``M`` finite entries; ``preference`` has a negative entry or none
            positive.
    """
    points = _as_points(front, "front")
    if len(points) == 0:
        raise ValueError("front is empty")
    objectives = points.shape[1]
    weights = _as_vector(preference, objectives, "preference")
    origin = _as_vector(reference, objectives, "reference")
    if (weights < 0).any() or not (weights > 0).any():
        raise ValueError(f"preference needs entries >= 0, one positive, got {weights.tolist()}")
    used = weights > 0
    scores = ((points[:, used] - origin[used]) / weights[used]).min(axis=1)
    return int(np.argmax(scores))

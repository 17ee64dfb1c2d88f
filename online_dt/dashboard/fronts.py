"""The dashboard's view of several objectives: reward vectors read from the replay buffer's
list columns, thinning, and the ``online-dt eval --grid`` report (``eval/objectives.json``)
reshaped for the latest-evaluation panel (:func:`objectives_grid`) and the Pareto front panel
(:func:`pareto_eval`). Pure functions of Arrow columns, arrays and parsed JSON; the run
directory is read by :class:`~online_dt.dashboard.reader.RunReader`. Non-finite numbers become
``None`` so every answer is valid JSON.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from online_dt.eval.objectives import CALIBRATION_GOAL


def vector_rows(column: pa.ChunkedArray) -> np.ndarray | None:
    """A list column of a shard (``achieved_rewards``) as float64 ``[n, M]``, ``M`` its longest
    row; a null row, a shorter row's missing values and null values are NaN. ``None`` when no
    row has a value (a run with a single reward)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(array)
    if n == 0 or array.null_count == n:
        return None
    lengths = pc.list_value_length(array).fill_null(0).to_numpy(zero_copy_only=False)
    width = int(lengths.max())
    if width == 0:
        return None
    if array.null_count == 0 and bool((lengths == width).all()):
        flat = pc.list_flatten(array).to_numpy(zero_copy_only=False)  # null values: NaN
        return np.asarray(flat, dtype=np.float64).reshape(n, width)
    out = np.full((n, width), np.nan)
    for i, row in enumerate(array.to_pylist()):
        for m, value in enumerate(row or []):
            if value is not None:
                out[i, m] = value
    return out


def stack_vectors(parts: list[np.ndarray | None], sizes: list[int]) -> np.ndarray | None:
    """The shards' reward vectors stacked in id order (:func:`vector_rows` of each, ``sizes``
    their rows): ``None`` when no shard has any; rows of a shard without vectors, and the
    missing columns of narrower ones, are NaN."""
    width = max((p.shape[1] for p in parts if p is not None), default=0)
    if width == 0:
        return None
    rows = []
    for part, size in zip(parts, sizes, strict=True):
        block = np.full((size, width), np.nan)
        if part is not None:
            block[:, : part.shape[1]] = part
        rows.append(block)
    return np.concatenate(rows)


def thin(count: int, most: int) -> np.ndarray:
    """Indices of ``min(count, most)`` of ``count`` items, evenly spread (the first and the last
    among them when ``most >= 2``)."""
    if count <= most:
        return np.arange(count)
    if most <= 0:
        return np.zeros(0, dtype=np.int64)
    if most == 1:
        return np.zeros(1, dtype=np.int64)
    return np.unique(np.linspace(0, count - 1, most).round().astype(np.int64))


def reward_vector(
    value: Any, record: dict[str, Any], names: list[str], per_objective: str
) -> list[float | None] | None:
    """A reward vector of a metrics record: ``value`` when it is a list of ``len(names)``
    numbers (or nulls), else the per-objective keys (``per_objective`` formatted with each
    name) when at least one of them is a number; otherwise ``None``."""
    if isinstance(value, list) and len(value) == len(names):
        vector = [number(v) for v in value]
    else:
        vector = [number(record.get(per_objective.format(n))) for n in names]
    return vector if any(v is not None for v in vector) else None


def names_of(value: Any) -> list[str] | None:
    """A record's ``objectives`` (a non-empty list of names) as strings, else ``None``."""
    if isinstance(value, list) and value:
        return [str(v) for v in value]
    return None


def integer(value: Any, default: Any) -> Any:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return default


def number(value: Any) -> float | None:
    """``value`` as a float when it is a finite number (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def vector(value: Any, m: int) -> list[float | None] | None:
    """``value`` as a list of ``m`` numbers (``None`` where one is not finite), or ``None``
    when it is not a list of ``m`` items."""
    if not isinstance(value, list) or len(value) != m:
        return None
    return [number(v) for v in value]


def report_names(report: dict[str, Any]) -> list[str]:
    """The objectives' names of an ``objectives.json`` report, in its vectors' order."""
    listed = report.get("objectives")
    if not isinstance(listed, list):
        return []
    return [str(o.get("name")) if isinstance(o, dict) else str(o) for o in listed]


def objectives_grid(report: dict[str, Any]) -> dict[str, Any]:
    """The table and summary of an ``online-dt eval`` report of a run with several objectives
    (``eval/objectives.json``, :mod:`online_dt.eval.objectives`) as the dashboard draws them.

    Returns:
        ``objectives`` (names, the vectors' order); ``goal`` (the calibration goal, normalised
        units); ``rows``, one per target vector: ``target`` and ``achieved`` (the mean achieved
        vector; reward units), ``errors_normalised`` (per objective ``|achieved - target|``
        over half the objective's range), ``max_error_normalised``, ``within_goal``,
        ``achievable``, ``distinct_2``, ``kl_to_base`` and ``count``; ``summary``: ``targets``,
        ``achievable``, ``within_goal`` (achievable targets within the goal in every
        objective), ``within_goal_all``, ``per_objective`` (one ``{name,
        mean_error_normalised, max_error_normalised, mean_abs_error, within_goal}`` per
        objective, over the achievable targets: errors ``None`` when none is),
        ``achieved_front_size``, ``achieved_hypervolume``, ``buffer_front_size``,
        ``buffer_hypervolume``, ``buffer_samples`` and ``hypervolume_ratio`` (normalised
        units; ``None`` where unknown). Malformed parts of the report become ``None``.
    """
    names = report_names(report)
    m = len(names)
    summary = report.get("summary") if isinstance(report.get("summary"), dict) else {}
    goal = number(report.get("goal"))
    if goal is None:
        goal = number(summary.get("goal"))
    rows = []
    for r in report.get("rows") or []:
        if not isinstance(r, dict):
            continue
        per = r.get("objectives") if isinstance(r.get("objectives"), dict) else {}

        def error(name: str, per: dict[str, Any] = per) -> float | None:
            item = per.get(name)
            return number(item.get("abs_error_normalised")) if isinstance(item, dict) else None

        rows.append(
            {
                "target": vector(r.get("target"), m),
                "achieved": vector(r.get("achieved_mean"), m),
                "errors_normalised": [error(n) for n in names],
                "max_error_normalised": number(r.get("max_abs_error_normalised")),
                "within_goal": r.get("within_goal") is True,
                "achievable": r.get("achievable") is True,
                "distinct_2": number(r.get("distinct_2")),
                "kl_to_base": number(r.get("kl_to_base")),
                "count": integer(r.get("count"), None),
            }
        )
    listed = summary.get("per_objective") if isinstance(summary.get("per_objective"), dict) else {}
    per_objective = []
    for name in names:
        p = listed.get(name) if isinstance(listed.get(name), dict) else {}
        per_objective.append(
            {
                "name": name,
                "mean_error_normalised": number(p.get("mean_abs_error_normalised")),
                "max_error_normalised": number(p.get("max_abs_error_normalised")),
                "mean_abs_error": number(p.get("mean_abs_error")),
                "within_goal": integer(p.get("within_goal"), None),
            }
        )
    counts = ("targets", "achievable", "within_goal", "within_goal_all")
    sizes = ("achieved_front_size", "buffer_front_size", "buffer_samples")
    figures = ("achieved_hypervolume", "buffer_hypervolume", "hypervolume_ratio")
    return {
        "objectives": names,
        "goal": goal if goal is not None else CALIBRATION_GOAL,
        "rows": rows,
        "summary": {
            **{k: integer(summary.get(k), None) for k in counts + sizes},
            **{k: number(summary.get(k)) for k in figures},
            "per_objective": per_objective,
        },
    }


def pareto_eval(report: dict[str, Any], names: list[str]) -> dict[str, Any] | None:
    """The ``eval`` part of :meth:`RunReader.pareto`: what an ``objectives.json`` report
    achieved, to draw next to the buffer's front.

    Args:
        report: the report (``eval/objectives.json``).
        names: the run's objectives; a report over other objectives (or another order) gives
            ``None``.

    Returns:
        ``created_at``, ``iteration``, ``policy_version``; ``points``, one ``{target,
        achieved, achievable, within_goal, max_error_normalised}`` per row with a finite
        achieved vector (reward units); ``front``: the Pareto front of the achieved means
        (the report's ``summary.achieved_front``, vectors of ``len(names)`` finite numbers);
        ``achieved_hypervolume``, ``buffer_hypervolume`` and ``hypervolume_ratio`` (the
        report's, normalised units, ``None`` where unknown); ``goal``.
    """
    if report_names(report) != names:
        return None
    m = len(names)
    grid = objectives_grid(report)
    points = [
        {
            "target": r["target"],
            "achieved": r["achieved"],
            "achievable": r["achievable"],
            "within_goal": r["within_goal"],
            "max_error_normalised": r["max_error_normalised"],
        }
        for r in grid["rows"]
        if r["achieved"] is not None and all(v is not None for v in r["achieved"])
    ]
    summary = report.get("summary") if isinstance(report.get("summary"), dict) else {}
    front = [vector(p, m) for p in summary.get("achieved_front") or []]
    return {
        "created_at": number(report.get("created_at")),
        "iteration": integer(report.get("iteration"), None),
        "policy_version": integer(report.get("policy_version"), None),
        "goal": grid["goal"],
        "points": points,
        "front": [p for p in front if p is not None and all(v is not None for v in p)],
        "achieved_hypervolume": grid["summary"]["achieved_hypervolume"],
        "buffer_hypervolume": grid["summary"]["buffer_hypervolume"],
        "hypervolume_ratio": grid["summary"]["hypervolume_ratio"],
    }

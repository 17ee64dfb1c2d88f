"""Targets as given to ``online-dt eval``: numbers or vectors, checked and shown back.

:data:`TargetSpec` is what :func:`~online_dt.eval.run.run_eval` takes; :func:`vector_targets`
checks the explicit targets of a run with several objectives, and :func:`show_target` writes a
target the way the user would type it, for error messages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from online_dt.eval.source import EvalError

TargetSpec = float | Sequence[float]
"""A target as given to :func:`~online_dt.eval.run.run_eval`: a number, or a vector (one value
per objective)."""


def show_target(target: Any) -> str:
    """A target as the user would type it, for error messages.

    Args:
        target: a target as given (a number, a sequence of numbers, or anything else).

    Returns:
        ``"the number 0.5"``, ``"the vector 0.5,-3"``, or the ``repr`` of a target that is
        neither. Raises nothing.
    """
    if isinstance(target, int | float):
        return f"the number {target:g}"
    try:
        return "the vector " + ",".join(f"{float(v):g}" for v in target)
    except (TypeError, ValueError):
        return repr(target)


def vector_targets(
    targets: Sequence[TargetSpec], names: Sequence[str], cfg_file: Path
) -> list[tuple[float, ...]]:
    """Explicit targets of a run with objectives as tuples of ``len(names)`` floats.

    Args:
        targets: the targets as given, each a vector of one value per objective (reward units,
            the config's order).
        names: the objectives' names (``conditioning.objectives``), for the messages.
        cfg_file: the run's config file, named in the messages.

    Returns:
        One tuple of ``len(names)`` finite floats (reward units) per target, in order.

    Raises:
        EvalError: a target is a number, or a vector of another length or with a non-finite
            value.
    """
    m = len(names)
    example = ",".join(n.upper() for n in names)
    how = f"a vector of {m} values ({', '.join(names)}; on the command line --targets {example})"
    out = []
    for t in targets:
        if isinstance(t, int | float | str | bytes):
            raise EvalError(
                f"{cfg_file} conditions on {m} objectives (conditioning.objectives): each target"
                f" must be {how}, got {show_target(t)}"
            )
        try:
            vector = tuple(float(v) for v in t)
        except (TypeError, ValueError):
            raise EvalError(f"each target must be {how}, got {t!r}") from None
        if len(vector) != m or not all(math.isfinite(v) for v in vector):
            raise EvalError(f"each target must be {how} (finite), got {show_target(vector)}")
        out.append(vector)
    return out

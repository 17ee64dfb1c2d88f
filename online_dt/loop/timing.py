"""Wall-clock seconds per stage of an iteration, from one timer used in every mode."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

STAGES = ("rollout", "scoring", "training", "sync", "checkpoint")
"""The stages of an iteration the loop times (each a ``<stage>_s`` column of the metrics)."""


class StageTimer:
    """Times the named stages of one iteration (``with timer("rollout"): ...``).

    The timer starts when it is created. A stage entered twice adds up. :meth:`seconds`
    reports each stage as ``<stage>_s``, the iteration's ``wall_s`` so far, and ``other_s``:
    the wall time spent outside every named stage (bookkeeping, logging), so that the stages
    and ``other_s`` add up to ``wall_s`` exactly. Stages must not nest (nested time would count
    twice).

    Args:
        stages: stages reported even when never entered (as 0.0 seconds), in this order.
    """

    def __init__(self, stages: Sequence[str] = ()) -> None:
        self._start = time.perf_counter()
        self._stages: dict[str, float] = dict.fromkeys(stages, 0.0)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        """Count the wall time of the ``with`` block towards ``stage``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self._stages[stage] = self._stages.get(stage, 0.0) + time.perf_counter() - start

    def seconds(self) -> dict[str, float]:
        """``<stage>_s`` for each stage, ``other_s`` and ``wall_s`` (seconds, >= 0)."""
        wall = time.perf_counter() - self._start
        named = {f"{k}_s": v for k, v in self._stages.items()}
        return {**named, "other_s": max(0.0, wall - sum(self._stages.values())), "wall_s": wall}

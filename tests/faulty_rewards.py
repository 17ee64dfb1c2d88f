"""Reward models that misbehave on purpose, for the fault-injection tests.

They are loaded by import path (``reward_model.kind: custom``), in process or inside the Ray
reward actor. Call counts live in a file so they survive an actor restart.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path


def length_reward(completion: str) -> float:
    """A deterministic reward in [0, 1]: words in the completion / 24."""
    return min(1.0, len(completion.split()) / 24)


class _Counted:
    def __init__(self, counter_file: str) -> None:
        self.counter_file = Path(counter_file)

    def _next_call(self) -> int:
        """1-based number of this call across restarts (appends one byte per call)."""
        with open(self.counter_file, "a") as f:
            f.write(".")
        return self.counter_file.stat().st_size


class FaultyReward(_Counted):
    """Scores by :func:`length_reward`, except on the calls listed in ``fail_calls``.

    Args:
        counter_file: file counting calls (survives actor restarts).
        fail_calls: 1-based call numbers that misbehave.
        fault: ``raise`` (RuntimeError), ``nan``/``inf`` (one bad score in the batch),
            ``wrong_count`` (one score short), ``exit`` (the process dies), ``hang`` (sleeps
            ``hang_s`` before scoring, as a model stuck on a lock or a dead connection).
        delay_s: sleep before scoring (so a test can kill the worker mid-call).
        hang_s: how long a ``hang`` call sleeps, in seconds (an hour by default; a test sets
            it a little above what it can wait, so that without a working timeout it fails
            instead of stalling).
        faults: per-call faults, ``{"2": "exit", "4": "raise"}`` (keys are call numbers as
            strings, as YAML and JSON write them); they take precedence over ``fail_calls``.
    """

    def __init__(
        self,
        counter_file: str,
        fail_calls: Sequence[int] = (),
        fault: str = "raise",
        delay_s: float = 0.0,
        faults: dict[str, str] | None = None,
        hang_s: float = 3600.0,
    ) -> None:
        super().__init__(counter_file)
        self.faults = {call: fault for call in fail_calls}
        self.faults.update({int(k): v for k, v in (faults or {}).items()})
        self.delay_s = delay_s
        self.hang_s = hang_s

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        call = self._next_call()
        fault = self.faults.get(call)
        if self.delay_s:
            time.sleep(self.delay_s)
        if fault == "hang":
            time.sleep(self.hang_s)
        scores = [length_reward(c) for c in completions]
        if fault == "raise":
            raise RuntimeError(f"injected failure on call {call}")
        if fault == "exit":
            os._exit(1)  # the process dies mid-call, as on a segfault or an OOM kill
        if fault == "nan":
            scores[len(scores) // 2] = math.nan
        elif fault == "inf":
            scores[0] = math.inf
        elif fault == "wrong_count":
            scores = scores[:-1]
        return scores

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
        restart_delay_s: sleep this long in the constructor when the counter file already
            counts calls, i.e. when the instance replaces one that died, as a reward model
            that takes seconds to load again.
    """

    def __init__(
        self,
        counter_file: str,
        fail_calls: Sequence[int] = (),
        fault: str = "raise",
        delay_s: float = 0.0,
        faults: dict[str, str] | None = None,
        hang_s: float = 3600.0,
        restart_delay_s: float = 0.0,
    ) -> None:
        super().__init__(counter_file)
        if restart_delay_s and self.counter_file.exists() and self.counter_file.stat().st_size:
            time.sleep(restart_delay_s)
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


MULTI_OBJECTIVES = ("words", "letters")
"""The names :class:`WordsLettersReward` returns, in the order the tests configure them."""


def words_letters(completion: str) -> dict[str, float]:
    """Two deterministic scores in [0, 1]: ``words`` (:func:`length_reward`) and ``letters``,
    the share of the completion's characters that are letters (0 for an empty one). The
    mapping lists ``letters`` first, against :data:`MULTI_OBJECTIVES`' order, so a caller that
    read the mapping's order instead of the configured one would swap them."""
    letters = sum(ch.isalpha() for ch in completion) / len(completion) if completion else 0.0
    return {"letters": letters, "words": length_reward(completion)}


class WordsLettersReward:
    """A deterministic multi-objective reward model: per sample :func:`words_letters`."""

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[dict[str, float]]:
        return [words_letters(c) for c in completions]


class FaultyMultiReward(_Counted):
    """:class:`WordsLettersReward`, except on the calls listed in ``fail_calls``, where one
    sample's scores go wrong as ``fault`` says: ``missing`` (no ``letters``), ``unknown`` (an
    extra ``style``), ``nan`` (``letters`` is NaN), ``not_a_number`` (``letters`` is a
    string) or ``float`` (a plain float instead of a mapping).

    Args:
        counter_file: file counting calls (survives actor restarts).
        fail_calls: 1-based call numbers that misbehave.
        fault: one of the faults above.
        sample: index of the sample that goes wrong (clamped to the batch).
    """

    def __init__(
        self, counter_file: str, fail_calls: Sequence[int] = (), fault: str = "nan", sample: int = 1
    ) -> None:
        super().__init__(counter_file)
        self.fail_calls = set(fail_calls)
        self.fault = fault
        self.sample = sample

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[object]:
        call = self._next_call()
        scores: list[object] = [words_letters(c) for c in completions]
        if call not in self.fail_calls or not scores:
            return scores
        i = min(self.sample, len(scores) - 1)
        bad = dict(words_letters(completions[i]))
        if self.fault == "missing":
            del bad["letters"]
        elif self.fault == "unknown":
            bad["style"] = 0.5
        elif self.fault == "nan":
            bad["letters"] = math.nan
        elif self.fault == "not_a_number":
            bad["letters"] = "high"  # type: ignore[assignment]
        elif self.fault == "float":
            scores[i] = bad["words"]
            return scores
        else:
            raise ValueError(f"unknown fault {self.fault!r}")
        scores[i] = bad
        return scores

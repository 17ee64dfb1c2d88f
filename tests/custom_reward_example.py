"""Small classes for the ``custom`` reward model tests (loaded by ``class_path``)."""

from __future__ import annotations

from collections.abc import Sequence


class LengthReward:
    """Reward = ``scale`` times the number of whitespace-separated words of the completion."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        return [self.scale * len(c.split()) for c in completions]


class NoScore:
    """Has no ``score`` method."""

    def rate(self, completions: Sequence[str]) -> list[float]:
        return [0.0 for _ in completions]


class BrokenInit:
    """Its constructor always fails."""

    def __init__(self) -> None:
        raise RuntimeError("tokenizer file missing")

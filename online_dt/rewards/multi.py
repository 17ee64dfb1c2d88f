"""A built-in multi-objective reward model: :class:`SentimentBrevityReward`.

It returns, per sample, a mapping of two named scores, for multi-objective conditioning
(``conditioning.objectives``) in the embedded demo. Rule based, CPU only, no downloads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from online_dt.rewards.builtins import VaderSentimentReward
from online_dt.rewards.protocol import check_inputs


class SentimentBrevityReward:
    """Two objectives per completion: its sentiment and its brevity.

    * ``sentiment``: VADER compound sentiment of the completion alone, in ``[-1, 1]``
      (positive is higher; text with no sentiment words scores 0). VADER: Hutto & Gilbert,
      2014, "VADER: A Parsimonious Rule-based Model for Sentiment Analysis of Social Media
      Text", ICWSM, via :class:`~online_dt.rewards.VaderSentimentReward` (the
      ``vaderSentiment`` package: lexicon shipped with it, no downloads, deterministic).
    * ``brevity``: minus the number of whitespace-separated words of the completion, capped
      at ``max_words``: in ``[-max_words, 0]`` (units: words), higher is shorter; an empty
      completion scores 0.

    Why these two: they pull against each other, so the pair has a real trade-off (a Pareto
    front) to condition on. VADER squashes the summed valence ``x`` of the sentiment words
    into ``x / sqrt(x^2 + 15)``, so one strongly positive word reaches only about 0.6
    (``"great"``: 0.62) and a compound near 0.9 or above needs several positive words
    (``"a great, wonderful, happy day"``: 0.91): strongly positive text tends to need more
    words, which costs brevity. Both are cheap and run offline.

    Meant to be named from a config::

        reward_model:
          kind: custom
          class_path: "online_dt.rewards.multi:SentimentBrevityReward"
          kwargs: {max_words: 20}

    with ``conditioning.objectives`` listing ``sentiment`` (range ``[-1, 1]``) and
    ``brevity`` (range ``[-max_words, 0]``).

    Args:
        max_words: the word count at which brevity stops decreasing (>= 1), so that the
            objective has a bounded range ``[-max_words, 0]``.

    Raises:
        ValueError: ``max_words`` is not an integer >= 1.
    """

    OBJECTIVES: ClassVar[tuple[str, ...]] = ("sentiment", "brevity")
    """The names :meth:`score` returns, in the order a config would usually list them."""

    def __init__(self, max_words: int = 20) -> None:
        if isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 1:
            raise ValueError(f"max_words must be an integer >= 1, got {max_words!r}")
        self.max_words = max_words
        self._sentiment = VaderSentimentReward(score_prompt=False)

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[dict[str, float]]:
        """Per sample ``{"sentiment": s, "brevity": b}`` with ``s`` in ``[-1, 1]`` and ``b`` in
        ``[-max_words, 0]`` (minus the completion's word count, capped); prompts are not scored.

        Raises:
            ValueError: ``prompts`` and ``completions`` differ in length, or one is a single
                string.
        """
        check_inputs(prompts, completions)
        sentiments = self._sentiment.score(prompts, completions)
        return [
            {"sentiment": s, "brevity": float(-min(len(c.split()), self.max_words))}
            for s, c in zip(sentiments, completions, strict=True)
        ]

    def __repr__(self) -> str:
        return f"SentimentBrevityReward(max_words={self.max_words})"


class BrevityReward:
    """One objective: the brevity of a completion, minus its word count capped at
    ``max_words``, in ``[-max_words, 0]`` (units: words; higher is shorter), as a plain float
    per sample. The single-objective counterpart of :class:`SentimentBrevityReward`'s
    ``brevity``, for comparing one multi-objective run with two single-objective runs
    (``bench/objectives.py``).

    Args:
        max_words: the word count at which brevity stops decreasing (>= 1).

    Raises:
        ValueError: ``max_words`` is not an integer >= 1.
    """

    def __init__(self, max_words: int = 20) -> None:
        if isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 1:
            raise ValueError(f"max_words must be an integer >= 1, got {max_words!r}")
        self.max_words = max_words

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """Per sample ``-min(words, max_words)``; prompts are not scored.

        Raises:
            ValueError: ``prompts`` and ``completions`` differ in length, or one is a single
                string.
        """
        check_inputs(prompts, completions)
        return [float(-min(len(c.split()), self.max_words)) for c in completions]

    def __repr__(self) -> str:
        return f"BrevityReward(max_words={self.max_words})"

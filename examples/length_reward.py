"""An example custom reward model: prefers completions of a chosen length in words.

Plug it in through the config alone::

    reward_model:
      kind: custom
      class_path: examples.length_reward:LengthReward
      kwargs: {target_words: 12}

It follows the ``online_dt.rewards.RewardModel`` protocol: ``score`` gets equal-length lists of
prompts and completions and returns one finite float per sample.
"""

from __future__ import annotations

from collections.abc import Sequence


class LengthReward:
    """Reward ``1 - |words - target_words| / target_words``, clipped to ``[-1, 1]``.

    Args:
        target_words: the preferred completion length in words (>= 1).

    Raises:
        ValueError: ``target_words < 1``.
    """

    def __init__(self, target_words: int = 12) -> None:
        if target_words < 1:
            raise ValueError("target_words must be >= 1")
        self.target_words = target_words

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """One reward per completion in ``[-1, 1]``; 1 at exactly ``target_words`` words."""
        out = []
        for completion in completions:
            gap = abs(len(completion.split()) - self.target_words) / self.target_words
            out.append(max(-1.0, 1.0 - gap))
        return out

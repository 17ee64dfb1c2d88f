"""Reward models: score (prompt, completion) pairs with one finite float each.

A reward model is any object with a ``score(prompts, completions) -> list[float]`` method (the
:class:`RewardModel` protocol). The training loop calls it through :func:`score_checked`, which
validates what came back (:func:`validate_scores`) and raises :class:`RewardModelError` naming
the offending samples.

Modules: :mod:`~online_dt.rewards.protocol` (the protocol, its errors, score validation),
:mod:`~online_dt.rewards.builtins` (:class:`VaderSentimentReward`, :class:`HFClassifierReward`)
and :mod:`~online_dt.rewards.loading` (:func:`load_reward_model` builds one of these, or a user
class named by ``package.module:ClassName``, from a
:class:`~online_dt.config.RewardModelConfig`). This package re-exports their public API, which
user reward classes import from here.

Importing this package is cheap: ``vaderSentiment``, ``torch`` and ``transformers`` are
imported by the classes that need them, when they are constructed.
"""

from __future__ import annotations

from online_dt.rewards.builtins import HFClassifierReward, VaderSentimentReward
from online_dt.rewards.loading import import_reward_class, load_reward_model
from online_dt.rewards.multi import SentimentBrevityReward
from online_dt.rewards.protocol import (
    RewardModel,
    RewardModelError,
    RewardModelLoadError,
    score_checked,
    validate_objective_scores,
    validate_scores,
)

__all__ = [
    "HFClassifierReward",
    "RewardModel",
    "RewardModelError",
    "RewardModelLoadError",
    "SentimentBrevityReward",
    "VaderSentimentReward",
    "import_reward_class",
    "load_reward_model",
    "score_checked",
    "validate_objective_scores",
    "validate_scores",
]

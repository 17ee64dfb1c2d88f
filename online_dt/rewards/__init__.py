"""Reward models: score (prompt, completion) pairs with one finite float each, or, for a run
with several objectives (``conditioning.objectives``), a mapping of named finite floats each.

A reward model is any object with a ``score(prompts, completions)`` method returning one float
(or one mapping of the objectives' names to floats) per sample (the :class:`RewardModel`
protocol). The training loop calls it through :func:`score_checked`, which validates what came
back (:func:`validate_scores`, :func:`validate_objective_scores`) and raises
:class:`RewardModelError` naming the offending samples (and objective).

Modules: :mod:`~online_dt.rewards.protocol` (the protocol and :func:`score_checked`),
:mod:`~online_dt.rewards.errors` (its errors), :mod:`~online_dt.rewards.validation` (score
validation), :mod:`~online_dt.rewards.builtins` (:class:`VaderSentimentReward`,
:class:`HFClassifierReward`), :mod:`~online_dt.rewards.multi` (the multi-objective demo's
sentiment-and-brevity model) and
:mod:`~online_dt.rewards.loading` (:func:`load_reward_model` builds one of these, or a user
class named by ``package.module:ClassName``, from a :class:`~online_dt.config.RewardModelConfig`).
This package re-exports their public API, which user reward classes import from here.

Importing this package is cheap: ``vaderSentiment``, ``torch`` and ``transformers`` are
imported by the classes that need them, when they are constructed.
"""

from __future__ import annotations

from online_dt.rewards.builtins import HFClassifierReward, VaderSentimentReward
from online_dt.rewards.errors import RewardModelError, RewardModelLoadError
from online_dt.rewards.loading import import_reward_class, load_reward_model
from online_dt.rewards.multi import SentimentBrevityReward
from online_dt.rewards.protocol import RewardModel, score_checked
from online_dt.rewards.validation import validate_objective_scores, validate_scores

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

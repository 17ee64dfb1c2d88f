"""The ``buffer`` section: the online loop's replay buffer."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from online_dt.config.base import StrictModel


class ReplayBufferConfig(StrictModel):
    """The replay buffer of scored samples (hindsight-relabeled with their achieved reward)."""

    capacity: int = Field(20_000, ge=1)
    """Most samples held for training; the oldest are evicted first (FIFO)."""

    keep_top_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    """Fraction of the capacity reserved for the highest-reward samples, which FIFO eviction
    skips (0 = pure FIFO)."""

    sampling: Literal["uniform", "recency", "reward_balanced"] = "uniform"
    """How training batches are drawn: ``uniform``; ``recency``, weighted towards recent samples;
    ``reward_balanced``, every reward bin (``reward_bins`` equal-width bins over the held
    rewards' range) equally likely at ``balance_power: 1`` (part way at lower powers), so rare
    rewards (the newest, highest ones, or the lowest) weigh as much as common ones. Re-
    weighting by the label alone leaves the conditional ``p(completion | prompt, reward)`` that
    next-token training fits unchanged wherever a reward is held; only how much each reward
    level is trained on changes."""

    balance_power: float = Field(1.0, gt=0.0, le=1.0)
    """``reward_balanced``: a sample weighs ``(samples held in its bin) ** -balance_power``; 1
    makes every non-empty bin equally likely, 0.5 goes half way from uniform (in log
    weight)."""

    reward_bins: int = Field(10, ge=1)
    """``reward_balanced`` and ``importance_weighting``: equal-width bins over ``[min, max]`` of
    the held rewards."""

    importance_weighting: bool = False
    """Within each reward bin (``reward_bins``), draw samples in proportion to their importance
    weight ``p_base(completion) / pi(completion)`` against the policy that sampled them (self-
    normalised in the bin, truncated at ``importance_clip`` times the bin's median), so that the
    text trained on at each reward follows the base model's distribution of text that earned it,
    not that of whichever policy version sampled it; how often each bin is drawn stays as
    ``sampling`` says (with ``recency``, the bin's total weight is kept). The learner computes
    the weights at append with the base model. Needs ``sampling.temperature: 1`` and
    ``sampling.top_p: 1`` (the sampled log-probs are the raw distribution's). Source: self-
    normalised importance sampling, truncated as in V-trace (Espeholt et al., 2018); the target
    it corrects towards is goal (b) of docs/method.md."""

    importance_clip: float = Field(5.0, gt=1.0)
    """``importance_weighting``: largest weight a sample may have, in multiples of its reward
    bin's median weight (truncation bounds the variance: a bin is never carried by one
    sample)."""

    recency_half_life: float = Field(2000.0, gt=0.0)
    """``recency``: a sample this many insertions old has half the weight of the newest."""

    shard_size: int = Field(1024, ge=1)
    """Samples per parquet shard persisted in the run directory."""

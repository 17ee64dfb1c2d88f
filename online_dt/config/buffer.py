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
    """How training batches are drawn: ``uniform``; ``recency``, weighted towards recent
    samples; ``reward_balanced``, every reward bin (``reward_bins`` equal-width bins over the
    held rewards' range) equally likely, so rare rewards (the newest, highest ones, or the
    lowest) weigh as much as common ones. Re-weighting by the label alone leaves the
    conditional ``p(completion | prompt, reward)`` that next-token training fits unchanged
    wherever a reward is held; only how much each reward level is trained on changes."""

    reward_bins: int = Field(10, ge=1)
    """``reward_balanced``: equal-width bins over ``[min, max]`` of the held rewards."""

    recency_half_life: float = Field(2000.0, gt=0.0)
    """``recency``: a sample this many insertions old has half the weight of the newest."""

    shard_size: int = Field(1024, ge=1)
    """Samples per parquet shard persisted in the run directory."""

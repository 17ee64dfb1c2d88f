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

    sampling: Literal["uniform", "recency"] = "uniform"
    """How training batches are drawn: uniformly, or weighted towards recent samples."""

    recency_half_life: float = Field(2000.0, gt=0.0)
    """``recency``: a sample this many insertions old has half the weight of the newest."""

    shard_size: int = Field(1024, ge=1)
    """Samples per parquet shard persisted in the run directory."""

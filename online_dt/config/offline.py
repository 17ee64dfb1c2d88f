"""The ``offline`` section: settings of the offline demo (``online-dt train-offline``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from online_dt.config.base import StrictModel


class OfflineConfig(StrictModel):
    """The offline decision-transformer demo: sample, score, train conditioned, evaluate."""

    run_dir: Path = Path("runs/offline")
    """Directory for the trained policy and the calibration table."""

    samples_per_prompt: int = Field(4, ge=1)
    """Base-model completions sampled per prompt to build the training data."""

    eval_targets: list[float] | None = None
    """Targets to evaluate; default: a low, a middle and a high quantile of the training rewards."""

    eval_samples_per_target: int = Field(256, ge=1)
    """Completions sampled per evaluation target."""

    seed: int = 0
    """Seed for sampling."""

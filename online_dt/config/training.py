"""The ``training`` section: next-token training of the conditioned policy."""

from __future__ import annotations

from pydantic import Field

from online_dt.config.base import StrictModel


class TrainingConfig(StrictModel):
    """Next-token training of the conditioned policy: what the trainer reads, in both run kinds.

    How many steps are taken is the run's business: ``training.steps`` of the offline demo
    (:class:`OfflineTrainingConfig`), ``online.train_steps_per_iteration`` of an online run.
    """

    lr: float = Field(1e-3, gt=0.0)
    """Peak AdamW learning rate."""

    weight_decay: float = Field(0.0, ge=0.0)
    """AdamW weight decay."""

    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""

    grad_clip: float | None = Field(1.0, gt=0.0)
    """Clip the global gradient norm to this value; ``null`` disables clipping."""

    warmup_steps: int = Field(0, ge=0)
    """Linear learning-rate warm-up from 0 over this many optimizer steps."""

    batch_size: int = Field(64, ge=1)
    """Records per optimizer step."""

    include_prompt_loss: bool = False
    """Also train on prompt tokens (by default only completion tokens carry loss)."""

    head_lr_multiplier: float = Field(10.0, gt=0.0)
    """Learning-rate multiplier for the freshly initialised conditioning parameters (the scalar
    head, or the reward-token embeddings are part of the model and use the base rate)."""

    seed: int = 0
    """Seed for batch order and initialisation."""


class OfflineTrainingConfig(TrainingConfig):
    """The offline demo's ``training`` section: the shared settings plus its step count."""

    steps: int = Field(300, ge=0)
    """Optimizer steps of offline training."""

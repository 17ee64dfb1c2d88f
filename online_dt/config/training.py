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
    """Records per optimizer step drawn from the replay buffer (an online run with
    ``conditioning.best_command`` adds ``online.best_rows``)."""

    length_buckets: int = Field(1, ge=1, le=64)
    """Split each batch into this many micro-batches of samples of similar length (sorted by
    prompt + completion tokens), each padded only to its own longest row, and accumulate their
    gradients before the one optimizer step. The loss is the same, the sum over labelled
    tokens divided by the whole batch's labelled tokens (and the KL penalty each micro-batch's
    mean weighted by its share of them), up to floating-point summation order (and, in a model
    with dropout, other dropout masks); less compute goes to padding. Grouping by length is
    transformers' ``group_by_length`` for batches; this does it inside one batch. 1: one
    padded batch."""

    logits_at_labelled_only: bool = True
    """Apply the model's output layer only at the positions that carry loss (the completion's,
    by default), not at the slot, prompt and padding columns: in the training step and in the
    base model's log-probs of new completions (importance weights, the KL estimate; on the
    sampler or the learner). The same values up to float rounding, with less compute and
    memory (:class:`~online_dt.policy.labelled_logits.LabelledLogits`). A model whose logits
    are more than its output layer applied to its last hidden state (Gemma 2's soft-capping)
    is found by a check on a tiny input and keeps the full forward. ``false``: always the full
    forward, gathered at the same positions."""

    include_prompt_loss: bool = False
    """Also train on prompt tokens (by default only completion tokens carry loss)."""

    head_lr_multiplier: float = Field(10.0, gt=0.0)
    """Learning-rate multiplier for the freshly initialised conditioning parameters: the scalar
    head, the ``reward_on_prompt`` head and the best command's LoRA
    (``conditioning.best_command_lora_rank``); the reward-token embeddings are part of the
    model and use the base rate."""

    reward_lora_lr_multiplier: float = Field(3.0, gt=0.0)
    """Learning-rate multiplier for the reward-scaled LoRA (``conditioning.reward_lora_rank``):
    it trains at ``lr * reward_lora_lr_multiplier``. 3 kept (b) in four seeds of five; 10, the
    head's, broke it in one seed of two (docs/method.md, round 22)."""

    discriminative_coef: float = Field(0.0, ge=0.0)
    """Weight of the discriminative loss added to each micro-batch's next-token loss
    (:mod:`online_dt.training.discriminative`; GeDi, Krause et al., 2020): for up to
    ``discriminative_fraction`` of its rows, each paired with another row's achieved reward
    at least ``discriminative_min_gap`` away, ``softplus(log p(y | x, r') - log p(y | x, r))``,
    summed and divided by the micro-batch's labelled tokens as the next-token loss is. It asks
    the completion to be explained by its own reward label more than by a distant one, which
    the next-token loss alone does not. Each contrasted row costs one more forward and
    backward pass. On the embedded task's default config, 2 with every row drew the
    calibration slope from 0.940 to 0.958 in 1.11x the training time, without meeting more
    targets (docs/method.md, round 32). One reward only
    (not with ``conditioning.objectives``); the best command's rows are never contrasted.
    0: off."""

    discriminative_min_gap: float = Field(0.5, gt=0.0)
    """``discriminative_coef``: least distance, in reward units, between a row's reward and its
    contrast label; rows without such a partner are not contrasted."""

    discriminative_fraction: float = Field(1.0, gt=0.0, le=1.0)
    """``discriminative_coef``: most rows of a micro-batch contrasted, as a fraction of its
    rows (rounded up); fewer costs less time."""

    seed: int = 0
    """Seed for batch order and initialisation."""


class OfflineTrainingConfig(TrainingConfig):
    """The offline demo's ``training`` section: the shared settings plus its step count."""

    steps: int = Field(300, ge=0)
    """Optimizer steps of offline training."""

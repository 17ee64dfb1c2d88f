"""The online loop's ``online`` section and its ``fault_tolerance`` section."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from online_dt.config.base import StrictModel


class OnlineConfig(StrictModel):
    """The online decision-transformer loop."""

    run_dir: Path = Path("runs/default")
    """Run directory: config, metrics.jsonl, samples, buffer shards, checkpoints."""

    iterations: int = Field(30, ge=1)
    """Online iterations (rollout, score, append, train, sync)."""

    prompts_per_iteration: int = Field(64, ge=1)
    """Prompts rolled out per iteration (cycling through the prompt set)."""

    samples_per_prompt: int = Field(4, ge=1)
    """Completions sampled per prompt."""

    train_steps_per_iteration: int = Field(20, ge=0)
    """Learner optimizer steps per iteration, on batches drawn from the replay buffer."""

    mode: Literal["sync", "async"] = "sync"
    """``sync``: rollouts wait for the newest weights. ``async``: on Ray the next iteration's
    rollouts run while the learner trains (in process nothing overlaps), so samples come from
    the policy one version behind the learner (``max_policy_lag``)."""

    max_policy_lag: int = Field(1, ge=1)
    """``async``: largest allowed difference between the learner's version and a trained
    sample's; older samples are dropped before scoring, logged and counted
    (``samples_over_lag`` in the metrics; ``sync`` allows 0). The loop keeps one iteration in
    flight, so samples are 1 version behind; larger values are refused until deeper
    pipelining is implemented."""

    @property
    def warm_start_prompt_count(self) -> int:
        """Prompts the warm start samples: ``warm_start_prompts``, else
        ``prompts_per_iteration``."""
        return self.warm_start_prompts or self.prompts_per_iteration

    @property
    def warm_start_calls(self) -> int:
        """Reward calls of the warm start: :attr:`warm_start_prompt_count` times
        ``warm_start_samples_per_prompt``; 0 without one."""
        return self.warm_start_prompt_count * self.warm_start_samples_per_prompt

    @model_validator(mode="after")
    def _warm_start_options_need_a_warm_start(self) -> OnlineConfig:
        if self.warm_start_samples_per_prompt == 0:
            for name in ("warm_start_prompts", "warm_start_lr"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"online.{name} is set but online.warm_start_samples_per_prompt is 0 "
                        "(no warm start): set warm_start_samples_per_prompt, or drop the field"
                    )
        if self.warm_start_lr is not None and self.warm_start_steps == 0:
            raise ValueError(
                "online.warm_start_lr is set but online.warm_start_steps is 0: the warm start "
                "trains no step at that rate; set warm_start_steps, or drop the field"
            )
        return self

    @field_validator("max_policy_lag")
    @classmethod
    def _only_one_version_behind(cls, value: int) -> int:
        if value != 1:
            raise ValueError(
                f"max_policy_lag: {value} is not implemented; async mode keeps one iteration in "
                "flight, so samples are at most 1 version behind the learner (set 1)"
            )
        return value

    warm_start_samples_per_prompt: int = Field(0, ge=0)
    """Offline warm start: base-model completions per prompt scored and added to the buffer
    before the first iteration (0 = no warm start)."""

    warm_start_steps: int = Field(0, ge=0)
    """Offline warm start: training steps on the warm-start samples."""

    warm_start_prompts: int | None = Field(None, ge=1)
    """Offline warm start: prompts it samples, the first ones of the prompt set (cycling
    through it when larger), each ``warm_start_samples_per_prompt`` times. ``None``: one
    iteration's (``prompts_per_iteration``). Its reward calls are this times
    ``warm_start_samples_per_prompt`` (:attr:`warm_start_calls`). Needs a warm start."""

    warm_start_lr: float | None = Field(None, gt=0.0)
    """Offline warm start: the body's learning rate during ``warm_start_steps`` (the reward
    head and any LoRA keep their multipliers of it: ``training.head_lr_multiplier``,
    ``training.reward_lora_lr_multiplier``); the iterations after train at ``training.lr``.
    The step count's warmup (``training.warmup_steps``) applies to it as to ``training.lr``.
    ``None``: ``training.lr``. Needs a warm start with steps."""

    best_rows: int = Field(16, ge=0)
    """With ``conditioning.best_command``: rows added to each training step, drawn in turn
    from the newest iteration's best samples of the prompts that asked for the best command
    (one per prompt, labelled with the best command; :mod:`online_dt.training.best_rows`). A
    step then has ``training.batch_size`` buffer rows plus these. Not read without
    ``best_command``."""

    best_kl_coef: float = Field(0.0, ge=0.0)
    """With ``conditioning.best_command``: each prompt's best sample is the one with the highest
    achieved reward minus this times its KL to the base model (``log pi - log p_base`` of the
    completion, nats; reward units per nat), the KL-regularised reward of RLHF used to rank
    RAFT's samples (:func:`~online_dt.training.best_rows.best_of_prompts`). 0 (default): the
    highest reward. 1e-4 kept the best command's KL per completion at 73-84 nats where 0 gave
    96-120, for 0.002-0.010 less reward (docs/method.md, round 26). > 0 needs ``best_command`` and
    ``buffer.importance_weighting`` (which gives every sample its ``log p_base - log pi``)."""

    best_full_length: bool = False
    """With ``conditioning.best_command``: among each prompt's samples, those that reached
    ``sampling.max_new_tokens`` without ending rank above those that ended earlier (each group
    by the ranking above), so the best command's rows rarely teach it to stop. Its held-out
    samples that stop after a few words are where its mean reward falls short of GRPO's; this
    made them rarer, at more KL (docs/method.md, round 27). ``false`` (default): one ranking
    for every sample."""

    best_asks_in_buffer: bool = True
    """With ``conditioning.best_command``: whether the samples of the prompts that asked for the
    best command also enter the replay buffer, relabelled with their achieved rewards as every
    other sample. ``false``: they give the best command's rows only and are not kept (not in
    the buffer's files either; the metrics and the running normaliser still see them), so the
    reward targets learn only from the samples asked for reward targets. With
    ``best_command_lora_rank`` the best command's samples come from its own LoRA, text the
    reward targets' policy does not write; keeping them out made the miss at -0.8 smaller in
    five pairs of runs (docs/method.md, round 20).
    ``false`` needs ``best_command``."""

    kl_coef: float = Field(0.0, ge=0.0)
    """KL-to-base penalty coefficient (0 = pure decision transformer; > 0 penalises divergence
    from the frozen base model, as Quark does)."""

    entropy_coef: float = Field(0.0, ge=0.0)
    """Entropy bonus coefficient: the loss subtracts this times the policy's mean per-token
    entropy (nats) on completion tokens (0 = off; Quark uses 0.06 beside ``kl_coef`` 0.05)."""

    kl_samples: int = Field(64, ge=0)
    """Samples per iteration used to estimate KL to the base model (0 disables the estimate)."""

    checkpoint_every: int = Field(1, ge=1)
    """Write a resumable checkpoint every this many iterations (and after the last)."""

    background_checkpoints: bool = True
    """Write each checkpoint but the last on a background thread of the learner, while the next
    iteration goes on: the learner copies the policy and optimizer state to host memory (one
    extra copy of each until written) and the loop continues. ``checkpoints/latest.json``
    names a checkpoint only once it is complete, so a crash during the write resumes from the
    one before. ``false``: the loop waits for each write (for a model whose extra host copy
    does not fit)."""

    samples_logged_per_iteration: int = Field(16, ge=0)
    """Completions per iteration written to ``samples.jsonl`` for inspection."""

    resume_policy: Literal["keep", "discard"] = "keep"
    """On ``--resume``: ``keep`` every persisted sample (those of an interrupted iteration stay
    in the buffer once), or ``discard`` samples persisted after the last checkpoint."""

    tensorboard: bool = False
    """Also write TensorBoard scalars to ``RUN_DIR/tensorboard`` (needs ``tensorboard``)."""

    seed: int = 0
    """Seed of prompt order and sampling."""


class FaultToleranceConfig(StrictModel):
    """What the loop does when a worker dies or a reward model misbehaves."""

    sampler_max_restarts: int = Field(3, ge=-1)
    """Ray restarts of each sampler actor after its process dies (-1: unlimited)."""

    reward_max_restarts: int = Field(3, ge=-1)
    """Ray restarts of the reward-model actor after its process dies (-1: unlimited)."""

    learner_max_restarts: int = Field(2, ge=0)
    """Restarts of the learner, within the job, after its process dies (on Ray): the controller
    starts a new learner actor from the last checkpoint (``online.resume_policy`` applies to the
    samples persisted after it, as on ``--resume``), resyncs every sampler to the checkpoint's
    weights and runs the interrupted iteration again. Counted over the whole job; once they are
    spent (0: at the first loss), the run stops and says how to continue with ``--resume``."""

    rollout_retries: int = Field(2, ge=0)
    """Times an interrupted rollout chunk is re-issued (to the restarted replica) before it
    is dropped with a logged count."""

    reward_retries: int = Field(2, ge=0)
    """Times a scoring batch is retried after the reward model raised, its actor died or the
    call timed out (``reward_timeout_s``)."""

    reward_timeout_s: float | None = Field(300.0, gt=0.0)
    """Longest wait for one scoring call, in seconds (``None``: no limit). A call that has not
    returned by then counts as a failed attempt (reason ``timeout``): it is retried
    (``reward_retries``, ``retry_backoff_s``), then rejected like a raise. On Ray the hung
    reward actor is killed and restarted before the retry (``ray.kill``; each timeout spends
    one of ``reward_max_restarts``). In process (``--local``) a thread cannot be killed: the
    hung call is abandoned, keeps running on its thread (and its CPU, if it computes) and the
    retry runs beside it on the same model object. Raise it for a reward model that is slow
    on purpose (a large classifier on CPU, a rate-limited API): 300 s is far above a healthy
    batch of the built-in models."""

    on_reward_failure: Literal["stop", "skip"] = "stop"
    """After the retries: ``stop`` the run with the error, or ``skip`` the batch (its samples
    go to ``RUN_DIR/rejected/`` with the reason either way)."""

    retry_backoff_s: float = Field(1.0, ge=0.0, le=600.0)
    """Wait before each retry, in seconds (doubled at every further attempt)."""

    restart_timeout_s: float = Field(600.0, gt=0.0)
    """How long a retry waits for a restarting worker to come back (a sampler reloads its
    model), in seconds, before the attempt counts as failed."""

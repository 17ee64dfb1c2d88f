"""Next-token training of the reward-conditioned policy (the decision-transformer objective).

Each example is a :class:`~online_dt.samples.Labelled` sample (prompt, completion,
achieved reward). The policy is conditioned on the example's achieved reward,
which for collected data is the reward the completion *achieved* (hindsight relabeling), and
trained by cross-entropy on the completion tokens (and EOS); prompt tokens carry loss only when
``include_prompt_loss`` is set. AdamW (fused: :func:`~online_dt.training.optim.adamw`) with
global-norm clipping and optional linear warm-up; bf16 autocast on CUDA.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from online_dt.config import TrainingConfig
from online_dt.policy.labelled_logits import LabelledLogits, labelled_positions, labelled_targets
from online_dt.policy.layout import IGNORE_INDEX, ConditionedBatch
from online_dt.policy.logprobs import base_model_inputs
from online_dt.policy.policy import RewardConditionedPolicy
from online_dt.samples import Labelled, reached_length_limit
from online_dt.training.discriminative import discriminative_loss
from online_dt.training.kl import kl_between
from online_dt.training.losses import entropy_of
from online_dt.training.optim import adamw


@dataclass(frozen=True)
class StepMetrics:
    """What one optimizer step did.

    Attributes:
        loss: training loss: mean next-token cross-entropy (nats per labelled token), plus
            ``kl_coef * kl`` when the KL penalty is on, minus ``entropy_coef * entropy`` when
            the entropy bonus is on, plus ``training.discriminative_coef`` times the
            discriminative loss when that is on.
        grad_norm: global gradient norm before clipping.
        lr: base learning rate used for the step.
        tokens: labelled tokens in the batch.
        kl: mean per-token KL to the base model (nats; 0 when the penalty is off).
        entropy: mean per-token entropy of the policy on labelled positions (nats; 0 when the
            entropy bonus is off).
    """

    loss: float
    grad_norm: float
    lr: float
    tokens: int
    kl: float = 0.0
    entropy: float = 0.0


@contextlib.contextmanager
def _trains_only(module: torch.nn.Module, part: torch.nn.Module | None) -> Iterator[None]:
    """Within the block, only ``part``'s parameters of ``module`` get gradients (``None``:
    every trainable one): the others' ``requires_grad`` is off, and set back on at exit."""
    if part is None:  # the usual step: nothing to freeze
        yield
        return
    keep = {id(p) for p in part.parameters()}
    frozen = [p for p in module.parameters() if p.requires_grad and id(p) not in keep]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


def collate(
    policy: RewardConditionedPolicy,
    samples: Sequence[Labelled],
    include_prompt_loss: bool = False,
    max_new_tokens: int | None = None,
) -> tuple[ConditionedBatch, torch.Tensor]:
    """Lay out samples for a teacher-forced step.

    Args:
        max_new_tokens: ``sampling.max_new_tokens``: a sample whose ``completion_tokens``
            reached it (:func:`~online_dt.samples.reached_length_limit`) was cut by the
            sampler and gets no EOS label, as TRL's GRPOTrainer masks a truncated completion
            without adding one; ``None``: every completion gets EOS.

    Returns:
        The right-padded :class:`ConditionedBatch` with labels, and ``rewards`` as a float
        tensor ``[B]`` (reward units; ``[B, M]`` with ``M`` objectives).
    """
    rewards = [r.achieved_reward for r in samples]
    batch = policy.layout(
        [r.prompt for r in samples],
        rewards,
        [r.completion for r in samples],
        include_prompt_loss=include_prompt_loss,
        ended=[
            not reached_length_limit(getattr(r, "completion_tokens", None), max_new_tokens)
            for r in samples
        ],
    )
    return batch, policy.conditioner.reward_tensor(rewards)


class ConditionedTrainer:
    """Owns the optimizer and schedule for a :class:`RewardConditionedPolicy`.

    The conditioning head (scalar mode) gets ``lr * head_lr_multiplier`` because it starts from
    scratch while the rest of the model is pretrained; the reward-scaled LoRA
    (``conditioning.reward_lora_rank``) gets ``lr * reward_lora_lr_multiplier``. With
    ``kl_coef > 0`` and a frozen ``base_model``, the loss adds ``kl_coef`` times the mean
    per-token KL from the policy to the base model on completion tokens (the regulariser of
    Quark, Lu et al., 2022); with
    ``entropy_coef > 0`` it subtracts ``entropy_coef`` times the policy's mean per-token entropy
    there (Quark's entropy bonus, :func:`entropy_of`). Both take the logits at the labelled
    positions only (``cfg.logits_at_labelled_only``). With ``max_new_tokens``
    (``sampling.max_new_tokens``), completions the sampler cut there get no EOS label
    (:func:`collate`).

    Attributes:
        policy_logits: the policy model's
            :class:`~online_dt.policy.labelled_logits.LabelledLogits`.
        base_logits: the base model's, or ``None`` without a base model.

    Warm-up: optimizer step ``s`` (0-based) uses ``lr * min(1, (s + 1) / warmup_steps)``, so the
    first step already moves the weights. (transformers' ``constant_with_warmup`` gives
    ``s / warmup_steps``, 0 on the first step: one step later, hence not used.)
    """

    def __init__(
        self,
        policy: RewardConditionedPolicy,
        cfg: TrainingConfig,
        *,
        bf16_autocast: bool = True,
        base_model: torch.nn.Module | None = None,
        kl_coef: float = 0.0,
        entropy_coef: float = 0.0,
        max_new_tokens: int | None = None,
    ) -> None:
        if kl_coef > 0 and base_model is None:
            raise ValueError("kl_coef > 0 needs the frozen base model")
        if entropy_coef < 0:
            raise ValueError(f"entropy_coef must be >= 0, got {entropy_coef}")
        self.policy = policy
        self.base_model = base_model
        self.kl_coef = kl_coef
        self.entropy_coef = entropy_coef
        self.max_new_tokens = max_new_tokens
        self.cfg = cfg
        self.device = policy.device
        self.autocast = bf16_autocast and self.device.type == "cuda"
        adapter = policy.conditioner.lora
        reward_lora = policy.conditioner.config.reward_lora_rank is not None
        lora = list(adapter.parameters()) if adapter is not None and reward_lora else []
        own = {id(p) for p in lora}
        head_params = [p for p in policy.conditioner.parameters() if id(p) not in own]
        groups: list[dict[str, Any]] = [{"params": list(policy.model.parameters()), "lr": cfg.lr}]
        if head_params:  # the slot's head (and prompt head, and the best command's LoRA)
            groups.append({"params": head_params, "lr": cfg.lr * cfg.head_lr_multiplier})
        if lora:
            groups.append({"params": lora, "lr": cfg.lr * cfg.reward_lora_lr_multiplier})
        self.optimizer = adamw(groups, self.device, betas=cfg.betas, weight_decay=cfg.weight_decay)
        warmup = cfg.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0
        )
        self.step_count = 0
        self._rng = torch.Generator().manual_seed(cfg.seed)
        self._contrast_rng = torch.Generator().manual_seed(cfg.seed + 1)
        split = cfg.logits_at_labelled_only
        self.policy_logits = LabelledLogits(policy.model, split=split, lora=adapter)
        self.base_logits = None if base_model is None else LabelledLogits(base_model, split=split)

    @contextlib.contextmanager
    def learning_rate(self, lr: float | None) -> Iterator[None]:
        """Train the body at ``lr`` inside the block, every parameter group scaled by ``lr /
        training.lr`` (the head and any LoRA keep their multipliers) under the same warmup;
        back to ``training.lr``'s rates at exit. ``None``: no change. Raises ``ValueError`` if
        ``lr`` is not positive."""
        if lr is None:
            yield
            return
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        scheduler, groups = self.scheduler, self.optimizer.param_groups
        saved = list(scheduler.base_lrs)

        def set_rates(bases: list[float]) -> None:
            scheduler.base_lrs = bases
            factor = scheduler.lr_lambdas[0](scheduler.last_epoch)
            for group, base in zip(groups, bases, strict=True):
                group["lr"] = base * factor

        set_rates([base * lr / self.cfg.lr for base in saved])
        try:
            yield
        finally:
            set_rates(saved)

    def step(self, samples: Sequence[Labelled]) -> StepMetrics:
        """One optimizer step on ``samples`` (a batch), in ``cfg.length_buckets`` micro-batches
        of similar length whose gradients add up to the whole batch's; returns its metrics.

        With the best command's LoRA (``conditioning.best_command_lora_rank``), the rows
        labelled above ``reward_max`` (the best command's) are one more micro-batch whose
        gradient reaches the LoRA alone; the other rows do not use the LoRA, so they train
        everything but it. The reward-scaled LoRA (``conditioning.reward_lora_rank``) is
        used by every row, scaled by its normalised label, and trains with the rest."""
        self.policy.train()
        lora = self.policy.conditioner.lora
        buckets: list[tuple[list[Labelled], bool]] = []
        if lora is None or self.policy.conditioner.config.best_command_lora_rank is None:
            buckets = [(part, False) for part in self.length_buckets(samples)]
        else:
            asks_best = self.policy.conditioner.config.asks_best_command
            best = [s for s in samples if asks_best(s.achieved_reward)]  # type: ignore[arg-type]
            rest = [s for s in samples if not asks_best(s.achieved_reward)]  # type: ignore[arg-type]
            buckets = [(part, False) for part in self.length_buckets(rest)] if rest else []
            buckets += [(best, True)] if best else []
        prompt_loss, limit = self.cfg.include_prompt_loss, self.max_new_tokens
        parts = [collate(self.policy, part, prompt_loss, limit) for part, _ in buckets]
        # each micro-batch's mean is weighted by its share of the batch's labelled tokens
        counts = [int((batch.labels[:, 1:] != IGNORE_INDEX).sum()) for batch, _ in parts]
        total = max(sum(counts), 1)
        self.optimizer.zero_grad(set_to_none=True)
        losses: list[float] = []
        kls: list[float] = []
        entropies: list[float] = []
        try:
            for (batch, rewards), count, (_, lora_only) in zip(parts, counts, buckets, strict=True):
                with _trains_only(self.policy, lora if lora_only else None):
                    loss = self._loss(batch.to(self.device), rewards, kls, entropies, lora_only)
                    (loss * (count / total)).backward()
                losses.append(float(loss.detach()))
        finally:
            if lora is not None:
                lora.clear_gate()
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        clip = self.cfg.grad_clip if self.cfg.grad_clip is not None else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.step_count += 1
        return StepMetrics(
            _weighted(losses, counts),
            float(grad_norm),
            lr,
            sum(counts),
            _weighted(kls, counts),
            _weighted(entropies, counts),
        )

    def _loss(
        self,
        batch: ConditionedBatch,
        rewards: torch.Tensor,
        kls: list[float],
        entropies: list[float],
        best_rows: bool = False,
    ) -> torch.Tensor:
        """One micro-batch's loss (see :class:`StepMetrics`); appends its KL and entropy to
        ``kls`` and ``entropies`` when those terms are on. ``best_rows``: the best command's
        micro-batch, which the discriminative loss leaves alone."""
        assert batch.labels is not None
        where = labelled_positions(batch.labels)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
            inputs = self.policy.model_inputs(batch, rewards.to(self.device))
            logits = self.policy_logits(inputs, where)  # [N, V]
        targets = labelled_targets(batch.labels)  # [N]
        if self.cfg.discriminative_coef > 0 and not best_rows:  # per token, for both terms
            token_nll = F.cross_entropy(logits.float(), targets, reduction="none")
            loss = token_nll.sum() / max(len(targets), 1)
            term = self._discriminative(batch, rewards, -token_nll, where)
            loss = loss + self.cfg.discriminative_coef * term
        else:
            loss = F.cross_entropy(logits.float(), targets, reduction="sum") / max(len(targets), 1)
        if self.kl_coef > 0:
            assert self.base_logits is not None
            with torch.no_grad():
                base = self.base_logits(base_model_inputs(batch), where)
            kl_term = kl_between(logits, base)
            loss = loss + self.kl_coef * kl_term
            kls.append(float(kl_term.detach()))
        if self.entropy_coef > 0:
            entropy = entropy_of(logits)
            loss = loss - self.entropy_coef * entropy
            entropies.append(float(entropy.detach()))
        return loss

    def _discriminative(
        self,
        batch: ConditionedBatch,
        rewards: torch.Tensor,
        token_logp: torch.Tensor,
        where: torch.Tensor,
    ) -> torch.Tensor:
        """The micro-batch's :func:`~online_dt.training.discriminative.discriminative_loss`,
        the contrast labels scored by the policy as the labels are."""

        def score(part: ConditionedBatch, labels: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
                return self.policy_logits(
                    self.policy.model_inputs(part, labels.to(self.device)), at
                )

        cfg = self.cfg
        return discriminative_loss(
            score,
            batch,
            rewards,
            token_logp,
            where,
            min_gap=cfg.discriminative_min_gap,
            fraction=cfg.discriminative_fraction,
            generator=self._contrast_rng,
        )

    def length_buckets(self, samples: Sequence[Labelled]) -> list[list[Labelled]]:
        """``samples`` as ``cfg.length_buckets`` micro-batches (fewer when the batch is
        smaller): sorted by prompt + completion tokens (the policy's cached token ids) and cut
        into contiguous groups of ``ceil(len / buckets)``; one group, in the given order, when
        ``length_buckets`` is 1."""
        k = min(self.cfg.length_buckets, len(samples))
        if k <= 1:
            return [list(samples)]
        prompts = self.policy.encode([s.prompt for s in samples])
        completions = self.policy.encode([s.completion for s in samples])
        order = sorted(range(len(samples)), key=lambda i: len(prompts[i]) + len(completions[i]))
        size = -(-len(samples) // k)
        return [[samples[i] for i in order[j : j + size]] for j in range(0, len(order), size)]

    def batches(self, samples: Sequence[Labelled]) -> Iterator[list[Labelled]]:
        """Endless shuffled passes over ``samples`` in batches of ``cfg.batch_size``."""
        if not samples:
            raise ValueError("no training samples")
        size = min(self.cfg.batch_size, len(samples))
        while True:
            order = torch.randperm(len(samples), generator=self._rng).tolist()
            for start in range(0, len(order) - size + 1, size):
                yield [samples[i] for i in order[start : start + size]]

    def fit(
        self,
        samples: Sequence[Labelled],
        steps: int,
        *,
        progress: bool = True,
        desc: str = "train",
    ) -> list[StepMetrics]:
        """Train ``steps`` optimizer steps on shuffled batches of ``samples``.

        Raises:
            ValueError: ``samples`` is empty.
        """
        history: list[StepMetrics] = []
        batches = self.batches(samples)
        bar = tqdm(range(steps), desc=desc, disable=not progress, dynamic_ncols=True)
        for _ in bar:
            metrics = self.step(next(batches))
            history.append(metrics)
            bar.set_postfix(loss=f"{metrics.loss:.3f}")
        return history

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, schedule and RNG state, for checkpoints."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step_count": self.step_count,
            "rng": self._rng.get_state(),
            "contrast_rng": self._contrast_rng.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step_count = state["step_count"]
        self._rng.set_state(state["rng"])
        if "contrast_rng" in state:  # checkpoints written before the discriminative loss
            self._contrast_rng.set_state(state["contrast_rng"])


def _weighted(values: Sequence[float], counts: Sequence[int]) -> float:
    """The micro-batches' means as the batch's: one value as it is, several weighted by their
    labelled tokens; 0.0 for none (no KL penalty or entropy bonus)."""
    if len(values) <= 1:
        return values[0] if values else 0.0
    return sum(v * c for v, c in zip(values, counts, strict=True)) / max(sum(counts), 1)

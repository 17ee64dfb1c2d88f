"""Teacher-forced log-probabilities: of the labelled tokens of a batch in the shared layout,
from its logits, of given completions under a conditioned policy, and of sampled completions
under the unconditioned base model (the other half of the importance weights and of the KL
estimate)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

from online_dt.policy.conditioner import RewardConditioner
from online_dt.policy.labelled_logits import LabelledLogits, labelled_positions, labelled_targets
from online_dt.policy.layout import IGNORE_INDEX, ConditionedBatch, positions_from_mask
from online_dt.samples import Reward, Rollout


def labelled_token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    """Per row, ``log_softmax(logits[t])[labels[t + 1]]`` at every labelled position.

    Labels are aligned with the inputs, as in :class:`~online_dt.policy.layout.ConditionedBatch`
    (the logits at column t predict the token at column t + 1), so row ``i`` of the result holds
    the log-probability of each token ``labels[i, t + 1] != IGNORE_INDEX`` given the columns up
    to t, in sequence order. Computed in float32 whatever the logits' dtype.

    Args:
        logits: ``[B, T, V]`` next-token logits.
        labels: ``[B, T]`` token ids, ``IGNORE_INDEX`` (-100) where no token is scored.

    Returns:
        B float32 tensors, row ``i`` of shape ``[n_i]`` with ``n_i`` the number of labelled
        positions of row ``i`` (column 0 is never a target); natural-log probabilities, ``<= 0``.
    """
    logps = logits[:, :-1].float().log_softmax(-1)
    targets = labels[:, 1:]
    rows: list[torch.Tensor] = []
    for i in range(targets.shape[0]):
        where = (targets[i] != IGNORE_INDEX).nonzero().squeeze(-1)
        rows.append(logps[i, where, targets[i, where]])
    return rows


class ScoringPolicy(Protocol):
    """What :func:`completion_logprobs` uses of a policy: the attributes and methods of
    :class:`~online_dt.policy.policy.RewardConditionedPolicy` of those names (see its docstring;
    calling it is its ``forward``)."""

    conditioner: RewardConditioner

    @property
    def device(self) -> torch.device: ...

    def layout_ids(
        self,
        prompts: Sequence[str],
        rewards: Sequence[Reward],
        completion_ids: Sequence[Sequence[int]] | None = None,
    ) -> ConditionedBatch: ...

    def __call__(self, batch: ConditionedBatch, rewards: torch.Tensor) -> Any: ...


@torch.no_grad()
def completion_logprobs(
    policy: ScoringPolicy,
    prompts: Sequence[str],
    targets: Sequence[Reward],
    completion_ids: Sequence[Sequence[int]],
) -> list[list[float]]:
    """Teacher-forced log-probabilities of given completion tokens under the conditioning.

    Args:
        policy: the conditioned policy (a
            :class:`~online_dt.policy.policy.RewardConditionedPolicy`).
        prompts: B prompt texts.
        targets: B conditioning rewards.
        completion_ids: B lists of completion token ids (as generated, EOS included).

    Returns:
        B lists, one natural-log probability per completion token.
    """
    batch = policy.layout_ids(prompts, targets, completion_ids).to(policy.device)
    rewards = policy.conditioner.reward_tensor(targets).to(policy.device)
    logits = policy(batch, rewards).logits
    assert batch.labels is not None
    return [row.tolist() for row in labelled_token_logprobs(logits, batch.labels)]


def base_model_logits(base_model: torch.nn.Module, batch: ConditionedBatch) -> torch.Tensor:
    """Logits ``[B, T, V]`` of an unconditioned base model on a conditioned batch's tokens
    (every position; the training step and :func:`completion_base_logprobs` take
    :func:`base_model_inputs` to a :class:`~online_dt.policy.labelled_logits.LabelledLogits`).

    The slot's columns (``batch.slot_width`` of them) are masked out, so positions
    (``cumsum(mask) - 1``) start at the first prompt token: the base model sees exactly
    ``prompt + completion``, and column t of its logits lines up with column t of the
    policy's.
    """
    with torch.no_grad():
        return base_model(**base_model_inputs(batch)).logits


def base_model_inputs(batch: ConditionedBatch) -> dict[str, torch.Tensor]:
    """An unconditioned base model's keyword arguments for a conditioned batch's tokens:
    ``input_ids``, and ``attention_mask`` and ``position_ids`` with the slot's columns masked
    out (all ``[B, T]``; see :func:`base_model_logits`)."""
    mask = batch.attention_mask.clone()
    mask[:, : batch.slot_width] = 0
    return {
        "input_ids": batch.input_ids,
        "attention_mask": mask,
        "position_ids": positions_from_mask(mask),
    }


def completion_base_logprobs(
    policy: ScoringPolicy,
    base_model: torch.nn.Module,
    rollouts: Sequence[Rollout],
    *,
    batch_size: int = 64,
    logits: LabelledLogits | None = None,
) -> list[float]:
    """``sum_t log p_base(y_t | prompt, y_<t)`` of each rollout's completion tokens under the
    unconditioned base model, by teacher forcing (natural log, ``<= 0``; ``-inf`` where the
    base model gives a token probability 0).

    Args:
        policy: lays the rollouts out (its tokenizer and slot width; the slot is masked out, so
            its conditioning does not matter): the run's policy, or a fresh one over the base.
        base_model: the frozen base causal LM over the policy's vocabulary.
        rollouts: rollouts with ``prompt``, ``target`` and ``token_ids``.
        batch_size: rollouts per forward pass of the base model.
        logits: ``base_model``'s :class:`~online_dt.policy.labelled_logits.LabelledLogits`
            (its output layer at the completion's positions only), kept by a caller that
            scores every iteration; ``None`` builds one (its check, two tiny forwards).

    Raises:
        ValueError: ``logits`` wraps another model than ``base_model``.

    Returns:
        One float per rollout, in the order of ``rollouts``. The forward passes take the
        rollouts in order of length (prompt characters plus completion tokens), so each batch
        pads to a length close to its rows' (256 rollouts of the default config's policy, one
        thread: 0.27 s in sampling order, 0.21 s sorted).
    """
    if logits is not None and logits.model is not base_model:
        raise ValueError("logits must be base_model's LabelledLogits")
    scorer = logits if logits is not None else LabelledLogits(base_model)
    order = sorted(range(len(rollouts)), key=lambda i: _length_key(rollouts[i]))
    out: list[float] = [0.0] * len(rollouts)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            chunk = [rollouts[i] for i in index]
            batch = policy.layout_ids(
                [r.prompt for r in chunk], [r.target for r in chunk], [r.token_ids for r in chunk]
            ).to(policy.device)
            assert batch.labels is not None
            where = labelled_positions(batch.labels)
            logps = scorer(base_model_inputs(batch), where).float().log_softmax(-1)  # [N, V]
            token = logps.gather(1, labelled_targets(batch.labels)[:, None]).squeeze(1)
            sums = torch.zeros(len(chunk), dtype=torch.float64, device=token.device)
            sums.index_add_(0, where.nonzero()[:, 0], token.double())
            for i, total in zip(index, sums.tolist(), strict=True):
                out[i] = total
    return out


def _length_key(rollout: Rollout) -> tuple[int, int]:
    """Sort key that groups rollouts of similar padded length (prompt characters stand in
    for prompt tokens, which would need the tokenizer)."""
    return (len(rollout.prompt) + 4 * len(rollout.token_ids), len(rollout.token_ids))

"""Teacher-forced log-probabilities: of the labelled tokens of a batch in the shared layout,
from its logits, and of given completions under a conditioned policy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

from online_dt.policy.conditioner import RewardConditioner
from online_dt.policy.layout import IGNORE_INDEX, ConditionedBatch
from online_dt.samples import Reward


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

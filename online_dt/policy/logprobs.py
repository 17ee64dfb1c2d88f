"""Log-probabilities of the labelled tokens of a batch in the shared layout, from its logits."""

from __future__ import annotations

import torch

from online_dt.policy.layout import IGNORE_INDEX


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

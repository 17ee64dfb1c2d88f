"""The loss terms of a next-token step: the mean cross-entropy of whole logits and the
policy's mean entropy, over labelled positions (``IGNORE_INDEX`` elsewhere).

:class:`~online_dt.training.trainer.ConditionedTrainer` takes its cross-entropy at the
labelled positions alone and adds :func:`entropy_of` there; :func:`next_token_loss` and
:func:`mean_entropy` are the same means over whole ``[B, T, V]`` logits, for a plain causal LM's
step (``bench/peers.py``'s RAFT) and as the references the tests check against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from online_dt.policy.layout import IGNORE_INDEX


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy of ``logits[:, t]`` against ``labels[:, t + 1]``.

    The loss of whole ``[B, T, V]`` logits, for a plain causal LM's step (``bench/peers.py``'s
    RAFT); :class:`ConditionedTrainer` takes the same mean of the logits at the labelled
    positions only.

    Args:
        logits: ``[B, T, V]``.
        labels: ``[B, T]`` aligned with the inputs, ``IGNORE_INDEX`` (-100) where no loss is
            taken.

    Returns:
        The scalar loss (nats per labelled token) and the number of labelled tokens.
    """
    # shift the labels left instead of slicing the logits: a slice of ``[B, T, V]`` is not
    # contiguous, and flattening it copied the logits (and their gradient) on every step
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    count = int((targets != IGNORE_INDEX).sum())
    loss = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss / max(count, 1), count


def mean_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the policy's next-token distribution over labelled positions, in nats.

    The entropy term of Quark's loss (Lu et al., 2022: NLL + 0.05 KL - 0.06 entropy per
    token), over the same positions as :func:`next_token_loss`: :func:`entropy_of` of the
    logits there.

    Args:
        logits: ``[B, T, V]``; position ``t`` predicts ``labels[:, t + 1]``.
        labels: ``[B, T]``, ``IGNORE_INDEX`` (-100) where no loss is taken.

    Returns:
        A scalar tensor in ``[0, log V]``, differentiable in ``logits`` (0 when no position is
        labelled).
    """
    where = labels[:, 1:] != IGNORE_INDEX
    return entropy_of(logits[:, :-1][where])


def entropy_of(logits: torch.Tensor) -> torch.Tensor:
    """Mean entropy, in nats, of the next-token distributions of logits already taken at the
    labelled positions (:class:`~online_dt.policy.labelled_logits.LabelledLogits`).

    Args:
        logits: ``[N, V]``.

    Returns:
        A scalar tensor in ``[0, log V]``, float32, differentiable in ``logits`` (0 when ``N``
        is 0).
    """
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    logp = logits.float().log_softmax(-1)
    return -(logp.exp() * logp).sum(-1).mean()

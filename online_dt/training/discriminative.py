"""The discriminative loss of a reward-conditioned policy: its own conditional as a classifier.

A policy conditioned on a reward defines, by Bayes' rule, a classifier of which of two rewards
a completion was labelled with: ``P(r | x, y) = p(y | x, r) / (p(y | x, r) + p(y | x, r'))``
under equal priors. GeDi (Krause et al., 2020, arXiv 2009.06367) trains a class-conditional
language model with the classifier's negative log-likelihood added to the generative loss, so
that the conditioning code explains the text and does not only sit beside it. Here the
contrast label ``r'`` is another row's achieved reward, at least ``min_gap`` away, and the term
of one row is ``softplus(log p(y | x, r') - log p(y | x, r))``, with ``log p`` summed over the
completion's labelled tokens (as in :func:`~online_dt.policy.logprobs.completion_logprobs`).
A policy that gives the same text under both labels pays ``log 2``; one that explains the text
by its own label by a few nats more than by the contrast pays about nothing.

:class:`~online_dt.training.trainer.ConditionedTrainer` adds :func:`discriminative_loss`,
weighted by ``training.discriminative_coef``, to each micro-batch's next-token loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from online_dt.policy.labelled_logits import labelled_targets
from online_dt.policy.layout import ConditionedBatch


def contrast_rows(
    rewards: torch.Tensor, min_gap: float, fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick the rows to contrast and their contrast labels.

    Each row is paired with the row a random permutation sends it to; rows whose pair's reward
    is at least ``min_gap`` from their own are kept, at most ``ceil(fraction * B)`` of them, in
    the permutation's order.

    Args:
        rewards: ``[B]`` achieved rewards (reward units; one objective).
        min_gap: least ``|r - r'|`` of a kept pair (reward units, > 0).
        fraction: most rows kept, as a fraction of ``B``, in ``(0, 1]``.
        generator: the permutation's random stream (CPU).

    Returns:
        ``rows`` (``LongTensor[K]``, indices into ``rewards``) and ``contrast`` (``[K]``, the
        contrast label of each), ``K <= ceil(fraction * B)``; both empty when no pair is
        ``min_gap`` apart (e.g. every reward equal).

    Raises:
        ValueError: ``rewards`` is not one-dimensional (several objectives).
    """
    if rewards.dim() != 1:
        raise ValueError(f"contrast labels need one reward per row, got shape {rewards.shape}")
    b = rewards.shape[0]
    perm = torch.randperm(b, generator=generator).to(rewards.device)
    contrast = rewards[perm]
    rows = ((rewards - contrast).abs() >= min_gap).nonzero()[:, 0]
    rows = rows[: math.ceil(fraction * b)]
    return rows, contrast[rows]


def row_sums(token_values: torch.Tensor, row_of_token: torch.Tensor, rows: int) -> torch.Tensor:
    """Sum per-token values into their rows.

    Args:
        token_values: ``[N]``, e.g. the log-probability of each labelled token.
        row_of_token: ``LongTensor[N]``, each token's row in ``[0, rows)``.
        rows: the number of rows.

    Returns:
        ``[rows]``, differentiable in ``token_values`` (0 for a row without tokens).
    """
    out = torch.zeros(rows, dtype=token_values.dtype, device=token_values.device)
    return out.index_add(0, row_of_token, token_values)


def discriminative_terms(logp_label: torch.Tensor, logp_contrast: torch.Tensor) -> torch.Tensor:
    """GeDi's two-way classification loss of each contrasted row.

    Args:
        logp_label: ``[K]``, ``log p(y | x, r)`` of each row's completion under its own label
            (nats, summed over its labelled tokens).
        logp_contrast: ``[K]``, the same under its contrast label.

    Returns:
        ``[K]``: ``softplus(logp_contrast - logp_label) = -log P(r | x, y)``, in ``(0, inf)``;
        ``log 2`` where the two are equal.
    """
    return F.softplus(logp_contrast - logp_label)


def discriminative_loss(
    score: Callable[[ConditionedBatch, torch.Tensor, torch.Tensor], torch.Tensor],
    batch: ConditionedBatch,
    rewards: torch.Tensor,
    token_logp: torch.Tensor,
    where: torch.Tensor,
    *,
    min_gap: float,
    fraction: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """One micro-batch's discriminative loss: :func:`discriminative_terms` summed over the rows
    :func:`contrast_rows` picks, divided by the micro-batch's labelled tokens (the next-token
    loss's denominator, so ``coef`` weighs the two per token alike).

    Args:
        score: ``score(rows_batch, labels, positions)`` -> the policy's logits ``[N', V]`` at
            ``positions`` (``BoolTensor[K, T]``) of ``rows_batch`` conditioned on ``labels``
            (``[K]``), as the next-token loss's forward pass takes them.
        batch: the micro-batch, with labels.
        rewards: ``[B]`` its rows' labels (achieved rewards).
        token_logp: ``[N]`` the log-probability of each labelled token under ``rewards``,
            from the next-token loss's forward pass and cross-entropy (reused, not
            recomputed).
        where: ``BoolTensor[B, T]``, its labelled positions
            (:func:`~online_dt.policy.labelled_logits.labelled_positions`).
        min_gap, fraction, generator: as :func:`contrast_rows` takes them.

    Returns:
        A scalar tensor >= 0, differentiable through both forward passes; 0 (still in the
        graph) when no row is contrasted.

    Raises:
        ValueError: ``rewards`` is not one-dimensional.
    """
    assert batch.labels is not None
    rows, contrast = contrast_rows(rewards, min_gap, fraction, generator)
    tokens = max(int(where.sum()), 1)
    if len(rows) == 0:
        return token_logp.sum() * 0.0
    rows = rows.to(token_logp.device)
    logp_label = row_sums(token_logp, where.nonzero()[:, 0], where.shape[0])[rows]
    part, part_where = batch.select(rows), where[rows]
    assert part.labels is not None
    part_logits = score(part, contrast, part_where)
    part_targets = labelled_targets(part.labels)
    part_logp = -F.cross_entropy(part_logits.float(), part_targets, reduction="none")
    logp_contrast = row_sums(part_logp, part_where.nonzero()[:, 0], len(rows))
    return discriminative_terms(logp_label, logp_contrast).sum() / tokens

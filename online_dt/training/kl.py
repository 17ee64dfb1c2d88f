"""The KL from the conditioned policy to its frozen base model.

Two quantities: the exact per-token KL over the vocabulary at the labelled positions (the
training regulariser: :func:`kl_between` of the logits taken there, which the trainer uses;
:func:`kl_to_base` of whole ``[B, T, V]`` logits, the same quantity from the full forward), and
:func:`kl_per_completion`, the sample-based ``k1`` estimate of the KL per completion (Schulman,
"Approximating KL Divergence", 2020) that the learner and the calibration report log.
:func:`~online_dt.policy.logprobs.base_model_inputs` lays a conditioned batch out for the base
model so that its columns line up with the policy's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from online_dt.policy.labelled_logits import LabelledLogits
from online_dt.policy.layout import IGNORE_INDEX
from online_dt.policy.logprobs import completion_base_logprobs
from online_dt.policy.policy import RewardConditionedPolicy
from online_dt.samples import Rollout


def kl_to_base(
    policy_logits: torch.Tensor, base_logits: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Mean per-token KL(policy || base) over labelled next-token positions, in nats:
    :func:`kl_between` of whole ``[B, T, V]`` logits taken at the labelled positions.

    Args:
        policy_logits: ``[B, T, V]`` logits of the conditioned policy.
        base_logits: ``[B, T, V]`` logits of the frozen base model at the same columns.
        labels: ``[B, T]`` aligned with the inputs, ``IGNORE_INDEX`` (-100) where no loss is
            taken.

    Returns:
        A scalar tensor, differentiable in ``policy_logits`` (0 when no position is labelled).
    """
    where = labels[:, 1:] != IGNORE_INDEX
    return kl_between(policy_logits[:, :-1][where], base_logits[:, :-1][where])


def kl_between(policy_logits: torch.Tensor, base_logits: torch.Tensor) -> torch.Tensor:
    """Mean per-position KL(policy || base), in nats, of logits already taken at the labelled
    positions (:class:`~online_dt.policy.labelled_logits.LabelledLogits`).

    Args:
        policy_logits: ``[N, V]`` logits of the conditioned policy.
        base_logits: ``[N, V]`` logits of the frozen base model at the same positions.

    Returns:
        A scalar tensor, differentiable in ``policy_logits``, computed in float32 (0 when
        ``N`` is 0).
    """
    if policy_logits.shape[0] == 0:
        return policy_logits.sum() * 0.0
    logp = policy_logits.float().log_softmax(-1)
    logq = base_logits.float().log_softmax(-1)
    return (logp.exp() * (logp - logq)).sum(-1).mean()


def kl_per_completion(
    policy: RewardConditionedPolicy,
    base_model: torch.nn.Module,
    rollouts: Sequence[Rollout],
    *,
    batch_size: int = 64,
    logits: LabelledLogits | None = None,
) -> list[float]:
    """Sample-based KL(policy || base) of each completion, in nats: the ``k1`` estimator
    (Schulman, "Approximating KL Divergence", 2020), ``sum_t (log pi(y_t) - log p_base(y_t))``
    with the policy's raw logprobs as sampled; its mean over samples from the policy is an
    unbiased estimate of the KL per completion.

    Args:
        policy: the :class:`~online_dt.policy.policy.RewardConditionedPolicy` (tokenizer and
            conditioning slot ids).
        base_model: the frozen base causal LM over the same vocabulary.
        rollouts: rollouts with ``prompt``, ``target``, ``token_ids`` and ``logprobs``.
        batch_size: rollouts per forward pass of the base model.
        logits: ``base_model``'s :class:`~online_dt.policy.labelled_logits.LabelledLogits`,
            passed on to :func:`~online_dt.policy.logprobs.completion_base_logprobs`.

    Returns:
        One float per rollout, in the order of ``rollouts``, nats per completion (can be
        negative for a single sample). The base model's half is the rollouts' own
        ``base_logprob`` when every one carries it (``sampler.base_logprobs``: the sampler
        computed it), else :func:`~online_dt.policy.logprobs.completion_base_logprobs` here
        (which sorts the rollouts by length for its forward passes).
    """
    sent = [r.base_logprob for r in rollouts if r.base_logprob is not None]
    if len(sent) == len(rollouts):
        base = sent
    else:
        base = completion_base_logprobs(
            policy, base_model, rollouts, batch_size=batch_size, logits=logits
        )
    return [float(sum(r.logprobs) - b) for r, b in zip(rollouts, base, strict=True)]

"""Metrics of the peer benchmark (``bench/peers.py``): the k1 estimate of KL(policy || base) per
token and per completion and the best-of-n KL bound; and, shared with ``online-dt eval`` from
:mod:`online_dt.eval.base_samples` and :mod:`online_dt.eval.reference` (one implementation for
both), word-level distinct-n, the teacher-forced log-probabilities and NLL of samples under the
base model, and the binned-base reference.

Every method of the benchmark is evaluated with these functions on the same held-out prompts, so
the numbers are comparable across methods. Log-probabilities are natural logs (nats); a
completion's tokens are the generated ids, EOS included when generation stopped on it.

The functions are pure (lists of floats and strings in, numbers out) except
:func:`teacher_forced_logprobs`, which runs a causal LM; ``torch`` is imported only there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from online_dt.eval.base_samples import nll_per_token, teacher_forced_logprobs, word_distinct_n
from online_dt.eval.reference import BinReference, binned_reference

__all__ = [
    "BinReference",
    "KLEstimate",
    "best_of_n_kl_bound",
    "binned_reference",
    "k1_kl",
    "nll_per_token",
    "teacher_forced_logprobs",
    "word_distinct_n",
]

# ---------------------------------------------------------------------------------------------
# log-probabilities, KL and NLL
# ---------------------------------------------------------------------------------------------


def _check_aligned(
    policy_logprobs: Sequence[Sequence[float]], base_logprobs: Sequence[Sequence[float]]
) -> None:
    if len(policy_logprobs) != len(base_logprobs):
        raise ValueError(f"{len(policy_logprobs)} policy rows but {len(base_logprobs)} base rows")
    for i, (lp, lb) in enumerate(zip(policy_logprobs, base_logprobs, strict=True)):
        if len(lp) != len(lb):
            raise ValueError(f"completion {i}: {len(lp)} policy logprobs but {len(lb)} base")
    if not policy_logprobs or sum(len(lp) for lp in policy_logprobs) == 0:
        raise ValueError("no completion tokens")


@dataclass(frozen=True)
class KLEstimate:
    """The k1 estimate of KL(policy || base) from samples of the policy.

    Attributes:
        per_completion: mean over completions of ``sum_t log pi(y_t) - log p_base(y_t)``, nats
            per completion (unbiased for the KL between the two distributions over whole
            completions; a single value can be negative).
        per_token: the summed log-ratios over all completions divided by their total token
            count, nats per token (the per-completion KL divided by the mean length).
        stderr_per_completion: standard error of ``per_completion`` (sample standard deviation
            of the per-completion values over ``sqrt(N)``; 0 for N = 1).
        completions: N.
        tokens: total completion tokens (EOS included).
    """

    per_completion: float
    per_token: float
    stderr_per_completion: float
    completions: int
    tokens: int


def k1_kl(
    policy_logprobs: Sequence[Sequence[float]], base_logprobs: Sequence[Sequence[float]]
) -> KLEstimate:
    """The k1 estimator of KL(policy || base) (Schulman, 2020, "Approximating KL Divergence"):
    for completions ``y`` sampled from the policy, ``log pi(y) - log p_base(y)`` summed over
    tokens; its mean over samples is an unbiased estimate of the KL per completion.

    The policy must have sampled the completions from exactly the distribution its logprobs
    describe (temperature 1, top-p 1, nothing banned), else the estimate is of nothing.

    Args:
        policy_logprobs: N lists of per-token log-probabilities (nats) of each completion under
            the policy that sampled it.
        base_logprobs: N lists of the same tokens' log-probabilities under the base model.

    Returns:
        :class:`KLEstimate`.

    Raises:
        ValueError: the lists are not aligned (count or per-completion length), or there is no
            token at all.
    """
    _check_aligned(policy_logprobs, base_logprobs)
    values = [
        math.fsum(lp) - math.fsum(lb) for lp, lb in zip(policy_logprobs, base_logprobs, strict=True)
    ]
    n = len(values)
    tokens = sum(len(lp) for lp in policy_logprobs)
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return KLEstimate(mean, math.fsum(values) / tokens, math.sqrt(var / n), n, tokens)


def best_of_n_kl_bound(n: int) -> float:
    """KL(best-of-n || base) bound, nats per completion: ``log n - (n - 1) / n``.

    Stated by Stiennon et al. (2020, "Learning to summarize from human feedback", appendix) as
    the KL of best-of-n sampling; Beirami et al. (2024, "Theoretical guarantees on the
    best-of-n alignment policy") show it is an upper bound, reached when the reward has no ties
    (VADER gives many completions exactly 0, so the true KL here is lower).

    Raises:
        ValueError: ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return math.log(n) - (n - 1) / n

"""Metrics of the peer benchmark (``bench/peers.py``): word-level distinct-n, the k1 estimate of
KL(policy || base) per token and per completion, the NLL of samples under the base model, the
best-of-n KL bound, and the binned-base reference.

Every method of the benchmark is evaluated with these functions on the same held-out prompts, so
the numbers are comparable across methods. Log-probabilities are natural logs (nats); a
completion's tokens are the generated ids, EOS included when generation stopped on it.

The functions are pure (lists of floats and strings in, numbers out) except
:func:`teacher_forced_logprobs`, which runs a causal LM; ``torch`` is imported only there.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from online_dt.util.metrics import distinct_n

# ---------------------------------------------------------------------------------------------
# diversity
# ---------------------------------------------------------------------------------------------


def word_distinct_n(texts: Sequence[str], n: int) -> float:
    """Word-level distinct-n of a set of completions (Li et al., 2016): unique word n-grams over
    all word n-grams, words being the completion text split on whitespace.

    Uses :func:`online_dt.util.metrics.distinct_n` on the word lists, so n-grams never cross from
    one completion into the next. The value falls as the set grows (more repeats), so compare
    sets of about the same size.

    Args:
        texts: N completion texts (without the prompt).
        n: n-gram order, >= 1.

    Returns:
        A ratio in ``[0, 1]``; 0.0 when no completion has ``n`` words.

    Raises:
        ValueError: ``n < 1``.
    """
    return distinct_n([t.split() for t in texts], n)


# ---------------------------------------------------------------------------------------------
# log-probabilities, KL and NLL
# ---------------------------------------------------------------------------------------------


def teacher_forced_logprobs(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
    *,
    pad_id: int = 0,
    batch_size: int = 256,
) -> list[list[float]]:
    """Log-probabilities of given completion tokens under a plain (unconditioned) causal LM.

    Each row is ``[*prompt, *completion]``, right padded, with the model's default positions
    (0, 1, ... from the first prompt token, as the base model was trained), and the
    log-probability of each completion token is read from ``log_softmax`` of the logits at the
    position before it (``online_dt.policy.logprobs.labelled_token_logprobs``): the raw
    distribution (temperature 1, no top-p), the one a sampler at
    temperature 1 and top-p 1 draws from.

    Args:
        model: a Hugging Face causal LM (``forward(input_ids, attention_mask)`` returns
            ``logits`` of shape ``[B, T, V]``).
        prompt_ids: N prompts' token ids, each non-empty.
        completion_ids: N completions' token ids (EOS included where generated), each non-empty.
        pad_id: id written into padding (masked out, never scored).
        batch_size: rows per forward pass.

    Returns:
        N lists; list ``i`` has ``len(completion_ids[i])`` floats, nats, each ``<= 0``.

    Raises:
        ValueError: the two sequences differ in length, or a prompt or completion is empty.
    """
    import torch

    from online_dt.policy.layout import IGNORE_INDEX
    from online_dt.policy.logprobs import labelled_token_logprobs

    if len(prompt_ids) != len(completion_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(completion_ids)} completions")
    if any(len(p) == 0 for p in prompt_ids) or any(len(c) == 0 for c in completion_ids):
        raise ValueError("prompts and completions must be non-empty")
    device = next(model.parameters()).device
    out: list[list[float]] = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(prompt_ids), batch_size):
            rows = [
                (list(p), list(c))
                for p, c in zip(
                    prompt_ids[start : start + batch_size],
                    completion_ids[start : start + batch_size],
                    strict=True,
                )
            ]
            width = max(len(p) + len(c) for p, c in rows)
            ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
            for i, (p, c) in enumerate(rows):
                ids[i, : len(p) + len(c)] = torch.tensor(p + c)
                mask[i, : len(p) + len(c)] = 1
                labels[i, len(p) : len(p) + len(c)] = torch.tensor(c)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            out.extend(r.tolist() for r in labelled_token_logprobs(logits, labels.to(device)))
    model.train(was_training)
    return out


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


def nll_per_token(base_logprobs: Sequence[Sequence[float]]) -> float:
    """Negative log-likelihood of completions under the base model, nats per token:
    ``-sum_i sum_t log p_base(y_it) / sum_i len(y_i)``.

    Raises:
        ValueError: there is no token.
    """
    tokens = sum(len(lb) for lb in base_logprobs)
    if tokens == 0:
        raise ValueError("no completion tokens")
    return -math.fsum(x for lb in base_logprobs for x in lb) / tokens


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


# ---------------------------------------------------------------------------------------------
# the binned-base reference
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BinReference:
    """Base-model samples whose reward lies within ``half_width`` of ``center``: what a perfect
    conditional model ``p_base(y | r(y) ~ center)`` would produce.

    Attributes:
        center: the bin centre (reward units; an online-dt target).
        half_width: half the bin width (reward units).
        count: base samples in the bin.
        fraction: ``count`` over all base samples.
        reward_mean: their mean reward (``nan`` when the bin is empty).
        nll_per_token: their NLL under the base model, nats per token (``nan`` when empty).
        mean_tokens: their mean completion length in tokens (``nan`` when empty).
        distinct_2: word-level distinct-2 of at most ``max_samples`` of them (a seeded
            subsample, so the set size is comparable to an evaluated method's; ``nan`` when
            empty).
        distinct_2_samples: how many samples that distinct-2 was computed on.
        kl_ideal_lower_bound: ``-log(fraction)``, nats per completion (``inf`` when empty). The
            KL of the conditional ``p_base(y | y in bin)`` to ``p_base`` is ``-log P(bin)``; per
            prompt it is ``-log P(bin | x)``, whose mean over prompts is at least
            ``-log`` of the pooled fraction (Jensen), so this is a lower bound on the KL of the
            perfect prompt-conditional model.
        kl_ideal_lower_bound_per_token: ``kl_ideal_lower_bound / mean_tokens``.
    """

    center: float
    half_width: float
    count: int
    fraction: float
    reward_mean: float
    nll_per_token: float
    mean_tokens: float
    distinct_2: float
    distinct_2_samples: int
    kl_ideal_lower_bound: float
    kl_ideal_lower_bound_per_token: float

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict."""
        return asdict(self)


def binned_reference(
    rewards: Sequence[float],
    texts: Sequence[str],
    base_logprobs: Sequence[Sequence[float]],
    centers: Sequence[float],
    *,
    half_width: float = 0.1,
    max_samples: int | None = None,
    seed: int = 0,
) -> list[BinReference]:
    """For each centre, the statistics of the base samples with ``|r - center| <= half_width``.

    Args:
        rewards: N rewards of base-model samples (reward units).
        texts: their N completion texts.
        base_logprobs: their N lists of per-token base log-probabilities (nats).
        centers: the reward levels to look at (e.g. online-dt's targets).
        half_width: half the bin width (reward units), > 0.
        max_samples: distinct-2 is computed on a seeded random subsample of at most this many
            (``None``: all of the bin).
        seed: seed of that subsample.

    Returns:
        One :class:`BinReference` per centre, in order.

    Raises:
        ValueError: the inputs differ in length, are empty, or ``half_width <= 0``.
    """
    if not len(rewards) == len(texts) == len(base_logprobs):
        raise ValueError("rewards, texts and base_logprobs must have the same length")
    if not rewards:
        raise ValueError("no base samples")
    if half_width <= 0:
        raise ValueError(f"half_width must be > 0, got {half_width}")
    out = []
    for center in centers:
        idx = [i for i, r in enumerate(rewards) if abs(r - center) <= half_width + 1e-12]
        count = len(idx)
        fraction = count / len(rewards)
        if count == 0:
            nan = math.nan
            out.append(
                BinReference(center, half_width, 0, 0.0, nan, nan, nan, nan, 0, math.inf, math.inf)
            )
            continue
        chosen = list(idx)
        if max_samples is not None and count > max_samples:
            chosen = sorted(random.Random(seed).sample(idx, max_samples))
        tokens = sum(len(base_logprobs[i]) for i in idx)
        kl_lb = -math.log(fraction)
        mean_tokens = tokens / count
        out.append(
            BinReference(
                center=float(center),
                half_width=half_width,
                count=count,
                fraction=fraction,
                reward_mean=math.fsum(rewards[i] for i in idx) / count,
                nll_per_token=nll_per_token([base_logprobs[i] for i in idx]),
                mean_tokens=mean_tokens,
                distinct_2=word_distinct_n([texts[i] for i in chosen], 2),
                distinct_2_samples=len(chosen),
                kl_ideal_lower_bound=kl_lb,
                kl_ideal_lower_bound_per_token=kl_lb / mean_tokens,
            )
        )
    return out

"""The binned-base reference: what a perfect conditional model would produce at each reward.

A policy conditioned on a target reward ``r`` is faithful when its samples look like the base
model's own samples that earned ``r``. :func:`base_reference` measures those: it samples the
base model (plain, no conditioning) on a set of prompts, scores the samples with the reward
model, reads their log-probabilities under the base model, and bins them by reward, ``±
half_width`` around each centre (:func:`binned_reference`). Per bin it gives the samples' mean
reward, NLL under the base model per token, word distinct-2 and ``-log P(bin)``, a lower bound
on the KL to the base of any policy whose samples all land in the bin (the KL of the perfect
conditional model ``p_base(y | r(y) in bin)``; see :class:`BinReference`).

Both ``online-dt eval --reference-samples N``
(:func:`~online_dt.eval.reference_report.eval_reference`, written into the report as
``reference``; the dashboard's reward-vs-KL panel draws its ``grid``) and the peer benchmark
(``bench/peers.py``, which imports these functions) use this one implementation. The reference
comes from the reduction of reward-conditioned generation to conditioning on a reward level:
the optimal reward-conditioned policy at level ``r`` is ``p_base(y | r(y) = r)`` (Korbak et al.,
2022, "RL with KL penalties is better viewed as Bayesian inference"; Lu et al., 2022, "Quark").

The base samples are drawn and measured by :mod:`online_dt.eval.base_samples`.
Log-probabilities are natural logs (nats); a completion's tokens are the generated ids, EOS
included when generation stopped on it.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from online_dt.eval.base_samples import (
    encode_prompts,
    nll_per_token,
    sample_base,
    teacher_forced_logprobs,
    word_distinct_n,
)

DEFAULT_REFERENCE_SAMPLES = 256
"""Base samples of ``online-dt eval``'s reference by default (a few seconds for the embedded
model on 2 cores; the bench uses thousands: bins of rare rewards need them)."""

DEFAULT_BIN_HALF_WIDTH = 0.1
"""Half the width of a reference bin, reward units (the bins are ``|r - centre| <= 0.1``)."""

MIN_BIN_COUNT = 5
"""Bins with fewer base samples are left off the reference curve (their ``-log P(bin)`` and NLL
rest on a handful of samples)."""

# ---------------------------------------------------------------------------------------------
# the bins
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
    half_width: float = DEFAULT_BIN_HALF_WIDTH,
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


def reward_grid(rewards: Sequence[float], half_width: float) -> list[float]:
    """Bin centres every ``2 * half_width`` (multiples of it, so bins tile the line without
    overlap), from the one at or below the lowest reward to the one at or above the highest:
    the reward levels of the base's own reward-vs-NLL and reward-vs-KL curves.

    For rewards spanning ``[-1, 1]`` (VADER) and ``half_width`` 0.1 this is -1.0, -0.8, ..., 1.0.

    Raises:
        ValueError: no rewards, a reward is not finite, or ``half_width <= 0``.
    """
    if half_width <= 0:
        raise ValueError(f"half_width must be > 0, got {half_width}")
    if not len(rewards) or not all(math.isfinite(r) for r in rewards):
        raise ValueError("the rewards must be a non-empty list of finite numbers")
    step = 2 * half_width
    lo = math.floor(min(rewards) / step + 1e-9)
    hi = math.ceil(max(rewards) / step - 1e-9)
    return [round(k * step, 6) for k in range(lo, hi + 1)]


def base_reference(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    score: Callable[[list[str], list[str]], list[float]],
    sampling: Any,
    centers: Sequence[float],
    *,
    samples: int,
    seed: int,
    subsample_seed: int,
    half_width: float = DEFAULT_BIN_HALF_WIDTH,
    max_samples: int | None = None,
    grid: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Sample the base model, score and bin its samples by reward: the binned-base reference.

    Args:
        model: the base causal LM (plain, unconditioned; float32, eval mode).
        tokenizer: its tokenizer.
        prompts: the prompt set; sample ``i`` is on ``prompts[i % len(prompts)]``.
        score: the validated reward function of (prompts, completions) -> one float each
            (``samples`` calls).
        sampling: the :class:`~online_dt.config.SamplingConfig` the evaluated policy samples
            with (temperature, top-p, max new tokens, batch size).
        centers: the reward levels of ``at_targets`` (the evaluated targets).
        samples: base samples to draw, >= 1.
        seed: the sampling seed.
        subsample_seed: seed of each bin's distinct-2 subsample.
        half_width: half the bin width (reward units), > 0.
        max_samples: each bin's distinct-2 is on at most this many samples (``None``: all).
        grid: the reward levels of ``grid``; ``None``: :func:`reward_grid` of the rewards.

    Returns:
        ``samples``, ``half_width``, ``seconds`` (sampling, scoring, base log-probs and
        binning), ``at_targets`` (one :class:`BinReference` dict per centre) and ``grid`` (one
        per grid level: the base's own curve).

    Raises:
        ValueError: ``samples < 1``, no prompts, or ``half_width <= 0``.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if not prompts:
        raise ValueError("no prompts to sample the base model on")
    start = time.perf_counter()
    chosen = [prompts[i % len(prompts)] for i in range(samples)]
    sampled, texts = sample_base(model, tokenizer, chosen, sampling, seed)
    rewards = score(chosen, texts)
    base_lp = teacher_forced_logprobs(
        model,
        encode_prompts(tokenizer, chosen),
        sampled.token_ids,
        pad_id=tokenizer.pad_token_id,
    )
    kwargs = {"half_width": half_width, "max_samples": max_samples, "seed": subsample_seed}
    levels = list(grid) if grid is not None else reward_grid(rewards, half_width)
    return {
        "samples": samples,
        "half_width": half_width,
        "seconds": time.perf_counter() - start,
        "at_targets": [
            b.as_dict() for b in binned_reference(rewards, texts, base_lp, centers, **kwargs)
        ],
        "grid": [b.as_dict() for b in binned_reference(rewards, texts, base_lp, levels, **kwargs)],
    }

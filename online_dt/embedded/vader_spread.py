"""How widely the embedded base model's completions vary in VADER sentiment.

:func:`sample_vader_spread` samples unconditioned completions of the embedded prompts and
summarises their VADER scores, the property reward conditioning relies on; :func:`vader_summary`
is the same summary, also used for the corpus in a build's ``BUILD_INFO.json``
(:mod:`online_dt.embedded.bootstrap`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from online_dt.embedded.corpus import embedded_prompts
from online_dt.rewards import VaderSentimentReward
from online_dt.util.metrics import reward_summary

__all__ = ["sample_vader_spread", "vader_summary"]

# Histogram of VADER compound scores: this many equal bins over [-1, 1].
_HIST_BINS = 10


def _histogram(values: Sequence[float]) -> dict[str, list[float] | list[int]]:
    """Counts of ``values`` in ``_HIST_BINS`` equal bins over ``[-1, 1]`` (1.0 is in the last)."""
    counts = [0] * _HIST_BINS
    for v in values:
        counts[min(_HIST_BINS - 1, max(0, int((v + 1) / 2 * _HIST_BINS)))] += 1
    edges = [round(-1 + 2 * i / _HIST_BINS, 3) for i in range(_HIST_BINS + 1)]
    return {"edges": edges, "counts": counts}


def vader_summary(values: Sequence[float]) -> dict[str, Any]:
    """:func:`~online_dt.util.metrics.reward_summary` of VADER scores (mean, population std,
    p10, median, p90), plus extremes, the positive/negative fractions and a histogram; floats
    rounded to 4 decimals."""
    n = len(values)
    return {
        **{k: round(v, 4) for k, v in reward_summary(values).items()},
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "frac_positive": round(sum(v >= 0.05 for v in values) / n, 4),
        "frac_negative": round(sum(v <= -0.05 for v in values) / n, 4),
        "histogram": _histogram(values),
    }


def sample_vader_spread(
    model_dir: str | Path,
    n: int = 256,
    seed: int = 0,
    *,
    max_new_tokens: int = 24,
    temperature: float = 1.0,
    batch_size: int = 128,
    num_examples: int = 8,
) -> dict[str, Any]:
    """Sample unconditioned completions of the embedded prompts and summarise their VADER scores.

    Prompts are :func:`~online_dt.embedded.corpus.embedded_prompts` in the order of ``seed``,
    repeated when ``n`` exceeds their number; sampling uses the project's HF reference sampler
    (:func:`~online_dt.policy.generation.sample_unconditioned`: left padding, explicit positions,
    stops at EOS) with the given temperature and no top-p. Each *completion alone* is scored,
    as the default reward model does.

    Args:
        model_dir: a causal LM directory, e.g. the result of
            :func:`~online_dt.embedded.bootstrap.ensure_embedded_model`.
        n: number of completions (>= 1).
        seed: prompt order and sampling seed.
        max_new_tokens: completion length limit in tokens.
        temperature: sampling temperature (> 0; 0 is greedy).
        batch_size: prompts per generation batch.
        num_examples: how many (prompt, completion, reward) examples to include.

    Returns:
        ``n``; ``mean``, ``std`` (population), ``p10``, ``median``, ``p90``, ``min``, ``max``
        of the VADER compound scores (each in ``[-1, 1]``); ``frac_positive`` /
        ``frac_negative`` (compound ``>= 0.05`` / ``<= -0.05``, VADER's usual thresholds);
        ``histogram`` (10 bins over ``[-1, 1]``);
        ``frac_finished`` (completions that ended with EOS); ``distinct_completions``;
        ``mean_new_tokens``; ``seconds`` (wall time of sampling); ``examples``.

    Raises:
        ValueError: ``n < 1``.
        OSError: ``model_dir`` is not a loadable model directory.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from online_dt.policy.generation import sample_unconditioned

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()
    pool = embedded_prompts(seed=seed)
    prompts = [pool[i % len(pool)] for i in range(n)]
    prompt_ids = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    eos = int(tokenizer.eos_token_id)
    pad = int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else eos
    started = time.perf_counter()
    sampled = sample_unconditioned(
        model,
        prompt_ids,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos,
        pad_token_id=pad,
        temperature=temperature,
        generator=torch.Generator().manual_seed(seed),
        batch_size=batch_size,
    )
    seconds = time.perf_counter() - started
    completions = tokenizer.batch_decode(sampled.token_ids, skip_special_tokens=True)
    scores = VaderSentimentReward().score(prompts, completions)
    return {
        "n": n,
        **vader_summary(scores),
        "frac_finished": round(sum(sampled.finished) / n, 4),
        "distinct_completions": len(set(completions)),
        "mean_new_tokens": round(sum(map(len, sampled.token_ids)) / n, 2),
        "seconds": round(seconds, 2),
        "examples": [
            {"prompt": p, "completion": c, "reward": round(s, 4)}
            for p, c, s in list(zip(prompts, completions, scores, strict=True))[:num_examples]
        ],
    }

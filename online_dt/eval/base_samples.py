"""Base-model samples and what is measured on them: sampling, teacher-forced log-probs, metrics.

:func:`sample_base` draws one completion per prompt from a plain (unconditioned) causal LM with
a run's sampling settings; :func:`teacher_forced_logprobs` reads the log-probabilities of given
completion tokens under such a model; :func:`nll_per_token` and :func:`word_distinct_n` measure
a set of samples. The binned-base reference (:mod:`online_dt.eval.reference`) is built from
them, and the peer benchmark (``bench/peers.py``, ``bench/peers_metrics.py``) imports them too,
so both measure samples the same way.

Log-probabilities are natural logs (nats); a completion's tokens are the generated ids, EOS
included when generation stopped on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from online_dt.util.metrics import distinct_n


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


def encode_prompts(tokenizer: Any, prompts: Sequence[str]) -> list[list[int]]:
    """Prompt token ids without special tokens (as the project's policy encodes prompts)."""
    return [tokenizer.encode(t, add_special_tokens=False) for t in prompts]


def sample_base(
    model: Any, tokenizer: Any, prompts: Sequence[str], sampling: Any, seed: int
) -> tuple[Any, list[str]]:
    """One completion per prompt from a plain causal LM with the run's sampling settings
    (:func:`online_dt.policy.generation.sample_unconditioned`, its generator seeded with
    ``seed``).

    Args:
        model: the causal LM (e.g. the base model).
        tokenizer: its tokenizer (``encode``, ``decode``, ``eos_token_id``, ``pad_token_id``).
        prompts: N prompt texts, each encoding to at least one token.
        sampling: a :class:`~online_dt.config.SamplingConfig` (``temperature``, ``top_p``,
            ``max_new_tokens``, ``batch_size``).
        seed: the sampling seed.

    Returns:
        The sampled tokens (:class:`~online_dt.policy.generation.SampledTokens`: N token-id
        lists and their raw log-probabilities) and the N decoded completion texts (special
        tokens skipped).

    Raises:
        ValueError: a prompt encodes to no token.
    """
    import torch

    from online_dt.policy.generation import sample_unconditioned

    device = next(model.parameters()).device
    sampled = sample_unconditioned(
        model,
        encode_prompts(tokenizer, prompts),
        max_new_tokens=sampling.max_new_tokens,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        generator=torch.Generator(device=device).manual_seed(seed),
        batch_size=sampling.batch_size,
    )
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in sampled.token_ids]
    return sampled, texts

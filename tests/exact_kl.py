"""Exact KL between a conditioned policy and its base model, by enumerating every completion of
a tiny-vocabulary model (no downloads).

A completion is what the sampler can produce with ``max_new_tokens = L``: tokens up to and
including the first EOS, or L tokens without EOS. These sequences are prefix-free and their
probabilities under either model sum to one, so KL(policy || base) over them is a proper KL of
two distributions over the same finite set, and ``E_policy[sum_t log pi(y_t) - log p_base(y_t)]``
equals it exactly (the k1 estimator is unbiased for it).

The log-probabilities here are computed by this module's own teacher-forced forward passes on
unpadded rows with the models' default positions, not by the project's layout code:

* policy: ``[slot, *prompt, *prefix]`` as input embeddings, the slot being column 0 of
  ``policy.embed`` (the conditioning), positions 0, 1, ...;
* base: ``[*prompt, *prefix]`` as token ids, positions 0, 1, ...
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

WORDS = ["a", "b", "c", "d", "e", "f", "g"]
"""The tiny vocabulary besides EOS (id 0)."""

EOS = "<|endoftext|>"

NextLogprobs = Callable[[list[tuple[int, ...]]], torch.Tensor]
"""Maps equal-length completion prefixes to ``[N, V]`` next-token log-probabilities (float64)."""


def build_word_model(path: Path, seed: int = 0, initializer_range: float = 0.2) -> Path:
    """Save a tiny GPT-2 over ``EOS + WORDS`` (V = 8) with a word-level tokenizer to ``path``.

    ``initializer_range`` is large so that the random model's next-token distributions are far
    from uniform (otherwise every KL here would be tiny).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {EOS: 0} | {w: i + 1 for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=EOS))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS, unk_token=EOS
    )
    fast.save_pretrained(path)
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=len(vocab),
        n_positions=16,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        initializer_range=initializer_range,
    )
    GPT2LMHeadModel(cfg).save_pretrained(path)
    return path


def policy_next_logprobs(policy, prompt_ids: Sequence[int], target: float) -> NextLogprobs:
    """Next-token log-probabilities of the conditioned policy after ``[slot, *prompt, *prefix]``
    (raw ``log_softmax`` of its logits: no temperature, top-p or banned tokens)."""

    @torch.no_grad()
    def next_logprobs(prefixes: list[tuple[int, ...]]) -> torch.Tensor:
        ids = torch.tensor([[policy.pad_token_id, *prompt_ids, *p] for p in prefixes])
        rewards = torch.full((len(prefixes),), float(target))
        embeds = policy.embed(ids.to(policy.device), rewards.to(policy.device))
        logits = policy.model(inputs_embeds=embeds).logits[:, -1]
        return logits.double().log_softmax(-1).cpu()

    return next_logprobs


def base_next_logprobs(base_model, prompt_ids: Sequence[int]) -> NextLogprobs:
    """Next-token log-probabilities of the unconditioned base model after ``[*prompt,
    *prefix]``."""

    @torch.no_grad()
    def next_logprobs(prefixes: list[tuple[int, ...]]) -> torch.Tensor:
        device = next(base_model.parameters()).device
        ids = torch.tensor([[*prompt_ids, *p] for p in prefixes], device=device)
        return base_model(input_ids=ids).logits[:, -1].double().log_softmax(-1).cpu()

    return next_logprobs


@dataclass
class Completion:
    """One possible completion and its per-token log-probabilities under both models."""

    token_ids: tuple[int, ...]
    policy_logprobs: list[float]
    base_logprobs: list[float]

    @property
    def log_ratio(self) -> float:
        """``log pi(y) - log p_base(y)``: the k1 value of this completion."""
        return sum(self.policy_logprobs) - sum(self.base_logprobs)


def enumerate_completions(
    policy: NextLogprobs, base: NextLogprobs, vocab_size: int, eos_id: int, max_new_tokens: int
) -> list[Completion]:
    """Every completion of at most ``max_new_tokens`` tokens that stops at its first EOS, with
    teacher-forced log-probabilities under ``policy`` and ``base``.

    All ``V**L`` token strings of length L are enumerated and cut after their first EOS; the
    distinct results are the completions (for V = 8, L = 3: 1 + 7 + 49 * 8 = 400).
    """
    sequences = sorted(
        {
            tuple(itertools.takewhile(lambda t: t != eos_id, s))
            + ((eos_id,) if eos_id in s else ())
            for s in itertools.product(range(vocab_size), repeat=max_new_tokens)
        }
    )
    # next-token distributions after every proper prefix, one batched pass per prefix length
    prefixes = sorted({s[:k] for s in sequences for k in range(len(s))})
    tables: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = {}
    for length in range(max_new_tokens):
        group = [p for p in prefixes if len(p) == length]
        for p, lp, lq in zip(group, policy(group), base(group), strict=True):
            tables[p] = (lp, lq)
    out = []
    for s in sequences:
        pairs = [tables[s[:k]] for k in range(len(s))]
        out.append(
            Completion(
                s,
                [float(lp[t]) for (lp, _), t in zip(pairs, s, strict=True)],
                [float(lq[t]) for (_, lq), t in zip(pairs, s, strict=True)],
            )
        )
    return out


def exact_kl(completions: Sequence[Completion]) -> float:
    """``sum_y pi(y) (log pi(y) - log p_base(y))`` over the enumerated completions, in nats."""
    return math.fsum(math.exp(sum(c.policy_logprobs)) * c.log_ratio for c in completions)

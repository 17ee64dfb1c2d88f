"""One decoding step's draw from next-token logits: the nucleus filter and the categorical draw
that :func:`online_dt.policy.generation.sample_tokens` applies at every step."""

from __future__ import annotations

import torch


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Mask logits outside the nucleus (Holtzman et al., 2020, "The Curious Case of Neural Text
    Degeneration").

    Args:
        logits: ``[B, V]``.
        top_p: in ``(0, 1]``; the smallest set of tokens whose probability reaches ``top_p`` is
            kept (the most likely token always is).

    Returns:
        ``[B, V]`` logits with the others set to ``-inf``.
    """
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    # drop a token when the mass before it already reaches top_p
    drop_sorted = probs.cumsum(-1) - probs >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_categorical(
    probs: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One draw per row of a batch of categorical distributions, by inverse transform sampling.

    The draw is the first index whose cumulative probability exceeds ``u * total``, with ``u``
    uniform in ``[0, 1)`` and ``total`` the row's sum, so a row need not sum to exactly 1 and a
    token of probability 0 is never drawn. The distribution is that of
    ``torch.multinomial(probs, 1)``; the draws differ for the same seed. On CPU it is 30-40x
    faster than ``torch.multinomial`` for a ``[128, 1267]`` batch (0.1 ms against 3 ms), which
    was about a third of the HF sampler's time on the embedded model (docs/method.md, round 10).
    The cumulative sum is taken in float64, so rounding shifts no token's probability by more
    than about 1e-13.

    Args:
        probs: ``[B, V]`` non-negative probabilities, each row with a positive sum.
        generator: torch RNG for reproducible draws (on ``probs``' device).

    Returns:
        ``[B]`` int64 indices in ``[0, V)``.
    """
    cdf = probs.double().cumsum(-1)
    u = torch.rand(
        (probs.shape[0], 1), generator=generator, dtype=torch.float64, device=probs.device
    )
    choice = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(-1)
    # u * total can round up to total (probability about 1e-16): take the most likely token
    return torch.where(choice < probs.shape[-1], choice, probs.argmax(-1))

"""Incremental sampling with a KV cache and explicit position ids (the HF reference sampler).

We run our own decoding loop rather than ``model.generate`` so that the position rule of
:mod:`online_dt.policy.layout` is applied by our code in prefill and in every decoding step, for any
causal LM (absolute or rotary positions), with inputs given as embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from online_dt.policy.layout import positions_from_mask
from online_dt.policy.token_draws import sample_categorical, top_p_filter


@dataclass
class SampledTokens:
    """Result of :func:`sample_tokens` for a batch of B rows.

    Attributes:
        token_ids: per row, the generated ids including a final EOS when the row stopped on it.
        logprobs: per row, the log-probability (natural log, ``<= 0``) of each generated token
            under the model's raw distribution (``log_softmax`` of the logits, before
            temperature, top-p or banned tokens), the convention of vLLM's ``raw_logprobs``.
        finished: per row, whether it ended with EOS (False: stopped at ``max_new_tokens``).
    """

    token_ids: list[list[int]]
    logprobs: list[list[float]]
    finished: list[bool]


@torch.no_grad()
def sample_tokens(
    model: torch.nn.Module,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    banned_token_ids: Sequence[int] = (),
    reference_embeds: torch.Tensor | None = None,
    guidance_weight: float = 0.0,
    reference_model: torch.nn.Module | None = None,
    reference_mask: torch.Tensor | None = None,
    reference_log_prior: torch.Tensor | None = None,
) -> SampledTokens:
    """Sample continuations of left-padded prefixes given as embeddings.

    Prefill runs on ``inputs_embeds`` with position ids ``cumsum(mask) - 1``; each decoding step
    appends a 1 to the mask and uses the next position, so incremental logits equal
    teacher-forced ones.

    With ``reference_embeds`` (the same prefixes under another conditioning) every step runs
    both and samples from guided logits ``l + w (l - l_ref)``, ``w = guidance_weight``: the
    distribution ``p(y | c)^(1+w) / p(y | c_ref)^w``, renormalised per token. This is
    classifier-free guidance (Ho and Salimans, 2022, arXiv 2207.12598; for language models
    Sanchez et al., 2023, arXiv 2306.17806; on return-conditioned policies Ajay et al., 2023,
    the Decision Diffuser, arXiv 2211.15657) with a reference condition in place of the
    unconditional model. Both rows get the sampled token.

    With ``K`` reference conditionings (``reference_embeds`` of shape ``[K, B, T, H]``) the
    reference is their mixture under the prior ``reference_log_prior``, with each component's
    weight updated by Bayes' rule on the tokens sampled so far:
    ``log p_ref(y_t | y_<t) = logsumexp_k(log pi_k + log p(y_<=t | c_k)) -
    logsumexp_k(log pi_k + log p(y_<t | c_k))``. With the conditionings spread over the
    rewards the policy was trained on and the prior their frequency, this is the policy's own
    marginal over rewards, the unconditional model that classifier-free guidance contrasts
    with; then ``p(y | c)^(1+w) / p(y)^w = p(y | c) p(c | y)^w / p(c)^w`` sharpens the
    conditional around ``c`` instead of moving it away from one reference reward. One
    reference (``[B, T, H]`` or ``K = 1``) is the contrast with that conditioning alone.

    With ``reference_model`` as well, the reference logits come from that model (for instance
    the base model, which plays the unconditional model of classifier-free guidance) on its own
    prefixes ``reference_embeds`` / ``reference_mask``, with its own KV cache; it is fed the same
    sampled tokens. If its vocabulary is smaller (token mode's reward tokens are the policy's
    last ids), only its first ``V_ref`` columns are guided.

    Args:
        model: a Hugging Face causal LM (``forward`` accepts ``inputs_embeds``, ``input_ids``,
            ``attention_mask``, ``position_ids``, ``past_key_values``).
        inputs_embeds: ``[B, T, H]`` prefix embeddings (left padded).
        attention_mask: ``[B, T]``, 0 on padding.
        max_new_tokens: at most this many tokens per row (>= 1).
        eos_token_id: a row stops after sampling this id.
        pad_token_id: fed for rows that already stopped.
        temperature: softmax temperature; 0 means greedy.
        top_p: nucleus sampling threshold in ``(0, 1]``.
        generator: torch RNG for reproducible sampling (on the model's device).
        banned_token_ids: ids that are never sampled (e.g. reward tokens).
        reference_embeds: ``[B, T, H]``, the reference conditioning's prefixes (same mask),
            or ``[K, B, T, H]`` for a mixture of K; with ``reference_model``,
            ``[B, T_ref, H_ref]`` in that model's embedding space; ``None``: no guidance.
        guidance_weight: ``w >= 0``; 0 samples the model's own distribution.
        reference_model: a second causal LM that gives the reference logits; ``None``: the
            reference rows run through ``model`` in the same batch.
        reference_mask: ``[B, T_ref]``, ``reference_embeds``' attention mask (with
            ``reference_model`` only).
        reference_log_prior: ``[K]`` log prior weights of a mixture's components (normalised
            here); ``None``: uniform.

    Returns:
        :class:`SampledTokens`; with guidance its ``logprobs`` are the guided distribution's.

    Raises:
        ValueError: ``reference_embeds`` has another shape than ``inputs_embeds`` (another
            batch size, with ``reference_model``), ``reference_model`` comes without
            ``reference_embeds`` and ``reference_mask``, ``reference_log_prior`` has another
            length than K, or ``guidance_weight`` is negative.
    """
    device = inputs_embeds.device
    batch = inputs_embeds.shape[0]
    mask = attention_mask.to(device)
    if guidance_weight < 0:
        raise ValueError(f"guidance_weight must be >= 0, got {guidance_weight}")
    separate: _ReferenceModel | None = None
    if reference_model is not None:
        if reference_embeds is None or reference_mask is None:
            raise ValueError("reference_model needs reference_embeds and reference_mask")
        if reference_embeds.shape[0] != batch:
            raise ValueError(
                f"reference_embeds has {reference_embeds.shape[0]} rows, inputs_embeds {batch}"
            )
        separate = _ReferenceModel(reference_model, reference_embeds, reference_mask)
        reference_embeds = None
    mixture: _Mixture | None = None
    if reference_embeds is not None:
        if reference_embeds.dim() == inputs_embeds.dim():
            reference_embeds = reference_embeds[None]
        if reference_embeds.shape[1:] != inputs_embeds.shape:
            raise ValueError(
                f"reference_embeds {tuple(reference_embeds.shape)} must have the shape of "
                f"inputs_embeds {tuple(inputs_embeds.shape)} (with a leading K for a mixture)"
            )
        mixture = _Mixture(reference_embeds.shape[0], batch, reference_log_prior, device)
        inputs_embeds = torch.cat([inputs_embeds, *reference_embeds.to(device)])
        mask = mask.repeat(1 + mixture.size, 1)
    rows = mask.shape[0]
    positions = positions_from_mask(mask)
    out = model(
        inputs_embeds=inputs_embeds,
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
    )
    cache = out.past_key_values
    logits = _guide(out.logits[:, -1, :].float(), mixture, guidance_weight)
    if separate is not None:
        logits = _guide_with(logits, separate.logits.to(device), guidance_weight)
    next_position = positions[:, -1:] + 1
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    tokens: list[torch.Tensor] = []
    logps: list[torch.Tensor] = []
    banned = torch.tensor(list(banned_token_ids), dtype=torch.long, device=device)
    for _ in range(max_new_tokens):
        raw_logprobs = logits.log_softmax(-1)
        scores = logits.clone()
        if banned.numel():
            scores[:, banned] = float("-inf")
        if temperature == 0.0:
            choice = scores.argmax(-1)
        else:
            probs = top_p_filter(scores / temperature, top_p).softmax(-1)
            choice = sample_categorical(probs, generator)
        choice = torch.where(done, torch.full_like(choice, pad_token_id), choice)
        tokens.append(choice)
        logps.append(raw_logprobs.gather(-1, choice[:, None]).squeeze(-1))
        done = done | (choice == eos_token_id)
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones((rows, 1), dtype=mask.dtype, device=device)], dim=1)
        out = model(
            input_ids=(choice if mixture is None else mixture.update(choice))[:, None],
            attention_mask=mask,
            position_ids=next_position,
            past_key_values=cache,
            use_cache=True,
        )
        cache = out.past_key_values
        logits = _guide(out.logits[:, -1, :].float(), mixture, guidance_weight)
        if separate is not None:
            logits = _guide_with(logits, separate.step(choice).to(device), guidance_weight)
        next_position = next_position + 1

    token_matrix = torch.stack(tokens, dim=1).tolist()
    logp_matrix = torch.stack(logps, dim=1).tolist()
    result = SampledTokens([], [], [])
    for row_tokens, row_logps in zip(token_matrix, logp_matrix, strict=True):
        length = row_tokens.index(eos_token_id) + 1 if eos_token_id in row_tokens else None
        result.token_ids.append(row_tokens[:length])
        result.logprobs.append(row_logps[:length])
        result.finished.append(length is not None)
    return result


def _guide(logits: torch.Tensor, mixture: _Mixture | None, weight: float) -> torch.Tensor:
    """``[B, V]`` logits from ``[B, V]`` (no guidance) or ``[(1 + K) B, V]`` (conditioned rows,
    then each reference's rows): ``l + w (l - log p_ref)`` with ``p_ref`` the mixture's."""
    if mixture is None:
        return logits
    conditioned = logits[: mixture.batch]
    reference = mixture.reference(logits[mixture.batch :])
    return conditioned + weight * (conditioned - reference)


class _Mixture:
    """The reference mixture of :func:`sample_tokens`: K conditionings of the same B rows,
    weighted by their prior times the likelihood of the tokens sampled so far."""

    def __init__(
        self, size: int, batch: int, log_prior: torch.Tensor | None, device: torch.device
    ) -> None:
        if log_prior is None:
            log_prior = torch.zeros(size)
        if log_prior.shape != (size,):
            raise ValueError(
                f"reference_log_prior must have shape ({size},), got {log_prior.shape}"
            )
        self.size, self.batch = size, batch
        self.log_weight = log_prior.float().to(device).log_softmax(0)[:, None].repeat(1, batch)
        self.step_logprobs: torch.Tensor | None = None

    def reference(self, logits: torch.Tensor) -> torch.Tensor:
        """``[B, V]`` ``log p_ref(y_t | y_<t)`` from the K references' ``[K B, V]`` logits."""
        logprobs = logits.view(self.size, self.batch, -1).log_softmax(-1)
        self.step_logprobs = logprobs
        joint = self.log_weight[..., None] + logprobs
        return joint.logsumexp(0) - self.log_weight.logsumexp(0)[:, None]

    def update(self, choice: torch.Tensor) -> torch.Tensor:
        """Add the ``[B]`` sampled ids' log-likelihood under each reference to its weight;
        return the ids for all ``(1 + K) B`` rows."""
        assert self.step_logprobs is not None
        index = choice[None, :, None].expand(self.size, -1, 1)
        self.log_weight = self.log_weight + self.step_logprobs.gather(-1, index).squeeze(-1)
        return choice.repeat(1 + self.size)


def _guide_with(logits: torch.Tensor, reference: torch.Tensor, weight: float) -> torch.Tensor:
    """``l + w (l - l_ref)`` on the reference's ``V_ref`` columns of ``[B, V]`` logits
    (``reference``: ``[B, V_ref]``, ``V_ref <= V``); the other columns are left as they are."""
    width = reference.shape[-1]
    guided = logits.clone()
    guided[:, :width] = logits[:, :width] + weight * (logits[:, :width] - reference)
    return guided


class _ReferenceModel:
    """A second causal LM decoded in step with :func:`sample_tokens`: its own prefixes, mask,
    positions and KV cache; :attr:`logits` is its ``[B, V_ref]`` next-token logits."""

    def __init__(
        self, model: torch.nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor
    ) -> None:
        self.model = model
        self.device = inputs_embeds.device
        self.mask = attention_mask.to(self.device)
        positions = positions_from_mask(self.mask)
        out = model(
            inputs_embeds=inputs_embeds,
            attention_mask=self.mask,
            position_ids=positions,
            use_cache=True,
        )
        self.cache = out.past_key_values
        self.next_position = positions[:, -1:] + 1
        self.logits = out.logits[:, -1, :].float()

    def step(self, choice: torch.Tensor) -> torch.Tensor:
        """Feed the ``[B]`` sampled ids; return the next ``[B, V_ref]`` logits."""
        ones = torch.ones((self.mask.shape[0], 1), dtype=self.mask.dtype, device=self.device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        out = self.model(
            input_ids=choice.to(self.device)[:, None],
            attention_mask=self.mask,
            position_ids=self.next_position,
            past_key_values=self.cache,
            use_cache=True,
        )
        self.cache = out.past_key_values
        self.next_position = self.next_position + 1
        self.logits = out.logits[:, -1, :].float()
        return self.logits


def left_pad(
    prompt_ids: Sequence[Sequence[int]], pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, T]`` left-padded token ids (``T`` the longest prompt) and their ``[B, T]``
    attention mask (1 on real tokens), both ``long``, on the CPU."""
    width = max(len(p) for p in prompt_ids)
    ids = torch.full((len(prompt_ids), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for i, p in enumerate(prompt_ids):
        ids[i, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        mask[i, width - len(p) :] = 1
    return ids, mask


@torch.no_grad()
def sample_unconditioned(
    model: torch.nn.Module,
    prompt_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    banned_token_ids: Sequence[int] = (),
    batch_size: int = 128,
) -> SampledTokens:
    """Sample from a plain (unconditioned) causal LM: left-padded prompts, no reward slot.

    Used to collect the base model's completions for offline training and to measure the base
    model's reward spread. Arguments are those of :func:`sample_tokens`; ``prompt_ids`` are the
    prompts' token ids (each non-empty).

    Raises:
        ValueError: a prompt has no tokens.
    """
    device = next(model.parameters()).device
    embed = model.get_input_embeddings()
    result = SampledTokens([], [], [])
    for start in range(0, len(prompt_ids), batch_size):
        chunk = [list(p) for p in prompt_ids[start : start + batch_size]]
        if any(not p for p in chunk):
            raise ValueError("cannot sample from an empty prompt")
        ids, mask = left_pad(chunk, pad_token_id)
        part = sample_tokens(
            model,
            embed(ids.to(device)),
            mask.to(device),
            max_new_tokens=max_new_tokens,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            temperature=temperature,
            top_p=top_p,
            generator=generator,
            banned_token_ids=banned_token_ids,
        )
        result.token_ids.extend(part.token_ids)
        result.logprobs.extend(part.logprobs)
        result.finished.extend(part.finished)
    return result

"""Reward conditioning of any Hugging Face causal LM (decision-transformer style).

The policy models ``p(completion | prompt, R)`` where ``R`` is a reward: the target asked for
at sampling time, and the achieved reward at training time (hindsight relabeling). This follows
the Decision Transformer (Chen et al., 2021) with a single return-to-go token, as in
reward-conditioned language models (e.g. Quark, Lu et al., 2022, which uses reward tokens).

Two modes place the reward in the same slot at the start of the sequence (see
:mod:`online_dt.policy.layout`):

* ``scalar``: a learned ``Linear(1, hidden)`` maps the normalised reward to one embedding
  (``Linear(M, hidden)`` for M objectives, still one column).
* ``token``: the reward is binned to one of K new tokens ``<|reward_k|>`` added to the
  tokenizer; their embeddings start from the mean and std of the existing embedding matrix.
  With M objectives the slot is M columns, one token ``<|reward_{name}_k|>`` per objective.

A saved policy is a normal Hugging Face model directory (vLLM and plain transformers load the
base weights from it) plus a ``reward_conditioning/`` folder with ``conditioning.json`` and, in
scalar mode, ``head.safetensors``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from online_dt.config import ConditioningConfig, RunConfig
from online_dt.policy.conditioned_generation import generate_rollouts
from online_dt.policy.conditioner import RewardConditioner
from online_dt.policy.gated_lora import gate_values
from online_dt.policy.layout import ConditionedBatch, context_length, layout_batch
from online_dt.policy.loading import (
    copy_split_rows,
    load_model_and_tokenizer,
    pad_id,
    with_fresh_conditioning,
)
from online_dt.policy.tokens import TokenIdCache
from online_dt.samples import Reward, Rollout
from online_dt.util.devices import resolve_device


class RewardConditionedPolicy(nn.Module):
    """A causal LM conditioned on a reward through one input slot at the start of the sequence
    (:attr:`slot_width` columns).

    Create one with :meth:`from_base` (fresh conditioning over a base model) or
    :meth:`from_pretrained` (a directory written by :meth:`save_pretrained`). The wrapped
    ``model`` and ``tokenizer`` are ordinary Hugging Face objects.

    Attributes:
        model: the ``AutoModelForCausalLM``.
        tokenizer: its tokenizer (with reward tokens added in token mode).
        conditioner: the :class:`RewardConditioner` that fills the slot.
    """

    def __init__(self, model: Any, tokenizer: Any, conditioner: RewardConditioner) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.conditioner = conditioner
        self._token_ids = TokenIdCache(tokenizer)
        if conditioner.lora is not None:
            conditioner.lora.attach(model, *conditioner.config.lora_coverage)  # gated in embed

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def from_base(
        cls,
        name_or_path: str | Path,
        config: ConditioningConfig,
        *,
        device: str = "cpu",
        attn_implementation: str = "sdpa",
        seed: int = 0,
    ) -> RewardConditionedPolicy:
        """Wrap a base causal LM with fresh conditioning.

        Args:
            name_or_path: hub name or local directory, loaded with ``from_pretrained``.
            config: conditioning settings.
            device: ``cpu``, ``cuda`` or ``auto``.
            attn_implementation: passed to ``from_pretrained``.
            seed: seed for the new parameters (head, reward-token embeddings).

        Raises:
            OSError: the model or tokenizer cannot be found (a hub name without network, or a
                missing directory); the message names ``name_or_path``.
        """
        model, tokenizer, conditioner = with_fresh_conditioning(
            name_or_path, config, attn_implementation=attn_implementation, seed=seed
        )
        return cls(model, tokenizer, conditioner).to(resolve_device(device))

    @classmethod
    def fresh(cls, cfg: RunConfig, base_path: str | Path) -> RewardConditionedPolicy:
        """The untrained conditioned policy a run config describes over ``base_path``.

        Uses the config's conditioning, ``model.device``, ``model.attn_implementation`` and
        ``training.seed`` (which seeds the new reward-embedding weights, so the same config
        rebuilds the same policy: the learner's reference model on resume relies on it).

        Raises:
            OSError: the base model or its tokenizer cannot be found.
        """
        return cls.from_base(
            base_path,
            cfg.conditioning,
            device=cfg.model.device,
            attn_implementation=cfg.model.attn_implementation,
            seed=cfg.training.seed,
        )

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, device: str = "cpu", attn_implementation: str = "sdpa"
    ) -> RewardConditionedPolicy:
        """Load a policy written by :meth:`save_pretrained`.

        Raises:
            FileNotFoundError: ``path`` has no ``reward_conditioning/conditioning.json``.
            ValueError: the file's format version is newer than this library understands.
        """
        conditioner = RewardConditioner.load(path)
        model, tokenizer = load_model_and_tokenizer(path, attn_implementation)
        return cls(model, tokenizer, conditioner).to(resolve_device(device))

    def save_pretrained(self, path: str | Path) -> None:
        """Write the model, tokenizer and conditioning to ``path`` (created if needed).

        The directory is a normal Hugging Face model directory;
        ``reward_conditioning/conditioning.json`` holds the conditioning config, normaliser
        state, bin edges and reward-token ids, and ``reward_conditioning/head.safetensors`` the
        scalar head. Callers that need atomicity write to a temporary directory and rename it
        (:func:`online_dt.util.atomic.atomic_write_dir`).
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        self.conditioner.save(path)

    @property
    def config(self) -> ConditioningConfig:
        """The conditioning config."""
        return self.conditioner.config

    @property
    def reward_token_ids(self) -> list[int]:
        """Reward-token ids (token mode; every objective's with objectives), else ``[]``;
        never sampled."""
        return self.conditioner.reward_token_ids

    @property
    def slot_width(self) -> int:
        """Columns of the conditioning slot (``ConditioningConfig.slot_width``)."""
        return self.conditioner.slot_width

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.model.parameters()).device

    @property
    def eos_token_id(self) -> int:
        """The tokenizer's EOS id (completions end with it)."""
        return int(self.tokenizer.eos_token_id)

    @property
    def max_positions(self) -> int | None:
        """The model's maximum sequence length in tokens, or ``None`` when its config does not
        say (:func:`~online_dt.policy.layout.context_length`)."""
        return context_length(self.model.config)

    @property
    def pad_token_id(self) -> int:
        """The pad id (falls back to EOS)."""
        return pad_id(self.tokenizer)

    # -- the conditioning slot -----------------------------------------------------------------

    def fit_reward_statistics(
        self, rewards: Sequence[Any], pool: Sequence[Any] | None = None
    ) -> list[tuple[int, int]]:
        """See :meth:`RewardConditioner.fit_reward_statistics`; returns its ``(new_bin,
        split_bin)`` splits, for each of which the new bin's reward-token embedding row (input,
        and output if untied) is set to a copy of the split bin's."""
        splits = self.conditioner.fit_reward_statistics(rewards, pool)
        copy_split_rows(self.model, self.reward_token_ids, splits)
        return splits

    def slot_token_ids(self, rewards: Sequence[Reward]) -> list[int] | list[list[int]]:
        """See :meth:`RewardConditioner.slot_token_ids`."""
        return self.conditioner.slot_token_ids(rewards)

    def embed(
        self,
        input_ids: torch.Tensor,
        rewards: torch.Tensor | None,
        prompt_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Input embeddings ``[B, T, H]`` with the slot filled for ``rewards``.

        Args:
            input_ids: ``LongTensor[B, T]`` in the shared layout (the first
                :attr:`slot_width` columns are the slot).
            rewards: ``[B]`` rewards in reward units (``[B, M]`` with M objectives), or
                ``None`` when ``input_ids`` holds no slot (decoding steps). In token mode the
                slot's columns already hold the reward tokens, and nothing is replaced. They
                also set the LoRA's gate (:func:`gate_values`), held for the decoding steps.
            prompt_mask: ``[B, T]``, True on prompt tokens (a batch's ``prompt_mask``), for
                ``conditioning.reward_on_prompt``; ``None``: every column after the slot is a
                prompt token.
        """
        embeds = self.model.get_input_embeddings()(input_ids)
        if self.conditioner.lora is not None and rewards is not None:
            gate = gate_values(self.conditioner.config, rewards, self.conditioner.normalize)
            self.conditioner.lora.set_gate(gate)
        return self.conditioner.fill_slot(embeds, rewards, prompt_mask)

    def forward(self, batch: ConditionedBatch, rewards: torch.Tensor) -> Any:
        """Teacher-forced forward pass of a batch in the shared layout.

        Args:
            batch: from :meth:`layout` or :meth:`layout_ids`; its labels are not used (the
                caller takes the loss it needs from the logits).
            rewards: ``[B]`` conditioning rewards (reward units), ``[B, M]`` with M
                objectives (:meth:`RewardConditioner.reward_tensor`).

        Returns:
            The model's ``CausalLMOutput``; ``logits`` is ``[B, T, V]``, column t predicting
            the token at column t + 1.
        """
        return self.model(**self.model_inputs(batch, rewards))

    def model_inputs(self, batch: ConditionedBatch, rewards: torch.Tensor) -> dict[str, Any]:
        """The wrapped model's keyword arguments for :meth:`forward`: ``inputs_embeds``
        ``[B, T, H]`` (the slot filled for ``rewards``), ``attention_mask`` and
        ``position_ids`` ``[B, T]``."""
        return {
            "inputs_embeds": self.embed(batch.input_ids, rewards, batch.prompt_mask),
            "attention_mask": batch.attention_mask,
            "position_ids": batch.position_ids,
        }

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens (a new list per text); the ids of
        recently seen texts are kept (:class:`~online_dt.policy.tokens.TokenIdCache`)."""
        return self._token_ids.encode(texts)

    def layout(
        self,
        prompts: Sequence[str],
        rewards: Sequence[Reward],
        completions: Sequence[str] | None = None,
        *,
        include_prompt_loss: bool = False,
        ended: Sequence[bool] | None = None,
    ) -> ConditionedBatch:
        """Tokenise and lay out a batch: right padded with labels when completions are given,
        else left padded for generation. A completion gets an EOS label unless ``ended`` is
        False for it (one the sampler cut at ``max_new_tokens`` did not end; ``None``: all did).

        A completion's text can tokenise to more tokens than were sampled (a byte-level token
        holding part of a UTF-8 character decodes to U+FFFD, three bytes), so it is cut to fit
        :attr:`max_positions` with its slot, prompt and EOS, without which GPT-2's position
        embeddings raise ``IndexError``; preflight checks the prompts leave room for
        ``max_new_tokens``.
        """
        completion_ids = None
        if completions is not None:
            limit, completion_ids = self.max_positions, []
            ends = [True] * len(prompts) if ended is None else ended
            encoded = zip(self.encode(prompts), self.encode(completions), ends, strict=True)
            for prompt_ids, ids, end in encoded:
                if limit is not None:
                    ids = ids[: max(limit - self.slot_width - 1 - len(prompt_ids), 0)]
                completion_ids.append([*ids, self.eos_token_id] if end else ids)
        return self.layout_ids(
            prompts, rewards, completion_ids, include_prompt_loss=include_prompt_loss
        )

    def layout_ids(
        self,
        prompts: Sequence[str],
        rewards: Sequence[Reward],
        completion_ids: Sequence[Sequence[int]] | None = None,
        *,
        include_prompt_loss: bool = False,
    ) -> ConditionedBatch:
        """Lay out prompt texts with completions given as token ids (taken as they are, EOS
        included when it was generated): right padded with labels, or, without completions,
        left padded for generation. See :func:`online_dt.policy.layout.layout_batch`.

        Raises:
            ValueError: the batch is empty or the sequences differ in length.
        """
        return layout_batch(
            self.slot_token_ids(rewards),
            self.encode(prompts),
            completion_ids,
            pad_id=self.pad_token_id,
            padding_side="right" if completion_ids is not None else "left",
            include_prompt_loss=include_prompt_loss,
        )

    def prompt_embeds(self, prompt_ids: Sequence[int], reward: float) -> torch.Tensor:
        """``[1 + len(prompt_ids), H]`` embeddings of one conditioned prompt (scalar mode), the
        form vLLM's ``prompt_embeds`` input takes: reward embedding, then token embeddings.
        Positions are not added here; the model adds them (0, 1, ...) as in training."""
        ids = torch.tensor([[self.pad_token_id, *prompt_ids]], device=self.device)
        rewards = torch.tensor([reward], device=self.device)
        with torch.no_grad():
            return self.embed(ids, rewards)[0]

    # -- generation (HF reference sampler) -------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        targets: Sequence[Reward],
        *,
        max_new_tokens: int = 24,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        batch_size: int = 128,
        guidance_weight: float = 0.0,
        guidance_reference: Reward | None = None,
        guidance_model: torch.nn.Module | None = None,
        guidance_mixture: Sequence[tuple[Reward, float]] | None = None,
    ) -> list[Rollout]:
        """Sample one completion per prompt, each conditioned on its own target reward.

        Args:
            prompts: B prompt texts.
            targets: B target rewards (reward units).
            max_new_tokens: completion length limit in tokens.
            temperature: 0 for greedy decoding.
            top_p: nucleus threshold in ``(0, 1]``.
            seed: seed of the sampling RNG (``None``: torch's global RNG).
            batch_size: prompts per forward batch.
            guidance_weight: ``w >= 0``. Above 0, each token is sampled from the guided logits
                ``l(target) + w (l(target) - l(guidance_reference))``: the conditional sharpened
                away from the reference reward (classifier-free guidance with a reference condition,
                :func:`~online_dt.policy.generation.sample_tokens`). It costs a second forward pass
                per token; the rollouts' ``logprobs`` are the guided distribution's. 0 (the default)
                samples the policy itself.
            guidance_reference: the reference reward (reward units), for instance the base
                model's mean reward. With a reference reward, guidance moves the achieved
                reward away from it (a blurred conditional's mean is scaled about it).
            guidance_model: instead of a reference reward, a plain causal LM on the same
                tokenizer (the base model) whose logits on the unconditioned prompt are the
                reference: classifier-free guidance with the base as the unconditional model,
                ``p_base(y) (p(y | target) / p_base(y))^(1+w)`` per token, which sharpens the
                conditional around its target instead of moving it, but also amplifies
                whatever else separates the policy from its base.
            guidance_mixture: instead, ``(reward, prior weight)`` pairs: the reference is the
                policy's own mixture over those conditionings, each weighted by its prior times the
                likelihood of the tokens so far
                (:func:`~online_dt.policy.generation.sample_tokens`). With the rewards spread over
                the range and weighted by how often they occur in what the policy was trained on
                (the replay buffer: :func:`~online_dt.policy.guidance.buffer_prior`), it is the
                policy's marginal over rewards, classifier-free guidance's unconditional model: the
                conditional is sharpened around its target, and what all conditionings share
                cancels. K pairs cost K extra rows per prompt. Exactly one of
                ``guidance_reference``, ``guidance_model`` and ``guidance_mixture`` is needed when
                ``guidance_weight > 0``.

        Returns:
            B :class:`~online_dt.samples.Rollout` in the order of ``prompts``, with
            ``prompt_index`` their index, ``policy_version`` 0 (the caller knows the version)
            and the call's time.

        Raises:
            ValueError: ``prompts`` and ``targets`` differ in length; ``guidance_weight`` is
                negative, or above 0 without exactly one of ``guidance_reference``,
                ``guidance_model`` and ``guidance_mixture``; a mixture is empty or has a
                negative or all-zero weight; guidance with a gated LoRA.
        """
        return generate_rollouts(
            self,
            prompts,
            targets,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            batch_size=batch_size,
            guidance_weight=guidance_weight,
            guidance_reference=guidance_reference,
            guidance_model=guidance_model,
            guidance_mixture=guidance_mixture,
        )

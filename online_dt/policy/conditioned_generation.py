"""Sampling from the reward-conditioned policy with Hugging Face (the HF reference sampler).

This is :func:`generate_rollouts`, behind
:meth:`~online_dt.policy.policy.RewardConditionedPolicy.generate` (it takes the policy, seen
through :class:`GeneratingPolicy`): one completion per prompt, each conditioned on its own
target reward, optionally with classifier-free guidance against a reference reward, a reference
model or a mixture of conditionings; the decoding loop itself is
:func:`~online_dt.policy.generation.sample_tokens`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

import torch

from online_dt.policy.conditioner import RewardConditioner
from online_dt.policy.generation import left_pad, sample_tokens
from online_dt.policy.layout import ConditionedBatch
from online_dt.samples import Reward, Rollout, as_reward


class GeneratingPolicy(Protocol):
    """What :func:`generate_rollouts` uses of a policy: the attributes, properties and methods
    of :class:`~online_dt.policy.policy.RewardConditionedPolicy` of those names (see its
    docstring; ``training``, ``eval`` and ``train`` are its ``nn.Module`` train/eval switch)."""

    model: Any
    tokenizer: Any
    conditioner: RewardConditioner
    training: bool

    @property
    def device(self) -> torch.device: ...

    @property
    def eos_token_id(self) -> int: ...

    @property
    def pad_token_id(self) -> int: ...

    @property
    def reward_token_ids(self) -> list[int]: ...

    def encode(self, texts: Sequence[str]) -> list[list[int]]: ...

    def layout(self, prompts: Sequence[str], rewards: Sequence[Reward]) -> ConditionedBatch: ...

    def embed(
        self,
        input_ids: torch.Tensor,
        rewards: torch.Tensor | None,
        prompt_mask: torch.Tensor | None = None,
    ) -> torch.Tensor: ...

    def eval(self) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...


@torch.no_grad()
def generate_rollouts(
    policy: GeneratingPolicy,
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
    """:meth:`~online_dt.policy.policy.RewardConditionedPolicy.generate` of ``policy``: sample
    one completion per prompt, each conditioned on its own target reward (see that method for
    the arguments, what is returned and what is raised)."""
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    if guidance_weight < 0:
        raise ValueError(f"guidance_weight must be >= 0, got {guidance_weight}")
    guided = guidance_weight > 0
    given = [x is not None for x in (guidance_reference, guidance_model, guidance_mixture)]
    if guided and sum(given) != 1:
        raise ValueError(
            "guidance_weight > 0 needs exactly one of a guidance_reference reward, a "
            "guidance_model and a guidance_mixture"
        )
    if guided and policy.conditioner.lora is not None:
        raise ValueError(
            f"guided generation is not available with conditioning."
            f"{policy.conditioner.config.lora_option}: the LoRA's gate follows one conditioned "
            "batch, and guidance runs a second beside it"
        )
    if guided and guidance_mixture is not None:
        weights = [w for _, w in guidance_mixture]
        if not weights or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(
                f"guidance_mixture needs weights >= 0 with a positive sum, got {weights}"
            )
    was_training = policy.training
    policy.eval()
    generator = None
    if seed is not None:
        generator = torch.Generator(device=policy.device).manual_seed(seed)
    results: list[Rollout] = []
    start_time = time.perf_counter()
    try:
        for start in range(0, len(prompts), batch_size):
            chunk_prompts = list(prompts[start : start + batch_size])
            chunk_targets = [as_reward(t) for t in targets[start : start + batch_size]]
            sampled = sample_tokens(
                policy.model,
                *_prefix_embeds(policy, chunk_prompts, chunk_targets),
                max_new_tokens=max_new_tokens,
                eos_token_id=policy.eos_token_id,
                pad_token_id=policy.pad_token_id,
                temperature=temperature,
                top_p=top_p,
                generator=generator,
                banned_token_ids=policy.reward_token_ids,
                guidance_weight=guidance_weight,
                **_guidance_inputs(
                    policy,
                    chunk_prompts,
                    guided,
                    guidance_reference,
                    guidance_model,
                    guidance_mixture,
                ),
            )
            for i, prompt in enumerate(chunk_prompts):
                ids = sampled.token_ids[i]
                results.append(
                    Rollout(
                        prompt=prompt,
                        completion=policy.tokenizer.decode(ids, skip_special_tokens=True),
                        token_ids=ids,
                        logprobs=sampled.logprobs[i],
                        target=chunk_targets[i],
                        finished=sampled.finished[i],
                        prompt_index=start + i,
                    )
                )
    finally:
        policy.train(was_training)
        if policy.conditioner.lora is not None:
            policy.conditioner.lora.clear_gate()  # a later forward pass sets its own
    seconds, now = time.perf_counter() - start_time, time.time()
    for r in results:
        r.created_at, r.generate_seconds = now, seconds
    return results


def _guidance_inputs(
    policy: GeneratingPolicy,
    prompts: list[str],
    guided: bool,
    reference: Reward | None,
    model: torch.nn.Module | None,
    mixture: Sequence[tuple[Reward, float]] | None,
) -> dict[str, Any]:
    """``sample_tokens``' reference arguments for a chunk: none unguided; the prompts under
    the reference reward, or under each of the mixture's rewards (``[K, B, T, H]``, with
    the log prior); or, with a reference ``model``, the plain left-padded prompts in that
    model's embeddings, with their mask."""
    if not guided:
        return {}
    if reference is not None:
        return {"reference_embeds": _prefix_embeds(policy, prompts, [reference] * len(prompts))[0]}
    if mixture is not None:
        embeds = [_prefix_embeds(policy, prompts, [r] * len(prompts))[0] for r, _ in mixture]
        prior = torch.tensor([w for _, w in mixture], dtype=torch.float32)
        return {"reference_embeds": torch.stack(embeds), "reference_log_prior": prior.log()}
    assert model is not None
    device = next(model.parameters()).device
    input_ids, mask = left_pad(policy.encode(prompts), policy.pad_token_id)
    embed = model.get_input_embeddings()
    return {
        "reference_model": model,
        "reference_embeds": embed(input_ids.to(device)),
        "reference_mask": mask.to(device),
    }


def _prefix_embeds(
    policy: GeneratingPolicy, prompts: Sequence[str], targets: Sequence[Reward]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, T, H]`` embeddings of the conditioned, left-padded prompts and their ``[B, T]``
    attention mask, on the policy's device."""
    rewards = [as_reward(t) for t in targets]
    batch = policy.layout(list(prompts), rewards).to(policy.device)
    reward_tensor = policy.conditioner.reward_tensor(rewards).to(policy.device)
    return policy.embed(batch.input_ids, reward_tensor, batch.prompt_mask), batch.attention_mask

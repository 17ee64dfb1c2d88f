"""vLLM inputs for conditioned prompts, built from a checkpoint directory or from memory.

Scalar mode sends each prompt as ``prompt_embeds``: the reward slot from the conditioner
followed by the prompt's token embeddings, read from the input-embedding matrix alone (never a
second copy of the model). Token mode sends ``prompt_token_ids`` ``[<|reward_k|>, *prompt]``,
or with M objectives ``[<|reward_{name_0}_k0|>, ..., <|reward_{name_M-1}_kM-1|>, *prompt]``
(the slot's M columns, as in training).
Used by :class:`online_dt.rollout.vllm_sampler.VLLMSampler` and the NCCL weight-sync receiver.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from online_dt.policy.conditioner import RewardConditioner
from online_dt.policy.layout import slot_rows
from online_dt.policy.tokens import TokenIdCache
from online_dt.rollout.weight_sync import PolicyState
from online_dt.samples import Reward


def load_input_embeddings(path: str | Path) -> torch.Tensor:
    """Read only the input-embedding matrix ``[V, H]`` of a HF checkpoint directory.

    The parameter's name is found on a meta-device skeleton of the model (no memory), then the
    tensor is read from ``model.safetensors`` or the shard that the index names.

    Raises:
        FileNotFoundError: the directory holds no safetensors weights.
        KeyError: the embedding tensor is not in the files.
    """
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    weight = skeleton.get_input_embeddings().weight
    name = next(n for n, p in skeleton.named_parameters() if p is weight)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        file = path / json.loads(index.read_text())["weight_map"][name]
    else:
        file = path / "model.safetensors"
    if not file.is_file():
        raise FileNotFoundError(f"no safetensors weights in {path}")
    with safe_open(str(file), framework="pt") as f:
        if name not in f.keys():  # noqa: SIM118 (safe_open has no __contains__)
            raise KeyError(f"{name} not found in {file}")
        return f.get_tensor(name)


class PromptBuilder:
    """Builds vLLM inputs for conditioned prompts from a checkpoint directory
    (``PromptBuilder(path)``) or from memory (:meth:`from_parts`, :meth:`with_state`).

    Attributes:
        tokenizer: the policy's tokenizer.
        conditioner: the checkpoint's :class:`RewardConditioner` (on CPU).
        embeddings: ``[V, H]`` input embeddings (scalar mode only), float32 on CPU; ``None``
            in token mode, and in a builder from a skeleton until it gets a state.
    """

    def __init__(self, path: str | Path) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self._token_ids = TokenIdCache(self.tokenizer)
        self.conditioner = RewardConditioner.load(path).eval()
        self.embeddings: torch.Tensor | None = None
        if self.conditioner.config.mode == "scalar":
            self.embeddings = load_input_embeddings(path).float()

    @classmethod
    def from_parts(
        cls, tokenizer: Any, conditioner: RewardConditioner, embeddings: torch.Tensor | None
    ) -> PromptBuilder:
        """A builder over objects already in memory (no file is read)."""
        builder = cls.__new__(cls)
        builder.tokenizer = tokenizer
        builder._token_ids = TokenIdCache(tokenizer)
        builder.conditioner = conditioner.eval()
        builder.embeddings = None if embeddings is None else embeddings.float()
        return builder

    def with_state(self, state: PolicyState) -> PromptBuilder:
        """A builder for a published in-memory version: this builder's tokenizer (a run never
        changes it), the state's conditioning and, in scalar mode, its input embeddings."""
        conditioner = RewardConditioner.from_state(state.conditioning)
        scalar = conditioner.config.mode == "scalar"
        embeddings = state.input_embedding_matrix() if scalar else None
        builder = PromptBuilder.from_parts(self.tokenizer, conditioner, embeddings)
        builder._token_ids = self._token_ids  # the same tokenizer: its prompts' ids hold
        return builder

    def encode(self, prompts: Sequence[str]) -> list[list[int]]:
        """Prompt token ids, without special tokens (as in training): prompts seen before
        come from the builder's :class:`~online_dt.policy.tokens.TokenIdCache`, new ones
        from one batched tokenizer call (the same ids as encoding them one by one)."""
        return self._token_ids.encode(prompts)

    @torch.no_grad()
    def inputs(self, prompt_ids: Sequence[Sequence[int]], targets: Sequence[Reward]) -> list[Any]:
        """One vLLM prompt per (prompt ids, target).

        Returns:
            ``{"prompt_embeds": FloatTensor[1 + L, H]}`` per prompt in scalar mode, or
            ``{"prompt_token_ids": [*slot, *ids]}`` in token mode (the slot: one reward token,
            or one per objective in config order), the layout of
            :func:`~online_dt.policy.layout.layout_batch`.
        """
        slots = slot_rows(self.conditioner.slot_token_ids(targets))
        rows = [[*slot, *ids] for slot, ids in zip(slots, prompt_ids, strict=True)]
        if self.embeddings is None:
            return [{"prompt_token_ids": row} for row in rows]
        if not rows:
            return []
        # one gather and one conditioning call for the whole batch: rows right-padded with
        # the slot's id to the longest, each prompt's embeddings then a view of its own length
        lengths = [len(row) for row in rows]
        width = max(lengths)
        index = torch.tensor([row + row[:1] * (width - len(row)) for row in rows])
        rewards = self.conditioner.reward_tensor(targets)
        embeds = self.conditioner.fill_slot(self.embeddings[index], rewards)
        return [{"prompt_embeds": embeds[i, :n]} for i, n in enumerate(lengths)]

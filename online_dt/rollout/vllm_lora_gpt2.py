"""vLLM's GPT-2 declaring LoRA support (vLLM 0.32's ``GPT2LMHeadModel`` does not), for the best
command's adapter; registered by :func:`online_dt.rollout.vllm_lora_plugin.register`, whose
docstring says why each attribute is needed. Imported by vLLM's model registry only."""

from __future__ import annotations

from typing import ClassVar

from vllm.model_executor.models.gpt2 import GPT2LMHeadModel
from vllm.model_executor.models.interfaces import SupportsLoRA


class GPT2LMHeadModelWithLoRA(GPT2LMHeadModel, SupportsLoRA):
    """vLLM's GPT-2 with per-request LoRA adapters on ``c_attn``, ``c_proj``, ``c_fc`` and
    ``lm_head`` (the adapter's names are the Hugging Face model's)."""

    packed_modules_mapping: ClassVar[dict[str, list[str]]] = {"c_attn": ["c_attn"]}
    embedding_modules: ClassVar[dict[str, str]] = {"lm_head": "output_embeddings"}

"""The ``model`` section (which causal LM is conditioned) and the ``bootstrap`` section (how
the embedded base model is built when ``model.name_or_path`` is :data:`EMBEDDED`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from online_dt.config.base import StrictModel

EMBEDDED = "embedded"
"""Special ``model.name_or_path``: the project's own tiny GPT-2 (``online-dt bootstrap``)."""


class ModelConfig(StrictModel):
    """Which causal LM to condition, and where it runs."""

    name_or_path: str = EMBEDDED
    """Hugging Face hub name or local directory of an ``AutoModelForCausalLM``, or ``embedded``
    for the project's own tiny GPT-2 (built by ``online-dt bootstrap`` on first use)."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Device for the learner and the HF reference sampler; ``auto`` picks CUDA when present."""

    bf16_autocast: bool = True
    """Use bfloat16 autocast for training forward passes on CUDA (ignored on CPU)."""

    attn_implementation: Literal["eager", "sdpa"] = "sdpa"
    """Attention kernel passed to ``from_pretrained``."""


class BootstrapConfig(StrictModel):
    """How the embedded base model is built (synthetic corpus, BPE tokenizer, tiny GPT-2)."""

    cache_dir: Path | None = None
    """Where the built model is cached; default ``$ONLINE_DT_CACHE`` or ``~/.cache/online-dt``."""

    num_texts: int = Field(60_000, ge=100)
    """Synthetic review texts generated for tokenizer and model training."""

    vocab_size: int = Field(2048, ge=300)
    """BPE vocabulary size."""

    n_layer: int = Field(4, ge=1)
    """Transformer layers of the tiny GPT-2."""

    n_embd: int = Field(128, ge=16)
    """Hidden size of the tiny GPT-2."""

    n_head: int = Field(4, ge=1)
    """Attention heads of the tiny GPT-2."""

    n_positions: int = Field(128, ge=32)
    """Context length of the tiny GPT-2 in tokens."""

    steps: int = Field(800, ge=1)
    """Pretraining optimizer steps."""

    batch_size: int = Field(64, ge=1)
    """Texts per pretraining step."""

    lr: float = Field(3e-3, gt=0.0)
    """Peak pretraining learning rate (cosine decay after a short warm-up)."""

    seed: int = 0
    """Seed for the corpus, the tokenizer's input order and the model's initialisation."""

    @model_validator(mode="after")
    def _check_heads(self) -> BootstrapConfig:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        return self

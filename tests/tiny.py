"""Tiny random models and a locally trained tokenizer for tests (no downloads)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from online_dt.policy.policy import RewardConditionedPolicy

SENTENCES = [
    "the movie was wonderful and the acting was great",
    "the food was terrible and the service was slow",
    "i thought the book was boring but the ending was lovely",
    "this hotel is awful, dirty and loud",
    "honestly the game is fun, bright and clever",
    "the plot felt weak and the music was sad",
]


def build_tokenizer(path: Path, vocab_size: int = 300):
    """A byte-level BPE tokenizer trained on a few sentences, saved to ``path``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(SENTENCES * 20, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.save_pretrained(path)
    return fast


def build_tiny_model(path: Path, arch: str = "gpt2", seed: int = 0) -> Path:
    """Save a tiny random GPT-2 or Llama-style model plus tokenizer to ``path``.

    Head size 32: vLLM's CPU attention kernels do not support smaller heads.
    """
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(path)
    torch.manual_seed(seed)
    eos = tokenizer.eos_token_id
    if arch == "gpt2":
        cfg = GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=64,
            n_embd=64,
            n_layer=2,
            n_head=2,
            bos_token_id=eos,
            eos_token_id=eos,
            pad_token_id=eos,
        )
        model = GPT2LMHeadModel(cfg)
    else:
        cfg = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=64,
            bos_token_id=eos,
            eos_token_id=eos,
            pad_token_id=eos,
            tie_word_embeddings=False,
            initializer_range=0.2,
        )
        model = LlamaForCausalLM(cfg)
    model.save_pretrained(path)
    return path


def randomize_rbf_weights(policy: RewardConditionedPolicy) -> None:
    """Move a ``reward_features: rbf`` policy's radial-basis head columns off zero (where
    they start), at a few times the reward column's scale, so that they change the slot."""
    with torch.no_grad():
        weight = policy.conditioner.head.weight
        noise = torch.randn(weight[:, 1:].shape, generator=torch.Generator().manual_seed(6))
        weight[:, 1:] = noise * weight[:, :1].abs().mean() * 4


def randomize_objective_weights(policy: RewardConditionedPolicy) -> None:
    """Move a policy with ``conditioning.objectives`` off its initial head, where only the
    first objective's column is non-zero: every column gets random weights at a few times the
    first column's scale, so that each objective changes the slot (and differently)."""
    with torch.no_grad():
        weight = policy.conditioner.head.weight
        noise = torch.randn(weight.shape, generator=torch.Generator().manual_seed(7))
        weight.copy_(noise * weight[:, :1].abs().mean() * 4)

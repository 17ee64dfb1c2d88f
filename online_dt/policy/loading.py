"""Building a conditioned policy over a base model: loading it, the fresh conditioner over it,
and the new parameters' initial values (the scalar head, the reward tokens' embeddings, a split
bin's token row)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from online_dt.config import ConditioningConfig
from online_dt.policy.conditioner import RewardConditioner
from online_dt.policy.gated_lora import GatedLoRA
from online_dt.policy.normalization import reward_token


def load_model_and_tokenizer(name_or_path: str | Path, attn_implementation: str) -> tuple[Any, Any]:
    """Load a causal LM (float32) and its tokenizer with ``from_pretrained``; the tokenizer pads
    on the left with its EOS token when it has no pad token.

    Raises:
        OSError: either cannot be loaded; the message names ``name_or_path``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
        model = AutoModelForCausalLM.from_pretrained(
            str(name_or_path), dtype=torch.float32, attn_implementation=attn_implementation
        )
    except OSError as e:
        raise OSError(
            f"cannot load model {name_or_path!r}: {e}. Give a local model directory, or check "
            "that the Hugging Face Hub is reachable for hub names."
        ) from e
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer


def pad_id(tokenizer: Any) -> int:
    """The tokenizer's pad id, else its EOS id (the reward slot's placeholder id).

    Raises:
        ValueError: it has neither.
    """
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer needs a pad or EOS token")
    return int(pad)


def slot_anchor_id(tokenizer: Any) -> int | None:
    """The token whose embedding ``slot_init: bos`` starts the reward slot at: BOS, else EOS,
    else ``None``."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def new_scalar_head(
    embeddings: torch.Tensor,
    generator: torch.Generator,
    anchor: torch.Tensor | None = None,
    inputs: int = 1,
) -> nn.Linear:
    """``Linear(inputs, hidden)`` whose outputs start on the scale of token embeddings.

    Args:
        embeddings: the input embedding matrix ``[V, H]``.
        generator: seeds the weight.
        anchor: ``[H]``, the embedding the slot starts at (``slot_init: bos``), with the weight
            drawn at a tenth of the embedding entries' standard deviation; ``None``: the mean
            embedding, weight at their standard deviation.
        inputs: the head's input features (``ConditioningConfig.head_inputs``). The first
            (the normalised reward) gets the random weight; the others (radial basis features,
            the best command's input) start at zero, so the untrained head is the one-input
            head.
    """
    hidden = embeddings.shape[1]
    head = nn.Linear(inputs, hidden)
    with torch.no_grad():
        std = embeddings.std().item() * (1.0 if anchor is None else 0.1)
        head.weight.zero_()
        head.weight[:, :1].copy_(torch.randn(hidden, 1, generator=generator) * std)
        head.bias.copy_(embeddings.mean(0) if anchor is None else anchor)
    return head


def add_reward_tokens(
    model: Any,
    tokenizer: Any,
    num_tokens: int,
    generator: torch.Generator,
    objectives: Sequence[str] = (),
) -> list[int]:
    """Add reward tokens, resize embeddings and initialise the new rows from the
    per-dimension mean and std of the existing rows (input and, if untied, output matrix).

    Args:
        model: the causal LM (its embeddings are resized, never shrunk).
        tokenizer: its tokenizer (the tokens are added as special tokens).
        num_tokens: K, reward tokens per reward.
        generator: seeds the new rows.
        objectives: the objectives' names (``conditioning.objectives``), or empty for one
            reward: ``<|reward_0|>..<|reward_{K-1}|>``; with M names, K tokens
            ``<|reward_{name}_k|>`` per objective.

    Returns:
        The new tokens' ids, ``K`` or ``M * K`` of them, objective-major: objective ``m``'s
        token ``k`` at index ``m * K + k``.
    """
    if objectives:
        tokens = [reward_token(k, name) for name in objectives for k in range(num_tokens)]
    else:
        tokens = [reward_token(k) for k in range(num_tokens)]
    tokenizer.add_tokens(tokens, special_tokens=True)
    token_ids = tokenizer.convert_tokens_to_ids(tokens)
    old_vocab = model.get_input_embeddings().weight.shape[0]
    # Some models pad their vocabulary beyond the tokenizer's; never shrink it.
    model.resize_token_embeddings(max(old_vocab, max(token_ids) + 1), mean_resizing=False)
    matrices = _embedding_matrices(model)
    new_rows = torch.tensor(token_ids)
    keep = torch.ones(matrices[0].shape[0], dtype=torch.bool)
    keep[new_rows] = False
    keep[old_vocab:] = False
    with torch.no_grad():
        for weight in matrices:
            old = weight[keep].float()
            mean, std = old.mean(0), old.std(0)
            noise = torch.randn(len(token_ids), weight.shape[1], generator=generator)
            weight[new_rows] = (mean + std * noise).to(weight.dtype)
    return token_ids


def with_fresh_conditioning(
    name_or_path: str | Path, config: ConditioningConfig, *, attn_implementation: str, seed: int
) -> tuple[Any, Any, RewardConditioner]:
    """The base causal LM and tokenizer at ``name_or_path`` with a fresh conditioner over them,
    for :meth:`~online_dt.policy.policy.RewardConditionedPolicy.from_base` (see it for the
    arguments): a new scalar head, or the reward tokens added to the model and tokenizer with
    their initial bins (token mode).

    Raises:
        OSError: the model or tokenizer cannot be found; the message names ``name_or_path``.
    """
    model, tokenizer = load_model_and_tokenizer(name_or_path, attn_implementation)
    generator = torch.Generator().manual_seed(seed)
    embeddings = model.get_input_embeddings().weight.detach().float()
    placeholder = pad_id(tokenizer)
    if config.mode == "scalar":
        anchor = slot_anchor_id(tokenizer)
        head = new_scalar_head(
            embeddings,
            generator,
            anchor=None if config.slot_init == "mean" or anchor is None else embeddings[anchor],
            inputs=config.head_inputs,
        )
        lora = None
        if config.lora_rank is not None:
            lora = GatedLoRA.fresh(
                model, config.lora_rank, generator, config.lora_layers, config.lora_output_layer
            )
        conditioner = RewardConditioner(config, placeholder_id=placeholder, head=head, lora=lora)
    else:
        token_ids = add_reward_tokens(
            model, tokenizer, config.num_reward_tokens, generator, config.objective_names
        )
        conditioner = RewardConditioner(
            config,
            placeholder_id=placeholder,
            binnings=RewardConditioner.initial_binnings(config),
            reward_token_ids=token_ids,
        )
    return model, tokenizer, conditioner


def copy_split_rows(
    model: Any, token_ids: Sequence[int], splits: Sequence[tuple[int, int]]
) -> None:
    """For each ``(new_bin, split_bin)`` split (:meth:`RewardConditioner.fit_reward_statistics`),
    set the new bin's reward-token embedding row (input, and output if untied) to a copy of the
    split bin's; bin ``k``'s token is ``token_ids[k]``."""
    if splits:
        matrices = _embedding_matrices(model)
        with torch.no_grad():
            for new_bin, old_bin in splits:
                for weight in matrices:
                    weight[token_ids[new_bin]] = weight[token_ids[old_bin]]


def _embedding_matrices(model: Any) -> list[torch.Tensor]:
    """The model's input embedding matrix and, if untied, its output matrix."""
    matrices = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != matrices[0].data_ptr():
        matrices.append(output.weight)
    return matrices

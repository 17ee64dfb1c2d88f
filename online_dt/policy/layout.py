"""The one sequence layout shared by training, HF generation and the vLLM prompt.

Every conditioned sequence is ``[slot] + tokens``: the conditioning slot sits at the start,
followed by the prompt and, in training, the completion. The slot is ``W`` columns wide
(``ConditioningConfig.slot_width``): one column for the scalar reward embedding or the one
reward token, and, in token mode with M objectives, M columns, one reward token per objective
in the config's order. Padding goes after the slot: on the left of the tokens for generation
batches, on the right for training batches. The attention mask is 1 for the slot and every
real token, and position ids are ``cumsum(mask) - 1`` clamped at 0, so a left-padded row gets
exactly the positions of the same row unpadded: slot at ``0..W-1``, first prompt token at
``W``, and so on. Decoding keeps appending 1s to the mask and continues the positions from the
last one.

This is the rule ../shared/PLATFORM.md derives from the first scalar-conditioning library for
GPT-2, whose generation path prepended the slot to the mask but kept the old position ids, so
the first generated token reused the last prompt token's position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

IGNORE_INDEX = -100
"""Label of positions that carry no loss (slot, padding, and prompt tokens by default)."""


@dataclass
class ConditionedBatch:
    """A padded batch in the shared layout.

    Attributes:
        input_ids: ``LongTensor[B, T]``. Columns ``0..slot_width-1`` are the slot: the reward
            token ids in token mode (one per objective with objectives), a placeholder (the
            pad id) in scalar mode, whose embedding is replaced.
        attention_mask: ``LongTensor[B, T]``, 1 for the slot and real tokens, 0 for padding.
        position_ids: ``LongTensor[B, T]``, ``clamp(cumsum(attention_mask) - 1, min=0)``.
        labels: ``LongTensor[B, T]`` or ``None``; ``IGNORE_INDEX`` where no loss is taken.
            Labels are aligned with ``input_ids`` (the model shifts them: logits at t predict
            token t+1).
        prompt_mask: ``BoolTensor[B, T]`` or ``None``: True on the prompt's tokens (not the
            slot, padding or completion), where ``conditioning.reward_on_prompt`` adds the
            reward vector.
        slot_width: ``W``, the slot's columns (1, or M reward tokens in token mode with M
            objectives).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor | None = None
    prompt_mask: torch.Tensor | None = None
    slot_width: int = 1

    def to(self, device: torch.device | str) -> ConditionedBatch:
        """Return the batch with every tensor moved to ``device``."""
        return ConditionedBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.position_ids.to(device),
            None if self.labels is None else self.labels.to(device),
            None if self.prompt_mask is None else self.prompt_mask.to(device),
            self.slot_width,
        )

    def select(self, rows: torch.Tensor) -> ConditionedBatch:
        """The batch's rows ``rows`` (``LongTensor[K]``, on the batch's device), every tensor
        indexed alike; the columns (and so the padding) stay as they are."""
        return ConditionedBatch(
            self.input_ids[rows],
            self.attention_mask[rows],
            self.position_ids[rows],
            None if self.labels is None else self.labels[rows],
            None if self.prompt_mask is None else self.prompt_mask[rows],
            self.slot_width,
        )


def context_length(model_config: Any) -> int | None:
    """The model's maximum sequence length in tokens (``max_position_embeddings``,
    ``n_positions`` or ``n_ctx``), or ``None`` when the config does not say."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(model_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids for a (possibly padded) mask: ``clamp(cumsum(mask, -1) - 1, min=0)``.

    Args:
        attention_mask: ``[B, T]`` of 0/1.

    Returns:
        ``LongTensor[B, T]``; padded positions get the position of the last real token before
        them (or 0), which is harmless because they are masked out.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def slot_rows(slot_ids: Sequence[int | Sequence[int]]) -> list[list[int]]:
    """Each row's slot as a list of ids: an int is a one-column slot, a list or tuple of ids
    the slot's columns in order.

    Raises:
        ValueError: the rows' slots are not all of one width, or a slot is empty.
    """
    rows = [[int(i) for i in s] if isinstance(s, list | tuple) else [int(s)] for s in slot_ids]
    widths = {len(r) for r in rows}
    if len(widths) > 1 or 0 in widths:
        raise ValueError(f"every row's slot must have the same width (>= 1), got {sorted(widths)}")
    return rows


def layout_batch(
    slot_ids: Sequence[int | Sequence[int]],
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]] | None = None,
    *,
    pad_id: int,
    padding_side: Literal["left", "right"] = "right",
    include_prompt_loss: bool = False,
) -> ConditionedBatch:
    """Pad ``[slot] + prompt (+ completion)`` rows into one batch.

    Args:
        slot_ids: per row, the slot's ids: one id (a one-column slot: the reward token, or a
            placeholder in scalar mode), or a list of ``W`` ids (token mode with ``W``
            objectives, one reward token per objective in order), the same ``W`` for every
            row (:meth:`RewardConditioner.slot_token_ids` gives either form).
        prompt_ids: token ids of each prompt, without any special token.
        completion_ids: token ids of each completion (usually ending with EOS); when given,
            ``labels`` is filled: completion tokens are targets, the slot and padding are
            ``IGNORE_INDEX``, and prompt tokens are too unless ``include_prompt_loss``.
        pad_id: token id written into padded positions.
        padding_side: ``left`` puts padding between the slot and the tokens (generation),
            ``right`` after the tokens (training).
        include_prompt_loss: also take loss on prompt tokens.

    Returns:
        A :class:`ConditionedBatch` of width ``W + max(len(prompt) + len(completion))``.

    Raises:
        ValueError: the three sequences differ in length, the batch is empty, or a slot is
            empty or the slots differ in width.
    """
    n = len(slot_ids)
    if n == 0:
        raise ValueError("cannot lay out an empty batch")
    if len(prompt_ids) != n or (completion_ids is not None and len(completion_ids) != n):
        raise ValueError("slot_ids, prompt_ids and completion_ids must have the same length")
    slots = slot_rows(slot_ids)
    slot_width = len(slots[0])
    completions = completion_ids if completion_ids is not None else [[] for _ in range(n)]
    prompt_lengths = torch.tensor([len(p) for p in prompt_ids], dtype=torch.long)
    lengths = prompt_lengths + torch.tensor([len(c) for c in completions], dtype=torch.long)
    tokens = torch.tensor(
        [
            int(t)
            for p, c in zip(prompt_ids, completions, strict=True)
            for seq in (p, c)
            for t in seq
        ],
        dtype=torch.long,
    )  # every row's prompt + completion, one after another
    span = int(lengths.max())
    width = slot_width + span
    # j: the index into its row's prompt + completion of each token column (right padding
    # starts every row at the slot; left padding ends every row at the last column)
    offset = torch.zeros_like(lengths) if padding_side == "right" else span - lengths
    j = torch.arange(span)[None, :] - offset[:, None]
    real = (j >= 0) & (j < lengths[:, None])
    row_start = torch.cumsum(lengths, 0) - lengths
    body = torch.full((n, span), pad_id, dtype=torch.long)
    body[real] = tokens[(row_start[:, None] + j)[real]]
    in_prompt = real & (j < prompt_lengths[:, None])
    labelled = real if include_prompt_loss else real & ~in_prompt
    input_ids = torch.cat([torch.tensor(slots, dtype=torch.long), body], dim=1)
    mask = torch.cat([torch.ones((n, slot_width), dtype=torch.long), real.long()], dim=1)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    labels[:, slot_width:][labelled] = body[labelled]
    prompt_mask = torch.cat([torch.zeros((n, slot_width), dtype=torch.bool), in_prompt], dim=1)
    return ConditionedBatch(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=positions_from_mask(mask),
        labels=labels if completion_ids is not None else None,
        prompt_mask=prompt_mask,
        slot_width=slot_width,
    )

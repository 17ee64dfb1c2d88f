"""Next-token logits at the labelled positions only: the output layer where a loss is taken.

A training batch in the shared layout carries loss on the completion tokens (and EOS), not on
the slot, the prompt or the padding: on the embedded default about a third of the positions
carry none. A causal LM's forward applies its output layer (``[H, V]``) and the loss's softmax
at every position. :class:`LabelledLogits` runs the model's body over every position and the
output layer only at the labelled ones, which gives the same logits there (up to float
rounding) with less compute and less memory (the ``[B, T, V]`` logits are the largest
activation of a model with a large vocabulary). Liger-Kernel's fused linear cross-entropy and
transformers' ``logits_to_keep`` (which TRL's ``GRPOTrainer`` passes, for the completion's
columns) skip the unneeded rows of the output layer for the same reason; this selects them
per row: right-padded rows with prompts of different lengths share only part of their
labelled columns.

It splits the model into ``model.base_model`` (the body) and
``model.get_output_embeddings()`` (the output layer), and checks once, on a tiny input, that
the output layer applied to the body's last hidden state gives the model's own logits. Models
whose forward does more after the output layer (Gemma 2's logit soft-capping, Cohere's
``logit_scale``) fail the check and keep the full forward, whose logits are then gathered at
the same positions: the result is the same either way, only the cost differs. An output
layer that a gated LoRA adapts (``conditioning.lora_output_layer``) gets each picked position's
gate from its row (:meth:`~online_dt.policy.gated_lora.GatedLoRA.positions`).
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from online_dt.policy.layout import IGNORE_INDEX

if TYPE_CHECKING:
    from online_dt.policy.gated_lora import GatedLoRA

log = logging.getLogger(__name__)


def labelled_positions(labels: torch.Tensor) -> torch.Tensor:
    """Where a next-token loss is taken.

    Args:
        labels: ``LongTensor[B, T]`` aligned with the inputs (the logits at column ``t``
            predict the token at ``t + 1``), ``IGNORE_INDEX`` (-100) where no loss is taken.

    Returns:
        ``BoolTensor[B, T]``: True at column ``t`` when ``labels[:, t + 1]`` is a token
        (never at the last column).
    """
    return F.pad(labels[:, 1:] != IGNORE_INDEX, (0, 1), value=False)


def labelled_targets(labels: torch.Tensor) -> torch.Tensor:
    """The tokens the positions of :func:`labelled_positions` predict.

    Args:
        labels: ``LongTensor[B, T]`` as there.

    Returns:
        ``LongTensor[N]``, in the row-major order of :func:`labelled_positions`'s True entries
        (``N`` may be 0).
    """
    targets = labels[:, 1:]
    return targets[targets != IGNORE_INDEX]


def split_output_layer(model: Any) -> tuple[Any, torch.nn.Module] | None:
    """``(body, output_layer)`` of a Hugging Face causal LM when its logits are exactly the
    output layer applied to the body's last hidden state; ``None`` otherwise.

    The body is ``model.base_model`` (transformers' accessor through ``base_model_prefix``,
    e.g. GPT-2's ``transformer``, Llama's and Qwen's ``model``) and the output layer
    ``model.get_output_embeddings()``. The check runs both ways on two rows of three tokens,
    given as ``inputs_embeds`` with ``attention_mask`` and ``position_ids`` as the policy's
    forward gives them, in eval mode without gradients (each submodule's mode is restored),
    and asks for equal logits, bit for bit: both ways run the same operations on the same
    input, while a transform after the output layer (a soft-capping ``tanh``, a scale) changes
    the last bits of any logit not close to 0. A model without either part, or any error
    raised on the way, gives ``None``: a false ``None`` costs speed, never correctness.
    """
    body = getattr(model, "base_model", None)
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if body is None or body is model or head is None:
        return None
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        vocab = int(head.weight.shape[0])
        ids = torch.arange(6, device=head.weight.device).reshape(2, 3) % vocab
        with torch.no_grad():
            inputs = {
                "inputs_embeds": model.get_input_embeddings()(ids),
                "attention_mask": torch.ones_like(ids),
                "position_ids": torch.arange(3, device=ids.device).expand(2, 3),
            }
            full = model(**inputs).logits
            split = head(body(**inputs).last_hidden_state)
    except Exception as err:  # any failure only means the full forward
        log.info("output layer not split (%s: %s); full logits", type(err).__name__, err)
        return None
    finally:
        for module, training in modes.items():
            module.training = training
    if full.shape != split.shape or not torch.equal(full, split):
        log.info("the model's logits are not its output layer's; full logits")
        return None
    return body, head


class LabelledLogits:
    """The logits of ``model`` at the labelled positions only.

    Args:
        model: a Hugging Face causal LM (the policy's, or the frozen base model).
        split: run the output layer only at the labelled positions when
            :func:`split_output_layer` accepts the model; ``False``: always the full forward,
            gathered (the same values at more cost).
        lora: the policy's gated LoRA, if any: when it adapts the output layer
            (``conditioning.lora_output_layer``), that layer reads each labelled position's
            gate from its row.

    Attributes:
        split: whether the output layer runs on the labelled positions only.
    """

    def __init__(self, model: Any, *, split: bool = True, lora: GatedLoRA | None = None) -> None:
        self.model = model
        self.lora = lora
        gate = None if lora is None else lora.gate
        if lora is not None:
            lora.clear_gate()  # the check's rows are not the ones a gate was set for
        try:
            self._parts = split_output_layer(model) if split else None
        finally:
            if lora is not None and gate is not None:
                lora.set_gate(gate)
        self.split = self._parts is not None

    def __call__(self, inputs: dict[str, torch.Tensor], where: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, V]`` at the True entries of ``where``, row-major.

        Args:
            inputs: the model's keyword arguments for ``[B, T]`` rows (``input_ids`` or
                ``inputs_embeds``, ``attention_mask``, ``position_ids``).
            where: ``BoolTensor[B, T]``, usually :func:`labelled_positions` of the labels.

        Returns:
            ``[N, V]`` logits (``N`` = ``where.sum()``) in the dtype the output layer computes
            in (bfloat16 under CUDA autocast), differentiable in the model's parameters and in
            ``inputs_embeds``. The same values as the full forward's at those positions, up to
            float rounding where a kernel differs with the row count.
        """
        if self._parts is None:
            return self.model(**inputs).logits[where]
        body, head = self._parts
        hidden = body(**inputs).last_hidden_state[where]
        with self.lora.positions(where) if self.lora is not None else contextlib.nullcontext():
            return head(hidden)

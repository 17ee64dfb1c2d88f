"""The sampler a config asks for, over a published policy directory."""

from __future__ import annotations

from online_dt.config import OnlineRunConfig
from online_dt.rollout.sampler import HFSampler, Sampler, make_sampler_backend_name


def make_sampler(cfg: OnlineRunConfig, path: str, version: int) -> Sampler:
    """The configured sampler backend (``sampler.backend``: vLLM, or the HF reference) over a
    policy directory written by ``save_pretrained`` or published by the learner.

    Args:
        cfg: the run config (``sampler``, ``sampling.batch_size``, ``model.device``).
        path: the policy directory.
        version: the policy version those weights are (stamped on every rollout).

    Raises:
        ImportError: ``sampler.backend: vllm`` and vLLM is not installed.
        OSError: ``path`` holds no policy.
    """
    if make_sampler_backend_name(cfg.sampler.backend) == "vllm":
        from online_dt.rollout.vllm_sampler import VLLMSampler

        return VLLMSampler(path, cfg.sampler, policy_version=version)
    from online_dt.policy.policy import RewardConditionedPolicy

    policy = RewardConditionedPolicy.from_pretrained(path, device=cfg.model.device)
    return HFSampler(policy.eval(), batch_size=cfg.sampling.batch_size, policy_version=version)

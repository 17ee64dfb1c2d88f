"""The models an evaluation loads: a sampler over the policy, and the base model for KL.

:func:`load_sampler` builds the sampler (the in-process HF sampler, optionally guided, or the
run's configured backend) over the evaluated policy; :func:`kl_estimator` loads the frozen
base model (:func:`_load_base_model`) and estimates each rollout's KL to it.
"""

from __future__ import annotations

import logging
from typing import Any

from online_dt.eval.source import EvalSource
from online_dt.training.kl import kl_per_completion

log = logging.getLogger(__name__)


def load_sampler(
    cfg: Any, src: EvalSource, backend: str, guidance: dict[str, Any] | None = None
) -> tuple[Any, Any]:
    """The sampler an evaluation draws its completions from, over the source's policy.

    Args:
        cfg: the run config (``model.device``, ``sampling.batch_size``; with
            ``backend="config"``, the whole :class:`~online_dt.config.OnlineRunConfig`).
        src: the evaluated policy (:func:`~online_dt.eval.source.resolve_source`).
        backend: ``"hf"`` (the in-process
            :class:`~online_dt.rollout.hf_sampler.HFSampler`) or ``"config"`` (the run's
            configured sampler backend, e.g. vLLM; falls back to ``"hf"`` when ``cfg`` is not
            an online run's config).
        guidance: the report's ``guidance`` (:func:`~online_dt.eval.steering.plan_guidance`'s:
            ``weight``, ``rewards`` in reward units, ``prior_weights``); with it the HF sampler
            samples with classifier-free guidance. ``None``: unguided.

    Returns:
        ``(sampler, policy)``: the policy is the HF
        :class:`~online_dt.policy.policy.RewardConditionedPolicy` on ``cfg.model.device``, in
        eval mode; it also tokenizes for the KL estimate (:func:`kl_estimator`).

    Raises:
        ValueError: ``backend`` is neither ``"hf"`` nor ``"config"``, or the policy's
            conditioning file has a newer format version.
        FileNotFoundError, OSError: the policy cannot be loaded from ``src.policy_dir``.
    """
    from online_dt.config import OnlineRunConfig
    from online_dt.policy.policy import RewardConditionedPolicy
    from online_dt.rollout.hf_sampler import HFSampler

    if backend not in ("hf", "config"):
        raise ValueError(f"backend must be 'hf' or 'config', got {backend!r}")
    device = cfg.model.device
    policy = RewardConditionedPolicy.from_pretrained(src.policy_dir, device=device).eval()
    version = src.policy_version or 0
    if backend == "config" and isinstance(cfg, OnlineRunConfig):
        from online_dt.rollout.factory import make_sampler

        return make_sampler(cfg, str(src.policy_dir), version), policy
    return HFSampler(
        policy,
        batch_size=cfg.sampling.batch_size,
        policy_version=version,
        guidance_weight=guidance["weight"] if guidance else 0.0,
        guidance_mixture=(
            list(zip(guidance["rewards"], guidance["prior_weights"], strict=True))
            if guidance
            else ()
        ),
    ), policy


def close_sampler(sampler: Any) -> None:
    """Close ``sampler`` if it has a ``close`` method: a vLLM engine holds memory and
    processes until closed; the HF sampler has nothing to close."""
    close = getattr(sampler, "close", None)
    if close is not None:
        close()


def kl_estimator(cfg: Any, policy: Any) -> tuple[Any, str | None]:
    """A KL-to-base estimator for the evaluated policy: loads the run's frozen base model.

    Args:
        cfg: the run config (``model``, ``bootstrap``: the base model as the learner builds it).
        policy: the evaluated HF policy (:func:`load_sampler`'s), whose logprobs the estimate
            compares with the base model's.

    Returns:
        ``(kl, None)``: ``kl(rollouts)`` gives each rollout's KL to the base model (nats per
        completion, the k1 estimate of :func:`kl_per_completion`); or ``(None, why)`` when the
        base model cannot be loaded (an ``OSError``, logged as a warning and not raised).
    """
    try:
        base_model = _load_base_model(cfg)
    except OSError as e:
        error = f"base model could not be loaded: {e}"
        log.warning("no KL estimate: %s", error)
        return None, error
    return (lambda rollouts: kl_per_completion(policy, base_model, rollouts)), None


def _load_base_model(cfg: Any) -> Any:
    """The frozen base model as the learner builds it (same vocabulary as the policy)."""
    from online_dt.embedded.base_model import resolve_base_model
    from online_dt.policy.policy import RewardConditionedPolicy

    base = resolve_base_model(cfg.model, cfg.bootstrap, progress=False)
    return RewardConditionedPolicy.fresh(cfg, base).model.eval().requires_grad_(False)

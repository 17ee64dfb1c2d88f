"""``online-dt eval RUN_DIR_OR_CHECKPOINT``: evaluate a trained policy and write the report.

The command loads the policy (a run directory's latest checkpoint, a checkpoint directory, or a
saved policy directory; :func:`~online_dt.eval.source.resolve_source`) and the run's config
(reward model, prompts, sampling), samples ``samples_per_target`` completions per target,
scores them and writes a calibration table as JSON plus a PNG plot into ``RUN_DIR/eval/``:

* ``calibration.json``: the report, one row per target (:mod:`online_dt.eval.calibration`)
  with the KL estimate to the base model (nats per completion) and, in token mode, the reward
  bin the target maps to (``bin``: index, edges, token, ``above_range``);
* ``calibration.png``: achieved vs target with the identity line, and diversity and KL per
  target (:mod:`online_dt.eval.plot`).

With ``reference_samples > 0`` (``--reference-samples N``, default
:data:`~online_dt.eval.reference.DEFAULT_REFERENCE_SAMPLES`) the report also holds the
binned-base reference (:mod:`online_dt.eval.reference`): N base-model samples on the same
prompts, binned by reward around each target and on a grid (the base's own reward-vs-NLL and
reward-vs-KL curve), which the console table prints under each target's row and the
dashboard's reward-vs-KL panel draws.

By default one target above the best reward ever seen in the replay buffer is added and marked
``extrapolation``: the policy was never trained on such a label, and the row shows what asking
for it does (usually: the achieved reward saturates or falls, and KL rises).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from online_dt.eval.calibration import (
    DEFAULT_EXTRAPOLATION_MARGIN,
    default_targets,
    evaluate_calibration,
    plan_targets,
)
from online_dt.eval.plot import plot_calibration
from online_dt.eval.reference import DEFAULT_BIN_HALF_WIDTH, DEFAULT_REFERENCE_SAMPLES
from online_dt.eval.source import EvalError, EvalSource, buffer_rewards, resolve_source
from online_dt.launch.rundir import (
    CONFIG_FILE,
    EVAL_DIR,
    EVAL_PLOT_FILE,
    EVAL_TABLE_FILE,
    finite_or_none,
)
from online_dt.training.kl import kl_per_completion
from online_dt.util.seeds import derived_seed

log = logging.getLogger(__name__)

REFERENCE_SEED_KEY = 2**20
"""The reference's sampling seed is ``derived_seed(seed, REFERENCE_SEED_KEY)`` (target k uses
``derived_seed(seed, k)``, and no evaluation has that many targets)."""

DEFAULT_SAMPLES_PER_TARGET = 64
"""Completions per target by default (about 1 s per target for the embedded model on 2 cores)."""


def run_eval(
    source: str | Path,
    *,
    targets: Sequence[float] | None = None,
    samples_per_target: int = DEFAULT_SAMPLES_PER_TARGET,
    out_dir: str | Path | None = None,
    config_path: str | Path | None = None,
    backend: str = "hf",
    extrapolation_margin: float | None = DEFAULT_EXTRAPOLATION_MARGIN,
    with_kl: bool = True,
    seed: int = 0,
    reference_samples: int = DEFAULT_REFERENCE_SAMPLES,
    reference_half_width: float = DEFAULT_BIN_HALF_WIDTH,
) -> dict[str, Any]:
    """Evaluate a policy and write ``calibration.json`` and ``calibration.png``.

    Args:
        source: run directory, checkpoint directory or policy directory
            (see :func:`resolve_source`).
        targets: target rewards (reward units); default: :func:`default_targets` of the buffer.
        samples_per_target: completions per target.
        out_dir: where to write; default ``RUN_DIR/eval`` (or ``eval/`` next to the policy).
        config_path: the config to use instead of the run's ``config.yaml``.
        backend: ``hf`` (the in-process reference sampler, default: no engine start-up) or
            ``config`` (the run's configured sampler backend, e.g. vLLM).
        extrapolation_margin: add the target ``best buffer reward + margin`` (``None``: don't).
        with_kl: estimate KL to the base model per target (loads the base model).
        seed: sampling seed; target k samples with ``derived_seed(seed, k)``.
        reference_samples: base-model samples for the binned-base reference (>= 0; 0: none).
        reference_half_width: half the width of its reward bins (reward units, > 0).

    Returns:
        The report written to ``calibration.json``: ``rows`` (see :func:`evaluate_calibration`),
        ``buffer`` (``best_reward``, ``samples``), the policy, config, sampling settings, the
        paths written (``table``, ``plot``), timings, ``reference`` (the dict of
        :func:`~online_dt.eval.reference.eval_reference` with non-finite numbers as ``None``,
        or ``None``) and ``reference_error`` (why it is missing when the base model could not
        be loaded, else ``None``).

    Raises:
        ValueError: ``reference_samples < 0`` or ``reference_half_width <= 0``.
        EvalError: no policy or config found.
        ConfigError: the config is invalid.
        PromptError, RewardModelLoadError, OSError: prompts, reward model or models can't load.
    """
    from online_dt.config import config_class_for, load_config
    from online_dt.launch.prompts import load_prompts
    from online_dt.rewards import load_reward_model, score_checked
    from online_dt.rollout.sampler import SamplingParams
    from online_dt.util.atomic import atomic_write_bytes, atomic_write_json

    if reference_samples < 0:
        raise ValueError(f"reference_samples must be >= 0, got {reference_samples}")
    if not reference_half_width > 0:
        raise ValueError(f"reference_half_width must be > 0, got {reference_half_width}")
    started = time.perf_counter()
    src = resolve_source(source)
    cfg_file = Path(config_path) if config_path is not None else src.config_path
    if cfg_file is None:
        raise EvalError(f"no {CONFIG_FILE} found above {src.policy_dir}; pass --config FILE")
    cfg = load_config(cfg_file, config_class_for(cfg_file))
    rewards_seen = buffer_rewards(src.run_dir)
    best = float(rewards_seen.max()) if len(rewards_seen) else None
    given = list(targets) if targets else default_targets(rewards_seen)
    planned = plan_targets(given, best, extrapolation_margin)

    prompts = load_prompts(cfg.prompts)
    reward_model = load_reward_model(cfg.reward_model)
    sampler, policy = _load_sampler(cfg, src, backend)
    try:
        t_loaded = time.perf_counter()
        kl_fn = None
        kl_error = None
        if with_kl:
            try:
                base_model = _load_base_model(cfg)
                kl_fn = lambda rollouts: kl_per_completion(policy, base_model, rollouts)  # noqa: E731
            except OSError as e:
                kl_error = f"base model could not be loaded: {e}"
                log.warning("no KL estimate: %s", kl_error)

        rows = evaluate_calibration(
            sampler,
            lambda p, c: score_checked(reward_model, p, c),
            prompts,
            planned,
            samples_per_target,
            lambda k: SamplingParams.from_config(cfg.sampling, n=1, seed=derived_seed(seed, k)),
            kl=kl_fn,
            describe=policy.conditioner.describe_target,
        )
        reference, reference_error = _reference(
            cfg,
            prompts[:samples_per_target],
            lambda p, c: score_checked(reward_model, p, c),
            [t for t, _ in planned],
            reference_samples,
            reference_half_width,
            samples_per_target,
            derived_seed(seed, REFERENCE_SEED_KEY),
        )
    finally:
        close = getattr(sampler, "close", None)
        if close is not None:
            close()  # a vLLM engine holds memory and processes until closed
    out = (
        Path(out_dir) if out_dir is not None else (src.run_dir or src.policy_dir.parent) / EVAL_DIR
    )
    report = {
        "created_at": time.time(),
        "source": str(source),
        "policy": str(src.policy_dir),
        "run_dir": str(src.run_dir) if src.run_dir else None,
        "config": str(cfg_file),
        "iteration": src.iteration,
        "policy_version": src.policy_version,
        "backend": getattr(sampler, "backend", backend),
        "reward_model": cfg.reward_model.kind,
        "samples_per_target": samples_per_target,
        "sampling": cfg.sampling.model_dump(mode="json"),
        "seed": seed,
        "buffer": {"best_reward": best, "samples": len(rewards_seen)},
        "extrapolation_margin": extrapolation_margin,
        "kl_estimator": "k1: mean over completions of sum_t log pi(y_t) - log p_base(y_t), nats",
        "kl_error": kl_error,
        "rows": rows,
        "reference": reference,
        "reference_error": reference_error,
        "timings_s": {
            "load_s": t_loaded - started,
            "eval_s": time.perf_counter() - t_loaded,
        },
        "table": str(out / EVAL_TABLE_FILE),
        "plot": str(out / EVAL_PLOT_FILE),
    }
    atomic_write_bytes(out / EVAL_PLOT_FILE, plot_calibration(report))
    atomic_write_json(out / EVAL_TABLE_FILE, report)
    return report


def _reference(
    cfg: Any,
    prompts: Sequence[str],
    score: Any,
    targets: Sequence[float],
    samples: int,
    half_width: float,
    max_samples: int,
    seed: int,
) -> tuple[dict[str, Any] | None, str | None]:
    """(the binned-base reference or ``None``, why it is missing or ``None``)."""
    from online_dt.eval.reference import eval_reference

    if samples == 0:
        return None, None
    try:
        reference = eval_reference(
            cfg,
            prompts,
            score,
            targets,
            samples=samples,
            seed=seed,
            half_width=half_width,
            max_samples=max_samples,
        )
    except OSError as e:
        log.warning("no binned-base reference: base model could not be loaded: %s", e)
        return None, f"base model could not be loaded: {e}"
    return finite_or_none(reference), None


def _load_sampler(cfg: Any, src: EvalSource, backend: str) -> tuple[Any, Any]:
    """(sampler, HF policy) over the source's policy; the HF policy also tokenizes for KL."""
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
    return HFSampler(policy, batch_size=cfg.sampling.batch_size, policy_version=version), policy


def _load_base_model(cfg: Any) -> Any:
    """The frozen base model as the learner builds it (same vocabulary as the policy)."""
    from online_dt.embedded.base_model import resolve_base_model
    from online_dt.policy.policy import RewardConditionedPolicy

    base = resolve_base_model(cfg.model, cfg.bootstrap, progress=False)
    return RewardConditionedPolicy.fresh(cfg, base).model.eval().requires_grad_(False)

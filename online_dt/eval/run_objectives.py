"""``online-dt eval`` of a run with several objectives: the grid evaluation, end to end.

:func:`run_objectives_eval` (called by :func:`~online_dt.eval.run.run_eval` for a run with
``conditioning.objectives``) plans the target vectors (:mod:`online_dt.eval.objectives`),
samples and scores them (:mod:`online_dt.eval.objectives_rows`) and writes
``objectives.json`` and ``objectives.png``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from online_dt.eval.loading import close_sampler, kl_estimator, load_sampler
from online_dt.eval.objectives import (
    ACHIEVABLE_MIN_COUNT,
    ACHIEVABLE_RADIUS,
    CALIBRATION_GOAL,
    DEFAULT_GRID_POINTS,
    GRID_QUANTILES,
    achievable,
    buffer_reward_vectors,
    grid_targets,
)
from online_dt.eval.objectives_rows import evaluate_grid, summarize_grid
from online_dt.eval.plot import plot_objectives
from online_dt.eval.source import EvalError, EvalSource
from online_dt.eval.target_input import TargetSpec, vector_targets
from online_dt.launch.rundir import (
    EVAL_OBJECTIVES_FILE,
    EVAL_OBJECTIVES_PLOT_FILE,
    finite_or_none,
)
from online_dt.util.seeds import derived_seed

REFERENCE_SKIPPED = (
    "the binned-base reference bins base-model samples by a single reward; it is skipped for "
    "runs with several objectives (conditioning.objectives)"
)
"""``reference_error`` of a multi-objective evaluation (with ``reference_samples > 0``)."""


def run_objectives_eval(
    source: str | Path,
    src: EvalSource,
    cfg: Any,
    cfg_file: Path,
    *,
    targets: Sequence[TargetSpec] | None,
    grid: int | None,
    samples_per_target: int,
    out_dir: str | Path | None,
    backend: str,
    with_kl: bool,
    seed: int,
    reference_samples: int,
    started: float,
) -> dict[str, Any]:
    """The grid evaluation of a run with ``conditioning.objectives``
    (:mod:`online_dt.eval.objectives`): writes ``objectives.json`` and ``objectives.png``.

    Targets: the explicit vectors, else the ``grid ** M`` grid of
    :func:`~online_dt.eval.objectives.grid_targets` over the buffer's reward vectors. Prompts
    and seeds as the single-reward evaluation: every target sees the first
    ``samples_per_target`` prompts of the run's prompt set (cycling), target k samples with
    ``derived_seed(seed, k)``.

    Args:
        source: what was asked to evaluate, as given (recorded in the report).
        src: the resolved policy (:func:`~online_dt.eval.source.resolve_source`).
        cfg: the run config, with ``conditioning.objectives``.
        cfg_file: the config's path (recorded in the report and named in the messages).
        targets: explicit target vectors (reward units, one value per objective in the
            config's order), or ``None``.
        grid: grid points per objective (``>= 1``); ``None``:
            :data:`~online_dt.eval.objectives.DEFAULT_GRID_POINTS`. Not with ``targets``.
        samples_per_target: completions per target.
        out_dir: where to write; ``None``: ``RUN_DIR/eval`` (or ``eval/`` next to the policy).
        backend: ``"hf"`` or ``"config"`` (:func:`~online_dt.eval.loading.load_sampler`).
        with_kl: estimate KL to the base model per target (nats per completion).
        seed: the sampling seed.
        reference_samples: as asked of :func:`~online_dt.eval.run.run_eval`; only used to say
            why the report has no reference.
        started: :func:`time.perf_counter` when the evaluation began (for ``timings_s``).

    Returns:
        The report written to ``objectives.json``: ``kind`` (``"objectives"``), ``objectives``
        (``name``, ``low``, ``high`` each), ``grid_points`` (``None`` with explicit targets),
        ``rows`` (:func:`~online_dt.eval.objectives_rows.evaluate_grid`; in token mode each row
        also has ``bin``: the target's bin and ``above_range`` per objective, from the
        policy conditioner's ``describe_target``), ``summary``
        (:func:`~online_dt.eval.objectives_rows.summarize_grid`), ``achievable_rule`` (radius in
        normalised units and minimum count), ``buffer`` (``samples``; ``best``: per objective
        the largest achieved reward, or ``None``), the policy, config, sampling settings,
        timings, ``reference: None`` with ``reference_error`` (why), the paths written
        (``table``, ``plot``); non-finite numbers are ``None``.

    Raises:
        EvalError: ``grid`` with ``targets``, a target that is not a vector of ``M`` finite
            values, or a buffer whose reward vectors do not match the objectives
            (:func:`~online_dt.eval.objectives.buffer_reward_vectors`).
        BufferCorruptError: the buffer's shards do not cover the persisted ids.
        ValueError: ``backend`` is neither ``"hf"`` nor ``"config"``.
        PromptError, RewardModelLoadError, OSError: prompts, reward model or policy can't load.
    """
    from online_dt.launch.prompts import load_prompts
    from online_dt.rewards import load_reward_model, score_checked
    from online_dt.rollout.sampler import SamplingParams
    from online_dt.util.atomic import atomic_write_bytes, atomic_write_json

    objectives = list(cfg.conditioning.objectives)
    names = [o.name for o in objectives]
    if targets and grid is not None:
        raise EvalError("give either --targets or --grid (grid points per objective), not both")
    explicit = vector_targets(targets, names, cfg_file) if targets else None
    per_axis = None if explicit else (DEFAULT_GRID_POINTS if grid is None else grid)
    rewards_seen = buffer_reward_vectors(src.run_dir, len(objectives))
    planned = explicit or grid_targets(objectives, rewards_seen, per_axis or DEFAULT_GRID_POINTS)
    flags = achievable(planned, rewards_seen, objectives)

    prompts = load_prompts(cfg.prompts)
    reward_model = load_reward_model(cfg.reward_model)
    sampler, policy = load_sampler(cfg, src, backend)
    try:
        t_loaded = time.perf_counter()
        kl_fn, kl_error = kl_estimator(cfg, policy) if with_kl else (None, None)
        rows = evaluate_grid(
            sampler,
            lambda p, c: score_checked(reward_model, p, c, objectives=names),
            prompts,
            planned,
            samples_per_target,
            lambda k: SamplingParams.from_config(cfg.sampling, n=1, seed=derived_seed(seed, k)),
            objectives,
            achievable_flags=flags,
            kl=kl_fn,
        )
        if policy.conditioner.binnings:  # token mode: each objective's bin of the target
            for row, target in zip(rows, planned, strict=True):
                row["bin"] = policy.conditioner.describe_target(target)
    finally:
        close_sampler(sampler)
    summary = summarize_grid(rows, objectives, rewards_seen)
    out = src.out_dir(out_dir)
    report = {
        "kind": "objectives",
        **src.report_header(source, cfg_file),
        "backend": getattr(sampler, "backend", backend),
        "reward_model": cfg.reward_model.kind,
        "objectives": [{"name": o.name, "low": o.low, "high": o.high} for o in objectives],
        "grid_points": per_axis,
        "grid_quantiles": list(GRID_QUANTILES),
        "achievable_rule": {
            "radius_normalised": ACHIEVABLE_RADIUS,
            "min_count": ACHIEVABLE_MIN_COUNT,
            "what": "at least min_count buffer samples within L-infinity distance radius of the"
            " target, in normalised units (each objective's [low, high] -> [-1, 1])",
        },
        "goal": CALIBRATION_GOAL,
        "samples_per_target": samples_per_target,
        "sampling": cfg.sampling.model_dump(mode="json"),
        "seed": seed,
        "buffer": {
            "samples": len(rewards_seen),
            "best": [float(v) for v in rewards_seen.max(axis=0)] if len(rewards_seen) else None,
        },
        "extrapolation_margin": None,
        "kl_estimator": "k1: mean over completions of sum_t log pi(y_t) - log p_base(y_t), nats",
        "kl_error": kl_error,
        "rows": rows,
        "summary": summary,
        "reference": None,
        "reference_error": REFERENCE_SKIPPED if reference_samples > 0 else None,
        "timings_s": {
            "load_s": t_loaded - started,
            "eval_s": time.perf_counter() - t_loaded,
        },
        "table": str(out / EVAL_OBJECTIVES_FILE),
        "plot": str(out / EVAL_OBJECTIVES_PLOT_FILE),
    }
    report = finite_or_none(report)
    atomic_write_bytes(out / EVAL_OBJECTIVES_PLOT_FILE, plot_objectives(report))
    atomic_write_json(out / EVAL_OBJECTIVES_FILE, report)
    return report

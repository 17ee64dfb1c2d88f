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

A run with several objectives (``conditioning.objectives``) is evaluated on a grid of target
vectors instead (:mod:`online_dt.eval.objectives`; ``online-dt eval RUN_DIR --grid N``): ``N``
points per objective spanning the buffer's 10th to 90th percentile, or explicit vector targets.
It writes

* ``objectives.json``: one row per target vector (per objective: achieved mean, p10, p90,
  absolute error in reward and normalised units; achievable or not; distinct-2; KL), and a
  summary (per-objective calibration error over the achievable targets, the achieved front's
  hypervolume next to the buffer's);
* ``objectives.png``: the objective plane (M = 2) and achieved vs target per objective
  (:func:`~online_dt.eval.plot.plot_objectives`).

Its report has ``reference: null``: the binned-base reference bins by one reward, so it is
skipped (``reference_error`` says so), and no extrapolation target is added.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
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
from online_dt.eval.objectives import (
    ACHIEVABLE_MIN_COUNT,
    ACHIEVABLE_RADIUS,
    CALIBRATION_GOAL,
    DEFAULT_GRID_POINTS,
    GRID_QUANTILES,
    achievable,
    buffer_reward_vectors,
    evaluate_grid,
    grid_targets,
    summarize_grid,
)
from online_dt.eval.plot import plot_calibration, plot_objectives
from online_dt.eval.reference import DEFAULT_BIN_HALF_WIDTH, DEFAULT_REFERENCE_SAMPLES
from online_dt.eval.source import EvalError, EvalSource, buffer_rewards, resolve_source
from online_dt.launch.rundir import (
    CONFIG_FILE,
    EVAL_DIR,
    EVAL_OBJECTIVES_FILE,
    EVAL_OBJECTIVES_PLOT_FILE,
    EVAL_PLOT_FILE,
    EVAL_TABLE_FILE,
    finite_or_none,
)
from online_dt.policy.recalibration import default_grid
from online_dt.training.kl import kl_per_completion
from online_dt.util.seeds import derived_seed

log = logging.getLogger(__name__)

REFERENCE_SEED_KEY = 2**20
"""The reference's sampling seed is ``derived_seed(seed, REFERENCE_SEED_KEY)`` (target k uses
``derived_seed(seed, k)``, and no evaluation has that many targets)."""

RECALIBRATION_SEED_KEY = 2**20 + 1
"""Recalibration draws its prompts with ``derived_seed(seed, RECALIBRATION_SEED_KEY)``, samples
grid value k with ``derived_seed(seed, RECALIBRATION_SEED_KEY, k)`` and mixes with
``derived_seed(seed, RECALIBRATION_SEED_KEY, 2**20)``."""

DEFAULT_SAMPLES_PER_TARGET = 64
"""Completions per target by default (about 1 s per target for the embedded model on 2 cores)."""

REFERENCE_SKIPPED = (
    "the binned-base reference bins base-model samples by a single reward; it is skipped for "
    "runs with several objectives (conditioning.objectives)"
)
"""``reference_error`` of a multi-objective evaluation (with ``reference_samples > 0``)."""

TargetSpec = float | Sequence[float]
"""A target as given to :func:`run_eval`: a number, or a vector (one value per objective)."""


def run_eval(
    source: str | Path,
    *,
    targets: Sequence[TargetSpec] | None = None,
    samples_per_target: int = DEFAULT_SAMPLES_PER_TARGET,
    out_dir: str | Path | None = None,
    config_path: str | Path | None = None,
    backend: str = "hf",
    extrapolation_margin: float | None = DEFAULT_EXTRAPOLATION_MARGIN,
    with_kl: bool = True,
    seed: int = 0,
    reference_samples: int = DEFAULT_REFERENCE_SAMPLES,
    reference_half_width: float = DEFAULT_BIN_HALF_WIDTH,
    grid: int | None = None,
    guidance_weight: float = 0.0,
    guidance_rewards: Sequence[float] | None = None,
    guidance_prior: str = "buffer",
    recalibration_samples: int = 0,
    recalibration_grid: Sequence[float] | None = None,
    recalibration_strategy: str = "mix",
) -> dict[str, Any]:
    """Evaluate a policy and write ``calibration.json`` and ``calibration.png`` (one reward),
    or ``objectives.json`` and ``objectives.png`` (a run with ``conditioning.objectives``).

    Args:
        source: run directory, checkpoint directory or policy directory
            (see :func:`resolve_source`).
        targets: target rewards (reward units); default: :func:`default_targets` of the buffer.
            For a run with objectives, each target is a vector of one value per objective (in
            the config's order); default: the :func:`~online_dt.eval.objectives.grid_targets`
            grid.
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
        grid: runs with objectives only: grid points per objective (>= 1; default
            :data:`~online_dt.eval.objectives.DEFAULT_GRID_POINTS`), ``grid ** M`` targets.
            Not with ``targets``.
        guidance_weight: ``w >= 0``; above 0 the HF sampler samples with classifier-free
            guidance against the policy's own mixture over ``guidance_rewards``
            (:class:`~online_dt.rollout.hf_sampler.HFSampler`); the KL then uses the guided
            distribution's logprobs. One-reward runs and ``backend="hf"`` only.
        guidance_rewards: the mixture's rewards, ascending; default
            :data:`~online_dt.policy.guidance.GUIDANCE_POINTS` rewards evenly from the replay
            buffer's lowest to its highest.
        guidance_prior: the mixture's prior weights: ``buffer``, the share of the buffer's
            rewards nearest to each (:func:`~online_dt.policy.guidance.buffer_prior`, the
            rewards the policy was trained on); ``uniform``, equal weights.
        recalibration_samples: ``N >= 0``; above 0, first measure the mean reward achieved at
            each conditioning value of ``recalibration_grid`` on N prompts drawn (seeded) from
            the run's prompts, ``N * K`` reward-model calls, fit it isotonic and ask each
            target's samples for the conditioning that achieves it
            (:mod:`online_dt.policy.recalibration`). Any backend; one-reward runs only.
        recalibration_grid: scalar mode's K conditioning values (default
            :func:`~online_dt.policy.recalibration.default_grid` of the replay buffer's
            rewards); token mode measures each bin's midpoint.
        recalibration_strategy: ``mix`` (a share of each target's samples at each of the two
            grid values around its crossing) or ``interpolate`` (every sample at the
            interpolated value); see :class:`~online_dt.policy.recalibration.Recalibration`.

    With objectives, ``extrapolation_margin`` and the reference are not used; the report is
    :func:`_run_objectives_eval`'s.

    Returns:
        The report written to ``calibration.json``: ``rows`` (see :func:`evaluate_calibration`;
        recalibrated, each row has ``asked``), ``recalibration`` (``None``, or the fit's
        ``conditioning``/``measured``/``achieved``/``counts``, ``strategy``, ``samples`` per
        value, ``calls`` and ``bracket`` per target),
        ``buffer`` (``best_reward``, ``samples``), the policy, config, sampling settings, the
        paths written (``table``, ``plot``), timings, ``reference`` (the dict of
        :func:`~online_dt.eval.reference.eval_reference` with non-finite numbers as ``None``,
        or ``None``) and ``reference_error`` (why it is missing when the base model could not
        be loaded, else ``None``).

    Raises:
        ValueError: ``reference_samples < 0``, ``reference_half_width <= 0``,
            ``recalibration_samples < 0``, fewer than two distinct ``recalibration_grid``
            values, an unknown ``recalibration_strategy`` or ``guidance_weight < 0``,
            ``guidance_prior`` is neither ``buffer`` nor ``uniform``, or, with the ``buffer``
            prior, ``guidance_rewards`` is not ascending.
        EvalError: no policy or config found; guidance with ``backend="config"``, with
            objectives, or without a buffer for its default rewards or its ``buffer`` prior;
            ``grid`` for a run with a single reward; recalibration in scalar mode without
            ``recalibration_grid`` when the buffer's rewards span no range; a vector target
            for a run with a single reward, or a scalar target (or one of the wrong length)
            for a run with objectives; ``grid`` together with ``targets``.
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
    if recalibration_samples < 0:
        raise ValueError(f"recalibration_samples must be >= 0, got {recalibration_samples}")
    if recalibration_strategy not in ("mix", "interpolate"):
        raise ValueError(
            f"recalibration_strategy must be 'mix' or 'interpolate', got {recalibration_strategy!r}"
        )
    if recalibration_grid is not None and len(set(recalibration_grid)) < 2:
        raise ValueError(
            "the recalibration grid needs at least two conditioning values, got "
            f"{list(recalibration_grid)}"
        )
    if not reference_half_width > 0:
        raise ValueError(f"reference_half_width must be > 0, got {reference_half_width}")
    if guidance_weight < 0:
        raise ValueError(f"guidance_weight must be >= 0, got {guidance_weight}")
    if guidance_prior not in ("buffer", "uniform"):
        raise ValueError(f"guidance_prior must be 'buffer' or 'uniform', got {guidance_prior!r}")
    if guidance_weight > 0 and backend != "hf":
        raise EvalError(
            f"--guidance needs the HF sampler (--backend hf), not --backend {backend}: vLLM "
            "has no hook for guided sampling"
        )
    started = time.perf_counter()
    src = resolve_source(source)
    cfg_file = Path(config_path) if config_path is not None else src.config_path
    if cfg_file is None:
        raise EvalError(f"no {CONFIG_FILE} found above {src.policy_dir}; pass --config FILE")
    cfg = load_config(cfg_file, config_class_for(cfg_file))
    if cfg.conditioning.objectives:
        if guidance_weight > 0 or recalibration_samples > 0:
            raise EvalError(
                "--guidance and --recalibrate are for runs with a single reward, not objectives"
            )
        return _run_objectives_eval(
            source,
            src,
            cfg,
            cfg_file,
            targets=targets,
            grid=grid,
            samples_per_target=samples_per_target,
            out_dir=out_dir,
            backend=backend,
            with_kl=with_kl,
            seed=seed,
            reference_samples=reference_samples,
            started=started,
        )
    if grid is not None:
        raise EvalError(
            f"--grid (grid={grid}) is for runs with several objectives (conditioning.objectives)"
            f"; {cfg_file} conditions on a single reward: pass --targets R ... instead"
        )
    vectors = [t for t in targets or [] if not isinstance(t, int | float)]
    if vectors:
        raise EvalError(
            f"{cfg_file} conditions on a single reward (no conditioning.objectives): targets "
            f"must be numbers, got {_show(vectors[0])}"
        )
    rewards_seen = buffer_rewards(src.run_dir)
    if rewards_seen.ndim != 1:
        raise EvalError(
            f"{cfg_file} conditions on a single reward, but the run's replay buffer holds "
            f"{rewards_seen.shape[1]} rewards per sample: evaluate with the run's own config"
        )
    best = float(rewards_seen.max()) if len(rewards_seen) else None
    given = list(targets) if targets else default_targets(rewards_seen)
    planned = plan_targets(given, best, extrapolation_margin)

    guidance = _guidance(rewards_seen, guidance_weight, guidance_rewards, guidance_prior)
    scalar_grid = list(recalibration_grid or [])
    if recalibration_samples > 0 and not scalar_grid and cfg.conditioning.mode == "scalar":
        if len(rewards_seen) == 0 or not rewards_seen.max() > rewards_seen.min():
            raise EvalError(
                "the run's replay buffer spans no range of rewards to recalibrate over: pass "
                "--recalibration-grid C ..."
            )
        scalar_grid = default_grid(rewards_seen)

    prompts = load_prompts(cfg.prompts)
    reward_model = load_reward_model(cfg.reward_model)
    sampler, policy = _load_sampler(cfg, src, backend, guidance)
    try:
        t_loaded = time.perf_counter()
        kl_fn, kl_error = _kl_estimator(cfg, policy) if with_kl else (None, None)
        score = functools.partial(score_checked, reward_model)
        recal, ask = None, None
        if recalibration_samples > 0:
            recal, fit = _recalibrate(
                sampler,
                score,
                policy,
                prompts,
                recalibration_samples,
                scalar_grid,
                recalibration_strategy,
                cfg,
                seed,
            )
            ask = functools.partial(
                fit.conditionings,
                strategy=recal["strategy"],
                seed=derived_seed(seed, RECALIBRATION_SEED_KEY, 2**20),
            )
            recal["bracket"] = [dataclasses.asdict(fit.bracket(t)) for t, _ in planned]
        rows = evaluate_calibration(
            sampler,
            score,
            prompts,
            planned,
            samples_per_target,
            lambda k: SamplingParams.from_config(cfg.sampling, n=1, seed=derived_seed(seed, k)),
            kl=kl_fn,
            describe=policy.conditioner.describe_target,
            ask=ask,
        )
        reference, reference_error = _reference(
            cfg,
            prompts[:samples_per_target],
            score,
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
        "guidance": guidance,
        "recalibration": recal,
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


def _show(target: Any) -> str:
    """A target as the user would type it: ``0.5`` or ``0.5,-3``."""
    if isinstance(target, int | float):
        return f"the number {target:g}"
    try:
        return "the vector " + ",".join(f"{float(v):g}" for v in target)
    except (TypeError, ValueError):
        return repr(target)


def _vector_targets(
    targets: Sequence[TargetSpec], names: Sequence[str], cfg_file: Path
) -> list[tuple[float, ...]]:
    """Explicit targets of a run with objectives as tuples of ``len(names)`` floats.

    Raises:
        EvalError: a target is a number, or a vector of another length or with a non-finite
            value.
    """
    m = len(names)
    example = ",".join(n.upper() for n in names)
    how = f"a vector of {m} values ({', '.join(names)}; on the command line --targets {example})"
    out = []
    for t in targets:
        if isinstance(t, int | float | str | bytes):
            raise EvalError(
                f"{cfg_file} conditions on {m} objectives (conditioning.objectives): each target"
                f" must be {how}, got {_show(t)}"
            )
        try:
            vector = tuple(float(v) for v in t)
        except (TypeError, ValueError):
            raise EvalError(f"each target must be {how}, got {t!r}") from None
        if len(vector) != m or not all(math.isfinite(v) for v in vector):
            raise EvalError(f"each target must be {how} (finite), got {_show(vector)}")
        out.append(vector)
    return out


def _run_objectives_eval(
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

    Returns:
        The report written to ``objectives.json``: ``kind`` (``"objectives"``), ``objectives``
        (``name``, ``low``, ``high`` each), ``grid_points`` (``None`` with explicit targets),
        ``rows`` (:func:`~online_dt.eval.objectives.evaluate_grid`; in token mode each row
        also has ``bin``: the target's bin and ``above_range`` per objective, from the
        policy conditioner's ``describe_target``), ``summary``
        (:func:`~online_dt.eval.objectives.summarize_grid`), ``achievable_rule`` (radius in
        normalised units and minimum count), ``buffer`` (``samples``; ``best``: per objective
        the largest achieved reward, or ``None``), the policy, config, sampling settings,
        timings, ``reference: None`` with ``reference_error`` (why), the paths written
        (``table``, ``plot``); non-finite numbers are ``None``.

    Raises:
        EvalError: ``grid`` with ``targets``, or a target that is not a vector of ``M``
            finite values.
    """
    from online_dt.launch.prompts import load_prompts
    from online_dt.rewards import load_reward_model, score_checked
    from online_dt.rollout.sampler import SamplingParams
    from online_dt.util.atomic import atomic_write_bytes, atomic_write_json

    objectives = list(cfg.conditioning.objectives)
    names = [o.name for o in objectives]
    if targets and grid is not None:
        raise EvalError("give either --targets or --grid (grid points per objective), not both")
    explicit = _vector_targets(targets, names, cfg_file) if targets else None
    per_axis = None if explicit else (DEFAULT_GRID_POINTS if grid is None else grid)
    rewards_seen = buffer_reward_vectors(src.run_dir, len(objectives))
    planned = explicit or grid_targets(objectives, rewards_seen, per_axis or DEFAULT_GRID_POINTS)
    flags = achievable(planned, rewards_seen, objectives)

    prompts = load_prompts(cfg.prompts)
    reward_model = load_reward_model(cfg.reward_model)
    sampler, policy = _load_sampler(cfg, src, backend)
    try:
        t_loaded = time.perf_counter()
        kl_fn, kl_error = _kl_estimator(cfg, policy) if with_kl else (None, None)
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
        close = getattr(sampler, "close", None)
        if close is not None:
            close()
    summary = summarize_grid(rows, objectives, rewards_seen)
    out = (
        Path(out_dir) if out_dir is not None else (src.run_dir or src.policy_dir.parent) / EVAL_DIR
    )
    report = {
        "kind": "objectives",
        "created_at": time.time(),
        "source": str(source),
        "policy": str(src.policy_dir),
        "run_dir": str(src.run_dir) if src.run_dir else None,
        "config": str(cfg_file),
        "iteration": src.iteration,
        "policy_version": src.policy_version,
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


def _guidance(
    rewards_seen: Any, weight: float, rewards: Sequence[float] | None, prior: str
) -> dict[str, Any] | None:
    """The report's ``guidance`` (``weight``, ``rewards``, ``prior``, ``prior_weights``), or
    ``None`` for ``weight == 0``.

    Raises:
        EvalError: the buffer is empty and it is needed (default rewards, ``buffer`` prior).
        ValueError: ``rewards`` not ascending (from ``buffer_prior``).
    """
    from online_dt.policy.guidance import buffer_prior, even_grid

    if weight == 0:
        return None
    needs_buffer = not rewards or prior == "buffer"
    if needs_buffer and not len(rewards_seen):
        raise EvalError(
            "the run's replay buffer is empty: pass --guidance-grid R ... and "
            "--guidance-prior uniform"
        )
    grid = [float(r) for r in rewards] if rewards else even_grid(rewards_seen)
    weights = buffer_prior(rewards_seen, grid) if prior == "buffer" else [1.0] * len(grid)
    return {"weight": weight, "rewards": grid, "prior": prior, "prior_weights": weights}


def _recalibrate(
    sampler: Any,
    score: Any,
    policy: Any,
    prompts: Sequence[str],
    samples: int,
    grid: Sequence[float],
    strategy: str,
    cfg: Any,
    seed: int,
) -> tuple[dict[str, Any], Any]:
    """The report's ``recalibration`` and the fitted
    :class:`~online_dt.policy.recalibration.Recalibration`: ``samples`` prompts drawn with the
    seed ``derived_seed(seed, RECALIBRATION_SEED_KEY)``, measured at every value of
    :func:`~online_dt.policy.recalibration.conditioning_grid` (``grid`` in scalar mode)."""
    import numpy as np

    from online_dt.eval.calibration import measure_recalibration
    from online_dt.policy.recalibration import conditioning_grid
    from online_dt.rollout.sampler import SamplingParams

    values = conditioning_grid(policy.conditioner, grid)
    rng = np.random.default_rng(derived_seed(seed, RECALIBRATION_SEED_KEY))
    chosen = [prompts[int(i)] for i in rng.integers(0, len(prompts), samples)]
    recal = measure_recalibration(
        sampler,
        score,
        chosen,
        values,
        lambda k: SamplingParams.from_config(
            cfg.sampling, n=1, seed=derived_seed(seed, RECALIBRATION_SEED_KEY, k)
        ),
    )
    report = {
        **recal.to_dict(),
        "strategy": strategy,
        "samples": samples,
        "calls": samples * len(values),
    }
    return report, recal


def _load_sampler(
    cfg: Any, src: EvalSource, backend: str, guidance: dict[str, Any] | None = None
) -> tuple[Any, Any]:
    """(sampler, HF policy) over the source's policy; the HF policy also tokenizes for KL.
    With ``guidance`` (:func:`_guidance`'s) the HF sampler samples guided."""
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


def _kl_estimator(cfg: Any, policy: Any) -> tuple[Any, str | None]:
    """``(kl, None)``: ``kl(rollouts)`` gives each rollout's KL to the base model (nats per
    completion, :func:`kl_per_completion`); or ``(None, why)`` when the base model cannot be
    loaded (logged as a warning)."""
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

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
for it does (usually: the achieved reward saturates or falls, and KL rises). A run with
``conditioning.best_command`` gets the best command's row (``conditioning.best_target``)
instead, unmarked: every target above ``reward_max`` asks for that command.

A run with several objectives (``conditioning.objectives``) is evaluated on a grid of target
vectors instead (:mod:`online_dt.eval.objectives`, run by :mod:`online_dt.eval.run_objectives`;
``online-dt eval RUN_DIR --grid N``): ``N`` points per objective spanning the buffer's 10th to
90th percentile, or explicit vector targets. It writes

* ``objectives.json``: one row per target vector (per objective: achieved mean, p10, p90,
  absolute error in reward and normalised units; achievable or not; distinct-2; KL), and a
  summary (per-objective calibration error over the achievable targets, the achieved front's
  hypervolume next to the buffer's);
* ``objectives.png``: the objective plane (M = 2) and achieved vs target per objective
  (:func:`~online_dt.eval.plot.plot_objectives`).

Its report has ``reference: null``: the binned-base reference bins by one reward, so it is
skipped (``reference_error`` says so), and no extrapolation target is added.

The models are loaded by :mod:`online_dt.eval.loading`, guidance and recalibration are set up by
:mod:`online_dt.eval.steering`, and explicit targets are checked by
:mod:`online_dt.eval.target_input`.
"""

from __future__ import annotations

import dataclasses
import functools
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
from online_dt.eval.loading import close_sampler, kl_estimator, load_sampler
from online_dt.eval.plot import plot_calibration
from online_dt.eval.reference import DEFAULT_BIN_HALF_WIDTH, DEFAULT_REFERENCE_SAMPLES
from online_dt.eval.reference_report import report_reference
from online_dt.eval.run_objectives import run_objectives_eval
from online_dt.eval.source import EvalError, buffer_rewards, resolve_source
from online_dt.eval.steering import (
    RECALIBRATION_SEED_KEY,
    REFERENCE_SEED_KEY,
    plan_guidance,
    recalibrate,
)
from online_dt.eval.target_input import TargetSpec, show_target
from online_dt.launch.rundir import CONFIG_FILE, EVAL_PLOT_FILE, EVAL_TABLE_FILE
from online_dt.policy.recalibration import (
    default_grid,
    recalibrated_asks,
    without_best_command,
)
from online_dt.util.seeds import derived_seed

DEFAULT_SAMPLES_PER_TARGET = 64
"""Completions per target by default (about 1 s per target for the embedded model on 2 cores)."""


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
    :func:`~online_dt.eval.run_objectives.run_objectives_eval`'s.

    Returns:
        The report written to ``calibration.json``: ``rows`` (see :func:`evaluate_calibration`;
        recalibrated, each row has ``asked``), ``recalibration`` (``None``, or the fit's
        ``conditioning``/``measured``/``achieved``/``counts``, ``strategy``, ``samples`` per
        value, ``calls`` and ``bracket`` per target),
        ``buffer`` (``best_reward``, ``samples``), the policy, config, sampling settings, the
        paths written (``table``, ``plot``), timings, ``reference`` (the dict of
        :func:`~online_dt.eval.reference_report.eval_reference` with non-finite numbers as ``None``,
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
            for a run with objectives; ``grid`` together with ``targets``; a
            ``recalibration_grid`` value above ``conditioning.reward_max`` for a run with
            ``best_command`` (it asks for the best command; the default grid drops it, and the
            best command's target is asked for as it is), or guidance with a gated LoRA
            (``best_command_lora_rank`` or ``reward_lora_rank``).
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
        return run_objectives_eval(
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
            f"must be numbers, got {show_target(vectors[0])}"
        )
    rewards_seen = buffer_rewards(src.run_dir)
    if rewards_seen.ndim != 1:
        raise EvalError(
            f"{cfg_file} conditions on a single reward, but the run's replay buffer holds "
            f"{rewards_seen.shape[1]} rewards per sample: evaluate with the run's own config"
        )
    best = float(rewards_seen.max()) if len(rewards_seen) else None
    given = list(targets) if targets else default_targets(rewards_seen)
    margin = extrapolation_margin
    if cfg.conditioning.best_command:  # any target above reward_max asks for the best command,
        margin = None  # which has its own row in place of the extrapolation row
        if not targets:
            given.append(cfg.conditioning.best_target)
    planned = plan_targets(given, best, margin)
    if cfg.conditioning.best_command:  # trained on its own rows: not an unseen label
        planned = [(t, x and t <= cfg.conditioning.reward_max) for t, x in planned]

    # with a best command, a conditioning value above reward_max asks for it, not for a reward
    asks_best = cfg.conditioning.asks_best_command
    best_above = cfg.conditioning.reward_max if cfg.conditioning.best_command else None
    option = cfg.conditioning.lora_option
    if guidance_weight > 0 and option is not None:
        raise EvalError(
            f"--guidance is not available for a run with conditioning.{option}"
            ": the LoRA's gate follows one conditioned batch, and guidance runs a second beside it"
        )
    guidance = plan_guidance(rewards_seen, guidance_weight, guidance_rewards, guidance_prior)
    scalar_grid = list(recalibration_grid or [])
    if any(asks_best(c) for c in scalar_grid):
        raise EvalError(
            f"--recalibration-grid {scalar_grid}: a value above conditioning.reward_max "
            f"({cfg.conditioning.reward_max:g}) asks for the run's best command, not for a reward"
        )
    if recalibration_samples > 0 and not scalar_grid and cfg.conditioning.mode == "scalar":
        if len(rewards_seen) == 0 or not rewards_seen.max() > rewards_seen.min():
            raise EvalError(
                "the run's replay buffer spans no range of rewards to recalibrate over: pass "
                "--recalibration-grid C ..."
            )
        scalar_grid = default_grid(rewards_seen)
        if best_above is not None:  # the step beyond the top would ask for the best command
            scalar_grid = without_best_command(scalar_grid, best_above)

    prompts = load_prompts(cfg.prompts)
    reward_model = load_reward_model(cfg.reward_model)
    sampler, policy = load_sampler(cfg, src, backend, guidance)
    try:
        t_loaded = time.perf_counter()
        kl_fn, kl_error = kl_estimator(cfg, policy) if with_kl else (None, None)
        score = functools.partial(score_checked, reward_model)
        recal, ask = None, None
        if recalibration_samples > 0:
            recal, fit = recalibrate(
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
                recalibrated_asks,
                fit,
                strategy=recal["strategy"],
                seed=derived_seed(seed, RECALIBRATION_SEED_KEY, 2**20),
                best_above=best_above,
            )
            recal["bracket"] = [  # None for the best command's row
                None if asks_best(t) else dataclasses.asdict(fit.bracket(t)) for t, _ in planned
            ]
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
        reference, reference_error = report_reference(
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
        close_sampler(sampler)
    out = src.out_dir(out_dir)
    report = {
        **src.report_header(source, cfg_file),
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

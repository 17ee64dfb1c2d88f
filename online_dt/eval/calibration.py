"""Evaluation of a trained policy: calibration (achieved vs target reward), diversity and KL.

``online-dt eval RUN_DIR_OR_CHECKPOINT --targets -0.5 0 0.5 1.5`` loads the policy (a run
directory's latest checkpoint, a checkpoint directory, or a saved policy directory) and the run's
config (reward model, prompts, sampling), samples ``samples_per_target`` completions per target,
scores them and writes a calibration table as JSON plus a PNG plot into ``RUN_DIR/eval/``:

* ``calibration.json``: one row per target with the achieved reward's mean, std, p10, median
  and p90, the calibration error ``|mean - target|``, distinct-1/2 of the completion tokens, the
  KL estimate to the base model (nats per completion) and a few example completions;
* ``calibration.png``: achieved vs target with the identity line, and diversity and KL per
  target.

By default one target above the best reward ever seen in the replay buffer is added and marked
``extrapolation``: the policy was never trained on such a label, and the row shows what asking
for it does (usually: the achieved reward saturates or falls, and KL rises).

The pieces are plain functions over a sampler and a scoring function (no Ray), so they are
tested with fakes; :func:`run_eval` does the loading. :func:`calibration_row` is also what the
offline demo (:mod:`online_dt.offline`) builds its table with.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from online_dt.launch.rundir import (
    BUFFER_DIR,
    CHECKPOINT_POLICY_DIR,
    CHECKPOINT_STATE_FILE,
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    EVAL_DIR,
    EVAL_PLOT_FILE,
    EVAL_TABLE_FILE,
    LATEST_FILE,
)
from online_dt.policy.conditioning import CONDITIONING_FILE
from online_dt.training.trainer import kl_per_completion
from online_dt.util.metrics import distinct_n, reward_summary

log = logging.getLogger(__name__)

DEFAULT_SAMPLES_PER_TARGET = 64
"""Completions per target by default (about 1 s per target for the embedded model on 2 cores)."""

DEFAULT_EXTRAPOLATION_MARGIN = 0.25
"""How far above the best reward seen in the buffer the added extrapolation target sits."""


class EvalError(ValueError):
    """The evaluation source is not a run, checkpoint or policy directory, or lacks a config."""


# ---------------------------------------------------------------------------------------------
# the calibration table (shared with the offline demo)
# ---------------------------------------------------------------------------------------------


def calibration_row(
    target: float,
    prompts: Sequence[str],
    completions: Sequence[str],
    token_ids: Sequence[Sequence[int]],
    rewards: Sequence[float],
    *,
    examples: int = 5,
) -> dict[str, Any]:
    """One row of a calibration table: what the policy achieved when asked for ``target``.

    Args:
        target: the target reward the completions were conditioned on (reward units).
        prompts, completions, token_ids, rewards: N aligned samples (N >= 1): the prompt, the
            completion text, its generated token ids and its achieved reward.
        examples: how many (prompt, completion, reward) examples to keep in ``samples``.

    Returns:
        ``target``, the achieved ``mean``/``std``/``p10``/``median``/``p90`` (reward units),
        ``calibration_error`` (``|mean - target|``), ``distinct_1``/``distinct_2`` over the
        completion tokens (in [0, 1]), ``count`` (N) and ``samples`` (the examples).

    Raises:
        ValueError: no samples, or the sequences differ in length.
    """
    if not (len(prompts) == len(completions) == len(token_ids) == len(rewards)):
        raise ValueError(
            f"lengths differ: {len(prompts)} prompts, {len(completions)} completions, "
            f"{len(token_ids)} token lists, {len(rewards)} rewards"
        )
    summary = reward_summary(rewards)
    return {
        "target": float(target),
        **summary,
        "calibration_error": abs(summary["mean"] - float(target)),
        "distinct_1": distinct_n(token_ids, 1),
        "distinct_2": distinct_n(token_ids, 2),
        "count": len(rewards),
        "samples": [
            {"prompt": p, "completion": c, "reward": float(r)}
            for p, c, r in list(zip(prompts, completions, rewards, strict=True))[:examples]
        ],
    }


def format_calibration_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of calibration rows (:func:`calibration_row`, plus the optional
    ``kl_to_base`` and ``extrapolation`` fields of :func:`evaluate_calibration`); an
    extrapolation row is marked with ``*``."""
    with_kl = any(r.get("kl_to_base") is not None for r in rows)
    header = (
        f"{'target':>9} {'achieved':>9} {'std':>6} {'p10':>7} {'p50':>7} {'p90':>7} "
        f"{'|err|':>6} {'d-1':>5} {'d-2':>5}" + (f" {'KL':>7}" if with_kl else "")
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        mark = "*" if r.get("extrapolation") else " "
        line = (
            f"{r['target']:>8.3f}{mark} {r['mean']:>9.3f} {r['std']:>6.3f} {r['p10']:>7.3f} "
            f"{r['median']:>7.3f} {r['p90']:>7.3f} {r['calibration_error']:>6.3f} "
            f"{r['distinct_1']:>5.2f} {r['distinct_2']:>5.2f}"
        )
        if with_kl:
            kl = r.get("kl_to_base")
            line += f" {kl:>7.2f}" if kl is not None else f" {'-':>7}"
        lines.append(line)
    if any(r.get("extrapolation") for r in rows):
        lines.append("* extrapolation: above the best reward seen in the replay buffer")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------------------------


def default_targets(buffer_rewards: Sequence[float]) -> list[float]:
    """Targets when none are given: the 10th, 50th and 90th percentile of the buffer's achieved
    rewards, or ``[-0.5, 0.0, 0.5]`` without a buffer."""
    if len(buffer_rewards) == 0:
        return [-0.5, 0.0, 0.5]
    return [float(q) for q in np.quantile(np.asarray(buffer_rewards, float), [0.1, 0.5, 0.9])]


def plan_targets(
    targets: Sequence[float], best_seen: float | None, margin: float | None
) -> list[tuple[float, bool]]:
    """The targets to evaluate, each with its ``extrapolation`` flag, sorted by target.

    A target is an extrapolation when it lies above ``best_seen`` (the best achieved reward in
    the buffer). With a ``margin`` (reward units, > 0) and a ``best_seen``, the target
    ``best_seen + margin`` is added unless a given target already lies that high.

    Raises:
        ValueError: a target is not finite, or ``margin`` is not positive.
    """
    if any(not np.isfinite(t) for t in targets):
        raise ValueError(f"targets must be finite, got {list(targets)}")
    if margin is not None and not margin > 0:
        raise ValueError(f"the extrapolation margin must be > 0, got {margin}")
    planned = sorted({float(t) for t in targets})
    if margin is not None and best_seen is not None:
        extra = float(best_seen) + float(margin)
        if not planned or max(planned) < extra:
            planned.append(extra)
    return [(t, best_seen is not None and t > best_seen) for t in planned]


# ---------------------------------------------------------------------------------------------
# sampling, scoring and KL
# ---------------------------------------------------------------------------------------------


def evaluate_calibration(
    sampler: Any,
    score: Callable[[list[str], list[str]], list[float]],
    prompts: Sequence[str],
    targets: Sequence[tuple[float, bool]],
    samples_per_target: int,
    params: Callable[[int], Any],
    *,
    kl: Callable[[list[Any]], list[float]] | None = None,
) -> list[dict[str, Any]]:
    """Sample, score and summarise completions for each target.

    Args:
        sampler: anything with ``generate(prompts, targets, params) -> list[Rollout]``
            (:class:`online_dt.rollout.sampler.HFSampler`, the vLLM sampler).
        score: validated reward function of (prompts, completions) -> one float per sample.
        prompts: the prompt set; target k uses the first ``samples_per_target`` prompts
            (cycling), so every target sees the same prompts.
        targets: (target, extrapolation) pairs from :func:`plan_targets`.
        samples_per_target: completions per target (>= 1).
        params: ``params(k)`` gives the :class:`~online_dt.rollout.sampler.SamplingParams` of
            the k-th target (its seed, so targets are reproducible one by one).
        kl: optional per-completion KL(policy || base) estimator over rollouts (nats).

    Returns:
        One :func:`calibration_row` per target, plus ``extrapolation`` (bool), ``kl_to_base``
        (mean nats per completion, or ``None``) and ``seconds`` (sampling + scoring time).

    Raises:
        ValueError: ``samples_per_target < 1`` or no prompts.
    """
    if samples_per_target < 1:
        raise ValueError(f"samples_per_target must be >= 1, got {samples_per_target}")
    if not prompts:
        raise ValueError("no prompts to evaluate on")
    batch = [prompts[i % len(prompts)] for i in range(samples_per_target)]
    rows = []
    for k, (target, extrapolation) in enumerate(targets):
        start = time.perf_counter()
        rollouts = sampler.generate(batch, [target] * len(batch), params(k))
        completions = [r.completion for r in rollouts]
        rewards = score([r.prompt for r in rollouts], completions)
        row = calibration_row(
            target,
            [r.prompt for r in rollouts],
            completions,
            [r.token_ids for r in rollouts],
            rewards,
        )
        kls = kl(rollouts) if kl is not None else []
        row["kl_to_base"] = float(np.mean(kls)) if kls else None
        row["extrapolation"] = bool(extrapolation)
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        log.info(
            "target %.3f%s: achieved %.3f (p10 %.3f, p90 %.3f)",
            target,
            " (extrapolation)" if extrapolation else "",
            row["mean"],
            row["p10"],
            row["p90"],
        )
    return rows


# ---------------------------------------------------------------------------------------------
# the plot
# ---------------------------------------------------------------------------------------------


def plot_calibration(report: dict[str, Any]) -> bytes:
    """Render the report's rows as a PNG (matplotlib, Agg backend): achieved reward (mean and
    p10-p90) vs target with the identity line and the best reward seen in the buffer, and
    distinct-1/2 and KL to the base model per target.

    Returns:
        The PNG file's bytes.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    rows = report["rows"]
    targets = np.array([r["target"] for r in rows])
    means = np.array([r["mean"] for r in rows])
    lo = means - np.array([r["p10"] for r in rows])
    hi = np.array([r["p90"] for r in rows]) - means
    extra = np.array([bool(r.get("extrapolation")) for r in rows])

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=100)
    every = np.concatenate([targets, means - lo, means + hi])
    span = [float(every.min()) - 0.05, float(every.max()) + 0.05]
    ax.plot(span, span, "--", color="0.6", label="achieved = target")
    for mask, color, label in ((~extra, "C0", "interpolation"), (extra, "C3", "extrapolation")):
        if mask.any():
            ax.errorbar(
                targets[mask],
                means[mask],
                yerr=np.vstack([lo[mask], hi[mask]]),
                fmt="o",
                color=color,
                capsize=4,
                label=f"{label}: mean, p10-p90",
            )
    best = report.get("buffer", {}).get("best_reward")
    if best is not None:
        ax.axvline(best, color="C3", lw=0.8, ls=":", label=f"best in buffer ({best:.2f})")
    ax.set_xlabel("target reward")
    ax.set_ylabel("achieved reward")
    ax.set_title("calibration")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)

    ax2.plot(targets, [r["distinct_1"] for r in rows], "o-", label="distinct-1")
    ax2.plot(targets, [r["distinct_2"] for r in rows], "s-", label="distinct-2")
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("target reward")
    ax2.set_ylabel("distinct-n")
    ax2.grid(alpha=0.3)
    kls = [r.get("kl_to_base") for r in rows]
    handles, labels = ax2.get_legend_handles_labels()
    if any(k is not None for k in kls):
        ax3 = ax2.twinx()
        (line,) = ax3.plot(
            targets, [np.nan if k is None else k for k in kls], "^-", color="C2", label="KL"
        )
        ax3.set_ylabel("KL to base (nats per completion)")
        handles.append(line)
        labels.append("KL to base")
    ax2.legend(handles, labels, fontsize=8, loc="lower left")
    ax2.set_title("diversity and KL")
    title = report.get("policy", "")
    if report.get("iteration") is not None:
        title = f"iteration {report['iteration']}, policy version {report.get('policy_version')}"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# loading a run and writing the report
# ---------------------------------------------------------------------------------------------


@dataclass
class EvalSource:
    """What ``online-dt eval`` evaluates.

    Attributes:
        policy_dir: the saved policy (``save_pretrained`` directory).
        run_dir: the run directory it belongs to, if found.
        config_path: the run's ``config.yaml``, if found.
        iteration: the checkpoint's iteration, if known.
        policy_version: the checkpoint's policy version, if known.
    """

    policy_dir: Path
    run_dir: Path | None
    config_path: Path | None
    iteration: int | None = None
    policy_version: int | None = None


def _is_policy(path: Path) -> bool:
    return (path / CONDITIONING_FILE).is_file()


def resolve_source(path: str | Path) -> EvalSource:
    """Find the policy, run directory and config of a path given to ``online-dt eval``.

    Accepted: an online run directory (its latest checkpoint's policy), a checkpoint directory
    (``checkpoints/iter-NNNNNN``), a run directory holding ``policy/`` (the offline demo's), or a
    policy directory itself (``weights/v000NNN``, ``.../policy``); the config is the nearest
    ``config.yaml`` at most three levels up.

    Raises:
        EvalError: the path is none of these.
    """
    from online_dt.launch.rundir import RunDir, RunDirError

    p = Path(path)
    if not p.is_dir():
        raise EvalError(f"{p} is not a directory")
    state: dict[str, Any] = {}
    if (p / CHECKPOINTS_DIR / LATEST_FILE).is_file():
        try:
            checkpoint = RunDir(p).latest_checkpoint()
        except RunDirError as e:
            raise EvalError(str(e)) from None
        policy_dir = checkpoint / CHECKPOINT_POLICY_DIR
        state = _read_state(checkpoint)
    elif (p / CHECKPOINT_STATE_FILE).is_file() and _is_policy(p / CHECKPOINT_POLICY_DIR):
        policy_dir = p / CHECKPOINT_POLICY_DIR
        state = _read_state(p)
    elif _is_policy(p / CHECKPOINT_POLICY_DIR):
        policy_dir = p / CHECKPOINT_POLICY_DIR
    elif _is_policy(p):
        policy_dir = p
    else:
        raise EvalError(
            f"{p} is not a run directory (with {CHECKPOINTS_DIR}/{LATEST_FILE}), a checkpoint "
            f"directory or a saved policy (with {CONDITIONING_FILE})"
        )
    if not _is_policy(policy_dir):
        raise EvalError(f"{policy_dir} holds no saved policy")
    run_dir = None
    for candidate in [policy_dir, *list(policy_dir.parents)[:3]]:
        if (candidate / CONFIG_FILE).is_file():
            run_dir = candidate
            break
    return EvalSource(
        policy_dir=policy_dir,
        run_dir=run_dir,
        config_path=run_dir / CONFIG_FILE if run_dir else None,
        iteration=state.get("iteration"),
        policy_version=state.get("version"),
    )


def _read_state(checkpoint: Path) -> dict[str, Any]:
    try:
        return json.loads((checkpoint / CHECKPOINT_STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def buffer_rewards(run_dir: Path | None) -> np.ndarray:
    """Achieved rewards of every sample persisted in ``run_dir/buffer`` (empty without one)."""
    from online_dt.replay.shards import read_persisted

    if run_dir is None or not (run_dir / BUFFER_DIR).is_dir():
        return np.zeros(0)
    table = read_persisted(run_dir / BUFFER_DIR)
    return table.column("achieved_reward").to_numpy()


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
        seed: sampling seed; target k samples with ``seed + k``.

    Returns:
        The report written to ``calibration.json``: ``rows`` (see :func:`evaluate_calibration`),
        ``buffer`` (``best_reward``, ``samples``), the policy, config, sampling settings, the
        paths written (``table``, ``plot``) and timings.

    Raises:
        EvalError: no policy or config found.
        ConfigError: the config is invalid.
        PromptError, RewardModelLoadError, OSError: prompts, reward model or models can't load.
    """
    from online_dt.config import config_class_for, load_config
    from online_dt.launch.prompts import load_prompts
    from online_dt.rewards import load_reward_model, score_checked
    from online_dt.rollout.sampler import SamplingParams
    from online_dt.util.atomic import atomic_write_bytes, atomic_write_json

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
            lambda k: SamplingParams.from_config(cfg.sampling, n=1, seed=seed + k),
            kl=kl_fn,
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


def _load_sampler(cfg: Any, src: EvalSource, backend: str) -> tuple[Any, Any]:
    """(sampler, HF policy) over the source's policy; the HF policy also tokenizes for KL."""
    from online_dt.config import OnlineRunConfig
    from online_dt.policy.conditioning import RewardConditionedPolicy
    from online_dt.rollout.sampler import HFSampler

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
    from online_dt.policy.conditioning import RewardConditionedPolicy

    base = resolve_base_model(cfg.model, cfg.bootstrap, progress=False)
    return RewardConditionedPolicy.fresh(cfg, base).model.eval().requires_grad_(False)

"""The calibration table: what a policy achieves when asked for each target reward.

For each target, :func:`evaluate_calibration` samples completions conditioned on it, scores them
and summarises them in a row (:func:`calibration_row`): the achieved reward's mean, std, p10,
median and p90, the calibration error ``|mean - target|``, distinct-1/2 of the completion
tokens, optionally the KL estimate to the base model and (token mode) the reward bin the target
maps to, and a few example completions.
:func:`plan_targets` chooses the targets, marking those above the best reward the policy was
trained on as ``extrapolation``; :func:`format_calibration_table` prints the rows.

The pieces are plain functions over a sampler and a scoring function (no Ray), so they are
tested with fakes; ``online-dt eval`` (:mod:`online_dt.eval.run`) and the offline demo
(:mod:`online_dt.offline`) both build their tables with :func:`evaluate_calibration`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from online_dt.eval.reference_report import reference_line
from online_dt.policy.recalibration import Recalibration
from online_dt.util.metrics import distinct_n, reward_summary

log = logging.getLogger(__name__)

DEFAULT_EXTRAPOLATION_MARGIN = 0.25
"""How far above the best reward seen in the buffer the added extrapolation target sits."""


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


def format_calibration_table(
    rows: Sequence[dict[str, Any]], reference: dict[str, Any] | None = None
) -> str:
    """A plain-text table of calibration rows (:func:`calibration_row`, plus the optional
    ``kl_to_base`` and ``extrapolation`` fields of :func:`evaluate_calibration`); an
    extrapolation row is marked with ``*``. With a ``reference`` (the binned-base reference of
    ``online-dt eval``), each row is followed by the line of
    :func:`online_dt.eval.reference_report.reference_line`: the base's own samples at that
    target."""
    with_kl = any(r.get("kl_to_base") is not None for r in rows)
    with_bins = any(r.get("bin") is not None for r in rows)
    with_asked = any(r.get("asked") for r in rows)
    header = (
        f"{'target':>9} {'achieved':>9} {'std':>6} {'p10':>7} {'p50':>7} {'p90':>7} "
        f"{'|err|':>6} {'d-1':>5} {'d-2':>5}"
        + (f" {'KL':>7} {'KL/tok':>7}" if with_kl else "")
        + (f"  {'reward bin (token mode)':<24}" if with_bins else "")
        + (f"  {'asked for (recalibrated)'}" if with_asked else "")
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
            for key in ("kl_to_base", "kl_to_base_per_token"):
                kl = r.get(key)
                line += f" {kl:>7.3f}" if kl is not None else f" {'-':>7}"
        if with_bins:
            line += (
                f"  {format_bin(r.get('bin')):<24}"
                if with_asked
                else f"  {format_bin(r.get('bin'))}"
            )
        if with_asked:
            line += f"  {format_asked(r.get('asked'))}"
        lines.append(line)
        under = reference_line(r, reference)
        if under is not None:
            lines.append(under)
    if any(r.get("extrapolation") for r in rows):
        lines.append("* extrapolation: above the best reward seen in the replay buffer")
    if any((r.get("bin") or {}).get("above_range") for r in rows):
        lines.append(
            "^ above the rewards the bins were cut from: the top bin's token asks for rewards"
            " like the best seen, not for the target (token mode cannot extrapolate)"
        )
    return "\n".join(lines)


def format_asked(asked: Sequence[Sequence[float]] | None) -> str:
    """``c`` for one conditioning value, ``p% c1 + q% c2`` for a mix (``asked`` of
    :func:`evaluate_calibration`), ``-`` for ``None``."""
    if not asked:
        return "-"
    total = sum(n for _, n in asked)
    if len(asked) == 1:
        return f"{asked[0][0]:.3f}"
    return " + ".join(f"{n / total:.0%} {c:.3f}" for c, n in asked)


def format_bin(info: dict[str, Any] | None) -> str:
    """``k/K [low, high)`` for a
    :meth:`~online_dt.policy.conditioner.RewardConditioner.describe_target` result (``^`` when
    the target lies above the bins' range), ``-`` for ``None``."""
    if info is None:
        return "-"
    low = "-inf" if info["low"] is None else f"{info['low']:.3f}"
    high = "inf" if info["high"] is None else f"{info['high']:.3f}"
    mark = "^" if info["above_range"] else ""
    return f"{info['bin']}/{info['bins']} [{low}, {high}){mark}"


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


def evaluate_calibration(
    sampler: Any,
    score: Callable[[list[str], list[str]], list[float]],
    prompts: Sequence[str],
    targets: Sequence[tuple[float, bool]],
    samples_per_target: int,
    params: Callable[[int], Any],
    *,
    kl: Callable[[list[Any]], list[float]] | None = None,
    describe: Callable[[float], dict[str, Any] | None] | None = None,
    ask: Callable[[float, int], Sequence[float]] | None = None,
) -> list[dict[str, Any]]:
    """Sample, score and summarise completions for each target.

    Args:
        sampler: anything with ``generate(prompts, targets, params) -> list[Rollout]``
            (:class:`online_dt.rollout.hf_sampler.HFSampler`, the vLLM sampler).
        score: validated reward function of (prompts, completions) -> one float per sample.
        prompts: the prompt set; target k uses the first ``samples_per_target`` prompts
            (cycling), so every target sees the same prompts.
        targets: (target, extrapolation) pairs from :func:`plan_targets`.
        samples_per_target: completions per target (>= 1).
        params: ``params(k)`` gives the :class:`~online_dt.rollout.sampler.SamplingParams` of
            the k-th target (its seed, so targets are reproducible one by one).
        kl: optional per-completion KL(policy || base) estimator over rollouts (nats).
        describe: optional ``describe(target)``: the reward bin a target maps to in token mode
            (:meth:`online_dt.policy.conditioner.RewardConditioner.describe_target`), ``None``
            in scalar mode.
        ask: optional ``ask(target, n)``: the conditioning value each of the ``n`` samples of
            a target is asked for (a :class:`~online_dt.policy.recalibration.Recalibration`'s
            ``conditionings``); default: the target itself.

    Returns:
        One :func:`calibration_row` per target, plus ``extrapolation`` (bool), ``kl_to_base``
        (mean nats per completion, or ``None``), ``kl_to_base_per_token`` (the completions'
        summed KL over their summed tokens, nats per token, or ``None``) and ``seconds``
        (sampling + scoring time); with ``describe``, ``bin`` (its result, or ``None``); with
        ``ask``, ``asked``: ``[conditioning value, samples]`` pairs, ascending.

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
        asked = (
            [target] * len(batch) if ask is None else [float(c) for c in ask(target, len(batch))]
        )
        rollouts = sampler.generate(batch, asked, params(k))
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
        tokens = sum(len(r.token_ids) for r in rollouts)
        row["kl_to_base"] = float(np.mean(kls)) if kls else None
        row["kl_to_base_per_token"] = float(np.sum(kls) / tokens) if kls and tokens else None
        row["extrapolation"] = bool(extrapolation)
        if describe is not None:
            row["bin"] = describe(target)
        if ask is not None:
            values, counts = np.unique(asked, return_counts=True)
            row["asked"] = [[float(v), int(c)] for v, c in zip(values, counts, strict=True)]
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


def measure_recalibration(
    sampler: Any,
    score: Callable[[list[str], list[str]], list[float]],
    prompts: Sequence[str],
    grid: Sequence[float],
    params: Callable[[int], Any],
) -> Recalibration:
    """Sample every prompt once at each conditioning value of ``grid``, score the completions
    and fit a :class:`~online_dt.policy.recalibration.Recalibration` (``len(prompts) *
    len(grid)`` reward-model calls).

    Args:
        sampler, score: as in :func:`evaluate_calibration`.
        prompts: the N prompts to measure on (the same at every grid value), N >= 1.
        grid: K >= 2 distinct conditioning values (reward units of the policy's input), e.g.
            :func:`~online_dt.policy.recalibration.conditioning_grid`.
        params: ``params(k)``: the sampling parameters at the k-th grid value.

    Raises:
        ValueError: no prompts, or fewer than two distinct grid values.
    """
    if not prompts:
        raise ValueError("no prompts to recalibrate on")
    conditioning: list[float] = []
    achieved: list[float] = []
    for k, value in enumerate(grid):
        rollouts = sampler.generate(list(prompts), [float(value)] * len(prompts), params(k))
        achieved += score([r.prompt for r in rollouts], [r.completion for r in rollouts])
        conditioning += [float(value)] * len(rollouts)
        log.info(
            "recalibration: conditioning %.3f achieved %.3f",
            value,
            np.mean(achieved[-len(rollouts) :]),
        )
    return Recalibration.fit(conditioning, achieved)

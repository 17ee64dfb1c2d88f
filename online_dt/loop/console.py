"""What a person reads on the console of a run: one line per iteration and an end-of-run
summary, both built from the ``metrics.jsonl`` records (:mod:`online_dt.loop.records`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from online_dt.config.dashboard import TOKEN_ENV
from online_dt.loop.timing import STAGES


def _num(value: Any, spec: str = ".3f") -> str:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return format(value, spec)
    return "-"


def reward_text(value: Any, spec: str = ".3f") -> str:
    """A reward or target as text: one number, or a vector (several objectives) as its
    numbers in brackets, ``[0.512, -7.25]``; ``-`` when missing."""
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_num(v, spec) for v in value) + "]"
    return _num(value, spec)


def _wall_text(record: Mapping[str, Any]) -> str:
    """A record's wall seconds with its two largest stages: ``2.5s (training 1.6, rollout
    0.8)``."""
    stages = sorted(
        (
            (record[k], k[:-2])
            for k in (f"{stage}_s" for stage in STAGES)
            if isinstance(record.get(k), int | float)
        ),
        reverse=True,
    )[:2]
    top = ", ".join(f"{name} {seconds:.1f}" for seconds, name in stages)
    return f"{_num(record.get('wall_s'), '.1f')}s ({top})"


def iteration_line(record: Mapping[str, Any], iterations: int) -> str:
    """One line for one iteration's record (numbered from 1: ``iter 1/30`` is iteration 0 in
    ``metrics.jsonl``): target and achieved reward (mean, p10..p90),
    the best command's mean achieved reward in a run with ``conditioning.best_command``, loss,
    KL to the base model, wall seconds with the two largest stages, and the policy lag when
    there is one.

    Example: ``iter  3/30  target 0.300  achieved 0.281 [-0.40, 0.85]  loss 2.412  KL 1.9
    2.5s (training 1.6, rollout 0.8)``.
    """
    it = record["iteration"]
    width = len(str(iterations))
    parts = [f"iter {it + 1:>{width}}/{iterations}", f"target {reward_text(record.get('target'))}"]
    names = record.get("objectives")
    if names and "achieved_mean" in record:  # several objectives: mean achieved per objective
        parts.append(f"achieved {reward_text(record['achieved_mean'])} ({', '.join(names)})")
    elif "achieved_mean" in record:
        p10, p90 = _num(record.get("achieved_p10"), ".2f"), _num(record.get("achieved_p90"), ".2f")
        parts.append(f"achieved {_num(record['achieved_mean'])} [{p10}, {p90}]")
    elif record.get("best_achieved_mean") is None:  # else every sample asked for the best
        parts.append(f"no samples ({record.get('samples', 0)} kept)")
    if record.get("best_achieved_mean") is not None:  # conditioning.best_command's asks
        parts.append(f"best command {_num(record['best_achieved_mean'])}")
    parts.append(f"loss {_num(record.get('loss'))}")
    if record.get("kl_to_base") is not None:
        parts.append(f"KL {_num(record['kl_to_base'], '.1f')}")
    parts.append(_wall_text(record))
    if record.get("policy_lag_max"):
        parts.append(f"lag {record['policy_lag_max']}")
    return "  ".join(parts)


def warm_start_line(record: Mapping[str, Any]) -> str:
    """One line for the warm start's record (:func:`online_dt.loop.loop.warm_start`): samples
    kept of prompts, training steps, mean loss, wall seconds with the two largest stages.

    Example: ``warm start  7168 samples of 512 prompts  300 steps  loss 1.427  47.4s
    (training 35.6, rollout 11.5)``.
    """
    return "  ".join(
        [
            "warm start",
            f"{record.get('samples', 0)} samples of {record.get('prompts', 0)} prompts",
            f"{record.get('steps', 0)} steps",
            f"loss {_num(record.get('loss'))}",
            _wall_text(record),
        ]
    )


def run_summary(
    records: Sequence[Mapping[str, Any]],
    run_dir: Path,
    checkpoint: Path | None,
    logs_dir: Path | None = None,
    dashboard_token: bool = False,
    warm_start: Mapping[str, Any] | None = None,
) -> str:
    """The end-of-run summary: iterations, final target and achieved reward, the best mean
    achieved reward (and its iteration), the warm start's and the loop's time, where the
    checkpoint and the logs are, and the dashboard and eval commands. ``records``: every
    record of the run (resumed ones too); ``dashboard_token``: the dashboard command asks for a
    token (the summary says so, never which); ``warm_start``: the warm start's record
    (``warm_start.json``), ``None`` without one."""
    lines = [f"run finished: {run_dir}"]
    if not records:
        return "\n".join([*lines, "  no iteration ran"])
    last = records[-1]
    achieved = [r for r in records if "achieved_mean" in r]
    total = last["iteration"] + 1
    lines.append(f"  iterations       {len(records)}")
    lines.append(
        f"  final            target {reward_text(last.get('target'))},"
        f" achieved {reward_text(last.get('achieved_mean'))}"
    )
    if last.get("objectives"):  # several objectives: no single best; the front's growth
        hv = [r["front_hypervolume"] for r in records if "front_hypervolume" in r]
        if hv:
            lines.append(
                f"  buffer's front   hypervolume {_num(hv[0])} after iter 1 -> {_num(hv[-1])}"
                " (normalised units)"
            )
    elif achieved:
        best = max(achieved, key=lambda r: r["achieved_mean"])
        lines.append(
            f"  best             achieved {_num(best['achieved_mean'])}"
            f" at iter {best['iteration'] + 1}/{total} (target {_num(best.get('target'))})"
        )
    if warm_start is not None:
        lines.append(
            f"  warm start       {_num(warm_start.get('wall_s'), '.1f')}s,"
            f" {warm_start.get('samples', 0)} samples, {warm_start.get('steps', 0)} steps"
        )
    walls = [r["wall_s"] for r in records if isinstance(r.get("wall_s"), int | float)]
    if walls:
        lines.append(
            f"  loop time        {sum(walls):.1f}s, {sum(walls) / len(walls):.2f}s/iteration"
        )
    lines.append(f"  checkpoint       {checkpoint if checkpoint is not None else '(none)'}")
    if logs_dir is not None and logs_dir.is_dir():
        lines.append(f"  worker logs      {logs_dir}/")
    dashboard = f"online-dt dashboard {run_dir}"
    if dashboard_token:
        dashboard += f"  (token required: dashboard.token or {TOKEN_ENV})"
    lines.append(f"  dashboard        {dashboard}")
    lines.append(f"  evaluate         online-dt eval {run_dir}")
    return "\n".join(lines)

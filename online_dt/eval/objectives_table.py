"""The console output of a multi-objective ``online-dt eval`` (``--grid``): the table of
:func:`~online_dt.eval.objectives_rows.evaluate_grid`'s rows and the lines of
:func:`~online_dt.eval.objectives_rows.summarize_grid`'s summary (plain text, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from online_dt.config import ObjectiveConfig
from online_dt.eval.objectives import CALIBRATION_GOAL


def format_objectives_table(
    rows: Sequence[dict[str, Any]],
    objectives: Sequence[ObjectiveConfig],
    goal: float = CALIBRATION_GOAL,
) -> str:
    """A plain-text table of :func:`~online_dt.eval.objectives_rows.evaluate_grid` rows: per target
    its vector, the mean achieved vector (reward units), the normalised error per objective (``!``
    past ``goal``), whether it is achievable, distinct-2 and (when estimated) the KL to the base
    model in nats per completion and per token."""
    names = [o.name for o in objectives]
    width = max(9, *(min(len(n), 12) for n in names))
    with_kl = any(r.get("kl_to_base") is not None for r in rows)
    group = len(names) * (width + 1) - 1

    def cells(values: Sequence[str]) -> str:
        return " ".join(f"{v:>{width}}" for v in values)

    titles = ["target", "achieved mean", "|error| / half-range"]
    head1 = " | ".join(f"{t:^{group}}" for t in titles)
    head2 = " | ".join(cells([n[:width] for n in names]) for _ in titles)
    tail = f" {'achv':>4} {'d-2':>5}" + (f" {'KL':>7} {'KL/tok':>7}" if with_kl else "")
    lines = [head1, head2 + " |" + tail, "-" * (len(head2) + 2 + len(tail))]
    for r in rows:
        errors = [r["objectives"][n]["abs_error_normalised"] for n in names]
        marked = [f"{e:.3f}{'!' if e > goal else ' '}" for e in errors]
        line = (
            cells([f"{v:.3f}" for v in r["target"]])
            + " | "
            + cells([f"{v:.3f}" for v in r["achieved_mean"]])
            + " | "
            + cells(marked)
            + " |"
            + f" {'yes' if r['achievable'] else 'no':>4} {r['distinct_2']:>5.2f}"
        )
        if with_kl:
            for key in ("kl_to_base", "kl_to_base_per_token"):
                kl = r.get(key)
                line += f" {kl:>7.3f}" if kl is not None else f" {'-':>7}"
        lines.append(line)
    lines.append(
        f"! error above the goal ({goal:g} of half the objective's range); achv: the buffer has"
        " samples near the target (the goal applies there)"
    )
    return "\n".join(lines)


def format_objectives_summary(
    summary: dict[str, Any], objectives: Sequence[ObjectiveConfig]
) -> str:
    """The :func:`~online_dt.eval.objectives_rows.summarize_grid` summary as a few console
    lines."""
    goal = summary["goal"]
    lines = [
        f"calibration error, normalised (|achieved mean - target| / half the range), over the "
        f"{summary['achievable']} of {summary['targets']} targets that are achievable:"
    ]
    for o in objectives:
        p = summary["per_objective"][o.name]
        if p["mean_abs_error_normalised"] is None:
            lines.append(f"  {o.name:<12} -  (no achievable target)")
            continue
        lines.append(
            f"  {o.name:<12} mean {p['mean_abs_error_normalised']:.3f}  max "
            f"{p['max_abs_error_normalised']:.3f}  ({p['within_goal']}/{summary['achievable']}"
            f" within {goal:g}; mean {p['mean_abs_error']:.3f} in reward units)"
        )
    lines.append(
        f"targets within {goal:g} in every objective: {summary['within_goal']} of "
        f"{summary['achievable']} achievable ({summary['within_goal_all']} of "
        f"{summary['targets']} in the grid)"
    )
    top = 2 ** len(objectives)
    lines.append(
        f"achieved front: {summary['achieved_front_size']} points, hypervolume "
        f"{summary['achieved_hypervolume']:.3f} (normalised units, reference -1 in every "
        f"objective; at most {top})"
    )
    if summary["buffer_hypervolume"] is None:
        lines.append("buffer's front: no buffer")
    else:
        ratio = summary["hypervolume_ratio"]
        lines.append(
            f"buffer's front: {summary['buffer_front_size']} points of "
            f"{summary['buffer_samples']} samples, hypervolume "
            f"{summary['buffer_hypervolume']:.3f}"
            + (f" (achieved / buffer: {ratio:.2f})" if ratio is not None else "")
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the buffer
# ---------------------------------------------------------------------------------------------

"""The calibration plot of an ``online-dt eval`` report (``RUN_DIR/eval/calibration.png``)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np


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
    return _finish(fig, report)


def plot_objectives(report: dict[str, Any]) -> bytes:
    """Render a multi-objective ``online-dt eval`` report (``eval/objectives.json``) as a PNG
    (matplotlib, Agg backend).

    With two objectives the first panel is the objective plane (reward units): each grid target
    (open circle; grey when not achievable), an arrow from it to the mean achieved vector
    (filled dot), the achieved front (the Pareto front of those means) and the buffer's front,
    each drawn as the staircase that bounds the region it dominates. Then, for every
    objective (the only panels with ``M > 2``), achieved mean (with p10-p90 bars) against
    that objective's target, with the identity line and a band of the calibration goal
    around it (``goal`` times half the objective's range).

    Args:
        report: the report of :func:`online_dt.eval.run.run_eval` for a run with objectives:
            ``objectives`` (``name``, ``low``, ``high`` each), ``rows`` (of
            :func:`online_dt.eval.objectives_rows.evaluate_grid`) and ``summary`` (of
            :func:`online_dt.eval.objectives_rows.summarize_grid`).

    Returns:
        The PNG file's bytes.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    objectives = report["objectives"]
    names = [o["name"] for o in objectives]
    rows = report["rows"]
    summary = report["summary"]
    goal = float(summary.get("goal", 0.1))
    plane = len(names) == 2
    panels = len(names) + (1 if plane else 0)
    columns = min(panels, 3)
    lines = -(-panels // columns)
    fig, axes = plt.subplots(
        lines, columns, figsize=(4.6 * columns, 4.3 * lines), dpi=100, squeeze=False
    )
    flat = list(axes.ravel())
    for ax in flat[panels:]:
        ax.set_visible(False)
    ok = np.array([bool(r["achievable"]) for r in rows], dtype=bool)
    targets = np.array([r["target"] for r in rows], dtype=np.float64).reshape(len(rows), -1)
    means = np.array([r["achieved_mean"] for r in rows], dtype=np.float64).reshape(len(rows), -1)

    if plane:
        ax = flat.pop(0)
        _plot_plane(ax, names, targets, means, ok, summary)
    for k, (name, ax) in enumerate(zip(names, flat, strict=False)):
        half = (objectives[k]["high"] - objectives[k]["low"]) / 2
        lo = np.array([r["objectives"][name]["p10"] for r in rows])
        hi = np.array([r["objectives"][name]["p90"] for r in rows])
        every = np.concatenate([targets[:, k], lo, hi]) if len(rows) else np.zeros(1)
        pad = 0.05 * max(float(every.max() - every.min()), 1e-6)
        span = np.array([float(every.min()) - pad, float(every.max()) + pad])
        ax.plot(span, span, "--", color="0.5", lw=1, label="achieved = target")
        xs = targets[:, k] + _dodge(targets[:, k], 0.012 * float(span[1] - span[0]))
        ax.fill_between(
            span,
            span - goal * half,
            span + goal * half,
            color="0.85",
            label=f"± {goal:g} (normalised)",
        )
        for mask, color, label in ((ok, "C0", "achievable"), (~ok, "0.55", "not achievable")):
            if mask.any():
                ax.errorbar(
                    xs[mask],
                    means[mask, k],
                    yerr=np.vstack([means[mask, k] - lo[mask], hi[mask] - means[mask, k]]),
                    fmt="o",
                    color=color,
                    capsize=3,
                    ms=4,
                    label=f"{label}: mean, p10-p90",
                )
        ax.set_xlabel(f"target {name}")
        ax.set_ylabel(f"achieved {name}")
        ax.set_title(f"{name}")
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
    return _finish(fig, report)


def _plot_plane(
    ax: Any,
    names: list[str],
    targets: np.ndarray,
    means: np.ndarray,
    ok: np.ndarray,
    summary: dict[str, Any],
) -> None:
    """The objective plane of :func:`plot_objectives` (two objectives, reward units)."""
    for front, style, label in (
        (summary.get("buffer_front") or [], dict(color="0.5", ls="--"), "buffer's front"),
        (summary.get("achieved_front") or [], dict(color="C1", ls="-"), "achieved front"),
    ):
        points = np.array(front, dtype=np.float64).reshape(-1, 2)
        if len(points):
            order = np.argsort(points[:, 0])
            # sorted by the first objective, the second descends: a vertical drop at each
            # point, then the flat run to the next ("pre"), bounds the dominated region
            ax.step(points[order, 0], points[order, 1], where="pre", lw=1.4, label=label, **style)
    for t, a, good in zip(targets, means, ok, strict=True):
        ax.annotate(
            "",
            xy=(a[0], a[1]),
            xytext=(t[0], t[1]),
            arrowprops=dict(arrowstyle="->", color="C0" if good else "0.6", lw=1),
        )
    for mask, color, label in ((ok, "C0", "target (achievable)"), (~ok, "0.6", "target (not)")):
        if mask.any():
            ax.scatter(
                targets[mask, 0],
                targets[mask, 1],
                facecolors="none",
                edgecolors=color,
                s=40,
                label=label,
            )
    if len(means):
        ax.scatter(means[:, 0], means[:, 1], color="C3", s=18, zorder=3, label="achieved mean")
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title(
        f"targets -> achieved; hypervolume {summary.get('achieved_hypervolume', 0.0):.2f}"
        + (
            f" (buffer {summary['buffer_hypervolume']:.2f})"
            if summary.get("buffer_hypervolume") is not None
            else ""
        ),
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)


def _dodge(values: np.ndarray, step: float) -> np.ndarray:
    """Offsets that spread points sharing an x value (a grid's targets share each axis value)
    side by side, ``step`` apart and centred on it, so their error bars do not overlap."""
    offsets = np.zeros(len(values))
    keys = np.round(values, 9)
    for key in np.unique(keys):
        where = np.flatnonzero(keys == key)
        offsets[where] = (np.arange(len(where)) - (len(where) - 1) / 2) * step
    return offsets


def _finish(fig: Any, report: dict[str, Any]) -> bytes:
    """Title ``fig`` with the report's policy (iteration and version when known), lay it out
    and return it as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    title = report.get("policy", "")
    if report.get("iteration") is not None:
        title = f"iteration {report['iteration']}, policy version {report.get('policy_version')}"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()

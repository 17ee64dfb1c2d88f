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
    title = report.get("policy", "")
    if report.get("iteration") is not None:
        title = f"iteration {report['iteration']}, policy version {report.get('policy_version')}"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()

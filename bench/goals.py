"""Issue 12's goals (a)-(d), scored from ``bench/peers.py`` output, for one seed or several.

Each ``peers.json`` is one run of ``bench/peers.py`` (usually one seed). For every online-dt
method in it (``online-dt``, ``online-dt-token``) this prints:

* **(a)** the best target, the one with the highest held-out reward: met when its reward is at
  least the peer's and its KL to the base model (k1, nats per completion) at most the peer's;
* **(b)** at every target from the base model's p10 to its p90 reward: the NLL of the samples
  under the base model at most ``--nll-tol`` nats/token above the binned-base reference's
  (base samples whose reward is within the bin's half-width of the target), and word distinct-2
  on as many samples as the bin holds at least ``--distinct-ratio`` of the bin's. An NLL below
  the reference is not a miss on its own: the distinct-2 check is what catches mode-seeking;
* **(c)** at the same targets: ``|achieved - target| <= --calibration-tol``, and the
  calibration slope: the least-squares slope of the achieved reward on the target over them
  (1 for a calibrated policy; below 1 when the achieved reward is drawn towards the middle of
  the range). Over several runs the slope and the mean signed error at each target are less
  noisy than the count of misses, which moves with every error near the tolerance;
* **(d)** online-dt's training time at most the peer's (``train_s``, one machine, one run);
* **the plane**: for every other method in the file (GRPO at each beta, RAFT, best-of-n), whether
  some target of online-dt is on or above it, with at least its reward at no more than its KL
  (the issue's aim: online-dt on or above every peer on the reward-vs-KL plane).

When the peer's row has a training path (``bench/peers.py --path-evals N``), (a)'s line also
gives the peer's reward where its path reaches the best target's KL (linear between the path's
points, the base model its start), which tells a point short of the peer's end point but above
its path from one below both.

The peer is a row of the same file (``--peer``, default ``grpo-b0.04``) or, when it ran in
another invocation, of the file given with ``--peer-json`` (one per input, in order, e.g. the
same seed run with ``--methods grpo``). With several inputs it then prints, per method, how many
runs met each goal and the mean and standard deviation of the best target's reward and KL beside
the peer's (a paired comparison: input ``i`` against peer ``i``).

The thresholds default to issue 12's. Usage (from the repository root)::

    .venv/bin/python bench/goals.py runs/peers-*/peers.json
    .venv/bin/python bench/goals.py s0/peers.json s1/peers.json \\
        --peer-json g0/peers.json g1/peers.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: this checkout's bench package
    sys.path.insert(0, str(ROOT))

from bench.peers import ODT_MODES, is_odt, odt_method  # noqa: E402

ODT_METHODS = tuple(odt_method(mode) for mode in ODT_MODES)
"""Method names of ``bench/peers.py``'s unguided online-dt rows, one per conditioning mode."""


@dataclass(frozen=True)
class Thresholds:
    """Issue 12's tolerances.

    Attributes:
        nll_tol: (b) the most the samples' NLL under the base (nats/token) may exceed the
            binned-base reference's.
        distinct_ratio: (b) the least word distinct-2 as a fraction of the bin's, in (0, 1].
        calibration_tol: (c) the largest ``|achieved - target|`` (reward units).
    """

    nll_tol: float = 0.1
    distinct_ratio: float = 0.95
    calibration_tol: float = 0.05


@dataclass
class Verdict:
    """One online-dt method of one run against its peer.

    Attributes:
        method: ``online-dt`` or ``online-dt-token``.
        best_target: the target with the highest held-out reward.
        reward, kl: that target's reward mean and KL to the base (nats per completion).
        peer_reward, peer_kl, train_s, peer_train_s: the peer's figures and both training times
            (seconds).
        b_misses: ``(target, what)`` for each target of (b)'s range that misses it.
        b_unknown: targets of (b)'s range whose reference bin holds no base sample.
        c_signed: ``target -> achieved - target`` over (c)'s range.
        peer_path_reward: the peer's reward interpolated along its training path at ``kl``
            (``None``: no path, or ``kl`` beyond its end).
        plane: ``peer method -> whether some target is on or above it`` (reward at least its
            own at KL at most its own), for every method of the report but the base and
            online-dt's rows (guided ones included).
    """

    method: str
    best_target: float
    reward: float
    kl: float
    peer_reward: float
    peer_kl: float
    train_s: float
    peer_train_s: float
    b_misses: list[tuple[float, str]] = field(default_factory=list)
    b_unknown: list[float] = field(default_factory=list)
    c_signed: dict[float, float] = field(default_factory=dict)
    peer_path_reward: float | None = None
    plane: dict[str, bool] = field(default_factory=dict)
    calibration_tol: float = 0.05

    @property
    def a_met(self) -> bool:
        """(a): at least the peer's reward at no more than its KL."""
        return self.reward >= self.peer_reward and self.kl <= self.peer_kl

    @property
    def b_met(self) -> bool:
        """(b): no target of the range misses and every one has a reference."""
        return not self.b_misses and not self.b_unknown

    @property
    def c_errors(self) -> dict[float, float]:
        """(c): ``target -> |achieved - target|`` over its range."""
        return {t: abs(e) for t, e in self.c_signed.items()}

    @property
    def c_misses(self) -> list[float]:
        """(c): the targets whose error exceeds the tolerance."""
        return [t for t, e in self.c_errors.items() if e > self.calibration_tol]

    @property
    def c_slope(self) -> float | None:
        """The calibration slope: the least-squares slope of the achieved reward on the target
        over (c)'s range (``statistics.linear_regression``); ``None`` with fewer than two
        targets there."""
        if len(self.c_signed) < 2:
            return None
        targets = list(self.c_signed)
        achieved = [t + e for t, e in self.c_signed.items()]
        return statistics.linear_regression(targets, achieved).slope

    @property
    def d_met(self) -> bool:
        """(d): trained in no more time than the peer."""
        return self.train_s <= self.peer_train_s


def path_reward_at(path: Sequence[dict[str, Any]], kl: float, base_reward: float) -> float | None:
    """The reward along a training path at KL ``kl`` (nats per completion): linear between
    neighbouring points, in the path's order (train calls), from the base model (KL 0,
    ``base_reward``) on; the first segment that spans ``kl`` counts. ``None`` beyond the path."""
    points = [(0.0, base_reward)] + [(p["kl_per_completion"], p["reward_mean"]) for p in path]
    for (k0, r0), (k1, r1) in zip(points, points[1:], strict=False):
        if min(k0, k1) <= kl <= max(k0, k1):
            return r0 if k1 == k0 else r0 + (r1 - r0) * (kl - k0) / (k1 - k0)
    return None


def _row(rows: Sequence[dict[str, Any]], method: str, where: str) -> dict[str, Any]:
    found = [r for r in rows if r["method"] == method]
    if not found:
        names = sorted({r["method"] for r in rows})
        raise ValueError(f"{where} has no {method!r} row (it has {', '.join(names)})")
    return found[0]


def score(
    report: dict[str, Any],
    peer_row: dict[str, Any],
    method: str,
    thresholds: Thresholds = Thresholds(),
) -> Verdict:
    """Score one online-dt method of a ``bench/peers.py`` report against a peer row.

    Args:
        report: the parsed ``peers.json`` (``rows``; ``reference`` for (b)).
        peer_row: the peer's row (``reward_mean``, ``kl_per_completion``, ``train_s``).
        method: ``online-dt`` or ``online-dt-token``.
        thresholds: the tolerances.

    Raises:
        ValueError: the report has no ``base`` row or no row of ``method``.
    """
    rows = report["rows"]
    base = _row(rows, "base", "the report")
    odt = [r for r in rows if r["method"] == method]
    if not odt:
        raise ValueError(f"the report has no {method!r} rows")
    best = max(odt, key=lambda r: r["reward_mean"])
    verdict = Verdict(
        method=method,
        best_target=best["target"],
        reward=best["reward_mean"],
        kl=best["kl_per_completion"],
        peer_reward=peer_row["reward_mean"],
        peer_kl=peer_row["kl_per_completion"],
        train_s=best["train_s"],
        peer_train_s=peer_row["train_s"],
        calibration_tol=thresholds.calibration_tol,
    )
    if peer_row.get("path"):
        verdict.peer_path_reward = path_reward_at(peer_row["path"], verdict.kl, base["reward_mean"])
    for other in rows:
        if other["method"] != "base" and not is_odt(other["method"]):
            verdict.plane[other["method"]] = any(
                r["reward_mean"] >= other["reward_mean"]
                and r["kl_per_completion"] <= other["kl_per_completion"]
                for r in odt
            )
    lo, hi = base["reward_p10"], base["reward_p90"]
    bins = {round(b["center"], 6): b for b in (report.get("reference") or {}).get("at_targets", [])}
    for row in sorted(odt, key=lambda r: r["target"]):
        target = row["target"]
        if not lo <= target <= hi:
            continue
        verdict.c_signed[target] = row["reward_mean"] - target
        ref = bins.get(round(target, 6))
        if ref is None or not ref["count"] or "distinct_2_at_bin_size" not in row:
            verdict.b_unknown.append(target)
            continue
        d_nll = row["nll_base_per_token"] - ref["nll_per_token"]
        ratio = row["distinct_2_at_bin_size"] / ref["distinct_2"]
        what = []
        if d_nll > thresholds.nll_tol:
            what.append(f"NLL {d_nll:+.3f}")
        if ratio < thresholds.distinct_ratio:
            what.append(f"distinct-2 {ratio:.2f} of the bin's")
        if what:
            verdict.b_misses.append((target, ", ".join(what)))
    return verdict


def format_verdict(v: Verdict, peer: str) -> str:
    """A few lines of text for one verdict."""
    a = "met" if v.a_met else "not met"
    c_text = ", ".join(f"{t:g}: {e:.3f}" for t, e in v.c_errors.items())
    b_text = "; ".join(f"{t:g}: {w}" for t, w in v.b_misses)
    if v.b_unknown:
        b_text += (
            ("; " if b_text else "") + "no reference at " + ", ".join(f"{t:g}" for t in v.b_unknown)
        )
    if v.c_slope is not None:
        c_text += f"; slope {v.c_slope:.3f}"
    plane = ", ".join(f"{m} {'yes' if on else 'no'}" for m, on in v.plane.items())
    on_path = ""
    if v.peer_path_reward is not None:
        side = "above" if v.reward >= v.peer_path_reward else "below"
        on_path = f"; {side} its path, which has {v.peer_path_reward:.4f} at that KL"
    return "\n".join(
        [
            f"  {v.method}: (a) {a}: {v.reward:.4f} at {v.kl:.1f} nats (target {v.best_target:g})"
            f" against {peer}'s {v.peer_reward:.4f} at {v.peer_kl:.1f}{on_path}",
            f"    (b) {'met' if v.b_met else 'not met'}" + (f": {b_text}" if b_text else ""),
            f"    (c) {len(v.c_misses)} misses of {len(v.c_errors)}; |achieved - target| {c_text}",
            f"    (d) {'met' if v.d_met else 'not met'}: {v.train_s:.1f} s against "
            f"{v.peer_train_s:.1f} s ({v.train_s / v.peer_train_s:.2f}x)",
            f"    on or above on the plane: {plane or 'no other method in the file'}",
        ]
    )


def _mean_sd(xs: Sequence[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else math.nan
    return f"{statistics.fmean(xs):.4f} ± {sd:.4f}"


def format_summary(verdicts: Sequence[Verdict], peer: str) -> str:
    """Counts of runs meeting each goal and the means (± sample standard deviation) of the best
    target's reward and KL, the peer's beside them, the calibration slope and the mean signed
    error at each target of (c)'s range, for verdicts of one method."""
    n = len(verdicts)
    a = sum(v.a_met for v in verdicts)
    b = sum(v.b_met for v in verdicts)
    c = sum(not v.c_misses for v in verdicts)
    d = sum(v.d_met for v in verdicts)
    misses = sum(len(v.c_misses) for v in verdicts)
    on_path = [v.reward >= v.peer_path_reward for v in verdicts if v.peer_path_reward is not None]
    path_text = (
        f"; above {peer}'s path at its KL in {sum(on_path)} of {len(on_path)}" if on_path else ""
    )
    kl = [v.kl for v in verdicts]
    peer_kl = [v.peer_kl for v in verdicts]
    slopes = [v.c_slope for v in verdicts if v.c_slope is not None]
    signed: dict[float, list[float]] = {}
    for v in verdicts:
        for t, e in v.c_signed.items():
            signed.setdefault(t, []).append(e)
    calibration = []
    if slopes:
        errors = ", ".join(f"{t:g}: {statistics.fmean(e):+.3f}" for t, e in sorted(signed.items()))
        calibration = [
            f"    calibration: slope {_mean_sd(slopes)} over {len(slopes)} runs; mean "
            f"achieved - target {errors}"
        ]
    return "\n".join(
        [
            f"  {verdicts[0].method} over {n} runs: (a) met in {a}, (b) in {b}, (c) in {c} "
            f"({misses} misses in {sum(len(v.c_errors) for v in verdicts)} targets), (d) in {d}"
            f"{path_text}",
            f"    best target: reward {_mean_sd([v.reward for v in verdicts])}, KL "
            f"{statistics.fmean(kl):.1f} nats; {peer}: reward "
            f"{_mean_sd([v.peer_reward for v in verdicts])}, KL {statistics.fmean(peer_kl):.1f}",
            *calibration,
        ]
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        description="Score issue 12's goals (a)-(d) from bench/peers.py output (peers.json).",
    )
    p.add_argument("reports", nargs="+", type=Path, help="peers.json files, one per run")
    p.add_argument("--peer", default="grpo-b0.04", help="the peer row's method (grpo-b0.04)")
    p.add_argument(
        "--peer-json",
        nargs="+",
        type=Path,
        default=None,
        help="take the peer row from these files instead, one per report, in the same order",
    )
    t = Thresholds()
    p.add_argument("--nll-tol", type=float, default=t.nll_tol, help="(b) nats/token (0.1)")
    p.add_argument(
        "--distinct-ratio", type=float, default=t.distinct_ratio, help="(b) distinct-2 (0.95)"
    )
    p.add_argument(
        "--calibration-tol", type=float, default=t.calibration_tol, help="(c) reward (0.05)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Print the verdicts; returns 0, or 2 on unusable input (the message names the file)."""
    args = build_parser().parse_args(argv)
    if args.peer_json is not None and len(args.peer_json) != len(args.reports):
        print(
            f"error: {len(args.reports)} reports but {len(args.peer_json)} --peer-json files",
            file=sys.stderr,
        )
        return 2
    thresholds = Thresholds(args.nll_tol, args.distinct_ratio, args.calibration_tol)
    by_method: dict[str, list[Verdict]] = {}
    for i, path in enumerate(args.reports):
        try:
            report = json.loads(path.read_text())
            peer_path = args.peer_json[i] if args.peer_json else path
            peer_rows = json.loads(peer_path.read_text())["rows"] if args.peer_json else None
            peer_row = _row(peer_rows or report["rows"], args.peer, str(peer_path))
            methods = [m for m in ODT_METHODS if any(r["method"] == m for r in report["rows"])]
            if not methods:
                raise ValueError(f"{path} has no online-dt rows")
            print(f"{path} (seed {report['setup'].get('seed')}):")
            for m in methods:
                verdict = score(report, peer_row, m, thresholds)
                by_method.setdefault(m, []).append(verdict)
                print(format_verdict(verdict, args.peer))
        except (OSError, ValueError, KeyError) as e:
            print(f"error: {path}: {e}", file=sys.stderr)
            return 2
    if len(args.reports) > 1:
        print("summary:")
        for verdicts in by_method.values():
            print(format_summary(verdicts, args.peer))
    return 0


if __name__ == "__main__":
    sys.exit(main())

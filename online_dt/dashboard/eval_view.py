"""The run's ``online-dt eval`` reports as the dashboard reads them, and the reward-vs-KL plane.

A run directory may hold ``eval/calibration.json`` (one reward) and ``eval/objectives.json``
(several objectives); :meth:`EvalView.evaluation` serves whichever was written last, parsed
once per version of the file, with its PNG (:meth:`EvalView.eval_plot`).
:meth:`EvalView.kl_plane` puts each iteration's reward and KL to the base model next to the
latest calibration report's targets and the base model's binned reference. Files are read
through a :class:`~online_dt.dashboard.run_files.RunFiles`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from online_dt.dashboard.fronts import integer, names_of, number, objectives_grid
from online_dt.dashboard.run_files import RunFiles
from online_dt.eval.reference import MIN_BIN_COUNT
from online_dt.launch.rundir import (
    EVAL_DIR,
    EVAL_OBJECTIVES_FILE,
    EVAL_OBJECTIVES_PLOT_FILE,
    EVAL_PLOT_FILE,
    EVAL_TABLE_FILE,
)

_EVAL_TABLE = f"{EVAL_DIR}/{EVAL_TABLE_FILE}"
_EVAL_PLOT = f"{EVAL_DIR}/{EVAL_PLOT_FILE}"
_EVAL_OBJECTIVES = f"{EVAL_DIR}/{EVAL_OBJECTIVES_FILE}"
_EVAL_OBJECTIVES_PLOT = f"{EVAL_DIR}/{EVAL_OBJECTIVES_PLOT_FILE}"
_EVAL_REPORTS = (
    ("calibration", _EVAL_TABLE, _EVAL_PLOT),
    ("objectives", _EVAL_OBJECTIVES, _EVAL_OBJECTIVES_PLOT),
)
"""The evaluation reports a run directory may hold: (kind, report, plot), ``online-dt eval``
of a run with one reward and with several objectives."""


class EvalView:
    """The evaluation reports of one run directory (a part of
    :class:`~online_dt.dashboard.reader.RunReader`).

    Args:
        files: the run directory's files, read through their path checks.
    """

    def __init__(self, files: RunFiles) -> None:
        self.files = files
        self._eval_cache: dict[str, tuple[tuple[int, int, int], Any, str | None]] = {}

    def latest(self) -> tuple[str, str, str] | None:
        """``(kind, report, plot)`` of :data:`_EVAL_REPORTS` whose report file was written last
        (``eval/objectives.json`` on a tie), or ``None`` when there is neither: ``kind`` is
        ``"calibration"`` or ``"objectives"``, ``report`` and ``plot`` the files' paths
        relative to the run directory."""
        found = []
        for order, (kind, table, plot) in enumerate(_EVAL_REPORTS):
            path = self.files.file(table)
            if path is None:
                continue
            try:
                found.append((path.stat().st_mtime_ns, order, (kind, table, plot)))
            except OSError:
                continue
        return max(found)[2] if found else None

    def _eval_report(self, relative: str) -> tuple[dict[str, Any] | None, str | None]:
        """An evaluation report (a JSON object) and the error reading it, as
        :meth:`RunFiles.json_file`; parsed once per version of the file (inode, size, mtime)."""
        path = self.files.file(relative)
        if path is None:
            return None, None
        try:
            st = path.stat()
        except OSError:
            return None, None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._eval_cache.get(relative)
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        report, error = self.files.json_file(relative)
        if report is not None and not isinstance(report, dict):
            report, error = None, f"{relative} is not a JSON object"
        self._eval_cache[relative] = (key, report, error)
        return report, error

    def evaluation(self) -> dict[str, Any]:
        """The latest ``online-dt eval`` report: ``eval/calibration.json`` (one reward) or
        ``eval/objectives.json`` (several objectives), whichever was written last.

        Returns:
            ``kind`` (``"calibration"``, ``"objectives"``, or ``None`` without a report);
            ``file`` (the report's path in the run directory, or ``None``); ``report`` (the
            report, or ``None``); ``plot_available`` (whether its PNG exists; served by
            :meth:`eval_plot`); ``error`` when the report cannot be parsed; ``grid``: for an
            ``objectives`` report, its table and summary in the form the page draws
            (:func:`objectives_grid`), else ``None``.
        """
        latest = self.latest()
        if latest is None:
            return {
                "kind": None,
                "file": None,
                "report": None,
                "plot_available": False,
                "error": None,
                "grid": None,
            }
        kind, table, plot = latest
        report, error = self._eval_report(table)
        grid = objectives_grid(report) if kind == "objectives" and report is not None else None
        return {
            "kind": kind,
            "file": table,
            "report": report,
            "plot_available": self.files.file(plot) is not None,
            "error": error,
            "grid": grid,
        }

    def kl_plane(self) -> dict[str, Any]:
        """The reward-vs-KL plane: reward (y, reward units) against KL(policy || base) (x, nats
        per completion) for each iteration, the latest evaluation's targets and the base
        model's own binned reference.

        Returns:
            ``iterations``: one ``{iteration, kl_to_base, achieved_mean, target}`` per metrics
            record with a finite ``kl_to_base`` and ``achieved_mean`` (the loop's k1 estimate on
            its KL samples, and the iteration's mean achieved reward), in file order;
            ``eval``: ``None``, or the latest ``online-dt eval`` report's ``created_at``,
            ``iteration``, ``policy_version`` and ``points``, one ``{target, achieved,
            kl_to_base, kl_to_base_per_token, extrapolation}`` per row with a KL estimate,
            sorted by target (``achieved`` is the row's mean);
            ``reference``: ``None``, or the report's binned-base reference: ``samples``,
            ``half_width``, ``min_count`` and ``points``, one ``{center, reward_mean,
            kl_lower_bound, kl_lower_bound_per_token, nll_per_token, count, fraction}`` per grid
            bin with at least ``min_count`` base samples (``kl_lower_bound`` is ``-log P(bin)``,
            nats per completion: the least KL to the base of a policy whose samples all land in
            the bin; ``reward_mean`` the bin's mean reward), by centre;
            ``generation`` (of ``metrics.jsonl``, as :meth:`RunFiles.metrics`) and ``error`` (the
            evaluation report's, as :meth:`evaluation`); ``objectives``: the objectives' names
            of a run with several (its newest record's), else ``None``. The plane needs one
            reward: a run with several has no ``iterations`` here (their ``achieved_mean`` is
            a vector), and its evaluation rows with vector targets are left out too (an
            ``objectives.json`` report gives no ``eval`` here: see
            :meth:`~online_dt.dashboard.reader.RunReader.pareto`).
        """
        records, generation = self.files.metrics_log()
        iterations = [
            {k: r.get(k) for k in ("iteration", "kl_to_base", "achieved_mean", "target")}
            for r in records
            if _finite(r, "kl_to_base", "achieved_mean")
        ]
        found = self.evaluation()
        report = found["report"] if found["kind"] == "calibration" else None
        return {
            "objectives": names_of(records[-1].get("objectives")) if records else None,
            "iterations": iterations,
            "eval": _eval_points(report) if report is not None else None,
            "reference": _reference_points(report) if report is not None else None,
            "generation": generation,
            "error": found["error"],
        }

    def eval_plot(self) -> Path | None:
        """Path of the latest evaluation's PNG inside the run directory (``calibration.png``
        or ``objectives.png``, as :meth:`evaluation` chooses), or ``None``."""
        latest = self.latest()
        return self.files.file(latest[2]) if latest is not None else None


def _eval_points(report: dict[str, Any]) -> dict[str, Any]:
    """The ``eval`` part of :meth:`EvalView.kl_plane`."""
    rows = [r for r in report.get("rows") or [] if isinstance(r, dict)]
    points = [
        {
            "target": r.get("target"),
            "achieved": r.get("mean"),
            "kl_to_base": r.get("kl_to_base"),
            "kl_to_base_per_token": r.get("kl_to_base_per_token"),
            "extrapolation": bool(r.get("extrapolation")),
        }
        for r in rows
        if _finite(r, "kl_to_base", "mean", "target")
    ]
    return {
        "created_at": report.get("created_at"),
        "iteration": report.get("iteration"),
        "policy_version": report.get("policy_version"),
        "points": sorted(points, key=lambda p: p["target"]),
    }


def _reference_points(report: dict[str, Any]) -> dict[str, Any] | None:
    """The ``reference`` part of :meth:`EvalView.kl_plane` (``None`` without one)."""
    ref = report.get("reference")
    if not isinstance(ref, dict):
        return None
    least = integer(ref.get("min_count"), MIN_BIN_COUNT)
    points = [
        {
            "center": b.get("center"),
            "reward_mean": b.get("reward_mean"),
            "kl_lower_bound": b.get("kl_ideal_lower_bound"),
            "kl_lower_bound_per_token": b.get("kl_ideal_lower_bound_per_token"),
            "nll_per_token": b.get("nll_per_token"),
            "count": b.get("count"),
            "fraction": b.get("fraction"),
        }
        for b in ref.get("grid") or []
        if isinstance(b, dict)
        and integer(b.get("count"), 0) >= least
        and _finite(b, "kl_ideal_lower_bound", "reward_mean", "center")
    ]
    return {
        "samples": ref.get("samples"),
        "half_width": ref.get("half_width"),
        "min_count": least,
        "points": sorted(points, key=lambda p: p["center"]),
    }


def _finite(record: dict[str, Any], *keys: str) -> bool:
    """Whether every one of ``keys`` of ``record`` is a finite number."""
    return all(number(record.get(k)) is not None for k in keys)

"""Read-only view of a run directory for the dashboard, safe while the run writes to it.

:class:`RunReader` is everything the page shows. It holds one of each of its parts, each in its
module: ``files``, ``buffer`` and ``evals``.

* :mod:`online_dt.dashboard.run_files` (:class:`~online_dt.dashboard.run_files.RunFiles`, the
  run directory's files and logs; the other parts hold the reader's instance): every read goes
  through :meth:`~online_dt.dashboard.run_files.RunFiles.file`, which resolves the path and
  refuses anything that is not a regular file (or directory) *inside* the run directory, so a
  symlink in the run directory that points elsewhere is treated as absent. Nothing here takes
  a lock or writes a file: the learner and the controller never wait for the dashboard.
* ``metrics.jsonl`` and ``samples.jsonl`` are followed incrementally
  (:class:`~online_dt.dashboard.tail.JsonlTail`): only complete lines (ending in a newline)
  are parsed, so a torn last line of a concurrent append is read once it is complete; a line
  that is not a JSON object is skipped. A file replaced or cut (resume rewrites the logs) is
  read again from the start and its ``generation`` increases.
* The replay buffer's parquet shards (:class:`~online_dt.dashboard.buffer_view.BufferView`)
  are listed, planned and read with the replay package's shard functions
  (:mod:`online_dt.replay.shards`; three columns only), each shard cached by (name, size,
  mtime); a read that meets a shard being replaced by the writer is retried, and a gap or an
  unreadable shard is reported with what comes before it.
* The evaluation reports and the reward-vs-KL plane:
  :class:`~online_dt.dashboard.eval_view.EvalView`; the config's redaction and summary:
  :mod:`online_dt.dashboard.run_config`.
* Non-finite floats (NaN, inf) become ``None`` so that every answer is valid JSON.

This module adds the config, the run's status and rejected batches, and the trade-off between
several objectives.

A run with several objectives (``conditioning.objectives``) logs its targets and achieved
rewards as vectors (one float per objective, in the config's order); :meth:`RunReader.pareto`
gives its buffer's empirical Pareto front, a thinned cloud of the buffer's reward vectors and
the target vector of every iteration, each capped so that a large buffer stays cheap to send.
Its ``online-dt eval --grid`` report (``eval/objectives.json``) is the latest evaluation when it
is newer than ``eval/calibration.json`` (:meth:`EvalView.evaluation`): its grid table and
summary are served with it, and its achieved points and front are drawn next to the buffer's
front (the ``eval`` part of :meth:`RunReader.pareto`).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from online_dt.dashboard.buffer_view import BufferView
from online_dt.dashboard.eval_view import EvalView
from online_dt.dashboard.fronts import integer, names_of, number, pareto_eval, reward_vector, thin
from online_dt.dashboard.run_config import config_summary, redact
from online_dt.dashboard.run_files import MAX_JSON_FILE_BYTES, RunFiles
from online_dt.launch.rundir import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    LATEST_FILE,
    METRICS_FILE,
    REJECTED_DIR,
    WARM_START_FILE,
)
from online_dt.launch.rundir import finite_or_none as finite
from online_dt.util.pareto import pareto_front

_LATEST = f"{CHECKPOINTS_DIR}/{LATEST_FILE}"

MAX_FRONT_POINTS = 2_000
"""Most Pareto-front points :meth:`RunReader.pareto` sends (more are thinned evenly)."""

MAX_CLOUD_POINTS = 5_000
"""Largest ``cloud`` :meth:`RunReader.pareto` accepts: buffer reward vectors sent besides the
front (an even thinning of all of them)."""


class RunReader:
    """Everything the dashboard shows, read from one run directory: the config, status,
    rejected batches and trade-off between objectives here, the rest from its parts.

    Args:
        run_dir: the run directory (it may not exist yet, or be incomplete).
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.files = RunFiles(run_dir)
        """The run directory's files read safely, and its metrics and samples logs."""
        self.buffer = BufferView(self.files)
        """The persisted replay-buffer samples: rewards, reward vectors and histogram."""
        self.evals = EvalView(self.files)
        """The latest ``online-dt eval`` report, its plot, and the reward-vs-KL plane."""
        self._front_cache: tuple[tuple[Any, ...], np.ndarray] | None = None

    # -- config and status -------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The run's ``config.yaml`` (``config``, or ``None``), a flat ``summary`` of the fields
        that matter most, and ``error`` when the file cannot be parsed."""
        import yaml

        path = self.files.file(CONFIG_FILE)
        if path is None:
            return {"config": None, "summary": {}, "error": None}
        try:
            if path.stat().st_size > MAX_JSON_FILE_BYTES:
                raise ValueError("file too large")
            data = yaml.safe_load(path.read_text())
        except (OSError, ValueError, yaml.YAMLError) as e:
            return {"config": None, "summary": {}, "error": f"{CONFIG_FILE} cannot be read: {e}"}
        if not isinstance(data, dict):
            return {"config": None, "summary": {}, "error": f"{CONFIG_FILE} is not a mapping"}
        return {"config": redact(finite(data)), "summary": config_summary(data), "error": None}

    def rejected(self, latest: int = 10) -> dict[str, Any]:
        """Rejected reward batches in ``rejected/`` (JSON files with a ``reason``): ``count``
        and the ``latest`` newest as ``{file, reason, time}``; ``count`` is 0 without the
        directory."""
        folder = self.files.file(REJECTED_DIR, directory=True)
        if folder is None:
            return {"count": 0, "latest": []}
        entries = []
        for entry in os.scandir(folder):
            if entry.name.endswith(".json") and not entry.name.startswith("."):
                path = self.files.file(f"{REJECTED_DIR}/{entry.name}")
                if path is not None:
                    try:
                        entries.append((path.stat().st_mtime, entry.name))
                    except OSError:
                        continue
        entries.sort(reverse=True)
        out = []
        for mtime, name in entries[:latest]:
            named = re.fullmatch(r"iter-\d+-([a-z_]+)(?:-\d+)?\.json", name)
            if named:  # RunDir.write_rejected names the file after the reason: no parse needed
                reason = named.group(1)
            else:
                data, error = self.files.json_file(f"{REJECTED_DIR}/{name}")
                reason = data.get("reason") if isinstance(data, dict) else None
                if reason is None:
                    reason = error or "(no reason given)"
            out.append({"file": name, "reason": str(reason)[:2000], "time": mtime})
        return {"count": len(entries), "latest": out}

    def status(self) -> dict[str, Any]:
        """Run status: the last iteration's figures, progress, state, latest checkpoint,
        whether an evaluation exists, the warm start's record (``warm_start.json``: samples,
        prompts, steps, loss, seconds per stage; ``None`` without one), and errors (rejected
        batches, ``errors`` lists in the metrics records). With several objectives,
        ``target`` and ``achieved_mean`` are vectors, ``objectives`` their names (else
        ``None``), and ``front_size`` and ``front_hypervolume`` the last iteration's figures of
        the buffer's front."""
        metrics = self.files.metrics()["records"]
        cfg = self.config()
        total = integer(((cfg["config"] or {}).get("online") or {}).get("iterations"), None)
        last = metrics[-1] if metrics else {}
        path = self.files.file(METRICS_FILE)
        updated = path.stat().st_mtime if path is not None else None
        iteration = last.get("iteration")
        if not metrics:
            state = "not started"
        elif total is not None and integer(iteration, -1) >= total - 1:
            state = "finished"
        elif updated is not None and time.time() - updated > max(600.0, 10 * _median_wall(metrics)):
            state = "stalled"
        else:
            state = "running"
        errors = [
            {"iteration": r.get("iteration"), "error": str(e)[:2000]}
            for r in metrics
            for e in (r.get("errors") or [] if isinstance(r.get("errors"), list) else [])
        ]
        checkpoint = None
        latest_eval = self.evals.latest()
        latest, _ = self.files.json_file(_LATEST)
        if isinstance(latest, dict):
            checkpoint = latest.get("path")
        warm_start, _ = self.files.json_file(WARM_START_FILE)
        return {
            "run_dir": str(self.files.root),
            "name": self.files.root.name,
            "exists": self.files.root.is_dir(),
            "state": state,
            "iteration": iteration,
            "iterations_total": total,
            "policy_version": last.get("policy_version"),
            "buffer_size": last.get("buffer_size"),
            "target": last.get("target"),
            "achieved_mean": last.get("achieved_mean"),
            "objectives": names_of(last.get("objectives")),
            "front_size": last.get("front_size"),
            "front_hypervolume": last.get("front_hypervolume"),
            "updated_at": updated,
            "checkpoint": checkpoint,
            "warm_start": warm_start if isinstance(warm_start, dict) else None,
            "eval_available": latest_eval is not None,
            "eval_kind": latest_eval[0] if latest_eval is not None else None,
            "config_error": cfg["error"],
            "rejected": self.rejected(),
            "errors": errors[-10:],
            "errors_count": len(errors),
        }

    # -- several objectives ------------------------------------------------------------------------

    def objectives(self, records: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """The run's objectives, in the order of its reward vectors: ``{name, low, high}`` (the
        range in reward units) from ``conditioning.objectives`` of ``config.yaml``; without
        them in a readable config, the names in the newest metrics record's ``objectives``
        (``low`` and ``high`` then ``None``). ``[]`` for a run with a single reward.

        Args:
            records: the metrics records, when the caller has read them already.
        """
        config = self.config()["config"] or {}
        conditioning = config.get("conditioning")
        listed = conditioning.get("objectives") if isinstance(conditioning, dict) else None
        if isinstance(listed, list) and listed:
            return [
                {
                    "name": str(o.get("name", f"objective {m + 1}")),
                    "low": number(o.get("low")),
                    "high": number(o.get("high")),
                }
                for m, o in enumerate(x if isinstance(x, dict) else {} for x in listed)
            ]
        if records is None:
            records = self.files.metrics()["records"]
        for record in reversed(records):
            names = record.get("objectives")
            if isinstance(names, list) and names:
                return [{"name": str(n), "low": None, "high": None} for n in names]
        return []

    def pareto(self, cloud: int = 1_000) -> dict[str, Any]:
        """The trade-off between the objectives of a run with several of them: the replay
        buffer's empirical Pareto front, a thinned cloud of its reward vectors, and the target
        vector and front figures of every iteration.

        The front and the cloud come from the ``achieved_rewards`` of every *persisted* sample
        (the shards keep every appended sample, also those evicted from the held set); the
        front is computed with :func:`online_dt.util.pareto.pareto_front` (higher is better in
        every objective) and cached until the shards change. The metrics' ``front_size`` and
        ``front_hypervolume`` are the learner's, over the samples it *holds*.

        Args:
            cloud: send at most this many reward vectors besides the front (``0`` ..
                :data:`MAX_CLOUD_POINTS`), an even thinning of all of them in id order.

        Returns:
            ``objectives`` (:meth:`objectives`; ``[]`` for a run with a single reward, and
            then the buffer is not read); ``front``, the front's vectors (reward units,
            duplicates merged), sorted by the first objective, at most
            :data:`MAX_FRONT_POINTS` of them (evenly thinned beyond, the two ends kept), and
            ``front_total``, its size before thinning; ``cloud``, the thinned reward vectors;
            ``samples``, how many persisted samples have a finite reward vector; ``targets``,
            one ``{iteration, target, achieved}`` per metrics record with a target vector:
            the mean target of the iteration's samples and their mean achieved reward
            (``None`` for a skipped batch); ``hypervolume``, one ``{iteration, front_size,
            front_hypervolume}`` per record with a hypervolume (normalised units: every
            objective's ``[low, high]`` maps to ``[-1, 1]``, reference point at the lows);
            ``generation`` (of ``metrics.jsonl``, as :meth:`RunFiles.metrics`) and ``error``
            (the buffer's, as :meth:`BufferView.buffer_rewards`); ``eval``: the latest
            evaluation's steering when it is an ``objectives.json`` report over the same
            objectives (:func:`pareto_eval`: its achieved points, their front and
            hypervolumes), else ``None``.
        """
        cloud = max(0, min(int(cloud), MAX_CLOUD_POINTS))
        records, generation = self.files.metrics_log()
        objectives = self.objectives(records)
        answer: dict[str, Any] = {
            "objectives": objectives,
            "front": [],
            "front_total": 0,
            "cloud": [],
            "samples": 0,
            "targets": [],
            "hypervolume": [],
            "eval": None,
            "generation": generation,
            "error": None,
        }
        if not objectives:
            return answer
        names = [o["name"] for o in objectives]
        found_eval = self.evals.evaluation()
        if found_eval["kind"] == "objectives" and found_eval["report"] is not None:
            answer["eval"] = pareto_eval(found_eval["report"], names)
        for r in records:
            target = reward_vector(r.get("target"), r, names, "target_{}")
            if target is not None:
                answer["targets"].append(
                    {
                        "iteration": r.get("iteration"),
                        "target": target,
                        "achieved": reward_vector(
                            r.get("achieved_mean"), r, names, "achieved_{}_mean"
                        ),
                    }
                )
            if number(r.get("front_hypervolume")) is not None:
                answer["hypervolume"].append(
                    {k: r.get(k) for k in ("iteration", "front_size", "front_hypervolume")}
                )
        found = self.buffer.columns()
        answer["error"] = found.error
        if found.vectors is None:
            return answer
        points = found.vectors[np.isfinite(found.vectors).all(axis=1)]
        front = self._front(points, found.state)
        answer["front_total"] = len(front)
        answer["front"] = front[thin(len(front), MAX_FRONT_POINTS)].tolist()
        answer["cloud"] = points[thin(len(points), cloud)].tolist()
        answer["samples"] = len(points)
        return finite(answer)

    def _front(self, points: np.ndarray, state: tuple[Any, ...]) -> np.ndarray:
        """:func:`pareto_front` of ``points``, reused while the buffer's ``state`` holds."""
        cached = self._front_cache
        if cached is not None and cached[0] == state and state:
            return cached[1]
        front = pareto_front(points) if len(points) else points
        self._front_cache = (state, front)
        return front


def _median_wall(metrics: list[dict[str, Any]]) -> float:
    walls = [
        sum(float(r.get(k) or 0.0) for k in ("rollout_s", "scoring_s", "training_s", "sync_s"))
        for r in metrics[-20:]
    ]
    return float(np.median(walls)) if walls else 0.0

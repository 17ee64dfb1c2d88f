"""Read-only view of a run directory for the dashboard, safe while the run writes to it.

Every read goes through :meth:`RunReader.file`, which resolves the path and refuses anything
that is not a regular file (or directory) *inside* the run directory, so a symlink in the run
directory that points elsewhere is treated as absent. Nothing here takes a lock or writes a
file: the learner and the controller never wait for the dashboard.

* ``metrics.jsonl`` and ``samples.jsonl`` are followed incrementally (:class:`JsonlTail`): only
  complete lines (ending in a newline) are parsed, so a torn last line of a concurrent append is
  read once it is complete; a line that is not a JSON object is skipped. A file replaced or cut
  (resume rewrites the logs) is read again from the start and its ``generation`` increases.
* The replay buffer's parquet shards are listed, planned and read with the replay package's
  shard functions (:mod:`online_dt.replay.shards`; three columns only), each shard cached by
  (name, size, mtime); a read that meets a shard being replaced by the writer is retried, and a
  gap or an unreadable shard is reported with what comes before it.
* Non-finite floats (NaN, inf) become ``None`` so that every answer is valid JSON.

A run with several objectives (``conditioning.objectives``) logs its targets and achieved
rewards as vectors (one float per objective, in the config's order); :meth:`RunReader.pareto`
gives its buffer's empirical Pareto front, a thinned cloud of the buffer's reward vectors and
the target vector of every iteration, each capped so that a large buffer stays cheap to send.
Its ``online-dt eval --grid`` report (``eval/objectives.json``) is the latest evaluation when it
is newer than ``eval/calibration.json`` (:meth:`RunReader.evaluation`): its grid table and
summary are served with it, and its achieved points and front are drawn next to the buffer's
front (the ``eval`` part of :meth:`RunReader.pareto`).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from online_dt.dashboard.fronts import (
    integer,
    names_of,
    number,
    objectives_grid,
    pareto_eval,
    reward_vector,
    stack_vectors,
    thin,
    vector_rows,
)
from online_dt.eval.reference import MIN_BIN_COUNT
from online_dt.launch.rundir import (
    BUFFER_DIR,
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    EVAL_DIR,
    EVAL_OBJECTIVES_FILE,
    EVAL_OBJECTIVES_PLOT_FILE,
    EVAL_PLOT_FILE,
    EVAL_TABLE_FILE,
    LATEST_FILE,
    METRICS_FILE,
    REJECTED_DIR,
    SAMPLES_FILE,
)
from online_dt.launch.rundir import finite_or_none as finite
from online_dt.replay.schema import BufferCorruptError
from online_dt.replay.shards import list_shards, plan_coverage, read_shard, read_while_writing
from online_dt.util.pareto import pareto_front

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
_LATEST = f"{CHECKPOINTS_DIR}/{LATEST_FILE}"

MAX_SAMPLES_KEPT = 10_000
"""Most recent ``samples.jsonl`` records held in memory (the API's ``limit`` maximum)."""

MAX_JSON_FILE_BYTES = 8 * 1024 * 1024
"""Larger config, evaluation or rejected-batch files are not parsed (reported as too large)."""

MAX_FRONT_POINTS = 2_000
"""Most Pareto-front points :meth:`RunReader.pareto` sends (more are thinned evenly)."""

MAX_CLOUD_POINTS = 5_000
"""Largest ``cloud`` :meth:`RunReader.pareto` accepts: buffer reward vectors sent besides the
front (an even thinning of all of them)."""

_BUFFER_COLUMNS = ["sample_id", "achieved_reward", "iteration", "achieved_rewards"]
_REWRITE_PAUSE_S = 0.05  # between attempts to read shards a writer is replacing


SECRET_WORDS = ("token", "secret", "password", "passwd", "api_key", "apikey", "credential")
"""Config keys holding one of these words are shown as ``"***"`` (a custom reward model's
``kwargs`` may carry an API token, and the dashboard can be bound to every interface)."""


def redact(value: Any) -> Any:
    """``value`` with the values of secret-looking keys (:data:`SECRET_WORDS`, any case)
    replaced by ``"***"``, recursively through dicts and lists."""
    if isinstance(value, dict):
        return {
            k: "***" if any(w in str(k).lower() for w in SECRET_WORDS) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


class JsonlTail:
    """Incremental reader of an append-only JSON-lines file.

    Args:
        path: the file (it may not exist yet).
        keep: hold at most this many of the newest records (``None``: all).
    """

    def __init__(self, path: Path, keep: int | None = None) -> None:
        self.path = path
        self.keep = keep
        self._records: deque[dict[str, Any]] = deque(maxlen=keep)
        self._offset = 0
        self._ident: tuple[int, int] | None = None
        self._generation = 0
        self._lock = threading.Lock()

    def _reset(self) -> None:
        if self._offset or self._records:
            self._generation += 1
        self._records = deque(maxlen=self.keep)
        self._offset = 0

    def read(self, path: Path | None) -> tuple[list[dict[str, Any]], int]:
        """The complete records read so far, after reading what was appended since the last
        call, and the file's generation (bumped whenever the file was replaced or shrank).

        Args:
            path: the checked path to read now, or ``None`` when the file is absent or refused.
        """
        with self._lock:
            if path is None:
                self._reset()
                self._ident = None
                return [], self._generation
            try:
                with open(path, "rb") as f:
                    st = os.fstat(f.fileno())
                    ident = (st.st_dev, st.st_ino)
                    if ident != self._ident or st.st_size < self._offset:
                        self._reset()
                        self._ident = ident
                    if st.st_size > self._offset:
                        f.seek(self._offset)
                        data = f.read(st.st_size - self._offset)
                        end = data.rfind(b"\n")
                        if end >= 0:
                            self._offset += end + 1
                            self._parse(data[: end + 1])
            except FileNotFoundError:
                self._reset()
                self._ident = None
            return list(self._records), self._generation

    def _parse(self, chunk: bytes) -> None:
        for line in chunk.split(b"\n"):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash, then continued by a later append
            if isinstance(record, dict):
                self._records.append(finite(record))


class _Buffer(NamedTuple):
    """The persisted samples' columns the dashboard uses (see :meth:`RunReader.buffer_rewards`
    and :meth:`RunReader.buffer_vectors`)."""

    rewards: np.ndarray
    """float64 ``[N]``: ``achieved_reward`` (with several objectives, the first one's)."""
    iterations: np.ndarray
    """int64 ``[N]``: the iteration that appended each sample (-1: the warm start)."""
    vectors: np.ndarray | None
    """float64 ``[N, M]``: ``achieved_rewards`` (NaN where a row has none), or ``None`` when no
    sample has a reward vector (a one-reward run)."""
    error: str | None
    """Why the shards are incomplete or unreadable (what was read is still given)."""
    state: tuple[Any, ...]
    """Identifies the shards (and rows) read: equal states hold equal samples."""


def _empty_buffer(error: str | None = None) -> _Buffer:
    return _Buffer(np.zeros(0), np.zeros(0, dtype=np.int64), None, error, ())


class RunReader:
    """Everything the dashboard shows, read from one run directory.

    Args:
        run_dir: the run directory (it may not exist yet, or be incomplete).
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.root = Path(run_dir).resolve()
        self._metrics = JsonlTail(self.root / METRICS_FILE)
        self._samples = JsonlTail(self.root / SAMPLES_FILE, keep=MAX_SAMPLES_KEPT)
        self._shard_cache: dict[
            str, tuple[tuple[int, int], np.ndarray, np.ndarray, np.ndarray | None]
        ] = {}
        self._buffer_lock = threading.Lock()
        self._front_cache: tuple[tuple[Any, ...], np.ndarray] | None = None
        self._eval_cache: dict[str, tuple[tuple[int, int, int], Any, str | None]] = {}

    # -- path safety -----------------------------------------------------------------------------

    def file(self, relative: str, *, directory: bool = False) -> Path | None:
        """The resolved path of ``relative`` inside the run directory, or ``None`` when it is
        absent, of the wrong kind, or resolves outside the run directory (a symlink pointing
        out, ``..``)."""
        try:
            path = (self.root / relative).resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if path != self.root and not path.is_relative_to(self.root):
            return None
        ok = path.is_dir() if directory else path.is_file()
        return path if ok else None

    def _json_file(self, relative: str) -> tuple[Any, str | None]:
        path = self.file(relative)
        if path is None:
            return None, None
        try:
            if path.stat().st_size > MAX_JSON_FILE_BYTES:
                return None, f"{relative} is larger than {MAX_JSON_FILE_BYTES} bytes"
            return finite(json.loads(path.read_bytes())), None
        except (OSError, ValueError) as e:
            return None, f"{relative} cannot be read: {e}"

    # -- logs --------------------------------------------------------------------------------------

    def metrics(self, since: int = -1) -> dict[str, Any]:
        """Per-iteration records with ``iteration > since``, in file order.

        Returns:
            ``records``, ``total`` (all complete records) and ``generation`` (changes when the
            file was rewritten, e.g. by a resume: then a client reloads from ``since=-1``).
        """
        records, generation = self._metrics.read(self.file(METRICS_FILE))
        new = [r for r in records if integer(r.get("iteration"), -(10**18)) > since]
        return {"records": new, "total": len(records), "generation": generation}

    def samples(self, limit: int) -> dict[str, Any]:
        """The newest ``limit`` records of ``samples.jsonl``, newest first (prompt, completion,
        target, achieved reward, policy version, iteration)."""
        records, generation = self._samples.read(self.file(SAMPLES_FILE))
        newest = records[-limit:][::-1]
        return {"records": newest, "total": len(records), "generation": generation}

    # -- config and status -------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The run's ``config.yaml`` (``config``, or ``None``), a flat ``summary`` of the fields
        that matter most, and ``error`` when the file cannot be parsed."""
        import yaml

        path = self.file(CONFIG_FILE)
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
        folder = self.file(REJECTED_DIR, directory=True)
        if folder is None:
            return {"count": 0, "latest": []}
        entries = []
        for entry in os.scandir(folder):
            if entry.name.endswith(".json") and not entry.name.startswith("."):
                path = self.file(f"{REJECTED_DIR}/{entry.name}")
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
                data, error = self._json_file(f"{REJECTED_DIR}/{name}")
                reason = data.get("reason") if isinstance(data, dict) else None
                if reason is None:
                    reason = error or "(no reason given)"
            out.append({"file": name, "reason": str(reason)[:2000], "time": mtime})
        return {"count": len(entries), "latest": out}

    def status(self) -> dict[str, Any]:
        """Run status: the last iteration's figures, progress, state, latest checkpoint,
        whether an evaluation exists, and errors (rejected batches, ``errors`` lists in the
        metrics records). With several objectives, ``target`` and ``achieved_mean`` are
        vectors, ``objectives`` their names (else ``None``), and ``front_size`` and
        ``front_hypervolume`` the last iteration's figures of the buffer's front."""
        metrics = self.metrics()["records"]
        cfg = self.config()
        total = integer(((cfg["config"] or {}).get("online") or {}).get("iterations"), None)
        last = metrics[-1] if metrics else {}
        path = self.file(METRICS_FILE)
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
        latest_eval = self._latest_eval()
        latest, _ = self._json_file(_LATEST)
        if isinstance(latest, dict):
            checkpoint = latest.get("path")
        return {
            "run_dir": str(self.root),
            "name": self.root.name,
            "exists": self.root.is_dir(),
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
            "eval_available": latest_eval is not None,
            "eval_kind": latest_eval[0] if latest_eval is not None else None,
            "config_error": cfg["error"],
            "rejected": self.rejected(),
            "errors": errors[-10:],
            "errors_count": len(errors),
        }

    # -- evaluation --------------------------------------------------------------------------------

    def _latest_eval(self) -> tuple[str, str, str] | None:
        """``(kind, report, plot)`` of :data:`_EVAL_REPORTS` whose report file was written last
        (``eval/objectives.json`` on a tie), or ``None`` when there is neither."""
        found = []
        for order, (kind, table, plot) in enumerate(_EVAL_REPORTS):
            path = self.file(table)
            if path is None:
                continue
            try:
                found.append((path.stat().st_mtime_ns, order, (kind, table, plot)))
            except OSError:
                continue
        return max(found)[2] if found else None

    def _eval_report(self, relative: str) -> tuple[dict[str, Any] | None, str | None]:
        """An evaluation report (a JSON object) and the error reading it, as
        :meth:`_json_file`; parsed once per version of the file (inode, size, mtime)."""
        path = self.file(relative)
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
        report, error = self._json_file(relative)
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
        latest = self._latest_eval()
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
            "plot_available": self.file(plot) is not None,
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
            ``generation`` (of ``metrics.jsonl``, as :meth:`metrics`) and ``error`` (the
            evaluation report's, as :meth:`evaluation`); ``objectives``: the objectives' names
            of a run with several (its newest record's), else ``None``. The plane needs one
            reward: a run with several has no ``iterations`` here (their ``achieved_mean`` is
            a vector), and its evaluation rows with vector targets are left out too (an
            ``objectives.json`` report gives no ``eval`` here: see :meth:`pareto`).
        """
        records, generation = self._metrics.read(self.file(METRICS_FILE))
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
        latest = self._latest_eval()
        return self.file(latest[2]) if latest is not None else None

    # -- replay buffer -----------------------------------------------------------------------------

    def buffer_rewards(self) -> tuple[np.ndarray, np.ndarray, str | None]:
        """Achieved reward and iteration of every persisted sample, in id order, and an error
        message when the shards are incomplete or unreadable (then what was read is returned).
        With several objectives the reward is the first objective's (the vectors:
        :meth:`buffer_vectors`).
        """
        found = self._buffer()
        return found.rewards, found.iterations, found.error

    def buffer_vectors(self) -> tuple[np.ndarray | None, np.ndarray, str | None]:
        """Achieved reward vectors (float64 ``[N, M]``, reward units, NaN where a sample has
        none) and iteration of every persisted sample, in id order, and an error message as
        :meth:`buffer_rewards`; the vectors are ``None`` when no sample has one (a run with a
        single reward)."""
        found = self._buffer()
        return found.vectors, found.iterations, found.error

    def _buffer(self) -> _Buffer:
        folder = self.file(BUFFER_DIR, directory=True)
        if folder is None:
            return _empty_buffer()
        with self._buffer_lock:
            try:
                return read_while_writing(
                    lambda: self._read_buffer(folder),
                    retry_on=(FileNotFoundError,),
                    pause_s=_REWRITE_PAUSE_S,
                )
            except FileNotFoundError:  # the writer kept replacing the open shard
                return _empty_buffer("the buffer is being rewritten")

    def _read_buffer(self, folder: Path) -> _Buffer:
        try:
            found = list_shards(folder)
        except BufferCorruptError as e:
            return _empty_buffer(str(e))
        # a shard resolving outside the run directory (a symlink pointing out) counts as absent
        coverage = plan_coverage(
            [s for s in found if self.file(f"{BUFFER_DIR}/{s.path.name}") is not None]
        )
        error = None
        if coverage.missing is not None:
            lo, hi = coverage.missing
            error = f"samples {lo}..{hi} are missing from the buffer"
        rewards, iterations, vectors, state = [], [], [], []
        seen = set()
        for shard, take_from in coverage.used:
            name = shard.path.name
            st = os.stat(shard.path)
            key = (st.st_size, st.st_mtime_ns)
            cached = self._shard_cache.get(name)
            if cached is None or cached[0] != key:
                try:
                    table = read_shard(shard, _BUFFER_COLUMNS)
                except BufferCorruptError as e:
                    error = str(e)
                    break
                cached = (
                    key,
                    table.column("achieved_reward").to_numpy().astype(np.float64),
                    table.column("iteration").to_numpy().astype(np.int64),
                    vector_rows(table.column("achieved_rewards")),
                )
                self._shard_cache[name] = cached
            seen.add(name)
            skip = take_from - shard.first
            rewards.append(cached[1][skip:])
            iterations.append(cached[2][skip:])
            vectors.append(cached[3][skip:] if cached[3] is not None else None)
            state.append((name, key, skip))
        for name in set(self._shard_cache) - seen:
            del self._shard_cache[name]
        if not rewards:
            return _empty_buffer(error)
        return _Buffer(
            np.concatenate(rewards),
            np.concatenate(iterations),
            stack_vectors(vectors, [len(r) for r in rewards]),
            error,
            tuple(state),
        )

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
            records = self.metrics()["records"]
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
            ``generation`` (of ``metrics.jsonl``, as :meth:`metrics`) and ``error`` (the
            buffer's, as :meth:`buffer_rewards`); ``eval``: the latest evaluation's steering
            when it is an ``objectives.json`` report over the same objectives
            (:func:`pareto_eval`: its achieved points, their front and hypervolumes), else
            ``None``.
        """
        cloud = max(0, min(int(cloud), MAX_CLOUD_POINTS))
        records, generation = self._metrics.read(self.file(METRICS_FILE))
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
        found_eval = self.evaluation()
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
        found = self._buffer()
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

    def buffer_histogram(self, iteration: int | None = None, bins: int = 30) -> dict[str, Any]:
        """Histogram of the achieved rewards of the persisted replay-buffer samples.

        Args:
            iteration: also count the samples appended at iterations ``<= iteration`` (the
                buffer as it was then); ``None``: the latest iteration.
            bins: number of equal-width bins over ``[min, max]`` of all persisted rewards, the
                same edges for every iteration so histograms compare.

        Returns:
            ``edges`` (bins + 1 values), ``current`` (counts over all samples), ``at`` (the
            ``iteration`` and its ``counts``), ``iterations`` (sorted distinct iterations in the
            buffer; -1 is the warm start), ``total``, ``best``, ``mean`` and ``error``.
        """
        rewards, iterations, error = self.buffer_rewards()
        if len(rewards) == 0:
            return {
                "edges": [],
                "current": [],
                "at": {"iteration": iteration, "counts": [], "total": 0},
                "iterations": [],
                "total": 0,
                "best": None,
                "mean": None,
                "error": error,
            }
        low, high = float(rewards.min()), float(rewards.max())
        if high <= low:
            low, high = low - 0.5, high + 0.5
        edges = np.linspace(low, high, bins + 1)
        distinct = np.unique(iterations)
        at = int(distinct[-1]) if iteration is None else iteration
        chosen = rewards[iterations <= at]
        return finite(
            {
                "edges": edges.tolist(),
                "current": np.histogram(rewards, edges)[0].tolist(),
                "at": {
                    "iteration": at,
                    "counts": np.histogram(chosen, edges)[0].tolist(),
                    "total": len(chosen),
                },
                "iterations": distinct.tolist(),
                "total": len(rewards),
                "best": float(rewards.max()),
                "mean": float(rewards.mean()),
                "error": error,
            }
        )


def config_summary(cfg: dict[str, Any]) -> dict[str, Any]:
    """A flat ``{label: value}`` digest of a run config (model, conditioning, reward model,
    schedule, loop sizes, sampler, buffer); missing sections are left out."""

    def get(*keys: str) -> Any:
        node: Any = cfg
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    schedule = get("schedule") or {}
    sched = str(schedule.get("kind", "")) if isinstance(schedule, dict) else ""
    if sched == "quantile":
        sched += f" q {get('schedule', 'q_start')}->{get('schedule', 'q_end')}"
    elif sched == "linear":
        sched += f" {get('schedule', 'start')}->{get('schedule', 'end')}"
    elif sched == "constant":
        sched += f" {get('schedule', 'value')}"
    if get("schedule", "max_increase") is not None:
        sched += f", max +{get('schedule', 'max_increase')}/iteration"
    items = {
        "model": get("model", "name_or_path"),
        "conditioning": get("conditioning", "mode"),
        "reward model": get("reward_model", "kind"),
        "schedule": sched or None,
        "iterations": get("online", "iterations"),
        "prompts x samples": (
            f"{get('online', 'prompts_per_iteration')} x {get('online', 'samples_per_prompt')}"
            if get("online") is not None
            else None
        ),
        "train steps / iteration": get("online", "train_steps_per_iteration"),
        "mode": get("online", "mode"),
        "sampler": get("sampler", "backend"),
        "buffer capacity": get("buffer", "capacity"),
        "learning rate": get("training", "lr"),
    }
    return {k: finite(v) for k, v in items.items() if v is not None}


def _eval_points(report: dict[str, Any]) -> dict[str, Any]:
    """The ``eval`` part of :meth:`RunReader.kl_plane`."""
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
    """The ``reference`` part of :meth:`RunReader.kl_plane` (``None`` without one)."""
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


def _median_wall(metrics: list[dict[str, Any]]) -> float:
    walls = [
        sum(float(r.get(k) or 0.0) for k in ("rollout_s", "scoring_s", "training_s", "sync_s"))
        for r in metrics[-20:]
    ]
    return float(np.median(walls)) if walls else 0.0


# -- an evaluation of several objectives (eval/objectives.json) ----------------------------------

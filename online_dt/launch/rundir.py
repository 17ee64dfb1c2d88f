"""The run directory: resolved config, per-iteration metrics, sample logs and checkpoints.

Layout::

    RUN_DIR/
      config.yaml        resolved config (written once, atomically)
      metrics.jsonl      one JSON record per finished iteration
      warm_start.json    the warm start's record (online.warm_start_samples_per_prompt > 0)
      samples.jsonl      a few completions per iteration, for inspection
      buffer/            replay-buffer parquet shards (online_dt.replay.shards)
      weights/           published policy versions (checkpoint weight sync)
      checkpoints/       resumable checkpoints; latest.json names the newest complete one
      rejected/          batches the reward model could not score, with the reason

Every file is written to a temporary name and renamed, or appended line by line with a flush
and fsync; a reader drops a torn last line, so a crash never leaves a record half-read.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from online_dt.util.atomic import atomic_write_json, atomic_write_text

# -- the names of the run directory's entries: the one place they are defined -----------------

CONFIG_FILE = "config.yaml"
"""The resolved config."""
METRICS_FILE = "metrics.jsonl"
"""One JSON record per finished iteration."""
WARM_START_FILE = "warm_start.json"
"""The warm start's record: samples, steps, loss and seconds per stage."""
SAMPLES_FILE = "samples.jsonl"
"""A few completions per iteration."""
BUFFER_DIR = "buffer"
"""Replay-buffer parquet shards."""
WEIGHTS_DIR = "weights"
"""Published policy versions."""
CHECKPOINTS_DIR = "checkpoints"
"""Resumable checkpoints, ``iter-NNNNNN/`` each."""
LATEST_FILE = "latest.json"
"""In ``checkpoints/``: names the newest complete checkpoint."""
CHECKPOINT_STATE_FILE = "state.json"
"""In a checkpoint: iteration, policy version, buffer and controller state."""
CHECKPOINT_POLICY_DIR = "policy"
"""In a checkpoint (and in the offline demo's run directory): the policy (a Hugging Face
directory plus ``reward_conditioning/``)."""
CHECKPOINT_TRAINER_FILE = "trainer.pt"
"""In a checkpoint: optimizer and LR-schedule state."""
REJECTED_DIR = "rejected"
"""Batches the reward model could not score."""
EVAL_DIR = "eval"
"""The latest ``online-dt eval``."""
EVAL_TABLE_FILE = "calibration.json"
"""In ``eval/`` (at the top of the offline demo's run directory): the calibration table."""
EVAL_PLOT_FILE = "calibration.png"
"""In ``eval/``: the calibration plot."""
EVAL_OBJECTIVES_FILE = "objectives.json"
"""In ``eval/``: the grid evaluation of a run with several objectives (``conditioning.objectives``),
written instead of ``calibration.json``."""
EVAL_OBJECTIVES_PLOT_FILE = "objectives.png"
"""In ``eval/``: its plot (the objective plane and achieved vs target per objective)."""
TENSORBOARD_DIR = "tensorboard"
"""TensorBoard event files (``online.tensorboard: true``)."""
LOGS_DIR = "logs"
"""Worker logs on Ray, one file per actor (``learner.log``, ``sampler-0.log``, ``reward.log``)."""


def finite_or_none(value: Any) -> Any:
    """``value`` with NaN and infinite floats replaced by ``None``, recursively through dicts,
    lists and tuples (tuples become lists): strict JSON, which browsers and ``jq`` read
    (Python's ``json`` would otherwise write bare ``NaN``)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value


class RunDirError(RuntimeError):
    """The run directory is missing, already used by another run, or not resumable."""


class RunDir:
    """Paths and crash-safe writers of one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def metrics_file(self) -> Path:
        """``metrics.jsonl``."""
        return self.path / METRICS_FILE

    @property
    def samples_file(self) -> Path:
        """``samples.jsonl``."""
        return self.path / SAMPLES_FILE

    @property
    def buffer_dir(self) -> Path:
        """``buffer/`` (parquet shards)."""
        return self.path / BUFFER_DIR

    @property
    def weights_dir(self) -> Path:
        """``weights/`` (published policy versions)."""
        return self.path / WEIGHTS_DIR

    @property
    def checkpoints_dir(self) -> Path:
        """``checkpoints/``."""
        return self.path / CHECKPOINTS_DIR

    @property
    def rejected_dir(self) -> Path:
        """``rejected/`` (batches that could not be scored)."""
        return self.path / REJECTED_DIR

    @property
    def logs_dir(self) -> Path:
        """``logs/`` (one log file per Ray actor)."""
        return self.path / LOGS_DIR

    def check_new(self) -> None:
        """Check that a new run can start here (before anything is created).

        Raises:
            RunDirError: the directory already holds a run (use ``--resume``), or exists and is
                not a directory.
        """
        if (self.path / CONFIG_FILE).exists() or self.metrics_file.exists():
            raise RunDirError(
                f"{self.path} already holds a run; pass --resume {self.path} to continue it, "
                "or choose another online.run_dir"
            )
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"online.run_dir: {self.path} exists and is not a directory")

    def create(self, config_yaml: str) -> None:
        """Start a new run: create the directory and write ``config.yaml``.

        Raises:
            RunDirError: see :meth:`check_new`.
            OSError: the directory cannot be created or written.
        """
        self.check_new()
        self._created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / CONFIG_FILE, config_yaml)

    def remove_if_unstarted(self) -> bool:
        """Remove the directory if :meth:`create` made it in this process and nothing of the
        run is in it yet: no metrics, no persisted sample, no rejected batch, no checkpoint
        (only ``config.yaml`` and published weights, which are rebuilt). A failed start then
        leaves no directory that a new run would refuse to reuse.

        Returns:
            Whether it was removed.
        """
        if not getattr(self, "_created", False):
            return False
        kept = (
            self.metrics_file,
            self.checkpoints_dir / LATEST_FILE,
        )
        if any(p.exists() for p in kept) or any(
            any(d.glob("*")) for d in (self.buffer_dir, self.rejected_dir) if d.is_dir()
        ):
            return False
        shutil.rmtree(self.path, ignore_errors=True)
        return not self.path.exists()

    # -- jsonl logs ------------------------------------------------------------------------------

    @staticmethod
    def _append_lines(path: Path, records: Iterable[dict[str, Any]]) -> None:
        text = "".join(json.dumps(finite_or_none(r), allow_nan=False) + "\n" for r in records)
        if not text:
            return
        data = text.encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, size)  # no torn line left behind (e.g. the disk is full)
                raise
        finally:
            os.close(fd)

    @staticmethod
    def _read_lines(path: Path) -> list[dict[str, Any]]:
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn last line from a crash mid-append
        return out

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one iteration's metrics record (durable when this returns)."""
        self._append_lines(self.metrics_file, [record])

    def read_metrics(self) -> list[dict[str, Any]]:
        """All complete metrics records, in order."""
        return self._read_lines(self.metrics_file)

    def write_warm_start(self, record: dict[str, Any]) -> None:
        """Write the warm start's record (``warm_start.json``, atomically; non-finite numbers
        as null)."""
        atomic_write_json(self.path / WARM_START_FILE, finite_or_none(record))

    def read_warm_start(self) -> dict[str, Any] | None:
        """The warm start's record, or ``None`` when the run had none (or it is unreadable)."""
        try:
            record = json.loads((self.path / WARM_START_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return record if isinstance(record, dict) else None

    def append_samples(self, records: Iterable[dict[str, Any]]) -> None:
        """Append sample records (prompt, completion, target, reward, version, iteration)."""
        self._append_lines(self.samples_file, records)

    def truncate_logs(self, last_iteration: int) -> None:
        """Drop metrics and sample records of iterations after ``last_iteration`` (resume)."""
        for path in (self.metrics_file, self.samples_file):
            if path.exists():
                kept = [r for r in self._read_lines(path) if r["iteration"] <= last_iteration]
                atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))

    # -- rejected batches ------------------------------------------------------------------------

    def write_rejected(self, iteration: int, reason: str, record: dict[str, Any]) -> Path:
        """Keep a batch that could not be scored: ``rejected/iter-NNNNNN-REASON[-k].json``
        holding ``iteration``, ``reason``, ``time`` and ``record`` (message, samples, ...).

        Returns:
            The file written (atomically).

        Raises:
            OSError: the directory cannot be written (nothing partial is left).
        """
        stem = f"iter-{iteration:06d}-{reason}"
        path = self.rejected_dir / f"{stem}.json"
        k = 1
        while path.exists():
            k += 1
            path = self.rejected_dir / f"{stem}-{k}.json"
        atomic_write_json(
            path,
            finite_or_none(
                {"iteration": iteration, "reason": reason, "time": time.time(), **record}
            ),
        )
        return path

    def read_rejected(self) -> list[dict[str, Any]]:
        """Every rejected batch, oldest first (unreadable files are skipped)."""
        out = []
        for path in sorted(self.rejected_dir.glob("iter-*.json"), key=lambda p: p.stat().st_mtime):
            try:
                out.append({"file": path.name, **json.loads(path.read_text())})
            except (OSError, json.JSONDecodeError):
                continue
        return out

    # -- checkpoints -----------------------------------------------------------------------------

    def checkpoint_path(self, iteration: int) -> Path:
        """Directory of the checkpoint taken after ``iteration``."""
        return self.checkpoints_dir / f"iter-{iteration:06d}"

    def mark_latest(self, path: Path) -> None:
        """Point ``checkpoints/latest.json`` at a complete checkpoint directory."""
        atomic_write_json(self.checkpoints_dir / LATEST_FILE, {"path": path.name})

    def latest_checkpoint(self) -> Path:
        """The newest complete checkpoint.

        Raises:
            RunDirError: the run has no checkpoint yet.
        """
        marker = self.checkpoints_dir / LATEST_FILE
        if not marker.exists():
            raise RunDirError(f"{self.path} has no checkpoint to resume from")
        return self.checkpoints_dir / json.loads(marker.read_text())["path"]

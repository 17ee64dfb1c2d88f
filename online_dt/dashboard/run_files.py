"""Path-safe reading of a run directory's files, shared by every part of the dashboard's reader.

Every read goes through :meth:`RunFiles.file`, which resolves the path and refuses anything
that is not a regular file (or directory) *inside* the run directory, so a symlink in the run
directory that points elsewhere is treated as absent. Nothing here takes a lock or writes a
file: the learner and the controller never wait for the dashboard. ``metrics.jsonl`` and
``samples.jsonl`` are followed incrementally (:class:`~online_dt.dashboard.tail.JsonlTail`).

One :class:`RunFiles` is held by each part of :class:`~online_dt.dashboard.reader.RunReader`
(:class:`~online_dt.dashboard.buffer_view.BufferView`,
:class:`~online_dt.dashboard.eval_view.EvalView` and the reader itself), so the logs are
followed once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from online_dt.dashboard.fronts import integer
from online_dt.dashboard.tail import JsonlTail
from online_dt.launch.rundir import METRICS_FILE, SAMPLES_FILE
from online_dt.launch.rundir import finite_or_none as finite

MAX_SAMPLES_KEPT = 10_000
"""Most recent ``samples.jsonl`` records held in memory (the API's ``limit`` maximum)."""

MAX_JSON_FILE_BYTES = 8 * 1024 * 1024
"""Larger config, evaluation or rejected-batch files are not parsed (reported as too large)."""


class RunFiles:
    """The run directory's files, read safely: path checks, JSON files and the two logs.

    Args:
        run_dir: the run directory (it may not exist yet, or be incomplete).
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.root = Path(run_dir).resolve()
        self._metrics = JsonlTail(self.root / METRICS_FILE)
        self._samples = JsonlTail(self.root / SAMPLES_FILE, keep=MAX_SAMPLES_KEPT)

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

    def json_file(self, relative: str) -> tuple[Any, str | None]:
        """The parsed JSON file ``relative`` (non-finite floats as ``None``) and the error
        reading it: ``(None, None)`` when it is absent or refused (:meth:`file`), ``(None,
        message)`` when it is larger than :data:`MAX_JSON_FILE_BYTES` or cannot be read or
        parsed."""
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

    def metrics_log(self) -> tuple[list[dict[str, Any]], int]:
        """Every complete record of ``metrics.jsonl``, in file order (none filtered out, unlike
        :meth:`metrics`), and the file's generation."""
        return self._metrics.read(self.file(METRICS_FILE))

    def samples(self, limit: int) -> dict[str, Any]:
        """The newest ``limit`` records of ``samples.jsonl``, newest first (prompt, completion,
        target, achieved reward, policy version, iteration)."""
        records, generation = self._samples.read(self.file(SAMPLES_FILE))
        newest = records[-limit:][::-1]
        return {"records": newest, "total": len(records), "generation": generation}

"""The replay buffer's persisted samples as the dashboard reads them, while the run writes them.

The buffer's parquet shards are listed, planned and read with the replay package's shard
functions (:mod:`online_dt.replay.shards`; three columns only), each shard cached by (name,
size, mtime); a read that meets a shard being replaced by the writer is retried, and a gap or
an unreadable shard is reported with what comes before it. :class:`BufferView` gives the
rewards, the reward vectors (several objectives) and the histogram of the buffer, reading through
a :class:`~online_dt.dashboard.run_files.RunFiles`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from online_dt.dashboard.fronts import stack_vectors, vector_rows
from online_dt.dashboard.run_files import RunFiles
from online_dt.launch.rundir import BUFFER_DIR
from online_dt.launch.rundir import finite_or_none as finite
from online_dt.replay.schema import BufferCorruptError
from online_dt.replay.shards import list_shards, plan_coverage, read_shard, read_while_writing

_BUFFER_COLUMNS = ["sample_id", "achieved_reward", "iteration", "achieved_rewards"]
_REWRITE_PAUSE_S = 0.05  # between attempts to read shards a writer is replacing


class BufferColumns(NamedTuple):
    """The persisted samples' columns the dashboard uses (see :meth:`BufferView.columns`,
    :meth:`BufferView.buffer_rewards` and :meth:`BufferView.buffer_vectors`)."""

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


def _empty_buffer(error: str | None = None) -> BufferColumns:
    return BufferColumns(np.zeros(0), np.zeros(0, dtype=np.int64), None, error, ())


class BufferView:
    """The persisted replay-buffer samples of one run directory (a part of
    :class:`~online_dt.dashboard.reader.RunReader`).

    Args:
        files: the run directory's files, read through their path checks.
    """

    def __init__(self, files: RunFiles) -> None:
        self.files = files
        self._shard_cache: dict[
            str, tuple[tuple[int, int], np.ndarray, np.ndarray, np.ndarray | None]
        ] = {}
        self._buffer_lock = threading.Lock()

    def buffer_rewards(self) -> tuple[np.ndarray, np.ndarray, str | None]:
        """Achieved reward and iteration of every persisted sample, in id order, and an error
        message when the shards are incomplete or unreadable (then what was read is returned).
        With several objectives the reward is the first objective's (the vectors:
        :meth:`buffer_vectors`).
        """
        found = self.columns()
        return found.rewards, found.iterations, found.error

    def buffer_vectors(self) -> tuple[np.ndarray | None, np.ndarray, str | None]:
        """Achieved reward vectors (float64 ``[N, M]``, reward units, NaN where a sample has
        none) and iteration of every persisted sample, in id order, and an error message as
        :meth:`buffer_rewards`; the vectors are ``None`` when no sample has one (a run with a
        single reward)."""
        found = self.columns()
        return found.vectors, found.iterations, found.error

    def columns(self) -> BufferColumns:
        """The columns of every persisted sample, in id order (what the shards that can be read
        hold, and why the rest cannot); empty without a buffer directory."""
        folder = self.files.file(BUFFER_DIR, directory=True)
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

    def _read_buffer(self, folder: Path) -> BufferColumns:
        try:
            found = list_shards(folder)
        except BufferCorruptError as e:
            return _empty_buffer(str(e))
        # a shard resolving outside the run directory (a symlink pointing out) counts as absent
        coverage = plan_coverage(
            [s for s in found if self.files.file(f"{BUFFER_DIR}/{s.path.name}") is not None]
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
        return BufferColumns(
            np.concatenate(rewards),
            np.concatenate(iterations),
            stack_vectors(vectors, [len(r) for r in rewards]),
            error,
            tuple(state),
        )

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

"""The replay buffer's shard files: listing them, choosing which shard supplies each id, and
reading and writing them crash-safely.

Persistence layout (``root/``, normally the run directory's ``buffer/``)
    Shards named by :func:`~online_dt.replay.schema.shard_name` hold ``shard_size``
    consecutive ids; the last one may be shorter: it is the *open* shard. Each append rewrites
    the open shard with the new samples added, under its new name, and starts new shards as it
    fills, so that every sample is durable once the append returns. Every file is written to a
    temporary name (``.shard-...parquet.<random>.tmp``), fsynced, then renamed into place, then
    the directory is fsynced; only after that is the superseded open shard deleted. Hence:

    * a crash mid-write leaves at most a ``*.tmp`` file, which readers ignore and
      :meth:`~online_dt.replay.buffer.ReplayBuffer.load` deletes; no reader ever sees a
      half-written shard;
    * a crash between the rename and the delete leaves an old open shard whose ids are all in
      a newer shard: readers skip such *covered* shards (:func:`plan_coverage`) and ``load``
      deletes them;
    * an append interrupted by a crash may have persisted a prefix (in id order) of its
      samples; a later ``load`` holds them like any other persisted sample.

    The persisted ids always form the contiguous range ``0 .. last``; a gap (a deleted shard)
    makes readers raise :class:`~online_dt.replay.schema.BufferCorruptError` (or, for the
    dashboard, report it) rather than silently lose samples. One process writes a buffer folder
    at a time; any number may read it (:func:`read_while_writing` copes with a writer replacing
    the open shard while a reader lists and reads).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from online_dt.replay.schema import (
    FIELDS,
    OPTIONAL_FIELDS,
    SCHEMA,
    BufferCorruptError,
    parse_shard_name,
)

READ_RETRIES = 5
"""Attempts of :func:`read_while_writing` before the last error propagates."""

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """One shard file and the id range its name claims (``first .. last``, inclusive)."""

    path: Path
    first: int
    last: int


@dataclass(frozen=True)
class Coverage:
    """Which shard supplies each persisted id (see :func:`plan_coverage`).

    Attributes:
        used: ``(shard, first id taken from it)`` in id order; together they hold the ids
            ``0 .. last_id`` once each.
        covered: shards whose ids all live in a shard listed before them (left by an
            interrupted rewrite): skipped by readers, deleted by the writer.
        last_id: the last id of ``used`` (-1 when there is none).
        missing: ``(lo, hi)`` when no shard holds ids ``lo .. hi`` (a gap; ``used`` stops
            before it and later shards are not considered), else ``None``.
    """

    used: list[tuple[Shard, int]] = field(default_factory=list)
    covered: list[Shard] = field(default_factory=list)
    last_id: int = -1
    missing: tuple[int, int] | None = None

    def require_complete(self, root: Path) -> Coverage:
        """This coverage, when it has no gap.

        Raises:
            BufferCorruptError: ids are missing between shards (the message names the ids).
        """
        if self.missing is not None:
            lo, hi = self.missing
            raise BufferCorruptError(
                f"samples {lo}..{hi} are missing from {root}: no shard holds them"
            )
        return self


def list_shards(root: Path) -> list[Shard]:
    """Shard files under ``root``, sorted by (first id, -last id); other names are ignored.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        BufferCorruptError: a shard's name has an empty id range.
    """
    shards = []
    for p in root.iterdir():
        ids = parse_shard_name(p.name)
        if ids is not None:
            first, last = ids
            if last < first:
                raise BufferCorruptError(f"shard {p} has an empty id range")
            shards.append(Shard(p, first, last))
    shards.sort(key=lambda s: (s.first, -s.last))
    return shards


def plan_coverage(shards: list[Shard]) -> Coverage:
    """Choose which shard supplies each id, from shards sorted as :func:`list_shards` returns.

    A shard whose ids all precede the end of those before it is covered; otherwise it supplies
    its ids after that end. The first gap stops the plan (:attr:`Coverage.missing`).
    """
    used: list[tuple[Shard, int]] = []
    covered: list[Shard] = []
    last = -1
    for s in shards:
        if s.last <= last:
            covered.append(s)
            continue
        if s.first > last + 1:
            return Coverage(used, covered, last, (last + 1, s.first - 1))
        used.append((s, last + 1))
        last = s.last
    return Coverage(used, covered, last)


def read_shard(shard: Shard, columns: list[str] | None = None) -> pa.Table:
    """Read and check one shard (all its rows, ``columns`` or every field of the schema).

    Raises:
        FileNotFoundError: the file vanished (a concurrent writer replaced it).
        BufferCorruptError: unreadable, wrong columns, or ids that do not match the name.
    """
    cols = list(FIELDS) if columns is None else columns
    try:
        present = set(pq.read_schema(shard.path).names)
        table = pq.read_table(shard.path, columns=[c for c in cols if c in present])
        for c in cols:  # a format 1 shard has no optional columns: they read as null
            if c not in present and c in OPTIONAL_FIELDS:
                field = SCHEMA.field(c)
                table = table.append_column(field, pa.nulls(len(table), field.type))
        table = table.select(cols).cast(pa.schema([SCHEMA.field(c) for c in cols]))
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError, KeyError) as e:
        raise BufferCorruptError(f"shard {shard.path} cannot be read: {e}") from e
    ids = pq.read_table(shard.path, columns=["sample_id"]) if "sample_id" not in cols else table
    id_arr = ids.column("sample_id").to_numpy()
    expected = np.arange(shard.first, shard.last + 1, dtype=np.int64)
    if len(id_arr) != len(expected) or not np.array_equal(id_arr, expected):
        raise BufferCorruptError(
            f"shard {shard.path} does not hold exactly ids {shard.first}..{shard.last}"
        )
    return table


def read_while_writing(
    read: Callable[[], T],
    *,
    retry_on: tuple[type[BaseException], ...] = (FileNotFoundError, BufferCorruptError),
    pause_s: float = 0.0,
) -> T:
    """``read()``, called again (up to :data:`READ_RETRIES` attempts in all, ``pause_s``
    seconds apart) while it raises one of ``retry_on``: a writer may replace the open shard
    between a reader's listing and its reading.

    Raises:
        Whatever the last attempt raised.
    """
    for _ in range(READ_RETRIES - 1):
        try:
            return read()
        except retry_on:
            if pause_s:
                time.sleep(pause_s)
    return read()


def read_persisted(root: str | Path, upto_sample_id: int | None = None) -> pa.Table:
    """Every persisted sample under ``root`` (with id ``<= upto_sample_id`` if given).

    Each id appears once, rows sorted by ``sample_id``, columns :data:`FIELDS`. Temporary files
    and covered shards are skipped, never deleted, so this is safe while a writer is active.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        BufferCorruptError: see :class:`BufferCorruptError`.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"replay buffer folder not found: {root}")

    def read() -> list[pa.Table]:
        parts = []
        for shard, take_from in plan_coverage(list_shards(root)).require_complete(root).used:
            if upto_sample_id is not None and take_from > upto_sample_id:
                break
            t = read_shard(shard)
            stop = shard.last if upto_sample_id is None else min(shard.last, upto_sample_id)
            parts.append(t.slice(take_from - shard.first, stop - take_from + 1))
        return parts

    parts = read_while_writing(read)
    table = pa.concat_tables(parts) if parts else SCHEMA.empty_table()
    return table.replace_schema_metadata(None)


def _publish(tmp: Path, path: Path) -> None:
    """Rename a fully written temporary file into place (a seam for crash tests)."""
    os.replace(tmp, path)


def remove_file(path: Path) -> None:
    """Delete a file if it exists (every deletion of a buffer file goes through here: a seam
    for crash tests)."""
    path.unlink(missing_ok=True)


def write_parquet_atomic(path: Path, table: pa.Table) -> None:
    """Write ``table`` to ``path`` via a fsynced temporary file and a rename (the directory is
    not fsynced: the caller does that once for all the files it wrote).

    Raises:
        OSError: the write or the rename failed; the temporary file is removed.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())
        _publish(Path(tmp), path)
    except BaseException:
        remove_file(Path(tmp))
        raise


def remove_all(root: Path) -> int:
    """Delete every shard and temporary file under ``root`` (writer only): the buffer of a run
    whose learner was lost before its first checkpoint, which a fresh learner starts over
    without. Returns the number of shards deleted (0 when ``root`` does not exist).

    Raises:
        OSError: a file could not be deleted (the ones before it are gone).
    """
    if not root.exists():
        return 0
    found = list_shards(root)
    for shard in found:
        remove_file(shard.path)
    clean_tmp(root)
    return len(found)


def clean_tmp(root: Path) -> None:
    """Delete the temporary files interrupted writes left under ``root`` (writer only)."""
    for p in root.glob(".shard-*.tmp"):
        remove_file(p)

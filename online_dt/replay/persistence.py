"""The replay buffer's operations on its shards: writing appends, reading back, truncating.

:func:`persist_appended` writes the samples of an append
(:meth:`~online_dt.replay.buffer.ReplayBuffer.append`); :func:`rebuild_from_shards` computes
what a buffer holds in memory from the shards on disk
(:meth:`~online_dt.replay.buffer.ReplayBuffer.load`, and after a truncation);
:func:`truncate_shards` deletes the persisted samples after an id
(:meth:`~online_dt.replay.buffer.ReplayBuffer.drop_after`). The shard layout and its crash
guarantees: :mod:`online_dt.replay.shards`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from online_dt.config import ReplayBufferConfig
from online_dt.replay import shards
from online_dt.replay.eviction import Evictor
from online_dt.replay.schema import sample_from_row, samples_table, shard_name
from online_dt.samples import Sample
from online_dt.util.atomic import fsync_dir


def persist_appended(
    root: Path,
    size: int,
    open_shard: tuple[list[Sample], Path | None],
    new: list[Sample],
    on_stuck: Callable[[str], None],
) -> tuple[list[Sample], Path | None]:
    """Write the ``new`` samples of an append to shards under ``root``, durably: the open
    shard's samples and path (``open_shard``) followed by ``new``, cut into shards of ``size``
    (the open shard rewritten under its new name), then the superseded open shard deleted.

    Returns:
        The open shard afterwards: its samples and path, ``([], None)`` when the last shard
        written is full.

    Raises:
        BaseException: whatever the writing raised, after removing the shards this call wrote;
            when they cannot be removed, ``on_stuck`` is called first with the reason further
            appends must be refused.
    """
    open_rows, open_path = open_shard
    pending = open_rows + new
    chunks = [pending[i : i + size] for i in range(0, len(pending), size)]
    written: list[Path] = []
    try:
        for chunk in chunks:
            path = root / shard_name(chunk[0].sample_id, chunk[-1].sample_id)
            shards.write_parquet_atomic(path, samples_table(chunk))
            written.append(path)
        fsync_dir(root)
    except BaseException:
        try:
            for path in written:
                shards.remove_file(path)
            fsync_dir(root)
        except OSError as e:
            on_stuck(
                f"an append failed and its shards could not be removed ({e}); reload the"
                " buffer with ReplayBuffer.load"
            )
        raise
    # The new shards are durable; the superseded open shard is now covered by the first.
    if open_path is not None:
        with contextlib.suppress(OSError):  # if it stays, it is covered: readers skip it
            shards.remove_file(open_path)
    last_chunk = chunks[-1]
    if len(last_chunk) < size:
        return last_chunk, written[-1]
    return [], None


@dataclass
class RebuiltBuffer:
    """A buffer's in-memory state as its shards imply it (its sampling generator aside).

    Attributes:
        held: the held samples by id, in id order.
        evictor: the eviction state over every id up to ``next_id - 1``.
        next_id: the next id to assign.
        persisted_last: the last id on disk (-1: none).
        open_rows: the samples of the open shard (``[]`` when there is none to extend).
        open_path: the open shard's file, or ``None``.
        blocked: why ``append`` must refuse (later ids persisted), or ``None``.
    """

    held: dict[int, Sample]
    evictor: Evictor
    next_id: int
    persisted_last: int
    open_rows: list[Sample]
    open_path: Path | None
    blocked: str | None


def rebuild_from_shards(
    cfg: ReplayBufferConfig, root: Path, upto: int | None, reserved: int
) -> RebuiltBuffer:
    """The in-memory state implied by the shards under ``root``, with the history ending at
    ``upto`` (``None``: the last persisted id) and ``reserved`` places for the best samples.
    Deletes covered shards.

    Raises:
        BufferCorruptError: a shard is unreadable or ids are missing.
    """
    coverage = shards.plan_coverage(shards.list_shards(root))
    coverage.require_complete(root)
    used, covered, last = coverage.used, coverage.covered, coverage.last_id
    for s in covered:
        shards.remove_file(s.path)
    stop = last if upto is None else min(upto, last)
    rewards = None
    if reserved and stop >= 0:
        parts = []
        for shard, take_from in used:
            if take_from > stop:
                break
            r = shards.read_shard(shard, ["achieved_reward"]).column("achieved_reward").to_numpy()
            parts.append(r[take_from - shard.first : min(shard.last, stop) - shard.first + 1])
        rewards = np.concatenate(parts)
    evictor = Evictor.rebuild(cfg.capacity, reserved, stop, rewards)
    held_ids = evictor.held_ids()

    held: dict[int, Sample] = {}
    open_rows: list[Sample] = []
    open_path: Path | None = None
    last_used = used[-1][0] if used else None
    open_shard = (
        last_used
        if last_used is not None
        and stop == last
        and last_used.last - last_used.first + 1 < cfg.shard_size
        else None
    )
    for shard, take_from in used:
        if take_from > stop:
            break
        lo, hi = take_from, min(shard.last, stop)
        a, b = np.searchsorted(held_ids, [lo, hi + 1])
        if a == b and shard is not open_shard:
            continue
        table = shards.read_shard(shard)
        if shard is open_shard:
            open_rows = [sample_from_row(row) for row in table.to_pylist()]
            open_path = shard.path
            by_id = {s.sample_id: s for s in open_rows}
            for i in held_ids[a:b].tolist():
                held[i] = by_id[i]
        else:
            wanted = held_ids[a:b] - shard.first
            for row in table.take(pa.array(wanted)).to_pylist():
                held[row["sample_id"]] = sample_from_row(row)

    return RebuiltBuffer(
        held=held,
        evictor=evictor,
        next_id=stop + 1,
        persisted_last=last,
        open_rows=open_rows,
        open_path=open_path,
        blocked=(
            f"this buffer was loaded with upto_sample_id={upto} but samples up to id {last} are"
            f" persisted; call drop_after({upto}) to discard them, or load without"
            " upto_sample_id to keep them"
            if stop < last
            else None
        ),
    )


def truncate_shards(root: Path, sample_id: int) -> int:
    """Delete every persisted sample with id ``> sample_id`` from the shards under ``root``,
    crash-safely (the steps: :meth:`~online_dt.replay.buffer.ReplayBuffer.drop_after`).

    Returns:
        How many persisted samples were deleted.

    Raises:
        BufferCorruptError: the shards cannot be read.
    """
    coverage = shards.plan_coverage(shards.list_shards(root))
    coverage.require_complete(root)
    used, covered, last = coverage.used, coverage.covered, coverage.last_id
    for s in covered:
        shards.remove_file(s.path)
    removed = max(0, last - sample_id)
    beyond = [s for s, _ in used if s.first > sample_id]
    for s in sorted(beyond, key=lambda s: -s.first):
        shards.remove_file(s.path)
    fsync_dir(root)
    for s, _ in used:
        if s.first <= sample_id < s.last:
            kept = shards.read_shard(s).slice(0, sample_id - s.first + 1)
            shards.write_parquet_atomic(root / shard_name(s.first, sample_id), kept)
            fsync_dir(root)
            shards.remove_file(s.path)
    return removed

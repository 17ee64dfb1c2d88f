"""Replay buffer of scored samples, hindsight-relabeled with the reward they achieved.

Each online iteration appends its scored completions; the learner draws training batches from
the samples the buffer *holds*. Two sets matter and they differ on purpose:

* **Persisted** samples: every sample ever appended, in parquet shards under ``root`` (the run
  directory's ``buffer/`` folder). They are the source of truth for export and resume, and
  eviction never touches them.
* **Held** samples: the at most ``capacity`` samples kept in memory for training.

Ids
    ``sample_id`` is assigned by the buffer: 0, 1, 2, ... in insertion order, dense and
    monotonically increasing over the whole run (a resumed run continues the numbering). A
    sample's age, used by recency sampling, is counted in insertions: ``last_id - sample_id``.

Eviction (what is held)
    With ``C = capacity`` and ``K = floor(keep_top_fraction * C)`` reserved places, the held set
    is always *the K best samples ever appended* (highest ``achieved_reward``; ties go to the
    newer sample) *plus the C - K most recent of all other samples*. Operationally: after each
    insertion beyond capacity, the oldest sample that is not among the K best held ones is
    evicted (FIFO that skips the reserved best). The rule is applied sample by sample, so the
    held set does not depend on how the samples were split into ``append`` calls, and
    :meth:`ReplayBuffer.load` rebuilds exactly the set an uninterrupted buffer would hold.

Sampling
    See :meth:`ReplayBuffer.sample_batch`: uniform or recency-weighted, without replacement
    within a batch (with replacement only while fewer samples are held than the batch size),
    deterministic given the seed; the generator state round-trips through
    :meth:`~ReplayBuffer.state_dict` / :meth:`~ReplayBuffer.load_state_dict` as plain JSON.

Persistence layout (``root/``)
    ``shard-<first id>-<last id>.parquet``, ids zero-padded to 12 digits, so names sort in id
    order (``shard-000000000000-000000001023.parquet``). One row per sample, columns in
    :data:`SCHEMA` (the fields of :class:`Sample`). Shards hold ``shard_size`` consecutive ids;
    the last one may be shorter: it is the *open* shard. Each ``append`` rewrites the open shard
    with the new samples added, under its new name, and starts new shards as it fills, so that
    every sample is durable once ``append`` returns. Every file is written to a temporary name
    (``.shard-...parquet.<random>.tmp``), fsynced, then renamed into place, then the directory
    is fsynced; only after that is the superseded open shard deleted. Hence:

    * a crash mid-write leaves at most a ``*.tmp`` file, which readers ignore and
      :meth:`ReplayBuffer.load` deletes; no reader ever sees a half-written shard;
    * a crash between the rename and the delete leaves an old open shard whose ids are all in
      a newer shard: readers skip such covered shards and ``load`` deletes them;
    * an ``append`` interrupted by a crash may have persisted a prefix (in id order) of its
      samples; a later ``load`` holds them like any other persisted sample. An ``append`` that
      raises in a live process removes what it wrote and changes nothing.

    The persisted ids always form the contiguous range ``0 .. last``; a gap (a deleted shard)
    makes readers raise :class:`BufferCorruptError` rather than silently lose samples. One
    process writes a buffer folder at a time; any number may read it (:func:`export_dataset`
    copes with a writer replacing the open shard while it reads).

Resume after a crash (``last`` = the last persisted id, ``X`` = the last id a checkpoint
trained with, e.g. ``state_dict()["last_sample_id"]`` saved with the checkpoint)
    * **keep** (no persisted sample lost): ``ReplayBuffer.load(cfg, root, seed)`` holds every
      persisted sample exactly once, including the ids ``X+1 .. last`` that were appended after
      the checkpoint; they were scored by the same reward model and are valid training data.
      The run continues with ids from ``last + 1``. Do not re-append those samples.
    * **discard** (bit-exact replay of the interrupted iteration):
      ``buf = ReplayBuffer.load(cfg, root, seed, upto_sample_id=X); buf.drop_after(X)``
      atomically removes ids ``> X`` from disk, so disk, memory and the next ids (``X + 1``)
      are exactly as at the checkpoint.
    * ``ReplayBuffer.load(..., upto_sample_id=X)`` alone gives the buffer as it was at the
      checkpoint (held set, ``total_appended``) without touching disk; since ids ``> X`` still
      exist on disk, ``append`` refuses until :meth:`ReplayBuffer.drop_after` is called, so an
      id can never be assigned twice.
"""

from __future__ import annotations

import contextlib
import heapq
import math
import numbers
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from online_dt.config import ReplayBufferConfig
from online_dt.samples import Sample
from online_dt.util.atomic import atomic_write_dir, fsync_dir

if TYPE_CHECKING:
    import datasets


FIELDS: tuple[str, ...] = (
    "sample_id",
    "prompt",
    "completion",
    "achieved_reward",
    "target_reward",
    "policy_version",
    "iteration",
    "created_at",
    "scored_at",
    "completion_tokens",
)
"""Column names of the shards and of the exported dataset, in this order: every
:class:`~online_dt.samples.Sample` field, ``sample_id`` first."""

_NEW_FIELDS: tuple[str, ...] = FIELDS[1:]
_STR_FIELDS = frozenset({"prompt", "completion"})
_INT_FIELDS = frozenset({"policy_version", "iteration", "completion_tokens"})
_FLOAT_FIELDS = frozenset({"achieved_reward", "target_reward", "created_at", "scored_at"})

FORMAT_VERSION = 1
"""Version of the shard format, stored in each shard's schema metadata."""

SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.int64(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("completion", pa.string(), nullable=False),
        pa.field("achieved_reward", pa.float64(), nullable=False),
        pa.field("target_reward", pa.float64(), nullable=False),
        pa.field("policy_version", pa.int64(), nullable=False),
        pa.field("iteration", pa.int64(), nullable=False),
        pa.field("created_at", pa.float64(), nullable=False),
        pa.field("scored_at", pa.float64(), nullable=False),
        pa.field("completion_tokens", pa.int64(), nullable=False),
    ],
    metadata={b"online_dt.replay.buffer.format": str(FORMAT_VERSION).encode()},
)
"""Arrow schema of a shard: one column per :class:`Sample` field."""

_SHARD_RE = re.compile(r"^shard-(\d{12})-(\d{12})\.parquet$")
_READ_RETRIES = 5


class BufferCorruptError(RuntimeError):
    """The buffer folder cannot be trusted: a shard is unreadable, its rows do not match its
    name, or ids are missing between shards. The message names the file or the id range."""


def shard_name(first_id: int, last_id: int) -> str:
    """File name of the shard holding ids ``first_id .. last_id`` (inclusive)."""
    return f"shard-{first_id:012d}-{last_id:012d}.parquet"


# ---------------------------------------------------------------------------------------------
# input validation
# ---------------------------------------------------------------------------------------------


def _short(text: str, n: int = 40) -> str:
    return repr(text if len(text) <= n else text[: n - 1] + "…")


def _coerce(items: Sequence[Mapping[str, Any] | Sample]) -> list[dict[str, Any]]:
    """Check and normalise new samples; raise before anything is appended."""
    if isinstance(items, (str, bytes, Mapping, Sample)) or not isinstance(items, Sequence):
        raise TypeError(f"append expects a sequence of Sample or dict, got {type(items).__name__}")
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    non_finite: dict[str, list[str]] = {}
    for i, item in enumerate(items):
        if isinstance(item, Sample):
            if item.sample_id is not None:
                raise TypeError(
                    f"sample #{i} is a Sample with an id; ids are assigned by the buffer"
                )
            raw = {f: getattr(item, f) for f in _NEW_FIELDS}
        elif isinstance(item, Mapping):
            missing = [f for f in _NEW_FIELDS if f not in item]
            extra = sorted(str(k) for k in item if k not in _NEW_FIELDS)
            if missing or extra:
                what = []
                if missing:
                    what.append(f"missing {missing}")
                if extra:
                    hint = " (ids are assigned by the buffer)" if "sample_id" in extra else ""
                    what.append(f"unknown {extra}{hint}")
                problems.append(f"#{i}: " + ", ".join(what))
                continue
            raw = dict(item)
        else:
            raise TypeError(f"sample #{i} must be a Sample or a dict, got {type(item).__name__}")
        row: dict[str, Any] = {}
        for f in _NEW_FIELDS:
            v = raw[f]
            if f in _STR_FIELDS:
                ok = isinstance(v, str)
            elif f in _INT_FIELDS:
                ok = isinstance(v, numbers.Integral) and not isinstance(v, bool)
                v = int(v) if ok else v
            else:
                ok = isinstance(v, numbers.Real) and not isinstance(v, bool)
                v = float(v) if ok else v
            if v is None:
                problems.append(f"#{i}: {f} is not set (None)")
            elif not ok:
                problems.append(f"#{i}: {f} has type {type(v).__name__}")
            elif f in _FLOAT_FIELDS and not math.isfinite(v):
                prompt = raw.get("prompt")
                where = f" (prompt {_short(prompt)})" if isinstance(prompt, str) else ""
                non_finite.setdefault(f, []).append(f"#{i} {v}{where}")
            elif f == "completion_tokens" and v < 0:
                problems.append(f"#{i}: completion_tokens is negative ({v})")
            row[f] = v
        rows.append(row)
    if problems:
        shown = "; ".join(problems[:10]) + ("; ..." if len(problems) > 10 else "")
        raise TypeError(f"invalid samples (nothing was appended): {shown}")
    if non_finite:
        parts = []
        # achieved_reward first: it is the label, the usual culprit is the reward model.
        for f in sorted(non_finite, key=lambda f: f != "achieved_reward"):
            bad = non_finite[f]
            shown = ", ".join(bad[:10]) + (", ..." if len(bad) > 10 else "")
            parts.append(f"non-finite {f} in {len(bad)} of {len(items)} samples: {shown}")
        raise ValueError("; ".join(parts) + " (nothing was appended)")
    return rows


# ---------------------------------------------------------------------------------------------
# shard files
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Shard:
    path: Path
    first: int
    last: int


def _list_shards(root: Path) -> list[_Shard]:
    """Shard files under ``root``, sorted by (first id, -last id); other names are ignored."""
    shards = []
    for p in root.iterdir():
        m = _SHARD_RE.match(p.name)
        if m:
            first, last = int(m.group(1)), int(m.group(2))
            if last < first:
                raise BufferCorruptError(f"shard {p} has an empty id range")
            shards.append(_Shard(p, first, last))
    shards.sort(key=lambda s: (s.first, -s.last))
    return shards


def _plan(shards: list[_Shard], root: Path) -> tuple[list[tuple[_Shard, int]], list[_Shard], int]:
    """Choose which shard supplies each id.

    Returns ``(used, covered, last_id)``: ``used`` pairs a shard with the first id to take from
    it; ``covered`` lists shards whose ids all live in a shard listed before them (left by an
    interrupted rewrite); ``last_id`` is the last persisted id (-1 when there is none).

    Raises:
        BufferCorruptError: ids are missing between shards.
    """
    used: list[tuple[_Shard, int]] = []
    covered: list[_Shard] = []
    last = -1
    for s in shards:
        if s.last <= last:
            covered.append(s)
            continue
        if s.first > last + 1:
            raise BufferCorruptError(
                f"samples {last + 1}..{s.first - 1} are missing from {root}: no shard holds them"
            )
        used.append((s, last + 1))
        last = s.last
    return used, covered, last


def _read_shard(shard: _Shard, columns: list[str] | None = None) -> pa.Table:
    """Read and check one shard (all its rows, ``columns`` or every field).

    Raises:
        FileNotFoundError: the file vanished (a concurrent writer replaced it).
        BufferCorruptError: unreadable, wrong columns, or ids that do not match the name.
    """
    cols = list(FIELDS) if columns is None else columns
    try:
        table = pq.read_table(shard.path, columns=cols)
        table = table.cast(pa.schema([SCHEMA.field(c) for c in cols]))
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


def _publish(tmp: Path, path: Path) -> None:
    """Rename a fully written temporary file into place (a seam for crash tests)."""
    os.replace(tmp, path)


def _remove(path: Path) -> None:
    """Delete a file if it exists (a seam for crash tests)."""
    path.unlink(missing_ok=True)


def _write_parquet_atomic(path: Path, table: pa.Table) -> None:
    """Write ``table`` to ``path`` via a fsynced temporary file and a rename.

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
        _remove(Path(tmp))
        raise


def _to_table(samples: Sequence[Sample]) -> pa.Table:
    return pa.table({f: [getattr(s, f) for s in samples] for f in FIELDS}, schema=SCHEMA)


def _clean_tmp(root: Path) -> None:
    for p in root.glob(".shard-*.tmp"):
        _remove(p)


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
    for attempt in range(_READ_RETRIES):
        try:
            used, _, _ = _plan(_list_shards(root), root)
            parts = []
            for shard, take_from in used:
                if upto_sample_id is not None and take_from > upto_sample_id:
                    break
                t = _read_shard(shard)
                stop = shard.last if upto_sample_id is None else min(shard.last, upto_sample_id)
                parts.append(t.slice(take_from - shard.first, stop - take_from + 1))
            break
        except (FileNotFoundError, BufferCorruptError):
            # A writer may have replaced the open shard between listing and reading.
            if attempt == _READ_RETRIES - 1:
                raise
    table = pa.concat_tables(parts) if parts else SCHEMA.empty_table()
    return table.replace_schema_metadata(None)


# ---------------------------------------------------------------------------------------------
# eviction
# ---------------------------------------------------------------------------------------------


class _Evictor:
    """Held-set bookkeeping: the ``reserved`` best (reward, id) in a min-heap, the others in a
    min-heap of ids (oldest first). Invariant: every 'rest' key is below every 'top' key."""

    def __init__(self, capacity: int, reserved: int) -> None:
        self.capacity = capacity
        self.reserved = reserved
        self.top: list[tuple[float, int]] = []
        self.rest: list[int] = []

    def insert(self, sample_id: int, reward: float) -> int | None:
        """Add a sample (ids must increase); return the id evicted, if any."""
        if self.reserved:
            item = (reward, sample_id)
            if len(self.top) < self.reserved:
                heapq.heappush(self.top, item)
            elif item > self.top[0]:
                heapq.heappush(self.rest, heapq.heapreplace(self.top, item)[1])
            else:
                heapq.heappush(self.rest, sample_id)
        else:
            heapq.heappush(self.rest, sample_id)
        if len(self.top) + len(self.rest) > self.capacity:
            return heapq.heappop(self.rest)
        return None

    @classmethod
    def rebuild(
        cls, capacity: int, reserved: int, last_id: int, rewards: np.ndarray | None
    ) -> _Evictor:
        """The state after inserting ids ``0 .. last_id`` one by one (closed form).

        The K best ever are never evicted (fewer than K samples beat them), and among the
        others FIFO keeps the most recent ``capacity - K``. ``rewards[i]`` is id i's reward;
        it may be None when ``reserved`` is 0.
        """
        ev = cls(capacity, reserved)
        n = last_id + 1
        if reserved and n > 0:
            assert rewards is not None and len(rewards) == n
            ids = np.arange(n, dtype=np.int64)
            order = np.lexsort((ids, rewards))  # ascending by (reward, id)
            top_ids = order[-reserved:]
            ev.top = [(float(rewards[i]), int(i)) for i in top_ids]
            heapq.heapify(ev.top)
            is_top = np.zeros(n, dtype=bool)
            is_top[top_ids] = True
            others = ids[~is_top]
            ev.rest = others[max(0, len(others) - (capacity - len(ev.top))) :].tolist()
        else:
            ev.rest = list(range(max(0, n - capacity), n))
        return ev

    def held_ids(self) -> np.ndarray:
        ids = np.array([i for _, i in self.top] + self.rest, dtype=np.int64)
        ids.sort()
        return ids


# ---------------------------------------------------------------------------------------------
# the buffer
# ---------------------------------------------------------------------------------------------


class ReplayBuffer:
    """Replay buffer of scored samples with capacity-bounded held set and parquet persistence.

    Args:
        cfg: capacity, reserved best fraction, sampling mode, recency half-life, shard size.
        root: folder for the shards (created if missing), normally ``<run_dir>/buffer``;
            ``None`` keeps the buffer in memory only (no persistence, no ``drop_after``).
        seed: seed of the batch-sampling generator.

    Not thread-safe; one writing process per ``root``.

    Raises:
        FileExistsError: ``root`` already holds shards (use :meth:`load` to continue a run).
    """

    def __init__(
        self, cfg: ReplayBufferConfig, root: str | Path | None = None, seed: int = 0
    ) -> None:
        self._setup(cfg, root, seed)
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
            if _list_shards(self.root):
                raise FileExistsError(
                    f"{self.root} already holds replay-buffer shards; use ReplayBuffer.load to"
                    " continue that run, or point a new run at an empty folder"
                )
            _clean_tmp(self.root)

    def _setup(self, cfg: ReplayBufferConfig, root: str | Path | None, seed: int) -> None:
        self.cfg = cfg
        self.root = Path(root) if root is not None else None
        self.seed = int(seed)
        self._rng = np.random.Generator(np.random.PCG64(self.seed))
        self._held: dict[int, Sample] = {}
        self._evictor = _Evictor(cfg.capacity, self.reserved_top)
        self._next_id = 0
        self._persisted_last = -1
        self._open: list[Sample] = []
        self._open_path: Path | None = None
        self._ids_cache: np.ndarray | None = None
        self._blocked: str | None = None

    # -- properties -------------------------------------------------------------------------

    @property
    def reserved_top(self) -> int:
        """Places reserved for the best samples: ``floor(keep_top_fraction * capacity)``."""
        return math.floor(self.cfg.keep_top_fraction * self.cfg.capacity + 1e-9)

    @property
    def total_appended(self) -> int:
        """Samples appended over the run so far (held or evicted) = the next id to assign."""
        return self._next_id

    @property
    def last_sample_id(self) -> int | None:
        """Id of the newest sample in the buffer's history, ``None`` when empty."""
        return self._next_id - 1 if self._next_id else None

    @property
    def persisted_last_id(self) -> int | None:
        """Last id on disk (``None`` when nothing is persisted or ``root`` is None). Larger than
        :attr:`last_sample_id` only for a buffer loaded with ``upto_sample_id``."""
        return self._persisted_last if self._persisted_last >= 0 else None

    def __len__(self) -> int:
        """Number of samples held for training (at most ``capacity``)."""
        return len(self._held)

    def held(self) -> list[Sample]:
        """The held samples, in id order."""
        return list(self._held.values())

    def rewards(self) -> np.ndarray:
        """``float64[len(self)]``: achieved rewards of the held samples in id order (reward
        units); input of the target schedule."""
        return np.fromiter(
            (s.achieved_reward for s in self._held.values()), dtype=np.float64, count=len(self)
        )

    # -- appending ----------------------------------------------------------------------------

    def append(self, samples: Sequence[Mapping[str, Any] | Sample]) -> list[Sample]:
        """Assign ids, persist, then hold the samples (evicting beyond capacity).

        Args:
            samples: :class:`Sample` objects or dicts with exactly their fields.

        Returns:
            The new :class:`Sample` objects with their ids, in input order (including any that
            eviction dropped from the held set straight away). When this returns, they are
            durable on disk (if the buffer has a ``root``).

        Raises:
            ValueError: a float field (``achieved_reward`` first of all) is NaN or infinite;
                the message names each offending sample by index and prompt.
            TypeError: a sample is not a ``Sample``/dict, misses or adds fields (including
                ``sample_id``), or has a value of the wrong type.
            RuntimeError: the buffer was loaded with ``upto_sample_id`` while later samples are
                persisted (call :meth:`drop_after` first), or an earlier failed append could
                not be rolled back (reload the buffer).
            OSError: writing a shard failed; files written by this call are removed.
            In every error case nothing is appended and no id is consumed.
        """
        if self._blocked:
            raise RuntimeError(self._blocked)
        rows = _coerce(samples)
        if not rows:
            return []
        first = self._next_id
        new = [Sample(sample_id=first + i, **row) for i, row in enumerate(rows)]
        if self.root is not None:
            self._persist(new)
        for s in new:
            self._held[s.sample_id] = s
            evicted = self._evictor.insert(s.sample_id, s.achieved_reward)
            if evicted is not None:
                del self._held[evicted]
        self._next_id += len(new)
        self._ids_cache = None
        return new

    def _persist(self, new: list[Sample]) -> None:
        assert self.root is not None
        size = self.cfg.shard_size
        pending = self._open + new
        chunks = [pending[i : i + size] for i in range(0, len(pending), size)]
        written: list[Path] = []
        try:
            for chunk in chunks:
                path = self.root / shard_name(chunk[0].sample_id, chunk[-1].sample_id)
                _write_parquet_atomic(path, _to_table(chunk))
                written.append(path)
            fsync_dir(self.root)
        except BaseException:
            try:
                for path in written:
                    _remove(path)
                fsync_dir(self.root)
            except OSError as e:
                self._blocked = (
                    f"an append failed and its shards could not be removed ({e}); reload the"
                    " buffer with ReplayBuffer.load"
                )
            raise
        # The new shards are durable; the superseded open shard is now covered by the first.
        if self._open_path is not None:
            with contextlib.suppress(OSError):  # if it stays, it is covered: readers skip it
                _remove(self._open_path)
        last_chunk = chunks[-1]
        if len(last_chunk) < size:
            self._open, self._open_path = last_chunk, written[-1]
        else:
            self._open, self._open_path = [], None
        self._persisted_last = new[-1].sample_id

    # -- sampling -----------------------------------------------------------------------------

    def _held_ids(self) -> np.ndarray:
        if self._ids_cache is None:
            self._ids_cache = np.fromiter(self._held, dtype=np.int64, count=len(self._held))
        return self._ids_cache

    def sample_batch(self, batch_size: int) -> list[Sample]:
        """Draw a training batch from the held samples.

        ``uniform``: every held sample equally likely. ``recency``: weight
        ``0.5 ** (age / recency_half_life)`` with ``age = newest_id - sample_id`` in
        insertions, so a sample ``recency_half_life`` insertions older than the newest has half
        its weight (reserved best samples age like any other).

        Without replacement within a batch (successive weighted draws, implemented with
        Gumbel top-k keys), in random order. If fewer samples are held than ``batch_size``,
        the ``batch_size`` draws are independent, with replacement, with the same weights.
        Deterministic given the seed, the appends and earlier draws.

        Raises:
            ValueError: ``batch_size < 1`` or the buffer holds nothing.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self._held)
        if n == 0:
            raise ValueError("cannot sample a batch from an empty replay buffer")
        ids = self._held_ids()
        logw: np.ndarray | None = None
        if self.cfg.sampling == "recency":
            logw = -(ids[-1] - ids).astype(np.float64) * (
                math.log(2.0) / self.cfg.recency_half_life
            )
        if n >= batch_size:
            if logw is None:
                idx = self._rng.choice(n, size=batch_size, replace=False)
            else:
                keys = logw + self._rng.gumbel(size=n)
                idx = np.argpartition(-keys, batch_size - 1)[:batch_size]
                idx = idx[np.argsort(-keys[idx], kind="stable")]
        else:
            p = None
            if logw is not None:
                w = np.exp(logw - logw.max())
                p = w / w.sum()
            idx = self._rng.choice(n, size=batch_size, replace=True, p=p)
        return [self._held[int(ids[i])] for i in idx]

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state for a checkpoint: the sampling generator (128-bit integers as
        decimal strings) plus ``last_sample_id``, the id to pass as ``upto_sample_id`` to
        :meth:`load` when resuming from that checkpoint (``None``: empty)."""
        st = self._rng.bit_generator.state
        return {
            "format": FORMAT_VERSION,
            "seed": self.seed,
            "last_sample_id": self.last_sample_id,
            "rng": {
                "bit_generator": st["bit_generator"],
                "state": {k: str(v) for k, v in st["state"].items()},
                "has_uint32": int(st["has_uint32"]),
                "uinteger": int(st["uinteger"]),
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the sampling generator from :meth:`state_dict`'s output.

        The held samples come from disk (:meth:`load`), not from ``state``;
        ``last_sample_id`` and ``seed`` are informational.

        Raises:
            ValueError: ``state`` is not a state dict of this format.
        """
        try:
            if state["format"] != FORMAT_VERSION:
                raise ValueError(f"unsupported replay-buffer state format {state['format']!r}")
            rng = state["rng"]
            if rng["bit_generator"] != "PCG64":
                raise ValueError(f"unsupported bit generator {rng['bit_generator']!r}")
            restored = {
                "bit_generator": "PCG64",
                "state": {k: int(v) for k, v in rng["state"].items()},
                "has_uint32": int(rng["has_uint32"]),
                "uinteger": int(rng["uinteger"]),
            }
            bitgen = np.random.PCG64()
            bitgen.state = restored
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a replay-buffer state dict: {e!r}") from e
        self._rng = np.random.Generator(bitgen)

    # -- loading and truncation ---------------------------------------------------------------

    @classmethod
    def load(
        cls,
        cfg: ReplayBufferConfig,
        root: str | Path,
        seed: int = 0,
        upto_sample_id: int | None = None,
    ) -> ReplayBuffer:
        """Rebuild a buffer from the shards under ``root`` (an empty buffer if there are none).

        The held set is recomputed with ``cfg``'s eviction rule over every persisted id (or
        ids ``<= upto_sample_id``), so it equals what an uninterrupted buffer would hold; each
        persisted sample is counted once. Deletes leftover ``*.tmp`` files and covered shards.
        Restore the sampling generator separately with :meth:`load_state_dict`.

        Args:
            upto_sample_id: treat the history as ending at this id (-1: empty). Later
                persisted samples stay on disk; until :meth:`drop_after` removes them,
                ``append`` raises. See the module docstring for the keep/discard recipes.

        Raises:
            BufferCorruptError: a shard is unreadable or ids are missing.
            ValueError: ``upto_sample_id < -1``.
        """
        if upto_sample_id is not None and upto_sample_id < -1:
            raise ValueError(f"upto_sample_id must be >= -1, got {upto_sample_id}")
        buf = cls.__new__(cls)
        buf._setup(cfg, root, seed)
        assert buf.root is not None
        buf.root.mkdir(parents=True, exist_ok=True)
        _clean_tmp(buf.root)
        buf._rebuild(upto_sample_id)
        return buf

    def _rebuild(self, upto: int | None) -> None:
        """Replace the in-memory state by the one implied by the shards (RNG untouched)."""
        assert self.root is not None
        used, covered, last = _plan(_list_shards(self.root), self.root)
        for s in covered:
            _remove(s.path)
        stop = last if upto is None else min(upto, last)
        reserved = self.reserved_top
        rewards = None
        if reserved and stop >= 0:
            parts = []
            for shard, take_from in used:
                if take_from > stop:
                    break
                r = _read_shard(shard, ["achieved_reward"]).column("achieved_reward").to_numpy()
                parts.append(r[take_from - shard.first : min(shard.last, stop) - shard.first + 1])
            rewards = np.concatenate(parts)
        evictor = _Evictor.rebuild(self.cfg.capacity, reserved, stop, rewards)
        held_ids = evictor.held_ids()

        held: dict[int, Sample] = {}
        open_rows: list[Sample] = []
        open_path: Path | None = None
        last_used = used[-1][0] if used else None
        open_shard = (
            last_used
            if last_used is not None
            and stop == last
            and last_used.last - last_used.first + 1 < self.cfg.shard_size
            else None
        )
        for shard, take_from in used:
            if take_from > stop:
                break
            lo, hi = take_from, min(shard.last, stop)
            a, b = np.searchsorted(held_ids, [lo, hi + 1])
            if a == b and shard is not open_shard:
                continue
            table = _read_shard(shard)
            if shard is open_shard:
                open_rows = [Sample(**row) for row in table.to_pylist()]
                open_path = shard.path
                by_id = {s.sample_id: s for s in open_rows}
                for i in held_ids[a:b].tolist():
                    held[i] = by_id[i]
            else:
                wanted = held_ids[a:b] - shard.first
                for row in table.take(pa.array(wanted)).to_pylist():
                    held[row["sample_id"]] = Sample(**row)

        self._held = held
        self._evictor = evictor
        self._next_id = stop + 1
        self._persisted_last = last
        self._open, self._open_path = open_rows, open_path
        self._ids_cache = None
        self._blocked = (
            f"this buffer was loaded with upto_sample_id={upto} but samples up to id {last} are"
            f" persisted; call drop_after({upto}) to discard them, or load without"
            " upto_sample_id to keep them"
            if stop < last
            else None
        )

    def drop_after(self, sample_id: int) -> int:
        """Delete every persisted sample with id ``> sample_id`` and continue from there.

        Shards entirely beyond ``sample_id`` are deleted newest first, then the shard that
        straddles it is rewritten (temporary file, rename) without the later rows, and the old
        one deleted; at every step the files on disk hold a contiguous id prefix, so a crash
        leaves a loadable buffer (possibly with some of the doomed samples still there: call
        again). Afterwards the held set, ``total_appended`` and the next id are those of a
        buffer that never saw the dropped samples; the sampling generator is unchanged.

        Returns:
            How many persisted samples were deleted.

        Raises:
            RuntimeError: the buffer has no ``root``.
            ValueError: ``sample_id < -1``.
            BufferCorruptError: the shards cannot be read.
        """
        if self.root is None:
            raise RuntimeError("drop_after needs a persisted buffer (root is None)")
        if sample_id < -1:
            raise ValueError(f"sample_id must be >= -1, got {sample_id}")
        used, covered, last = _plan(_list_shards(self.root), self.root)
        for s in covered:
            _remove(s.path)
        removed = max(0, last - sample_id)
        beyond = [s for s, _ in used if s.first > sample_id]
        for s in sorted(beyond, key=lambda s: -s.first):
            _remove(s.path)
        fsync_dir(self.root)
        for s, _ in used:
            if s.first <= sample_id < s.last:
                kept = _read_shard(s).slice(0, sample_id - s.first + 1)
                _write_parquet_atomic(self.root / shard_name(s.first, sample_id), kept)
                fsync_dir(self.root)
                _remove(s.path)
        self._rebuild(None)
        return removed


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------


def export_dataset(root: str | Path) -> datasets.Dataset:
    """A Hugging Face ``Dataset`` of every persisted sample under ``root``.

    One row per sample, each exactly once, sorted by ``sample_id``; columns :data:`FIELDS`
    (``int64``, ``string`` and ``float64`` values). Held/evicted status plays no part. Safe to
    call while a run appends.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        BufferCorruptError: see :class:`BufferCorruptError`.
    """
    from datasets import Dataset
    from datasets.table import InMemoryTable

    return Dataset(InMemoryTable(read_persisted(root)))


def export_to_disk(root: str | Path, out_dir: str | Path) -> datasets.Dataset:
    """:func:`export_dataset`, saved with ``Dataset.save_to_disk`` into ``out_dir``.

    The directory is built next to ``out_dir`` and swapped in only when complete (an existing
    ``out_dir`` is replaced). Load it back with ``datasets.load_from_disk(out_dir)``.

    Returns:
        The exported dataset.

    Raises:
        Whatever :func:`export_dataset` or ``save_to_disk`` raise; ``out_dir`` is untouched.
    """
    ds = export_dataset(root)
    atomic_write_dir(out_dir, lambda tmp: ds.save_to_disk(str(tmp)))
    return ds

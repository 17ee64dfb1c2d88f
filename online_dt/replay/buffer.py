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
    newer sample) *plus the C - K most recent of all other samples*
    (:class:`~online_dt.replay.eviction.Evictor`). The rule is applied sample by sample, so the
    held set does not depend on how the samples were split into ``append`` calls, and
    :meth:`ReplayBuffer.load` rebuilds exactly the set an uninterrupted buffer would hold.

Sampling
    See :meth:`ReplayBuffer.sample_batch`: uniform, recency-weighted or reward-balanced,
    without replacement within a batch (with replacement only while fewer samples are held
    than the batch size), deterministic given the seed; the generator state round-trips through
    :meth:`~ReplayBuffer.state_dict` / :meth:`~ReplayBuffer.load_state_dict` as plain JSON.

Persistence
    Every appended sample is written to parquet shards under ``root`` before ``append``
    returns, crash-safely (the layout and its guarantees: :mod:`online_dt.replay.shards`; the
    columns: :mod:`online_dt.replay.schema`). An ``append`` that raises in a live process
    removes what it wrote and changes nothing.

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

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from online_dt.config import ReplayBufferConfig
from online_dt.replay import shards
from online_dt.replay.eviction import Evictor
from online_dt.replay.persistence import persist_appended, rebuild_from_shards, truncate_shards
from online_dt.replay.sampling import (
    draw_indices,
    reward_array,
    rng_from_state,
    rng_state,
    sampling_log_weights,
)
from online_dt.replay.schema import (
    FORMAT_VERSION,
    check_reward_width,
    coerce_samples,
    reward_width,
)
from online_dt.samples import Sample, first_objective


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
            if shards.list_shards(self.root):
                raise FileExistsError(
                    f"{self.root} already holds replay-buffer shards; use ReplayBuffer.load to"
                    " continue that run, or point a new run at an empty folder"
                )
            shards.clean_tmp(self.root)

    def _setup(self, cfg: ReplayBufferConfig, root: str | Path | None, seed: int) -> None:
        self.cfg = cfg
        self.root = Path(root) if root is not None else None
        self.seed = int(seed)
        self._rng = np.random.Generator(np.random.PCG64(self.seed))
        self._held: dict[int, Sample] = {}
        self._evictor = Evictor(cfg.capacity, self.reserved_top)
        self._next_id = 0
        self._persisted_last = -1
        self._open: list[Sample] = []
        self._open_path: Path | None = None
        self._ids_cache: np.ndarray | None = None
        self._logw_cache: tuple[np.ndarray, np.ndarray | None] | None = None
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
        units); input of the target schedule. With several objectives (vector rewards),
        ``float64[len(self), M]``, one column per objective."""
        return reward_array([s.achieved_reward for s in self._held.values()])

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
                ``sample_id``), or has a value of the wrong type; or the rewards are not all
                of one shape (one float each, or vectors of one length), the shape of the
                rewards the buffer holds.
            RuntimeError: the buffer was loaded with ``upto_sample_id`` while later samples are
                persisted (call :meth:`drop_after` first), or an earlier failed append could
                not be rolled back (reload the buffer).
            OSError: writing a shard failed; files written by this call are removed.
            In every error case nothing is appended and no id is consumed.
        """
        if self._blocked:
            raise RuntimeError(self._blocked)
        rows = coerce_samples(samples)
        if not rows:
            return []
        if self._held:  # every reward of a buffer has one shape: rewards() stacks them
            check_reward_width(rows, reward_width(next(iter(self._held.values())).achieved_reward))
        first = self._next_id
        new = [Sample(sample_id=first + i, **row) for i, row in enumerate(rows)]
        if self.root is not None:
            self._persist(new)
        for s in new:
            self._held[s.sample_id] = s
            evicted = self._evictor.insert(s.sample_id, first_objective(s.achieved_reward))
            if evicted is not None:
                del self._held[evicted]
        self._next_id += len(new)
        self._ids_cache = None
        return new

    def _persist(self, new: list[Sample]) -> None:
        assert self.root is not None
        self._open, self._open_path = persist_appended(
            self.root, self.cfg.shard_size, (self._open, self._open_path), new, self._block
        )
        self._persisted_last = new[-1].sample_id

    def _block(self, reason: str) -> None:
        """Refuse every later ``append``, with ``reason``."""
        self._blocked = reason

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
        its weight (reserved best samples age like any other). ``reward_balanced``: the held
        rewards' range ``[min, max]`` is cut into ``reward_bins`` equal-width bins and a sample
        weighs ``(samples held in its bin) ** -balance_power``; at power 1 every non-empty bin
        carries the same mass (class-balanced sampling with the reward bin as the class; the
        conditional the trainer fits given a reward is unchanged, only how often each reward
        level is seen). With
        ``importance_weighting``, each sample's weight is further multiplied by its truncated
        importance weight relative to its reward bin's median
        (:func:`~online_dt.replay.sampling.importance_log_weights`), which leaves every bin's
        total weight unchanged.

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
        idx = draw_indices(self._rng, n, batch_size, self._sampling_log_weights(ids))
        return [self._held[int(ids[i])] for i in idx]

    def _sampling_log_weights(self, ids: np.ndarray) -> np.ndarray | None:
        """Unnormalised log sampling weight of each held sample (``None``: uniform;
        :func:`~online_dt.replay.sampling.sampling_log_weights`), computed once per held set:
        cached with the ids array of :meth:`_held_ids`, which is rebuilt whenever the held set
        changes."""
        if self._logw_cache is not None and self._logw_cache[0] is ids:
            return self._logw_cache[1]
        logw = sampling_log_weights(self.cfg, ids, self._held)
        self._logw_cache = (ids, logw)
        return logw

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state for a checkpoint: the sampling generator (128-bit integers as
        decimal strings) plus ``last_sample_id``, the id to pass as ``upto_sample_id`` to
        :meth:`load` when resuming from that checkpoint (``None``: empty)."""
        return {
            "format": FORMAT_VERSION,
            "seed": self.seed,
            "last_sample_id": self.last_sample_id,
            "rng": rng_state(self._rng),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the sampling generator from :meth:`state_dict`'s output.

        The held samples come from disk (:meth:`load`), not from ``state``;
        ``last_sample_id`` and ``seed`` are informational.

        Raises:
            ValueError: ``state`` is not a state dict of this format.
        """
        try:
            if state["format"] not in (2, FORMAT_VERSION):  # 3 changed the shards only
                raise ValueError(f"unsupported replay-buffer state format {state['format']!r}")
            rng = rng_from_state(state["rng"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a replay-buffer state dict: {e!r}") from e
        self._rng = rng

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
        shards.clean_tmp(buf.root)
        buf._rebuild(upto_sample_id)
        return buf

    def _rebuild(self, upto: int | None) -> None:
        """Replace the in-memory state by the one implied by the shards (RNG untouched)."""
        assert self.root is not None
        rebuilt = rebuild_from_shards(self.cfg, self.root, upto, self.reserved_top)
        self._held = rebuilt.held
        self._evictor = rebuilt.evictor
        self._next_id = rebuilt.next_id
        self._persisted_last = rebuilt.persisted_last
        self._open, self._open_path = rebuilt.open_rows, rebuilt.open_path
        self._ids_cache = None
        self._blocked = rebuilt.blocked

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
        removed = truncate_shards(self.root, sample_id)
        self._rebuild(None)
        return removed

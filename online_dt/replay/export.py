"""Exporting a run's replay buffer as a Hugging Face dataset (``online-dt export RUN_DIR``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from online_dt.replay.shards import read_persisted
from online_dt.util.atomic import atomic_write_dir

if TYPE_CHECKING:
    import datasets


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

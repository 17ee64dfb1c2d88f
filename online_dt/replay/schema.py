"""The replay buffer's data format: the sample columns, the parquet schema, shard names, and
the checks every appended sample passes.

A shard is a parquet file named ``shard-<first id>-<last id>.parquet`` (:func:`shard_name`),
ids zero-padded to 12 digits so names sort in id order, with one row per sample and the
columns of :data:`SCHEMA` (the fields of :class:`~online_dt.samples.Sample`).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from online_dt.samples import Sample
from online_dt.util.text import shorten

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
    "log_importance_weight",
)
"""Column names of the shards and of the exported dataset, in this order: every
:class:`~online_dt.samples.Sample` field, ``sample_id`` first."""

OPTIONAL_FIELDS = frozenset({"log_importance_weight"})
"""Fields that may be unset (``None``, a null cell): a dict may leave them out, and a shard of
format 1, written before they existed, reads them as null."""

_NEW_FIELDS: tuple[str, ...] = FIELDS[1:]  # a sample before the buffer gives it an id
_STR_FIELDS = frozenset({"prompt", "completion"})
_INT_FIELDS = frozenset({"policy_version", "iteration", "completion_tokens"})
_FLOAT_FIELDS = frozenset(
    {"achieved_reward", "target_reward", "created_at", "scored_at", "log_importance_weight"}
)

FORMAT_VERSION = 2
"""Version of the shard format, stored in each shard's schema metadata (2 added
``log_importance_weight``; format 1 shards are read with it null)."""

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
        pa.field("log_importance_weight", pa.float64(), nullable=True),
    ],
    # the key names the module that first wrote shards; it is part of the file format
    metadata={b"online_dt.replay.buffer.format": str(FORMAT_VERSION).encode()},
)
"""Arrow schema of a shard: one column per :class:`Sample` field."""

_SHARD_RE = re.compile(r"^shard-(\d{12})-(\d{12})\.parquet$")


class BufferCorruptError(RuntimeError):
    """The buffer folder cannot be trusted: a shard is unreadable, its rows do not match its
    name, or ids are missing between shards. The message names the file or the id range."""


def shard_name(first_id: int, last_id: int) -> str:
    """File name of the shard holding ids ``first_id .. last_id`` (inclusive)."""
    return f"shard-{first_id:012d}-{last_id:012d}.parquet"


def parse_shard_name(name: str) -> tuple[int, int] | None:
    """``(first id, last id)`` of a file named by :func:`shard_name`, ``None`` for any other name
    (temporary files, foreign files)."""
    m = _SHARD_RE.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def coerce_samples(items: Sequence[Mapping[str, Any] | Sample]) -> list[dict[str, Any]]:
    """Check and normalise new samples (without ids) before anything is appended.

    Args:
        items: :class:`Sample` objects without ``sample_id``, or dicts with exactly the other
            fields of :data:`FIELDS`.

    Returns:
        One dict per item with the fields after ``sample_id``, ints and floats as Python types.

    Raises:
        TypeError: ``items`` is not a sequence of samples/dicts, a sample carries an id, a dict
            misses or adds fields (only :data:`OPTIONAL_FIELDS` may be left out), or a value has
            the wrong type, is ``None`` (outside :data:`OPTIONAL_FIELDS`) or (for
            ``completion_tokens``) is negative.
        ValueError: a float field is NaN or infinite; ``achieved_reward`` is listed first.
    """
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
            missing = [f for f in _NEW_FIELDS if f not in item and f not in OPTIONAL_FIELDS]
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
            raw = {f: None for f in OPTIONAL_FIELDS} | dict(item)
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
            if v is None and f in OPTIONAL_FIELDS:
                pass
            elif v is None:
                problems.append(f"#{i}: {f} is not set (None)")
            elif not ok:
                problems.append(f"#{i}: {f} has type {type(v).__name__}")
            elif f in _FLOAT_FIELDS and not math.isfinite(v):
                prompt = raw.get("prompt")
                where = f" (prompt {shorten(prompt)})" if isinstance(prompt, str) else ""
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


def samples_table(samples: Sequence[Sample]) -> pa.Table:
    """Samples with ids as an Arrow table of :data:`SCHEMA` (one row each, in order)."""
    return pa.table({f: [getattr(s, f) for s in samples] for f in FIELDS}, schema=SCHEMA)

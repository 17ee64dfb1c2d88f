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
    "achieved_rewards",
    "target_rewards",
)
"""Column names of the shards and of the exported dataset, in this order: every
:class:`~online_dt.samples.Sample` field, ``sample_id`` first, then the two vector columns of a
run with several objectives. There ``achieved_rewards`` and ``target_rewards`` hold the whole
vectors (one float per objective, in the config's order) and ``achieved_reward`` and
``target_reward`` the first objective's value; with one reward the vector columns are null."""

VECTOR_FIELDS: dict[str, str] = {
    "achieved_reward": "achieved_rewards",
    "target_reward": "target_rewards",
}
"""Each :class:`~online_dt.samples.Sample` field that may hold a vector, and its list column."""

OPTIONAL_FIELDS = frozenset({"log_importance_weight", "achieved_rewards", "target_rewards"})
"""Columns that may be null: ``log_importance_weight`` may be unset (``None``) and a dict may
leave it out; the vector columns are null for a one-reward sample. A shard written before a
column existed (format 1 or 2) reads it as null."""

_SAMPLE_FIELDS: tuple[str, ...] = FIELDS[:-2]  # the Sample's own fields
_NEW_FIELDS: tuple[str, ...] = _SAMPLE_FIELDS[1:]  # a sample before the buffer gives it an id
_DICT_OPTIONAL = frozenset({"log_importance_weight"})
_STR_FIELDS = frozenset({"prompt", "completion"})
_INT_FIELDS = frozenset({"policy_version", "iteration", "completion_tokens"})
_FLOAT_FIELDS = frozenset(
    {"achieved_reward", "target_reward", "created_at", "scored_at", "log_importance_weight"}
)

FORMAT_VERSION = 3
"""Version of the shard format, stored in each shard's schema metadata (2 added
``log_importance_weight``, 3 the vector columns; older shards read them as null)."""

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
        pa.field("achieved_rewards", pa.list_(pa.float64()), nullable=True),
        pa.field("target_rewards", pa.list_(pa.float64()), nullable=True),
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
            misses or adds fields (only ``log_importance_weight`` may be left out), or a value
            has the wrong type (``achieved_reward`` and ``target_reward`` may be tuples of
            floats, of one length), is ``None`` (outside ``log_importance_weight``) or (for
            ``completion_tokens``) is negative; or the batch mixes reward shapes (floats and
            vectors, or vectors of different lengths).
        ValueError: a float field (or an element of a vector) is NaN or infinite;
            ``achieved_reward`` is listed first.
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
            missing = [f for f in _NEW_FIELDS if f not in item and f not in _DICT_OPTIONAL]
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
            raw = {f: None for f in _DICT_OPTIONAL} | dict(item)
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
            elif f in VECTOR_FIELDS and isinstance(v, tuple | list):
                ok = bool(v) and all(
                    isinstance(x, numbers.Real) and not isinstance(x, bool) for x in v
                )
                v = tuple(float(x) for x in v) if ok else v
            else:
                ok = isinstance(v, numbers.Real) and not isinstance(v, bool)
                v = float(v) if ok else v
            if v is None and f in _DICT_OPTIONAL:
                pass
            elif v is None:
                problems.append(f"#{i}: {f} is not set (None)")
            elif not ok:
                problems.append(f"#{i}: {f} has type {type(v).__name__}")
            elif f in _FLOAT_FIELDS and not all(
                math.isfinite(x) for x in (v if isinstance(v, tuple) else (v,))
            ):
                prompt = raw.get("prompt")
                where = f" (prompt {shorten(prompt)})" if isinstance(prompt, str) else ""
                non_finite.setdefault(f, []).append(f"#{i} {v}{where}")
            elif f == "completion_tokens" and v < 0:
                problems.append(f"#{i}: completion_tokens is negative ({v})")
            row[f] = v
        vectors = [row.get(f) for f in VECTOR_FIELDS]
        lengths = {len(v) for v in vectors if isinstance(v, tuple)}
        if lengths and (len(lengths) > 1 or not all(isinstance(v, tuple) for v in vectors)):
            problems.append(f"#{i}: achieved_reward and target_reward have different lengths")
        rows.append(row)
    widths = {reward_width(row["achieved_reward"]) for row in rows if "achieved_reward" in row}
    if not problems and len(widths) > 1:  # a batch of one reward shape (as rewards() needs)
        shown = ", ".join(_width_text(w) for w in sorted(widths))
        problems.append(f"achieved_reward mixes {shown} across the batch")
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


def reward_width(value: Any) -> int:
    """0 for one reward (a float), ``M`` for a vector of ``M`` objectives."""
    return len(value) if isinstance(value, tuple | list) else 0


def _width_text(width: int) -> str:
    return "one reward per sample" if width == 0 else f"rewards of {width} objectives"


def check_reward_width(rows: Sequence[Mapping[str, Any]], held: int) -> None:
    """Refuse rows (from :func:`coerce_samples`, of one shape) whose rewards do not have the
    shape ``held`` (:func:`reward_width`) of the rewards a buffer already holds.

    Raises:
        TypeError: the shapes differ (nothing was appended).
    """
    if rows and (width := reward_width(rows[0]["achieved_reward"])) != held:
        raise TypeError(
            f"invalid samples (nothing was appended): the buffer holds {_width_text(held)},"
            f" got {_width_text(width)}"
        )


def samples_table(samples: Sequence[Sample]) -> pa.Table:
    """Samples with ids as an Arrow table of :data:`SCHEMA` (one row each, in order); a vector
    reward fills its list column and its first objective's value the scalar column."""
    columns: dict[str, list[Any]] = {f: [getattr(s, f) for s in samples] for f in _SAMPLE_FIELDS}
    for scalar, vector in VECTOR_FIELDS.items():
        values = columns[scalar]
        columns[vector] = [list(v) if isinstance(v, tuple) else None for v in values]
        columns[scalar] = [v[0] if isinstance(v, tuple) else v for v in values]
    return pa.table(columns, schema=SCHEMA)


def sample_from_row(row: Mapping[str, Any]) -> Sample:
    """The :class:`Sample` of one shard row (a dict of :data:`FIELDS`, as
    ``pyarrow.Table.to_pylist`` gives it): a non-null vector column replaces its scalar
    column's value with the tuple."""
    fields = {f: row[f] for f in _SAMPLE_FIELDS if f in row}
    for scalar, vector in VECTOR_FIELDS.items():
        if row.get(vector) is not None:
            fields[scalar] = tuple(float(x) for x in row[vector])
    return Sample(**fields)

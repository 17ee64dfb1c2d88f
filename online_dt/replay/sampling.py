"""How the replay buffer draws a training batch from its held samples.

The per-sample log weights of each sampling mode (recency, reward-balanced, with or without
importance weighting), the draw without replacement (Gumbel top-k keys), and the sampling
generator's state as plain JSON. :meth:`~online_dt.replay.buffer.ReplayBuffer.sample_batch`
describes the modes; the buffer caches the weights per held set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from online_dt.config import ReplayBufferConfig
from online_dt.samples import Reward, Sample


def sampling_log_weights(
    cfg: ReplayBufferConfig, ids: np.ndarray, held: Mapping[int, Sample]
) -> np.ndarray | None:
    """Unnormalised log sampling weight of each held sample (in ``ids`` order; ``None``:
    uniform), as ``cfg.sampling`` and ``cfg.importance_weighting`` say. ``held``: the held
    samples by id."""
    binned = cfg.sampling == "reward_balanced" or cfg.importance_weighting
    bins = reward_bins(cfg.reward_bins, ids, held) if binned else None
    logw: np.ndarray | None = None
    if cfg.sampling == "recency":
        logw = -(ids[-1] - ids).astype(np.float64) * (math.log(2.0) / cfg.recency_half_life)
    elif cfg.sampling == "reward_balanced":
        counts = np.bincount(bins)[bins]
        logw = -cfg.balance_power * np.log(counts.astype(np.float64))
    if cfg.importance_weighting:
        iw = importance_log_weights(cfg.importance_clip, ids, bins, held)
        if logw is None:
            logw = iw  # mean 1 within each bin: every bin keeps its count as its mass
        else:  # keep each bin's total weight as the sampling mode gives it
            combined = logw + iw
            for b in np.unique(bins):
                m = bins == b
                combined[m] += np.logaddexp.reduce(logw[m]) - np.logaddexp.reduce(combined[m])
            logw = combined
    return logw


def reward_bins(k: int, ids: np.ndarray, held: Mapping[int, Sample]) -> np.ndarray:
    """Reward bin of each held sample (in ``ids`` order): ``k`` (``cfg.reward_bins``)
    equal-width bins over the held rewards' range. With vector rewards, each objective is
    binned so and a sample's bin is its cell of the grid (``reward_bins ** M`` cells,
    numbered)."""
    rewards = reward_array([held[int(i)].achieved_reward for i in ids])
    columns = rewards[:, None] if rewards.ndim == 1 else rewards
    cells = np.zeros(len(ids), dtype=np.int64)
    for column in columns.T:
        lo, hi = float(column.min()), float(column.max())
        b = np.zeros(len(ids), dtype=np.int64)
        if hi > lo:
            b = np.minimum(((column - lo) / (hi - lo) * k).astype(np.int64), k - 1)
        cells = cells * k + b
    if columns.shape[1] > 1:  # number the occupied cells 0.. for np.bincount
        cells = np.unique(cells, return_inverse=True)[1].astype(np.int64)
    return cells


def importance_log_weights(
    clip: float, ids: np.ndarray, bins: np.ndarray, held: Mapping[int, Sample]
) -> np.ndarray:
    """Log of each held sample's importance weight relative to its reward bin's median
    (truncated at ``clip`` (``cfg.importance_clip``) times the median, then rescaled to mean 1
    within the bin, so a bin's total weight equals its count). A sample without a weight
    counts as its bin's mean (weight 1). ``bins``: each sample's reward bin
    (:func:`reward_bins`)."""
    raw = np.fromiter(
        (np.nan if (w := held[int(i)].log_importance_weight) is None else w for i in ids),
        dtype=np.float64,
        count=len(ids),
    )
    out = np.zeros(len(ids), dtype=np.float64)
    for b in np.unique(bins):
        where = (bins == b) & ~np.isnan(raw)
        if not where.any():
            continue
        logs = raw[where]
        w = np.exp(np.minimum(logs - np.median(logs), math.log(clip)))
        out[where] = np.log(w * (len(w) / w.sum()))
    return out


def draw_indices(
    rng: np.random.Generator, n: int, batch_size: int, logw: np.ndarray | None
) -> np.ndarray:
    """Indices (into the ``n`` held samples) of one batch of ``batch_size``, drawn from ``rng``
    with log weights ``logw`` (``None``: uniform): without replacement (successive weighted
    draws, with Gumbel top-k keys), in random order, when ``n >= batch_size``; else
    independent draws with replacement."""
    if n >= batch_size:
        if logw is None:
            idx = rng.choice(n, size=batch_size, replace=False)
        else:
            keys = logw + rng.gumbel(size=n)
            idx = np.argpartition(-keys, batch_size - 1)[:batch_size]
            idx = idx[np.argsort(-keys[idx], kind="stable")]
    else:
        p = None
        if logw is not None:
            w = np.exp(logw - logw.max())
            p = w / w.sum()
        idx = rng.choice(n, size=batch_size, replace=True, p=p)
    return idx


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """The sampling generator's state as plain JSON (128-bit integers as decimal strings)."""
    st = rng.bit_generator.state
    return {
        "bit_generator": st["bit_generator"],
        "state": {k: str(v) for k, v in st["state"].items()},
        "has_uint32": int(st["has_uint32"]),
        "uinteger": int(st["uinteger"]),
    }


def rng_from_state(rng: Mapping[str, Any]) -> np.random.Generator:
    """A generator in the state :func:`rng_state` gave.

    Raises:
        ValueError: the state is not a PCG64 generator's.
        KeyError, TypeError: the state lacks a key or has a value of the wrong type.
    """
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
    return np.random.Generator(bitgen)


def reward_array(values: Sequence[Reward]) -> np.ndarray:
    """Rewards as ``float64[N]`` (floats) or ``float64[N, M]`` (vectors of M objectives)."""
    if values and isinstance(values[0], tuple):
        return np.asarray(values, dtype=np.float64).reshape(len(values), len(values[0]))
    return np.fromiter((float(v) for v in values), dtype=np.float64, count=len(values))  # type: ignore[arg-type]

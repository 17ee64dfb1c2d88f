"""The conditioner's fit to the rewards the policy trains on, and its token-mode bins.

Functions over a :class:`~online_dt.policy.conditioner.RewardConditioner` (seen through
:class:`FittedConditioner`), behind its ``initial_binnings`` (the bins a fresh token-mode
conditioner starts with), ``fit_reward_statistics`` (fold new rewards into the normaliser, cut
or split the bins from the rewards trained on) and ``describe_target`` (which bin a target maps
to, and whether it lies above the rewards the bins were cut from).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import torch

from online_dt.config import ConditioningConfig
from online_dt.policy.normalization import RewardBinning, RewardNormalizer, reward_token


class FittedConditioner(Protocol):
    """What the functions here read and write of a conditioner: the attributes and members of
    :class:`~online_dt.policy.conditioner.RewardConditioner` of those names (see its
    docstring)."""

    config: ConditioningConfig
    normalizer: RewardNormalizer
    binnings: list[RewardBinning]
    bin_ranges: list[tuple[float, float] | None]
    bins_fitted: bool

    def reward_tensor(
        self, rewards: Sequence[Any], dtype: torch.dtype = torch.float32
    ) -> torch.Tensor: ...


def initial_binnings(config: ConditioningConfig) -> list[RewardBinning]:
    """:meth:`~online_dt.policy.conditioner.RewardConditioner.initial_binnings`: the bins a
    fresh token-mode conditioner starts with (see that method)."""
    if config.mode != "token":
        return []
    if config.objectives:
        k = config.num_reward_tokens
        return [RewardBinning.evenly(o.low, o.high, k) for o in config.objectives]
    if config.bin_edges is not None:
        return [RewardBinning(config.bin_edges)]
    return [RewardBinning.evenly(config.reward_min, config.reward_max, config.first_bins)]


def fit_reward_statistics(
    conditioner: FittedConditioner, rewards: Sequence[Any], pool: Sequence[Any] | None = None
) -> list[tuple[int, int]]:
    """:meth:`~online_dt.policy.conditioner.RewardConditioner.fit_reward_statistics` of
    ``conditioner``: adapt its normalisation or bins to the rewards the policy is about to be
    trained on, and return the ``(new_bin, split_bin)`` splits made (see that method).

    Raises:
        ValueError: with objectives, a pool reward is not a vector of ``M`` floats.
    """
    cfg = conditioner.config
    if cfg.objectives:  # each objective is normalised from its configured range
        if cfg.mode == "token" and cfg.bin_method == "quantile":
            _cut_objective_bins(conditioner, rewards if pool is None else pool)
        return []
    conditioner.normalizer.update(rewards)
    if cfg.mode != "token" or cfg.bin_method != "quantile" or cfg.bin_edges is not None:
        return []
    values = [float(r) for r in (rewards if pool is None else pool)]
    if not values:
        return []
    splits: list[tuple[int, int]] = []
    if not cfg.splits_top_bin or not conditioner.bins_fitted:
        if len(values) < cfg.first_bins:
            return []
        conditioner.binnings = [RewardBinning.from_quantiles(values, cfg.first_bins)]
        conditioner.bins_fitted = True
    else:
        binning = conditioner.binnings[0]
        while (split := binning.split_top(values, cfg.num_reward_tokens)) is not None:
            splits.append((split.num_bins - 1, binning.num_bins - 1))
            binning = split
        conditioner.binnings = [binning]
    conditioner.bin_ranges = [(min(values), max(values))]
    return splits


def _cut_objective_bins(conditioner: FittedConditioner, pool: Sequence[Any]) -> None:
    """Token mode with objectives, ``bin_refit: buffer``: re-cut every objective's ``K``
    bins at the ``k/K`` quantiles of its column of ``pool`` (``N`` vectors of ``M``
    rewards; nothing changes while ``N < K``)."""
    k = conditioner.config.num_reward_tokens
    if len(pool) < k:
        return
    rows = conditioner.reward_tensor(list(pool), dtype=torch.float64)
    columns = rows.T.tolist()
    conditioner.binnings = [RewardBinning.from_quantiles(column, k) for column in columns]
    conditioner.bin_ranges = [(min(column), max(column)) for column in columns]
    conditioner.bins_fitted = True


def describe_target(conditioner: FittedConditioner, target: Any) -> dict[str, Any] | None:
    """:meth:`~online_dt.policy.conditioner.RewardConditioner.describe_target` of
    ``conditioner``: which bin (token mode) ``target`` maps to, or ``None`` in scalar mode
    (see that method).

    Raises:
        ValueError: with objectives, ``target`` is not ``M`` floats.
    """
    if not conditioner.binnings:
        return None
    names = conditioner.config.objective_names
    if not names:
        return _describe_bin(
            conditioner.binnings[0], conditioner.bin_ranges[0], float(target), None
        )
    values = conditioner.reward_tensor([target], dtype=torch.float64)[0].tolist()
    per = [
        {"name": name, **_describe_bin(binning, span, value, name)}
        for name, binning, span, value in zip(
            names, conditioner.binnings, conditioner.bin_ranges, values, strict=True
        )
    ]
    return {"objectives": per, "above_range": any(d["above_range"] for d in per)}


def _describe_bin(
    binning: RewardBinning,
    span: tuple[float, float] | None,
    value: float,
    objective: str | None,
) -> dict[str, Any]:
    """:func:`describe_target`'s dict for one reward ``value`` under ``binning`` (bins last
    cut from rewards spanning ``span``), for the one reward (``objective`` ``None``) or the
    named objective."""
    k = int(binning(torch.tensor([value], dtype=torch.float64))[0])
    low, high = binning.bounds(k)
    return {
        "bin": k,
        "bins": binning.num_bins,
        "low": None if math.isinf(low) else low,
        "high": None if math.isinf(high) else high,
        "token": reward_token(k, objective),
        "above_range": span is not None and value > span[1],
        "range": list(span) if span is not None else None,
    }

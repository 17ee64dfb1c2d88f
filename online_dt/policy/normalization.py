"""Reward normalisation (scalar mode) and reward binning into reward tokens (token mode).

Scalar mode feeds ``(r - centre) / scale`` to the conditioning head (:class:`RewardNormalizer`);
token mode maps a reward to one of K bins (:class:`RewardBinning`), each with its own token
``<|reward_k|>`` (:func:`reward_token`), as Quark (Lu et al., 2022) does with reward tokens.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch

from online_dt.config import NormalizationConfig


def reward_token(k: int) -> str:
    """The text of reward token ``k`` (``<|reward_k|>``)."""
    return f"<|reward_{k}|>"


class RewardNormalizer:
    """Affine or running normalisation ``(r - centre) / scale`` of rewards for the scalar head.

    ``affine`` keeps the configured centre and scale. ``running`` tracks the mean and standard
    deviation of every reward passed to :meth:`update` (Welford's online algorithm) and starts
    from the configured centre/scale until two rewards have been seen.
    """

    def __init__(self, cfg: NormalizationConfig) -> None:
        self.kind = cfg.kind
        self.center = cfg.center
        self.scale = cfg.scale
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0

    def update(self, rewards: Sequence[float]) -> None:
        """Fold rewards (reward units) into the running statistics; no-op for ``affine``."""
        if self.kind != "running":
            return
        for r in rewards:
            self.count += 1
            delta = r - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (r - self.mean)
        if self.count >= 2:
            self.center = self.mean
            self.scale = max(math.sqrt(self.m2 / (self.count - 1)), 1e-6)

    def __call__(self, rewards: torch.Tensor) -> torch.Tensor:
        """Normalise a tensor of rewards (any shape); returns the same shape."""
        return (rewards - self.center) / self.scale

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        return {k: getattr(self, k) for k in ("kind", "center", "scale", "count", "mean", "m2")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        for k, v in state.items():
            setattr(self, k, v)


class RewardBinning:
    """Maps rewards to K bins by K-1 increasing interior edges (token mode).

    Bin ``k`` holds rewards ``edges[k-1] <= r < edges[k]``; rewards below the first edge go to
    bin 0 and rewards at or above the last to bin K-1.

    Raises:
        ValueError: the edges are not strictly increasing.
    """

    def __init__(self, edges: Sequence[float]) -> None:
        if any(b <= a for a, b in itertools.pairwise(edges)):
            raise ValueError(f"bin edges must be strictly increasing, got {list(edges)}")
        self.edges = [float(e) for e in edges]

    @classmethod
    def evenly(cls, low: float, high: float, num_bins: int) -> RewardBinning:
        """K equal-width bins over ``[low, high]``."""
        step = (high - low) / num_bins
        return cls([low + step * k for k in range(1, num_bins)])

    @classmethod
    def from_quantiles(cls, rewards: Sequence[float], num_bins: int) -> RewardBinning:
        """Equal-mass bins: edges at the ``k/K`` quantiles of ``rewards``.

        Ties are broken by nudging repeated edges up by a tiny amount so edges stay increasing.

        Raises:
            ValueError: fewer than ``num_bins`` rewards are given.
        """
        if len(rewards) < num_bins:
            raise ValueError(f"need at least {num_bins} rewards to cut {num_bins} bins")
        values = torch.tensor(list(rewards), dtype=torch.float64)
        qs = torch.arange(1, num_bins, dtype=torch.float64) / num_bins
        edges = torch.quantile(values, qs).tolist()
        for i in range(1, len(edges)):
            if edges[i] <= edges[i - 1]:
                edges[i] = edges[i - 1] + 1e-9 * max(1.0, abs(edges[i - 1]))
        return cls(edges)

    @property
    def num_bins(self) -> int:
        """K, the number of bins (one more than the number of edges)."""
        return len(self.edges) + 1

    def bounds(self, k: int) -> tuple[float, float]:
        """``(low, high)`` of bin ``k`` in reward units: bin 0 starts at ``-inf``, bin K-1 ends
        at ``+inf``.

        Raises:
            IndexError: ``k`` is not in ``[0, K)``.
        """
        if not 0 <= k < self.num_bins:
            raise IndexError(f"bin {k} out of range for {self.num_bins} bins")
        low = self.edges[k - 1] if k > 0 else -math.inf
        high = self.edges[k] if k < len(self.edges) else math.inf
        return low, high

    def split_top(self, pool: Sequence[float], max_bins: int) -> RewardBinning | None:
        """The bins with the top bin split in two, or ``None`` when it should not be split.

        The top bin is split when it holds at least twice an equal share of ``pool`` (``2 n /
        K`` of the ``n`` rewards) and fewer than ``max_bins`` bins are in use; the new edge is
        the median of the pool's rewards in the top bin, so both halves hold about as many.
        Nothing is split when that median is not strictly above the current top edge or not
        below the top bin's largest reward (ties: the halves could not be told apart).

        Args:
            pool: rewards the bins should describe (reward units), e.g. the replay buffer's.
            max_bins: the most bins there may be (the number of reward tokens).
        """
        if self.num_bins >= max_bins or not len(pool):
            return None
        values = torch.tensor(list(pool), dtype=torch.float64)
        top = values[values >= self.edges[-1]] if self.edges else values
        if len(top) < 2 or len(top) * self.num_bins < 2 * len(values):
            return None
        edge = float(torch.quantile(top, 0.5))
        if (self.edges and edge <= self.edges[-1]) or edge >= float(top.max()):
            return None
        return RewardBinning([*self.edges, edge])

    def __call__(self, rewards: torch.Tensor) -> torch.Tensor:
        """Bin indices, ``LongTensor`` of the same shape as ``rewards``, values in ``[0, K)``."""
        edges = torch.tensor(self.edges, dtype=rewards.dtype, device=rewards.device)
        return torch.bucketize(rewards.contiguous(), edges, right=True)

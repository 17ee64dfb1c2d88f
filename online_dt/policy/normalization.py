"""Reward normalisation (scalar mode) and reward binning into reward tokens (token mode).

Scalar mode feeds ``(r - centre) / scale`` to the conditioning head (:class:`RewardNormalizer`);
token mode maps a reward to one of K bins (:class:`RewardBinning`), each with its own token
``<|reward_k|>`` (:func:`reward_token`), as Quark (Lu et al., 2022) does with reward tokens;
with several objectives each objective has its own bins and tokens.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch

from online_dt.config import NormalizationConfig


def reward_token(k: int, objective: str | None = None) -> str:
    """The text of reward token ``k``: ``<|reward_k|>`` for the one reward, or
    ``<|reward_{objective}_{k}|>`` for objective ``objective`` of a token-mode policy with
    ``conditioning.objectives`` (names are identifiers starting with a letter or ``_``, so the
    two families never collide)."""
    if objective is None:
        return f"<|reward_{k}|>"
    return f"<|reward_{objective}_{k}|>"


class RewardNormalizer:
    """Normalisation of rewards for the scalar head: affine, running or quantile.

    ``affine`` computes ``(r - centre) / scale`` with the configured centre and scale.
    ``running`` tracks the mean and standard deviation of every reward passed to :meth:`update`
    (Welford's online algorithm) and starts from the configured centre/scale until two rewards
    have been seen. ``quantile`` maps a reward to its normal score ``Phi^-1(F(r))`` under the
    weighted empirical distribution ``F`` of the rewards passed to :meth:`update` (all of
    them, or the first ``fit_count``; :meth:`_quantile_score`); it is affine until
    ``min_count`` rewards have been seen.
    """

    def __init__(self, cfg: NormalizationConfig) -> None:
        self.kind = cfg.kind
        self.center = cfg.center
        self.scale = cfg.scale
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min_count = cfg.min_count
        self.max_knots = cfg.max_knots
        self.fit_count = cfg.fit_count
        self.knots: list[float] = []
        """``quantile``: sorted rewards summarising every reward seen (reward units)."""
        self.weights: list[float] = []
        """``quantile``: how many seen rewards each knot stands for."""
        self._table: tuple[torch.Tensor, torch.Tensor] | None = None  # _quantile_table's

    def update(self, rewards: Sequence[float]) -> None:
        """Fold rewards (reward units) into the running statistics or the empirical
        distribution; no-op for ``affine``."""
        if self.kind == "quantile":
            self._add_knots(rewards)
            return
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

    def _add_knots(self, rewards: Sequence[float]) -> None:
        if self.fit_count is not None:
            rewards = list(rewards)[: max(self.fit_count - self.count, 0)]
        if not rewards:
            return
        pairs = sorted(
            [*zip(self.knots, self.weights, strict=True), *((float(r), 1.0) for r in rewards)]
        )
        self.count += len(rewards)
        while len(pairs) > self.max_knots:
            # merge sorted neighbours pairwise into their weighted mean (weights add): a
            # deterministic, bounded summary of every reward seen
            merged = [
                ((a * wa + b * wb) / (wa + wb), wa + wb)
                for (a, wa), (b, wb) in zip(pairs[0::2], pairs[1::2], strict=False)
            ]
            if len(pairs) % 2:
                merged.append(pairs[-1])
            pairs = merged
        self.knots = [v for v, _ in pairs]
        self.weights = [w for _, w in pairs]
        self._table = None

    def _quantile_table(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The distinct knot values and their mid-ranks ``F`` (float64, CPU), rebuilt only when
        the knots change (scoring runs on every forward pass)."""
        if self._table is None:
            x = torch.tensor(self.knots, dtype=torch.float64)
            w = torch.tensor(self.weights, dtype=torch.float64)
            xu, inverse = torch.unique(x, return_inverse=True)
            wu = torch.zeros_like(xu).index_add_(0, inverse, w)
            self._table = (xu, (torch.cumsum(wu, 0) - wu / 2) / wu.sum())
        return self._table

    def _quantile_score(self, rewards: torch.Tensor) -> torch.Tensor:
        """Normal score of ``rewards`` under the weighted empirical distribution of the knots.

        Each distinct value ``x_u`` gets the mid-rank ``F_u = (W(< x_u) + W(= x_u) / 2) / W``
        (ties share one rank, as for the many exactly neutral rewards of a sentiment model);
        ``F`` is linear between distinct values and ``Phi^-1(F)`` is the score. Below the
        lowest and above the highest value seen the score continues linearly with slope
        ``1 / scale``.
        """
        xu, f = self._quantile_table()
        z = torch.special.ndtri(f)
        r = rewards.detach().to("cpu", torch.float64)  # the knots live on the CPU
        if len(xu) == 1:
            out = z[0] + (r - xu[0]) / self.scale
        else:
            i = torch.searchsorted(xu, r.clamp(xu[0], xu[-1]).contiguous(), right=True).clamp(
                1, len(xu) - 1
            )
            x0, x1, f0, f1 = xu[i - 1], xu[i], f[i - 1], f[i]
            t = ((r.clamp(xu[0], xu[-1]) - x0) / (x1 - x0)).clamp(0.0, 1.0)
            out = torch.special.ndtri(f0 + t * (f1 - f0))
            out = out + (r - r.clamp(xu[0], xu[-1])) / self.scale
        return out.to(rewards.device, rewards.dtype)

    def __call__(self, rewards: torch.Tensor) -> torch.Tensor:
        """Normalise a tensor of rewards (any shape, reward units); returns the same shape.

        Differentiable only for ``affine`` and ``running`` (``quantile`` is a fixed lookup)."""
        if self.kind == "quantile" and self.count >= self.min_count:
            return self._quantile_score(rewards)
        return (rewards - self.center) / self.scale

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        keys = ("kind", "center", "scale", "count", "mean", "m2")
        if self.kind == "quantile":
            keys += ("min_count", "max_knots", "fit_count", "knots", "weights")
        return {k: getattr(self, k) for k in keys}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned. The saved state wins over the config the
        normaliser was built with (a policy's conditioning is part of its checkpoint)."""
        for k, v in state.items():
            setattr(self, k, v)
        self._table = None


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

"""The ``conditioning`` section: how a target reward enters the policy's input."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from online_dt.config.base import StrictModel


class NormalizationConfig(StrictModel):
    """How a reward is normalised before the scalar head embeds it: ``(r - centre) / scale``."""

    kind: Literal["affine", "running", "quantile"] = "affine"
    """``affine``: fixed ``centre``/``scale``. ``running``: centre and scale are the running mean
    and standard deviation of every reward the policy has been trained on (Welford's method).
    ``quantile``: the reward's normal score ``Phi^-1(F(r))`` under the empirical distribution
    ``F`` of every reward the policy has been trained on (the scalar counterpart of Quark's
    quantile reward tokens), so rare rewards at either end are as far apart in the head's
    input as common ones; beyond the rewards seen it continues linearly with slope
    ``1 / scale``. Until ``min_count`` rewards are seen it is ``affine``."""

    center: float = 0.0
    """Centre for ``affine`` (reward units); the starting mean for ``running``; the centre of
    ``quantile`` until ``min_count`` rewards are seen."""

    scale: float = Field(1.0, gt=0.0)
    """Scale for ``affine`` (reward units, > 0); the starting std for ``running``; for
    ``quantile``, the reward units per unit of normal score beyond the rewards seen (and the
    scale until ``min_count`` rewards are seen)."""

    min_count: int = Field(64, ge=2)
    """``quantile``: rewards seen before the empirical distribution replaces ``affine``."""

    max_knots: int = Field(2048, ge=16)
    """``quantile``: most points kept of the empirical distribution. Beyond it, neighbours in
    sorted order are merged pairwise into their weighted mean (their weights add): a
    deterministic summary of the distribution."""


class ConditioningConfig(StrictModel):
    """How the target reward enters the policy's input (one slot at sequence index 0)."""

    mode: Literal["scalar", "token"] = "scalar"
    """``scalar``: a learned ``Linear(1, hidden)`` embeds the normalised reward. ``token``: the
    reward is binned to one of ``num_reward_tokens`` new tokens ``<|reward_k|>``."""

    normalization: NormalizationConfig = Field(default_factory=NormalizationConfig)
    """Reward normalisation for scalar mode."""

    slot_init: Literal["bos", "mean"] = "mean"
    """Scalar mode: the reward slot's initial embedding. ``bos``: the tokenizer's BOS token
    embedding (EOS when there is no BOS), with the head's weight at a tenth of the embeddings'
    standard deviation, so that the untrained policy reads like the base model after a
    document separator. ``mean``: the mean token embedding, weight at the embeddings' standard
    deviation. A model whose tokenizer has neither token falls back to ``mean``."""

    num_reward_tokens: int = Field(8, ge=2, le=1024)
    """Number of reward bins (and reward tokens) in token mode."""

    bin_method: Literal["fixed", "quantile"] = "quantile"
    """``fixed``: bin edges are ``bin_edges``. ``quantile``: edges are re-cut at the quantiles of
    the rewards the policy is first trained on (equal-mass bins)."""

    bin_edges: list[float] | None = None
    """Interior bin edges for ``fixed`` binning: ``num_reward_tokens - 1`` increasing values.
    When omitted with ``fixed``, edges are spaced evenly over ``[reward_min, reward_max]``."""

    reward_min: float = -1.0
    """Lower end of the reward range, for evenly spaced fixed edges and for clamping targets."""

    reward_max: float = 1.0
    """Upper end of the reward range, for evenly spaced fixed edges and for clamping targets."""

    @model_validator(mode="after")
    def _check_bins(self) -> ConditioningConfig:
        if self.reward_max <= self.reward_min:
            raise ValueError("reward_max must be greater than reward_min")
        if self.bin_edges is not None:
            if len(self.bin_edges) != self.num_reward_tokens - 1:
                raise ValueError(
                    f"bin_edges needs num_reward_tokens - 1 = {self.num_reward_tokens - 1} values,"
                    f" got {len(self.bin_edges)}"
                )
            if any(b <= a for a, b in zip(self.bin_edges, self.bin_edges[1:], strict=False)):
                raise ValueError("bin_edges must be strictly increasing")
        return self

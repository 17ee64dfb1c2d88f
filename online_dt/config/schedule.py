"""The ``schedule`` section: the reward target the online loop conditions on."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from online_dt.config.base import StrictModel


class ScheduleConfig(StrictModel):
    """The reward-target schedule: which target the policy is conditioned on each iteration."""

    kind: Literal["constant", "linear", "quantile", "max_plus_margin", "topk", "pareto"] = (
        "quantile"
    )
    """``constant``: ``value`` every iteration (Online Decision Transformer's exploration
    return-to-go). ``linear``: from ``start`` to ``end`` over ``iterations``. ``quantile``: the
    q-th quantile of achieved rewards in the buffer, q rising from ``q_start`` to ``q_end`` over
    ``iterations``. ``max_plus_margin``: best achieved reward plus ``margin``. ``topk``: mean +
    std * U(0, 1) of the ``k`` best achieved rewards (upside-down RL). ``pareto`` (the one
    schedule of a run with ``conditioning.objectives``, and only of one): each prompt gets a
    preference vector, spread evenly over the simplex, and asks for the point of the replay
    buffer's empirical Pareto front that maximises the preference-weighted sum of normalised
    rewards, stepped ``front_step`` outwards along the preference (Rewards-in-Context's
    preference-to-target mapping, Yang et al., 2024, with a step beyond the front to explore,
    as upside-down RL asks above the data); see :mod:`online_dt.loop.front_schedule`."""

    value: float = 0.0
    """``constant``: the target (reward units)."""

    start: float = 0.0
    """``linear``: target at iteration 0 (reward units); also the target of every data-driven
    schedule while the buffer is empty."""

    end: float = 1.0
    """``linear``: target from iteration ``iterations`` on (reward units)."""

    iterations: int = Field(10, ge=1)
    """``linear``/``quantile``: iterations over which the target (or q) moves to its end."""

    q_start: float = Field(0.5, ge=0.0, le=1.0)
    """``quantile``: quantile at iteration 0."""

    q_end: float = Field(0.9, ge=0.0, le=1.0)
    """``quantile``: quantile from iteration ``iterations`` on."""

    margin: float = Field(0.05, ge=0.0)
    """``max_plus_margin``: added to the best achieved reward (reward units)."""

    k: int = Field(32, ge=1)
    """``topk``: how many of the best achieved rewards to use."""

    max_increase: float | None = Field(None, gt=0.0)
    """Cap on how far the target may rise from one iteration to the next (reward units)."""

    monotone: bool = False
    """Never lower the target below the previous iteration's."""

    spread: float = Field(0.0, ge=0.0)
    """Per-sample exploration: each prompt's target is drawn uniformly from
    ``target ± spread`` (reward units)."""

    probe_fraction: float = Field(0.0, ge=0.0, le=1.0)
    """Per-sample calibration probes: this fraction of each iteration's prompts (drawn at
    random) get a target uniform in ``[probe_min, target]`` instead of the spread around the
    target, so the policy keeps being asked for, and sampling, rewards below the one it is
    pushed towards (the spread's ``[target - spread, target + spread]`` leaves them to the
    early iterations)."""

    probe_min: float = -1.0
    """``probe_fraction``: the lowest probe target (reward units)."""

    best_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    """With ``conditioning.best_command``: this fraction of each iteration's prompts (rounded,
    drawn at random) asks for the best command (``conditioning.best_target``) instead of a
    target of the schedule; the best sample of each such prompt trains the best command
    (``online.best_rows``). Drawn after ``spread`` and ``probe_fraction``, from every prompt,
    so a probe may become a best ask. Below 1, so the schedule's targets keep some prompts. 0:
    the best command is never asked for (needed 0 without ``best_command``)."""

    front_mapping: Literal["weighted_sum", "chebyshev"] = "weighted_sum"
    """``pareto``: how a preference picks its front point. ``weighted_sum``: the point with the
    largest preference-weighted sum of normalised rewards (RiC's mapping as issue #14 states
    it; it picks only the corners of the front's convex hull). ``chebyshev``: the point where
    the ray from every objective's low end along the preference leaves the dominated region
    (the weighted Chebyshev scalarisation; Miettinen, 1999; MOEA/D, Zhang & Li, 2007), which
    spreads evenly spread preferences along the whole front."""

    front_step: float = Field(0.1, ge=0.0)
    """``pareto``: how far beyond the front point each prompt asks, along its preference
    vector, in normalised units (each objective's ``[low, high]`` is 2 wide)."""

    front_spread: float = Field(0.05, ge=0.0)
    """``pareto``: per-sample exploration: each objective of each prompt's target gets
    uniform noise in ``± front_spread`` (normalised units), before the clamp to its range."""

    min_target: float | None = None
    """Clamp targets to at least this value (reward units)."""

    max_target: float | None = None
    """Clamp targets to at most this value (reward units)."""

    seed: int = 0
    """Seed of the schedule's own randomness (``topk`` draws, spread)."""

    @model_validator(mode="after")
    def _check(self) -> ScheduleConfig:
        if self.q_end < self.q_start:
            raise ValueError("q_end must be >= q_start")
        if (
            self.min_target is not None
            and self.max_target is not None
            and self.max_target < self.min_target
        ):
            raise ValueError("max_target must be >= min_target")
        return self

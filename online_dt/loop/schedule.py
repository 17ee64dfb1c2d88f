"""Reward-target schedules for online decision-transformer training.

Each iteration the policy is conditioned on a *target* reward; the samples it produces are
scored and stored in the replay buffer with their *achieved* reward. The target is raised step by
step while staying close to what the buffer shows is achievable.

A schedule is a plain function (see :class:`ScheduleFn`) of the iteration, a summary of the
buffer's achieved rewards (:class:`~online_dt.loop.reward_stats.RewardStats`), the previous
target and the config; it returns the *raw* target. :func:`next_target` looks the function up
in :data:`SCHEDULES` by ``ScheduleConfig.kind`` and post-processes the raw value, in this order:

1. ``max_increase``: ``t = min(t, previous + max_increase)`` (not on the first iteration, when
   there is no previous target);
2. ``monotone``: ``t = max(t, previous)`` (not on the first iteration);
3. clamp: ``t = max(t, min_target)`` then ``t = min(t, max_target)`` (each when set).

Steps 1 and 2 commute (together they clip ``t`` to ``[previous, previous + max_increase]``);
the clamp comes last, so the bounds always hold, even against ``monotone``.

Randomness (the ``topk`` draw, the per-sample spread) comes from generators seeded by
``(cfg.seed, iteration, stream)``, never from a generator carried across iterations, so a
:class:`ScheduleState` of two numbers (iteration, previous target) serialised to JSON is enough
to resume and reproduce the same trajectory. All targets are in reward units.

New schedules are plain functions added to :data:`SCHEDULES` (``ScheduleConfig.kind`` must also
accept the new name for a config to select it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from online_dt.config import ScheduleConfig
from online_dt.loop.reward_stats import RewardStats
from online_dt.util.seeds import derived_rng

STREAM_TOPK = 0
"""RNG stream of the ``topk`` schedule's U(0, 1) draw."""
STREAM_SPREAD = 1
"""RNG stream of the per-sample spread (:func:`sample_targets`)."""

STATE_VERSION = 1
"""Version written by :meth:`ScheduleState.to_dict`."""

# ---------------------------------------------------------------------------------------------
# schedules: raw target of one iteration
# ---------------------------------------------------------------------------------------------


class ScheduleFn(Protocol):
    """A schedule: the raw target (reward units) of iteration ``iteration`` (0-based).

    ``previous`` is the previous iteration's final target (``None`` on the first iteration);
    ``rng`` is a generator dedicated to this iteration (seeded from ``cfg.seed`` and the
    iteration), to be used for any random draw so that resume reproduces the value.
    """

    def __call__(
        self,
        cfg: ScheduleConfig,
        iteration: int,
        stats: RewardStats,
        previous: float | None,
        rng: np.random.Generator,
    ) -> float: ...


def progress(iteration: int, iterations: int) -> float:
    """Fraction of a ramp done at ``iteration``: ``min(iteration / iterations, 1)`` in [0, 1]."""
    return min(iteration / iterations, 1.0)


def constant(
    cfg: ScheduleConfig,
    iteration: int,
    stats: RewardStats,
    previous: float | None,
    rng: np.random.Generator,
) -> float:
    """``cfg.value`` at every iteration: the fixed exploration return-to-go of the Online
    Decision Transformer (Zheng, Zhang and Grover, 2022, "Online Decision Transformer")."""
    return float(cfg.value)


def linear(
    cfg: ScheduleConfig,
    iteration: int,
    stats: RewardStats,
    previous: float | None,
    rng: np.random.Generator,
) -> float:
    """Linear ramp from ``cfg.start`` (iteration 0) to ``cfg.end`` (iteration
    ``cfg.iterations`` and after), independent of the buffer."""
    return cfg.start + (cfg.end - cfg.start) * progress(iteration, cfg.iterations)


def quantile(
    cfg: ScheduleConfig,
    iteration: int,
    stats: RewardStats,
    previous: float | None,
    rng: np.random.Generator,
) -> float:
    """The q-th quantile of the achieved rewards (:meth:`RewardStats.quantile`), with q rising
    linearly from ``cfg.q_start`` (iteration 0) to ``cfg.q_end`` (iteration ``cfg.iterations``
    and after). ``cfg.start`` while the buffer is empty."""
    if stats.count == 0:
        return float(cfg.start)
    q = cfg.q_start + (cfg.q_end - cfg.q_start) * progress(iteration, cfg.iterations)
    return stats.quantile(min(max(q, 0.0), 1.0))


def max_plus_margin(
    cfg: ScheduleConfig,
    iteration: int,
    stats: RewardStats,
    previous: float | None,
    rng: np.random.Generator,
) -> float:
    """Best achieved reward plus ``cfg.margin``; ``cfg.start`` while the buffer is empty."""
    if stats.max is None:
        return float(cfg.start)
    return stats.max + cfg.margin


def topk(
    cfg: ScheduleConfig,
    iteration: int,
    stats: RewardStats,
    previous: float | None,
    rng: np.random.Generator,
) -> float:
    """``M + S * u`` with ``u ~ U(0, 1)``, where ``M`` and ``S`` are the mean and (population)
    standard deviation of the ``cfg.k`` best achieved rewards (all of them when fewer): the
    desired-return exploration of upside-down RL (Srivastava et al., 2019, "Training Agents
    using Upside-Down Reinforcement Learning"; Schmidhuber, 2019). The result lies in
    ``[M, M + S]``. ``cfg.start`` while the buffer is empty."""
    if stats.count == 0:
        return float(cfg.start)
    top = stats.top(cfg.k)
    u = float(rng.random())
    return float(top.mean()) + float(top.std()) * u


SCHEDULES: dict[str, ScheduleFn] = {
    "constant": constant,
    "linear": linear,
    "quantile": quantile,
    "max_plus_margin": max_plus_margin,
    "topk": topk,
}
"""Schedule functions by ``ScheduleConfig.kind``; add a plain function to add a schedule."""


# ---------------------------------------------------------------------------------------------
# state, post-processing and spread
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleState:
    """Where a schedule stands: everything needed to resume it exactly.

    Attributes:
        iteration: the iteration whose target :func:`next_target` computes next (0-based, >= 0);
            also the counter of the per-iteration random streams.
        previous_target: the last target returned (reward units), ``None`` before the first.
        seed: ``cfg.seed`` of the run that produced this state (``None``: not yet bound);
            :func:`next_target` refuses a config with another seed.
    """

    iteration: int = 0
    previous_target: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.iteration, bool) or not isinstance(self.iteration, int):
            raise ValueError(f"iteration must be an int, got {self.iteration!r}")
        if self.iteration < 0:
            raise ValueError(f"iteration must be >= 0, got {self.iteration}")
        if self.previous_target is not None and not math.isfinite(self.previous_target):
            raise ValueError(f"previous_target must be finite, got {self.previous_target}")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise ValueError(f"seed must be an int or None, got {self.seed!r}")

    @classmethod
    def initial(cls, cfg: ScheduleConfig) -> ScheduleState:
        """The state before the first iteration of a run with ``cfg``."""
        return cls(iteration=0, previous_target=None, seed=cfg.seed)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (floats round-trip exactly through ``json``)."""
        return {
            "version": STATE_VERSION,
            "iteration": self.iteration,
            "previous_target": self.previous_target,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScheduleState:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: unknown version, missing or unknown keys, or invalid values.
        """
        version = data.get("version")
        if version != STATE_VERSION:
            raise ValueError(f"unsupported schedule state version {version!r}")
        keys = {"version", "iteration", "previous_target", "seed"}
        if set(data) != keys:
            raise ValueError(
                f"schedule state needs exactly the keys {sorted(keys)}, got {sorted(data)}"
            )
        prev = data["previous_target"]
        if prev is not None:
            if isinstance(prev, bool) or not isinstance(prev, int | float):
                raise ValueError(f"previous_target must be a number or null, got {prev!r}")
            prev = float(prev)
        return cls(iteration=data["iteration"], previous_target=prev, seed=data["seed"])


def clamp(cfg: ScheduleConfig, target: float) -> float:
    """Clamp a target to ``[cfg.min_target, cfg.max_target]`` (each bound only when set)."""
    if cfg.min_target is not None:
        target = max(target, cfg.min_target)
    if cfg.max_target is not None:
        target = min(target, cfg.max_target)
    return float(target)


def next_target(
    cfg: ScheduleConfig, state: ScheduleState, stats: RewardStats
) -> tuple[float, ScheduleState]:
    """The target of iteration ``state.iteration`` and the state after it.

    Computes the raw value of ``SCHEDULES[cfg.kind]``, then applies in order: the
    ``max_increase`` cap relative to the previous target, ``monotone``, and the clamp to
    ``[min_target, max_target]`` (the first two are skipped on the first iteration). With an
    empty buffer the data-driven schedules (``quantile``, ``max_plus_margin``, ``topk``) give
    ``cfg.start`` as the raw value.

    Args:
        cfg: the schedule config.
        state: the state returned by the previous call (or :meth:`ScheduleState.initial`).
        stats: the replay buffer's achieved rewards now.

    Returns:
        ``(target, new_state)``; ``new_state`` has ``iteration + 1`` and ``previous_target =
        target``. Pass it to :func:`sample_targets` for this target's per-sample spread.

    Raises:
        ValueError: ``cfg.kind`` has no registered schedule, ``state.seed`` differs from
            ``cfg.seed``, or the target is not finite (e.g. a NaN in the config).
    """
    fn = SCHEDULES.get(cfg.kind)
    if fn is None:
        raise ValueError(f"unknown schedule kind {cfg.kind!r}; known: {sorted(SCHEDULES)}")
    if state.seed is not None and state.seed != cfg.seed:
        raise ValueError(
            f"schedule state was produced with seed {state.seed}, config has seed {cfg.seed}"
        )
    i, prev = state.iteration, state.previous_target
    target = float(fn(cfg, i, stats, prev, derived_rng(cfg.seed, i, STREAM_TOPK)))
    if prev is not None:
        if cfg.max_increase is not None:
            target = min(target, prev + cfg.max_increase)
        if cfg.monotone:
            target = max(target, prev)
    target = clamp(cfg, target)
    if not math.isfinite(target):
        raise ValueError(
            f"schedule {cfg.kind!r} gave a non-finite target {target} at iteration {i}"
        )
    return target, ScheduleState(iteration=i + 1, previous_target=target, seed=cfg.seed)


def sample_targets(
    cfg: ScheduleConfig,
    target: float,
    n: int,
    rng_or_state: np.random.Generator | ScheduleState | int,
    *,
    stream: int = 0,
    best_target: float | None = None,
) -> list[float]:
    """Per-sample targets: each uniform in ``[target - spread, target + spread]``, then clamped
    to ``[min_target, max_target]`` (reward units); with ``probe_fraction``, that fraction of
    them (at random) uniform in ``[probe_min, target]`` instead. With ``spread == 0`` and no
    probes every value is the clamped ``target`` and nothing is drawn. Last, with
    ``best_fraction``, that fraction of them (rounded, at random) is ``best_target``, unclamped
    (the best command, ``conditioning.best_target``).

    Args:
        cfg: the schedule config (``spread``, bounds, ``seed``).
        target: the iteration's target, normally from :func:`next_target`.
        n: number of samples, >= 0.
        rng_or_state: a :class:`ScheduleState` (the one :func:`next_target` returned with
            ``target``): draws are determined by ``(cfg.seed, state.iteration, stream)``, so a
            resumed run reproduces them; an ``int``: a seed; or a ``numpy`` generator, drawn
            from (its caller owns reproducibility).
        stream: distinguishes several calls in one iteration (e.g. batches), >= 0.
        best_target: the best command's target; needed when ``cfg.best_fraction > 0``.

    Raises:
        ValueError: ``n < 0``, ``stream < 0``, ``target`` not finite, or ``best_fraction > 0``
            without ``best_target``.
        TypeError: ``rng_or_state`` is none of the accepted types.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if stream < 0:
        raise ValueError(f"stream must be >= 0, got {stream}")
    if not math.isfinite(target):
        raise ValueError(f"target must be finite, got {target}")
    if isinstance(rng_or_state, ScheduleState):
        rng = derived_rng(cfg.seed, rng_or_state.iteration, STREAM_SPREAD, stream)
    elif isinstance(rng_or_state, np.random.Generator):
        rng = rng_or_state
    elif isinstance(rng_or_state, int) and not isinstance(rng_or_state, bool):
        rng = derived_rng(rng_or_state, STREAM_SPREAD, stream)
    else:
        raise TypeError(
            f"rng_or_state must be a ScheduleState, int or numpy Generator, got"
            f" {type(rng_or_state).__name__}"
        )
    if cfg.best_fraction > 0.0 and best_target is None:
        raise ValueError("schedule.best_fraction > 0 needs best_target (the best command's)")
    if cfg.spread == 0.0 and cfg.probe_fraction == 0.0:
        targets = [clamp(cfg, target)] * n
    else:
        draws = rng.uniform(target - cfg.spread, target + cfg.spread, size=n)
        if cfg.probe_fraction > 0.0:
            probes = rng.permutation(n)[: round(cfg.probe_fraction * n)]
            draws[probes] = rng.uniform(min(cfg.probe_min, target), target, size=len(probes))
        targets = [clamp(cfg, float(x)) for x in draws]
    if cfg.best_fraction > 0.0 and best_target is not None:
        for i in rng.permutation(n)[: round(cfg.best_fraction * n)]:
            targets[int(i)] = best_target
    return targets

"""Steering a single-reward evaluation: classifier-free guidance and recalibration.

:func:`plan_guidance` settles the report's ``guidance`` (the mixture of rewards the guided HF
sampler steers against, and its prior weights); :func:`recalibrate` measures the reward
achieved at each conditioning value and fits the
:class:`~online_dt.policy.recalibration.Recalibration` that the evaluated targets are asked
through. The evaluation's seed keys (:data:`REFERENCE_SEED_KEY`, :data:`RECALIBRATION_SEED_KEY`)
are kept here together so that they stay distinct.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from online_dt.eval.source import EvalError
from online_dt.util.seeds import derived_seed

# Seed keys of ``online-dt eval`` (:mod:`online_dt.eval.run`). Target k samples with
# ``derived_seed(seed, k)``; each key below must differ from every other and from any target
# index, or two of these streams would draw the same random numbers.
REFERENCE_SEED_KEY = 2**20
"""The reference's sampling seed is ``derived_seed(seed, REFERENCE_SEED_KEY)`` (target k uses
``derived_seed(seed, k)``, and no evaluation has that many targets)."""

RECALIBRATION_SEED_KEY = 2**20 + 1
"""Recalibration draws its prompts with ``derived_seed(seed, RECALIBRATION_SEED_KEY)``, samples
grid value k with ``derived_seed(seed, RECALIBRATION_SEED_KEY, k)`` and mixes with
``derived_seed(seed, RECALIBRATION_SEED_KEY, 2**20)``."""


def plan_guidance(
    rewards_seen: Any, weight: float, rewards: Sequence[float] | None, prior: str
) -> dict[str, Any] | None:
    """The report's ``guidance``: the mixture of rewards the guided HF sampler steers against.

    Args:
        rewards_seen: float ``[N]`` achieved rewards of the replay buffer (reward units).
        weight: the guidance weight ``w >= 0``; 0 turns guidance off.
        rewards: the mixture's rewards (reward units, ascending); ``None`` or empty:
            :func:`~online_dt.policy.guidance.even_grid` of ``rewards_seen``.
        prior: the mixture's prior weights: ``"buffer"`` (the share of ``rewards_seen``
            nearest each reward, :func:`~online_dt.policy.guidance.buffer_prior`) or
            ``"uniform"`` (equal weights).

    Returns:
        ``{weight, rewards, prior, prior_weights}`` (rewards in reward units), or ``None`` for
        ``weight == 0``.

    Raises:
        EvalError: the buffer is empty and it is needed (default rewards, ``buffer`` prior).
        ValueError: ``rewards`` not ascending (from ``buffer_prior``).
    """
    from online_dt.policy.guidance import buffer_prior, even_grid

    if weight == 0:
        return None
    needs_buffer = not rewards or prior == "buffer"
    if needs_buffer and not len(rewards_seen):
        raise EvalError(
            "the run's replay buffer is empty: pass --guidance-grid R ... and "
            "--guidance-prior uniform"
        )
    grid = [float(r) for r in rewards] if rewards else even_grid(rewards_seen)
    weights = buffer_prior(rewards_seen, grid) if prior == "buffer" else [1.0] * len(grid)
    return {"weight": weight, "rewards": grid, "prior": prior, "prior_weights": weights}


def recalibrate(
    sampler: Any,
    score: Any,
    policy: Any,
    prompts: Sequence[str],
    samples: int,
    grid: Sequence[float],
    strategy: str,
    cfg: Any,
    seed: int,
) -> tuple[dict[str, Any], Any]:
    """The report's ``recalibration`` and the fitted
    :class:`~online_dt.policy.recalibration.Recalibration`: ``samples`` prompts drawn with the
    seed ``derived_seed(seed, RECALIBRATION_SEED_KEY)``, measured at every value of
    :func:`~online_dt.policy.recalibration.conditioning_grid` (``grid`` in scalar mode).

    Args:
        sampler: the evaluation's sampler (:func:`~online_dt.eval.loading.load_sampler`).
        score: ``score(prompts, completions)``, the validated reward function (reward units).
        policy: the evaluated HF policy (its ``conditioner`` gives the conditioning values).
        prompts: the run's prompts to draw from (with replacement).
        samples: prompts drawn, each sampled once at every conditioning value (``>= 1``).
        grid: scalar mode's conditioning values (reward units); token mode measures each
            bin's midpoint instead.
        strategy: ``"mix"`` or ``"interpolate"``, recorded in the report (the caller asks
            the fit with it).
        cfg: the run config (``sampling``).
        seed: the evaluation's seed.

    Returns:
        ``(report, recalibration)``: the report is the fit's
        ``conditioning``/``measured``/``achieved``/``counts`` plus ``strategy``, ``samples``
        and ``calls`` (``samples * K`` reward-model calls).

    Raises:
        ValueError: no prompts, or fewer than two distinct conditioning values.
    """
    import numpy as np

    from online_dt.eval.calibration import measure_recalibration
    from online_dt.policy.recalibration import conditioning_grid
    from online_dt.rollout.sampler import SamplingParams

    values = conditioning_grid(policy.conditioner, grid)
    rng = np.random.default_rng(derived_seed(seed, RECALIBRATION_SEED_KEY))
    chosen = [prompts[int(i)] for i in rng.integers(0, len(prompts), samples)]
    recal = measure_recalibration(
        sampler,
        score,
        chosen,
        values,
        lambda k: SamplingParams.from_config(
            cfg.sampling, n=1, seed=derived_seed(seed, RECALIBRATION_SEED_KEY, k)
        ),
    )
    report = {
        **recal.to_dict(),
        "strategy": strategy,
        "samples": samples,
        "calls": samples * len(values),
    }
    return report, recal

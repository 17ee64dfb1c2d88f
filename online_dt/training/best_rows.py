"""The best command's training rows: reward-ranked fine-tuning inside the conditional policy.

With ``conditioning.best_command``, a share of each iteration's prompts asks for the best
command (``schedule.best_fraction``). Of each such prompt's samples, the one with the highest
achieved reward (less ``online.best_kl_coef`` times its KL to the base model; with
``online.best_full_length``, among the samples that reached the length limit if any did) is
kept, labelled with the best command's target, and added to every training step of the
following training (``online.best_rows`` rows per step). This is RAFT's round (Dong et al.,
2023, "RAFT: Reward rAnked FineTuning", arXiv 2304.06767: sample k per prompt, keep the best,
fine-tune on it) for one command of the policy. Hindsight relabeling alone teaches only rewards
the buffer holds; what the best command gives climbs with each round, as RAFT's policy does.
The same samples are in the replay buffer with their achieved rewards, unless
``online.best_asks_in_buffer`` is false.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from online_dt.samples import Sample, reached_length_limit


def best_of_prompts(
    samples: Sequence[Sample],
    reward_max: float,
    kl_coef: float = 0.0,
    full_length: int | None = None,
) -> list[Sample]:
    """The best sample of each prompt among ``samples`` asked for the best command
    (``target_reward`` above ``reward_max``), in the order of their prompts' first sample.
    Ties keep the first. Samples asked for a reward target are skipped.

    "Best" is the highest achieved reward minus ``kl_coef`` times the sample's KL to the base
    model, ``log pi - log p_base`` of its completion (nats; minus its
    ``log_importance_weight``): the KL-regularised reward that RLHF maximises (Ziegler et al.,
    2019, "Fine-Tuning Language Models from Human Preferences", arXiv 1909.08593), used here
    to rank RAFT's samples instead of the reward alone (docs/method.md, round 26). Among
    samples of nearly equal reward it keeps the one nearest the base model's text.

    Args:
        samples: one iteration's samples (scalar rewards).
        reward_max: ``conditioning.reward_max``; a target above it is the best command.
        kl_coef: ``online.best_kl_coef``, reward units per nat, >= 0. With ``kl_coef > 0`` a
            sample without a log importance weight (the base model gives its completion
            probability 0) ranks below every sample with one (of its length group, with
            ``full_length``).
        full_length: ``sampling.max_new_tokens`` with ``online.best_full_length``: a sample
            whose completion has at least this many tokens (it reached the limit) ranks above
            every sample of its prompt with fewer (it ended early), whatever their scores.
            ``None``: length does not count.
    """
    best: dict[str, tuple[tuple[bool, float], Sample]] = {}
    for s in samples:
        if s.target_reward is None or float(s.target_reward) <= reward_max:  # type: ignore[arg-type]
            continue
        reward = float(s.achieved_reward)  # type: ignore[arg-type]
        if kl_coef > 0:
            log_iw = s.log_importance_weight
            reward = reward + kl_coef * log_iw if log_iw is not None else -math.inf
        full = reached_length_limit(s.completion_tokens, full_length)
        score = (full, reward)
        kept = best.get(s.prompt)
        if kept is None or score > kept[0]:
            best[s.prompt] = (score, s)
    return [s for _, s in best.values()]


class BestRows:
    """The newest round's best samples, handed out ``rows`` per training step.

    :meth:`update` replaces the held samples with the best of a new append's (none: nothing is
    held until the next one asks for the best command); :meth:`take` returns the next
    ``rows`` of them in a shuffled order that starts again when used up, so over ``n`` steps
    each of ``m`` samples is trained on ``n * rows / m`` times, give or take one.

    Args:
        rows: rows per step (``online.best_rows``), >= 0.
        seed: seeds the shuffles (with each update's iteration).

    Raises:
        ValueError: ``rows < 0``.
    """

    def __init__(self, rows: int, seed: int) -> None:
        if rows < 0:
            raise ValueError(f"rows must be >= 0, got {rows}")
        self.rows = rows
        self.seed = seed
        self.samples: list[Sample] = []
        self.achieved: list[float] = []
        self._rng = np.random.default_rng([seed, 0])
        self._order: list[int] = []

    def update(self, best: Sequence[Sample], label: float, iteration: int) -> None:
        """Hold ``best`` (from :func:`best_of_prompts`), relabelled with ``label`` (the best
        command's target), instead of the previous round's; :attr:`achieved` keeps their
        achieved rewards. ``iteration`` (>= -1) seeds their order with ``seed``, so a resumed
        run deals them as the uninterrupted one."""
        self.achieved = [float(s.achieved_reward) for s in best]  # type: ignore[arg-type]
        self.samples = [dataclasses.replace(s, achieved_reward=label) for s in best]
        self._rng = np.random.default_rng([self.seed, iteration + 1])
        self._order = []

    def take(self) -> list[Sample]:
        """The next ``rows`` held samples (``[]`` when none are held or ``rows`` is 0)."""
        if not self.samples or self.rows == 0:
            return []
        out: list[Sample] = []
        while len(out) < self.rows:
            if not self._order:
                self._order = [int(i) for i in self._rng.permutation(len(self.samples))]
            out.append(self.samples[self._order.pop()])
        return out

"""The one sample lineage: a rollout, then a sample labelled with its achieved reward.

One completion passes through two types on its way from the sampler to a gradient::

    sampler ── Rollout ──> reward model ── Sample.from_rollout ──> replay buffer ──> trainer
    (ids, text, logprobs,     (score)        (hindsight relabeling:   (assigns        (reads prompt,
     target, policy version)                  achieved reward = label) sample_id)      completion,
                                                                                       achieved_reward)

* :class:`Rollout` is what every sampler returns (vLLM, the HF reference, the policy's own
  ``generate``): token ids, text, per-token logprobs, the target it was conditioned on and the
  policy version that produced it.
* :class:`Sample` is a completion labelled with the reward it achieved. Made from a rollout
  by :meth:`Sample.from_rollout` (hindsight relabeling), it carries the provenance the replay
  buffer stores; the buffer's row is the same :class:`Sample` with its ``sample_id`` set. The
  trainer reads only ``prompt``, ``completion`` and ``achieved_reward`` (:class:`Labelled`), so
  offline data and tests build a bare ``Sample(prompt, completion, achieved_reward)``.

This module imports nothing from the project: every layer may use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias

Reward: TypeAlias = float | tuple[float, ...]
"""A reward or target: one float, or, in a run with several objectives
(``conditioning.objectives``), one float per objective in the config's order."""


def as_reward(value: float | Sequence[float]) -> Reward:
    """``value`` as a :data:`Reward`: a float stays a float, a sequence becomes a tuple of
    floats (a 0-d array or tensor counts as a float).

    Raises:
        TypeError: ``value`` is neither a real number nor a sequence of them.
    """
    if isinstance(value, int | float):
        return float(value)
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        value = tolist()
        if isinstance(value, int | float):
            return float(value)
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise TypeError(f"a reward is a float or a sequence of floats, got {type(value).__name__}")
    return tuple(float(v) for v in value)


def first_objective(value: Reward) -> float:
    """The reward itself, or the first objective's of a vector: where one number is shown for
    a run with several objectives (the console line, the buffer's ``achieved_reward``
    column)."""
    return value[0] if isinstance(value, tuple) else float(value)


@dataclass
class Rollout:
    """One sampled completion, as a sampler returns it.

    Attributes:
        prompt: the prompt text.
        completion: decoded completion text (special tokens removed).
        token_ids: generated token ids (ending with EOS when ``finished``).
        logprobs: natural-log probability of each generated token under the policy's raw
            distribution (before temperature/top-p), one per token id.
        target: the target reward the completion was conditioned on (reward units; one float
            per objective with ``conditioning.objectives``).
        policy_version: version of the weights that produced it (0: the initial weights).
        finished: True when generation stopped at EOS, False at ``max_new_tokens``.
        prompt_index: index of the prompt in the request.
        created_at: UNIX time (seconds) when the generate call returned (0 if unknown).
        generate_seconds: wall-clock seconds of the generate call that produced it (shared by
            every completion of that call).
        base_logprob: ``sum_t log p_base(y_t)`` of the completion tokens under the base model
            (natural log, ``<= 0``), computed where it was sampled with
            ``sampler.base_logprobs``; ``None``: not computed (the learner computes it).
    """

    prompt: str
    completion: str
    token_ids: list[int]
    logprobs: list[float]
    target: Reward
    policy_version: int = 0
    finished: bool = True
    prompt_index: int = 0
    created_at: float = 0.0
    generate_seconds: float = 0.0
    base_logprob: float | None = None


def reached_length_limit(completion_tokens: int | None, max_new_tokens: int | None) -> bool:
    """Whether a completion of ``completion_tokens`` sampled tokens (its EOS counted when it
    ended, :attr:`Rollout.token_ids`) reached the sampler's ``max_new_tokens``: the sampler
    cut it, or, which the count cannot tell apart, it ended with EOS as its last allowed token.
    ``False`` when either is ``None`` (a text without its sampled length, or no limit)."""
    if completion_tokens is None or max_new_tokens is None:
        return False
    return completion_tokens >= max_new_tokens


class Labelled(Protocol):
    """What training reads of a sample: the text and the reward it is conditioned on.

    Attributes:
        prompt: prompt text.
        completion: completion text (EOS is appended when tokenised, unless the sample's
            ``completion_tokens``, where it has one, say the sampler cut it at the length
            limit: :func:`reached_length_limit`).
        achieved_reward: the conditioning label in reward units (finite; a tuple, one per
            objective, with ``conditioning.objectives``).
    """

    @property
    def prompt(self) -> str: ...

    @property
    def completion(self) -> str: ...

    @property
    def achieved_reward(self) -> Reward: ...


@dataclass(frozen=True)
class Sample:
    """A completion labelled with the reward it achieved; a replay-buffer row once it has an id.

    Only ``prompt``, ``completion`` and ``achieved_reward`` are needed to train on it. The
    provenance fields are set by :meth:`from_rollout` in the online loop, and the replay buffer
    refuses a sample that lacks any of them (``None``).

    Attributes:
        prompt: the prompt text.
        completion: the sampled completion text (without the prompt).
        achieved_reward: the reward model's score of the completion (reward units, finite);
            the label the sample is trained with (hindsight relabeling). With several
            objectives, a tuple of one score per objective, in the config's order.
        target_reward: the target the policy was conditioned on when sampling (reward units;
            a tuple with several objectives).
        policy_version: version of the policy weights that produced the completion.
        iteration: online iteration in which it was sampled (-1: the warm start).
        created_at: when it was sampled (unix seconds).
        scored_at: when it was scored (unix seconds).
        completion_tokens: length of the completion in tokens.
        log_importance_weight: ``log p_base(completion | prompt) - log pi(completion | prompt,
            target)``, nats per completion, of the base model against the policy that sampled
            it (raw distributions, as sampled at temperature 1 and top-p 1); set by the learner
            when ``buffer.importance_weighting`` is on, else ``None``.
        sample_id: unique id assigned by the replay buffer, increasing in insertion order over
            the run; ``None`` until the sample is appended.
    """

    prompt: str
    completion: str
    achieved_reward: Reward
    target_reward: Reward | None = None
    policy_version: int | None = None
    iteration: int | None = None
    created_at: float | None = None
    scored_at: float | None = None
    completion_tokens: int | None = None
    log_importance_weight: float | None = None
    sample_id: int | None = None

    @classmethod
    def from_rollout(
        cls,
        rollout: Rollout,
        achieved_reward: Reward,
        iteration: int,
        scored_at: float,
        log_importance_weight: float | None = None,
    ) -> Sample:
        """Hindsight relabeling: the rollout labelled with the reward it achieved.

        The target it was asked for is kept beside the label (``target_reward``), with the
        policy version, times and length; ``sample_id`` stays ``None`` until the buffer
        assigns it.
        """
        return cls(
            prompt=rollout.prompt,
            completion=rollout.completion,
            achieved_reward=as_reward(achieved_reward),
            target_reward=as_reward(rollout.target),
            policy_version=int(rollout.policy_version),
            iteration=int(iteration),
            created_at=float(rollout.created_at),
            scored_at=float(scored_at),
            completion_tokens=len(rollout.token_ids),
            log_importance_weight=log_importance_weight,
        )

"""What one rollout request returns: its rollouts in prompt order, and what it went through
when sampler replicas were lost (:class:`SamplerRecovery`, recorded in every iteration's
metrics). Filled by :class:`online_dt.loop.sampler_group.SamplerGroup`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from online_dt.samples import Rollout


@dataclass
class SamplerRecovery:
    """What a rollout request went through when replicas were lost.

    Attributes:
        prompts_reissued: prompts re-sent to a replica after it was lost (each stands for its
            ``n`` samples).
        prompts_dropped: prompts given up on: their replica was lost and no healthy one was
            left to re-issue them to.
        sampler_failures: lost calls and stale answers seen.
        sampler_recovery_s: seconds from the first failure to the re-issued chunk's result.
        samples_over_lag: samples dropped before scoring because they were more than
            ``online.max_policy_lag`` versions behind the learner (0 in ``sync`` mode); set by
            :func:`online_dt.loop.loop.bound_policy_lag`.
        samplers_healthy: replicas in the split when the request finished (the group's
            replicas minus those found lost and not back); -1 when not set.
    """

    prompts_reissued: int = 0
    prompts_dropped: int = 0
    sampler_failures: int = 0
    sampler_recovery_s: float = 0.0
    samples_over_lag: int = 0
    samplers_healthy: int = -1

    def metrics(self) -> dict[str, float]:
        """The fields as the iteration record's keys."""
        return asdict(self)


@dataclass
class RolloutBatch:
    """The rollouts of one request, in prompt order, and how it recovered from lost replicas.

    Attributes:
        rollouts: ``P * n`` rollouts, ``prompt_index`` over the whole request.
        recovery: re-issues, drops and failures of this request.
    """

    rollouts: list[Rollout]
    recovery: SamplerRecovery = field(default_factory=SamplerRecovery)

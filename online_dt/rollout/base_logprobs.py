"""A sampler that also scores its completions under the base model (``sampler.base_logprobs``).

Importance weighting and the KL estimate need ``log p_base`` of every new completion: one
teacher-forced forward of the base model. The learner runs it when rollouts arrive without it.
Wrapped in :class:`BaseLogprobSampler`, a sampler runs it itself, right after sampling, so that
in async mode it overlaps the learner's training instead of lengthening it; this is where
OpenRLHF, for one, puts its reference model (an actor of its own beside the rollout engines),
and for the same reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from online_dt.policy.labelled_logits import LabelledLogits
from online_dt.policy.logprobs import completion_base_logprobs
from online_dt.rollout.sampler import Sampler, SamplingParams
from online_dt.samples import Reward, Rollout

if TYPE_CHECKING:
    from online_dt.config import OnlineRunConfig
    from online_dt.policy.policy import RewardConditionedPolicy
    from online_dt.rollout.weight_sync import WeightUpdate


class BaseLogprobSampler:
    """A :class:`~online_dt.rollout.sampler.Sampler` whose rollouts carry ``base_logprob``:
    ``sum_t log p_base(y_t)`` of their completion tokens under ``reference``'s model, computed
    by :func:`~online_dt.policy.logprobs.completion_base_logprobs` (the function the learner
    uses, so the figures are the same).

    Every other call goes to the wrapped sampler unchanged; the reference never changes.

    Args:
        sampler: the sampler that generates (any backend).
        reference: the untrained conditioned policy over the base model, as the learner builds
            its reference (:meth:`~online_dt.policy.policy.RewardConditionedPolicy.fresh`): its
            model is the base model with the run's vocabulary (reward tokens included), its
            tokenizer and slot lay the rollouts out.
        split: apply the base model's output layer at the completion's positions only
            (``training.logits_at_labelled_only``; see
            :class:`~online_dt.policy.labelled_logits.LabelledLogits`).

    Attributes:
        logits: the reference model's :class:`~online_dt.policy.labelled_logits.LabelledLogits`,
            checked once and kept for every call.
    """

    def __init__(
        self, sampler: Sampler, reference: RewardConditionedPolicy, *, split: bool = True
    ) -> None:
        self.sampler = sampler
        self.reference = reference.eval().requires_grad_(False)
        self.logits = LabelledLogits(self.reference.model, split=split)

    @classmethod
    def over_base(
        cls, sampler: Sampler, cfg: OnlineRunConfig, base_path: str
    ) -> BaseLogprobSampler:
        """Wrap ``sampler`` with the reference the learner would build from ``cfg`` over the base
        model at ``base_path`` (hub name or directory).

        Raises:
            OSError: the base model or its tokenizer cannot be found.
        """
        from online_dt.policy.policy import RewardConditionedPolicy

        reference = RewardConditionedPolicy.fresh(cfg, base_path)
        return cls(sampler, reference, split=cfg.training.logits_at_labelled_only)

    @property
    def backend(self) -> str:
        """The wrapped sampler's backend name."""
        return self.sampler.backend

    @property
    def policy_version(self) -> int:
        """The wrapped sampler's policy version."""
        return self.sampler.policy_version

    def generate(
        self, prompts: Sequence[str], targets: Sequence[Reward], params: SamplingParams
    ) -> list[Rollout]:
        """The wrapped sampler's rollouts (see :meth:`Sampler.generate`), each with its
        ``base_logprob`` set."""
        rollouts = self.sampler.generate(prompts, targets, params)
        base = completion_base_logprobs(
            self.reference, self.reference.model, rollouts, logits=self.logits
        )
        for rollout, logprob in zip(rollouts, base, strict=True):
            rollout.base_logprob = logprob
        return rollouts

    def load_weights(self, update: WeightUpdate) -> None:
        """See :meth:`Sampler.load_weights` (the wrapped sampler's; the reference stays)."""
        self.sampler.load_weights(update)

    def close(self) -> None:
        """Close the wrapped sampler, if it has anything to close (vLLM's engine)."""
        getattr(self.sampler, "close", lambda: None)()

"""The sampler interface shared by the vLLM backend and the HF reference backend.

The backends are :class:`~online_dt.rollout.vllm_sampler.VLLMSampler` and
:class:`~online_dt.rollout.hf_sampler.HFSampler`; :func:`online_dt.rollout.factory.make_sampler`
builds the one a config asks for.

A sampler generates ``n`` completions per prompt from the current reward-conditioned policy,
each prompt conditioned on its own target reward, and stamps every completion with the policy
version that produced it. Weights change only through :meth:`Sampler.load_weights`, which
applies a :class:`~online_dt.rollout.weight_sync.WeightUpdate` published by the learner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from online_dt.config import SamplingConfig
from online_dt.samples import Reward, Rollout

if TYPE_CHECKING:
    from online_dt.rollout.weight_sync import WeightUpdate

NO_WEIGHTS = -1
"""``policy_version`` of a sampler built without weights (``sampler.weight_sync: ray``: from a
:class:`~online_dt.rollout.weight_sync.PolicySkeleton`) until ``load_weights`` gives it some."""


class NoWeightsError(RuntimeError):
    """Raised by ``generate`` of a sampler that has no weights yet (``policy_version`` is
    :data:`NO_WEIGHTS`): a ``ray`` weight-sync sampler before its first ``load_weights``,
    e.g. one that Ray restarted. :class:`~online_dt.loop.sampler_group.SamplerGroup` answers
    it by re-sending the latest update and re-issuing the chunk."""


def require_weights(sampler: Sampler) -> None:
    """Raise :class:`NoWeightsError` while ``sampler.policy_version`` is :data:`NO_WEIGHTS`."""
    if sampler.policy_version == NO_WEIGHTS:
        raise NoWeightsError(
            f"the {sampler.backend} sampler has no weights yet: it was built from a policy "
            "skeleton (weight_sync: ray) and load_weights has not run since"
        )


@dataclass(frozen=True)
class SamplingParams:
    """How to sample.

    Attributes:
        n: completions per prompt (>= 1).
        temperature: softmax temperature (>= 0; 0 is greedy).
        top_p: nucleus threshold in ``(0, 1]``.
        max_new_tokens: completion length limit in tokens (>= 1).
        seed: base seed; ``None`` draws from the backend's RNG. With a seed, results are
            reproducible for the same prompts, targets and weights.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 24
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_new_tokens < 1:
            raise ValueError("n and max_new_tokens must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("temperature must be >= 0 and top_p in (0, 1]")

    @classmethod
    def from_config(
        cls, cfg: SamplingConfig, n: int = 1, seed: int | None = None
    ) -> SamplingParams:
        """Build from a :class:`SamplingConfig`."""
        return cls(n, cfg.temperature, cfg.top_p, cfg.max_new_tokens, seed)


@runtime_checkable
class Sampler(Protocol):
    """Generates conditioned completions from the current policy.

    Attributes:
        backend: short name of the backend (``vllm`` or ``hf``).
        policy_version: version of the weights in use (0 before the first sync).
    """

    backend: str
    policy_version: int

    def generate(
        self, prompts: Sequence[str], targets: Sequence[Reward], params: SamplingParams
    ) -> list[Rollout]:
        """Sample ``params.n`` completions for each prompt, conditioned on its target.

        Args:
            prompts: P prompt texts.
            targets: P target rewards (one per prompt, so a batch can spread targets).
            params: sampling parameters.

        Returns:
            ``P * n`` rollouts, grouped by prompt (all completions of prompt 0 first).

        Raises:
            ValueError: ``prompts`` and ``targets`` differ in length.
            NoWeightsError: the sampler has no weights yet (:data:`NO_WEIGHTS`).
        """
        ...

    def load_weights(self, update: WeightUpdate) -> None:
        """Replace the policy's weights (model and conditioning) in place and set
        ``policy_version`` to ``update.version``."""
        ...


def check_request(prompts: Sequence[str], targets: Sequence[Reward]) -> None:
    """Raise ``ValueError`` unless there is exactly one target per prompt."""
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")

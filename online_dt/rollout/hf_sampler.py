"""The HF reference sampler: the policy's own cached decoding loop, in process."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from online_dt.rollout.sampler import SamplingParams, check_request
from online_dt.samples import Rollout

if TYPE_CHECKING:
    from online_dt.policy.policy import RewardConditionedPolicy
    from online_dt.rollout.weight_sync import WeightUpdate


class HFSampler:
    """The reference sampler: :meth:`RewardConditionedPolicy.generate` (the policy's own cached
    decoding loop), in process.

    Slower than vLLM but exact by construction (the same module as training); used in tests and
    wherever vLLM is not installed.
    """

    backend = "hf"

    def __init__(
        self, policy: RewardConditionedPolicy, *, batch_size: int = 128, policy_version: int = 0
    ) -> None:
        self.policy = policy
        self.batch_size = batch_size
        self.policy_version = policy_version

    def generate(
        self, prompts: Sequence[str], targets: Sequence[float], params: SamplingParams
    ) -> list[Rollout]:
        """See :meth:`Sampler.generate`."""
        check_request(prompts, targets)
        repeated = [p for p in prompts for _ in range(params.n)]
        repeated_targets = [float(t) for t in targets for _ in range(params.n)]
        rollouts = self.policy.generate(
            repeated,
            repeated_targets,
            max_new_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            batch_size=self.batch_size,
        )
        for r in rollouts:
            r.policy_version, r.prompt_index = self.policy_version, r.prompt_index // params.n
        return rollouts

    def load_weights(self, update: WeightUpdate) -> None:
        """Load the published checkpoint directory (checkpoint backend only).

        Raises:
            ValueError: the update carries no checkpoint path.
        """
        from online_dt.policy.policy import RewardConditionedPolicy

        if update.path is None:
            raise ValueError(f"the HF sampler needs a checkpoint path, got {update}")
        device = str(self.policy.device)
        self.policy = RewardConditionedPolicy.from_pretrained(update.path, device=device)
        self.policy_version = update.version

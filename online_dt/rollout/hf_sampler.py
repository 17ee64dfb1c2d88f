"""The HF reference sampler: the policy's own cached decoding loop, in process."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from online_dt.rollout.sampler import SamplingParams, check_request, require_weights
from online_dt.samples import Reward, Rollout, as_reward

if TYPE_CHECKING:
    from online_dt.policy.policy import RewardConditionedPolicy
    from online_dt.rollout.weight_sync import WeightUpdate


class HFSampler:
    """The reference sampler: :meth:`RewardConditionedPolicy.generate` (the policy's own cached
    decoding loop), in process.

    Slower than vLLM but exact by construction (the same module as training); used in tests and
    wherever vLLM is not installed.

    Args:
        policy: the policy to sample from (owned by the sampler: ``load_weights`` changes it).
        batch_size: prompts per generation batch.
        policy_version: the version of ``policy``'s weights; ``NO_WEIGHTS`` for a policy built
            from a skeleton, which refuses to sample until ``load_weights``.
        guidance_weight: ``w >= 0``; above 0 every completion is sampled with classifier-free
            guidance against the policy's own mixture ``guidance_mixture``
            (:meth:`RewardConditionedPolicy.generate`'s). The rollouts' logprobs are then the
            guided distribution's. vLLM has no such hook, so only this sampler offers it.
        guidance_mixture: ``(reward, prior weight)`` pairs (:mod:`online_dt.policy.guidance`);
            needed when ``guidance_weight > 0``.

    Raises:
        ValueError: ``guidance_weight`` is negative, or above 0 without ``guidance_mixture``.
    """

    backend = "hf"

    def __init__(
        self,
        policy: RewardConditionedPolicy,
        *,
        batch_size: int = 128,
        policy_version: int = 0,
        guidance_weight: float = 0.0,
        guidance_mixture: Sequence[tuple[Reward, float]] = (),
    ) -> None:
        if guidance_weight < 0 or (guidance_weight > 0 and not guidance_mixture):
            raise ValueError(
                f"guidance_weight must be >= 0 (got {guidance_weight}), and above 0 it needs "
                "a guidance_mixture"
            )
        self.policy = policy
        self.batch_size = batch_size
        self.policy_version = policy_version
        self.guidance_weight = guidance_weight
        self.guidance_mixture = list(guidance_mixture)

    def generate(
        self, prompts: Sequence[str], targets: Sequence[Reward], params: SamplingParams
    ) -> list[Rollout]:
        """See :meth:`Sampler.generate`."""
        check_request(prompts, targets)
        require_weights(self)
        repeated = [p for p in prompts for _ in range(params.n)]
        repeated_targets = [as_reward(t) for t in targets for _ in range(params.n)]
        rollouts = self.policy.generate(
            repeated,
            repeated_targets,
            max_new_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            batch_size=self.batch_size,
            guidance_weight=self.guidance_weight,
            guidance_mixture=self.guidance_mixture if self.guidance_weight > 0 else None,
        )
        for r in rollouts:
            r.policy_version, r.prompt_index = self.policy_version, r.prompt_index // params.n
        return rollouts

    def load_weights(self, update: WeightUpdate) -> None:
        """Move to a published version.

        * ``checkpoint``: read the published directory's weights and conditioning into the
          current policy in place (:func:`~online_dt.policy.reload.read_weights_in_place`);
          where its tensors are not the model's state dict, load it with ``from_pretrained``
          (a new policy object on the same device).
        * ``ray``: copy the update's :class:`~online_dt.rollout.weight_sync.PolicyState` into
          the current policy in place: the model's ``load_state_dict`` (strict: every name,
          tied ones included, shapes equal; values converted to the parameters' device and
          dtype) and the conditioner's ``load_state``. No file is read.

        Raises:
            ValueError: a ``checkpoint`` or ``nccl`` update without a path, or a ``checkpoint``
                whose conditioning is another policy's.
            FileNotFoundError: a ``checkpoint`` directory without the conditioning files.
            TypeError: a ``ray`` update whose state is not a resolved ``PolicyState`` (an
                ``ObjectRef``: resolve it first, as ``actors.workers.SamplerActor`` does).
            RuntimeError: the state does not fit the model (``load_state_dict``'s error; for a
                ``checkpoint``, :func:`~online_dt.policy.reload.read_weights_in_place`'s).
        """
        from online_dt.policy.policy import RewardConditionedPolicy
        from online_dt.policy.reload import read_weights_in_place
        from online_dt.rollout.weight_sync import PolicyState

        if update.backend == "ray":
            state = update.state
            if not isinstance(state, PolicyState):
                raise TypeError(
                    f"a ray weight update must carry a PolicyState, got {type(state).__name__}"
                )
            self.policy.model.load_state_dict(state.model_state_dict())
            self.policy.conditioner.load_state(state.conditioning)
            self.policy.eval()
            self.policy_version = update.version
            return
        if update.path is None:
            raise ValueError(f"the HF sampler needs a checkpoint path, got {update}")
        if not read_weights_in_place(self.policy, update.path):
            device = str(self.policy.device)
            self.policy = RewardConditionedPolicy.from_pretrained(update.path, device=device)
            self.policy.eval()
        self.policy_version = update.version

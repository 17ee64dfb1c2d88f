"""The sampler interface shared by the vLLM backend and the HF reference backend.

A sampler generates ``n`` completions per prompt from the current reward-conditioned policy,
each prompt conditioned on its own target reward, and stamps every completion with the policy
version that produced it. Weights change only through :meth:`Sampler.load_weights`, which
applies a :class:`~online_dt.rollout.weight_sync.WeightUpdate` published by the learner.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from online_dt.config import SamplingConfig
from online_dt.samples import Rollout

if TYPE_CHECKING:
    from online_dt.policy.policy import RewardConditionedPolicy
    from online_dt.rollout.weight_sync import WeightUpdate

log = logging.getLogger(__name__)


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
        self, prompts: Sequence[str], targets: Sequence[float], params: SamplingParams
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
        """
        ...

    def load_weights(self, update: WeightUpdate) -> None:
        """Replace the policy's weights (model and conditioning) in place and set
        ``policy_version`` to ``update.version``."""
        ...


def check_request(prompts: Sequence[str], targets: Sequence[float]) -> None:
    """Raise ``ValueError`` unless there is exactly one target per prompt."""
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")


class HFSampler:
    """The reference sampler: the conditioning core's own cached decoding loop, in process.

    Slower than vLLM but exact by construction (same module as training); used in tests and
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


def make_sampler_backend_name(prefer: str) -> str:
    """Resolve ``auto``/``vllm``/``hf`` to the backend that will run, logging the choice.

    ``auto`` picks vLLM when it can be imported, else the HF reference sampler.

    Raises:
        ImportError: ``vllm`` was asked for and cannot be imported.
    """
    if prefer == "hf":
        log.info("sampler backend: HF reference (configured)")
        return "hf"
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        if prefer == "vllm":
            raise ImportError(
                "sampler backend 'vllm' needs the vllm package: install the cpu or gpu extra"
            ) from e
        log.info("sampler backend: HF reference (vllm is not installed)")
        return "hf"
    log.info("sampler backend: vLLM")
    return "vllm"

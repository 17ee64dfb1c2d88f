"""The sampler interface shared by the vLLM backend and the HF reference backend.

A sampler generates ``n`` completions per prompt from the current reward-conditioned policy,
each prompt conditioned on its own target reward, and stamps every completion with the policy
version that produced it. Weights change only through :meth:`Sampler.load_weights`, which
applies a :class:`~online_dt.rollout.weight_sync.WeightUpdate` published by the learner.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from online_dt.config import SamplingConfig

if TYPE_CHECKING:
    from online_dt.policy.conditioning import RewardConditionedPolicy
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


@dataclass
class Rollout:
    """One sampled completion.

    Attributes:
        prompt: the prompt text.
        completion: decoded completion text (special tokens removed).
        token_ids: generated token ids (ending with EOS when ``finished``).
        logprobs: natural-log probability of each generated token under the policy's raw
            distribution (before temperature/top-p), one per token id.
        target: the target reward the completion was conditioned on (reward units).
        policy_version: version of the weights that produced it.
        finished: True when generation stopped at EOS, False at ``max_new_tokens``.
        prompt_index: index of the prompt in the request.
        created_at: UNIX time (seconds) when the generate call returned.
        generate_seconds: wall-clock seconds of the generate call that produced it (shared by
            every completion of that call).
    """

    prompt: str
    completion: str
    token_ids: list[int]
    logprobs: list[float]
    target: float
    policy_version: int
    finished: bool
    prompt_index: int
    created_at: float
    generate_seconds: float


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
        start = time.perf_counter()
        gens = self.policy.generate(
            repeated,
            repeated_targets,
            max_new_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            batch_size=self.batch_size,
        )
        seconds = time.perf_counter() - start
        now = time.time()
        return [
            Rollout(
                prompt=g.prompt,
                completion=g.completion,
                token_ids=g.token_ids,
                logprobs=g.logprobs,
                target=g.target,
                policy_version=self.policy_version,
                finished=g.finished,
                prompt_index=i // params.n,
                created_at=now,
                generate_seconds=seconds,
            )
            for i, g in enumerate(gens)
        ]

    def load_weights(self, update: WeightUpdate) -> None:
        """Load the published checkpoint directory (checkpoint backend only).

        Raises:
            ValueError: the update carries no checkpoint path.
        """
        from online_dt.policy.conditioning import RewardConditionedPolicy

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

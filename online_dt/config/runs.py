"""The top-level configs of the two run kinds: the offline demo's and the online loop's.

Both share :class:`RunConfig`'s sections (model, conditioning, reward model, prompts, sampling,
training, bootstrap); each adds only what it reads, so a section or field one kind would ignore
is refused when its config is loaded.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from online_dt.config.base import StrictModel
from online_dt.config.buffer import ReplayBufferConfig
from online_dt.config.conditioning import ConditioningConfig
from online_dt.config.dashboard import DashboardConfig
from online_dt.config.loop import FaultToleranceConfig, OnlineConfig
from online_dt.config.model import BootstrapConfig, ModelConfig
from online_dt.config.offline import OfflineConfig
from online_dt.config.placement import plan_placement
from online_dt.config.prompts import PromptsConfig
from online_dt.config.resources import ResourcesConfig
from online_dt.config.reward_model import RewardModelConfig
from online_dt.config.sampling import VLLM_LORA_RANKS, SamplerConfig, SamplingConfig
from online_dt.config.schedule import ScheduleConfig
from online_dt.config.training import OfflineTrainingConfig, TrainingConfig


class RunConfig(StrictModel):
    """The sections every run reads: the policy, its reward model, prompts, sampling, training."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    """The base policy."""

    conditioning: ConditioningConfig = Field(default_factory=ConditioningConfig)
    """How the policy is conditioned on a target reward."""

    reward_model: RewardModelConfig = Field(default_factory=RewardModelConfig)
    """Which reward model scores completions."""

    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    """Where prompts come from."""

    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    """Sampling parameters for data collection and evaluation."""

    training: TrainingConfig = Field(default_factory=TrainingConfig)
    """Training of the conditioned policy."""

    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig)
    """How the embedded base model is built when ``model.name_or_path`` is ``embedded``."""

    @model_validator(mode="after")
    def _discriminative_loss_needs_one_reward(self) -> RunConfig:
        if self.training.discriminative_coef > 0 and self.conditioning.objectives:
            raise ValueError(
                "training.discriminative_coef needs one reward: contrast labels with "
                "conditioning.objectives are not defined; set it to 0"
            )
        return self


class OfflineRunConfig(RunConfig):
    """Top-level config of ``online-dt train-offline``: the shared sections plus ``offline``."""

    training: OfflineTrainingConfig = Field(default_factory=OfflineTrainingConfig)
    """Offline training of the conditioned policy, with its step count ``training.steps``."""

    offline: OfflineConfig = Field(default_factory=OfflineConfig)
    """Offline demo settings."""

    @model_validator(mode="after")
    def _refuse_best_command(self) -> OfflineRunConfig:
        if self.conditioning.best_command:
            raise ValueError(
                "conditioning.best_command is trained by the online loop (its asks and rows); "
                "the offline demo has neither: set it to false"
            )
        return self


class OnlineRunConfig(RunConfig):
    """Top-level config of ``online-dt run``: the shared sections plus the loop's.

    Refused at load: an ``offline`` section and ``training.steps`` (the offline demo's; an online
    run reads ``online.train_steps_per_iteration`` instead), and a ``resources`` section that
    cannot be placed (:func:`online_dt.config.placement.plan_placement`).
    """

    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    """Sampler backend and engine settings."""

    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    """Reward-target schedule."""

    buffer: ReplayBufferConfig = Field(default_factory=ReplayBufferConfig)
    """Replay buffer."""

    online: OnlineConfig = Field(default_factory=OnlineConfig)
    """Online loop settings."""

    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    """Ray resources of the actors."""

    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)
    """The run's web dashboard."""

    fault_tolerance: FaultToleranceConfig = Field(default_factory=FaultToleranceConfig)
    """Restarts, retries and what to do with batches that cannot be scored."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_offline_section(cls, data: Any) -> Any:
        if isinstance(data, dict) and "offline" in data:
            raise ValueError(
                "offline: this section is the offline demo's (online-dt train-offline) and an "
                "online run does not read it; remove it (the loop's settings are in online)"
            )
        return data

    @field_validator("training", mode="before")
    @classmethod
    def _refuse_offline_steps(cls, value: Any) -> Any:
        if isinstance(value, OfflineTrainingConfig) or (
            isinstance(value, dict) and "steps" in value
        ):
            raise ValueError(
                "training.steps is the offline demo's step count and an online run does not "
                "read it; set online.train_steps_per_iteration (optimizer steps per iteration) "
                "instead"
            )
        return value

    @field_validator("sampler")
    @classmethod
    def _refuse_unwired_nccl(cls, sampler: SamplerConfig) -> SamplerConfig:
        if sampler.weight_sync == "nccl":
            raise ValueError(
                "weight_sync: nccl is not wired into the learner yet: it would only change the "
                "vLLM engines' arguments while the learner still publishes checkpoints to disk; "
                "use checkpoint (online_dt/rollout/weight_sync_nccl.py holds the unwired parts)"
            )
        return sampler

    @field_validator("sampler")
    @classmethod
    def _refuse_keep_versions_without_files(cls, sampler: SamplerConfig) -> SamplerConfig:
        default_keep = SamplerConfig.model_fields["keep_versions"].default
        if sampler.weight_sync == "ray" and sampler.keep_versions != default_keep:
            raise ValueError(
                f"keep_versions: {sampler.keep_versions} is read by checkpoint weight sync only; "
                "weight_sync: ray keeps no version on disk (the object store holds the versions "
                "still referenced)"
            )
        return sampler

    @model_validator(mode="after")
    def _importance_weights_need_raw_sampling(self) -> OnlineRunConfig:
        if self.buffer.importance_weighting and (
            self.sampling.temperature != 1.0 or self.sampling.top_p != 1.0
        ):
            raise ValueError(
                "buffer.importance_weighting needs sampling.temperature: 1 and sampling.top_p: 1"
                f" (got {self.sampling.temperature} and {self.sampling.top_p}): the weights use "
                "the sampled log-probs, which are the raw distribution's"
            )
        return self

    @model_validator(mode="after")
    def _base_logprobs_need_a_reader(self) -> OnlineRunConfig:
        if (
            self.sampler.base_logprobs
            and not self.buffer.importance_weighting
            and self.online.kl_samples == 0
        ):
            raise ValueError(
                "sampler.base_logprobs: nothing reads the base model's log-probabilities "
                "(buffer.importance_weighting is off and online.kl_samples is 0)"
            )
        return self

    @model_validator(mode="after")
    def _objectives_need_the_pareto_schedule(self) -> OnlineRunConfig:
        several = bool(self.conditioning.objectives)
        if several != (self.schedule.kind == "pareto"):
            raise ValueError(
                "schedule.kind: pareto is the schedule of a run with conditioning.objectives "
                "(several rewards), and such a run needs it; got schedule.kind: "
                f"{self.schedule.kind} with {len(self.conditioning.objectives)} objectives"
            )
        if several and self.buffer.keep_top_fraction > 0:
            raise ValueError(
                "buffer.keep_top_fraction keeps the best samples by one reward; with "
                "conditioning.objectives there is no single best: set it to 0"
            )
        return self

    @model_validator(mode="after")
    def _best_command_is_asked_for(self) -> OnlineRunConfig:
        best, fraction = self.conditioning.best_command, self.schedule.best_fraction
        if fraction > 0 and not best:
            raise ValueError(
                f"schedule.best_fraction: {fraction} asks for the best command, which needs "
                "conditioning.best_command: true"
            )
        if not best and not self.online.best_asks_in_buffer:
            raise ValueError(
                "online.best_asks_in_buffer: false is about the best command's asks, which "
                "need conditioning.best_command: true"
            )
        if self.conditioning.reward_lora_rank is not None and self.sampler.backend == "vllm":
            raise ValueError(
                "conditioning.reward_lora_rank needs sampler.backend: hf or auto (auto then "
                "picks HF): vLLM's engine has no LoRA whose gate is a real number per row"
            )
        rank = self.conditioning.best_command_lora_rank
        if rank is not None and self.sampler.backend == "vllm" and rank not in VLLM_LORA_RANKS:
            raise ValueError(
                f"conditioning.best_command_lora_rank {rank} with sampler.backend: vllm: vLLM's "
                f"engine takes LoRA ranks {list(VLLM_LORA_RANKS)}"
            )
        if self.online.best_kl_coef > 0 and not (best and self.buffer.importance_weighting):
            raise ValueError(
                f"online.best_kl_coef: {self.online.best_kl_coef} ranks the best command's "
                "samples by their KL to the base model, which needs conditioning.best_command: "
                "true and buffer.importance_weighting: true (the samples' log p_base - log pi)"
            )
        if self.online.best_full_length and not best:
            raise ValueError(
                "online.best_full_length ranks the best command's samples, which needs "
                "conditioning.best_command: true"
            )
        if not best:
            return self
        if fraction == 0 or self.online.best_rows == 0:
            raise ValueError(
                "conditioning.best_command needs schedule.best_fraction > 0 and online.best_rows"
                f" > 0 (got {fraction} and {self.online.best_rows}): otherwise the best command"
                " is never asked for or never trained"
            )
        n = self.online.prompts_per_iteration
        if not 1 <= round(fraction * n) <= n - 1:
            raise ValueError(
                f"schedule.best_fraction: {fraction} of online.prompts_per_iteration: {n} rounds "
                f"to {round(fraction * n)} prompts; the best command needs 1 to {n - 1} of them "
                "(the rest ask for the schedule's targets)"
            )
        top, s = self.conditioning.reward_max, self.schedule
        if s.max_target is None or s.max_target > top:
            raise ValueError(
                f"conditioning.best_command needs schedule.max_target <= conditioning.reward_max"
                f" ({top}), got {s.max_target}: a schedule target above reward_max would ask "
                "for the best command"
            )
        if self.online.warm_start_samples_per_prompt > 0 and s.start > top:
            raise ValueError(
                f"conditioning.best_command with a warm start needs schedule.start <= "
                f"conditioning.reward_max ({top}), got {s.start}: the warm start samples at "
                "schedule.start, unclamped, which would ask for the best command"
            )
        return self

    @field_validator("resources")
    @classmethod
    def _check_placement(cls, value: ResourcesConfig) -> ResourcesConfig:
        plan_placement(value)  # raises ConfigError (a ValueError) naming the fields
        return value

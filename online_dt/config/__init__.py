"""Typed configuration, validated before any heavy work starts.

Every model forbids unknown keys, documents each field, and checks its ranges, so a typo in a
YAML file fails with the field's dotted path (``training.lr``) before a model is loaded. The style
follows prime-rl's pydantic configs (docstring under each field, ``Field`` constraints,
cross-field checks in ``model_validator``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

EMBEDDED = "embedded"
"""Special ``model.name_or_path``: the project's own tiny GPT-2 (``online-dt bootstrap``)."""


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, fields document themselves."""

    model_config = ConfigDict(
        extra="forbid", use_attribute_docstrings=True, frozen=False, allow_inf_nan=False
    )


class ConfigError(ValueError):
    """A config file is missing, not YAML, or fails validation; the message names the field."""


# ---------------------------------------------------------------------------------------------
# model and conditioning
# ---------------------------------------------------------------------------------------------


class ModelConfig(StrictModel):
    """Which causal LM to condition, and where it runs."""

    name_or_path: str = EMBEDDED
    """Hugging Face hub name or local directory of an ``AutoModelForCausalLM``, or ``embedded``
    for the project's own tiny GPT-2 (built by ``online-dt bootstrap`` on first use)."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Device for the learner and the HF reference sampler; ``auto`` picks CUDA when present."""

    bf16_autocast: bool = True
    """Use bfloat16 autocast for training forward passes on CUDA (ignored on CPU)."""

    attn_implementation: Literal["eager", "sdpa"] = "sdpa"
    """Attention kernel passed to ``from_pretrained``."""


class NormalizationConfig(StrictModel):
    """How a reward is normalised before the scalar head embeds it: ``(r - centre) / scale``."""

    kind: Literal["affine", "running"] = "affine"
    """``affine``: fixed ``centre``/``scale``. ``running``: centre and scale are the running mean
    and standard deviation of every reward the policy has been trained on (Welford's method)."""

    center: float = 0.0
    """Centre for ``affine`` (reward units); the starting mean for ``running``."""

    scale: float = Field(1.0, gt=0.0)
    """Scale for ``affine`` (reward units, > 0); the starting std for ``running``."""


class ConditioningConfig(StrictModel):
    """How the target reward enters the policy's input (one slot at sequence index 0)."""

    mode: Literal["scalar", "token"] = "scalar"
    """``scalar``: a learned ``Linear(1, hidden)`` embeds the normalised reward. ``token``: the
    reward is binned to one of ``num_reward_tokens`` new tokens ``<|reward_k|>``."""

    normalization: NormalizationConfig = Field(default_factory=NormalizationConfig)
    """Reward normalisation for scalar mode."""

    num_reward_tokens: int = Field(8, ge=2, le=1024)
    """Number of reward bins (and reward tokens) in token mode."""

    bin_method: Literal["fixed", "quantile"] = "quantile"
    """``fixed``: bin edges are ``bin_edges``. ``quantile``: edges are re-cut at the quantiles of
    the rewards the policy is first trained on (equal-mass bins)."""

    bin_edges: list[float] | None = None
    """Interior bin edges for ``fixed`` binning: ``num_reward_tokens - 1`` increasing values.
    When omitted with ``fixed``, edges are spaced evenly over ``[reward_min, reward_max]``."""

    reward_min: float = -1.0
    """Lower end of the reward range, for evenly spaced fixed edges and for clamping targets."""

    reward_max: float = 1.0
    """Upper end of the reward range, for evenly spaced fixed edges and for clamping targets."""

    @model_validator(mode="after")
    def _check_bins(self) -> ConditioningConfig:
        if self.reward_max <= self.reward_min:
            raise ValueError("reward_max must be greater than reward_min")
        if self.bin_edges is not None:
            if len(self.bin_edges) != self.num_reward_tokens - 1:
                raise ValueError(
                    f"bin_edges needs num_reward_tokens - 1 = {self.num_reward_tokens - 1} values,"
                    f" got {len(self.bin_edges)}"
                )
            if any(b <= a for a, b in zip(self.bin_edges, self.bin_edges[1:], strict=False)):
                raise ValueError("bin_edges must be strictly increasing")
        return self


# ---------------------------------------------------------------------------------------------
# reward model
# ---------------------------------------------------------------------------------------------


class RewardModelConfig(StrictModel):
    """Which reward model scores (prompt, completion) pairs."""

    kind: Literal["vader", "hf_classifier", "custom"] = "vader"
    """``vader``: VADER compound sentiment in [-1, 1]. ``hf_classifier``: a sequence classifier's
    logit or probability for ``label``. ``custom``: the class at ``class_path``."""

    score_prompt: bool = False
    """Score ``prompt + completion`` instead of the completion alone (vader, hf_classifier)."""

    model_name_or_path: str | None = None
    """``hf_classifier``: hub name or local directory of a sequence-classification model."""

    label: str | int = 1
    """``hf_classifier``: the label whose score is the reward, by name (``POSITIVE``) or index."""

    output: Literal["logit", "probability"] = "probability"
    """``hf_classifier``: reward is the label's raw logit or its softmax probability in [0, 1]."""

    max_length: int = Field(512, ge=8)
    """``hf_classifier``: texts are truncated to this many tokens."""

    batch_size: int = Field(64, ge=1)
    """Texts per forward pass of a neural reward model."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Device of a neural reward model."""

    class_path: str | None = None
    """``custom``: ``package.module:ClassName`` of a class following the ``RewardModel``
    protocol of ``online_dt.rewards``."""

    kwargs: dict[str, Any] = Field(default_factory=dict)
    """``custom``: keyword arguments passed to the class's constructor."""

    @model_validator(mode="after")
    def _check_kind(self) -> RewardModelConfig:
        if self.kind == "hf_classifier" and not self.model_name_or_path:
            raise ValueError("model_name_or_path is required when kind is 'hf_classifier'")
        if self.kind == "custom":
            if not self.class_path:
                raise ValueError("class_path is required when kind is 'custom'")
            module, sep, name = self.class_path.partition(":")
            if not sep or not module or not name:
                raise ValueError(
                    f"class_path must look like 'package.module:ClassName', got {self.class_path!r}"
                )
        return self


# ---------------------------------------------------------------------------------------------
# sampling, training, prompts
# ---------------------------------------------------------------------------------------------


class SamplingConfig(StrictModel):
    """Sampling parameters for rollouts and evaluation."""

    temperature: float = Field(1.0, ge=0.0)
    """Softmax temperature; 0 means greedy decoding."""

    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches ``top_p``."""

    max_new_tokens: int = Field(24, ge=1)
    """Maximum completion length in tokens (generation also stops at the EOS token)."""

    batch_size: int = Field(128, ge=1)
    """Prompts per generation batch of the HF reference sampler."""


class SamplerConfig(StrictModel):
    """Which sampler backend generates rollouts, and its engine settings."""

    backend: Literal["auto", "vllm", "hf"] = "auto"
    """``vllm``: vLLM engine (CPU build or CUDA build). ``hf``: the in-process reference sampler.
    ``auto``: vLLM when it can be imported, else HF (a log line says which runs)."""

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Engine weights dtype; ``auto`` is float32 on CPU and bfloat16 on GPU."""

    max_model_len: int | None = Field(None, ge=8)
    """Longest sequence (conditioning slot + prompt + completion) in tokens; default: the
    model's context length."""

    kv_cache_memory_gb: float | None = Field(0.25, gt=0.0)
    """KV-cache size in GiB. Set it on CPU (vLLM's memory-fraction check counts only one NUMA
    node there); ``null`` sizes the cache from ``gpu_memory_utilization`` instead."""

    gpu_memory_utilization: float = Field(0.5, gt=0.0, le=1.0)
    """Fraction of accelerator memory vLLM may use when ``kv_cache_memory_gb`` is null."""

    enforce_eager: bool = True
    """Disable CUDA graphs / compilation (faster start, fine on CPU and for small models)."""

    weight_sync: Literal["checkpoint", "nccl"] = "checkpoint"
    """``checkpoint``: the learner writes a HF directory, engines reload it in place (CPU and
    GPU). ``nccl``: vLLM's native NCCL weight transfer between GPUs (not runnable on CPU)."""

    keep_versions: int = Field(2, ge=1)
    """Published checkpoint versions kept on disk (older ones are deleted)."""

    seed: int = 0
    """Engine seed (per-request seeds come from the sampling call)."""


class TrainingConfig(StrictModel):
    """Next-token training of the conditioned policy."""

    lr: float = Field(1e-3, gt=0.0)
    """Peak AdamW learning rate."""

    weight_decay: float = Field(0.0, ge=0.0)
    """AdamW weight decay."""

    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""

    grad_clip: float | None = Field(1.0, gt=0.0)
    """Clip the global gradient norm to this value; ``null`` disables clipping."""

    warmup_steps: int = Field(0, ge=0)
    """Linear learning-rate warm-up from 0 over this many optimizer steps."""

    batch_size: int = Field(64, ge=1)
    """Records per optimizer step."""

    steps: int = Field(300, ge=0)
    """Optimizer steps of offline training."""

    include_prompt_loss: bool = False
    """Also train on prompt tokens (by default only completion tokens carry loss)."""

    head_lr_multiplier: float = Field(10.0, gt=0.0)
    """Learning-rate multiplier for the freshly initialised conditioning parameters (the scalar
    head, or the reward-token embeddings are part of the model and use the base rate)."""

    seed: int = 0
    """Seed for batch order and initialisation."""


class PromptsConfig(StrictModel):
    """Where prompts come from."""

    source: Literal["embedded", "file", "dataset"] = "embedded"
    """``embedded``: the synthetic review openings of the embedded corpus. ``file``: one prompt
    per line of ``path``. ``dataset``: a column of a Hugging Face ``datasets`` dataset."""

    path: Path | None = None
    """Text file with one prompt per line, for ``source: file``."""

    dataset: str | None = None
    """``dataset``: hub name or local path passed to ``datasets.load_dataset`` (e.g. ``imdb``)."""

    split: str = "train"
    """``dataset``: the split to read."""

    column: str = "text"
    """``dataset``: the column holding the text."""

    prefix_words: int | None = Field(None, ge=1)
    """Cut each prompt to its first this many words (e.g. review openings from full reviews)."""

    limit: int | None = Field(None, ge=1)
    """Use at most this many prompts."""

    @model_validator(mode="after")
    def _check_path(self) -> PromptsConfig:
        if self.source == "file" and self.path is None:
            raise ValueError("path is required when source is 'file'")
        if self.source == "dataset" and not self.dataset:
            raise ValueError("dataset is required when source is 'dataset'")
        return self


class ScheduleConfig(StrictModel):
    """The reward-target schedule: which target the policy is conditioned on each iteration."""

    kind: Literal["constant", "linear", "quantile", "max_plus_margin", "topk"] = "quantile"
    """``constant``: ``value`` every iteration (Online Decision Transformer's exploration
    return-to-go). ``linear``: from ``start`` to ``end`` over ``iterations``. ``quantile``: the
    q-th quantile of achieved rewards in the buffer, q rising from ``q_start`` to ``q_end`` over
    ``iterations``. ``max_plus_margin``: best achieved reward plus ``margin``. ``topk``: mean +
    std * U(0, 1) of the ``k`` best achieved rewards (upside-down RL)."""

    value: float = 0.0
    """``constant``: the target (reward units)."""

    start: float = 0.0
    """``linear``: target at iteration 0 (reward units); also the target of every data-driven
    schedule while the buffer is empty."""

    end: float = 1.0
    """``linear``: target from iteration ``iterations`` on (reward units)."""

    iterations: int = Field(10, ge=1)
    """``linear``/``quantile``: iterations over which the target (or q) moves to its end."""

    q_start: float = Field(0.5, ge=0.0, le=1.0)
    """``quantile``: quantile at iteration 0."""

    q_end: float = Field(0.9, ge=0.0, le=1.0)
    """``quantile``: quantile from iteration ``iterations`` on."""

    margin: float = Field(0.05, ge=0.0)
    """``max_plus_margin``: added to the best achieved reward (reward units)."""

    k: int = Field(32, ge=1)
    """``topk``: how many of the best achieved rewards to use."""

    max_increase: float | None = Field(None, gt=0.0)
    """Cap on how far the target may rise from one iteration to the next (reward units)."""

    monotone: bool = False
    """Never lower the target below the previous iteration's."""

    spread: float = Field(0.0, ge=0.0)
    """Per-sample exploration: each prompt's target is drawn uniformly from
    ``target ± spread`` (reward units)."""

    min_target: float | None = None
    """Clamp targets to at least this value (reward units)."""

    max_target: float | None = None
    """Clamp targets to at most this value (reward units)."""

    seed: int = 0
    """Seed of the schedule's own randomness (``topk`` draws, spread)."""

    @model_validator(mode="after")
    def _check(self) -> ScheduleConfig:
        if self.q_end < self.q_start:
            raise ValueError("q_end must be >= q_start")
        if (
            self.min_target is not None
            and self.max_target is not None
            and self.max_target < self.min_target
        ):
            raise ValueError("max_target must be >= min_target")
        return self


class ReplayBufferConfig(StrictModel):
    """The replay buffer of scored samples (hindsight-relabeled with their achieved reward)."""

    capacity: int = Field(20_000, ge=1)
    """Most samples held for training; the oldest are evicted first (FIFO)."""

    keep_top_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    """Fraction of the capacity reserved for the highest-reward samples, which FIFO eviction
    skips (0 = pure FIFO)."""

    sampling: Literal["uniform", "recency"] = "uniform"
    """How training batches are drawn: uniformly, or weighted towards recent samples."""

    recency_half_life: float = Field(2000.0, gt=0.0)
    """``recency``: a sample this many insertions old has half the weight of the newest."""

    shard_size: int = Field(1024, ge=1)
    """Samples per parquet shard persisted in the run directory."""


class BootstrapConfig(StrictModel):
    """How the embedded base model is built (synthetic corpus, BPE tokenizer, tiny GPT-2)."""

    cache_dir: Path | None = None
    """Where the built model is cached; default ``$ONLINE_DT_CACHE`` or ``~/.cache/online-dt``."""

    num_texts: int = Field(60_000, ge=100)
    """Synthetic review texts generated for tokenizer and model training."""

    vocab_size: int = Field(2048, ge=300)
    """BPE vocabulary size."""

    n_layer: int = Field(4, ge=1)
    """Transformer layers of the tiny GPT-2."""

    n_embd: int = Field(128, ge=16)
    """Hidden size of the tiny GPT-2."""

    n_head: int = Field(4, ge=1)
    """Attention heads of the tiny GPT-2."""

    n_positions: int = Field(128, ge=32)
    """Context length of the tiny GPT-2 in tokens."""

    steps: int = Field(800, ge=1)
    """Pretraining optimizer steps."""

    batch_size: int = Field(64, ge=1)
    """Texts per pretraining step."""

    lr: float = Field(3e-3, gt=0.0)
    """Peak pretraining learning rate (cosine decay after a short warm-up)."""

    seed: int = 0
    """Seed for the corpus, the tokenizer's input order and the model's initialisation."""

    @model_validator(mode="after")
    def _check_heads(self) -> BootstrapConfig:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        return self


class OfflineConfig(StrictModel):
    """The offline decision-transformer demo: sample, score, train conditioned, evaluate."""

    run_dir: Path = Path("runs/offline")
    """Directory for the trained policy and the calibration table."""

    samples_per_prompt: int = Field(4, ge=1)
    """Base-model completions sampled per prompt to build the training data."""

    eval_targets: list[float] | None = None
    """Targets to evaluate; default: a low, a middle and a high quantile of the training rewards."""

    eval_samples_per_target: int = Field(256, ge=1)
    """Completions sampled per evaluation target."""

    seed: int = 0
    """Seed for sampling."""


class OfflineRunConfig(StrictModel):
    """Top-level config of ``online-dt train-offline``."""

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
    """Offline training of the conditioned policy."""

    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig)
    """How the embedded base model is built when ``model.name_or_path`` is ``embedded``."""

    offline: OfflineConfig = Field(default_factory=OfflineConfig)
    """Offline demo settings."""


class ResourcesConfig(StrictModel):
    """Ray resources of the actors and where they go (fractional GPUs allowed).

    Checked at load time by computing the placement plan (``online_dt.config.placement``), so a
    combination that cannot be placed fails before any actor starts.
    """

    num_samplers: int = Field(1, ge=1)
    """Sampler actor replicas; each prompt batch is split across them."""

    sampler_cpus: float = Field(1.0, ge=0.0)
    """CPUs per sampler actor."""

    sampler_gpus: float = Field(0.0, ge=0.0)
    """GPUs per sampler actor: a fraction (0.25: four samplers share one GPU) or a whole
    number (a value above 1 must be whole)."""

    learner_cpus: float = Field(1.0, ge=0.0)
    """CPUs of the learner actor."""

    learner_gpus: float = Field(0.0, ge=0.0)
    """GPUs of the learner actor (a fraction, or a whole number above 1)."""

    reward_cpus: float = Field(0.0, ge=0.0)
    """CPUs of the reward-model actor (0 with ``reward_gpus`` 0: it gets no bundle of its own
    and shares the learner's bundle and node; VADER is light)."""

    reward_gpus: float = Field(0.0, ge=0.0)
    """GPUs of the reward-model actor (a fraction, or a whole number above 1)."""

    sampler_resources: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources per sampler, e.g. ``{online_dt_sampler: 1}``: pins samplers to the
    nodes that advertise them (``ray start --resources``, a KubeRay group's
    ``rayStartParams.resources``)."""

    learner_resources: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources of the learner, e.g. ``{online_dt_learner: 1}`` (see
    ``sampler_resources``)."""

    colocate: bool = False
    """Sampler replicas and the learner share GPUs: their shares are packed, learner first,
    into bundles of at most one GPU (``learner_gpus + sampler_gpus`` must be at most 1), instead
    of the learner getting a bundle of its own."""

    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    """Ray placement-group strategy for the actors' bundles (Ray's own names)."""

    use_placement_group: bool = True
    """Reserve the actors' resources in one Ray placement group before starting them, so a
    run either gets all its resources or waits; ``false`` schedules each actor on its own."""

    placement_timeout_s: float = Field(600.0, gt=0.0)
    """How long to wait for the placement group (e.g. while an autoscaler adds nodes) before
    failing with the resources the cluster is missing, in seconds."""

    @model_validator(mode="after")
    def _check_placement(self) -> ResourcesConfig:
        from online_dt.config.placement import plan_placement

        plan_placement(self)  # raises ConfigError (a ValueError) naming the fields
        return self


class DashboardConfig(StrictModel):
    """The run's read-only web dashboard (started by ``online-dt run``)."""

    enabled: bool = True
    """Start the dashboard with the run (its URL is logged at start)."""

    host: str = "127.0.0.1"
    """Bind address; ``0.0.0.0`` exposes it on every interface (e.g. behind a cluster's head)."""

    port: int = Field(8470, ge=0, le=65535)
    """TCP port (0: any free port)."""

    poll_interval_s: float = Field(2.0, gt=0.0, le=3600.0)
    """How often the page asks the server for new iterations, in seconds."""

    recent_samples: int = Field(50, ge=1, le=10_000)
    """Rows in the table of recent samples."""


class FaultToleranceConfig(StrictModel):
    """What the loop does when a worker dies or a reward model misbehaves."""

    sampler_max_restarts: int = Field(3, ge=-1)
    """Ray restarts of each sampler actor after its process dies (-1: unlimited)."""

    reward_max_restarts: int = Field(3, ge=-1)
    """Ray restarts of the reward-model actor after its process dies (-1: unlimited)."""

    rollout_retries: int = Field(2, ge=0)
    """Times an interrupted rollout chunk is re-issued (to the restarted replica) before it
    is dropped with a logged count."""

    reward_retries: int = Field(2, ge=0)
    """Times a scoring batch is retried after the reward model raised or its actor died."""

    on_reward_failure: Literal["stop", "skip"] = "stop"
    """After the retries: ``stop`` the run with the error, or ``skip`` the batch (its samples
    go to ``RUN_DIR/rejected/`` with the reason either way)."""

    retry_backoff_s: float = Field(1.0, ge=0.0, le=600.0)
    """Wait before each retry, in seconds (doubled at every further attempt)."""

    restart_timeout_s: float = Field(600.0, gt=0.0)
    """How long a retry waits for a restarting worker to come back (a sampler reloads its
    model), in seconds, before the attempt counts as failed."""


class OnlineConfig(StrictModel):
    """The online decision-transformer loop."""

    run_dir: Path = Path("runs/default")
    """Run directory: config, metrics.jsonl, samples, buffer shards, checkpoints."""

    iterations: int = Field(30, ge=1)
    """Online iterations (rollout, score, append, train, sync)."""

    prompts_per_iteration: int = Field(64, ge=1)
    """Prompts rolled out per iteration (cycling through the prompt set)."""

    samples_per_prompt: int = Field(4, ge=1)
    """Completions sampled per prompt."""

    train_steps_per_iteration: int = Field(20, ge=0)
    """Learner optimizer steps per iteration, on batches drawn from the replay buffer."""

    mode: Literal["sync", "async"] = "sync"
    """``sync``: rollouts wait for the newest weights. ``async``: the next rollout overlaps the
    current training, so samples may come from a policy up to ``max_policy_lag`` versions old."""

    max_policy_lag: int = Field(1, ge=1)
    """``async``: largest allowed difference between the learner's and a sample's version."""

    warm_start_samples_per_prompt: int = Field(0, ge=0)
    """Offline warm start: base-model completions per prompt scored and added to the buffer
    before the first iteration (0 = no warm start)."""

    warm_start_steps: int = Field(0, ge=0)
    """Offline warm start: training steps on the warm-start samples."""

    kl_coef: float = Field(0.0, ge=0.0)
    """KL-to-base penalty coefficient (0 = pure decision transformer; > 0 penalises divergence
    from the frozen base model, as Quark does)."""

    kl_samples: int = Field(64, ge=0)
    """Samples per iteration used to estimate KL to the base model (0 disables the estimate)."""

    checkpoint_every: int = Field(1, ge=1)
    """Write a resumable checkpoint every this many iterations (and after the last)."""

    samples_logged_per_iteration: int = Field(16, ge=0)
    """Completions per iteration written to ``samples.jsonl`` for inspection."""

    resume_policy: Literal["keep", "discard"] = "keep"
    """On ``--resume``: ``keep`` every persisted sample (those of an interrupted iteration stay
    in the buffer once), or ``discard`` samples persisted after the last checkpoint."""

    tensorboard: bool = False
    """Also write TensorBoard scalars to ``RUN_DIR/tensorboard`` (needs ``tensorboard``)."""

    seed: int = 0
    """Seed of prompt order and sampling."""


class OnlineRunConfig(OfflineRunConfig):
    """Top-level config of ``online-dt run``: everything of the offline demo plus the loop."""

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


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------


def format_validation_error(err: ValidationError, source: str) -> str:
    """Render pydantic errors as one line per field, each naming the dotted field path."""
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


C = TypeVar("C", bound=BaseModel)


def load_config(path: str | Path, cls: type[C], overrides: dict[str, Any] | None = None) -> C:
    """Load a YAML file into the config class ``cls``.

    Args:
        path: YAML file.
        cls: the pydantic model to validate against (e.g. ``OfflineRunConfig``).
        overrides: nested dict merged over the file's content before validation.

    Raises:
        ConfigError: the file is missing, is not a YAML mapping, or a field is invalid; the
            message names every offending field by its dotted path.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(data).__name__}")
    if overrides:
        data = _deep_merge(data, overrides)
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, str(path))) from None


def config_yaml(cfg: BaseModel) -> str:
    """A validated config as YAML, every field resolved (what a run directory's
    ``config.yaml`` holds); :func:`load_config` reads it back to an equal config."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def config_class_for(path: str | Path) -> type[OfflineRunConfig]:
    """``OnlineRunConfig`` for a YAML file with an ``online`` (or ``schedule``) section, else
    ``OfflineRunConfig`` (the offline demo's); unreadable files get ``OfflineRunConfig`` and fail
    in :func:`load_config` with its message."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return OfflineRunConfig
    if isinstance(data, dict) and ({"online", "schedule", "buffer", "sampler"} & data.keys()):
        return OnlineRunConfig
    return OfflineRunConfig


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out

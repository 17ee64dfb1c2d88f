"""The ``conditioning`` section: how a target reward enters the policy's input."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from online_dt.config.base import StrictModel
from online_dt.config.objective import ObjectiveConfig


class NormalizationConfig(StrictModel):
    """How a reward is normalised before the scalar head embeds it: ``(r - centre) / scale``."""

    kind: Literal["affine", "running", "quantile"] = "affine"
    """``affine``: fixed ``centre``/``scale``. ``running``: centre and scale are the running mean
    and standard deviation of every reward the policy has been trained on (Welford's method).
    ``quantile``: the reward's normal score ``Phi^-1(F(r))`` under the empirical distribution
    ``F`` of every reward the policy has been trained on (the scalar counterpart of Quark's
    quantile reward tokens), so rare rewards at either end are as far apart in the head's
    input as common ones; beyond the rewards seen it continues linearly with slope
    ``1 / scale``. Until ``min_count`` rewards are seen it is ``affine``."""

    center: float = 0.0
    """Centre for ``affine`` (reward units); the starting mean for ``running``; the centre of
    ``quantile`` until ``min_count`` rewards are seen."""

    scale: float = Field(1.0, gt=0.0)
    """Scale for ``affine`` (reward units, > 0); the starting std for ``running``; for
    ``quantile``, the reward units per unit of normal score beyond the rewards seen (and the
    scale until ``min_count`` rewards are seen)."""

    min_count: int = Field(64, ge=2)
    """``quantile``: rewards seen before the empirical distribution replaces ``affine``."""

    fit_count: int | None = Field(None, ge=2)
    """``quantile``: stop adding rewards to the empirical distribution once it holds this many
    (``null``: never stop). The first rewards are the untrained policy's, close to the base
    model's: a distribution frozen on them keeps the input each reward maps to fixed for the
    rest of the run, while one that keeps growing moves the rarer rewards' inputs as the
    replay buffer fills with higher rewards."""

    max_knots: int = Field(2048, ge=16)
    """``quantile``: most points kept of the empirical distribution. Beyond it, neighbours in
    sorted order are merged pairwise into their weighted mean (their weights add): a
    deterministic summary of the distribution."""

    @model_validator(mode="after")
    def _check_fit_count(self) -> NormalizationConfig:
        if self.fit_count is not None and self.fit_count < self.min_count:
            raise ValueError(
                f"fit_count ({self.fit_count}) must be >= min_count ({self.min_count}): the "
                "empirical distribution is used only once it holds min_count rewards"
            )
        return self


class ConditioningConfig(StrictModel):
    """How the target reward enters the policy's input (one slot at the start of every
    sequence, :attr:`slot_width` columns wide)."""

    objectives: list[ObjectiveConfig] = Field(default_factory=list)
    """Several named rewards to condition on at once (multi-objective conditioning, as in
    Rewards-in-Context, Yang et al., 2024): the reward model then returns, per sample, a
    mapping of these names to finite floats, every target and achieved reward is a vector in
    this order. In scalar mode the head is ``Linear(len(objectives), hidden)`` at the same
    one-column slot; in token mode the slot is ``len(objectives)`` columns, one reward token
    per objective in this order (``<|reward_{name}_{k}|>``, ``num_reward_tokens`` per
    objective, each objective binned on its own: see :attr:`slot_width`). Empty (the
    default): one reward, a plain float. Needs ``reward_features: linear``, no
    ``reward_on_prompt`` and the default ``normalization`` (each objective is normalised from
    its own range); token mode needs ``bin_refit: buffer`` and no ``bin_edges`` (``fixed``
    bins are spaced evenly over each objective's ``[low, high]``, and so are ``quantile``
    bins until they are first cut)."""

    mode: Literal["scalar", "token"] = "scalar"
    """``scalar``: a learned ``Linear(1, hidden)`` embeds the normalised reward. ``token``: the
    reward is binned to one of ``num_reward_tokens`` new tokens ``<|reward_k|>`` (with
    ``objectives``: each objective to one of its own ``<|reward_{name}_k|>``)."""

    normalization: NormalizationConfig = Field(default_factory=NormalizationConfig)
    """Reward normalisation for scalar mode."""

    slot_init: Literal["bos", "mean"] = "mean"
    """Scalar mode: the reward slot's initial embedding. ``bos``: the tokenizer's BOS token
    embedding (EOS when there is no BOS), with the head's weight at a tenth of the embeddings'
    standard deviation, so that the untrained policy reads like the base model after a
    document separator. ``mean``: the mean token embedding, weight at the embeddings' standard
    deviation. A model whose tokenizer has neither token falls back to ``mean``."""

    reward_on_prompt: bool = False
    """Scalar mode: also add a reward-dependent vector to the input embedding of every prompt
    token, so every prompt position carries the reward, not only the slot at index 0. The
    vector is ``W r_n`` (``W`` a learned ``[hidden, 1]`` matrix starting at zero, ``r_n`` the
    normalised reward), so the untrained policy is unchanged. Completion tokens (trained on,
    or generated) get nothing: the same prompt embeddings feed training, HF generation and
    vLLM's ``prompt_embeds``. Not available in token mode (vLLM then sees token ids only)."""

    best_command: bool = False
    """Scalar mode, one reward: a **best command** besides the reward targets. Any target
    above ``reward_max`` asks for it (:attr:`best_target`, ``reward_max + 1``, is the value
    the loop writes); the head then reads the reward clamped to ``reward_max`` plus one more
    input, 1 for the best command and 0 for every reward target, whose weight starts at zero,
    so the untrained best command is the ``reward_max`` slot. The loop asks for it with a
    share of each iteration's prompts (``schedule.best_fraction``) and trains it on the best
    sample of each such prompt (``online.best_rows``): reward-ranked fine-tuning (RAFT,
    Dong et al., 2023, arXiv 2304.06767) of one command of the conditional policy, so what the
    best command gives can climb past every reward in the buffer, where hindsight relabeling
    alone stops (docs/method.md, round 19). Every sample also enters the replay buffer with
    its achieved reward, as any other (unless ``online.best_asks_in_buffer`` is false).
    ``reward_max`` must then bound the reward model's scores (a batch scoring above it is
    rejected) and ``schedule.max_target`` (the schedule's targets stay reward targets). With
    ``reward_on_prompt`` the prompt tokens' vector is the ``reward_max`` one for the best
    command. Not in the offline demo; ``online-dt eval --recalibrate`` is refused for such a
    run."""

    best_command_lora_rank: int | None = Field(None, ge=1, le=256)
    """With ``best_command``: give the best command a low-rank adapter of its own (LoRA of
    this rank on every linear layer of the model but the LM head, Hu et al., 2021), applied
    only to the rows that ask for it. The best command's rows then train the adapter alone,
    and the replay buffer's rows the rest of the policy, so reward-ranked fine-tuning of the
    best command no longer moves the body that every reward target shares. It trains at the
    head's learning rate (``training.lr * training.head_lr_multiplier``); the head's best
    command input is then never trained (it stays at zero, so the best command's slot is the
    ``reward_max`` one, and only the LoRA sets it apart). ``None`` (default):
    no adapter, the best command's rows train the whole policy (round 19). vLLM's engine
    applies it as a per-request LoRA (:mod:`online_dt.rollout.vllm_lora`; ranks 1, 8, 16, 32,
    64, 128 or 256 there); no guided generation
    (docs/method.md, round 20)."""

    reward_lora_rank: int | None = Field(None, ge=1, le=256)
    """Scalar mode, one reward: a low-rank adapter (LoRA of this rank on every linear layer of
    the model but the LM head, Hu et al., 2021) whose update each row scales by its normalised
    target reward, ``y = x W + r_n (x A B)``, so the reward moves every layer along one
    learned direction in weight space besides filling the slot (the scaled LoRA of Concept
    Sliders, Gandikota et al., 2023). ``B`` starts at zero, so the untrained policy is
    unchanged. The adapter trains with the rest of the policy on every replay-buffer row, at
    ``training.lr * training.reward_lora_lr_multiplier``. ``None`` (default): no adapter. Not
    with ``best_command_lora_rank`` (a policy has one adapter). Needs the HF sampler (vLLM
    runs the model without the per-row gate) and no guided generation (docs/method.md,
    round 22)."""

    lora_layers: list[str] | None = Field(None, min_length=1)
    """With an adapter (``reward_lora_rank`` or ``best_command_lora_rank``): adapt only the
    linear layers whose module name ends with one of these dotted suffixes, e.g. ``[mlp.c_fc]``
    (GPT-2's MLP input projections; on the embedded model 5-14 % of a training step, every
    layer 37-44 %: docs/method.md, round 24). ``None``: every linear layer but the LM head. A
    list that matches no layer is refused when the policy is built. Needs an adapter."""

    lora_output_layer: bool = False
    """With an adapter (``reward_lora_rank`` or ``best_command_lora_rank``): adapt the output
    layer (the LM head, which ``lora_layers`` never picks) as well, so the adapter can move
    the next-token logits directly. With the best command it reached more reward at a given KL
    to the base model, with half the distinct-2 (docs/method.md, round 27). Needs an
    adapter."""

    reward_features: Literal["linear", "rbf"] = "linear"
    """Scalar mode: what the head reads. ``linear``: the normalised reward alone, so the slot
    is ``b + w r_n``: every reward is a point on one line, and a reward of 0 (normalised)
    leaves only the bias. ``rbf``: the normalised reward plus ``rbf_centers`` Gaussian radial
    basis features of the reward, ``exp(-((r - c_k) / s)^2 / 2)``, with the centres ``c_k``
    evenly spaced over ``[reward_min, reward_max]`` (reward units) and ``s`` their spacing, so
    each region of the reward range gets a direction of its own, as sinusoidal or Fourier
    feature embeddings give a network's scalar inputs (Tancik et al., 2020; the timestep
    embedding of diffusion models, Ho et al., 2020). Their weights start at zero: the
    untrained policy is the ``linear`` one. The linear feature keeps extrapolation beyond the
    centres."""

    rbf_centers: int = Field(9, ge=2, le=256)
    """Scalar mode with ``reward_features: rbf``: the number of radial basis features."""

    num_reward_tokens: int = Field(8, ge=2, le=1024)
    """Number of reward bins (and reward tokens) in token mode; with ``objectives``, per
    objective (``len(objectives) * num_reward_tokens`` tokens in all)."""

    bin_method: Literal["fixed", "quantile"] = "quantile"
    """``fixed``: bin edges are ``bin_edges`` (or evenly spaced). ``quantile``: equal-mass
    edges cut from the achieved rewards the policy is trained on, kept up to date as
    ``bin_refit`` says."""

    bin_refit: Literal["buffer", "split_top"] = "buffer"
    """How ``quantile`` bins follow the replay buffer (token mode, no ``bin_edges``).

    ``buffer``: after every append the bins are re-cut at the ``k/K`` quantiles of every
    achieved reward the replay buffer holds (its held set: ``buffer.capacity`` samples, the
    best ``keep_top_fraction`` plus the most recent), so each of the ``num_reward_tokens``
    tokens labels an equal share of the buffer; token meanings move as the buffer fills
    upwards. This is Quark's rule (Lu et al., 2022: the data pool is re-sorted into
    equal-mass quantiles after each addition).

    ``split_top``: the bins are cut once, at the quantiles of the first rewards the policy is
    trained on (the warm-start samples, else iteration 0's: the base model's rewards), into
    ``initial_reward_bins`` bins; their edges then never move, and whenever the top bin holds
    at least twice an equal share of the buffer it is split at its median into two, the new
    top bin taking the next unused reward token, whose embedding starts as a copy of the split
    bin's token. All ``num_reward_tokens`` tokens exist from the start; splits stop when they
    are all in use. Token meanings stay stable, at the price of coarser bins above the base
    model's range once the tokens run out.

    Either way every training batch is labelled under the current bins, from each sample's
    achieved reward, when the batch is drawn."""

    initial_reward_bins: int | None = Field(None, ge=2, le=1024)
    """``split_top``: bins cut from the first rewards (default ``num_reward_tokens // 2``, at
    least 2); the other ``num_reward_tokens - initial_reward_bins`` tokens are kept for
    splits. Must be at most ``num_reward_tokens``; not allowed with ``bin_refit: buffer``."""

    bin_edges: list[float] | None = None
    """Interior bin edges for ``fixed`` binning: ``num_reward_tokens - 1`` increasing values.
    When omitted with ``fixed``, edges are spaced evenly over ``[reward_min, reward_max]``."""

    reward_min: float = -1.0
    """Lower end of the reward range, for evenly spaced fixed edges and the ``rbf`` centres."""

    reward_max: float = 1.0
    """Upper end of the reward range, for evenly spaced fixed edges and the ``rbf`` centres;
    with ``best_command``, the highest score the reward model may give, and any target above it
    asks for the best command."""

    @model_validator(mode="after")
    def _check_bins(self) -> ConditioningConfig:
        if self.reward_max <= self.reward_min:
            raise ValueError("reward_max must be greater than reward_min")
        if self.objectives:
            self._check_objectives()
        if self.reward_features != "linear" and self.mode != "scalar":
            raise ValueError("reward_features needs mode: scalar (token mode has no head)")
        if self.best_command and (self.mode != "scalar" or self.objectives):
            raise ValueError(
                "best_command needs mode: scalar and one reward (no objectives): the best "
                "command is a second input of the scalar head"
            )
        if self.best_command_lora_rank is not None and not self.best_command:
            raise ValueError("best_command_lora_rank needs best_command: true")
        if self.reward_lora_rank is not None and (self.mode != "scalar" or self.objectives):
            raise ValueError(
                "reward_lora_rank needs mode: scalar and one reward (no objectives): its gate "
                "is the normalised reward"
            )
        if self.reward_lora_rank is not None and self.best_command_lora_rank is not None:
            raise ValueError(
                "reward_lora_rank and best_command_lora_rank cannot both be set: a policy "
                "has one adapter"
            )
        for option in ("lora_layers", "lora_output_layer"):
            if getattr(self, option) not in (None, False) and self.lora_rank is None:
                raise ValueError(f"{option} needs reward_lora_rank or best_command_lora_rank")
        if self.reward_on_prompt and self.mode != "scalar":
            raise ValueError("reward_on_prompt needs mode: scalar (token mode feeds token ids)")
        if self.bin_edges is not None:
            if len(self.bin_edges) != self.num_reward_tokens - 1:
                raise ValueError(
                    f"bin_edges needs num_reward_tokens - 1 = {self.num_reward_tokens - 1} values,"
                    f" got {len(self.bin_edges)}"
                )
            if any(b <= a for a, b in zip(self.bin_edges, self.bin_edges[1:], strict=False)):
                raise ValueError("bin_edges must be strictly increasing")
        if self.initial_reward_bins is not None:
            if self.bin_refit != "split_top":
                raise ValueError("initial_reward_bins is used only with bin_refit: split_top")
            if self.initial_reward_bins > self.num_reward_tokens:
                raise ValueError(
                    f"initial_reward_bins ({self.initial_reward_bins}) must be at most "
                    f"num_reward_tokens ({self.num_reward_tokens})"
                )
        return self

    def _check_objectives(self) -> None:
        names = [o.name for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"objectives: names must be unique, got {names}")
        token = self.mode == "token"
        unsupported = [
            (
                token and self.bin_edges is not None,
                "bin_edges (one list cannot bin every objective: fixed bins are spaced evenly "
                "over each objective's low/high range)",
            ),
            (
                token and self.bin_refit == "split_top",
                "bin_refit: split_top (objectives' quantile bins are re-cut from the buffer: "
                "bin_refit: buffer)",
            ),
            (self.reward_features != "linear", f"reward_features: {self.reward_features}"),
            (self.reward_on_prompt, "reward_on_prompt"),
            (
                self.normalization != NormalizationConfig(),
                "normalization (each objective is normalised from its low/high range)",
            ),
        ]
        refused = [what for bad, what in unsupported if bad]
        if refused:
            raise ValueError(
                "objectives (multi-objective conditioning) works with linear features, the "
                "default normalization and, in token mode, bins re-cut from the buffer or "
                "spaced evenly; remove " + ", ".join(refused)
            )

    @property
    def num_objectives(self) -> int:
        """How many rewards the policy is conditioned on (1 without ``objectives``)."""
        return max(1, len(self.objectives))

    @property
    def objective_names(self) -> list[str]:
        """The objectives' names in order (``[]`` for a single unnamed reward)."""
        return [o.name for o in self.objectives]

    @property
    def slot_width(self) -> int:
        """Columns of the conditioning slot at the start of every sequence: one reward token
        per objective in token mode with ``objectives`` (``len(objectives)``), else 1 (the
        scalar embedding, or the one reward token)."""
        if self.mode == "token" and self.objectives:
            return len(self.objectives)
        return 1

    @property
    def splits_top_bin(self) -> bool:
        """Whether the bins are cut once and their top bin split (token mode, quantile bins,
        no fixed edges, ``bin_refit: split_top``)."""
        return (
            self.mode == "token"
            and self.bin_method == "quantile"
            and self.bin_edges is None
            and self.bin_refit == "split_top"
        )

    @property
    def head_inputs(self) -> int:
        """Scalar mode: the head's input features (1, ``1 + rbf_centers`` with
        ``reward_features: rbf``, one more with ``best_command``, or one per objective with
        ``objectives``)."""
        if self.objectives:
            return len(self.objectives)
        rbf = self.rbf_centers if self.reward_features == "rbf" else 0
        return 1 + rbf + int(self.best_command)

    @property
    def lora_option(self) -> str | None:
        """The field that gives the policy its adapter (:mod:`online_dt.policy.gated_lora`):
        ``"reward_lora_rank"`` or ``"best_command_lora_rank"``, ``None`` without one."""
        if self.reward_lora_rank is not None:
            return "reward_lora_rank"
        return "best_command_lora_rank" if self.best_command_lora_rank is not None else None

    @property
    def lora_rank(self) -> int | None:
        """The adapter's rank (the :attr:`lora_option` field's value), ``None`` without one."""
        option = self.lora_option
        return None if option is None else getattr(self, option)

    @property
    def lora_coverage(self) -> tuple[list[str] | None, bool]:
        """The adapter's layers: ``(lora_layers, lora_output_layer)``."""
        return self.lora_layers, self.lora_output_layer

    @property
    def best_target(self) -> float:
        """The target value that asks for the best command (``best_command``): ``reward_max +
        1`` (reward units; any target above ``reward_max`` asks for it)."""
        return self.reward_max + 1.0

    def asks_best_command(self, reward: float | None) -> bool:
        """Whether a target (or a training label) of ``reward`` (reward units) asks for the
        best command: ``best_command`` is on and ``reward`` is above ``reward_max``."""
        return self.best_command and reward is not None and float(reward) > self.reward_max

    @property
    def first_bins(self) -> int:
        """The number of bins before any split: ``initial_reward_bins`` (default
        ``num_reward_tokens // 2``, at least 2) with ``split_top``, else
        ``num_reward_tokens``."""
        if not self.splits_top_bin:
            return self.num_reward_tokens
        if self.initial_reward_bins is not None:
            return self.initial_reward_bins
        return max(2, self.num_reward_tokens // 2)

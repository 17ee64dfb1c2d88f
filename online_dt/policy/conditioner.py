"""The conditioner: rewards to the content of the conditioning slot.

It is independent of the language model: the policy uses it for training and HF generation, the
vLLM sampler to build ``prompt_embeds`` or reward-token prompts. A saved policy directory holds
it in a ``reward_conditioning/`` folder: ``conditioning.json`` (config, normaliser state, bin
edges and whether they were fitted, reward-token ids; per objective with objectives in token
mode) and, in scalar mode, ``head.safetensors`` (that persistence, and the in-memory state
that travels to samplers: :mod:`online_dt.policy.conditioner_state`; fitting the normaliser and
bins to rewards: :mod:`online_dt.policy.conditioner_bins`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from online_dt.config import ConditioningConfig
from online_dt.policy import conditioner_bins
from online_dt.policy.conditioner_state import (
    conditioner_state,
    load_conditioner,
    parse_state,
    save_state,
    take_over_state,
)
from online_dt.policy.gated_lora import GatedLoRA
from online_dt.policy.normalization import RewardBinning, RewardNormalizer


class RewardConditioner(nn.Module):
    """Turns rewards into the content of the conditioning slot (the first
    ``config.slot_width`` columns of every sequence).

    Holds the conditioning config, the scalar head and normaliser (scalar mode) or the bins and
    reward-token ids (token mode). The policy uses it for training and HF generation; the vLLM
    sampler uses the same object to build ``prompt_embeds`` or reward-token prompts, so the slot
    is computed by one piece of code everywhere.

    With ``M`` objectives in token mode the slot is ``M`` columns, one reward token per
    objective in the config's order; objective ``m`` has its own bins (``binnings[m]``), its
    own range (``bin_ranges[m]``) and its own ``K`` tokens ``<|reward_{name}_k|>`` (ids
    ``reward_token_ids[m * K : (m + 1) * K]``).

    Attributes:
        config: the :class:`ConditioningConfig`.
        head: ``Linear(F, hidden)`` in scalar mode (``F`` = ``config.head_inputs``, see
            :meth:`head_features`), else ``None``.
        prompt_head: ``Linear(1, hidden, bias=False)`` with ``reward_on_prompt`` (its output
            is added to every prompt token's embedding), else ``None``.
        lora: the gated LoRA (:mod:`online_dt.policy.gated_lora`) with
            ``best_command_lora_rank`` or ``reward_lora_rank``, else ``None``.
        normalizer: reward normalisation used before the head.
        binnings: token mode: the reward bins, one :class:`RewardBinning` per conditioned
            reward (one, or one per objective in order); ``[]`` in scalar mode. With
            ``bin_refit: split_top`` the one binning may hold fewer bins than there are reward
            tokens (the rest wait for splits).
        bins_fitted: whether quantile bins have been cut from rewards yet (before that they
            are evenly spaced over ``[reward_min, reward_max]``, or each objective's
            ``[low, high]``).
        bin_ranges: per entry of ``binnings``, ``(lowest, highest)`` reward (reward units of
            that objective) the bins were last cut from, or ``None`` before the first cut.
        reward_token_ids: ids of the reward tokens (token mode), else ``[]``: ``K`` ids of
            ``<|reward_0|>..<|reward_{K-1}|>``, or, with ``M`` objectives, ``M * K`` ids
            objective-major. Every one of them is banned from completions.
        placeholder_id: id written into the slot's column in scalar mode (its embedding is
            replaced).
    """

    def __init__(
        self,
        config: ConditioningConfig,
        *,
        placeholder_id: int,
        head: nn.Linear | None = None,
        binnings: Sequence[RewardBinning] = (),
        reward_token_ids: Sequence[int] = (),
        normalizer: RewardNormalizer | None = None,
        prompt_head: nn.Linear | None = None,
        lora: GatedLoRA | None = None,
    ) -> None:
        super().__init__()
        if config.mode == "scalar" and head is None:
            raise ValueError("scalar conditioning needs a head")
        if config.reward_on_prompt and head is not None and prompt_head is None:
            prompt_head = nn.Linear(1, head.weight.shape[0], bias=False)
            nn.init.zeros_(prompt_head.weight)  # the untrained policy reads prompts unchanged
        if config.mode == "token":
            if not binnings or not reward_token_ids:
                raise ValueError("token conditioning needs bins and reward-token ids")
            if len(binnings) != config.num_objectives:
                raise ValueError(
                    f"token conditioning on {config.num_objectives} reward(s) needs as many "
                    f"binnings, got {len(binnings)}"
                )
            if config.objectives and len(reward_token_ids) != (
                config.num_objectives * config.num_reward_tokens
            ):
                raise ValueError(
                    f"token conditioning on objectives {config.objective_names} needs "
                    f"{config.num_reward_tokens} reward-token ids per objective, got "
                    f"{len(reward_token_ids)} in all"
                )
        self.config = config
        self.head = head
        self.prompt_head = prompt_head if config.reward_on_prompt else None
        self.lora = lora  # the gated LoRA (best_command_lora_rank, reward_lora_rank), else None
        self.normalizer = normalizer or RewardNormalizer(config.normalization)
        self.binnings: list[RewardBinning] = list(binnings) if config.mode == "token" else []
        self.reward_token_ids = list(reward_token_ids)
        self.placeholder_id = placeholder_id
        self.bins_fitted = False
        self.bin_ranges: list[tuple[float, float] | None] = [None] * len(self.binnings)

    @staticmethod
    def initial_binnings(config: ConditioningConfig) -> list[RewardBinning]:
        """The bins a fresh token-mode conditioner starts with (``[]`` in scalar mode): the
        configured ``bin_edges``, else ``first_bins`` bins evenly over ``[reward_min,
        reward_max]``; with objectives, ``num_reward_tokens`` bins evenly over each objective's
        ``[low, high]``, in the config's order."""
        return conditioner_bins.initial_binnings(config)

    @property
    def slot_width(self) -> int:
        """Columns of the slot (``config.slot_width``): ``M`` in token mode with ``M``
        objectives, else 1."""
        return self.config.slot_width

    @property
    def binning(self) -> RewardBinning | None:
        """The bins of the one reward (token mode without objectives); ``None`` in scalar mode
        and with objectives (see ``binnings``)."""
        return self.binnings[0] if len(self.binnings) == 1 and not self.config.objectives else None

    @property
    def bin_range(self) -> tuple[float, float] | None:
        """``(lowest, highest)`` reward the one reward's bins were last cut from (token mode
        without objectives), else ``None`` (with objectives see ``bin_ranges``)."""
        return self.bin_ranges[0] if self.binning is not None else None

    def objective_token_ids(self, m: int) -> list[int]:
        """The ``K`` reward-token ids of objective ``m`` (token mode; ``m = 0`` without
        objectives), bin ``k``'s at index ``k``."""
        k = self.config.num_reward_tokens
        return self.reward_token_ids[m * k : (m + 1) * k]

    def fit_reward_statistics(
        self, rewards: Sequence[Any], pool: Sequence[Any] | None = None
    ) -> list[tuple[int, int]]:
        """Adapt normalisation or bins to the rewards the policy is about to be trained on.

        Args:
            rewards: the newly scored achieved rewards (reward units); scalar mode with
                ``running`` normalisation folds them into the running mean/std, ``quantile``
                into its empirical distribution (every reward ever added, up to
                ``fit_count``). With objectives, vectors (the normalisation is fixed by each
                objective's range, so they change nothing there).
            pool: every achieved reward the policy now trains on (the replay buffer's held
                rewards, usually including ``rewards``; ``[N]``, or ``[N, M]`` with ``M``
                objectives); default ``rewards``. Token mode with ``bin_method: quantile``
                and no fixed edges cuts the bins from it, as ``conditioning.bin_refit`` says:
                ``buffer`` re-cuts all ``K`` bins at its ``k/K`` quantiles (Quark, Lu et al.,
                2022, re-sorts its data pool into equal-mass quantiles after each addition),
                with objectives each objective's bins from its own column; ``split_top`` cuts
                ``first_bins`` bins from the first pool it sees and later only splits the top
                bin (:meth:`RewardBinning.split_top`). A pool with fewer rewards than bins to
                cut leaves the bins as they are. Otherwise nothing changes.

        Returns:
            The splits made, ``(new_bin, split_bin)`` index pairs (``split_top`` only): the
            new bin's reward token should start from the split bin's (the policy copies the
            embedding row).

        Raises:
            ValueError: with objectives, a pool reward is not a vector of ``M`` floats.
        """
        return conditioner_bins.fit_reward_statistics(self, rewards, pool)

    def describe_target(self, target: Any) -> dict[str, Any] | None:
        """Which bin (token mode) a target reward maps to, or ``None`` in scalar mode.

        Args:
            target: a float, or with objectives a sequence of ``M`` floats (config order).

        Returns:
            ``bin`` (index in ``[0, K)``), ``bins`` (K, the bins in use), ``low`` and ``high``
            (the bin's edges, reward units; ``None`` for the open ends), ``token`` (its text),
            and ``above_range``: the target lies above the largest reward the bins were last
            cut from (the buffer's best), so the top bin's token asks for rewards like the
            best seen, not for the target: token mode cannot extrapolate. ``range`` is
            ``[lowest, highest]`` of those rewards (``None`` before the first fit). With
            objectives: ``objectives``, one such dict per objective (in order, with its
            ``name``), and ``above_range``, whether any objective's is.

        Raises:
            ValueError: with objectives, ``target`` is not ``M`` floats.
        """
        return conditioner_bins.describe_target(self, target)

    def slot_token_ids(self, rewards: Sequence[Any]) -> list[int] | list[list[int]]:
        """The slot's ids for each reward, the form :func:`~online_dt.policy.layout.layout_batch`
        takes: one id per reward (the reward token in token mode, the placeholder in scalar
        mode), or, in token mode with ``M`` objectives, a list of ``M`` ids per reward (a
        vector): objective ``m``'s reward token for its bin of ``reward[m]``, in config order.

        Raises:
            ValueError: with objectives in token mode, a reward is not ``M`` floats.
        """
        if not self.binnings:
            return [self.placeholder_id] * len(rewards)
        if not self.config.objectives:
            bins = self.binnings[0](torch.tensor([float(r) for r in rewards], dtype=torch.float64))
            return [self.reward_token_ids[int(b)] for b in bins]
        values = self.reward_tensor(rewards, dtype=torch.float64)
        columns = [
            [self.objective_token_ids(m)[int(b)] for b in binning(values[:, m])]
            for m, binning in enumerate(self.binnings)
        ]
        return [list(row) for row in zip(*columns, strict=True)]

    def reward_tensor(
        self, rewards: Sequence[Any], dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Rewards or targets as the tensor :meth:`fill_slot` takes (float32 by default):
        ``[B]`` for floats, ``[B, M]`` with ``conditioning.objectives`` (``M`` objectives, each
        reward a sequence of ``M`` floats in the config's order; a list, tuple, or anything
        with ``tolist`` such as a row of the buffer's ``[N, M]`` array).

        Raises:
            ValueError: a reward's shape does not match the conditioning: a vector in a
                one-reward policy, a float or a vector of another length with objectives.
        """
        names = self.config.objective_names
        if not names:
            if any(isinstance(r, tuple | list) for r in rewards):
                raise ValueError(
                    "a reward vector was given to a policy conditioned on one reward "
                    "(conditioning.objectives is empty)"
                )
            return torch.tensor([float(r) for r in rewards], dtype=dtype)
        rows = [r.tolist() if callable(getattr(r, "tolist", None)) else r for r in rewards]
        bad = [r for r in rows if not isinstance(r, tuple | list) or len(r) != len(names)]
        if bad:
            raise ValueError(
                f"the policy is conditioned on {len(names)} objectives {names}: every reward "
                f"must be a sequence of {len(names)} floats, got {bad[0]!r}"
            )
        values = [[float(x) for x in r] for r in rows]
        return torch.tensor(values, dtype=dtype).reshape(len(values), len(names))

    def normalize(self, rewards: torch.Tensor) -> torch.Tensor:
        """Normalised rewards, the head's input: ``[B]`` through the normaliser, or ``[B, M]``
        (objectives) as ``(r_m - centre_m) / half_width_m``, each objective's ``[low, high]``
        mapped to ``[-1, 1]`` (:class:`~online_dt.config.ObjectiveConfig`)."""
        objectives = self.config.objectives
        if not objectives:
            return self.normalizer(rewards)
        centre = torch.tensor([o.center for o in objectives], dtype=rewards.dtype)
        half = torch.tensor([o.half_width for o in objectives], dtype=rewards.dtype)
        return (rewards - centre.to(rewards.device)) / half.to(rewards.device)

    def fill_slot(
        self,
        embeds: torch.Tensor,
        rewards: torch.Tensor | None,
        prompt_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Replace column 0 of ``embeds`` (``[B, T, H]``) with the scalar reward embedding of
        ``rewards`` (``[B]``, reward units; ``[B, M]`` with ``M`` objectives) and, with
        ``reward_on_prompt``, add the reward vector to the prompt's columns: those
        ``prompt_mask`` (``[B, T]``, True on prompt tokens) marks, or, when it is ``None``,
        every column after the slot (``embeds`` then holds ``[slot, *prompt]``, as for vLLM's
        ``prompt_embeds``). Token mode, or ``rewards=None`` (decoding steps), returns
        ``embeds`` unchanged (the reward token's own embedding is already there). With
        ``best_command``, a reward above ``reward_max`` is the best command: the head reads
        ``reward_max`` and a last input of 1 (0 for every other reward)."""
        if rewards is None or self.head is None:
            return embeds
        raw = rewards.to(self.head.weight.device, self.head.weight.dtype)
        best = None
        if self.config.best_command:
            best = (raw > self.config.reward_max).to(raw.dtype)[:, None]
            raw = raw.clamp(max=self.config.reward_max)
        normed = self.normalize(raw)
        features = self.head_features(raw, normed)
        if best is not None:
            features = torch.cat([features, best], dim=1)
        slot = self.head(features).to(embeds.dtype)
        rest = embeds[:, 1:, :]
        if self.prompt_head is not None:
            shift = self.prompt_head(normed[:, None]).to(embeds.dtype)[:, None, :]
            if prompt_mask is not None:
                shift = shift * prompt_mask[:, 1:, None].to(embeds.dtype)
            rest = rest + shift
        return torch.cat([slot[:, None, :], rest], dim=1)

    def head_features(self, rewards: torch.Tensor, normed: torch.Tensor) -> torch.Tensor:
        """The scalar head's input ``[B, F]`` for ``rewards`` (``[B]``, reward units) and their
        normalised values ``normed`` (``[B]``): ``normed`` alone (``reward_features:
        linear``, ``F = 1``), or followed by ``rbf_centers`` Gaussian radial basis features of
        ``rewards`` (``rbf``: centres evenly spaced over ``[reward_min, reward_max]``, width
        their spacing; see :class:`ConditioningConfig`). With objectives, ``normed`` is
        ``[B, M]`` and is the input as it is (``F = M``)."""
        cfg = self.config
        if normed.dim() == 2:
            return normed
        if cfg.reward_features == "linear":
            return normed[:, None]
        centres = torch.linspace(
            cfg.reward_min, cfg.reward_max, cfg.rbf_centers, device=rewards.device
        ).to(rewards.dtype)
        width = (cfg.reward_max - cfg.reward_min) / (cfg.rbf_centers - 1)
        rbf = torch.exp(-0.5 * ((rewards[:, None] - centres[None, :]) / width) ** 2)
        return torch.cat([normed[:, None], rbf], dim=1)

    def to_state(self) -> dict[str, Any]:
        """Everything :meth:`save` writes, as an in-memory object (no file is written).

        Returns:
            ``{"meta": ..., "head": ...}``: ``meta`` is the content of ``conditioning.json``
            (config, normaliser state, bin edges and whether they were fitted, the rewards'
            range, reward-token ids, placeholder id; in token mode with objectives also
            ``objective_bins``, per objective in order its ``name``, ``bin_edges``,
            ``bin_range`` and ``reward_token_ids``, the top-level ``bin_edges`` and
            ``bin_range`` then ``None``; plain JSON values, copied, so later changes to this
            conditioner do not show in it); ``head`` maps the scalar head's
            parameter names (``weight`` ``[H, F]``, ``bias`` ``[H]``, and with
            ``reward_on_prompt``
            :data:`~online_dt.policy.conditioner_state.PROMPT_HEAD_KEY` ``[H, 1]``) to
            float32 CPU tensors (copies) in scalar mode, and is ``None`` in token mode:
            ``head.safetensors``.
            Picklable (it travels through Ray's object store); :meth:`from_state` reads it
            back.
        """
        return conditioner_state(self)

    def save(self, path: str | Path) -> None:
        """Write ``reward_conditioning/conditioning.json`` (and ``head.safetensors``) under
        ``path``: the content of :meth:`to_state`."""
        save_state(self.to_state(), path)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RewardConditioner:
        """A new conditioner (on CPU) from what :meth:`to_state` returned, as :meth:`load`
        builds one from the files :meth:`save` wrote. The new conditioner shares no tensor or
        list with ``state``.

        Raises:
            ValueError: the state's format version is newer than this library understands,
                or it is scalar mode without head weights (or, with ``reward_on_prompt``,
                without the prompt head's), or with a head whose inputs do not match
                ``reward_features``; or token mode with objectives whose ``objective_bins``
                are missing or do not name the config's objectives in order.
        """
        parts = parse_state(state)
        conditioner = cls(
            parts.config,
            placeholder_id=parts.placeholder_id,
            head=parts.head,
            binnings=parts.binnings,
            reward_token_ids=parts.reward_token_ids,
            normalizer=parts.normalizer,
            prompt_head=parts.prompt_head,
            lora=parts.lora,
        )
        conditioner.bins_fitted = parts.bins_fitted
        conditioner.bin_ranges = parts.bin_ranges
        return conditioner

    def load_state(self, state: dict[str, Any]) -> None:
        """Take over a :meth:`to_state` state in place: the heads' weights are copied into
        this conditioner's heads (which keep their device and dtype), and the config,
        normaliser, bins, rewards' range and token ids are replaced.

        Raises:
            ValueError: the state's mode, objectives or heads (size, ``reward_on_prompt``)
                differ from this conditioner's (a different policy, not a new version of this
                one), or :meth:`from_state`'s errors.
        """
        take_over_state(self, RewardConditioner.from_state(state))

    @classmethod
    def load(cls, path: str | Path) -> RewardConditioner:
        """Read what :meth:`save` wrote (on CPU).

        Raises:
            FileNotFoundError: ``path`` has no ``reward_conditioning/conditioning.json``.
            ValueError: the file's format version is newer than this library understands.
        """
        return load_conditioner(path, cls.from_state)

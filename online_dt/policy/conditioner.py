"""The conditioner: rewards to the content of the conditioning slot, and its persistence.

It is independent of the language model: the policy uses it for training and HF generation, the
vLLM sampler to build ``prompt_embeds`` or reward-token prompts. A saved policy directory holds
it in a ``reward_conditioning/`` folder: ``conditioning.json`` (config, normaliser state, bin
edges and whether they were fitted, reward-token ids; per objective with objectives in token
mode) and, in scalar mode, ``head.safetensors``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from online_dt.config import ConditioningConfig
from online_dt.policy.normalization import RewardBinning, RewardNormalizer, reward_token

CONDITIONING_DIR = "reward_conditioning"
"""Subdirectory of a policy directory holding the conditioning (kept out of the top level,
where vLLM and transformers load every ``*.safetensors`` file as model weights)."""
CONDITIONING_FILE = f"{CONDITIONING_DIR}/conditioning.json"
HEAD_FILE = f"{CONDITIONING_DIR}/head.safetensors"
FORMAT_VERSION = 1
PROMPT_HEAD_KEY = "prompt.weight"
"""Key of the ``reward_on_prompt`` weight ``[hidden, 1]`` in ``head.safetensors``."""


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
        if config.mode != "token":
            return []
        if config.objectives:
            k = config.num_reward_tokens
            return [RewardBinning.evenly(o.low, o.high, k) for o in config.objectives]
        if config.bin_edges is not None:
            return [RewardBinning(config.bin_edges)]
        return [RewardBinning.evenly(config.reward_min, config.reward_max, config.first_bins)]

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
            rewards: the newly added achieved rewards (reward units); scalar mode with
                ``running`` normalisation folds them into the running mean/std, ``quantile``
                into its empirical distribution (every reward ever added, up to
                ``fit_count``). With objectives, vectors (the normalisation is fixed by each
                objective's range, so they change nothing there).
            pool: every achieved reward the policy now trains on (the replay buffer's held
                rewards, which include ``rewards``; ``[N]``, or ``[N, M]`` with ``M``
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
        cfg = self.config
        if cfg.objectives:  # each objective is normalised from its configured range
            if cfg.mode == "token" and cfg.bin_method == "quantile":
                self._cut_objective_bins(rewards if pool is None else pool)
            return []
        self.normalizer.update(rewards)
        if cfg.mode != "token" or cfg.bin_method != "quantile" or cfg.bin_edges is not None:
            return []
        values = [float(r) for r in (rewards if pool is None else pool)]
        if not values:
            return []
        splits: list[tuple[int, int]] = []
        if not cfg.splits_top_bin or not self.bins_fitted:
            if len(values) < cfg.first_bins:
                return []
            self.binnings = [RewardBinning.from_quantiles(values, cfg.first_bins)]
            self.bins_fitted = True
        else:
            binning = self.binnings[0]
            while (split := binning.split_top(values, cfg.num_reward_tokens)) is not None:
                splits.append((split.num_bins - 1, binning.num_bins - 1))
                binning = split
            self.binnings = [binning]
        self.bin_ranges = [(min(values), max(values))]
        return splits

    def _cut_objective_bins(self, pool: Sequence[Any]) -> None:
        """Token mode with objectives, ``bin_refit: buffer``: re-cut every objective's ``K``
        bins at the ``k/K`` quantiles of its column of ``pool`` (``N`` vectors of ``M``
        rewards; nothing changes while ``N < K``)."""
        k = self.config.num_reward_tokens
        if len(pool) < k:
            return
        rows = self.reward_tensor(list(pool), dtype=torch.float64)
        columns = rows.T.tolist()
        self.binnings = [RewardBinning.from_quantiles(column, k) for column in columns]
        self.bin_ranges = [(min(column), max(column)) for column in columns]
        self.bins_fitted = True

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
        if not self.binnings:
            return None
        names = self.config.objective_names
        if not names:
            return _describe_bin(self.binnings[0], self.bin_ranges[0], float(target), None)
        values = self.reward_tensor([target], dtype=torch.float64)[0].tolist()
        per = [
            {"name": name, **_describe_bin(binning, span, value, name)}
            for name, binning, span, value in zip(
                names, self.binnings, self.bin_ranges, values, strict=True
            )
        ]
        return {"objectives": per, "above_range": any(d["above_range"] for d in per)}

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
        ``embeds`` unchanged (the reward token's own embedding is already there)."""
        if rewards is None or self.head is None:
            return embeds
        raw = rewards.to(self.head.weight.device, self.head.weight.dtype)
        normed = self.normalize(raw)
        slot = self.head(self.head_features(raw, normed)).to(embeds.dtype)
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
            ``reward_on_prompt`` :data:`PROMPT_HEAD_KEY` ``[H, 1]``) to float32 CPU tensors
            (copies) in scalar mode, and is ``None`` in token mode: ``head.safetensors``.
            Picklable (it travels through Ray's object store); :meth:`from_state` reads it
            back.
        """
        head = None
        if self.head is not None:
            head = {
                k: v.detach().to("cpu", torch.float32, copy=True).contiguous()
                for k, v in self.head.state_dict().items()
            }
            if self.prompt_head is not None:
                weight = self.prompt_head.weight.detach()
                head[PROMPT_HEAD_KEY] = weight.to("cpu", torch.float32, copy=True).contiguous()
        binning, span = self.binning, self.bin_range
        meta: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "config": self.config.model_dump(mode="json"),
            "normalizer": self.normalizer.state_dict(),
            "bin_edges": binning.edges if binning is not None else None,
            "bins_fitted": self.bins_fitted,
            "bin_range": list(span) if span is not None else None,
            "reward_token_ids": self.reward_token_ids,
            "placeholder_id": self.placeholder_id,
        }
        if self.config.objectives and self.binnings:
            meta["objective_bins"] = [
                {
                    "name": name,
                    "bin_edges": b.edges,
                    "bin_range": list(r) if r is not None else None,
                    "reward_token_ids": self.objective_token_ids(m),
                }
                for m, (name, b, r) in enumerate(
                    zip(self.config.objective_names, self.binnings, self.bin_ranges, strict=True)
                )
            ]
        # a JSON round trip: the values conditioning.json would hold, sharing no list with self
        return {"meta": json.loads(json.dumps(meta)), "head": head}

    def save(self, path: str | Path) -> None:
        """Write ``reward_conditioning/conditioning.json`` (and ``head.safetensors``) under
        ``path``: the content of :meth:`to_state`."""
        from safetensors.torch import save_file

        path = Path(path)
        (path / CONDITIONING_DIR).mkdir(parents=True, exist_ok=True)
        state = self.to_state()
        if state["head"] is not None:
            save_file(state["head"], str(path / HEAD_FILE))
        (path / CONDITIONING_FILE).write_text(json.dumps(state["meta"], indent=2))

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
        meta = json.loads(json.dumps(state["meta"]))
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"conditioning state has format_version {meta['format_version']}")
        config = ConditioningConfig.model_validate(meta["config"])
        normalizer = RewardNormalizer(config.normalization)
        normalizer.load_state_dict(meta["normalizer"])
        head = prompt_head = None
        if config.mode == "scalar":
            weights = dict(state.get("head") or {})
            if not weights:
                raise ValueError("scalar conditioning state without head weights")
            prompt_weight = weights.pop(PROMPT_HEAD_KEY, None)
            shape = tuple(weights["weight"].shape)
            if shape[1] != config.head_inputs:
                raise ValueError(
                    f"the head's weight is {list(shape)}, but reward_features: "
                    f"{config.reward_features} with objectives {config.objective_names} needs "
                    f"{config.head_inputs} inputs"
                )
            head = nn.Linear(shape[1], shape[0])
            head.load_state_dict({k: v.detach().float() for k, v in weights.items()})
            if config.reward_on_prompt:
                if prompt_weight is None:
                    raise ValueError(f"conditioning state lacks {PROMPT_HEAD_KEY}")
                prompt_head = nn.Linear(1, prompt_weight.shape[0], bias=False)
                with torch.no_grad():
                    prompt_head.weight.copy_(prompt_weight)
        binnings, spans, token_ids = _bins_of(meta, config)
        conditioner = cls(
            config,
            placeholder_id=meta["placeholder_id"],
            head=head,
            binnings=binnings,
            reward_token_ids=token_ids,
            normalizer=normalizer,
            prompt_head=prompt_head,
        )
        conditioner.bins_fitted = bool(meta.get("bins_fitted", False))
        conditioner.bin_ranges = spans
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
        other = RewardConditioner.from_state(state)
        if other.config.mode != self.config.mode:
            raise ValueError(
                f"conditioning state is {other.config.mode} mode, this conditioner "
                f"{self.config.mode} mode"
            )
        if other.config.objective_names != self.config.objective_names:
            raise ValueError(
                f"conditioning state is conditioned on objectives {other.config.objective_names}"
                f", this conditioner on {self.config.objective_names}"
            )
        pairs = [(self.head, other.head), (self.prompt_head, other.prompt_head)]
        for mine, theirs in pairs:
            if (mine is None) != (theirs is None) or (
                mine is not None and theirs is not None and mine.weight.shape != theirs.weight.shape
            ):
                raise ValueError(
                    "the conditioning state's heads do not fit this conditioner's "
                    f"({_shape(theirs)} into {_shape(mine)})"
                )
        with torch.no_grad():
            for mine, theirs in pairs:
                if mine is not None and theirs is not None:
                    for name, value in theirs.state_dict().items():
                        mine.get_parameter(name).copy_(value)
        self.config = other.config
        self.normalizer = other.normalizer
        self.binnings = other.binnings
        self.reward_token_ids = other.reward_token_ids
        self.placeholder_id = other.placeholder_id
        self.bins_fitted = other.bins_fitted
        self.bin_ranges = other.bin_ranges

    @classmethod
    def load(cls, path: str | Path) -> RewardConditioner:
        """Read what :meth:`save` wrote (on CPU).

        Raises:
            FileNotFoundError: ``path`` has no ``reward_conditioning/conditioning.json``.
            ValueError: the file's format version is newer than this library understands.
        """
        path = Path(path)
        meta_file = path / CONDITIONING_FILE
        if not meta_file.is_file():
            raise FileNotFoundError(
                f"{path} is not a conditioned policy directory (no {CONDITIONING_FILE})"
            )
        meta = json.loads(meta_file.read_text())
        head = None
        if ConditioningConfig.model_validate(meta["config"]).mode == "scalar":
            from safetensors.torch import load_file

            head = load_file(str(path / HEAD_FILE))
        try:
            return cls.from_state({"meta": meta, "head": head})
        except ValueError as e:  # name the directory: the state does not know it
            raise ValueError(f"{path}: {e}") from e


def _shape(head: nn.Linear | None) -> tuple[int, ...] | None:
    return None if head is None else tuple(head.weight.shape)


def _span(value: Sequence[float] | None) -> tuple[float, float] | None:
    return (float(value[0]), float(value[1])) if value is not None else None


def _bins_of(
    meta: dict[str, Any], config: ConditioningConfig
) -> tuple[list[RewardBinning], list[tuple[float, float] | None], list[int]]:
    """The binnings, their rewards' ranges and the reward-token ids a ``conditioning.json``
    holds: top-level ``bin_edges``, ``bin_range`` and ``reward_token_ids`` for one reward (the
    only form before objectives existed), ``objective_bins`` in token mode with objectives.

    Raises:
        ValueError: token mode with objectives and ``objective_bins`` missing or not naming
            the config's objectives in order.
    """
    if not (config.mode == "token" and config.objectives):
        edges = meta.get("bin_edges")
        binnings = [RewardBinning(edges)] if edges is not None else []
        spans = [_span(meta.get("bin_range"))] * len(binnings)
        return binnings, spans, list(meta.get("reward_token_ids", []))
    entries = meta.get("objective_bins") or []
    names = [e.get("name") for e in entries]
    if names != config.objective_names:
        raise ValueError(
            f"conditioning state's objective_bins name {names}, but its config's objectives "
            f"are {config.objective_names}"
        )
    binnings = [RewardBinning(e["bin_edges"]) for e in entries]
    spans = [_span(e.get("bin_range")) for e in entries]
    token_ids = [int(i) for e in entries for i in e["reward_token_ids"]]
    return binnings, spans, token_ids


def _describe_bin(
    binning: RewardBinning,
    span: tuple[float, float] | None,
    value: float,
    objective: str | None,
) -> dict[str, Any]:
    """:meth:`RewardConditioner.describe_target`'s dict for one reward ``value`` under
    ``binning`` (bins last cut from rewards spanning ``span``), for the one reward
    (``objective`` ``None``) or the named objective."""
    k = int(binning(torch.tensor([value], dtype=torch.float64))[0])
    low, high = binning.bounds(k)
    return {
        "bin": k,
        "bins": binning.num_bins,
        "low": None if math.isinf(low) else low,
        "high": None if math.isinf(high) else high,
        "token": reward_token(k, objective),
        "above_range": span is not None and value > span[1],
        "range": list(span) if span is not None else None,
    }

"""The conditioner: rewards to the content of the conditioning slot, and its persistence.

It is independent of the language model: the policy uses it for training and HF generation, the
vLLM sampler to build ``prompt_embeds`` or reward-token prompts. A saved policy directory holds
it in a ``reward_conditioning/`` folder: ``conditioning.json`` (config, normaliser state, bin
edges and whether they were fitted, reward-token ids) and, in scalar mode, ``head.safetensors``.
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
    """Turns rewards into the content of the conditioning slot (sequence index 0).

    Holds the conditioning config, the scalar head and normaliser (scalar mode) or the bins and
    reward-token ids (token mode). The policy uses it for training and HF generation; the vLLM
    sampler uses the same object to build ``prompt_embeds`` or reward-token prompts, so the slot
    is computed by one piece of code everywhere.

    Attributes:
        config: the :class:`ConditioningConfig`.
        head: ``Linear(F, hidden)`` in scalar mode (``F`` = ``config.head_inputs``, see
            :meth:`head_features`), else ``None``.
        prompt_head: ``Linear(1, hidden, bias=False)`` with ``reward_on_prompt`` (its output
            is added to every prompt token's embedding), else ``None``.
        normalizer: reward normalisation used before the head.
        binning: reward bins (token mode), else ``None``; with ``bin_refit: split_top`` it
            may hold fewer bins than there are reward tokens (the rest wait for splits).
        bins_fitted: whether quantile bins have been cut from rewards yet (before that they
            are evenly spaced over ``[reward_min, reward_max]``).
        bin_range: ``(lowest, highest)`` reward the bins were last cut from, or ``None``.
        reward_token_ids: ids of ``<|reward_0|>..<|reward_{K-1}|>`` (token mode), else ``[]``.
        placeholder_id: id written into column 0 in scalar mode (its embedding is replaced).
    """

    def __init__(
        self,
        config: ConditioningConfig,
        *,
        placeholder_id: int,
        head: nn.Linear | None = None,
        binning: RewardBinning | None = None,
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
        if config.mode == "token" and (binning is None or not reward_token_ids):
            raise ValueError("token conditioning needs bins and reward-token ids")
        self.config = config
        self.head = head
        self.prompt_head = prompt_head if config.reward_on_prompt else None
        self.normalizer = normalizer or RewardNormalizer(config.normalization)
        self.binning = binning
        self.reward_token_ids = list(reward_token_ids)
        self.placeholder_id = placeholder_id
        self.bins_fitted = False
        self.bin_range: tuple[float, float] | None = None

    def fit_reward_statistics(
        self, rewards: Sequence[float], pool: Sequence[float] | None = None
    ) -> list[tuple[int, int]]:
        """Adapt normalisation or bins to the rewards the policy is about to be trained on.

        Args:
            rewards: the newly added achieved rewards (reward units); scalar mode with
                ``running`` normalisation folds them into the running mean/std, ``quantile``
                into its empirical distribution (every reward ever added, up to
                ``fit_count``).
            pool: every achieved reward the policy now trains on (the replay buffer's held
                rewards, which include ``rewards``); default ``rewards``. Token mode with
                ``bin_method: quantile`` and no fixed edges cuts the bins from it, as
                ``conditioning.bin_refit`` says: ``buffer`` re-cuts all ``K`` bins at its
                ``k/K`` quantiles (Quark, Lu et al., 2022, re-sorts its data pool into
                equal-mass quantiles after each addition); ``split_top`` cuts
                ``first_bins`` bins from the first pool it sees and later only splits the top
                bin (:meth:`RewardBinning.split_top`). A pool with fewer rewards than bins to
                cut leaves the bins as they are. Otherwise nothing changes.

        Returns:
            The splits made, ``(new_bin, split_bin)`` index pairs (``split_top`` only): the
            new bin's reward token should start from the split bin's (the policy copies the
            embedding row).
        """
        cfg = self.config
        if cfg.objectives:  # each objective is normalised from its configured range
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
            self.binning = RewardBinning.from_quantiles(values, cfg.first_bins)
            self.bins_fitted = True
        else:
            assert self.binning is not None
            while (split := self.binning.split_top(values, cfg.num_reward_tokens)) is not None:
                splits.append((split.num_bins - 1, self.binning.num_bins - 1))
                self.binning = split
        self.bin_range = (min(values), max(values))
        return splits

    def describe_target(self, target: float) -> dict[str, Any] | None:
        """Which bin (token mode) a target reward maps to, or ``None`` in scalar mode.

        Returns:
            ``bin`` (index in ``[0, K)``), ``bins`` (K, the bins in use), ``low`` and ``high``
            (the bin's edges, reward units; ``None`` for the open ends), ``token`` (its text),
            and ``above_range``: the target lies above the largest reward the bins were last
            cut from (the buffer's best), so the top bin's token asks for rewards like the
            best seen, not for the target: token mode cannot extrapolate. ``range`` is
            ``[lowest, highest]`` of those rewards (``None`` before the first fit).
        """
        if self.binning is None:
            return None
        k = int(self.binning(torch.tensor([float(target)], dtype=torch.float64))[0])
        low, high = self.binning.bounds(k)
        return {
            "bin": k,
            "bins": self.binning.num_bins,
            "low": None if math.isinf(low) else low,
            "high": None if math.isinf(high) else high,
            "token": reward_token(k),
            "above_range": self.bin_range is not None and float(target) > self.bin_range[1],
            "range": list(self.bin_range) if self.bin_range is not None else None,
        }

    def slot_token_ids(self, rewards: Sequence[Any]) -> list[int]:
        """Column-0 ids for rewards: the reward token (token mode) or the placeholder."""
        if self.binning is None:
            return [self.placeholder_id] * len(rewards)
        bins = self.binning(torch.tensor([float(r) for r in rewards], dtype=torch.float64))
        return [self.reward_token_ids[int(b)] for b in bins]

    def reward_tensor(self, rewards: Sequence[Any]) -> torch.Tensor:
        """Rewards or targets as the float32 tensor :meth:`fill_slot` takes: ``[B]`` for
        floats, ``[B, M]`` with ``conditioning.objectives`` (``M`` objectives, each reward a
        sequence of ``M`` floats in the config's order).

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
            return torch.tensor([float(r) for r in rewards], dtype=torch.float32)
        bad = [r for r in rewards if not isinstance(r, tuple | list) or len(r) != len(names)]
        if bad:
            raise ValueError(
                f"the policy is conditioned on {len(names)} objectives {names}: every reward "
                f"must be a sequence of {len(names)} floats, got {bad[0]!r}"
            )
        values = [[float(x) for x in r] for r in rewards]
        return torch.tensor(values, dtype=torch.float32).reshape(len(values), len(names))

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
            range, reward-token ids, placeholder id; plain JSON values, copied, so later
            changes to this conditioner do not show in it); ``head`` maps the scalar head's
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
        meta = {
            "format_version": FORMAT_VERSION,
            "config": self.config.model_dump(mode="json"),
            "normalizer": self.normalizer.state_dict(),
            "bin_edges": self.binning.edges if self.binning is not None else None,
            "bins_fitted": self.bins_fitted,
            "bin_range": list(self.bin_range) if self.bin_range is not None else None,
            "reward_token_ids": self.reward_token_ids,
            "placeholder_id": self.placeholder_id,
        }
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
                ``reward_features``.
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
        edges = meta.get("bin_edges")
        conditioner = cls(
            config,
            placeholder_id=meta["placeholder_id"],
            head=head,
            binning=RewardBinning(edges) if edges is not None else None,
            reward_token_ids=meta.get("reward_token_ids", []),
            normalizer=normalizer,
            prompt_head=prompt_head,
        )
        conditioner.bins_fitted = bool(meta.get("bins_fitted", False))
        span = meta.get("bin_range")
        conditioner.bin_range = (float(span[0]), float(span[1])) if span is not None else None
        return conditioner

    def load_state(self, state: dict[str, Any]) -> None:
        """Take over a :meth:`to_state` state in place: the heads' weights are copied into
        this conditioner's heads (which keep their device and dtype), and the config,
        normaliser, bins, rewards' range and token ids are replaced.

        Raises:
            ValueError: the state's mode or heads (size, ``reward_on_prompt``) differ from
                this conditioner's (a different policy, not a new version of this one), or
                :meth:`from_state`'s errors.
        """
        other = RewardConditioner.from_state(state)
        if other.config.mode != self.config.mode:
            raise ValueError(
                f"conditioning state is {other.config.mode} mode, this conditioner "
                f"{self.config.mode} mode"
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
        self.binning = other.binning
        self.reward_token_ids = other.reward_token_ids
        self.placeholder_id = other.placeholder_id
        self.bins_fitted = other.bins_fitted
        self.bin_range = other.bin_range

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

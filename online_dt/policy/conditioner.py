"""The conditioner: rewards to the content of the conditioning slot, and its persistence.

It is independent of the language model: the policy uses it for training and HF generation, the
vLLM sampler to build ``prompt_embeds`` or reward-token prompts. A saved policy directory holds
it in a ``reward_conditioning/`` folder: ``conditioning.json`` (config, normaliser state, bin
edges, reward-token ids) and, in scalar mode, ``head.safetensors``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from online_dt.config import ConditioningConfig
from online_dt.policy.normalization import RewardBinning, RewardNormalizer

CONDITIONING_DIR = "reward_conditioning"
"""Subdirectory of a policy directory holding the conditioning (kept out of the top level,
where vLLM and transformers load every ``*.safetensors`` file as model weights)."""
CONDITIONING_FILE = f"{CONDITIONING_DIR}/conditioning.json"
HEAD_FILE = f"{CONDITIONING_DIR}/head.safetensors"
FORMAT_VERSION = 1


class RewardConditioner(nn.Module):
    """Turns rewards into the content of the conditioning slot (sequence index 0).

    Holds the conditioning config, the scalar head and normaliser (scalar mode) or the bins and
    reward-token ids (token mode). The policy uses it for training and HF generation; the vLLM
    sampler uses the same object to build ``prompt_embeds`` or reward-token prompts, so the slot
    is computed by one piece of code everywhere.

    Attributes:
        config: the :class:`ConditioningConfig`.
        head: ``Linear(1, hidden)`` in scalar mode, else ``None``.
        normalizer: reward normalisation used before the head.
        binning: reward bins (token mode), else ``None``.
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
    ) -> None:
        super().__init__()
        if config.mode == "scalar" and head is None:
            raise ValueError("scalar conditioning needs a head")
        if config.mode == "token" and (binning is None or not reward_token_ids):
            raise ValueError("token conditioning needs bins and reward-token ids")
        self.config = config
        self.head = head
        self.normalizer = normalizer or RewardNormalizer(config.normalization)
        self.binning = binning
        self.reward_token_ids = list(reward_token_ids)
        self.placeholder_id = placeholder_id

    def fit_reward_statistics(self, rewards: Sequence[float]) -> None:
        """Adapt normalisation or bins to rewards the policy is about to be trained on.

        Scalar mode with ``running`` normalisation folds them into the running mean/std; token
        mode with ``bin_method: quantile`` and no fixed edges re-cuts the bins at their
        quantiles. Otherwise nothing changes.
        """
        self.normalizer.update(rewards)
        cfg = self.config
        if cfg.mode == "token" and cfg.bin_method == "quantile" and cfg.bin_edges is None:
            self.binning = RewardBinning.from_quantiles(rewards, cfg.num_reward_tokens)

    def slot_token_ids(self, rewards: Sequence[float]) -> list[int]:
        """Column-0 ids for rewards: the reward token (token mode) or the placeholder."""
        if self.binning is None:
            return [self.placeholder_id] * len(rewards)
        bins = self.binning(torch.tensor([float(r) for r in rewards], dtype=torch.float64))
        return [self.reward_token_ids[int(b)] for b in bins]

    def fill_slot(self, embeds: torch.Tensor, rewards: torch.Tensor | None) -> torch.Tensor:
        """Replace column 0 of ``embeds`` (``[B, T, H]``) with the scalar reward embedding of
        ``rewards`` (``[B]``, reward units). Token mode, or ``rewards=None``, returns
        ``embeds`` unchanged (the reward token's own embedding is already there)."""
        if rewards is None or self.head is None:
            return embeds
        normed = self.normalizer(rewards.to(self.head.weight.device, self.head.weight.dtype))
        slot = self.head(normed[:, None]).to(embeds.dtype)
        return torch.cat([slot[:, None, :], embeds[:, 1:, :]], dim=1)

    def save(self, path: str | Path) -> None:
        """Write ``reward_conditioning/conditioning.json`` (and ``head.safetensors``) under
        ``path``."""
        from safetensors.torch import save_file

        path = Path(path)
        (path / CONDITIONING_DIR).mkdir(parents=True, exist_ok=True)
        if self.head is not None:
            state = {
                k: v.detach().float().cpu().contiguous() for k, v in self.head.state_dict().items()
            }
            save_file(state, str(path / HEAD_FILE))
        meta = {
            "format_version": FORMAT_VERSION,
            "config": self.config.model_dump(mode="json"),
            "normalizer": self.normalizer.state_dict(),
            "bin_edges": self.binning.edges if self.binning is not None else None,
            "reward_token_ids": self.reward_token_ids,
            "placeholder_id": self.placeholder_id,
        }
        (path / CONDITIONING_FILE).write_text(json.dumps(meta, indent=2))

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
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"{meta_file} has format_version {meta['format_version']}")
        config = ConditioningConfig.model_validate(meta["config"])
        normalizer = RewardNormalizer(config.normalization)
        normalizer.load_state_dict(meta["normalizer"])
        head = None
        if config.mode == "scalar":
            from safetensors.torch import load_file

            state = load_file(str(path / HEAD_FILE))
            head = nn.Linear(1, state["weight"].shape[0])
            head.load_state_dict(state)
        edges = meta.get("bin_edges")
        return cls(
            config,
            placeholder_id=meta["placeholder_id"],
            head=head,
            binning=RewardBinning(edges) if edges is not None else None,
            reward_token_ids=meta.get("reward_token_ids", []),
            normalizer=normalizer,
        )

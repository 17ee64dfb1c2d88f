"""Persistence of the conditioner: its in-memory state and its files in a policy directory.

Functions over a :class:`~online_dt.policy.conditioner.RewardConditioner` (seen through
:class:`StatefulConditioner`), behind its ``to_state``/``from_state`` (the picklable state that
travels through Ray's object store to the samplers), ``load_state`` (take over a newer state in
place) and ``save``/``load`` (the ``reward_conditioning/`` folder of a saved policy directory:
``conditioning.json`` and, in scalar mode, ``head.safetensors``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from torch import nn

from online_dt.config import ConditioningConfig
from online_dt.policy.gated_lora import STATE_PREFIX as LORA_PREFIX
from online_dt.policy.gated_lora import GatedLoRA
from online_dt.policy.normalization import RewardBinning, RewardNormalizer

CONDITIONING_DIR = "reward_conditioning"
"""Subdirectory of a policy directory holding the conditioning (kept out of the top level,
where vLLM and transformers load every ``*.safetensors`` file as model weights)."""
CONDITIONING_FILE = f"{CONDITIONING_DIR}/conditioning.json"
HEAD_FILE = f"{CONDITIONING_DIR}/head.safetensors"
FORMAT_VERSION = 1
PROMPT_HEAD_KEY = "prompt.weight"
"""Key of the ``reward_on_prompt`` weight ``[hidden, 1]`` in ``head.safetensors``."""


class StatefulConditioner(Protocol):
    """What the functions here read and write of a conditioner: the attributes and members of
    :class:`~online_dt.policy.conditioner.RewardConditioner` of those names (see its
    docstring)."""

    config: ConditioningConfig
    head: nn.Linear | None
    prompt_head: nn.Linear | None
    lora: GatedLoRA | None
    normalizer: RewardNormalizer
    binnings: list[RewardBinning]
    bin_ranges: list[tuple[float, float] | None]
    bins_fitted: bool
    reward_token_ids: list[int]
    placeholder_id: int

    @property
    def binning(self) -> RewardBinning | None: ...

    @property
    def bin_range(self) -> tuple[float, float] | None: ...

    def objective_token_ids(self, m: int) -> list[int]: ...


C = TypeVar("C")


@dataclass
class ConditionerParts:
    """What a conditioner is built from, read out of a :func:`conditioner_state` state by
    :func:`parse_state`: its constructor's arguments, then ``bins_fitted`` and ``bin_ranges``
    to set on it."""

    config: ConditioningConfig
    placeholder_id: int
    head: nn.Linear | None
    binnings: list[RewardBinning]
    reward_token_ids: list[int]
    normalizer: RewardNormalizer
    prompt_head: nn.Linear | None
    bins_fitted: bool
    bin_ranges: list[tuple[float, float] | None]
    lora: GatedLoRA | None = None


def conditioner_state(conditioner: StatefulConditioner) -> dict[str, Any]:
    """:meth:`~online_dt.policy.conditioner.RewardConditioner.to_state` of ``conditioner``:
    everything its ``save`` writes, as an in-memory object, ``{"meta": ..., "head": ...}`` (see
    that method)."""
    head = None
    if conditioner.head is not None:
        head = {
            k: v.detach().to("cpu", torch.float32, copy=True).contiguous()
            for k, v in conditioner.head.state_dict().items()
        }
        if conditioner.prompt_head is not None:
            weight = conditioner.prompt_head.weight.detach()
            head[PROMPT_HEAD_KEY] = weight.to("cpu", torch.float32, copy=True).contiguous()
        if conditioner.lora is not None:
            head.update(conditioner.lora.state())
    binning, span = conditioner.binning, conditioner.bin_range
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "config": conditioner.config.model_dump(mode="json"),
        "normalizer": conditioner.normalizer.state_dict(),
        "bin_edges": binning.edges if binning is not None else None,
        "bins_fitted": conditioner.bins_fitted,
        "bin_range": list(span) if span is not None else None,
        "reward_token_ids": conditioner.reward_token_ids,
        "placeholder_id": conditioner.placeholder_id,
    }
    config = conditioner.config
    if config.objectives and conditioner.binnings:
        meta["objective_bins"] = [
            {
                "name": name,
                "bin_edges": b.edges,
                "bin_range": list(r) if r is not None else None,
                "reward_token_ids": conditioner.objective_token_ids(m),
            }
            for m, (name, b, r) in enumerate(
                zip(
                    config.objective_names,
                    conditioner.binnings,
                    conditioner.bin_ranges,
                    strict=True,
                )
            )
        ]
    # a JSON round trip: the values conditioning.json would hold, sharing no list with it
    return {"meta": json.loads(json.dumps(meta)), "head": head}


def save_state(state: dict[str, Any], path: str | Path) -> None:
    """Write a :func:`conditioner_state` state as ``reward_conditioning/conditioning.json``
    (and ``head.safetensors``) under ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    (path / CONDITIONING_DIR).mkdir(parents=True, exist_ok=True)
    if state["head"] is not None:
        save_file(state["head"], str(path / HEAD_FILE))
    (path / CONDITIONING_FILE).write_text(json.dumps(state["meta"], indent=2))


def parse_state(state: dict[str, Any]) -> ConditionerParts:
    """The parts of the conditioner a :func:`conditioner_state` state describes (on CPU,
    sharing no tensor or list with ``state``), for
    :meth:`~online_dt.policy.conditioner.RewardConditioner.from_state`.

    Raises:
        ValueError: as that method says.
    """
    meta = json.loads(json.dumps(state["meta"]))
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"conditioning state has format_version {meta['format_version']}")
    config = ConditioningConfig.model_validate(meta["config"])
    normalizer = RewardNormalizer(config.normalization)
    normalizer.load_state_dict(meta["normalizer"])
    head = prompt_head = lora = None
    if config.mode == "scalar":
        weights = dict(state.get("head") or {})
        if not weights:
            raise ValueError("scalar conditioning state without head weights")
        prompt_weight = weights.pop(PROMPT_HEAD_KEY, None)
        lora_weights = {k: weights.pop(k) for k in list(weights) if k.startswith(LORA_PREFIX)}
        rank = config.lora_rank
        if (rank is None) != (not lora_weights):
            raise ValueError(
                f"conditioning state with {config.lora_option or 'no LoRA'} (rank {rank}) holds "
                f"{len(lora_weights)} LoRA tensors"
            )
        if rank is not None:
            lora = GatedLoRA.from_state(lora_weights, rank)
        shape = tuple(weights["weight"].shape)
        if shape[1] != config.head_inputs:
            raise ValueError(
                f"the head's weight is {list(shape)}, but reward_features: "
                f"{config.reward_features}, best_command: {config.best_command} and objectives "
                f"{config.objective_names} need {config.head_inputs} inputs"
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
    return ConditionerParts(
        config=config,
        placeholder_id=meta["placeholder_id"],
        head=head,
        binnings=binnings,
        reward_token_ids=token_ids,
        normalizer=normalizer,
        prompt_head=prompt_head,
        bins_fitted=bool(meta.get("bins_fitted", False)),
        bin_ranges=spans,
        lora=lora,
    )


def take_over_state(conditioner: StatefulConditioner, other: StatefulConditioner) -> None:
    """:meth:`~online_dt.policy.conditioner.RewardConditioner.load_state` of ``conditioner``,
    with ``other`` the conditioner built from the state: its heads' weights are copied into
    ``conditioner``'s heads (which keep their device and dtype), and the config, normaliser,
    bins, rewards' range and token ids are replaced.

    Raises:
        ValueError: ``other``'s mode, objectives, heads (size, ``reward_on_prompt``) or
            gated LoRA (:mod:`online_dt.policy.gated_lora`) differ from
            ``conditioner``'s.
    """
    if other.config.mode != conditioner.config.mode:
        raise ValueError(
            f"conditioning state is {other.config.mode} mode, this conditioner "
            f"{conditioner.config.mode} mode"
        )
    if other.config.objective_names != conditioner.config.objective_names:
        raise ValueError(
            f"conditioning state is conditioned on objectives {other.config.objective_names}"
            f", this conditioner on {conditioner.config.objective_names}"
        )
    pairs = [(conditioner.head, other.head), (conditioner.prompt_head, other.prompt_head)]
    for mine, theirs in pairs:
        if (mine is None) != (theirs is None) or (
            mine is not None and theirs is not None and mine.weight.shape != theirs.weight.shape
        ):
            raise ValueError(
                "the conditioning state's heads do not fit this conditioner's "
                f"({_shape(theirs)} into {_shape(mine)})"
            )
    if (conditioner.lora is None) != (other.lora is None):
        raise ValueError("the conditioning state's gated LoRA does not fit this conditioner")
    if conditioner.lora is not None and other.lora is not None:
        conditioner.lora.copy_from(other.lora.state())  # checks every shape before copying
    with torch.no_grad():
        for mine, theirs in pairs:
            if mine is not None and theirs is not None:
                for name, value in theirs.state_dict().items():
                    mine.get_parameter(name).copy_(value)
    conditioner.config = other.config
    conditioner.normalizer = other.normalizer
    conditioner.binnings = other.binnings
    conditioner.reward_token_ids = other.reward_token_ids
    conditioner.placeholder_id = other.placeholder_id
    conditioner.bins_fitted = other.bins_fitted
    conditioner.bin_ranges = other.bin_ranges


def load_conditioner(path: str | Path, from_state: Callable[[dict[str, Any]], C]) -> C:
    """:meth:`~online_dt.policy.conditioner.RewardConditioner.load`: read the state
    :func:`save_state` wrote under ``path`` (on CPU) and build a conditioner from it with
    ``from_state`` (its ``ValueError`` prefixed with ``path``).

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
        return from_state({"meta": meta, "head": head})
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

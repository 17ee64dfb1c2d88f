"""Reading a newer version of the same policy from disk into the policy in place.

A sampler with ``sampler.weight_sync: checkpoint`` moves to each version the learner publishes
(``weights/vN``, written by
:meth:`~online_dt.policy.policy.RewardConditionedPolicy.save_pretrained`). Within a run only the
weights and the conditioning's state change: the architecture, the config and the tokenizer
(reward tokens included) are those of the first version. So instead of building a new policy
with ``from_pretrained`` (a new model with its random initialisation, the config, the
tokenizer: 52 ms a version on the embedded model), :func:`read_weights_in_place` reads the
directory's safetensors files into the model's parameters with ``load_state_dict`` and the
conditioning into the conditioner, as the ``ray`` backend does with a state from Ray's object
store.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from online_dt.policy.conditioner import RewardConditioner

log = logging.getLogger(__name__)

SAFE_WEIGHTS = "model.safetensors"
SAFE_WEIGHTS_INDEX = "model.safetensors.index.json"


def weight_files(path: Path) -> list[Path] | None:
    """The safetensors files of a Hugging Face model directory: the one ``model.safetensors``,
    or every shard its ``model.safetensors.index.json`` names; ``None`` when it has neither
    (weights in another format)."""
    index = path / SAFE_WEIGHTS_INDEX
    if index.is_file():
        shards = json.loads(index.read_text())["weight_map"].values()
        return [path / name for name in sorted(set(shards))]
    single = path / SAFE_WEIGHTS
    return [single] if single.is_file() else None


def read_weights_in_place(policy: Any, path: str | Path) -> bool:
    """Load the weights and conditioning of a directory written by ``save_pretrained`` into
    ``policy`` in place, when the directory holds exactly the model's tensors.

    The files' tensors must carry the model's state-dict names, with every name the files lack
    a tied copy of one they hold (``save_pretrained`` leaves tied copies such as GPT-2's
    ``lm_head.weight`` out), and fit the parameters' shapes. Values are copied into the
    parameters, which keep their device and dtype; the conditioner takes over the directory's
    state (:meth:`~online_dt.policy.conditioner.RewardConditioner.load_state`). The policy is
    left in eval mode.

    Args:
        policy: a :class:`~online_dt.policy.policy.RewardConditionedPolicy` of the run that
            published ``path``.
        path: the published directory.

    Returns:
        ``True`` when loaded. ``False``, with nothing changed, when the directory's weights are
        not safetensors or their names are not the model's (a model whose ``save_pretrained``
        writes another layout than its state dict): the caller then builds the policy with
        ``from_pretrained``.

    Raises:
        FileNotFoundError: ``path`` has no ``reward_conditioning/conditioning.json``.
        RuntimeError: a tensor's shape differs from its parameter's (``load_state_dict``'s
            error), or a tensor cannot be read.
        ValueError: the conditioning is another policy's (``load_state``'s error).
    """
    from safetensors.torch import load_file

    path = Path(path)
    conditioner = RewardConditioner.load(path)
    files = weight_files(path)
    if files is None:
        log.info("%s has no safetensors weights; full reload", path)
        return False
    device = str(next(policy.model.parameters()).device)
    loaded: dict[str, torch.Tensor] = {}
    for file in files:
        loaded.update(load_file(str(file), device=device))
    current = policy.model.state_dict()
    held = {_storage(current[name]) for name in loaded if name in current}
    unknown = sorted(set(loaded) - set(current))
    untied = sorted(n for n in set(current) - set(loaded) if _storage(current[n]) not in held)
    if unknown or untied:
        log.info(
            "%s's tensors are not the model's state dict (%d unknown, %d missing); full reload",
            path,
            len(unknown),
            len(untied),
        )
        return False
    policy.model.load_state_dict(loaded, strict=False)
    policy.conditioner.load_state(conditioner.to_state())
    policy.eval()
    return True


def _storage(tensor: torch.Tensor) -> tuple[int, int]:
    """Where a tensor's data starts: tied parameters share it."""
    return tensor.untyped_storage().data_ptr(), tensor.storage_offset()

"""Reading a newer version of the same policy from disk into the policy in place.

A sampler with ``sampler.weight_sync: checkpoint`` moves to each version the learner publishes
(``weights/vN``, written by
:meth:`~online_dt.policy.policy.RewardConditionedPolicy.save_pretrained`). Within a run only the
weights and the conditioning's state change: the architecture, the config and the tokenizer
(reward tokens included) are those of the first version. So instead of building a new policy
with ``from_pretrained`` (a new model with its random initialisation, the config, the
tokenizer: 23 ms a version on the embedded model), :func:`read_weights_in_place` reads the
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
from online_dt.policy.conditioner_state import take_over_state

log = logging.getLogger(__name__)

SAFE_WEIGHTS = "model.safetensors"
SAFE_WEIGHTS_INDEX = "model.safetensors.index.json"


def weight_files(path: Path) -> list[Path] | None:
    """The safetensors files of a Hugging Face model directory: the one ``model.safetensors``,
    or every shard its ``model.safetensors.index.json`` names; ``None`` when it has neither
    (weights in another format)."""
    index = path / SAFE_WEIGHTS_INDEX
    if index.is_file():
        shards = json.loads(index.read_text()).get("weight_map")
        return [path / name for name in sorted(set(shards.values()))] if shards else None
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

    The names and shapes are checked, from the files' headers, before anything is read or
    changed; then the conditioning is taken over (which checks its state first), then the
    tensors are copied, one file at a time.

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
        RuntimeError: a tensor's shape differs from its parameter's (nothing changed), or a
            file cannot be read (safetensors' error).
        ValueError: the conditioning is another policy's (``load_state``'s error; nothing
            changed).
    """
    from safetensors import safe_open

    path = Path(path)
    conditioner = RewardConditioner.load(path)
    files = weight_files(path)
    if files is None:
        log.info("%s has no safetensors weights; full reload", path)
        return False
    device = str(next(policy.model.parameters()).device)
    current = policy.model.state_dict()
    shapes: dict[str, tuple[int, ...]] = {}  # the files' names and shapes, read before any value
    for file in files:
        with safe_open(str(file), framework="pt", device=device) as f:
            names = f.keys()  # safe_open is not iterable
            shapes.update({name: tuple(f.get_slice(name).get_shape()) for name in names})
    held = {_storage(current[name]) for name in shapes if name in current}
    unknown = sorted(set(shapes) - set(current))
    untied = sorted(n for n in set(current) - set(shapes) if _storage(current[n]) not in held)
    if unknown or untied:
        log.info(
            "%s's tensors are not the model's state dict (%d unknown, %d missing); full reload",
            path,
            len(unknown),
            len(untied),
        )
        return False
    misfit = [n for n, shape in shapes.items() if shape != tuple(current[n].shape)]
    if misfit:
        raise RuntimeError(f"{path}: {len(misfit)} tensors do not fit the model, e.g. {misfit[0]}")
    take_over_state(policy.conditioner, conditioner)  # load_state's step; checks before it writes
    for file in files:
        with safe_open(str(file), framework="pt", device=device) as f:
            names = f.keys()
            policy.model.load_state_dict({n: f.get_tensor(n) for n in names}, strict=False)
    policy.eval()
    return True


def _storage(tensor: torch.Tensor) -> tuple[int, int]:
    """Where a tensor's data starts: tied parameters share it."""
    return tensor.untyped_storage().data_ptr(), tensor.storage_offset()

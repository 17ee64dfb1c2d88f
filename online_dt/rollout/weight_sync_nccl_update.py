"""The format of an ``nccl`` publication: the NCCL update payload and the update directory.

The learner (:class:`~online_dt.rollout.weight_sync_nccl.NCCLPublisher`) writes one small
directory per version with :func:`write_update_dir`; each sampler reads the tensor metadata back
with :func:`read_update_info` before it joins the broadcast
(:func:`~online_dt.rollout.weight_sync_nccl_engine.receive`). See
:mod:`online_dt.rollout.weight_sync_nccl` for the backend as a whole.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from online_dt.rollout.weight_sync import WeightUpdate

if TYPE_CHECKING:
    from online_dt.policy.policy import RewardConditionedPolicy

UPDATE_INFO_FILE = "nccl_update_info.json"
"""File in an update directory holding the tensor metadata the engines receive against."""

UPDATE_INFO_FORMAT = 1
"""Format version of :data:`UPDATE_INFO_FILE`."""

VLLM_API_VERSION = "0.32.0"
"""The vLLM version this backend was written against."""


def update_info_from_metadata(metadata: Sequence[Any]) -> dict[str, list[Any]]:
    """The NCCL update payload for a weight source's ``metadata()`` (vLLM ``ParamMeta``s).

    The same fields and dtype spelling as vLLM's ``NCCLWeightTransferUpdateInfo`` built in
    ``NCCLTrainerWeightTransferEngine.send_weights``: ``names``, ``dtype_names`` (``float32``,
    ``bfloat16``, ...) and ``shapes`` (lists of ints).
    """
    return {
        "names": [m.name for m in metadata],
        "dtype_names": [str(m.dtype).removeprefix("torch.") for m in metadata],
        "shapes": [[int(d) for d in m.shape] for m in metadata],
    }


def _input_embedding_name(model: torch.nn.Module) -> str:
    weight = model.get_input_embeddings().weight
    return next(n for n, p in model.named_parameters() if p is weight)


def write_update_dir(
    path: str | Path,
    policy: RewardConditionedPolicy,
    version: int,
    update_info: dict[str, list[Any]],
) -> None:
    """Write the small files of an ``nccl`` update into ``path`` (an existing directory).

    * the conditioning files (:meth:`~online_dt.policy.conditioner.RewardConditioner.save`);
    * the tokenizer and the model's ``config.json``;
    * in scalar mode, ``model.safetensors`` holding **only** the input-embedding matrix, under
      the model's own parameter name: the vLLM sampler builds ``prompt_embeds`` from it
      (``online_dt.rollout.vllm_prompts.PromptBuilder``). The directory is not a loadable model;
    * :data:`UPDATE_INFO_FILE`: ``{"format", "version", "update_info"}``.
    """
    from safetensors.torch import save_file

    path = Path(path)
    policy.conditioner.save(path)
    policy.tokenizer.save_pretrained(path)
    policy.model.config.save_pretrained(path)
    if policy.config.mode == "scalar":
        name = _input_embedding_name(policy.model)
        weight = policy.model.get_input_embeddings().weight.detach().cpu().contiguous()
        save_file({name: weight}, str(path / "model.safetensors"))
    meta = {"format": UPDATE_INFO_FORMAT, "version": version, "update_info": update_info}
    (path / UPDATE_INFO_FILE).write_text(json.dumps(meta))


def read_update_info(update: WeightUpdate) -> dict[str, list[Any]]:
    """The NCCL update payload (names, dtype names, shapes) of an ``nccl`` update.

    Raises:
        ValueError: not an ``nccl`` update, no path, or a file of another version or format.
        FileNotFoundError: the update directory has no :data:`UPDATE_INFO_FILE`.
    """
    if update.backend != "nccl" or update.path is None:
        raise ValueError(f"not an nccl update with a directory: {update}")
    file = Path(update.path) / UPDATE_INFO_FILE
    if not file.is_file():
        raise FileNotFoundError(
            f"{file} not found: the update directory must be readable by every sampler"
        )
    meta = json.loads(file.read_text())
    if meta.get("format") != UPDATE_INFO_FORMAT:
        raise ValueError(f"{file}: unknown format {meta.get('format')!r}")
    if meta.get("version") != update.version:
        raise ValueError(f"{file} is for version {meta.get('version')}, not {update.version}")
    return meta["update_info"]

"""Sampler side of the ``nccl`` weight-sync backend: what runs next to each ``vllm.LLM``.

An engine is built with :func:`engine_kwargs`, joins the learner's NCCL group with
:func:`connect_sampler`, applies each publication with :func:`receive` and leaves with
:func:`disconnect_sampler`. See :mod:`online_dt.rollout.weight_sync_nccl` for the backend as a
whole.
"""

from __future__ import annotations

from typing import Any

from online_dt.rollout.weight_sync import WeightUpdate
from online_dt.rollout.weight_sync_nccl import require_cuda_engine
from online_dt.rollout.weight_sync_nccl_update import read_update_info


def engine_kwargs() -> dict[str, Any]:
    """Keyword arguments to add to ``vllm.LLM(...)`` for an engine that receives weights over
    NCCL: ``{"weight_transfer_config": WeightTransferConfig(backend="nccl")}``.

    Raises:
        RuntimeError: neither torch nor vLLM sees a CUDA GPU.
    """
    require_cuda_engine("engine_kwargs")
    from vllm.config import WeightTransferConfig

    return {"weight_transfer_config": WeightTransferConfig(backend="nccl")}


def connect_sampler(llm: Any, init_info: dict[str, Any]) -> None:
    """Join ``llm``'s workers to the learner's NCCL group (``llm.init_weight_transfer_engine``).

    Blocks until the learner and every other engine have joined, so it must run while
    :meth:`~online_dt.rollout.weight_sync_nccl.NCCLPublisher.connect` runs (the group's ``connect``
    does this).

    Args:
        llm: a ``vllm.LLM`` built with :func:`engine_kwargs`.
        init_info: this engine's payload from
            :func:`~online_dt.rollout.weight_sync_nccl_group.split_init_info`.

    Raises:
        RuntimeError: neither torch nor vLLM sees a CUDA GPU.
    """
    require_cuda_engine("connect_sampler")
    from vllm.distributed.weight_transfer.base import WeightTransferInitRequest

    llm.init_weight_transfer_engine(WeightTransferInitRequest(init_info=dict(init_info)))


def receive(llm: Any, update: WeightUpdate) -> None:
    """Receive ``update``'s weights into ``llm`` while the learner sends them.

    Calls, in order: ``llm.start_weight_update()``; ``llm.update_weights(...)``, which blocks in
    NCCL until the learner's broadcast has completed; ``llm.finish_weight_update(
    weight_version=str(update.version))``. Must run while
    :meth:`~online_dt.rollout.weight_sync_nccl.NCCLPublisher.publish` sends, i.e. from the group's
    ``deliver``, never before or after it on the learner's thread. The conditioning files in
    ``update.path`` are the caller's to load (the vLLM sampler reloads its prompt builder from
    them).

    Args:
        llm: a ``vllm.LLM`` joined with :func:`connect_sampler`; it must not be generating.
        update: an ``nccl`` update from
            :meth:`~online_dt.rollout.weight_sync_nccl.NCCLPublisher.publish`.

    Raises:
        RuntimeError: neither torch nor vLLM sees a CUDA GPU.
        ValueError, FileNotFoundError: see
            :func:`~online_dt.rollout.weight_sync_nccl_update.read_update_info` (raised before
            ``llm`` is touched).
    """
    require_cuda_engine("receive")
    update_info = read_update_info(update)
    from vllm.distributed.weight_transfer.base import WeightTransferUpdateRequest

    llm.start_weight_update()
    # On an error the worker ends the session itself (gpu_worker.update_weights).
    llm.update_weights(WeightTransferUpdateRequest(update_info=update_info))
    llm.finish_weight_update(weight_version=str(update.version))


def disconnect_sampler(llm: Any) -> None:
    """Leave the NCCL group without stopping the engine (``shutdown_weight_transfer_engine``)."""
    llm.shutdown_weight_transfer_engine()

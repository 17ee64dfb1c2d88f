"""How the ``nccl`` publisher reaches the vLLM engines: sampler groups and vLLM's client.

:class:`NCCLSamplerGroup` is the learner's handle on every engine that receives weights
(:class:`ThreadedSamplerGroup` calls each :class:`SamplerEndpoint` on its own thread);
:class:`GroupClient` is the ``VLLMWeightSyncClient`` through which vLLM's trainer engine drives
that group. See :mod:`online_dt.rollout.weight_sync_nccl` for the backend as a whole and the
threading rules these follow.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from online_dt.rollout.weight_sync import WeightUpdate
from online_dt.rollout.weight_sync_nccl_update import UPDATE_INFO_FILE, VLLM_API_VERSION


def split_init_info(
    init_info: dict[str, Any], workers_per_engine: Sequence[int]
) -> list[dict[str, Any]]:
    """One worker init payload per engine, each with its own ``rank_offset``.

    vLLM's trainer builds a single payload (``rank_offset=1``, after the trainer's rank 0). A
    worker's NCCL rank is ``rank_offset`` plus its rank inside its engine
    (``data_parallel_index * tp * pp + rank``), so independent engines given the same payload
    would all claim ranks 1, 2, ...; engine ``i`` here gets ``rank_offset`` plus the workers of
    engines ``0..i-1``.

    Args:
        init_info: the payload vLLM passes to ``init_weight_transfer_engine``.
        workers_per_engine: GPU workers of each engine (tensor x pipeline x data parallel).

    Raises:
        ValueError: the payload's ``world_size`` is not ``rank_offset`` plus all workers.
    """
    base = int(init_info["rank_offset"])
    world_size = int(init_info["world_size"])
    if base + sum(workers_per_engine) != world_size:
        raise ValueError(
            f"NCCL world size {world_size} != rank offset {base} + engine workers "
            f"{list(workers_per_engine)}"
        )
    infos = []
    offset = base
    for workers in workers_per_engine:
        infos.append({**init_info, "rank_offset": offset})
        offset += workers
    return infos


class NCCLSamplerGroup(Protocol):
    """The learner's handle on every vLLM engine that receives weights.

    Attributes:
        workers_per_engine: GPU workers of each engine (tensor x pipeline x data parallel).
    """

    workers_per_engine: Sequence[int]

    def connect(self, init_infos: Sequence[dict[str, Any]]) -> None:
        """Make engine ``i`` run :func:`~online_dt.rollout.weight_sync_nccl_engine.connect_sampler`
        with ``init_infos[i]``, all engines at once; return when all have joined (raise if any
        failed)."""
        ...

    def deliver(self, update: WeightUpdate) -> None:
        """Make every sampler apply ``update`` (its ``load_weights``, which calls
        :func:`~online_dt.rollout.weight_sync_nccl_engine.receive`), all at once; return when all
        are done (raise if any failed)."""
        ...


@dataclass(frozen=True)
class SamplerEndpoint:
    """One engine as :class:`ThreadedSamplerGroup` reaches it: blocking callables.

    In-process::

        SamplerEndpoint(workers=1, connect=functools.partial(connect_sampler, sampler.llm),
                        apply=sampler.load_weights)

    Ray actor (whose methods call :func:`~online_dt.rollout.weight_sync_nccl_engine.connect_sampler`
    and the sampler's ``load_weights``)::

        SamplerEndpoint(workers=tp, connect=lambda info: ray.get(actor.connect_nccl.remote(info)),
                        apply=lambda update: ray.get(actor.load_weights.remote(update)))

    Attributes:
        workers: GPU workers of the engine (tensor x pipeline x data parallel).
        connect: joins the engine to the transfer group with its init payload (blocking).
        apply: applies a :class:`WeightUpdate` on the sampler (blocking).
    """

    workers: int
    connect: Callable[[dict[str, Any]], None]
    apply: Callable[[WeightUpdate], None]


class ThreadedSamplerGroup:
    """:class:`NCCLSamplerGroup` that calls each endpoint on its own thread and waits for all.

    Raises:
        ValueError: no endpoints, or an endpoint with fewer than one worker.
    """

    def __init__(self, endpoints: Sequence[SamplerEndpoint]) -> None:
        if not endpoints:
            raise ValueError("a sampler group needs at least one engine")
        if any(e.workers < 1 for e in endpoints):
            raise ValueError(
                f"every engine needs >= 1 worker, got {[e.workers for e in endpoints]}"
            )
        self.endpoints = list(endpoints)
        self.workers_per_engine = [e.workers for e in self.endpoints]

    def connect(self, init_infos: Sequence[dict[str, Any]]) -> None:
        """See :meth:`NCCLSamplerGroup.connect`."""
        pairs = zip(self.endpoints, init_infos, strict=True)
        _fan_out([lambda e=e, info=info: e.connect(info) for e, info in pairs])

    def deliver(self, update: WeightUpdate) -> None:
        """See :meth:`NCCLSamplerGroup.deliver`."""
        _fan_out([lambda e=e: e.apply(update) for e in self.endpoints])


def _fan_out(calls: Sequence[Callable[[], None]]) -> None:
    """Run every call on its own thread; wait for all; re-raise the first error."""
    with ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix="nccl-sync") as pool:
        futures = [pool.submit(call) for call in calls]
    errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error


class GroupClient:
    """vLLM ``VLLMWeightSyncClient`` that hands the inference side to a sampler group.

    vLLM's trainer engine calls ``init_weight_transfer_engine`` and ``update_weights`` on a side
    thread while it runs the matching NCCL call itself. ``start_weight_update`` and
    ``finish_weight_update`` do nothing: each sampler runs its own start/update/finish in
    :func:`~online_dt.rollout.weight_sync_nccl_engine.receive` (so the version is set in the same
    step).
    """

    def __init__(self, group: NCCLSamplerGroup) -> None:
        self.group = group
        self._lock = threading.Lock()
        self._pending: tuple[WeightUpdate, dict[str, list[Any]]] | None = None

    def expect(self, update: WeightUpdate | None, update_info: dict[str, list[Any]] | None) -> None:
        """Set (or clear, with ``None``) the update the next send delivers."""
        with self._lock:
            self._pending = None if update is None or update_info is None else (update, update_info)

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        self.group.connect(split_init_info(init_info, self.group.workers_per_engine))

    def start_weight_update(self) -> None:
        with self._lock:
            if self._pending is None:
                raise RuntimeError("send_weights called outside NCCLPublisher.publish")

    def update_weights(self, update_info: Any) -> None:
        with self._lock:
            pending = self._pending
        if pending is None:
            raise RuntimeError("send_weights called outside NCCLPublisher.publish")
        update, expected = pending
        if update_info != expected:
            # vLLM's payload and the update directory's must agree or the engines would size
            # their receive buffers differently from what the trainer sends.
            raise RuntimeError(
                "vLLM's NCCL update payload differs from the one written to "
                f"{update.path}/{UPDATE_INFO_FILE}; the vLLM weight-transfer API changed "
                f"(written against {VLLM_API_VERSION})"
            )
        self.group.deliver(update)

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        pass

"""The ``nccl`` weight-sync backend: vLLM's native NCCL weight transfer, learner GPU -> engines.

**Status.** Written against the documented weight-transfer API of vLLM 0.32.0 (the version
pinned in ``pyproject.toml``) and **not run in this project's CI**, which has no GPU. On CPU
every entry point that needs CUDA raises ``RuntimeError("nccl weight sync needs CUDA GPUs
...")``. ``tests/test_weight_sync_nccl.py`` checks that the vLLM names and signatures used here
exist, and drives vLLM's real trainer engine with only the NCCL endpoint and broadcast stubbed
out; no tensor has crossed NCCL through this code yet.

It follows these files of vLLM 0.32.0 (paths in the vLLM source tree; no text copied):

* ``vllm/distributed/weight_transfer/factory.py``: ``WeightTransferTrainerFactory.trainer_init``.
* ``vllm/distributed/weight_transfer/base.py``: ``TrainerInitInfo``, ``ModuleSource`` /
  ``WeightSource``, ``VLLMWeightSyncClient``, ``WeightTransferInitRequest``,
  ``WeightTransferUpdateRequest``.
* ``vllm/distributed/weight_transfer/nccl_engine.py``: ``NCCLTrainerInitInfo``,
  ``NCCLTrainerWeightTransferEngine.trainer_init`` / ``send_weights``,
  ``NCCLWeightTransferUpdateInfo``.
* ``vllm/distributed/weight_transfer/nccl_common.py``: ``NCCLWeightTransferInitInfo`` and
  ``worker_init_process_group`` (how a worker's NCCL rank is derived from ``rank_offset``).
* ``vllm/distributed/weight_transfer/clients.py``: ``RayVLLMWeightSyncClient`` (the same four
  control-plane calls, fanned out to Ray actors).
* ``vllm/entrypoints/rl/offline.py``: the weight-transfer methods of ``vllm.LLM``;
  ``vllm/v1/worker/gpu_worker.py``: the worker's start/update/finish session checks.
* ``vllm/config/weight_transfer.py`` and ``vllm/engine/arg_utils.py``: the
  ``weight_transfer_config`` engine argument.
* ``examples/rl/rlhf_nccl.py`` in the vLLM repository: the engine's ``update_weights`` and the
  trainer's broadcast run at the same time (Ray remote calls there).

How one publication travels
---------------------------
The learner holds one :class:`NCCLPublisher`; each vLLM engine (a ``vllm.LLM``, in this process
or in a Ray actor) is reached through a :class:`NCCLSamplerGroup` (usually a
:class:`ThreadedSamplerGroup`). vLLM's trainer engine drives its peer through a four-call client
(init / start / update / finish); this module's client forwards the *init* to every engine and
turns the *update* into "every sampler applies this :class:`WeightUpdate` now". Each sampler
then runs the whole start -> update -> finish sequence on its own engine in :func:`receive`, so
the sampler's ``load_weights(update)`` stays the one way weights change (as with
``checkpoint``).

Rendezvous (once, :meth:`NCCLPublisher.connect`, or the first publish): vLLM's
``trainer_init`` calls our client's ``init_weight_transfer_engine`` **on a side thread** and
opens the trainer's NCCL endpoint (rank 0, TCPStore on ``master_address:master_port``) on the
calling thread. The client gives each engine its own ``rank_offset``
(:func:`split_init_info`) and calls ``group.connect``, which must make every engine run
:func:`connect_sampler` **concurrently** and return when all have joined.

Publication ``publish(policy, version)``, in this order:

1. the learner writes ``<root>/v<version>`` atomically (:func:`write_update_dir`): conditioning
   files, tokenizer, model config, the input embedding in scalar mode (what the vLLM sampler's
   prompt builder reads) and ``nccl_update_info.json`` (the tensor names, dtypes and shapes);
2. vLLM's ``send_weights`` calls the client's ``start_weight_update`` (a no-op here);
3. **side thread**: the client's ``update_weights`` calls ``group.deliver(update)``; every
   sampler, concurrently, calls :func:`receive`: ``llm.start_weight_update()``, then
   ``llm.update_weights(...)``, which blocks inside the NCCL receive, then
   ``llm.finish_weight_update(weight_version=str(version))``;
4. **calling thread, at the same time as 3**: the trainer broadcasts every tensor from rank 0
   (packed into buffers by default);
5. ``send_weights`` waits for the side thread (every sampler finished), calls the client's
   ``finish_weight_update`` (a no-op: the samplers already finished, with the version) and
   synchronises the CUDA stream; the learner prunes old version directories and returns.

Threading rules that follow from NCCL collectives:

* ``group.connect`` and ``group.deliver`` must reach **all** engines at once and block until
  all are done. A loop that calls one engine after another deadlocks as soon as there are two
  engines: the first one waits in NCCL for the others.
* Never call ``llm.update_weights`` and the trainer's send one after the other in one thread:
  each blocks until the other side joins.
* A sampler must not generate while it receives: the offline ``vllm.LLM`` is not thread-safe.
  A synchronous Ray actor (``max_concurrency=1``, the default) serialises ``generate`` and
  ``load_weights``; a threaded or async actor must pause generation first.
* Failure: if a sampler fails before it enters ``update_weights`` (e.g. it cannot read the
  update directory), the trainer's broadcast waits for a peer that never comes and
  ``publish`` hangs, as in vLLM itself. Checks that can fail therefore run before any NCCL
  call (:func:`receive` reads and validates the update first). After any error in a send the
  NCCL group is unusable: the publisher refuses further publications; rebuild it and reconnect
  the engines.

Requirements: the engines must start from a full checkpoint of the same architecture and
vocabulary as the learner's model (e.g. the policy directory the run starts from) and be built
with :func:`engine_kwargs`; NCCL only overwrites existing parameters, by Hugging Face name
(``named_parameters``; tied weights are sent once). The update directory must be readable by
every sampler (a shared filesystem, as for ``checkpoint``). ``master_address:master_port`` must
be reachable from every engine's GPU workers. One learner process sends (trainer rank 0);
multi-rank (FSDP) learners are not supported here.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from online_dt.rollout.weight_sync import WeightUpdate, version_dir_name
from online_dt.util.atomic import atomic_write_dir

if TYPE_CHECKING:
    from online_dt.policy.policy import RewardConditionedPolicy

log = logging.getLogger(__name__)

UPDATE_INFO_FILE = "nccl_update_info.json"
"""File in an update directory holding the tensor metadata the engines receive against."""

UPDATE_INFO_FORMAT = 1
"""Format version of :data:`UPDATE_INFO_FILE`."""

VLLM_API_VERSION = "0.32.0"
"""The vLLM version this backend was written against."""

_CUDA_ERROR = (
    "nccl weight sync needs CUDA GPUs ({what}: {detail}); use sampler.weight_sync: checkpoint "
    "on machines without them"
)

# ---------------------------------------------------------------------------------------------
# CUDA checks
# ---------------------------------------------------------------------------------------------


def _require_cuda(what: str) -> None:
    """Raise unless this process sees a CUDA GPU (the learner sends from its own GPU)."""
    if not torch.cuda.is_available():
        raise RuntimeError(_CUDA_ERROR.format(what=what, detail="this process sees no CUDA GPU"))


def _require_cuda_engine(what: str) -> None:
    """Raise unless the vLLM engines driven from this process run on CUDA.

    The process holding a ``vllm.LLM`` need not see a GPU itself (a Ray actor with
    ``num_gpus=0`` whose workers sit in a placement group), so vLLM's own platform counts too.
    """
    if torch.cuda.is_available():
        return
    try:
        from vllm.platforms import current_platform

        on_cuda = current_platform.is_cuda_alike()
    except ImportError:
        on_cuda = False
    if not on_cuda:
        raise RuntimeError(
            _CUDA_ERROR.format(what=what, detail="neither torch nor vLLM sees a CUDA GPU")
        )


def _cuda_device(policy: RewardConditionedPolicy) -> torch.device:
    """The learner's CUDA device (the policy's), with an explicit index.

    Raises:
        ValueError: the policy is not on a CUDA device.
    """
    device = policy.device
    if device.type != "cuda":
        raise ValueError(
            f"the nccl publisher sends from the learner's GPU; the policy is on {device}"
        )
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _device_scope(device: torch.device) -> AbstractContextManager[Any]:
    """Make ``device`` current (vLLM opens the trainer endpoint on the current device)."""
    return torch.cuda.device(device)


# ---------------------------------------------------------------------------------------------
# wire metadata
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# reaching the samplers
# ---------------------------------------------------------------------------------------------


class NCCLSamplerGroup(Protocol):
    """The learner's handle on every vLLM engine that receives weights.

    Attributes:
        workers_per_engine: GPU workers of each engine (tensor x pipeline x data parallel).
    """

    workers_per_engine: Sequence[int]

    def connect(self, init_infos: Sequence[dict[str, Any]]) -> None:
        """Make engine ``i`` run :func:`connect_sampler` with ``init_infos[i]``, all engines at
        once; return when all have joined (raise if any failed)."""
        ...

    def deliver(self, update: WeightUpdate) -> None:
        """Make every sampler apply ``update`` (its ``load_weights``, which calls
        :func:`receive`), all at once; return when all are done (raise if any failed)."""
        ...


@dataclass(frozen=True)
class SamplerEndpoint:
    """One engine as :class:`ThreadedSamplerGroup` reaches it: blocking callables.

    In-process::

        SamplerEndpoint(workers=1, connect=functools.partial(connect_sampler, sampler.llm),
                        apply=sampler.load_weights)

    Ray actor (whose methods call :func:`connect_sampler` and the sampler's ``load_weights``)::

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


class _GroupClient:
    """vLLM ``VLLMWeightSyncClient`` that hands the inference side to a sampler group.

    vLLM's trainer engine calls ``init_weight_transfer_engine`` and ``update_weights`` on a side
    thread while it runs the matching NCCL call itself. ``start_weight_update`` and
    ``finish_weight_update`` do nothing: each sampler runs its own start/update/finish in
    :func:`receive` (so the version is set in the same step).
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


# ---------------------------------------------------------------------------------------------
# learner side
# ---------------------------------------------------------------------------------------------


def _policy_source(model: torch.nn.Module, wire_dtype: torch.dtype | None) -> Any:
    """A vLLM ``WeightSource`` over ``model.named_parameters()``, floating-point tensors cast
    to ``wire_dtype`` when given."""
    from vllm.distributed.weight_transfer.base import ModuleSource, ParamMeta

    if wire_dtype is None:
        return ModuleSource(model)

    def cast(dtype: torch.dtype) -> torch.dtype:
        return wire_dtype if dtype.is_floating_point else dtype

    class CastSource(ModuleSource):
        def metadata(self) -> list[Any]:
            return [ParamMeta(m.name, cast(m.dtype), m.shape) for m in super().metadata()]

        def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
            for name, tensor in super().__iter__():
                yield name, tensor.to(cast(tensor.dtype))

    return CastSource(model)


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

    * the conditioning files (:meth:`RewardConditioner.save`);
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


class NCCLPublisher:
    """Learner side of the ``nccl`` backend (implements ``WeightPublisher``).

    Args:
        root: directory holding the small per-version update directories (``v000001``, ...);
            it must be readable by every sampler.
        group: the engines that receive the weights.
        master_address: address of the learner's host as the engines' workers reach it
            (default: vLLM's ``get_ip()``).
        master_port: a free TCP port on the learner's host for the rendezvous (default: vLLM's
            ``get_open_port()``).
        packed: send tensors packed into fixed-size buffers (vLLM's default) or one by one.
        wire_dtype: cast floating-point tensors to this dtype before sending (e.g.
            ``torch.bfloat16`` when the learner trains in float32 and the engines run bfloat16:
            half the bytes; the engines cast to their own dtype either way). ``None``: as is.
        keep: update directories kept on disk (>= 1); every sampler has read a version by the
            time :meth:`publish` returns.

    Raises:
        RuntimeError: this process sees no CUDA GPU.
        ValueError: ``keep`` < 1.
    """

    def __init__(
        self,
        root: str | Path,
        group: NCCLSamplerGroup,
        *,
        master_address: str | None = None,
        master_port: int | None = None,
        packed: bool = True,
        wire_dtype: torch.dtype | None = None,
        keep: int = 2,
    ) -> None:
        _require_cuda("NCCLPublisher")
        if keep < 1:
            raise ValueError("keep must be >= 1")
        self.root = Path(root)
        self.group = group
        self.master_address = master_address
        self.master_port = master_port
        self.packed = packed
        self.wire_dtype = wire_dtype
        self.keep = keep
        self._client = _GroupClient(group)
        self._engine: Any = None
        self._device: torch.device | None = None
        self._failed = False

    @property
    def world_size(self) -> int:
        """Size of the NCCL group: the learner plus every engine worker."""
        return 1 + sum(self.group.workers_per_engine)

    @property
    def connected(self) -> bool:
        """Whether the NCCL group is set up."""
        return self._engine is not None

    def connect(self, policy: RewardConditionedPolicy) -> None:
        """Set up the NCCL group with every engine (a collective: see the module docstring).

        Called by the first :meth:`publish` if not called before. Blocks until every engine
        worker has joined.

        Raises:
            RuntimeError: no CUDA GPU, or already connected.
            ValueError: the policy is not on a CUDA device.
        """
        _require_cuda("NCCLPublisher.connect")
        if self._engine is not None:
            raise RuntimeError("the nccl publisher is already connected")
        device = _cuda_device(policy)
        from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory
        from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo
        from vllm.utils.network_utils import get_ip, get_open_port

        init_info = NCCLTrainerInitInfo(
            rank=0,
            master_address=self.master_address or get_ip(),
            master_port=self.master_port or get_open_port(),
            world_size=self.world_size,
            packed=self.packed,
        )
        log.info(
            "nccl weight sync: rendezvous at %s:%d, world size %d",
            init_info.master_address,
            init_info.master_port,
            init_info.world_size,
        )
        with _device_scope(device):
            self._engine = WeightTransferTrainerFactory.trainer_init(
                init_info,
                client=self._client,
                source=_policy_source(policy.model, self.wire_dtype),
            )
        self._device = device

    def publish(self, policy: RewardConditionedPolicy, version: int) -> WeightUpdate:
        """Send ``policy``'s weights to every engine as ``version``; return the update.

        When this returns, every sampler has applied the update (weights, conditioning and
        version). See the module docstring for the order of events.

        Raises:
            RuntimeError: no CUDA GPU, or an earlier send failed (the group is unusable).
            ValueError: the policy is not on the CUDA device the group was set up on.
            OSError: the update directory cannot be written (nothing was sent).
        """
        _require_cuda("NCCLPublisher.publish")
        if self._failed:
            raise RuntimeError(
                "an earlier nccl send failed and the transfer group is unusable; create a new "
                "publisher and reconnect the engines"
            )
        if self._engine is None:
            self.connect(policy)
        device = _cuda_device(policy)
        if device != self._device:
            raise ValueError(
                f"the nccl group was set up on {self._device}, the policy is on {device}"
            )
        source = _policy_source(policy.model, self.wire_dtype)
        update_info = update_info_from_metadata(source.metadata())
        path = self.root / version_dir_name(version)
        atomic_write_dir(path, lambda d: write_update_dir(d, policy, version, update_info))
        update = WeightUpdate(version=version, backend="nccl", path=str(path))
        self._engine.source = source
        self._client.expect(update, update_info)
        try:
            with torch.no_grad(), _device_scope(device):
                self._engine.send_weights()
        except BaseException:
            self._failed = True
            shutil.rmtree(path, ignore_errors=True)
            raise
        finally:
            self._client.expect(None, None)
        versions = sorted(p for p in self.root.glob("v[0-9]*") if p.is_dir())
        for old in versions[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return update

    def close(self) -> None:
        """Tear down the learner's end of the NCCL group (engines: :func:`disconnect_sampler`)."""
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None


# ---------------------------------------------------------------------------------------------
# sampler side
# ---------------------------------------------------------------------------------------------


def engine_kwargs() -> dict[str, Any]:
    """Keyword arguments to add to ``vllm.LLM(...)`` for an engine that receives weights over
    NCCL: ``{"weight_transfer_config": WeightTransferConfig(backend="nccl")}``.

    Raises:
        RuntimeError: neither torch nor vLLM sees a CUDA GPU.
    """
    _require_cuda_engine("engine_kwargs")
    from vllm.config import WeightTransferConfig

    return {"weight_transfer_config": WeightTransferConfig(backend="nccl")}


def connect_sampler(llm: Any, init_info: dict[str, Any]) -> None:
    """Join ``llm``'s workers to the learner's NCCL group (``llm.init_weight_transfer_engine``).

    Blocks until the learner and every other engine have joined, so it must run while
    :meth:`NCCLPublisher.connect` runs (the group's ``connect`` does this).

    Args:
        llm: a ``vllm.LLM`` built with :func:`engine_kwargs`.
        init_info: this engine's payload from :func:`split_init_info`.

    Raises:
        RuntimeError: neither torch nor vLLM sees a CUDA GPU.
    """
    _require_cuda_engine("connect_sampler")
    from vllm.distributed.weight_transfer.base import WeightTransferInitRequest

    llm.init_weight_transfer_engine(WeightTransferInitRequest(init_info=dict(init_info)))


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


def receive(llm: Any, update: WeightUpdate) -> None:
    """Receive ``update``'s weights into ``llm`` while the learner sends them.

    Calls, in order: ``llm.start_weight_update()``; ``llm.update_weights(...)``, which blocks in
    NCCL until the learner's broadcast has completed; ``llm.finish_weight_update(
    weight_version=str(update.version))``. Must run while :meth:`NCCLPublisher.publish` sends,
    i.e. from the group's ``deliver``, never before or after it on the learner's thread. The
    conditioning files in ``update.path`` are the caller's to load (the vLLM sampler reloads its
    prompt builder from them).

    Args:
        llm: a ``vllm.LLM`` joined with :func:`connect_sampler`; it must not be generating.
        update: an ``nccl`` update from :meth:`NCCLPublisher.publish`.

    Raises:
        RuntimeError: neither torch nor vLLM sees a CUDA GPU.
        ValueError, FileNotFoundError: see :func:`read_update_info` (raised before ``llm`` is
            touched).
    """
    _require_cuda_engine("receive")
    update_info = read_update_info(update)
    from vllm.distributed.weight_transfer.base import WeightTransferUpdateRequest

    llm.start_weight_update()
    # On an error the worker ends the session itself (gpu_worker.update_weights).
    llm.update_weights(WeightTransferUpdateRequest(update_info=update_info))
    llm.finish_weight_update(weight_version=str(update.version))


def disconnect_sampler(llm: Any) -> None:
    """Leave the NCCL group without stopping the engine (``shutdown_weight_transfer_engine``)."""
    llm.shutdown_weight_transfer_engine()

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

The backend's modules: this one holds the learner side (:class:`NCCLPublisher`) and the CUDA checks
(:func:`require_cuda_engine` for the engines); :mod:`online_dt.rollout.weight_sync_nccl_group`
reaches the engines (:class:`~online_dt.rollout.weight_sync_nccl_group.NCCLSamplerGroup`,
:class:`~online_dt.rollout.weight_sync_nccl_group.ThreadedSamplerGroup`,
:func:`~online_dt.rollout.weight_sync_nccl_group.split_init_info` and vLLM's client,
:class:`~online_dt.rollout.weight_sync_nccl_group.GroupClient`);
:mod:`online_dt.rollout.weight_sync_nccl_update` holds the update payload and directory
(:func:`~online_dt.rollout.weight_sync_nccl_update.write_update_dir`,
:func:`~online_dt.rollout.weight_sync_nccl_update.read_update_info`); and
:mod:`online_dt.rollout.weight_sync_nccl_engine` the sampler side
(:func:`~online_dt.rollout.weight_sync_nccl_engine.engine_kwargs`,
:func:`~online_dt.rollout.weight_sync_nccl_engine.connect_sampler`,
:func:`~online_dt.rollout.weight_sync_nccl_engine.receive`,
:func:`~online_dt.rollout.weight_sync_nccl_engine.disconnect_sampler`).

How one publication travels
---------------------------
The learner holds one :class:`NCCLPublisher`; each vLLM engine (a ``vllm.LLM``, in this process or
in a Ray actor) is reached through a
:class:`~online_dt.rollout.weight_sync_nccl_group.NCCLSamplerGroup` (usually a
:class:`~online_dt.rollout.weight_sync_nccl_group.ThreadedSamplerGroup`). vLLM's trainer engine
drives its peer through a four-call client (init / start / update / finish); this module's client
forwards the *init* to every engine and turns the *update* into "every sampler applies this
:class:`WeightUpdate` now". Each sampler then runs the whole start -> update -> finish sequence on
its own engine in :func:`~online_dt.rollout.weight_sync_nccl_engine.receive`, so the sampler's
``load_weights(update)`` stays the one way weights change (as with ``checkpoint``).

Rendezvous (once, :meth:`NCCLPublisher.connect`, or the first publish): vLLM's ``trainer_init``
calls our client's ``init_weight_transfer_engine`` **on a side thread** and opens the trainer's NCCL
endpoint (rank 0, TCPStore on ``master_address:master_port``) on the calling thread. The client
gives each engine its own ``rank_offset``
(:func:`~online_dt.rollout.weight_sync_nccl_group.split_init_info`) and calls ``group.connect``,
which must make every engine run :func:`~online_dt.rollout.weight_sync_nccl_engine.connect_sampler`
**concurrently** and return when all have joined.

Publication ``publish(policy, version)``, in this order:

1. the learner writes ``<root>/v<version>`` atomically
   (:func:`~online_dt.rollout.weight_sync_nccl_update.write_update_dir`): conditioning files,
   tokenizer, model config, the input embedding in scalar mode (what the vLLM sampler's prompt
   builder reads) and ``nccl_update_info.json`` (the tensor names, dtypes and shapes);
2. vLLM's ``send_weights`` calls the client's ``start_weight_update`` (a no-op here);
3. **side thread**: the client's ``update_weights`` calls ``group.deliver(update)``; every sampler,
   concurrently, calls :func:`~online_dt.rollout.weight_sync_nccl_engine.receive`:
   ``llm.start_weight_update()``, then ``llm.update_weights(...)``, which blocks inside the NCCL
   receive, then ``llm.finish_weight_update(weight_version=str(version))``;
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
* Failure: if a sampler fails before it enters ``update_weights`` (e.g. it cannot read the update
  directory), the trainer's broadcast waits for a peer that never comes and ``publish`` hangs, as in
  vLLM itself. Checks that can fail therefore run before any NCCL call
  (:func:`~online_dt.rollout.weight_sync_nccl_engine.receive` reads and validates the update first).
  After any error in a send the NCCL group is unusable: the publisher refuses further publications;
  rebuild it and reconnect the engines.

Requirements: the engines must start from a full checkpoint of the same architecture and vocabulary
as the learner's model (e.g. the policy directory the run starts from) and be built with
:func:`~online_dt.rollout.weight_sync_nccl_engine.engine_kwargs`; NCCL only overwrites existing
parameters, by Hugging Face name (``named_parameters``; tied weights are sent once). The update
directory must be readable by every sampler (a shared filesystem, as for ``checkpoint``).
``master_address:master_port`` must be reachable from every engine's GPU workers. One learner
process sends (trainer rank 0); multi-rank (FSDP) learners are not supported here.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from online_dt.rollout.weight_sync import WeightUpdate, version_dir_name
from online_dt.rollout.weight_sync_nccl_group import GroupClient, NCCLSamplerGroup
from online_dt.rollout.weight_sync_nccl_update import update_info_from_metadata, write_update_dir
from online_dt.util.atomic import atomic_write_dir

if TYPE_CHECKING:
    from online_dt.policy.policy import RewardConditionedPolicy

log = logging.getLogger(__name__)

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


def require_cuda_engine(what: str) -> None:
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
        self._client = GroupClient(group)
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
        """Tear down the learner's end of the NCCL group (engines:
        :func:`~online_dt.rollout.weight_sync_nccl_engine.disconnect_sampler`)."""
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None

"""The ``nccl`` weight-sync backend on CPU: imports, CUDA errors, vLLM API conformance, and the
orchestration against vLLM's real trainer engine with NCCL stubbed out.

What these tests cannot show: that tensors cross NCCL and land in a CUDA engine. That needs
GPUs and has not been run (see the docstring of ``online_dt.rollout.weight_sync_nccl``). Nothing
here is skipped: a check that cannot run fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import online_dt.rollout.weight_sync_nccl as wsn
import online_dt.rollout.weight_sync_nccl_engine as wsn_engine
import online_dt.rollout.weight_sync_nccl_group as wsn_group
import online_dt.rollout.weight_sync_nccl_update as wsn_update
from online_dt.config import ConditioningConfig
from online_dt.policy.conditioner_state import CONDITIONING_FILE
from online_dt.policy.policy import RewardConditionedPolicy
from online_dt.rollout.weight_sync import WeightUpdate
from tests.tiny import build_tiny_model

CUDA_MESSAGE = "nccl weight sync needs CUDA GPUs"
TIMEOUT = 20.0  # seconds a stubbed rendezvous may wait before the test fails (never hangs)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("gpt2"), "gpt2")


def make_policy(base_dir, mode="scalar"):
    cfg = ConditioningConfig(mode=mode)
    return RewardConditionedPolicy.from_base(base_dir, cfg, attn_implementation="eager")


# ---------------------------------------------------------------------------------------------
# a fake vllm.LLM whose calls are checked against the real LLM's signatures
# ---------------------------------------------------------------------------------------------


class FakeLLM:
    """Records the weight-transfer calls made on it; each call must bind to the signature of
    the same method of the installed ``vllm.LLM``, and each payload must parse into the
    worker-side dataclass vLLM would build from it."""

    def __init__(self, barrier: threading.Barrier | None = None) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []
        self.barrier = barrier

    def _record(self, method: str, *args, **kwargs) -> None:
        from vllm import LLM

        inspect.signature(getattr(LLM, method)).bind(self, *args, **kwargs)
        self.calls.append((method, args, kwargs))

    def init_weight_transfer_engine(self, request) -> None:
        from vllm.distributed.weight_transfer.base import WeightTransferInitRequest
        from vllm.distributed.weight_transfer.nccl_common import NCCLWeightTransferInitInfo

        self._record("init_weight_transfer_engine", request)
        assert isinstance(request, WeightTransferInitRequest)
        NCCLWeightTransferInitInfo(**request.init_info)  # what the worker's parse_init_info does
        if self.barrier is not None:
            self.barrier.wait()  # the NCCL rendezvous: everyone joins at once

    def start_weight_update(self) -> None:
        self._record("start_weight_update")

    def update_weights(self, request) -> None:
        from vllm.distributed.weight_transfer.base import WeightTransferUpdateRequest
        from vllm.distributed.weight_transfer.nccl_engine import NCCLWeightTransferUpdateInfo

        self._record("update_weights", request)
        assert isinstance(request, WeightTransferUpdateRequest)
        NCCLWeightTransferUpdateInfo(**request.update_info)
        if self.barrier is not None:
            self.barrier.wait()  # the broadcast: receivers and sender are in it together

    def finish_weight_update(self, weight_version=None) -> None:
        self._record("finish_weight_update", weight_version=weight_version)

    def shutdown_weight_transfer_engine(self) -> None:
        self._record("shutdown_weight_transfer_engine")

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


@pytest.fixture
def no_cuda(monkeypatch):
    """Make this machine look like it has no CUDA GPU, to torch and to vLLM (so the test means
    the same on a GPU machine)."""
    from vllm.platforms import current_platform

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(current_platform, "is_cuda_alike", lambda: False)


@pytest.fixture
def cuda_checks_off(monkeypatch):
    monkeypatch.setattr(wsn, "_require_cuda", lambda what: None)
    monkeypatch.setattr(wsn_engine, "require_cuda_engine", lambda what: None)


# ---------------------------------------------------------------------------------------------
# import and CUDA errors
# ---------------------------------------------------------------------------------------------


def test_module_imports_without_cuda_or_vllm():
    code = (
        "import sys\n"
        "import online_dt.rollout.weight_sync_nccl as m\n"
        "import online_dt.rollout.weight_sync_nccl_engine as e\n"
        "import online_dt.rollout.weight_sync_nccl_group as g\n"
        "import online_dt.rollout.weight_sync_nccl_update as u\n"
        "assert 'vllm' not in sys.modules, 'vllm imported at module import time'\n"
        "assert m.NCCLPublisher and e.receive and e.engine_kwargs and e.connect_sampler\n"
        "assert g.ThreadedSamplerGroup and u.write_update_dir\n"
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_every_cuda_entry_point_raises_clearly_without_cuda(no_cuda, tmp_path):
    group = wsn_group.ThreadedSamplerGroup(
        [wsn_group.SamplerEndpoint(workers=1, connect=lambda info: None, apply=lambda u: None)]
    )
    with pytest.raises(RuntimeError, match=CUDA_MESSAGE):
        wsn.NCCLPublisher(tmp_path, group)
    llm = FakeLLM()
    update = WeightUpdate(version=1, backend="nccl", path=str(tmp_path))
    with pytest.raises(RuntimeError, match=CUDA_MESSAGE):
        wsn_engine.engine_kwargs()
    with pytest.raises(RuntimeError, match=CUDA_MESSAGE):
        wsn_engine.connect_sampler(llm, {"rank_offset": 1, "world_size": 2})
    with pytest.raises(RuntimeError, match=CUDA_MESSAGE):
        wsn_engine.receive(llm, update)
    assert llm.calls == []


def test_publisher_methods_raise_clearly_without_cuda(monkeypatch, no_cuda, tmp_path, base_dir):
    group = wsn_group.ThreadedSamplerGroup(
        [wsn_group.SamplerEndpoint(workers=1, connect=lambda info: None, apply=lambda u: None)]
    )
    with monkeypatch.context() as m:
        m.setattr(torch.cuda, "is_available", lambda: True)
        publisher = wsn.NCCLPublisher(tmp_path, group)
    policy = make_policy(base_dir)
    with pytest.raises(RuntimeError, match=CUDA_MESSAGE):
        publisher.connect(policy)
    with pytest.raises(RuntimeError, match=CUDA_MESSAGE):
        publisher.publish(policy, 1)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# vLLM API conformance: the names and signatures this backend calls
# ---------------------------------------------------------------------------------------------


def _params(fn) -> list[tuple[str, inspect._ParameterKind]]:
    return [(p.name, p.kind) for p in inspect.signature(fn).parameters.values()]


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


POS = inspect.Parameter.POSITIONAL_OR_KEYWORD
KW = inspect.Parameter.KEYWORD_ONLY


def test_vllm_llm_weight_transfer_methods():
    from vllm import LLM

    assert _params(LLM.init_weight_transfer_engine) == [("self", POS), ("request", POS)]
    assert _params(LLM.start_weight_update) == [("self", POS)]
    assert _params(LLM.update_weights) == [("self", POS), ("request", POS)]
    finish = inspect.signature(LLM.finish_weight_update)
    assert _params(LLM.finish_weight_update) == [("self", POS), ("weight_version", POS)]
    assert finish.parameters["weight_version"].default is None
    assert _params(LLM.update_weight_version) == [("self", POS), ("new_version", POS)]
    assert _params(LLM.shutdown_weight_transfer_engine) == [("self", POS)]


def test_vllm_request_and_init_info_dataclasses():
    from vllm.distributed.weight_transfer.base import (
        TrainerInitInfo,
        WeightTransferInitRequest,
        WeightTransferUpdateRequest,
    )
    from vllm.distributed.weight_transfer.nccl_common import NCCLWeightTransferInitInfo
    from vllm.distributed.weight_transfer.nccl_engine import (
        NCCLTrainerInitInfo,
        NCCLWeightTransferUpdateInfo,
    )

    assert set(_fields(WeightTransferInitRequest)) == {"init_info"}
    assert set(_fields(WeightTransferUpdateRequest)) == {"update_info"}
    assert issubclass(NCCLTrainerInitInfo, TrainerInitInfo)
    assert NCCLTrainerInitInfo.backend == "nccl"
    trainer = _fields(NCCLTrainerInitInfo)
    assert {"rank", "master_address", "master_port", "world_size", "packed"} <= set(trainer)
    assert trainer["rank"].kw_only
    info = NCCLTrainerInitInfo(
        rank=0, master_address="10.0.0.1", master_port=29500, world_size=3, packed=True
    )
    assert info.is_sender
    worker = _fields(NCCLWeightTransferInitInfo)
    assert {"master_address", "master_port", "rank_offset", "world_size", "packed"} <= set(worker)
    assert set(_fields(NCCLWeightTransferUpdateInfo)) == {"names", "dtype_names", "shapes"}


def test_vllm_trainer_factory_engine_and_sources():
    from vllm.distributed.weight_transfer import (
        ModuleSource,
        ParamMeta,
        TrainerWeightTransferEngine,
        VLLMWeightSyncClient,
        WeightSource,
    )
    from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory
    from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerWeightTransferEngine

    assert _params(WeightTransferTrainerFactory.trainer_init) == [
        ("init_info", POS),
        ("client", KW),
        ("source", KW),
    ]
    assert issubclass(NCCLTrainerWeightTransferEngine, TrainerWeightTransferEngine)
    assert _params(NCCLTrainerWeightTransferEngine.send_weights) == [("self", POS)]
    assert _params(NCCLTrainerWeightTransferEngine.shutdown) == [("self", POS)]
    assert "source" in inspect.signature(TrainerWeightTransferEngine.__init__).parameters
    assert issubclass(ModuleSource, WeightSource)
    assert set(_fields(ParamMeta)) == {"name", "dtype", "shape"}
    group = wsn_group.ThreadedSamplerGroup(
        [wsn_group.SamplerEndpoint(workers=1, connect=lambda info: None, apply=lambda u: None)]
    )
    assert isinstance(wsn_group.GroupClient(group), VLLMWeightSyncClient)


def test_vllm_engine_argument_and_network_helpers(monkeypatch):
    from vllm.config import WeightTransferConfig
    from vllm.engine.arg_utils import EngineArgs
    from vllm.utils import network_utils

    assert "weight_transfer_config" in _fields(EngineArgs)
    monkeypatch.setattr(wsn_engine, "require_cuda_engine", lambda what: None)
    kwargs = wsn_engine.engine_kwargs()
    assert set(kwargs) == {"weight_transfer_config"}
    assert isinstance(kwargs["weight_transfer_config"], WeightTransferConfig)
    assert kwargs["weight_transfer_config"].backend == "nccl"
    assert callable(network_utils.get_ip)
    assert callable(network_utils.get_open_port)


def test_dtype_names_match_vllm_spelling():
    from vllm.distributed.weight_transfer.base import ParamMeta

    meta = [ParamMeta("a", torch.float32, (2, 3)), ParamMeta("b", torch.bfloat16, (4,))]
    info = wsn_update.update_info_from_metadata(meta)
    assert info == {
        "names": ["a", "b"],
        "dtype_names": ["float32", "bfloat16"],
        "shapes": [[2, 3], [4]],
    }
    assert all(
        getattr(torch, name) is m.dtype for name, m in zip(info["dtype_names"], meta, strict=True)
    )


# ---------------------------------------------------------------------------------------------
# pieces of the orchestration
# ---------------------------------------------------------------------------------------------


def test_split_init_info_gives_each_engine_its_own_ranks():
    info = {"master_address": "h", "master_port": 1, "rank_offset": 1, "world_size": 6}
    parts = wsn_group.split_init_info(info, [2, 1, 2])
    assert [p["rank_offset"] for p in parts] == [1, 3, 4]
    assert all(p["world_size"] == 6 and p["master_address"] == "h" for p in parts)
    with pytest.raises(ValueError, match="world size"):
        wsn_group.split_init_info(info, [2, 2])


def test_threaded_group_reaches_engines_concurrently_and_reraises():
    barrier = threading.Barrier(2, timeout=TIMEOUT)  # deadlocks (then breaks) if sequential
    seen: list[tuple[str, object]] = []

    def endpoint(tag):
        def connect(info):
            barrier.wait()
            seen.append((tag, info["rank_offset"]))

        def apply(update):
            barrier.wait()
            seen.append((tag, update.version))

        return wsn_group.SamplerEndpoint(workers=1, connect=connect, apply=apply)

    group = wsn_group.ThreadedSamplerGroup([endpoint("a"), endpoint("b")])
    group.connect([{"rank_offset": 1}, {"rank_offset": 2}])
    group.deliver(WeightUpdate(version=7, backend="nccl", path="x"))
    assert sorted(seen) == [("a", 1), ("a", 7), ("b", 2), ("b", 7)]

    def fail(update):
        raise OSError("disk gone")

    broken = wsn_group.ThreadedSamplerGroup(
        [wsn_group.SamplerEndpoint(workers=1, connect=lambda i: None, apply=fail)]
    )
    with pytest.raises(OSError, match="disk gone"):
        broken.deliver(WeightUpdate(version=1, backend="nccl", path="x"))
    with pytest.raises(ValueError):
        wsn_group.ThreadedSamplerGroup([])


def test_client_refuses_a_payload_that_differs_from_the_update_dir():
    delivered = []
    group = wsn_group.ThreadedSamplerGroup(
        [wsn_group.SamplerEndpoint(workers=1, connect=lambda i: None, apply=delivered.append)]
    )
    client = wsn_group.GroupClient(group)
    with pytest.raises(RuntimeError, match="outside"):
        client.start_weight_update()
    update = WeightUpdate(version=3, backend="nccl", path="p")
    info = {"names": ["w"], "dtype_names": ["float32"], "shapes": [[2]]}
    client.expect(update, info)
    client.start_weight_update()
    with pytest.raises(RuntimeError, match="API changed"):
        client.update_weights({**info, "shapes": [[3]]})
    assert delivered == []
    client.update_weights(info)
    assert delivered == [update]


def test_receive_validates_the_update_before_touching_the_engine(cuda_checks_off, tmp_path):
    llm = FakeLLM()
    with pytest.raises(ValueError, match="not an nccl update"):
        wsn_engine.receive(llm, WeightUpdate(version=1, backend="checkpoint", path=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="readable by every sampler"):
        wsn_engine.receive(llm, WeightUpdate(version=1, backend="nccl", path=str(tmp_path)))
    meta = {
        "format": 1,
        "version": 2,
        "update_info": {"names": [], "dtype_names": [], "shapes": []},
    }
    (tmp_path / wsn_update.UPDATE_INFO_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="version 2, not 1"):
        wsn_engine.receive(llm, WeightUpdate(version=1, backend="nccl", path=str(tmp_path)))
    assert llm.calls == []
    wsn_engine.receive(llm, WeightUpdate(version=2, backend="nccl", path=str(tmp_path)))
    assert llm.names() == ["start_weight_update", "update_weights", "finish_weight_update"]
    assert llm.calls[-1][2] == {"weight_version": "2"}


# ---------------------------------------------------------------------------------------------
# the whole round trip through vLLM's real trainer engine, NCCL stubbed
# ---------------------------------------------------------------------------------------------


class StubbedNCCL:
    """Replaces the two NCCL calls of vLLM's NCCL trainer engine (opening rank 0, the broadcast)
    and this module's CUDA checks, so the rest of vLLM's ``trainer_init`` / ``send_weights``
    control flow runs for real on CPU. Both stubs wait on a barrier with the fake engines, as
    the NCCL calls would: if the orchestration were sequential they would time out."""

    def __init__(self, monkeypatch, n_engines: int, fail_broadcast: bool = False) -> None:
        import vllm.distributed.weight_transfer.nccl_engine as nccl_engine

        self.barrier = threading.Barrier(n_engines + 1, timeout=TIMEOUT)
        self.endpoints: list[object] = []
        self.sent: list[list[tuple[str, torch.Tensor]]] = []
        self.destroyed = 0
        stub = self

        class Communicator:
            def destroy(self) -> None:
                stub.destroyed += 1

        def open_trainer_endpoint(init_info):
            stub.endpoints.append(init_info)
            stub.barrier.wait()
            return Communicator()

        def broadcast(engine, source, meta):
            pairs = list(engine._checked_iter(source, meta))  # vLLM's own consistency check
            stub.barrier.wait()
            if fail_broadcast:
                raise RuntimeError("NCCL error (stub)")
            stub.sent.append([(n, t.detach().clone()) for n, t in pairs])

        monkeypatch.setattr(nccl_engine, "open_trainer_endpoint", open_trainer_endpoint)
        monkeypatch.setattr(nccl_engine.NCCLTrainerWeightTransferEngine, "_broadcast", broadcast)
        monkeypatch.setattr(wsn, "_require_cuda", lambda what: None)
        monkeypatch.setattr(wsn_engine, "require_cuda_engine", lambda what: None)
        monkeypatch.setattr(wsn, "_cuda_device", lambda policy: torch.device("cpu"))
        monkeypatch.setattr(wsn, "_device_scope", lambda device: contextlib.nullcontext())


def sampler_endpoint(llm: FakeLLM, workers: int, applied: list):
    """What a vLLM sampler's ``load_weights`` does for an nccl update: receive, then rebuild
    its prompt builder from the update directory (``online_dt.rollout.vllm_sampler``)."""
    from online_dt.rollout.vllm_prompts import PromptBuilder

    def apply(update):
        wsn_engine.receive(llm, update)
        applied.append((update, PromptBuilder(update.path)))

    return wsn_group.SamplerEndpoint(
        workers=workers, connect=lambda info: wsn_engine.connect_sampler(llm, info), apply=apply
    )


@pytest.mark.parametrize("mode", ["scalar", "token"])
def test_publish_round_trip_with_stubbed_nccl(monkeypatch, tmp_path, base_dir, mode):
    stub = StubbedNCCL(monkeypatch, n_engines=2)
    llms = [FakeLLM(stub.barrier), FakeLLM(stub.barrier)]
    applied: list = []
    group = wsn_group.ThreadedSamplerGroup(
        [sampler_endpoint(llms[0], 2, applied), sampler_endpoint(llms[1], 1, applied)]
    )
    publisher = wsn.NCCLPublisher(
        tmp_path / "sync", group, master_address="10.1.2.3", master_port=29555, keep=1
    )
    assert publisher.world_size == 4
    policy = make_policy(base_dir, mode)
    names = [n for n, _ in policy.model.named_parameters()]

    update = publisher.publish(policy, 1)

    # rendezvous: the trainer opened rank 0 once; each engine got its own rank offset
    assert len(stub.endpoints) == 1
    trainer_info = stub.endpoints[0]
    assert (trainer_info.master_address, trainer_info.master_port) == ("10.1.2.3", 29555)
    assert trainer_info.world_size == 4 and trainer_info.rank == 0
    inits = [llm.calls[0][1][0].init_info for llm in llms]
    assert [i["rank_offset"] for i in inits] == [1, 3]
    assert all(i["world_size"] == 4 and i["packed"] is True for i in inits)

    # each engine: init, then start -> update -> finish with the version
    for llm in llms:
        assert llm.names() == [
            "init_weight_transfer_engine",
            "start_weight_update",
            "update_weights",
            "finish_weight_update",
        ]
        payload = llm.calls[2][1][0].update_info
        assert payload["names"] == names
        assert set(payload["dtype_names"]) == {"float32"}
        assert llm.calls[3][2] == {"weight_version": "1"}

    # what went on the wire is the model's parameters, in order
    assert [n for n, _ in stub.sent[0]] == names
    params = dict(policy.model.named_parameters())
    assert all(torch.equal(t, params[n]) for n, t in stub.sent[0])

    # the update directory is what the vLLM sampler's prompt builder needs
    assert update == WeightUpdate(version=1, backend="nccl", path=str(tmp_path / "sync/v000001"))
    path = Path(update.path)
    assert (path / CONDITIONING_FILE).is_file() and (path / wsn_update.UPDATE_INFO_FILE).is_file()
    assert len(applied) == 2
    builder = applied[0][1]
    if mode == "scalar":
        embeddings = policy.model.get_input_embeddings().weight
        assert torch.equal(builder.embeddings, embeddings.detach().float())
        prompt_ids = builder.encode(["the movie was"])
        built = builder.inputs(prompt_ids, [0.5])[0]["prompt_embeds"]
        torch.testing.assert_close(built, policy.prompt_embeds(prompt_ids[0], 0.5))
    else:
        assert not (path / "model.safetensors").exists()
        assert builder.inputs([[5]], [0.5])[0]["prompt_token_ids"][0] in policy.reward_token_ids

    # a second version: same group, new payload version, old directory pruned (keep=1)
    with torch.no_grad():
        policy.model.get_input_embeddings().weight.add_(1.0)
    update2 = publisher.publish(policy, 2)
    assert sorted(p.name for p in (tmp_path / "sync").iterdir()) == ["v000002"]
    for llm in llms:
        assert llm.names()[-3:] == ["start_weight_update", "update_weights", "finish_weight_update"]
        assert llm.calls[-1][2] == {"weight_version": "2"}
    assert len(stub.endpoints) == 1  # no second rendezvous
    assert torch.equal(dict(stub.sent[1])[names[0]], params[names[0]])
    assert applied[-1][0] == update2

    publisher.close()
    assert stub.destroyed == 1


def test_publish_casts_to_the_wire_dtype(monkeypatch, tmp_path, base_dir):
    stub = StubbedNCCL(monkeypatch, n_engines=1)
    llm = FakeLLM(stub.barrier)
    group = wsn_group.ThreadedSamplerGroup([sampler_endpoint(llm, 1, [])])
    publisher = wsn.NCCLPublisher(
        tmp_path, group, master_address="h", master_port=1, wire_dtype=torch.bfloat16
    )
    policy = make_policy(base_dir)
    publisher.publish(policy, 1)
    payload = llm.calls[2][1][0].update_info
    assert set(payload["dtype_names"]) == {"bfloat16"}
    assert {t.dtype for _, t in stub.sent[0]} == {torch.bfloat16}
    info = json.loads((tmp_path / "v000001" / wsn_update.UPDATE_INFO_FILE).read_text())
    assert info["update_info"] == payload


def test_a_failed_send_removes_the_version_and_blocks_the_publisher(
    monkeypatch, tmp_path, base_dir
):
    stub = StubbedNCCL(monkeypatch, n_engines=1, fail_broadcast=True)
    llm = FakeLLM(stub.barrier)
    group = wsn_group.ThreadedSamplerGroup([sampler_endpoint(llm, 1, [])])
    publisher = wsn.NCCLPublisher(tmp_path, group, master_address="h", master_port=1)
    policy = make_policy(base_dir)
    with pytest.raises(RuntimeError, match="NCCL error"):
        publisher.publish(policy, 1)
    assert not (tmp_path / "v000001").exists()
    with pytest.raises(RuntimeError, match="unusable"):
        publisher.publish(policy, 2)

"""``sampler.weight_sync: ray`` in process: the in-memory policy state, the HF sampler loading it
in place, the local loop publishing through it, and a restarted sampler (rebuilt without
weights) being re-sent the latest version. No Ray here: the Ray path (object store, sampler
actors, a killed actor) is in ``tests/test_faults_ray.py``; vLLM's in-process engine in
``tests/test_sampling.py``."""

from __future__ import annotations

import json

import pytest
import torch

import tests.test_loop as loop_tests
from online_dt.config import ConditioningConfig, ConfigError, OnlineRunConfig, load_config
from online_dt.loop.futures import LocalHandle
from online_dt.loop.sampler_group import SamplerGroup
from online_dt.policy.conditioner import RewardConditioner
from online_dt.policy.conditioner_state import CONDITIONING_FILE, PROMPT_HEAD_KEY
from online_dt.policy.policy import RewardConditionedPolicy
from online_dt.rollout.factory import make_sampler_from_skeleton
from online_dt.rollout.hf_sampler import HFSampler
from online_dt.rollout.sampler import NO_WEIGHTS, NoWeightsError, SamplingParams
from online_dt.rollout.weight_sync import (
    CheckpointPublisher,
    MemoryPublisher,
    PolicySkeleton,
    PolicyState,
    WeightUpdate,
    make_publisher,
)
from online_dt.training.learner import Learner
from tests.test_sampling import PROMPTS, TARGETS, train_a_little
from tests.tiny import build_tiny_model


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("gpt2"), "gpt2")


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("llama"), "llama")


def make_policy(base, mode, **conditioning):
    cfg = ConditioningConfig(mode=mode, num_reward_tokens=4, **conditioning)
    return RewardConditionedPolicy.from_base(base, cfg, attn_implementation="eager").eval()


def ray_cfg(tmp_path, base, backend="hf", **online) -> OnlineRunConfig:
    cfg = loop_tests.make_cfg(tmp_path, base, **online)
    sampler = cfg.sampler.model_copy(update={"backend": backend, "weight_sync": "ray"})
    return cfg.model_copy(update={"sampler": sampler})


def same_rollouts(a, b) -> bool:
    return [(r.token_ids, r.logprobs) for r in a] == [(r.token_ids, r.logprobs) for r in b]


@pytest.fixture
def no_policy_files(monkeypatch):
    """Makes any write or read of a policy directory fail: a weight update that touches disk
    raises instead of passing unnoticed."""

    def refuse(*args, **kwargs):
        raise AssertionError("a policy directory was written or read during a ray weight update")

    monkeypatch.setattr(RewardConditionedPolicy, "save_pretrained", refuse)
    monkeypatch.setattr(RewardConditionedPolicy, "from_pretrained", refuse)
    monkeypatch.setattr(RewardConditioner, "save", refuse)
    monkeypatch.setattr(RewardConditioner, "load", refuse)


# -- the in-memory state ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "conditioning"),
    [
        ("scalar", {"normalization": {"kind": "running"}}),
        ("scalar", {"normalization": {"kind": "quantile", "min_count": 4}}),
        ("scalar", {"reward_on_prompt": True, "normalization": {"kind": "running"}}),
        ("token", {"bin_method": "quantile", "initial_reward_bins": 2, "bin_refit": "split_top"}),
    ],
)
def test_conditioner_state_is_what_its_files_hold(base, tmp_path, mode, conditioning):
    policy = make_policy(base, mode, **conditioning)
    rewards = [0.1, 0.4, -0.3, 0.9, 0.2, -0.8, 0.5, 0.0, 0.3]
    policy.fit_reward_statistics(rewards, rewards)
    conditioner = policy.conditioner
    state = conditioner.to_state()
    conditioner.save(tmp_path)
    assert state["meta"] == json.loads((tmp_path / CONDITIONING_FILE).read_text())
    if mode == "scalar":
        for name, value in conditioner.head.state_dict().items():
            assert torch.equal(state["head"][name], value)
        if conditioner.prompt_head is not None:
            with torch.no_grad():  # trained away from its zero start, so the test can tell
                conditioner.prompt_head.weight.normal_()
            state = conditioner.to_state()
            conditioner.save(tmp_path)
            assert torch.equal(state["head"][PROMPT_HEAD_KEY], conditioner.prompt_head.weight)
    else:
        assert state["head"] is None and state["meta"]["bins_fitted"]
    rebuilt = RewardConditioner.from_state(state)
    loaded = RewardConditioner.load(tmp_path)
    rewards_t = torch.tensor([-1.5, -0.2, 0.0, 0.45, 2.0])
    embeds = torch.randn(5, 3, policy.model.config.hidden_size)
    for other in (rebuilt, loaded):
        assert other.slot_token_ids(rewards_t.tolist()) == conditioner.slot_token_ids(
            rewards_t.tolist()
        )
        assert torch.equal(
            other.fill_slot(embeds, rewards_t), conditioner.fill_slot(embeds, rewards_t)
        )
    # the state is a copy: the conditioner moving on changes neither it nor what it rebuilt
    policy.fit_reward_statistics([5.0, 6.0, 7.0, 8.0], [5.0, 6.0, 7.0, 8.0])
    if mode == "scalar":
        with torch.no_grad():
            conditioner.head.weight.add_(1.0)
    assert state["meta"] == json.loads((tmp_path / CONDITIONING_FILE).read_text())
    assert state["meta"] != conditioner.to_state()["meta"]
    again = RewardConditioner.from_state(state)
    for other in (rebuilt, again):
        assert torch.equal(other.fill_slot(embeds, rewards_t), loaded.fill_slot(embeds, rewards_t))


def test_conditioner_load_state_is_in_place_and_refuses_another_mode(base):
    source = make_policy(base, "scalar", normalization={"kind": "running"})
    source.fit_reward_statistics([0.5, -0.5, 0.25])
    with torch.no_grad():
        source.conditioner.head.bias.add_(0.3)
    target = make_policy(base, "scalar")
    head = target.conditioner.head
    target.conditioner.load_state(source.conditioner.to_state())
    assert target.conditioner.head is head, "the head module is kept, its weights copied"
    rewards = torch.tensor([-1.0, 0.2, 0.9])
    embeds = torch.randn(3, 2, source.model.config.hidden_size)
    assert torch.equal(
        target.conditioner.fill_slot(embeds, rewards), source.conditioner.fill_slot(embeds, rewards)
    )
    with pytest.raises(ValueError, match="token mode"):
        target.conditioner.load_state(make_policy(base, "token").conditioner.to_state())


def test_policy_state_keeps_ties_and_is_a_copy(base, llama):
    policy = make_policy(base, "scalar")
    state = PolicyState.capture(policy)
    # GPT-2's lm_head is its input embedding: stored once, as save_pretrained leaves it out
    assert state.tied == {"lm_head.weight": "transformer.wte.weight"}
    assert "lm_head.weight" not in dict(state.weights())
    assert state.input_embeddings == "transformer.wte.weight"
    full = state.model_state_dict()
    assert full.keys() == policy.model.state_dict().keys()
    assert all(torch.equal(full[k], v) for k, v in policy.model.state_dict().items())
    assert torch.equal(state.input_embedding_matrix(), policy.model.get_input_embeddings().weight)
    assert state.nbytes == sum(t.numel() * 4 for _, t in state.weights())
    # a copy: training the policy afterwards leaves the published version as it was
    before = {k: v.clone() for k, v in state.model.items()}
    train_a_little(policy)
    assert all(torch.equal(state.model[k], v) for k, v in before.items())
    assert not torch.equal(
        state.input_embedding_matrix(), policy.model.get_input_embeddings().weight
    )
    # without copying, a CPU policy's tensors are shared (only for a put that serialises)
    shared = PolicyState.capture(policy, copy=False)
    assert (
        shared.input_embedding_matrix().data_ptr() == policy.model.transformer.wte.weight.data_ptr()
    )
    # an untied model has nothing tied
    untied = PolicyState.capture(make_policy(llama, "token"))
    assert untied.tied == {} and "lm_head.weight" in untied.model


def test_publishers_by_config(tmp_path, base):
    cfg = ray_cfg(tmp_path, base)
    publisher = make_publisher(cfg.sampler, tmp_path / "weights")
    assert isinstance(publisher, MemoryPublisher)
    assert isinstance(
        make_publisher(loop_tests.make_cfg(tmp_path, base).sampler, tmp_path), CheckpointPublisher
    )
    policy = make_policy(base, "token")
    update = publisher.publish(policy, 3)
    assert (update.version, update.backend, update.path) == (3, "ray", None)
    assert isinstance(update.state, PolicyState)
    put = []
    stored = MemoryPublisher(put=lambda state: put.append(state) or "ref-0").publish(policy, 4)
    assert stored.state == "ref-0" and isinstance(put[0], PolicyState)
    # the state is left out of equality and repr (tensors have no truth value)
    assert update == WeightUpdate(3, "ray") and "state" not in repr(update)
    publisher.discard_after(0)
    assert not (tmp_path / "weights").exists()


# -- config ------------------------------------------------------------------------------------


def test_config_accepts_ray_and_refuses_what_it_would_ignore(tmp_path):
    def load(text):
        path = tmp_path / "c.yaml"
        path.write_text(text)
        return load_config(path, OnlineRunConfig)

    assert load("sampler: {weight_sync: ray}").sampler.weight_sync == "ray"
    assert load("sampler: {weight_sync: ray, keep_versions: 2}").sampler.keep_versions == 2
    assert load("sampler: {weight_sync: checkpoint, keep_versions: 5}").sampler.keep_versions == 5
    with pytest.raises(ConfigError, match="keep_versions: 5 is read by checkpoint weight sync"):
        load("sampler: {weight_sync: ray, keep_versions: 5}")
    with pytest.raises(ConfigError, match="nccl is not wired into the learner"):
        load("sampler: {weight_sync: nccl}")
    with pytest.raises(
        ConfigError, match=r"sampler\.weight_sync: Input should be .checkpoint., .ray. or .nccl."
    ):
        load("sampler: {weight_sync: shared_memory}")


# -- the HF sampler --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["scalar", "token", "scalar+reward_on_prompt"])
def test_hf_sampler_takes_a_ray_update_in_place_and_matches_the_learner(
    tmp_path, base, mode, no_policy_files
):
    cfg = ray_cfg(tmp_path, base)
    conditioning = {"mode": mode.split("+")[0], "reward_on_prompt": "reward_on_prompt" in mode}
    cfg = cfg.model_copy(update={"conditioning": cfg.conditioning.model_copy(update=conditioning)})
    learner = Learner(cfg, str(base), tmp_path / "run")
    sampler = make_sampler_from_skeleton(cfg, PolicySkeleton.of(learner.policy))
    params = SamplingParams(n=2, max_new_tokens=8, seed=5)
    assert sampler.policy_version == NO_WEIGHTS
    with pytest.raises(NoWeightsError, match="no weights yet"):
        sampler.generate(PROMPTS, TARGETS, params)
    reference = HFSampler(learner.policy.eval())

    sampler.load_weights(learner.initial_update())
    model, head = sampler.policy.model, sampler.policy.conditioner.head
    first = sampler.generate(PROMPTS, TARGETS, params)
    assert {r.policy_version for r in first} == {0}
    assert same_rollouts(first, reference.generate(PROMPTS, TARGETS, params))

    rollouts = reference.generate(PROMPTS * 4, TARGETS * 4, SamplingParams(n=2, seed=1))
    learner.append(rollouts, [r.target + 0.1 for r in rollouts], 0, 0.0)
    learner.train(3)
    # the learner moved on: the sampler still has version 0 (the test can tell them apart)
    assert not same_rollouts(
        sampler.generate(PROMPTS, TARGETS, params), reference.generate(PROMPTS, TARGETS, params)
    )
    update = learner.publish()
    assert update.backend == "ray" and update.path is None
    sampler.load_weights(update)
    after = sampler.generate(PROMPTS, TARGETS, params)
    assert {r.policy_version for r in after} == {1}
    assert same_rollouts(after, reference.generate(PROMPTS, TARGETS, params)), "exact"
    assert sampler.policy.model is model, "loaded in place"
    assert sampler.policy.conditioner.head is head
    if mode != "token":  # the normaliser moved with the rewards appended, and came along
        assert (
            sampler.policy.conditioner.normalizer.state_dict()
            == learner.policy.conditioner.normalizer.state_dict()
        )
    assert not (tmp_path / "run" / "weights").exists() or not any(
        (tmp_path / "run" / "weights").iterdir()
    )
    with pytest.raises(TypeError, match="PolicyState"):
        sampler.load_weights(WeightUpdate(2, "ray", state="an unresolved ObjectRef"))


def test_local_loop_with_ray_weight_sync_writes_no_weights(tmp_path, base):
    cfg = ray_cfg(tmp_path, base, iterations=3)
    records, plan = loop_tests.run_local(cfg)
    assert [r["policy_version"] for r in records] == [1, 2, 3]
    assert [r["sample_policy_version_min"] for r in records] == [0, 1, 2]
    weights = plan.run.weights_dir
    assert not weights.exists() or not any(weights.iterdir())
    assert plan.run.latest_checkpoint() is not None  # checkpoints are still written


# -- restarts ------------------------------------------------------------------------------------


class Restartable:
    """A sampler replica that can be 'restarted' as Ray re-creates an actor: rebuilt from its
    constructor argument, the skeleton, so without weights."""

    def __init__(self, cfg, skeleton):
        self.cfg, self.skeleton = cfg, skeleton
        self.restart()

    def restart(self):
        self.sampler = make_sampler_from_skeleton(self.cfg, self.skeleton)

    def generate(self, prompts, targets, params):
        return self.sampler.generate(prompts, targets, params)

    def load_weights(self, update):
        self.sampler.load_weights(update)


def test_a_restarted_ray_sampler_is_resent_the_latest_update(tmp_path, base):
    cfg = ray_cfg(tmp_path, base)
    policy = RewardConditionedPolicy.fresh(cfg, base).eval()
    publisher = MemoryPublisher()
    replicas = [Restartable(cfg, PolicySkeleton.of(policy)) for _ in range(2)]
    group = SamplerGroup([LocalHandle(r) for r in replicas], retries=2)
    group.load_weights(publisher.publish(policy, 0)).result()
    train_a_little(policy)
    group.load_weights(publisher.publish(policy, 1)).result()
    params = SamplingParams(max_new_tokens=6, seed=3)
    expected = group.generate(PROMPTS, TARGETS, params).result().rollouts
    replicas[1].restart()  # between calls: no error until it is asked to sample
    batch = group.generate(PROMPTS, TARGETS, params).result()
    assert {r.policy_version for r in batch.rollouts} == {1}
    assert same_rollouts(batch.rollouts, expected), "the restarted replica got version 1 again"
    assert batch.recovery.sampler_failures == 1 and batch.recovery.prompts_reissued == 2
    assert batch.recovery.prompts_dropped == 0


def test_resumed_run_sends_the_checkpointed_version_from_memory(tmp_path, base):
    """A resumed run's samplers start from the checkpoint's policy version, sent in memory:
    the same targets as an uninterrupted run, and still no weights on disk."""
    full, _ = loop_tests.run_local(ray_cfg(tmp_path / "full", base))
    _first, plan = loop_tests.run_local(ray_cfg(tmp_path / "cut", base, iterations=2))
    _rest, plan = loop_tests.run_local(
        None, resume=plan.run.path, overrides={"online": {"iterations": 4}}
    )
    resumed = plan.run.read_metrics()
    assert [m["iteration"] for m in resumed] == [0, 1, 2, 3]
    assert [m["sample_policy_version_min"] for m in resumed] == [0, 1, 2, 3]
    assert [m["target"] for m in resumed] == pytest.approx([m["target"] for m in full])
    assert not plan.run.weights_dir.exists() or not any(plan.run.weights_dir.iterdir())

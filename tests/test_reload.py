"""A published version read into the HF sampler's policy in place: the same state and samples as
``from_pretrained``, tied weights kept tied, and the full reload where the files are not the
model's state dict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from online_dt.policy.policy import RewardConditionedPolicy
from online_dt.policy.reload import read_weights_in_place, weight_files
from online_dt.rollout.hf_sampler import HFSampler
from online_dt.rollout.sampler import SamplingParams
from online_dt.rollout.weight_sync import CheckpointPublisher
from tests.test_sampling import (
    PROMPTS,
    SYNC_VARIANTS,
    make_policy,
    targets_for,
    train_a_little,
)


def same_state(a: RewardConditionedPolicy, b: RewardConditionedPolicy) -> None:
    """Every model tensor, and the conditioning, equal."""
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name
    ca, cb = a.conditioner.to_state(), b.conditioner.to_state()
    assert json.dumps(ca["meta"], sort_keys=True) == json.dumps(cb["meta"], sort_keys=True)
    assert (ca["head"] is None) == (cb["head"] is None)
    for name, tensor in (ca["head"] or {}).items():
        assert torch.equal(tensor, cb["head"][name]), name


@pytest.mark.parametrize(("arch", "mode"), SYNC_VARIANTS)
def test_hf_sampler_reads_each_version_in_place(tmp_path, arch, mode):
    policy = make_policy(tmp_path, arch, mode)
    targets = targets_for(mode)
    publisher = CheckpointPublisher(tmp_path / "weights")
    first = publisher.publish(policy, 0)
    sampler = HFSampler(RewardConditionedPolicy.from_pretrained(first.path).eval())
    held = sampler.policy
    params = SamplingParams(n=2, max_new_tokens=8, seed=3)
    before = sampler.generate(PROMPTS, targets, params)
    train_a_little(policy, targets)
    update = publisher.publish(policy, 1)
    sampler.load_weights(update)
    assert sampler.policy is held and sampler.policy_version == 1 and not held.training
    fresh = RewardConditionedPolicy.from_pretrained(update.path).eval()
    same_state(held, fresh)
    same_state(held, policy)
    if arch == "gpt2":  # tied: the output layer is still the input embedding
        assert held.model.lm_head.weight.data_ptr() == held.model.transformer.wte.weight.data_ptr()
    after = sampler.generate(PROMPTS, targets, params)
    expected = HFSampler(fresh).generate(PROMPTS, targets, params)
    assert [r.token_ids for r in after] == [r.token_ids for r in expected]
    for r, e in zip(after, expected, strict=True):
        assert r.logprobs == pytest.approx(e.logprobs, abs=1e-5)
    # the test can tell: the new version samples differently from the first
    assert [r.token_ids for r in after] != [r.token_ids for r in before]


def test_sharded_weights_are_read_too(tmp_path):
    policy = make_policy(tmp_path, "llama", "scalar")
    path = tmp_path / "v1"
    policy.save_pretrained(path)
    policy.model.save_pretrained(path, max_shard_size="40KB")  # the same tensors, in shards
    assert len(weight_files(path)) > 1
    target = make_policy(tmp_path / "other", "llama", "scalar")
    target.model.load_state_dict({k: v + 1 for k, v in policy.model.state_dict().items()})
    with torch.no_grad():  # the conditioning differs too, so that reading it shows
        for param in target.conditioner.parameters():
            param.add_(1.0)
    assert read_weights_in_place(target, path)
    same_state(target, policy)


def _published(tmp_path):
    """A sampler on version 0 and the directory of version 1 (trained a little)."""
    policy = make_policy(tmp_path, "gpt2", "scalar")
    publisher = CheckpointPublisher(tmp_path / "weights")
    sampler = HFSampler(RewardConditionedPolicy.from_pretrained(publisher.publish(policy, 0).path))
    train_a_little(policy)
    update = publisher.publish(policy, 1)
    assert update.path is not None
    return sampler.policy, Path(update.path)


def _rewrite(path, change):
    """Apply ``change`` to the tensors of the directory's one safetensors file."""
    file = weight_files(path)[0]
    tensors = load_file(str(file))
    change(tensors)
    save_file(tensors, str(file), metadata={"format": "pt"})


def _renamed(tensors):
    name = next(iter(tensors))
    tensors["renamed." + name] = tensors.pop(name)


def _missing(tensors):  # an untied tensor left out: an nccl update's embedding-only file
    tensors.pop("transformer.h.0.mlp.c_fc.weight")


def _extra(tensors):
    tensors["extra.weight"] = torch.zeros(2)


@pytest.mark.parametrize(
    "change", [_renamed, _missing, _extra], ids=["renamed", "missing", "extra"]
)
def test_files_that_are_not_the_state_dict_leave_the_policy_alone(tmp_path, change):
    held, path = _published(tmp_path)
    untouched = {k: v.clone() for k, v in held.model.state_dict().items()}
    before = held.conditioner.to_state()
    _rewrite(path, change)
    assert not read_weights_in_place(held, path)
    for key, value in held.model.state_dict().items():
        assert torch.equal(value, untouched[key]), key
    assert held.conditioner.to_state()["meta"] == before["meta"]


def test_a_misfit_or_a_missing_file_is_an_error_that_changes_nothing(tmp_path):
    held, path = _published(tmp_path)
    untouched = {k: v.clone() for k, v in held.model.state_dict().items()}

    def wider(tensors):
        tensors["transformer.h.0.mlp.c_fc.weight"] = torch.zeros(3, 3)

    _rewrite(path, wider)
    with pytest.raises(RuntimeError, match="do not fit"):
        read_weights_in_place(held, path)
    for key, value in held.model.state_dict().items():
        assert torch.equal(value, untouched[key]), key
    # no safetensors at all: the full reload
    weight_files(path)[0].unlink()
    assert weight_files(path) is None
    assert not read_weights_in_place(held, path)
    # no conditioning: not a policy's directory
    shutil.rmtree(path / "reward_conditioning")
    with pytest.raises(FileNotFoundError):
        read_weights_in_place(held, path)


def test_a_mismatch_falls_back_to_from_pretrained(tmp_path, monkeypatch):
    import online_dt.policy.reload as reload

    policy = make_policy(tmp_path, "gpt2", "scalar")
    publisher = CheckpointPublisher(tmp_path / "weights")
    sampler = HFSampler(RewardConditionedPolicy.from_pretrained(publisher.publish(policy, 0).path))
    held = sampler.policy
    train_a_little(policy)
    monkeypatch.setattr(reload, "weight_files", lambda path: None)
    sampler.load_weights(publisher.publish(policy, 1))
    assert sampler.policy is not held and sampler.policy_version == 1
    same_state(sampler.policy, policy)

"""Token mode's reward bins: cut from the whole replay buffer or split at the top, labels at
batch time, targets mapped to bins, and bins kept across checkpoint and resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from online_dt.config import ConditioningConfig, OnlineRunConfig
from online_dt.config.base import ConfigError
from online_dt.config.loading import load_config
from online_dt.launch.rundir import RunDir
from online_dt.policy.normalization import RewardBinning
from online_dt.policy.policy import RewardConditionedPolicy
from online_dt.samples import Rollout
from online_dt.training.learner import Learner
from tests.tiny import build_tiny_model


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("gpt2"), "gpt2")


def make_policy(base, **kw):
    cfg = ConditioningConfig(mode="token", **kw)
    return RewardConditionedPolicy.from_base(base, cfg, attn_implementation="eager").eval()


# ---------------------------------------------------------------------------------------------
# the bins
# ---------------------------------------------------------------------------------------------


def test_split_top_splits_a_heavy_top_bin_at_its_median():
    bins = RewardBinning([0.0, 0.5])  # 3 bins
    # the top bin holds 1/3 of the pool: an equal share, no split
    even = [-0.5] * 10 + [0.25] * 10 + list(np.linspace(0.6, 1.0, 10))
    assert bins.split_top(even, max_bins=8) is None
    # the top bin holds 2/3 (twice its share): split at its median
    heavy = [-0.5] * 5 + [0.25] * 5 + list(np.linspace(0.6, 1.0, 21))
    split = bins.split_top(heavy, max_bins=8)
    assert split is not None and split.edges[:2] == [0.0, 0.5]
    assert split.edges[2] == pytest.approx(0.8)
    # no split once every token is in use, nor when the top bin's rewards are all tied
    assert bins.split_top(heavy, max_bins=3) is None
    assert bins.split_top([-0.5] * 5 + [0.9] * 30, max_bins=8) is None
    assert bins.bounds(0) == (-np.inf, 0.0) and bins.bounds(2) == (0.5, np.inf)
    with pytest.raises(IndexError):
        bins.bounds(3)


def test_buffer_bins_are_cut_from_the_pool_not_the_newest_batch(base):
    policy = make_policy(base, num_reward_tokens=4)
    pool = list(np.linspace(-1, 1, 101))
    newest = list(np.linspace(0.8, 1.0, 20))
    policy.fit_reward_statistics(newest, pool)
    assert policy.conditioner.binning.edges == pytest.approx([-0.5, 0.0, 0.5])
    # so a low and a middle target get different tokens (the newest batch alone would send
    # every reward below 0.85 to token 0)
    ids = policy.reward_token_ids
    assert policy.slot_token_ids([-0.9, -0.2, 0.2, 0.9]) == ids
    policy.fit_reward_statistics(newest)  # no pool: the rewards given are the pool
    assert policy.conditioner.binning.edges[0] > 0.8


def test_split_top_keeps_its_first_edges_and_copies_the_token(base):
    policy = make_policy(base, num_reward_tokens=6, bin_refit="split_top")
    assert policy.config.first_bins == 3
    assert policy.conditioner.binning.num_bins == 3  # before the first fit: evenly spaced
    base_rewards = list(np.linspace(-1, 1, 90))
    assert policy.fit_reward_statistics(base_rewards, base_rewards) == []
    first = list(policy.conditioner.binning.edges)
    assert first == pytest.approx([-1 / 3, 1 / 3])
    emb = policy.model.get_input_embeddings().weight
    ids = policy.reward_token_ids
    assert not torch.equal(emb[ids[3]], emb[ids[2]])
    # a batch of high rewards: the edges cut from the base rewards stay, the top bin is split
    high = list(np.linspace(0.4, 1.0, 120))
    splits = policy.fit_reward_statistics(high, base_rewards + high)
    edges = policy.conditioner.binning.edges
    assert edges[:2] == first and len(edges) > 2
    assert splits[0] == (3, 2)
    assert torch.equal(emb[ids[3]], emb[ids[2]])  # the new token starts as the split one
    # a target in a new bin maps to the new token
    assert policy.slot_token_ids([0.99]) == [ids[policy.conditioner.binning.num_bins - 1]]
    # the token meanings cut from the base never move
    policy.fit_reward_statistics([-0.9] * 50, base_rewards + high + [-0.9] * 50)
    assert policy.conditioner.binning.edges[:2] == first


def test_describe_target_reports_its_bin_and_extrapolation(base):
    policy = make_policy(base, num_reward_tokens=4)
    pool = list(np.linspace(-0.8, 0.8, 101))
    policy.fit_reward_statistics(pool)
    low = policy.conditioner.describe_target(-0.9)
    assert (low["bin"], low["low"], low["token"], low["above_range"]) == (
        0,
        None,
        "<|reward_0|>",
        False,
    )
    assert low["high"] == pytest.approx(-0.4)
    mid = policy.conditioner.describe_target(0.1)
    assert mid["bin"] == 2 and mid["low"] == pytest.approx(0.0)
    above = policy.conditioner.describe_target(0.95)
    assert above["bin"] == 3 and above["high"] is None and above["above_range"]
    assert above["range"] == pytest.approx([-0.8, 0.8])
    scalar = RewardConditionedPolicy.from_base(base, ConditioningConfig(mode="scalar"))
    assert scalar.conditioner.describe_target(0.5) is None


def test_conditioning_config_names_the_bad_field(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("conditioning: {mode: token, initial_reward_bins: 3}\n")
    with pytest.raises(ConfigError, match="initial_reward_bins is used only with bin_refit"):
        load_config(path, OnlineRunConfig)
    path.write_text(
        "conditioning: {mode: token, bin_refit: split_top, num_reward_tokens: 4,"
        " initial_reward_bins: 5}\n"
    )
    with pytest.raises(ConfigError, match=r"initial_reward_bins \(5\) must be at most"):
        load_config(path, OnlineRunConfig)
    cfg = ConditioningConfig(mode="token", bin_refit="split_top", num_reward_tokens=4)
    assert cfg.first_bins == 2
    assert ConditioningConfig(mode="token", num_reward_tokens=4).first_bins == 4


# ---------------------------------------------------------------------------------------------
# the learner: bins from the whole buffer, labels at batch time, checkpoint and resume
# ---------------------------------------------------------------------------------------------


def learner_cfg(tmp_path, base, bin_refit):
    return OnlineRunConfig.model_validate(
        {
            "model": {"name_or_path": str(base), "device": "cpu"},
            "conditioning": {"mode": "token", "num_reward_tokens": 6, "bin_refit": bin_refit},
            "sampler": {"backend": "hf"},
            "training": {"batch_size": 8, "lr": 1e-3},
            "online": {"run_dir": str(tmp_path / "run"), "kl_samples": 0},
        }
    )


def rollouts(rewards, iteration):
    return [
        Rollout(f"prompt {i}", f" word{i % 7}", [5 + i % 7, 0], [-1.0, -1.0], 0.0)
        for i in range(len(rewards))
    ], [float(r) for r in rewards]


@pytest.mark.parametrize("bin_refit", ["buffer", "split_top"])
def test_learner_bins_follow_the_buffer_and_survive_resume(tmp_path, base, bin_refit):
    cfg = learner_cfg(tmp_path, base, bin_refit)
    RunDir(cfg.online.run_dir).path.mkdir(parents=True)
    learner = Learner(cfg, str(base), cfg.online.run_dir)
    rng = np.random.default_rng(0)
    learner.append(*rollouts(rng.uniform(-1, 1, 48), 0), 0, 0.0)
    learner.append(*rollouts(rng.uniform(0.6, 1.0, 48), 1), 1, 0.0)
    cond = learner.policy.conditioner
    buffer_rewards = learner.buffer.rewards()
    if bin_refit == "buffer":  # the buffer's quantiles, not the newest batch's
        assert cond.binning.edges == pytest.approx(
            RewardBinning.from_quantiles(buffer_rewards, 6).edges
        )
        assert cond.binning.edges[0] < 0.0
    else:  # the first batch's quantiles, then splits of the top bin
        assert cond.binning.num_bins > 3
    # labels are computed when a batch is drawn, from the achieved reward and the current bins
    batch = learner.buffer.sample_batch(8)
    laid = learner.policy.layout(
        [s.prompt for s in batch], [s.achieved_reward for s in batch], [s.completion for s in batch]
    )
    assert laid.input_ids[:, 0].tolist() == learner.policy.slot_token_ids(
        [s.achieved_reward for s in batch]
    )
    learner.train(1)
    checkpoint = learner.checkpoint(1, {})
    labels = learner.policy.slot_token_ids(buffer_rewards)

    resumed = Learner(cfg, str(base), cfg.online.run_dir, checkpoint)
    rcond = resumed.policy.conditioner
    assert rcond.binning.edges == cond.binning.edges
    assert (rcond.bins_fitted, rcond.bin_range) == (cond.bins_fitted, cond.bin_range)
    assert resumed.policy.slot_token_ids(resumed.buffer.rewards()) == labels
    # the next append gives the resumed run the bins the uninterrupted one gets
    more = rng.uniform(-1.0, 1.0, 48)
    learner.append(*rollouts(more, 2), 2, 0.0)
    resumed.append(*rollouts(more, 2), 2, 0.0)
    assert rcond.binning.edges == cond.binning.edges

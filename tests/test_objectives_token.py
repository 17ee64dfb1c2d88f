"""Token mode with several objectives: one reward token per objective, in the config's order.

The slot is M columns, ``[<|reward_{name_0}_k0|>, ..., <|reward_{name_M-1}_kM-1|>] + prompt``,
in training, HF generation and vLLM's ``prompt_token_ids``; each objective has its own K
tokens and its own bins, cut from its column of the buffer's ``[N, M]`` rewards. Decoding
parity is the ``token+objectives`` variant of the parity tests in ``test_conditioning.py``
(HF) and ``test_sampling.py`` (vLLM).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from online_dt.config import ConditioningConfig, ConfigError, OnlineRunConfig, load_config
from online_dt.launch.preflight import PreflightError, check_prompt_lengths
from online_dt.launch.rundir import CHECKPOINT_POLICY_DIR
from online_dt.policy.conditioner import RewardConditioner
from online_dt.policy.conditioner_state import CONDITIONING_FILE, HEAD_FILE
from online_dt.policy.generation import sample_tokens
from online_dt.policy.layout import IGNORE_INDEX
from online_dt.policy.logprobs import base_model_logits
from online_dt.policy.normalization import RewardBinning, reward_token
from online_dt.policy.policy import RewardConditionedPolicy
from online_dt.replay.buffer import ReplayBuffer
from tests import test_loop as loop_tests
from tests.faulty_rewards import MULTI_OBJECTIVES
from tests.test_objectives import LOOP_OBJECTIVES, multi_reward_cfg
from tests.tiny import build_tiny_model

OBJECTIVES = [
    {"name": "sentiment", "low": -1.0, "high": 1.0},
    {"name": "brevity", "low": -20.0, "high": 0.0},
]
"""Two objectives with ranges of different widths and centres."""
NAMES = [o["name"] for o in OBJECTIVES]
PROMPTS = ["the movie was", "honestly the game is fun and", "i"]
K = 4
"""Reward tokens (and bins) per objective."""


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("gpt2"), "gpt2")


def token_policy(base, **kw):
    cfg = ConditioningConfig(mode="token", objectives=OBJECTIVES, num_reward_tokens=K, **kw)
    return RewardConditionedPolicy.from_base(base, cfg, attn_implementation="eager").eval()


# ---------------------------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------------------------


def test_config_accepts_token_mode_with_objectives_and_refuses_what_it_cannot_bin(tmp_path):
    cfg = ConditioningConfig(mode="token", objectives=OBJECTIVES)
    assert cfg.slot_width == 2 and cfg.num_objectives == 2
    assert ConditioningConfig(mode="token", bin_method="fixed", objectives=OBJECTIVES).slot_width
    # one column everywhere else
    assert ConditioningConfig(objectives=OBJECTIVES).slot_width == 1
    assert ConditioningConfig(mode="token").slot_width == 1
    assert ConditioningConfig().slot_width == 1
    for extra, message in (
        ({"bin_edges": [0.0] * 7}, "remove bin_edges (one list cannot bin every objective"),
        ({"bin_refit": "split_top"}, "remove bin_refit: split_top"),
        ({"bin_edges": [0.0] * 7, "bin_refit": "split_top"}, "bin_edges"),
    ):
        with pytest.raises(ValueError, match=r"objectives \(multi-objective conditioning\)") as e:
            ConditioningConfig(mode="token", objectives=OBJECTIVES, **extra)
        assert message in str(e.value)
    # from a file: the field is named
    path = tmp_path / "c.yaml"
    path.write_text(
        "conditioning: {mode: token, bin_refit: split_top, objectives: "
        "[{name: a, low: 0, high: 1}, {name: b, low: -2, high: 0}]}\nschedule: {kind: pareto}"
    )
    with pytest.raises(ConfigError, match="conditioning") as err:
        load_config(path, OnlineRunConfig)
    assert "remove bin_refit: split_top" in str(err.value)


def test_reward_token_names():
    assert reward_token(3) == "<|reward_3|>"  # one reward: as before objectives existed
    assert reward_token(3, "brevity") == "<|reward_brevity_3|>"


# ---------------------------------------------------------------------------------------------
# tokens, slot ids and the layout
# ---------------------------------------------------------------------------------------------


def test_each_objective_gets_its_own_reward_tokens(base):
    policy = token_policy(base)
    ids = policy.reward_token_ids
    assert len(ids) == 2 * K == len(set(ids))
    tokens = policy.tokenizer.convert_ids_to_tokens(ids)
    assert tokens == [reward_token(k, n) for n in NAMES for k in range(K)]
    cond = policy.conditioner
    assert cond.objective_token_ids(0) == ids[:K] and cond.objective_token_ids(1) == ids[K:]
    # the bins start evenly over each objective's own range
    assert [b.edges for b in cond.binnings] == [[-0.5, 0.0, 0.5], [-15.0, -10.0, -5.0]]
    assert cond.binning is None and cond.bin_range is None  # the one-reward views
    assert cond.bin_ranges == [None, None] and not cond.bins_fitted
    assert cond.slot_width == policy.slot_width == 2
    # each token's text survives a round trip through the tokenizer as one token
    for token, i in zip(tokens, ids, strict=True):
        assert policy.tokenizer.encode(token, add_special_tokens=False) == [i]


def test_target_vectors_give_one_slot_token_per_objective_in_order(base):
    policy = token_policy(base)
    sent, brev = (
        policy.conditioner.objective_token_ids(0),
        policy.conditioner.objective_token_ids(1),
    )
    targets = [(0.9, -15.0), (-0.9, -1.0), (0.9, -1.0), (0.1, -12.0)]
    assert policy.slot_token_ids(targets) == [
        [sent[3], brev[1]],  # -15 is the first edge: bin 1 holds [-15, -10)
        [sent[0], brev[3]],
        [sent[3], brev[3]],  # only the second objective moved: only the second column moves
        [sent[2], brev[1]],
    ]
    # a buffer's [N, M] array and lists give the same ids as tuples
    assert policy.slot_token_ids(np.array(targets)) == policy.slot_token_ids(targets)
    assert policy.slot_token_ids([list(t) for t in targets]) == policy.slot_token_ids(targets)
    for bad in ([0.5], [(0.5,)], [(0.5, -1.0, 2.0)]):
        with pytest.raises(ValueError, match="conditioned on 2 objectives"):
            policy.slot_token_ids(bad)


def test_the_layout_has_a_two_column_slot_everywhere(base):
    policy = token_policy(base)
    targets = [(0.9, -15.0), (-0.9, -1.0)]
    slots = policy.slot_token_ids(targets)
    prompt_ids = policy.encode(PROMPTS[:2])
    # training: right padded, no loss on the slot, the prompt mask off the slot
    batch = policy.layout(PROMPTS[:2], targets, ["a b", "c"])
    assert batch.slot_width == 2
    assert batch.input_ids[:, :2].tolist() == slots
    assert (batch.labels[:, :2] == IGNORE_INDEX).all()
    assert not batch.prompt_mask[:, :2].any()
    for i, ids in enumerate(prompt_ids):
        assert batch.input_ids[i, 2 : 2 + len(ids)].tolist() == ids
        assert batch.prompt_mask[i].sum() == len(ids)
        assert batch.position_ids[i, : 2 + len(ids)].tolist() == list(range(2 + len(ids)))
    # generation: left padded between the slot and the prompt, the same positions unpadded
    gen = policy.layout(PROMPTS[:2], targets)
    assert gen.input_ids[:, :2].tolist() == slots
    assert (gen.attention_mask[:, :2] == 1).all()
    short = 1 if len(prompt_ids[1]) < len(prompt_ids[0]) else 0
    n = len(prompt_ids[short])
    assert gen.position_ids[short, -n:].tolist() == list(range(2, 2 + n))
    # the base model (KL) sees neither slot column: the same logits as prompt + completion
    with torch.no_grad():
        laid = base_model_logits(policy.model, batch)
        alone = policy.model(
            input_ids=batch.input_ids[:1, 2:], attention_mask=batch.attention_mask[:1, 2:]
        ).logits
    real = int(batch.attention_mask[0, 2:].sum())
    assert torch.allclose(laid[0, 2 : 2 + real], alone[0, :real], atol=1e-5)
    # vLLM's prompt: [*slot, *prompt], the unpadded row of the same layout
    from online_dt.rollout.vllm_prompts import PromptBuilder

    builder = PromptBuilder.from_parts(policy.tokenizer, policy.conditioner, None)
    inputs = builder.inputs(prompt_ids, targets)
    assert [x["prompt_token_ids"] for x in inputs] == [
        [*slot, *ids] for slot, ids in zip(slots, prompt_ids, strict=True)
    ]


def test_a_completion_is_cut_to_fit_the_wider_slot(base):
    policy = token_policy(base)
    limit = policy.max_positions
    prompt = PROMPTS[1]
    n = len(policy.encode([prompt])[0])
    long = " ".join(["the movie was wonderful"] * 40)
    batch = policy.layout([prompt], [(0.0, -10.0)], [long])
    assert batch.input_ids.shape[1] == limit  # 2 slot columns + prompt + cut completion + EOS
    assert int(batch.attention_mask.sum()) == limit
    assert (batch.labels != IGNORE_INDEX).sum() == limit - 2 - n


def test_preflight_counts_every_slot_column(tmp_path):
    from tests.tiny import build_tokenizer

    tokenizer = build_tokenizer(tmp_path / "tok")
    n = len(tokenizer(PROMPTS[1], add_special_tokens=False)["input_ids"])
    check_prompt_lengths([PROMPTS[1]], tokenizer, 8, n + 8 + 3, "test", slot_width=2)
    with pytest.raises(PreflightError, match=r"reward slot \(2 tokens\)"):
        check_prompt_lengths([PROMPTS[1]], tokenizer, 8, n + 8 + 2, "test", slot_width=2)
    with pytest.raises(PreflightError, match=r"reward slot \(3 tokens\)"):
        check_prompt_lengths([PROMPTS[1]], tokenizer, 8, 8 + 3, "test", slot_width=3)


# ---------------------------------------------------------------------------------------------
# bins per objective
# ---------------------------------------------------------------------------------------------


def test_bins_are_cut_per_objective_from_the_pool(base):
    policy = token_policy(base)
    cond = policy.conditioner
    rng = np.random.default_rng(0)
    pool = np.stack([rng.uniform(-1, 1, 50), rng.uniform(-20, -5, 50)], axis=1)  # [N, M]
    newest = [tuple(r) for r in pool[-3:]]
    # fewer pool rewards than bins: nothing moves
    assert policy.fit_reward_statistics(newest[:2], pool[: K - 1]) == []
    assert [b.edges for b in cond.binnings] == [[-0.5, 0.0, 0.5], [-15.0, -10.0, -5.0]]
    assert not cond.bins_fitted
    assert policy.fit_reward_statistics(newest, pool) == []
    assert cond.bins_fitted
    for m in range(2):
        expected = RewardBinning.from_quantiles(pool[:, m].tolist(), K).edges
        assert cond.binnings[m].edges == pytest.approx(expected)
        assert cond.bin_ranges[m] == pytest.approx((pool[:, m].min(), pool[:, m].max()))
    # every token of each objective now labels about a quarter of the pool
    labels = np.array(policy.slot_token_ids(pool))
    for m in range(2):
        counts = [int((labels[:, m] == i).sum()) for i in cond.objective_token_ids(m)]
        assert min(counts) >= 10, counts
    # the bins follow the pool, not the newest batch: a pool moved up moves every edge up
    policy.fit_reward_statistics(newest, pool + np.array([1.0, 5.0]))
    assert cond.binnings[1].edges[0] > RewardBinning.from_quantiles(pool[:, 1].tolist(), K).edges[0]

    # describe_target: per objective its bin and whether it lies above the buffer's best
    d = cond.describe_target((0.0, 5.0))
    assert [o["name"] for o in d["objectives"]] == NAMES
    sent, brev = d["objectives"]
    assert brev["above_range"] and not sent["above_range"] and d["above_range"]
    assert brev["bin"] == K - 1 and brev["token"] == reward_token(K - 1, "brevity")
    assert brev["high"] is None and brev["low"] == pytest.approx(cond.binnings[1].edges[-1])
    assert sent["bins"] == K and sent["range"] == pytest.approx(list(cond.bin_ranges[0]))
    with pytest.raises(ValueError, match="conditioned on 2 objectives"):
        cond.describe_target(0.5)


def test_fixed_bins_stay_evenly_spaced_over_each_range(base):
    policy = token_policy(base, bin_method="fixed")
    pool = np.stack([np.linspace(0.5, 1.0, 40), np.linspace(-3.0, -1.0, 40)], axis=1)
    policy.fit_reward_statistics([tuple(r) for r in pool], pool)
    assert [b.edges for b in policy.conditioner.binnings] == [
        [-0.5, 0.0, 0.5],
        [-15.0, -10.0, -5.0],
    ]
    assert not policy.conditioner.bins_fitted


def test_the_learner_cuts_each_objectives_bins_from_the_buffer_columns(tmp_path, base):
    from online_dt.launch.rundir import RunDir
    from online_dt.samples import Rollout
    from online_dt.training.learner import Learner

    cfg = OnlineRunConfig.model_validate(
        {
            "model": {"name_or_path": str(base), "device": "cpu"},
            "conditioning": {"mode": "token", "num_reward_tokens": K, "objectives": OBJECTIVES},
            "schedule": {"kind": "pareto"},
            "buffer": {"keep_top_fraction": 0.0},
            "sampler": {"backend": "hf"},
            "training": {"batch_size": 4, "lr": 1e-3},
            "online": {"run_dir": str(tmp_path / "run"), "kl_samples": 0},
        }
    )
    RunDir(cfg.online.run_dir).path.mkdir(parents=True)
    learner = Learner(cfg, str(base), cfg.online.run_dir)
    rng = np.random.default_rng(1)
    rewards = [
        (float(a), float(b))
        for a, b in zip(rng.uniform(-1, 1, 12), rng.uniform(-20, 0, 12), strict=True)
    ]
    rollouts = [
        Rollout(f"prompt {i}", f" word{i}", [5 + i, 0], [-1.0, -1.0], (0.0, -10.0))
        for i in range(len(rewards))
    ]
    learner.append(rollouts, rewards, 0, 0.0)
    cond = learner.policy.conditioner
    held = learner.buffer.rewards()
    assert held.shape == (12, 2) and cond.bins_fitted
    for m in range(2):
        assert cond.binnings[m].edges == pytest.approx(
            RewardBinning.from_quantiles(held[:, m].tolist(), K).edges
        )
    assert learner.train(1)["train_tokens"] > 0


# ---------------------------------------------------------------------------------------------
# checkpoint
# ---------------------------------------------------------------------------------------------


def test_checkpoint_keeps_each_objectives_bins_and_tokens(base, tmp_path):
    policy = token_policy(base)
    rng = np.random.default_rng(2)
    pool = np.stack([rng.uniform(-1, 1, 30), rng.uniform(-20, 0, 30)], axis=1)
    policy.fit_reward_statistics([tuple(r) for r in pool], pool)
    cond = policy.conditioner
    policy.save_pretrained(tmp_path / "p")
    assert not (tmp_path / "p" / HEAD_FILE).exists()
    meta = json.loads((tmp_path / "p" / CONDITIONING_FILE).read_text())
    assert meta["config"]["objectives"] == OBJECTIVES and meta["config"]["mode"] == "token"
    assert meta["bin_edges"] is None and meta["bin_range"] is None
    assert meta["reward_token_ids"] == policy.reward_token_ids
    assert [e["name"] for e in meta["objective_bins"]] == NAMES
    for m, entry in enumerate(meta["objective_bins"]):
        assert entry["bin_edges"] == cond.binnings[m].edges
        assert entry["bin_range"] == list(cond.bin_ranges[m])
        assert entry["reward_token_ids"] == cond.objective_token_ids(m)

    loaded = RewardConditionedPolicy.from_pretrained(tmp_path / "p", attn_implementation="eager")
    lcond = loaded.conditioner
    assert [b.edges for b in lcond.binnings] == [b.edges for b in cond.binnings]
    assert lcond.bin_ranges == cond.bin_ranges and lcond.bins_fitted
    assert loaded.reward_token_ids == policy.reward_token_ids
    assert loaded.tokenizer.convert_ids_to_tokens(loaded.reward_token_ids) == [
        reward_token(k, n) for n in NAMES for k in range(K)
    ]
    targets = [(0.9, -15.0), (-0.5, -2.0), (0.1, -8.0)]
    assert loaded.slot_token_ids(targets) == policy.slot_token_ids(targets)
    batch = policy.layout(PROMPTS, targets, ["a b", "c", "d e f"])
    with torch.no_grad():
        assert torch.equal(policy(batch, None).logits, loaded.eval()(batch, None).logits)

    # in memory: from_state and load_state round trip, sharing nothing with the state
    state = cond.to_state()
    assert state["head"] is None
    again = RewardConditioner.from_state(state)
    assert again.to_state() == state
    fresh = token_policy(base).conditioner
    fresh.load_state(state)
    assert fresh.to_state() == state
    state["meta"]["objective_bins"][0]["bin_edges"][0] = -99.0
    assert again.binnings[0].edges[0] != -99.0

    # a state that does not name the config's objectives in order is refused
    swapped = json.loads(json.dumps(cond.to_state()))
    swapped["meta"]["objective_bins"].reverse()
    with pytest.raises(ValueError, match=r"objective_bins name \['brevity', 'sentiment'\]"):
        RewardConditioner.from_state(swapped)
    missing = json.loads(json.dumps(cond.to_state()))
    del missing["meta"]["objective_bins"]
    with pytest.raises(ValueError, match="objective_bins name"):
        RewardConditioner.from_state(missing)
    # nor does a state of other objectives load into this conditioner
    single = RewardConditionedPolicy.from_base(base, ConditioningConfig(mode="token"))
    with pytest.raises(ValueError, match=r"objectives \[\], this conditioner on"):
        fresh.load_state(single.conditioner.to_state())


def test_single_objective_token_state_is_written_and_read_as_before(base):
    """The one-reward token state keeps the keys it had before objectives existed, and a
    state without the newer keys loads."""
    policy = RewardConditionedPolicy.from_base(base, ConditioningConfig(mode="token"))
    policy.fit_reward_statistics(list(np.linspace(-1, 1, 16)))
    meta = policy.conditioner.to_state()["meta"]
    assert set(meta) == {
        "format_version",
        "config",
        "normalizer",
        "bin_edges",
        "bins_fitted",
        "bin_range",
        "reward_token_ids",
        "placeholder_id",
    }
    assert policy.tokenizer.convert_ids_to_tokens(policy.reward_token_ids) == [
        reward_token(k) for k in range(8)
    ]
    old = {"meta": json.loads(json.dumps(meta)), "head": None}
    del old["meta"]["bin_range"], old["meta"]["bins_fitted"]
    loaded = RewardConditioner.from_state(old)
    assert loaded.binning.edges == policy.conditioner.binning.edges
    assert loaded.bin_range is None and not loaded.bins_fitted
    assert loaded.slot_width == 1
    assert loaded.slot_token_ids([-0.9, 0.9]) == policy.slot_token_ids([-0.9, 0.9])


# ---------------------------------------------------------------------------------------------
# no reward token is ever sampled
# ---------------------------------------------------------------------------------------------


def reward_tokens_likeliest(policy):
    """Make every reward token (of either objective) the likeliest next token at some step:
    a large output row along a random direction, alternating in sign."""
    with torch.no_grad():
        head = policy.model.get_output_embeddings().weight
        direction = torch.randn(head.shape[1], generator=torch.Generator().manual_seed(0))
        for k, token in enumerate(policy.reward_token_ids):
            head[token] = (30.0 if k % 2 == 0 else -30.0) * direction


def test_hf_sampling_bans_every_objectives_reward_tokens(tmp_path):
    base = build_tiny_model(tmp_path / "llama", "llama")  # untied output layer
    policy = token_policy(base)
    reward_tokens_likeliest(policy)
    prompts, targets = PROMPTS * 4, [(0.9, -15.0), (-0.5, -2.0), (0.1, -8.0)] * 4
    out = policy.generate(prompts, targets, max_new_tokens=8, seed=3)
    sampled = {t for r in out for t in r.token_ids}
    assert not sampled & set(policy.reward_token_ids)
    # negative control: without the ban, reward tokens of both objectives are sampled
    batch = policy.layout(prompts, targets)
    with torch.no_grad():
        free = sample_tokens(
            policy.model,
            policy.embed(batch.input_ids, None),
            batch.attention_mask,
            max_new_tokens=8,
            eos_token_id=policy.eos_token_id,
            pad_token_id=policy.pad_token_id,
            generator=torch.Generator().manual_seed(3),
        )
    free_ids = {t for row in free.token_ids for t in row}
    for m in range(2):
        assert free_ids & set(policy.conditioner.objective_token_ids(m)), m


def test_vllm_ban_covers_every_objectives_reward_tokens(base):
    """The vLLM sampler bans ``conditioner.reward_token_ids``: every objective's tokens."""
    from vllm.v1.sample.logits_processor import BatchUpdate

    from online_dt.rollout.sampler import SamplingParams
    from online_dt.rollout.vllm_logits import BannedTokensLogitsProcessor
    from online_dt.rollout.vllm_prompts import PromptBuilder
    from online_dt.rollout.vllm_sampler import vllm_sampling_params

    policy = token_policy(base)
    builder = PromptBuilder.from_parts(policy.tokenizer, policy.conditioner, None)
    banned = builder.conditioner.reward_token_ids
    assert sorted(banned) == sorted(policy.reward_token_ids) and len(banned) == 2 * K
    params = vllm_sampling_params(SamplingParams(n=1, seed=0), 2, banned_token_ids=banned)
    proc = BannedTokensLogitsProcessor(None, torch.device("cpu"), False)
    added = [(i, p, None, []) for i, p in enumerate(params)]
    proc.update_state(BatchUpdate(batch_size=2, removed=[], added=added, moved=[]))
    logits = proc.apply(torch.zeros(2, len(policy.tokenizer)))
    for row in logits:
        assert set(torch.nonzero(torch.isinf(row)).flatten().tolist()) == set(banned)


# ---------------------------------------------------------------------------------------------
# the loop in process
# ---------------------------------------------------------------------------------------------


def test_token_mode_multi_objective_run_end_to_end(tmp_path, base):
    """Two iterations of the in-process loop in token mode with two objectives (KL-weighted
    buffer, the pareto schedule), then a resumed third: the checkpoint holds each objective's
    bins, cut from the buffer's columns, and its tokens."""
    reward = multi_reward_cfg(tmp_path)
    cfg = loop_tests.make_cfg(tmp_path, base, iterations=2)
    cfg = OnlineRunConfig.model_validate(
        {
            **cfg.model_dump(mode="json"),
            "conditioning": {
                "mode": "token",
                "num_reward_tokens": K,
                "objectives": LOOP_OBJECTIVES,
            },
            "schedule": {"kind": "pareto", "front_step": 0.1, "front_spread": 0.05, "seed": 2},
            "reward_model": reward.model_dump(),
            "buffer": {"sampling": "reward_balanced", "importance_weighting": True},
        }
    )
    history, plan = loop_tests.run_local(cfg)
    run = plan.run
    assert [m["samples"] for m in history] == [8, 8]
    assert all(m["objectives"] == list(MULTI_OBJECTIVES) for m in history)
    held = ReplayBuffer.load(cfg.buffer, run.buffer_dir).held()
    assert len(held) == 16 and all(len(s.achieved_reward) == 2 for s in held)

    policy_dir = run.latest_checkpoint() / CHECKPOINT_POLICY_DIR
    meta = json.loads((policy_dir / CONDITIONING_FILE).read_text())
    assert meta["bins_fitted"] and [e["name"] for e in meta["objective_bins"]] == list(
        MULTI_OBJECTIVES
    )
    achieved = np.array([s.achieved_reward for s in held])
    for m, entry in enumerate(meta["objective_bins"]):
        assert entry["bin_edges"] == pytest.approx(
            RewardBinning.from_quantiles(achieved[:, m].tolist(), K).edges
        )
    policy = RewardConditionedPolicy.from_pretrained(policy_dir)
    assert policy.slot_width == 2 and len(policy.reward_token_ids) == 2 * K

    _rest, plan = loop_tests.run_local(
        None, resume=run.path, overrides={"online": {"iterations": 3}}
    )
    resumed = plan.run.read_metrics()
    assert [m["iteration"] for m in resumed] == [0, 1, 2] and resumed[2]["samples"] == 8

    # the evaluation reports, per target vector, each objective's bin
    from online_dt.eval.run import run_eval

    report = run_eval(
        run.path,
        targets=[(-1.0, -1.0), (2.0, 2.0)],  # below and above every reward seen
        samples_per_target=2,
        out_dir=tmp_path / "eval",
        with_kl=False,
    )
    low, high = (row["bin"] for row in report["rows"])
    assert [o["name"] for o in low["objectives"]] == list(MULTI_OBJECTIVES)
    assert [o["bin"] for o in low["objectives"]] == [0, 0]
    assert [o["bin"] for o in high["objectives"]] == [K - 1, K - 1]
    assert high["above_range"] and all(o["above_range"] for o in high["objectives"])
    assert not low["above_range"]

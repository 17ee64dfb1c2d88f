"""Multi-objective conditioning end to end: config cross-checks, the vector head, its
checkpoint, vector rewards in the replay buffer, the ``pareto`` schedule, and the loop in
process with a multi-score reward model named by class path (bad scores rejected, records,
resume). Decoding parity of the vector layout is a variant of the parity tests in
``test_conditioning.py`` (HF) and ``test_sampling.py`` (vLLM ``prompt_embeds``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from online_dt.config import (
    ConditioningConfig,
    ConfigError,
    FaultToleranceConfig,
    ObjectiveConfig,
    OnlineRunConfig,
    ReplayBufferConfig,
    RewardModelConfig,
    ScheduleConfig,
    load_config,
)
from online_dt.launch.rundir import RunDir
from online_dt.loop.console import iteration_line, run_summary
from online_dt.loop.front_schedule import front_targets, mean_target
from online_dt.loop.futures import LocalHandle
from online_dt.loop.schedule import ScheduleState
from online_dt.loop.scoring import score_rollouts
from online_dt.loop.workers import CheckedRewardModel
from online_dt.objectives import front_summary, normalize
from online_dt.policy.conditioner import RewardConditioner
from online_dt.policy.conditioner_state import CONDITIONING_FILE, HEAD_FILE
from online_dt.policy.policy import RewardConditionedPolicy
from online_dt.replay.buffer import ReplayBuffer
from online_dt.rewards import load_reward_model
from online_dt.samples import Rollout, Sample
from online_dt.util.pareto import pareto_front
from tests import test_loop as loop_tests
from tests.faulty_rewards import MULTI_OBJECTIVES, WordsLettersReward, words_letters
from tests.tiny import build_tiny_model, randomize_objective_weights

OBJECTIVES = [
    {"name": "sentiment", "low": -1.0, "high": 1.0},
    {"name": "brevity", "low": -20.0, "high": 0.0},
]
"""Two objectives with ranges of different widths and centres."""
PROMPTS = ["the movie was", "honestly the game is fun and", "i"]
NO_WAIT = FaultToleranceConfig(retry_backoff_s=0.0)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("gpt2"), "gpt2")


def two_objective_policy(base, randomize=True, **kw):
    cfg = ConditioningConfig(objectives=OBJECTIVES, **kw)
    policy = RewardConditionedPolicy.from_base(base, cfg, attn_implementation="eager")
    if randomize:
        randomize_objective_weights(policy)
    return policy.eval()


# ---------------------------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------------------------

TWO = "[{name: a, low: 0, high: 1}, {name: b, low: -2, high: 0}]"


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("conditioning", "message"),
    [
        ("mode: token, bin_edges: [0.0]", "remove bin_edges"),
        ("mode: token, bin_refit: split_top", "remove bin_refit: split_top"),
        ("reward_features: rbf", "remove reward_features: rbf"),
        ("reward_on_prompt: true", "remove reward_on_prompt"),
        ("normalization: {kind: running}", "remove normalization"),
        ("normalization: {scale: 2.0}", "remove normalization"),
        ("objectives: [{name: a, low: 0, high: 1}, {name: a, low: 0, high: 2}]", "unique"),
        ("objectives: [{name: a, low: 1, high: 1}]", "'a': high must be greater than low"),
        ("objectives: [{name: a, low: 2, high: 1}]", "'a': high must be greater than low"),
        ("objectives: [{name: 1a, low: 0, high: 1}]", "conditioning.objectives.0.name"),
    ],
)
def test_objectives_refuse_what_the_vector_head_cannot_do(tmp_path, conditioning, message):
    """Each option the vector head does not support is refused at load, naming the field."""
    text = f"conditioning: {{objectives: {TWO}, {conditioning}}}\nschedule: {{kind: pareto}}"
    if conditioning.startswith("objectives"):
        text = f"conditioning: {{{conditioning}}}\nschedule: {{kind: pareto}}"
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), OnlineRunConfig)
    assert message in str(err.value)
    assert "conditioning" in str(err.value)


def test_objectives_accept_the_defaults_spelled_out(tmp_path):
    text = (
        f"conditioning: {{objectives: {TWO}, mode: scalar, reward_features: linear,"
        " normalization: {kind: affine, center: 0.0, scale: 1.0}}\n"
        "schedule: {kind: pareto}\nbuffer: {keep_top_fraction: 0}"
    )
    cfg = load_config(write(tmp_path, text), OnlineRunConfig)
    assert cfg.conditioning.objective_names == ["a", "b"]
    assert cfg.conditioning.head_inputs == cfg.conditioning.num_objectives == 2
    assert [o.center for o in cfg.conditioning.objectives] == [0.5, -1.0]
    assert [o.half_width for o in cfg.conditioning.objectives] == [0.5, 1.0]
    # without objectives: one unnamed reward
    assert ConditioningConfig().objective_names == [] and ConditioningConfig().num_objectives == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"conditioning: {{objectives: {TWO}}}", "schedule.kind: quantile with 2 objectives"),
        (
            f"conditioning: {{objectives: {TWO}}}\nschedule: {{kind: constant}}",
            "schedule.kind: constant with 2 objectives",
        ),
        ("schedule: {kind: pareto}", "schedule.kind: pareto with 0 objectives"),
        (
            f"conditioning: {{objectives: {TWO}}}\nschedule: {{kind: pareto}}\n"
            "buffer: {keep_top_fraction: 0.1}",
            "buffer.keep_top_fraction",
        ),
    ],
)
def test_run_level_cross_checks_name_the_field_before_anything_starts(
    tmp_path, capsys, text, message
):
    path = write(tmp_path, text + f"\nonline: {{run_dir: {tmp_path / 'run'}}}")
    with pytest.raises(ConfigError) as err:
        load_config(path, OnlineRunConfig)
    assert message in str(err.value)
    # the CLI stops on it with exit code 2 and creates nothing
    from online_dt.run import main

    assert main(["--config", str(path), "--local", "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_run_level_cross_checks_on_the_model_too():
    ok = {"conditioning": {"objectives": OBJECTIVES}, "schedule": {"kind": "pareto"}}
    assert OnlineRunConfig.model_validate(ok).schedule.kind == "pareto"
    with pytest.raises(ValueError, match=r"buffer\.keep_top_fraction"):
        OnlineRunConfig.model_validate({**ok, "buffer": {"keep_top_fraction": 0.2}})
    with pytest.raises(ValueError, match=r"schedule\.kind: pareto"):
        OnlineRunConfig.model_validate({"conditioning": {"objectives": OBJECTIVES}})


# ---------------------------------------------------------------------------------------------
# the vector head
# ---------------------------------------------------------------------------------------------


def slots(policy, targets):
    """Column 0 (the slot) of the embedded layout of PROMPTS[:len(targets)] at ``targets``."""
    batch = policy.layout(PROMPTS[: len(targets)], targets)
    rewards = policy.conditioner.reward_tensor(targets)
    with torch.no_grad():
        return policy.embed(batch.input_ids, rewards, batch.prompt_mask)[:, 0]


def test_vector_targets_give_their_own_slot_embeddings(base):
    policy = two_objective_policy(base)
    head = policy.conditioner.head
    assert list(head.weight.shape) == [policy.model.config.hidden_size, 2]
    a, b, a_again = slots(policy, [(0.5, -5.0), (0.5, -15.0), (0.5, -5.0)])
    c = slots(policy, [(-0.5, -5.0)])[0]
    assert torch.equal(a, a_again)
    # either objective alone moves the slot
    assert (a - b).abs().max() > 1e-3 and (a - c).abs().max() > 1e-3
    # each objective is normalised from its own range: [low, high] -> [-1, 1]
    top, bottom, middle = slots(policy, [(1.0, 0.0), (-1.0, -20.0), (0.0, -10.0)])
    assert torch.allclose(middle, head.bias, atol=1e-6)
    assert torch.allclose(top, head.bias + head.weight.sum(1), atol=1e-5)
    assert torch.allclose(top + bottom, 2 * head.bias, atol=1e-5)
    # the fresh head starts with only the first objective's column non-zero
    fresh = two_objective_policy(base, randomize=False)
    assert fresh.conditioner.head.weight[:, 0].abs().sum() > 0
    assert fresh.conditioner.head.weight[:, 1:].abs().sum() == 0


def test_reward_tensor_checks_the_shape_against_the_conditioning(base):
    vector = two_objective_policy(base).conditioner
    assert vector.reward_tensor([(1.0, -2.0), [0.0, 3]]).tolist() == [[1.0, -2.0], [0.0, 3.0]]
    assert vector.reward_tensor([(1.0, -2.0)]).dtype == torch.float32
    for bad in ([0.5], [(0.5, -1.0), 0.5], [(0.5,)], [(0.5, -1.0, 2.0)]):
        with pytest.raises(ValueError, match="conditioned on 2 objectives"):
            vector.reward_tensor(bad)
    scalar = RewardConditionedPolicy.from_base(base, ConditioningConfig()).conditioner
    assert scalar.reward_tensor([0.5, 1]).tolist() == [0.5, 1.0]
    for bad in ([(0.5, -1.0)], [0.5, [0.5]]):
        with pytest.raises(ValueError, match="vector was given to a policy conditioned on one"):
            scalar.reward_tensor(bad)


# ---------------------------------------------------------------------------------------------
# checkpoint
# ---------------------------------------------------------------------------------------------


def test_checkpoint_keeps_the_objectives_and_the_vector_head(base, tmp_path):
    from safetensors.torch import load_file

    policy = two_objective_policy(base)
    policy.save_pretrained(tmp_path / "p")
    meta = json.loads((tmp_path / "p" / CONDITIONING_FILE).read_text())
    assert meta["config"]["objectives"] == OBJECTIVES
    hidden = policy.model.config.hidden_size
    assert list(load_file(tmp_path / "p" / HEAD_FILE)["weight"].shape) == [hidden, 2]

    loaded = RewardConditionedPolicy.from_pretrained(tmp_path / "p", attn_implementation="eager")
    assert loaded.config.objectives == policy.config.objectives
    assert list(loaded.conditioner.head.weight.shape) == [hidden, 2]
    targets = [(0.9, -15.0), (-0.5, -2.0), (0.1, -8.0)]
    batch = policy.layout(PROMPTS, targets, ["a b", "c", "d e f"])
    rewards = policy.conditioner.reward_tensor(targets)
    with torch.no_grad():
        assert torch.equal(policy(batch, rewards).logits, loaded.eval()(batch, rewards).logits)

    # the head does not load into a conditioner with one objective, or with none
    state = policy.conditioner.to_state()
    for objectives, names in ((OBJECTIVES[:1], r"\['sentiment'\]"), ([], r"\[\]")):
        changed = {"meta": json.loads(json.dumps(state["meta"])), "head": state["head"]}
        changed["meta"]["config"]["objectives"] = objectives
        message = rf"head's weight is \[{hidden}, 2\].*objectives {names} need 1 inputs"
        with pytest.raises(ValueError, match=message):
            RewardConditioner.from_state(changed)
    # nor a one-reward head into a two-objective conditioner
    scalar = RewardConditionedPolicy.from_base(base, ConditioningConfig()).conditioner.to_state()
    scalar["meta"]["config"]["objectives"] = OBJECTIVES
    with pytest.raises(ValueError, match=rf"head's weight is \[{hidden}, 1\]"):
        RewardConditioner.from_state(scalar)


# ---------------------------------------------------------------------------------------------
# replay buffer
# ---------------------------------------------------------------------------------------------


def vector_sample(achieved, target=None, log_w=None, i=0):
    return Sample(
        prompt=f"p{i}",
        completion=f"c{i}",
        achieved_reward=achieved,
        target_reward=target if target is not None else tuple(0.0 for _ in achieved),
        policy_version=0,
        iteration=0,
        created_at=1.0,
        scored_at=2.0,
        completion_tokens=3,
        log_importance_weight=log_w,
    )


def test_vector_samples_round_trip_through_shards(tmp_path):
    cfg = ReplayBufferConfig(shard_size=3)
    buf = ReplayBuffer(cfg, tmp_path / "buf")
    rng = np.random.default_rng(0)
    achieved = [tuple(rng.uniform(-1, 1, 2).tolist()) for _ in range(7)]
    targets = [tuple(rng.uniform(-1, 1, 2).tolist()) for _ in range(7)]
    samples = [
        vector_sample(a, t, i=i) for i, (a, t) in enumerate(zip(achieved, targets, strict=True))
    ]
    buf.append(samples[:4])
    buf.append(samples[4:])
    assert buf.rewards().shape == (7, 2)
    np.testing.assert_array_equal(buf.rewards(), np.array(achieved))
    again = ReplayBuffer.load(cfg, tmp_path / "buf")
    assert again.held() == buf.held()
    assert [s.achieved_reward for s in again.held()] == achieved
    assert [s.target_reward for s in again.held()] == targets
    assert all(isinstance(s.achieved_reward, tuple) for s in again.held())
    np.testing.assert_array_equal(again.rewards(), buf.rewards())
    # the reloaded buffer appends on and samples vectors
    again.append([vector_sample((0.0, 0.0), i=7)])
    assert again.rewards().shape == (8, 2)
    assert all(len(s.achieved_reward) == 2 for s in again.sample_batch(5))


def test_mixed_reward_shapes_are_refused_with_nothing_appended(tmp_path):
    buf = ReplayBuffer(ReplayBufferConfig(), tmp_path / "buf")
    # within one batch: vectors of two lengths, or floats beside vectors
    for batch in (
        [vector_sample((0.1, 0.2)), vector_sample((0.1, 0.2, 0.3), i=1)],
        [vector_sample((0.1, 0.2)), vector_sample(0.5, 0.5, i=1)],
        [vector_sample((0.1, 0.2), (0.1, 0.2, 0.3))],
    ):
        with pytest.raises(TypeError, match="nothing was appended"):
            buf.append(batch)
        assert len(buf) == 0 and buf.total_appended == 0
    buf.append([vector_sample((0.1, 0.2))])
    # against what the buffer holds: another length, or a float
    for batch in ([vector_sample((0.1, 0.2, 0.3))], [vector_sample(0.5, 0.5)]):
        with pytest.raises(TypeError, match="holds rewards of 2 objectives"):
            buf.append(batch)
    assert buf.total_appended == 1 and buf.rewards().shape == (1, 2)
    assert len(ReplayBuffer.load(ReplayBufferConfig(), tmp_path / "buf")) == 1
    # a one-reward buffer refuses vectors
    floats = ReplayBuffer(ReplayBufferConfig(), None)
    floats.append([vector_sample(0.5, 0.5)])
    with pytest.raises(TypeError, match="holds one reward per sample"):
        floats.append([vector_sample((0.1, 0.2))])
    assert floats.rewards().shape == (1,)


def test_nan_inside_a_vector_is_refused_with_nothing_appended(tmp_path):
    buf = ReplayBuffer(ReplayBufferConfig(shard_size=2), tmp_path / "buf")
    buf.append([vector_sample((0.1, 0.2)), vector_sample((0.3, 0.4), i=1)])
    files = sorted(p.name for p in (tmp_path / "buf").iterdir())
    for bad, field in (
        (vector_sample((0.5, math.nan), i=2), "achieved_reward"),
        (vector_sample((0.5, 0.1), (math.inf, 0.0), i=2), "target_reward"),
    ):
        with pytest.raises(ValueError, match=rf"non-finite {field}.*p2.*nothing was appended"):
            buf.append([vector_sample((0.7, 0.7), i=3), bad])
        assert buf.total_appended == 2 and buf.rewards().shape == (2, 2)
        assert sorted(p.name for p in (tmp_path / "buf").iterdir()) == files
    assert len(ReplayBuffer.load(ReplayBufferConfig(), tmp_path / "buf")) == 2


def draws(buf, sample_id, n=600):
    return sum(buf.sample_batch(1)[0].sample_id == sample_id for _ in range(n)) / n


def test_reward_balanced_sampling_bins_the_vector_into_cells():
    """19 samples spread over the first objective, all at 0 in the second; one more in the
    middle of the first objective at 1 in the second. Binned by the first objective alone it
    would be as common as any; on the grid of cells it is alone in its cell."""
    first = np.linspace(0.0, 1.0, 19)
    samples = [vector_sample((float(x), 0.0), i=i) for i, x in enumerate(first)]
    samples.append(vector_sample((0.5, 1.0), i=19))
    shares = {}
    for sampling in ("uniform", "reward_balanced"):
        buf = ReplayBuffer(ReplayBufferConfig(sampling=sampling, reward_bins=2), None, seed=3)
        buf.append(samples)
        shares[sampling] = draws(buf, 19)
    assert shares["uniform"] == pytest.approx(1 / 20, abs=0.04)
    # cells (0, 0), (1, 0) and the rare (1, 1) carry a third of the mass each
    assert shares["reward_balanced"] == pytest.approx(1 / 3, abs=0.07)


def test_importance_weighting_runs_within_the_vector_cells():
    """Two samples share a cell and differ in their importance weights; a third is alone in
    its cell: the weights move mass within the cell, not between cells."""
    samples = [
        vector_sample((0.0, 0.0), log_w=1.0, i=0),
        vector_sample((0.0, 0.0), log_w=-1.0, i=1),
        vector_sample((1.0, 1.0), log_w=3.0, i=2),
    ]
    buf = ReplayBuffer(
        ReplayBufferConfig(sampling="reward_balanced", importance_weighting=True, reward_bins=2),
        None,
        seed=1,
    )
    buf.append(samples)
    n = 3000
    counts = np.bincount([buf.sample_batch(1)[0].sample_id for _ in range(n)], minlength=3) / n
    # the lone sample keeps its cell's half, whatever its own weight
    assert counts[2] == pytest.approx(0.5, abs=0.04)
    # within the shared cell: e : 1/e
    assert counts[0] / counts[1] == pytest.approx(math.e**2, rel=0.25)


# ---------------------------------------------------------------------------------------------
# the pareto schedule
# ---------------------------------------------------------------------------------------------

OBJ = [ObjectiveConfig(**o) for o in OBJECTIVES]


def schedule(**kw):
    return ScheduleConfig(kind="pareto", **kw)


def buffer_points(n=40, seed=0):
    """Reward vectors inside both ranges, away from the top (so no target is clamped)."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(-0.9, 0.4, size=(n, 2))
    return (u * [1.0, 10.0] + [0.0, -10.0]).tolist()


def test_front_targets_are_deterministic_and_resumable():
    cfg = schedule(front_step=0.2, front_spread=0.1, seed=5)
    rewards = buffer_points()
    state = ScheduleState.initial(cfg)
    first, after = front_targets(cfg, OBJ, state, rewards, 12)
    again, after_again = front_targets(cfg, OBJ, state, rewards, 12)
    assert first == again and after == after_again
    assert after.iteration == 1 and after.seed == 5
    assert all(isinstance(t, tuple) and len(t) == 2 for t in first)
    # a state written to a checkpoint and read back gives the same targets
    restored = ScheduleState.from_dict(json.loads(json.dumps(after.to_dict())))
    second, _ = front_targets(cfg, OBJ, after, rewards, 12)
    assert front_targets(cfg, OBJ, restored, rewards, 12)[0] == second
    # the next iteration draws anew: another order, other noise
    assert second != first
    assert mean_target(first) == pytest.approx(tuple(np.mean(first, axis=0)))
    # a state of another seed is refused
    with pytest.raises(ValueError, match="seed"):
        front_targets(schedule(seed=6), OBJ, after, rewards, 12)
    # rewards of another shape are refused, not reshaped into pairs
    for bad in ([[0.0, 0.0, 0.0]], [[0.1, 0.2, 0.3, 0.4]], [0.1, 0.2], np.zeros((4, 1))):
        with pytest.raises(ValueError, match=r"rewards must be \[N, 2\]"):
            front_targets(cfg, OBJ, state, bad, 4)
    assert front_targets(cfg, OBJ, state, rewards, 0)[0] == []


@pytest.mark.parametrize("step", [0.0, 0.3, 5.0])
def test_front_targets_stay_within_each_range(step):
    rng = np.random.default_rng(1)
    # rewards beyond either end of the ranges
    rewards = np.stack([rng.uniform(-3, 3, 50), rng.uniform(-40, 20, 50)], axis=1)
    cfg = schedule(front_step=step, front_spread=0.5)
    for i in range(3):
        targets, _ = front_targets(cfg, OBJ, ScheduleState(iteration=i), rewards, 30)
        t = np.array(targets)
        assert (t[:, 0] >= -1.0).all() and (t[:, 0] <= 1.0).all()
        assert (t[:, 1] >= -20.0).all() and (t[:, 1] <= 0.0).all()


def test_front_targets_without_rewards_map_preferences_onto_the_ranges():
    count = 20
    targets, _ = front_targets(schedule(front_spread=0.0), OBJ, ScheduleState(), [], count)
    u = normalize(np.array(targets), OBJ)
    # u = 2 w - 1 with w on the simplex: the two normalised targets sum to zero, and the
    # preferences are the evenly spread grid (i + 0.5) / count, in some order
    np.testing.assert_allclose(u.sum(axis=1), 0.0, atol=1e-12)
    expected = 2 * (np.arange(count) + 0.5) / count - 1
    np.testing.assert_allclose(np.sort(u[:, 0]), expected, atol=1e-12)
    # the most one-sided preferences ask for one objective's top and the other's bottom
    best_first = targets[int(np.argmax(u[:, 0]))]
    best_second = targets[int(np.argmax(u[:, 1]))]
    assert best_first == pytest.approx((0.95, -19.5))
    assert best_second == pytest.approx((-0.95, -0.5))
    # and a preference spread evenly over many prompts reaches nearly the corners
    many, _ = front_targets(schedule(front_spread=0.0), OBJ, ScheduleState(), [], 1000)
    assert max(t[0] for t in many) == pytest.approx(1.0, abs=2e-3)
    assert max(t[1] for t in many) == pytest.approx(0.0, abs=0.05)


def test_front_targets_step_beyond_the_point_the_preference_picks():
    step, count = 0.15, 16
    rewards = buffer_points()
    targets, _ = front_targets(
        schedule(front_step=step, front_spread=0.0), OBJ, ScheduleState(), rewards, count
    )
    points = normalize(np.array(rewards), OBJ)
    front = pareto_front(points)
    picked_preferences = []
    for target in normalize(np.array(targets), OBJ):
        # at or beyond a front point, by exactly the step
        gaps = target - front
        beyond = (gaps >= -1e-12).all(axis=1) & np.isclose(np.linalg.norm(gaps, axis=1), step)
        assert beyond.sum() == 1, target
        p, gap = front[beyond][0], gaps[beyond][0]
        # the step is along the preference, and that preference picks this very point
        w = gap / gap.sum()
        picked_preferences.append(w[0])
        assert (points @ w).max() == pytest.approx(p @ w, abs=1e-12)
        # no reward in the buffer is as good in both objectives
        assert not (points >= target - 1e-12).all(axis=1).any()
    # every prompt got its own preference of the evenly spread grid
    np.testing.assert_allclose(
        np.sort(picked_preferences), (np.arange(count) + 0.5) / count, atol=1e-9
    )


# ---------------------------------------------------------------------------------------------
# a multi-score reward model by class path
# ---------------------------------------------------------------------------------------------


def multi_reward_cfg(tmp_path, fail_calls=(), fault="nan"):
    return RewardModelConfig(
        kind="custom",
        class_path="tests.faulty_rewards:FaultyMultiReward",
        kwargs={
            "counter_file": str(tmp_path / "calls"),
            "fail_calls": list(fail_calls),
            "fault": fault,
        },
    )


def test_a_multi_score_model_loads_by_class_path_and_follows_the_config_order():
    model = load_reward_model(
        RewardModelConfig(kind="custom", class_path="tests.faulty_rewards:WordsLettersReward")
    )
    assert isinstance(model, WordsLettersReward)
    completions = ["a b c", "1 2 3 4", ""]
    expected = [words_letters(c) for c in completions]
    # the model lists letters first; the tuples follow the configured order
    for names in (["words", "letters"], ["letters", "words"]):
        scores = CheckedRewardModel(model, names).score(["p"] * 3, completions)
        assert scores == [tuple(e[n] for n in names) for e in expected]
    with pytest.raises(ValueError, match="named objectives"):
        CheckedRewardModel(model).score(["p"], ["a"])


def multi_rollouts(n=6):
    return [
        Rollout(f"prompt {i}", "a b c " * i, [1] * i, [0.0] * i, (0.5, 0.5), 3, True, i, 0.0, 0.1)
        for i in range(n)
    ]


@pytest.mark.parametrize(
    ("fault", "reason", "named"),
    [
        ("missing", "missing_objective", "'letters'"),
        ("unknown", "unknown_objective", "'style'"),
        ("nan", "nan", "'letters'"),
        ("not_a_number", "not_a_number", "'letters'"),
        ("float", "not_a_mapping", "words"),
    ],
)
def test_bad_objective_scores_land_in_rejected(tmp_path, fault, reason, named):
    run = RunDir(tmp_path / "run")
    model = load_reward_model(multi_reward_cfg(tmp_path, [1], fault))
    scorer = CheckedRewardModel(model, MULTI_OBJECTIVES)
    skip = NO_WAIT.model_copy(update={"on_reward_failure": "skip"})
    out = score_rollouts(LocalHandle(scorer).score, multi_rollouts(), 2, skip, run)
    assert out.rewards is None and out.attempts == 1 and out.reason == reason
    [kept] = run.read_rejected()
    assert kept["file"] == f"iter-000002-{reason}.json"
    assert kept["offending_indices"] == [1] and named in kept["message"]
    assert len(kept["samples"]) == 6
    assert all(s["target"] == [0.5, 0.5] for s in kept["samples"])
    # the next call is fine: tuples in the configured order
    again = score_rollouts(LocalHandle(scorer).score, multi_rollouts(), 3, skip, run)
    assert again.rewards == [
        tuple(words_letters(r.completion)[n] for n in MULTI_OBJECTIVES) for r in multi_rollouts()
    ]


# ---------------------------------------------------------------------------------------------
# the loop in process
# ---------------------------------------------------------------------------------------------

LOOP_OBJECTIVES = [{"name": n, "low": 0.0, "high": 1.0} for n in MULTI_OBJECTIVES]


def multi_run_cfg(tmp_path, base, reward, **online):
    cfg = loop_tests.make_cfg(tmp_path, base, **online)
    return OnlineRunConfig.model_validate(
        {
            **cfg.model_dump(mode="json"),
            "conditioning": {"objectives": LOOP_OBJECTIVES},
            "schedule": {"kind": "pareto", "front_step": 0.1, "front_spread": 0.05, "seed": 2},
            "reward_model": reward.model_dump(),
            "buffer": {"sampling": "reward_balanced", "importance_weighting": True},
            "fault_tolerance": NO_WAIT.model_copy(
                update={"on_reward_failure": "skip"}
            ).model_dump(),
        }
    )


def test_multi_objective_run_records_rejects_and_resumes(tmp_path, base):
    """Three iterations with the second batch's scores broken (a NaN objective), then the run
    resumed for a fourth: per-objective records, the front's hypervolume, the rejected batch,
    and a resumed schedule that reads the same buffer vectors."""
    reward = multi_reward_cfg(tmp_path, fail_calls=[2], fault="nan")
    cfg = multi_run_cfg(tmp_path, base, reward, iterations=3)
    history, plan = loop_tests.run_local(cfg)
    run = plan.run
    assert [m["samples"] for m in history] == [8, 0, 8]

    # the bad batch is in rejected/, named by its objective, and nothing of it was appended
    [kept] = run.read_rejected()
    assert kept["iteration"] == 1 and kept["reason"] == "nan"
    assert "objective 'letters'" in kept["message"] and len(kept["samples"]) == 8
    assert history[1]["rejected_samples"] == 8 and "achieved_mean" not in history[1]

    # every sample is labelled with the model's scores, in the configured order
    held = ReplayBuffer.load(cfg.buffer, run.buffer_dir).held()
    assert len(held) == 16 and {s.iteration for s in held} == {0, 2}
    for s in held:
        assert s.achieved_reward == tuple(words_letters(s.completion)[n] for n in MULTI_OBJECTIVES)
        assert len(s.target_reward) == 2 and all(0.0 <= t <= 1.0 for t in s.target_reward)

    # per-objective records
    for m in history:
        assert m["objectives"] == list(MULTI_OBJECTIVES)
        assert isinstance(m["target"], list) and len(m["target"]) == 2
        assert m["front_size"] >= 1 or m["iteration"] == 1
    for m in (history[0], history[2]):
        rows = [s for s in held if s.iteration == m["iteration"]]
        achieved = np.array([s.achieved_reward for s in rows])
        asked = np.array([s.target_reward for s in rows])
        assert m["achieved_mean"] == pytest.approx(achieved.mean(axis=0).tolist())
        for j, name in enumerate(MULTI_OBJECTIVES):
            assert m[f"achieved_{name}_mean"] == pytest.approx(achieved[:, j].mean())
            assert m[f"achieved_{name}_p10"] <= m[f"achieved_{name}_p90"]
            assert m[f"target_{name}"] == pytest.approx(asked[:, j].mean())
            assert m[f"calibration_error_{name}"] == pytest.approx(
                np.abs(achieved[:, j] - asked[:, j]).mean()
            )
        assert m["target"] == pytest.approx(asked.mean(axis=0).tolist())
        # the front of what the buffer held after this iteration
        upto = [s.achieved_reward for s in held if s.sample_id <= m["last_sample_id"]]
        summary = front_summary(upto, cfg.conditioning.objectives)
        assert m["front_size"] == summary["front_size"]
        assert m["front_hypervolume"] == pytest.approx(summary["front_hypervolume"])
        assert 0.0 < m["front_hypervolume"] <= 4.0
    assert history[2]["front_hypervolume"] >= history[0]["front_hypervolume"]
    # the console shows vectors
    assert "achieved [" in iteration_line(history[0], 3)
    assert "(words, letters)" in iteration_line(history[0], 3)
    assert "hypervolume" in run_summary(history, run.path, None)

    # resume for one more iteration: the loaded buffer holds the same vectors, and the
    # schedule's targets are computed from them
    _rest, plan = loop_tests.run_local(
        None, resume=run.path, overrides={"online": {"iterations": 4}}
    )
    resumed = plan.run.read_metrics()
    assert [m["iteration"] for m in resumed] == [0, 1, 2, 3]
    after = ReplayBuffer.load(cfg.buffer, run.buffer_dir).held()
    assert after[:16] == held
    assert [s.sample_id for s in after] == list(range(24))
    assert {s.iteration for s in after[16:]} == {3}
    vectors, _ = front_targets(
        cfg.schedule,
        cfg.conditioning.objectives,
        ScheduleState(iteration=3, seed=cfg.schedule.seed),
        [s.achieved_reward for s in held],
        cfg.online.prompts_per_iteration,
    )
    assert resumed[3]["target"] == pytest.approx(list(mean_target(vectors)))
    assert sorted({s.target_reward for s in after[16:]}) == sorted(set(vectors))

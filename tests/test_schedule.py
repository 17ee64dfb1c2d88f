"""Reward-target schedules: hand-computed values, post-processing order, resume determinism."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from pydantic import ValidationError

from online_dt.config import ScheduleConfig
from online_dt.loop import schedule as sch
from online_dt.loop.reward_stats import RewardStats
from online_dt.loop.schedule import (
    SCHEDULES,
    ScheduleState,
    next_target,
    sample_targets,
)

EMPTY = RewardStats.empty()


def run(cfg: ScheduleConfig, stats_seq, state: ScheduleState | None = None) -> list[float]:
    """Targets of consecutive iterations, one per entry of ``stats_seq``."""
    state = state or ScheduleState.initial(cfg)
    out = []
    for stats in stats_seq:
        t, state = next_target(cfg, state, stats)
        out.append(t)
    return out


def stats_of(*rewards: float, k: int = 32) -> RewardStats:
    return RewardStats.from_rewards(list(rewards), k)


# ---------------------------------------------------------------------------------------------
# RewardStats
# ---------------------------------------------------------------------------------------------


def test_reward_stats_fields():
    s = RewardStats.from_rewards([0.3, -1.0, 2.0, 0.5], k=2)
    assert s.count == 4
    assert s.max == 2.0
    assert s.mean == pytest.approx(0.45)
    assert s.top_k == (2.0, 0.5)
    assert list(s.sorted_rewards) == [-1.0, 0.3, 0.5, 2.0]
    assert not s.sorted_rewards.flags.writeable
    assert list(s.top(10)) == [2.0, 0.5, 0.3, -1.0]


def test_reward_stats_empty_and_errors():
    e = RewardStats.from_rewards([], k=3)
    assert (e.count, e.max, e.mean, e.top_k) == (0, None, None, ())
    with pytest.raises(ValueError, match="empty"):
        e.quantile(0.5)
    with pytest.raises(ValueError, match="finite"):
        RewardStats.from_rewards([0.0, float("nan")], k=1)
    with pytest.raises(ValueError, match="k must be"):
        RewardStats.from_rewards([0.0], k=0)
    with pytest.raises(ValueError, match="q must be"):
        stats_of(1.0).quantile(1.5)


@pytest.mark.parametrize("q", [0.0, 0.1, 0.37, 0.5, 0.9, 0.999, 1.0])
def test_quantile_matches_numpy_linear(q):
    rewards = np.random.default_rng(0).normal(size=1001)
    s = RewardStats.from_rewards(rewards, k=4)
    assert s.quantile(q) == pytest.approx(float(np.quantile(rewards, q)), abs=1e-12)


def test_reward_stats_large_buffer():
    rewards = np.random.default_rng(1).uniform(-1, 1, size=100_000)
    s = RewardStats.from_rewards(rewards, k=32)
    assert s.count == 100_000
    assert s.top_k == tuple(sorted(rewards, reverse=True)[:32])


# ---------------------------------------------------------------------------------------------
# each schedule's raw value
# ---------------------------------------------------------------------------------------------


def test_constant():
    cfg = ScheduleConfig(kind="constant", value=0.3)
    assert run(cfg, [EMPTY, stats_of(5.0), EMPTY]) == [0.3, 0.3, 0.3]


def test_linear_ramps_then_holds():
    cfg = ScheduleConfig(kind="linear", start=-1.0, end=1.0, iterations=4)
    assert run(cfg, [EMPTY] * 7) == pytest.approx([-1.0, -0.5, 0.0, 0.5, 1.0, 1.0, 1.0])


def test_quantile_hand_computed_with_rising_q():
    # rewards 0..4: the q-th quantile is at position 4q; q = 0.5, 0.6, 0.7, 0.8, 0.9, 0.9
    cfg = ScheduleConfig(kind="quantile", q_start=0.5, q_end=0.9, iterations=4)
    stats = stats_of(3.0, 0.0, 4.0, 1.0, 2.0)
    assert run(cfg, [stats] * 6) == pytest.approx([2.0, 2.4, 2.8, 3.2, 3.6, 3.6])


def test_quantile_rising_q_gives_rising_target_on_fixed_buffer():
    cfg = ScheduleConfig(kind="quantile", q_start=0.1, q_end=1.0, iterations=9)
    stats = RewardStats.from_rewards(np.random.default_rng(2).normal(size=500), k=8)
    targets = run(cfg, [stats] * 12)
    assert all(b > a for a, b in itertools.pairwise(targets[:10]))
    assert targets[9] == targets[10] == targets[11] == stats.max


def test_max_plus_margin():
    cfg = ScheduleConfig(kind="max_plus_margin", margin=0.05)
    assert run(cfg, [stats_of(0.1, 0.7, 0.3), stats_of(0.9)]) == pytest.approx([0.75, 0.95])


def test_topk_within_mean_and_mean_plus_std_of_top_k():
    rewards = np.random.default_rng(3).normal(size=400)
    top = np.sort(rewards)[-10:]
    lo, hi = float(top.mean()), float(top.mean() + top.std())
    cfg = ScheduleConfig(kind="topk", k=10, seed=5)
    targets = run(cfg, [RewardStats.from_rewards(rewards, 10)] * 50)
    assert all(lo <= t <= hi for t in targets)
    # the U(0, 1) draw changes with the iteration and covers the interval
    assert len(set(targets)) == 50
    assert min(targets) < lo + 0.2 * (hi - lo) and max(targets) > hi - 0.2 * (hi - lo)


def test_topk_hand_computed_cases():
    # identical top rewards: std 0, the target is their mean
    cfg = ScheduleConfig(kind="topk", k=3)
    assert run(cfg, [stats_of(-5.0, 2.0, 2.0, 2.0)]) == [2.0]
    # fewer rewards than k: all of them are used; top = [1, 3], mean 2, std 1
    cfg = ScheduleConfig(kind="topk", k=32)
    (t,) = run(cfg, [stats_of(1.0, 3.0)])
    assert 2.0 <= t <= 3.0


@pytest.mark.parametrize("kind", ["quantile", "max_plus_margin", "topk"])
def test_empty_buffer_gives_start(kind):
    cfg = ScheduleConfig(kind=kind, start=0.25)
    assert run(cfg, [EMPTY, EMPTY]) == [0.25, 0.25]
    # then follows the data, and post-processing still applies to the empty-buffer value
    assert run(cfg, [EMPTY, stats_of(0.8, 0.8)])[1] >= 0.8
    clamped = ScheduleConfig(kind=kind, start=0.25, min_target=0.4)
    assert run(clamped, [EMPTY]) == [0.4]


@pytest.mark.parametrize("kind", ["constant", "linear"])
def test_empty_buffer_does_not_affect_data_free_schedules(kind):
    cfg = ScheduleConfig(kind=kind, value=0.7, start=0.1, end=0.1)
    assert run(cfg, [EMPTY]) == [0.7 if kind == "constant" else 0.1]


# ---------------------------------------------------------------------------------------------
# post-processing: cap, monotone, clamp and their order
# ---------------------------------------------------------------------------------------------


def test_max_increase_caps_rises_but_not_the_first_target():
    cfg = ScheduleConfig(kind="linear", start=0.0, end=1.0, iterations=1, max_increase=0.3)
    assert run(cfg, [EMPTY] * 6) == pytest.approx([0.0, 0.3, 0.6, 0.9, 1.0, 1.0])
    first = ScheduleConfig(kind="constant", value=5.0, max_increase=0.1)
    assert run(first, [EMPTY]) == [5.0]


def test_max_increase_does_not_limit_decreases():
    cfg = ScheduleConfig(kind="max_plus_margin", margin=0.0, max_increase=0.1)
    assert run(cfg, [stats_of(1.0), stats_of(0.2)]) == [1.0, 0.2]


def test_monotone_never_lowers_the_target():
    seq = [stats_of(1.0), stats_of(0.5), stats_of(1.5)]
    free = ScheduleConfig(kind="max_plus_margin", margin=0.0)
    mono = ScheduleConfig(kind="max_plus_margin", margin=0.0, monotone=True)
    assert run(free, seq) == [1.0, 0.5, 1.5]
    assert run(mono, seq) == [1.0, 1.0, 1.5]


def test_clamp_bounds():
    cfg = ScheduleConfig(
        kind="linear", start=-2.0, end=2.0, iterations=4, min_target=-1.0, max_target=1.0
    )
    assert run(cfg, [EMPTY] * 5) == [-1.0, -1.0, 0.0, 1.0, 1.0]


def test_clamp_is_applied_after_the_cap():
    # previous 0, raw 1, cap to 0.1, then clamp up to min_target 0.5 (clamp first would give 0.1)
    cfg = ScheduleConfig(kind="constant", value=1.0, max_increase=0.1, min_target=0.5)
    t, _ = next_target(cfg, ScheduleState(iteration=1, previous_target=0.0), EMPTY)
    assert t == 0.5


def test_clamp_is_applied_after_monotone():
    # previous 0.9 above max_target 0.6 (e.g. the bound was lowered on resume): monotone lifts the
    # raw 0.2 to 0.9, the final clamp wins and gives 0.6
    cfg = ScheduleConfig(kind="constant", value=0.2, monotone=True, max_target=0.6)
    t, _ = next_target(cfg, ScheduleState(iteration=3, previous_target=0.9), EMPTY)
    assert t == 0.6


def test_cap_and_monotone_together_clip_to_previous_plus_cap():
    cfg = ScheduleConfig(kind="constant", value=0.0, max_increase=0.1, monotone=True)
    for raw, expected in [(0.0, 0.5), (0.55, 0.55), (2.0, 0.6)]:
        t, _ = next_target(cfg.model_copy(update={"value": raw}), ScheduleState(1, 0.5), EMPTY)
        assert t == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------
# spread samples
# ---------------------------------------------------------------------------------------------


def test_sample_targets_uniform_within_spread_and_clamped():
    cfg = ScheduleConfig(spread=0.2, seed=1)
    xs = sample_targets(cfg, 0.5, 2000, ScheduleState(iteration=3))
    assert len(xs) == 2000 and all(0.3 <= x <= 0.7 for x in xs)
    assert np.mean(xs) == pytest.approx(0.5, abs=0.02)
    assert min(xs) < 0.32 and max(xs) > 0.68
    clamped = ScheduleConfig(spread=0.2, max_target=0.6)
    ys = sample_targets(clamped, 0.5, 500, 0)
    assert max(ys) == 0.6 and min(ys) >= 0.3


def test_sample_targets_with_calibration_probes():
    cfg = ScheduleConfig(spread=0.1, probe_fraction=0.25, probe_min=-1.0)
    xs = np.array(sample_targets(cfg, 0.8, 400, ScheduleState(iteration=2)))
    # 100 probes uniform in [-1, 0.8] (about 94 of them below the spread's 0.7), 300 in
    # [0.7, 0.9]
    probes = xs < 0.7
    assert 85 <= probes.sum() <= 100
    assert xs.min() >= -1.0 and abs(xs[probes].mean() - (-0.15)) < 0.12
    assert ((xs[~probes] >= 0.7) & (xs[~probes] <= 0.9)).all()
    assert sample_targets(cfg, 0.8, 400, ScheduleState(iteration=2)) == xs.tolist()
    no_spread = ScheduleConfig(probe_fraction=0.5)
    ys = np.array(sample_targets(no_spread, 0.5, 10, 0))
    assert (ys == 0.5).sum() == 5 and (ys < 0.5).sum() == 5


def test_sample_targets_without_spread_and_edge_cases():
    cfg = ScheduleConfig(spread=0.0, min_target=0.0)
    assert sample_targets(cfg, -0.3, 3, ScheduleState()) == [0.0, 0.0, 0.0]
    assert sample_targets(ScheduleConfig(spread=0.1), 0.0, 0, 7) == []
    with pytest.raises(ValueError, match="n must be"):
        sample_targets(cfg, 0.0, -1, 0)
    with pytest.raises(TypeError):
        sample_targets(cfg, 0.0, 1, "seed")  # type: ignore[arg-type]


def test_sample_targets_deterministic_per_state_and_stream():
    cfg = ScheduleConfig(spread=0.5, seed=3)
    a = sample_targets(cfg, 0.0, 8, ScheduleState(iteration=2))
    assert a == sample_targets(cfg, 0.0, 8, ScheduleState(iteration=2, previous_target=1.0))
    assert a != sample_targets(cfg, 0.0, 8, ScheduleState(iteration=3))
    assert a != sample_targets(cfg, 0.0, 8, ScheduleState(iteration=2), stream=1)
    assert a != sample_targets(cfg.model_copy(update={"seed": 4}), 0.0, 8, ScheduleState(2))
    assert sample_targets(cfg, 0.0, 8, 11) == sample_targets(cfg, 0.0, 8, 11)
    rng = np.random.default_rng(0)
    assert sample_targets(cfg, 0.0, 4, rng) != sample_targets(cfg, 0.0, 4, rng)


# ---------------------------------------------------------------------------------------------
# determinism and resume
# ---------------------------------------------------------------------------------------------


def buffer_at(iteration: int) -> RewardStats:
    """A buffer whose rewards improve with the iteration (deterministic)."""
    rng = np.random.default_rng(100 + iteration)
    rewards = rng.normal(0.1 * iteration, 0.3, size=50 * (iteration + 1))
    return RewardStats.from_rewards(rewards, k=16)


def trajectory(cfg, state, start, stop):
    out = []
    for i in range(start, stop):
        t, state = next_target(cfg, state, buffer_at(i))
        out.append((t, sample_targets(cfg, t, 5, state)))
    return out, state


@pytest.mark.parametrize("kind", ["topk", "quantile", "linear"])
def test_resume_from_json_reproduces_the_trajectory(kind):
    cfg = ScheduleConfig(kind=kind, k=16, spread=0.1, max_increase=0.15, monotone=True, seed=7)
    full, _ = trajectory(cfg, ScheduleState.initial(cfg), 0, 10)

    head, state4 = trajectory(cfg, ScheduleState.initial(cfg), 0, 4)
    assert state4.iteration == 4
    restored = ScheduleState.from_dict(json.loads(json.dumps(state4.to_dict())))
    assert restored == state4
    tail, _ = trajectory(cfg, restored, 4, 10)

    assert head + tail == full
    assert len({t for t, _ in full}) > 1  # the trajectory actually moves


def test_resume_with_lost_previous_target_would_differ():
    # guards the test above: dropping the previous target (no cap, no monotone) changes the run
    cfg = ScheduleConfig(kind="topk", k=16, spread=0.1, max_increase=0.05, monotone=True, seed=7)
    full, _ = trajectory(cfg, ScheduleState.initial(cfg), 0, 10)
    tail, _ = trajectory(cfg, ScheduleState(iteration=4, seed=7), 4, 10)
    assert tail != full[4:]


def test_seed_changes_topk_trajectory():
    a = ScheduleConfig(kind="topk", k=16, seed=0)
    b = ScheduleConfig(kind="topk", k=16, seed=1)
    stats = [buffer_at(i) for i in range(5)]
    assert run(a, stats) == run(a, stats)
    assert run(a, stats) != run(b, stats)


def test_state_serialisation_and_validation():
    s = ScheduleState(iteration=3, previous_target=0.1 + 0.2, seed=-4)
    d = json.loads(json.dumps(s.to_dict()))
    assert ScheduleState.from_dict(d) == s
    with pytest.raises(ValueError, match="version"):
        ScheduleState.from_dict({**d, "version": 99})
    with pytest.raises(ValueError, match="keys"):
        ScheduleState.from_dict({**d, "extra": 1})
    with pytest.raises(ValueError, match="iteration"):
        ScheduleState.from_dict({**d, "iteration": -1})
    with pytest.raises(ValueError, match="previous_target"):
        ScheduleState.from_dict({**d, "previous_target": "0.3"})


def test_state_seed_must_match_config():
    cfg = ScheduleConfig(kind="constant", seed=1)
    _, state = next_target(cfg, ScheduleState.initial(cfg), EMPTY)
    assert state.seed == 1
    with pytest.raises(ValueError, match="seed"):
        next_target(cfg.model_copy(update={"seed": 2}), state, EMPTY)


# ---------------------------------------------------------------------------------------------
# config errors and the registry
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "exponential"},
        {"q_start": 0.9, "q_end": 0.5},
        {"q_end": 1.5},
        {"min_target": 1.0, "max_target": 0.0},
        {"iterations": 0},
        {"k": 0},
        {"spread": -0.1},
        {"margin": -0.1},
        {"max_increase": 0.0},
        {"warmup": 3},
    ],
)
def test_invalid_config_is_a_validation_error(bad):
    with pytest.raises(ValidationError):
        ScheduleConfig(**bad)


def test_unregistered_kind_and_non_finite_target_raise():
    cfg = ScheduleConfig().model_copy(update={"kind": "exponential"})
    with pytest.raises(ValueError, match="unknown schedule kind"):
        next_target(cfg, ScheduleState(), EMPTY)
    # configs reject NaN when loaded; a config built around validation still cannot leak one
    with pytest.raises(ValueError, match="finite"):
        ScheduleConfig(kind="constant", value=float("nan"))
    nan_cfg = ScheduleConfig(kind="constant").model_copy(update={"value": float("nan")})
    with pytest.raises(ValueError, match="non-finite"):
        next_target(nan_cfg, ScheduleState(), EMPTY)


def test_registry_accepts_a_plain_function(monkeypatch):
    def previous_plus_one(cfg, iteration, stats, previous, rng):
        return 0.0 if previous is None else previous + 1.0

    monkeypatch.setitem(SCHEDULES, "plus_one", previous_plus_one)
    cfg = ScheduleConfig(max_target=2.5).model_copy(update={"kind": "plus_one"})
    assert run(cfg, [EMPTY] * 4) == [0.0, 1.0, 2.0, 2.5]
    assert set(SCHEDULES) >= {"constant", "linear", "quantile", "max_plus_margin", "topk"}
    assert SCHEDULES["topk"] is sch.topk

"""``online-dt eval`` of a run with several objectives: the target grid, the achievable rule,
the summary (hypervolume checked by hand), the grid evaluation with fakes, and the command on a
tiny trained two-objective run (JSON, PNG, table; the errors for mismatched targets and
``--grid`` on a one-reward run)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import yaml

from online_dt.config import ObjectiveConfig
from online_dt.eval.objectives import achievable, grid_targets
from online_dt.eval.objectives_rows import evaluate_grid, objective_row, summarize_grid
from online_dt.eval.objectives_table import format_objectives_summary, format_objectives_table
from online_dt.rollout.sampler import SamplingParams
from online_dt.samples import Rollout

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
A = ObjectiveConfig(name="a", low=-1.0, high=1.0)  # half-width 1, centre 0
B = ObjectiveConfig(name="b", low=0.0, high=10.0)  # half-width 5, centre 5
AB = [A, B]


# ---------------------------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------------------------


def test_grid_targets_span_the_buffer_percentiles():
    buffer = np.stack([np.linspace(0.0, 1.0, 101), np.linspace(2.0, 8.0, 101)], axis=1)
    buffer = np.vstack([buffer, [[np.nan, 5.0]]])  # a row without a full vector is ignored
    grid = grid_targets(AB, buffer, 3)
    assert len(grid) == 3**2 and all(isinstance(t, tuple) and len(t) == 2 for t in grid)
    # axis m: the 10th to the 90th percentile of objective m, evenly; the last varies fastest
    expected = [(a, b) for a in (0.1, 0.5, 0.9) for b in (2.6, 5.0, 7.4)]
    assert np.allclose(grid, expected)
    # one point per axis: the middle of the span
    assert np.allclose(grid_targets(AB, buffer, 1), [(0.5, 5.0)])
    # M = 3, 2 per axis: 8 corners
    c = ObjectiveConfig(name="c", low=0.0, high=1.0)
    assert len(grid_targets([A, B, c], None, 2)) == 8


def test_grid_targets_without_a_buffer_use_the_configured_ranges():
    for empty in (None, np.zeros((0, 2)), [[np.inf, 1.0]]):
        grid = np.array(grid_targets(AB, empty, 2))
        # low + 10 % to high - 10 % of each range
        assert np.allclose(grid, [(-0.8, 1.0), (-0.8, 9.0), (0.8, 1.0), (0.8, 9.0)])
    with pytest.raises(ValueError, match="per_axis"):
        grid_targets(AB, None, 0)
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        grid_targets(AB, np.zeros((4, 3)), 2)
    with pytest.raises(ValueError, match="no objectives"):
        grid_targets([], None, 2)


def test_achievable_counts_buffer_samples_near_the_target():
    rng = np.random.default_rng(0)
    near = np.array([0.0, 5.0]) + rng.uniform(-0.02, 0.02, size=(5, 2))  # 5 samples at (0, 5)
    few = np.tile([0.5, 2.0], (4, 1))  # only 4 at (0.5, 2)
    buffer = np.vstack([near, few])
    targets = [
        (0.0, 5.0),  # 5 samples within 0.1 (normalised): achievable
        (0.05, 5.4),  # normalised distance 0.05 and 0.08 (0.4 / 5) from (0, 5): still
        (0.15, 5.0),  # 0.15 away in a (half-width 1): none within 0.1
        (0.0, 5.8),  # 0.16 away in b (0.8 / 5): none
        (0.5, 2.0),  # 4 samples: fewer than 5
    ]
    assert achievable(targets, buffer, AB) == [True, True, False, False, False]
    assert achievable(targets, buffer, AB, min_count=4)[4] is True
    assert achievable(targets, buffer, AB, radius=0.2)[2:4] == [True, True]
    # the radius is inclusive (L-infinity distance <= radius): exactly 0.1 away counts
    assert achievable([(0.6, 2.0)], few, AB, min_count=4) == [True]
    assert achievable(targets, None, AB) == [False] * 5
    with pytest.raises(ValueError, match="radius"):
        achievable(targets, buffer, AB, radius=0.0)
    with pytest.raises(ValueError, match="vector of 2"):
        achievable([0.5], buffer, AB)


# ---------------------------------------------------------------------------------------------
# rows and summary
# ---------------------------------------------------------------------------------------------


def constant_row(target, achieved, is_achievable):
    """A row whose 4 samples all achieve ``achieved``."""
    return objective_row(
        target,
        AB,
        ["p"] * 4,
        ["x"] * 4,
        [[1, 2]] * 4,
        [achieved] * 4,
        is_achievable=is_achievable,
    )


def test_objective_row():
    row = objective_row(
        (0.5, 6.0),
        AB,
        ["p"] * 4,
        ["a", "b", "c", "d"],
        [[1, 2, 3], [1, 2, 4], [5], [1]],
        [(0.0, 5.0), (1.0, 5.0), (0.5, 7.0), (0.5, 7.0)],
        is_achievable=True,
        examples=2,
    )
    assert row["target"] == [0.5, 6.0] and row["target_normalised"] == [0.5, 0.2]
    assert row["achieved_mean"] == pytest.approx([0.5, 6.0])
    a, b = row["objectives"]["a"], row["objectives"]["b"]
    assert a["abs_error"] == pytest.approx(0.0) and b["abs_error"] == pytest.approx(0.0)
    assert a["p10"] == pytest.approx(0.15) and a["p90"] == pytest.approx(0.85)
    assert b["p10"] == pytest.approx(5.0) and b["p90"] == pytest.approx(7.0)
    assert row["within_goal"] and row["achievable"] and row["count"] == 4
    assert row["distinct_2"] == pytest.approx(3 / 4)
    assert row["samples"][1] == {"prompt": "p", "completion": "b", "rewards": [1.0, 5.0]}
    off = constant_row((0.0, 5.0), (0.3, 4.0), False)
    assert off["objectives"]["a"]["abs_error_normalised"] == pytest.approx(0.3)
    assert off["objectives"]["b"]["abs_error"] == pytest.approx(1.0)
    assert off["objectives"]["b"]["abs_error_normalised"] == pytest.approx(0.2)  # 1 / 5
    assert off["max_abs_error_normalised"] == pytest.approx(0.3) and not off["within_goal"]
    with pytest.raises(ValueError, match="2 floats per sample"):
        objective_row((0, 0), AB, ["p"], ["x"], [[1]], [(1.0,)], is_achievable=True)
    with pytest.raises(ValueError, match="lengths differ"):
        objective_row((0, 0), AB, ["p"], ["x", "y"], [[1]], [(1.0, 2.0)], is_achievable=True)


def test_summary_by_hand():
    rows = [
        # achieved (0, 7.5): normalised (0, 0.5); errors 0.05 and 0.25 / 5 = 0.05: within 0.1
        constant_row((0.05, 7.25), (0.0, 7.5), True),
        # achieved (0.5, 5): normalised (0.5, 0); errors 0.3 and 0: not within
        constant_row((0.8, 5.0), (0.5, 5.0), True),
        # exact, but not achievable: counts only in within_goal_all; dominated by both above
        constant_row((-0.5, 2.5), (-0.5, 2.5), False),
    ]
    # the buffer: normalised (0.5, 0.5) and (-0.9, -0.9), the second dominated
    buffer = [[0.5, 7.5], [-0.9, 0.5]]
    s = summarize_grid(rows, AB, buffer)
    assert (s["targets"], s["achievable"], s["within_goal"], s["within_goal_all"]) == (3, 2, 1, 2)
    a, b = s["per_objective"]["a"], s["per_objective"]["b"]
    assert a["mean_abs_error_normalised"] == pytest.approx((0.05 + 0.3) / 2)
    assert a["max_abs_error_normalised"] == pytest.approx(0.3) and a["within_goal"] == 1
    assert b["mean_abs_error_normalised"] == pytest.approx(0.025)
    assert b["max_abs_error_normalised"] == pytest.approx(0.05) and b["within_goal"] == 2
    assert b["mean_abs_error"] == pytest.approx(0.125)  # reward units: (0.25 + 0) / 2
    # the achieved front: (0, 0.5) and (0.5, 0) normalised, against (-1, -1): boxes 1 x 1.5
    # and 1.5 x 1 overlapping in 1 x 1, so 1.5 + 1.5 - 1 = 2
    assert s["achieved_front"] == [[0.0, 7.5], [0.5, 5.0]] and s["achieved_front_size"] == 2
    assert s["achieved_hypervolume"] == pytest.approx(2.0)
    # the buffer's front: (0.5, 0.5) alone, 1.5 x 1.5
    assert s["buffer_front"] == [[0.5, 7.5]] and s["buffer_front_size"] == 1
    assert s["buffer_hypervolume"] == pytest.approx(2.25) and s["buffer_samples"] == 2
    assert s["hypervolume_ratio"] == pytest.approx(2.0 / 2.25)
    assert s["hypervolume_reference"] == [-1.0, 0.0]
    # no achievable target, no buffer
    empty = summarize_grid(rows[2:], AB, None)
    assert empty["per_objective"]["a"]["mean_abs_error_normalised"] is None
    assert empty["buffer_hypervolume"] is None and empty["hypervolume_ratio"] is None
    assert empty["achieved_hypervolume"] == pytest.approx(0.5 * 0.5)  # (-0.5, -0.5)

    table = format_objectives_table(rows, AB)
    lines = table.splitlines()
    assert "target" in lines[0] and "achieved mean" in lines[0]
    assert lines[3].split()[-2:] == ["yes", "0.25"]  # achievable, distinct-2 (1 bigram of 4)
    assert "0.300!" in lines[4] and "!" not in lines[3] and lines[5].split()[-2] == "no"
    text = format_objectives_summary(s, AB)
    assert "over the 2 of 3 targets" in text and "mean 0.175  max 0.300  (1/2 within 0.1" in text
    assert "hypervolume 2.000" in text and "hypervolume 2.250" in text
    assert "within 0.1 in every objective: 1 of 2 achievable" in text
    assert "no achievable target" in format_objectives_summary(empty, AB)


class VectorEcho:
    """Completions that say their target; each rollout's target is kept."""

    backend = "fake"

    def __init__(self):
        self.calls = []

    def generate(self, prompts, targets, params):
        self.calls.append((list(prompts), list(targets), params))
        return [
            Rollout(p, f"{t[0]} {t[1] + i}", [i, i + 1, 9], [-1.0] * 3, t, 3, True, i, 0.0, 0.0)
            for i, (p, t) in enumerate(zip(prompts, targets, strict=True))
        ]


def test_evaluate_grid_with_fakes():
    sampler = VectorEcho()
    # the reward model echoes the completion: a = target a, b = target b + sample index
    rows = evaluate_grid(
        sampler,
        lambda prompts, completions: [tuple(map(float, c.split())) for c in completions],
        ["x", "y", "z"],
        [(0.0, 5.0), (0.5, 2.0)],
        4,
        lambda k: SamplingParams(seed=20 + k),
        AB,
        achievable_flags=[True, False],
        kl=lambda rollouts: [0.3] * len(rollouts),
    )
    assert [c[0] for c in sampler.calls] == [["x", "y", "z", "x"]] * 2
    assert [c[1] for c in sampler.calls] == [[(0.0, 5.0)] * 4, [(0.5, 2.0)] * 4]
    assert [c[2].seed for c in sampler.calls] == [20, 21]
    assert [r["target"] for r in rows] == [[0.0, 5.0], [0.5, 2.0]]
    assert rows[0]["achieved_mean"] == pytest.approx([0.0, 6.5])  # b: 5 + mean(0, 1, 2, 3)
    assert rows[0]["objectives"]["b"]["abs_error_normalised"] == pytest.approx(1.5 / 5)
    assert [r["achievable"] for r in rows] == [True, False]
    assert rows[1]["kl_to_base"] == pytest.approx(0.3)
    assert rows[1]["kl_to_base_per_token"] == pytest.approx(0.1)  # three tokens each
    assert all(r["seconds"] >= 0 for r in rows)
    with pytest.raises(ValueError, match="vector of 2"):
        evaluate_grid(sampler, None, ["x"], [0.5], 1, lambda k: None, AB)
    with pytest.raises(ValueError, match="achievable flags"):
        evaluate_grid(sampler, None, ["x"], [(0, 1)], 1, lambda k: None, AB, achievable_flags=[])
    with pytest.raises(ValueError, match="samples_per_target"):
        evaluate_grid(sampler, None, ["x"], [(0, 1)], 0, lambda k: None, AB)


def test_cli_parses_vector_targets_with_negative_values():
    from online_dt.cli import build_parser

    args = build_parser().parse_args(
        ["eval", "run", "--targets", "-0.5,-4", "0.2", "1e-1,-2.5", "--grid", "2"]
    )
    assert args.targets == [(-0.5, -4.0), 0.2, (0.1, -2.5)] and args.grid == 2
    for bad in (["--targets", "0.5,nan"], ["--grid", "0"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["eval", "run", *bad])


# ---------------------------------------------------------------------------------------------
# the buffer's rewards
# ---------------------------------------------------------------------------------------------


def write_buffer(run, rewards, shard_size=4):
    """Persist samples with these achieved rewards (floats, or tuples: one per objective) in
    ``run/buffer``, 3 samples per append (one iteration each)."""
    from online_dt.config import ReplayBufferConfig
    from online_dt.replay.buffer import ReplayBuffer
    from online_dt.samples import Sample

    buf = ReplayBuffer(ReplayBufferConfig(shard_size=shard_size), run / "buffer")
    for start in range(0, len(rewards), 3):
        buf.append(
            [
                Sample(
                    prompt="p",
                    completion="c",
                    achieved_reward=r,
                    target_reward=r if isinstance(r, float) else (0.0,) * len(r),
                    policy_version=0,
                    iteration=start // 3,
                    created_at=0.0,
                    scored_at=0.0,
                    completion_tokens=1,
                )
                for r in rewards[start : start + 3]
            ]
        )


def test_buffer_rewards_of_scalar_and_vector_shards(tmp_path):
    from online_dt.eval.objectives import buffer_reward_vectors
    from online_dt.eval.source import EvalError, buffer_rewards

    scalar, vector = tmp_path / "scalar", tmp_path / "vector"
    values = [0.1 * i - 0.4 for i in range(10)]
    write_buffer(scalar, values)
    got = buffer_rewards(scalar)
    assert got.shape == (10,) and got.dtype == np.float64
    assert np.array_equal(got, values)  # id order, across 3 shards

    vectors = [(0.1 * i, -float(i), 0.5 + 0.01 * i) for i in range(10)]
    write_buffer(vector, vectors)
    got = buffer_rewards(vector)
    assert got.shape == (10, 3) and got.dtype == np.float64
    assert np.array_equal(got, np.array(vectors))  # every objective, not only the first

    # nothing persisted
    for empty in (None, tmp_path / "nothing"):
        assert buffer_rewards(empty).shape == (0,)
    (tmp_path / "no-samples" / "buffer").mkdir(parents=True)
    assert buffer_rewards(tmp_path / "no-samples").shape == (0,)

    # the multi-objective evaluation's view: [N, M], checked against the objectives
    assert buffer_reward_vectors(vector, 3).tolist() == got.tolist()
    assert buffer_reward_vectors(tmp_path / "nothing", 3).shape == (0, 3)
    assert buffer_reward_vectors(None, 2).shape == (0, 2)
    with pytest.raises(EvalError, match="one reward per sample, but the config names 2"):
        buffer_reward_vectors(scalar, 2)
    with pytest.raises(EvalError, match="3 rewards per sample, but the config names 2"):
        buffer_reward_vectors(vector, 2)


def test_buffer_rewards_leave_out_rows_without_a_full_vector():
    import pyarrow as pa

    from online_dt.eval.source import _full_vectors

    column = pa.chunked_array(
        [[[1.0, 2.0], None, [3.0]], [[4.0, None], [5.0, 6.0], [float("nan"), 1.0]]]
    )
    assert _full_vectors(column).tolist() == [[1.0, 2.0], [5.0, 6.0]]
    assert _full_vectors(pa.chunked_array([[None, None]], type=pa.list_(pa.float64()))) is None
    assert _full_vectors(pa.chunked_array([[[], []]], type=pa.list_(pa.float64()))) is None
    assert _full_vectors(pa.chunked_array([], type=pa.list_(pa.float64()))) is None


# ---------------------------------------------------------------------------------------------
# the command on a tiny trained two-objective run
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def objective_run(tmp_path_factory):
    """A 2-iteration in-process run of a tiny random GPT-2 conditioned on sentiment and
    brevity (SentimentBrevityReward, max 8 words), about 5 s on 2 cores."""
    from online_dt.config import OnlineRunConfig
    from online_dt.loop.plan import base_model_path, execute, plan_run
    from online_dt.loop.workers import local_workers
    from tests.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("objective-run")
    base = build_tiny_model(root / "gpt2")
    cfg = OnlineRunConfig.model_validate(
        {
            "model": {"name_or_path": str(base), "device": "cpu"},
            "sampler": {"backend": "hf"},
            "sampling": {"max_new_tokens": 8},
            "training": {"batch_size": 8, "lr": 1e-3},
            "conditioning": {
                "mode": "scalar",
                "objectives": [
                    {"name": "sentiment", "low": -1.0, "high": 1.0},
                    {"name": "brevity", "low": -8.0, "high": 0.0},
                ],
            },
            "reward_model": {
                "kind": "custom",
                "class_path": "online_dt.rewards.multi:SentimentBrevityReward",
                "kwargs": {"max_words": 8},
            },
            "schedule": {"kind": "pareto"},
            "prompts": {"source": "embedded", "limit": 16},
            "online": {
                "run_dir": str(root / "run"),
                "iterations": 2,
                "prompts_per_iteration": 8,
                "samples_per_prompt": 2,
                "train_steps_per_iteration": 2,
                "kl_samples": 4,
            },
            "dashboard": {"enabled": False},
        }
    )
    plan = plan_run(cfg, None)
    workers = local_workers(plan.cfg, base_model_path(plan.cfg), plan.run.path, None)
    execute(plan, workers, progress=False)
    return root / "run"


def finite_numbers(value, where="report"):
    """Every number in a JSON value, with its path, asserting none is None (non-finite)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from finite_numbers(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from finite_numbers(v, f"{where}[{i}]")
    else:
        assert value is not None, where
        if isinstance(value, float):
            assert math.isfinite(value), where
            yield value


def test_run_eval_on_an_objective_run(objective_run, tmp_path):
    from online_dt.eval.objectives import buffer_reward_vectors
    from online_dt.eval.run import run_eval
    from online_dt.eval.run_objectives import REFERENCE_SKIPPED

    out = tmp_path / "eval"
    report = run_eval(objective_run, grid=2, samples_per_target=6, out_dir=out, seed=3)
    assert report["kind"] == "objectives" and report["grid_points"] == 2
    assert [o["name"] for o in report["objectives"]] == ["sentiment", "brevity"]
    assert report["reference"] is None and report["reference_error"] == REFERENCE_SKIPPED
    assert report["kl_error"] is None and report["iteration"] == 1
    buffer = buffer_reward_vectors(objective_run, 2)
    assert report["buffer"]["samples"] == len(buffer) == 2 * 8 * 2
    cfg_objectives = [ObjectiveConfig.model_validate(o) for o in report["objectives"]]
    assert [r["target"] for r in report["rows"]] == [
        list(t) for t in grid_targets(cfg_objectives, buffer, 2)
    ]
    for row in report["rows"]:
        assert row["count"] == 6 and isinstance(row["achievable"], bool)
        assert len(list(finite_numbers(row))) > 20  # every number finite, KL included
        assert row["kl_to_base"] is not None and row["kl_to_base_per_token"] is not None
        for name, o in row["objectives"].items():
            assert o["p10"] <= o["achieved_mean"] <= o["p90"], name
            assert -8.0 <= o["achieved_mean"] <= 1.0
    summary = report["summary"]
    assert summary["targets"] == 4 and summary["buffer_samples"] == len(buffer)
    assert 0.0 <= summary["achieved_hypervolume"] <= 4.0
    assert summary["buffer_hypervolume"] is not None and summary["buffer_hypervolume"] > 0
    written = json.loads((out / "objectives.json").read_text())
    assert written["rows"] == json.loads(json.dumps(report["rows"]))
    assert list(finite_numbers(written["summary"]))  # strict JSON, no None
    png = (out / "objectives.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 20_000
    assert not (out / "calibration.json").exists()
    assert not list(out.glob(".*tmp"))


def test_cli_eval_of_an_objective_run(objective_run, tmp_path, capsys):
    from online_dt.cli import main

    out = tmp_path / "eval"
    argv = ["eval", str(objective_run), "--out", str(out), "--samples-per-target", "4"]
    assert main([*argv, "--targets", "-0.5,-4", "0,-2", "--no-kl"]) == 0
    text = capsys.readouterr().out
    assert "the given targets, 2 targets" in text and "sentiment" in text and "brevity" in text
    assert "calibration error, normalised" in text and "achieved front:" in text
    assert "buffer's front:" in text and "no binned-base reference" in text
    assert "objectives.json" in text and "objectives.png" in text
    report = json.loads((out / "objectives.json").read_text())
    assert [r["target"] for r in report["rows"]] == [[-0.5, -4.0], [0.0, -2.0]]
    assert report["grid_points"] is None

    # a scalar target on a run with objectives: a clear error, before any model loads
    assert main([*argv, "--targets", "0.5", "0.7"]) == 2
    err = capsys.readouterr().err
    assert "2 objectives" in err and "--targets SENTIMENT,BREVITY" in err
    assert "the number 0.5" in err
    assert main([*argv, "--targets", "0.5,-1,3"]) == 2  # three values for two objectives
    assert "vector of 2 values" in capsys.readouterr().err
    assert main([*argv, "--targets", "0.5,-1", "--grid", "2"]) == 2
    assert "not both" in capsys.readouterr().err


def test_grid_and_vector_targets_on_a_single_reward_run(objective_run, tmp_path, capsys):
    """``--grid`` and vector targets name what is wrong on a one-reward run (checked right
    after the config is read: the copied policy is never loaded)."""
    from online_dt.cli import main
    from online_dt.eval.source import EvalError

    run = tmp_path / "single"
    shutil.copytree(objective_run, run, symlinks=True)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["conditioning"]["objectives"] = []
    config["schedule"] = {"kind": "quantile"}
    config["reward_model"] = {"kind": "vader"}
    (run / "config.yaml").write_text(yaml.safe_dump(config))

    assert main(["eval", str(run), "--grid", "3"]) == 2
    err = capsys.readouterr().err
    assert "--grid" in err and "single reward" in err
    assert main(["eval", str(run), "--targets", "0.5,-3"]) == 2
    assert "must be numbers, got the vector 0.5,-3" in capsys.readouterr().err

    from online_dt.eval.run import run_eval

    with pytest.raises(EvalError, match="--grid"):
        run_eval(run, grid=2)

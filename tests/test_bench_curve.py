"""bench/conditioning_curve.py: a run's weight versions sampled at targets, and where a miss
sits across prompts."""

from __future__ import annotations

import json
import math

import pytest

from bench.conditioning_curve import main, per_prompt_quartiles, reward_stats, versions
from online_dt.config import OnlineRunConfig
from online_dt.loop.plan import base_model_path, execute, plan_run
from online_dt.loop.workers import local_workers
from tests.tiny import build_tiny_model


def test_reward_stats_by_hand():
    stats = reward_stats([-0.9, -0.75, -0.2, 0.0, 0.5], -0.8, 0.1)
    assert stats["mean"] == pytest.approx(-0.27)
    # linear interpolation between order statistics, as reward_summary (numpy) computes them
    assert stats["p10"] == pytest.approx(-0.84) and stats["p90"] == pytest.approx(0.3)
    assert stats["in_bin"] == pytest.approx(2 / 5)  # -0.9 and -0.75


def test_per_prompt_quartiles_sorts_prompts_by_the_base_fraction():
    base = [0.5, 0.0, 0.25, 0.75, 0.1, 0.9, 0.3, 0.2]
    policy = [[float(i)] for i in range(8)]  # prompt i's rewards: [i]
    out = per_prompt_quartiles(base, policy, 1.0, 0.5)
    # ascending base fraction: prompts 1 (0.0), 4 (0.1), 7 (0.2), 2 (0.25), 6, 0, 3, 5
    assert [q["prompts"] for q in out] == [2, 2, 2, 2]
    assert [q["policy_mean"] for q in out] == [2.5, 4.5, 3.0, 4.0]
    assert (out[0]["base_in_bin_min"], out[-1]["base_in_bin_max"]) == (0.0, 0.9)
    # within 0.5 of 1.0: only prompt 1's reward (1.0), in the first quartile
    assert [q["policy_in_bin"] for q in out] == [0.5, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="at least four"):
        per_prompt_quartiles(base[:3], policy[:3], 1.0, 0.5)


def test_versions_keeps_every_kth_and_the_last(tmp_path):
    for n in range(8):
        (tmp_path / f"v{n:06d}").mkdir()
    (tmp_path / "vtmp").mkdir()  # not a version
    assert [n for n, _ in versions(tmp_path, 3)] == [0, 3, 6, 7]
    with pytest.raises(FileNotFoundError):
        versions(tmp_path / "none", 1)


def test_bad_arguments_stop_before_any_sampling(tmp_path, capsys):
    for argv in (["--per-prompt", "0.3"], ["--every", "0"], ["--samples", "0"]):
        with pytest.raises(SystemExit) as e:
            main([str(tmp_path / "no-run"), "--targets", "-0.5", "0.5", *argv])
        assert e.value.code == 2  # argparse's usage error, before the run directory is read
    assert "--per-prompt 0.3 must be one of --targets" in capsys.readouterr().err


def test_curve_of_a_tiny_run(tmp_path):
    base = build_tiny_model(tmp_path / "gpt2", "gpt2")
    cfg = OnlineRunConfig.model_validate(
        {
            "model": {"name_or_path": str(base), "device": "cpu"},
            "sampler": {"backend": "hf", "keep_versions": 100},
            "sampling": {"max_new_tokens": 6},
            "training": {"batch_size": 8, "lr": 1e-3},
            "online": {
                "run_dir": str(tmp_path / "run"),
                "iterations": 3,
                "prompts_per_iteration": 4,
                "samples_per_prompt": 2,
                "train_steps_per_iteration": 2,
            },
        }
    )
    plan = plan_run(cfg, None)
    workers = local_workers(plan.cfg, base_model_path(plan.cfg), plan.run.path, None)
    execute(plan, workers, progress=False)
    out = tmp_path / "curve.json"
    argv = [str(plan.run.path), "--targets", "-0.5", "0.5", "--every", "2", "--samples", "2"]
    argv += ["--heldout-prompts", "4", "--per-prompt", "-0.5", "--base-samples", "3"]
    assert main([*argv, "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    published = sorted(int(d.name[1:]) for d in (plan.run.path / "weights").glob("v*"))
    expected = sorted({n for n in published if n % 2 == 0} | {published[-1]})
    assert [(r["version"], r["target"]) for r in data["rows"]] == [
        (v, t) for v in expected for t in (-0.5, 0.5)
    ]
    for r in data["rows"]:
        assert 0.0 <= r["in_bin"] <= 1.0 and -1.0 <= r["mean"] <= 1.0
    quartiles = data["per_prompt"]["quartiles"]
    assert [q["prompts"] for q in quartiles] == [1, 1, 1, 1]
    assert all(math.isfinite(q["policy_mean"]) for q in quartiles)
    # the last version's row at -0.5 is the mean of the four prompts' samples
    last = next(r for r in data["rows"] if r["version"] == expected[-1] and r["target"] == -0.5)
    assert last["mean"] == pytest.approx(sum(q["policy_mean"] for q in quartiles) / 4)

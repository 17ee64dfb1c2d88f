"""``bench/goals.py``: issue 12's goals scored from ``bench/peers.py`` reports."""

from __future__ import annotations

import copy
import json

import pytest

from bench.goals import Thresholds, format_summary, format_verdict, main, path_reward_at, score

TARGETS = (-0.8, -0.4, 0.0, 0.4, 0.8, 1.0)


def report(seed: int = 0) -> dict:
    """A report where online-dt meets every goal against ``grpo-b0.04``."""
    base = {"method": "base", "reward_p10": -0.85, "reward_p90": 0.85, "reward_mean": 0.0}
    grpo = {"method": "grpo-b0.04", "reward_mean": 0.99, "kl_per_completion": 90.0, "train_s": 30.0}
    odt = [
        {
            "method": "online-dt",
            "target": t,
            "reward_mean": 0.995 if t == 1.0 else t + 0.01,
            "kl_per_completion": 80.0 if t == 1.0 else 2.0,
            "train_s": 25.0,
            "nll_base_per_token": 1.55,
            "distinct_2_at_bin_size": 0.30,
        }
        for t in TARGETS
    ]
    bins = [{"center": t, "count": 400, "nll_per_token": 1.5, "distinct_2": 0.30} for t in TARGETS]
    return {"setup": {"seed": seed}, "rows": [base, grpo, *odt], "reference": {"at_targets": bins}}


def odt_row(r: dict, target: float) -> dict:
    return next(x for x in r["rows"] if x["method"] == "online-dt" and x["target"] == target)


def test_every_goal_met():
    r = report()
    v = score(r, r["rows"][1], "online-dt")
    assert (v.best_target, v.reward, v.kl) == (1.0, 0.995, 80.0)
    assert v.a_met and v.b_met and v.d_met and v.c_misses == []
    assert set(v.c_errors) == {-0.8, -0.4, 0.0, 0.4, 0.8}, "1.0 is above the base's p90"


def test_a_needs_both_more_reward_and_no_more_kl():
    r = report()
    odt_row(r, 1.0)["kl_per_completion"] = 90.5
    assert not score(r, r["rows"][1], "online-dt").a_met
    r = report()
    odt_row(r, 1.0)["reward_mean"] = 0.989
    v = score(r, r["rows"][1], "online-dt")
    assert not v.a_met and v.best_target == 1.0


def test_b_counts_nll_above_and_lost_diversity_not_nll_below():
    r = report()
    odt_row(r, 0.0)["nll_base_per_token"] = 1.61  # +0.11
    odt_row(r, 0.4)["distinct_2_at_bin_size"] = 0.28  # 0.93 of the bin's
    odt_row(r, -0.4)["nll_base_per_token"] = 1.0  # far below: not a miss by itself
    odt_row(r, 1.0)["nll_base_per_token"] = 9.0  # outside p10..p90: not scored
    v = score(r, r["rows"][1], "online-dt")
    assert [t for t, _ in v.b_misses] == [0.0, 0.4]
    assert "NLL +0.110" in v.b_misses[0][1] and "distinct-2 0.93" in v.b_misses[1][1]
    assert not v.b_met
    loose = score(r, r["rows"][1], "online-dt", Thresholds(nll_tol=0.2, distinct_ratio=0.9))
    assert loose.b_met


def test_b_without_a_reference_bin_is_not_met():
    r = report()
    r["reference"]["at_targets"][2]["count"] = 0
    v = score(r, r["rows"][1], "online-dt")
    assert v.b_unknown == [0.0] and not v.b_met


def test_c_and_d():
    r = report()
    odt_row(r, -0.8)["reward_mean"] = -0.6
    for row in r["rows"][2:]:
        row["train_s"] = 31.0
    v = score(r, r["rows"][1], "online-dt")
    assert v.c_misses == [-0.8] and v.c_errors[-0.8] == pytest.approx(0.2)
    assert not v.d_met


def test_c_slope_is_the_least_squares_slope_of_achieved_on_target():
    r = report()
    v = score(r, r["rows"][1], "online-dt")
    assert v.c_slope == pytest.approx(1.0), "every target off by the same +0.01"
    for t in (-0.8, -0.4, 0.0, 0.4, 0.8):  # drawn towards the middle: achieved = 0.9 t
        odt_row(r, t)["reward_mean"] = 0.9 * t
    odt_row(r, 1.0)["reward_mean"] = 0.5  # outside (c)'s range: not in the fit
    v = score(r, r["rows"][1], "online-dt")
    assert v.c_slope == pytest.approx(0.9)
    assert v.c_signed[-0.8] == pytest.approx(0.08) and v.c_signed[0.8] == pytest.approx(-0.08)
    assert "slope 0.900" in format_verdict(v, "grpo-b0.04")
    summary = format_summary([v, score(report(), report()["rows"][1], "online-dt")], "grpo")
    assert "calibration: slope 0.9500 ± 0.0707 over 2 runs" in summary
    assert "-0.8: +0.045" in summary and "0.8: -0.035" in summary


def test_main_pairs_peers_and_summarises(tmp_path, capsys):
    paths, peers = [], []
    for seed in (0, 1):
        r = report(seed)
        if seed == 1:
            odt_row(r, 1.0)["reward_mean"] = 0.98
        grpo_only = copy.deepcopy(r)
        grpo_only["rows"] = [r["rows"][0], r["rows"][1]]
        grpo_only["rows"][1]["reward_mean"] = 0.97
        r["rows"] = [x for x in r["rows"] if x["method"] != "grpo-b0.04"]
        paths.append(tmp_path / f"odt{seed}.json")
        peers.append(tmp_path / f"grpo{seed}.json")
        paths[-1].write_text(json.dumps(r))
        peers[-1].write_text(json.dumps(grpo_only))
    assert main([*map(str, paths), "--peer-json", *map(str, peers)]) == 0
    out = capsys.readouterr().out
    assert out.count("(a) met:") == 2, "each run against its own peer (0.97)"
    assert "online-dt over 2 runs: (a) met in 2, (b) in 2, (c) in 2" in out
    assert "reward 0.9875 ± 0.0106" in out


def test_main_refuses_a_missing_peer_row(tmp_path, capsys):
    r = report()
    r["rows"] = [x for x in r["rows"] if x["method"] != "grpo-b0.04"]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(r))
    assert main([str(path)]) == 2
    assert "has no 'grpo-b0.04' row" in capsys.readouterr().err
    assert main([str(path), "--peer-json", str(path), str(path)]) == 2


def test_the_plane_asks_for_one_target_on_or_above_each_other_method():
    r = report()
    r["rows"] += [
        {"method": "raft", "reward_mean": 0.996, "kl_per_completion": 100.0, "train_s": 20.0},
        {"method": "best-of-4", "reward_mean": 0.5, "kl_per_completion": 0.6, "train_s": 0.0},
        {"method": "grpo-b0", "reward_mean": 0.3, "kl_per_completion": 2.0, "train_s": 20.0},
    ]
    v = score(r, r["rows"][1], "online-dt")
    # grpo-b0: target 0.4 gives 0.41 at 2.0 nats; best-of-4: nothing at <= 0.6 nats
    assert v.plane == {"grpo-b0.04": True, "raft": False, "best-of-4": False, "grpo-b0": True}


def test_the_peers_path_at_the_best_targets_kl():
    path = [
        {"kl_per_completion": 10.0, "reward_mean": 0.9},
        {"kl_per_completion": 50.0, "reward_mean": 0.98},
        {"kl_per_completion": 90.0, "reward_mean": 0.99},
    ]
    assert path_reward_at(path, 5.0, 0.0) == pytest.approx(0.45), "from the base model at KL 0"
    assert path_reward_at(path, 70.0, 0.0) == pytest.approx(0.985)
    assert path_reward_at(path, 90.0, 0.0) == pytest.approx(0.99)
    assert path_reward_at(path, 90.5, 0.0) is None, "beyond the path's end"
    r = report()
    r["rows"][1]["path"] = path
    v = score(r, r["rows"][1], "online-dt")  # 0.995 at 80 nats, the path 0.9875 there
    assert v.peer_path_reward == pytest.approx(0.9875)
    r2 = report()
    odt_row(r2, 1.0)["reward_mean"] = 0.98
    r2["rows"][1]["path"] = path
    below = score(r2, r2["rows"][1], "online-dt")
    text = format_summary([v, below], "grpo-b0.04")
    assert "above grpo-b0.04's path at its KL in 1 of 2" in text

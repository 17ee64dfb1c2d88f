"""``bench/spread.py``: the spread of the rewards a conditioned policy achieves at each target."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import yaml

from bench.spread import (
    choose_prompts,
    format_table,
    main,
    slopes,
    spread_row,
    vader_compound,
    vader_raw_score,
    variance_split,
)
from tests.dashboard_run import real_run


def test_vader_raw_score_inverts_vaders_own_normalize():
    from vaderSentiment.vaderSentiment import normalize

    raw = np.array([-40.0, -5.16, -1.0, 0.0, 0.3, 1.69, 5.16, 12.0])
    compound = np.array([normalize(x) for x in raw])
    assert vader_raw_score(compound) == pytest.approx(raw, rel=1e-9, abs=1e-9)
    assert [vader_compound(x) for x in raw] == pytest.approx(compound, abs=1e-12)
    # the squash is concave above 0: the compound of a mean raw score exceeds the mean compound
    pair = vader_raw_score([0.6, 0.95])
    assert vader_compound(pair.mean()) > np.mean([0.6, 0.95])
    assert np.isfinite(vader_raw_score([1.0, -1.0])).all()  # capped, not infinite
    for bad in ([1.2], [float("nan")]):
        with pytest.raises(ValueError, match=r"\[-1, 1\]"):
            vader_raw_score(bad)
    with pytest.raises(ValueError, match="alpha"):
        vader_raw_score([0.5], alpha=0)


def test_variance_split_separates_within_from_between_prompts():
    # two prompts whose values differ only between prompts: no within-prompt variance
    total, within = variance_split([1.0, 1.0, -1.0, -1.0], 2)
    assert (total, within) == pytest.approx((1.0, 0.0))
    # the same spread inside each prompt, equal prompt means: all of it within prompts
    total, within = variance_split([1.0, -1.0, -1.0, 1.0], 2)
    assert total == pytest.approx(1.0)
    assert within == pytest.approx(2.0)  # each prompt's unbiased variance of (1, -1)
    # prompt effects of variance 1 and noise of variance 4 within prompts: 4/5 within
    rng = np.random.default_rng(0)
    values = (rng.normal(size=(20000, 1)) + 2.0 * rng.normal(size=(20000, 4))).ravel()
    total, within = variance_split(values, 4)
    assert total == pytest.approx(5.0, rel=0.03)
    assert within / total == pytest.approx(0.8, abs=0.02)
    with pytest.raises(ValueError, match="per_prompt"):
        variance_split([1.0, 2.0], 1)
    with pytest.raises(ValueError, match="whole number"):
        variance_split([1.0, 2.0, 3.0], 2)


def test_spread_row_and_slopes():
    rewards = [0.9, 0.8, 0.8, 0.3] * 2
    row = spread_row(0.8, rewards, 4, 15.0)
    assert row["mean"] == pytest.approx(0.7)
    assert row["median"] == pytest.approx(0.8)
    assert row["mean_error"] == pytest.approx(-0.1)
    assert row["median_error"] == pytest.approx(0.0)
    # equal prompts: the unbiased within-prompt variance over the population total, 4/3
    assert row["within_prompt_share"] == pytest.approx(4 / 3)
    assert row["raw_ask"] == pytest.approx(float(vader_raw_score([0.8])[0]))
    assert row["compound_of_raw_mean"] > row["mean"]  # Jensen, as the docstring says
    assert "raw_mean" not in spread_row(0.8, rewards, 4, None)
    assert math.isnan(spread_row(0.0, [0.0] * 4, 2, None)["within_prompt_share"])
    # a policy with its median on target and its mean drawn inwards at the ends
    rows = [
        spread_row(ask, [ask, ask, ask * 0.5, ask], 2, 15.0) | {"ask": ask}
        for ask in (-0.8, 0.0, 0.8)
    ]
    fitted = slopes(rows)
    assert fitted["median"] == pytest.approx(1.0)
    assert fitted["mean"] == pytest.approx(0.875)
    assert set(fitted) == {"mean", "median", "compound_of_raw_mean"}
    table_rows = [
        r | {"nll_per_token": 1.5, "bin_nll_per_token": 1.4, "bin_count": 7} for r in rows
    ]
    text = format_table(table_rows, fitted)
    assert "raw mean" in text and "slope against the ask: mean 0.875, median 1.000" in text


def test_choose_prompts_takes_bench_peers_held_out_split():
    from bench.peers import SEED_SPLIT, split_prompts
    from online_dt.util.seeds import derived_seed

    prompts = [f"p{i}" for i in range(300)]
    assert choose_prompts([*prompts, "p299"], 3, None) == ["p297", "p298", "p299"]
    _, heldout = split_prompts(prompts, 128, derived_seed(5, SEED_SPLIT))
    assert choose_prompts(prompts, 10, 5) == heldout[:10]


def test_bad_arguments_exit_before_loading_anything(capsys):
    for argv in (["x", "--samples-per-prompt", "1"], ["x", "--half-width", "0"]):
        with pytest.raises(SystemExit):
            main(argv)
    assert "--samples-per-prompt must be >= 2" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="not a run directory"):
        main(["/"])


@pytest.mark.slow
def test_raw_score_needs_a_vader_run(tmp_path_factory, embedded_model_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(real_run(tmp_path_factory, embedded_model_dir), run, symlinks=True)
    config = run / "config.yaml"
    data = yaml.safe_load(config.read_text())
    data["reward_model"] = {
        "kind": "custom",
        "class_path": "tests.custom_reward_example:LengthReward",
    }
    config.write_text(yaml.safe_dump(data))
    with pytest.raises(SystemExit, match="needs the run's reward model to be VADER"):
        main([str(run), "--raw-score", "vader"])


@pytest.mark.slow
def test_spread_of_a_real_run(tmp_path_factory, embedded_model_dir, tmp_path, capsys):
    run = real_run(tmp_path_factory, embedded_model_dir)
    out = tmp_path / "spread.json"
    argv = [str(run), "--asks", "-0.5", "0.5", "--prompts", "6", "--samples-per-prompt", "3"]
    argv += ["--reference-samples", "64", "--raw-score", "vader", "--json", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "6 prompts x 3 samples per ask" in text and "slope against the ask" in text
    report = json.loads(out.read_text())
    assert [r["ask"] for r in report["rows"]] == [-0.5, 0.5]
    for row in report["rows"]:
        for key in ("mean", "median", "std", "nll_per_token", "raw_mean", "compound_of_raw_mean"):
            assert math.isfinite(row[key]), key
        assert -1.0 <= row["p10"] <= row["median"] <= row["p90"] <= 1.0
        assert row["bin_count"] >= 0
    assert set(report["slopes"]) == {"mean", "median", "compound_of_raw_mean"}

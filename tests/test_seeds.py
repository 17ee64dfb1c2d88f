"""``bench/seeds.py``: bench/peers.py's online-dt and its GRPO peer per seed, scored by goals.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.seeds import build_parser, check_pair, main, parse_seeds, plan

ROOT = Path(__file__).resolve().parents[1]


def test_parse_seeds_takes_ranges_and_drops_repeats():
    assert parse_seeds(["0-4"]) == [0, 1, 2, 3, 4]
    assert parse_seeds(["5", "2-3", "3", "9-9"]) == [5, 2, 3, 9]
    for bad in ("x", "4-2", "1-"):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds([bad])


def test_plan_pairs_each_seed_with_its_peer_on_the_same_shared_arguments(tmp_path):
    args = build_parser().parse_args(
        [
            "--seeds",
            "3",
            "--out",
            str(tmp_path / "a"),
            "--peer-dir",
            str(tmp_path / "peers"),
            "--odt-set",
            "training.lr=1e-4",
            "--budget",
            "640",
            "--shared-arg=--eval-samples=2",
            "--targets",
            "0",
            "0.5",
        ]
    )
    args.seeds = parse_seeds(args.seeds)
    [(odt, peer)] = plan(args)
    assert odt.out == tmp_path / "a" / "online-dt-s3"
    assert peer.out == tmp_path / "peers" / "grpo-b0.04-s3" and peer.label == "grpo-b0.04"
    shared = ["--config", "configs/default.yaml", "--budget", "640", "--eval-samples=2"]
    shared += ["--seed", "3"]
    for run in (odt, peer):
        assert all(a in run.argv for a in shared), run.argv
        assert run.argv[run.argv.index("--out") + 1] == str(run.out)
    assert odt.argv[:2] == ("--methods", "online-dt") and peer.argv[:4] == (
        "--methods",
        "grpo",
        "--grpo-betas",
        "0.04",
    )
    assert "training.lr=1e-4" in odt.argv and "training.lr=1e-4" not in peer.argv
    assert odt.argv[odt.argv.index("--targets") + 1 :][:2] == ("0", "0.5")
    # without --peer-dir the peers sit beside the online-dt runs
    args.peer_dir = None
    assert plan(args)[0][1].out == tmp_path / "a" / "grpo-b0.04-s3"


def test_a_peer_made_with_another_setup_is_refused_by_name():
    setup = {"base_model": "m", "budget": 7680, "seed": 0, "sampling": {"temperature": 1.0}}
    check_pair({"setup": setup}, {"setup": dict(setup)})
    with pytest.raises(ValueError, match=r"setup\.budget differs: online-dt 7680, peer 3840"):
        check_pair({"setup": setup}, {"setup": {**setup, "budget": 3840}})
    with pytest.raises(ValueError, match=r"setup\.sampling"):
        check_pair({"setup": setup}, {"setup": {**setup, "sampling": {"temperature": 0.7}}})


def test_bad_arguments_exit_before_any_run(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--seeds", "3-1", "--out", str(tmp_path)])
    assert "empty range" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--jobs", "0", "--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_two_seeds_at_a_tiny_budget_then_resumed(tmp_path, embedded_model_dir, capsys):
    """Two seeds of bench/peers.py's online-dt and GRPO at budget 64 on configs/plain.yaml: four
    runs, each with its peers.json and run.log, and goals.py's summary over the two seeds in
    OUT/goals.txt; run again, nothing is rerun and the summary is the same."""
    import trl  # noqa: F401  (the bench extra: without TRL this fails rather than skips)

    out = tmp_path / "sweep"
    argv = [
        "--seeds",
        "0-1",
        "--out",
        str(out),
        "--config",
        str(ROOT / "configs" / "plain.yaml"),
        "--budget",
        "64",
        "--odt-set",
        "online.prompts_per_iteration=16",
        "--shared-arg=--heldout-prompts=8",
        "--shared-arg=--eval-samples=2",
        "--shared-arg=--reference-samples=64",
        "--targets",
        "-0.4",
        "0.4",
        "1.0",
    ]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    for name in ("online-dt-s0", "online-dt-s1", "grpo-b0.04-s0", "grpo-b0.04-s1"):
        report = json.loads((out / name / "peers.json").read_text())
        assert report["setup"]["budget"] == 64 and (out / name / "run.log").exists()
        assert report["setup"]["seed"] == int(name[-1])
        assert all(math.isfinite(r["reward_mean"]) for r in report["rows"])
    odt = json.loads((out / "online-dt-s1" / "peers.json").read_text())
    assert [r["target"] for r in odt["rows"] if r["method"] == "online-dt"] == [-0.4, 0.4, 1.0]
    assert "4 runs to do" in stdout
    summary = (out / "goals.txt").read_text()
    assert "summary:\n  online-dt over 2 runs: (a) met in " in summary and summary in stdout
    assert "grpo-b0.04" in summary
    assert main(argv) == 0
    assert "0 runs to do" in capsys.readouterr().out
    assert (out / "goals.txt").read_text() == summary

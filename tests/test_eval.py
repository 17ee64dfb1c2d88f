"""``online-dt eval``: target planning, the calibration table with fakes, the KL estimator
against the exact KL of a tiny model (by enumeration), and the command on a short real run
(JSON table and PNG plot)."""

from __future__ import annotations

import json
import math
import shutil
import struct

import pytest

from online_dt.eval.calibration import (
    calibration_row,
    evaluate_calibration,
    format_calibration_table,
    plan_targets,
)
from online_dt.eval.source import EvalError, resolve_source
from online_dt.rollout.sampler import SamplingParams
from online_dt.samples import Rollout
from tests.dashboard_run import ITERATIONS, real_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROW_FIELDS = ("target", "mean", "std", "p10", "median", "p90", "calibration_error")
ROW_FIELDS += ("distinct_1", "distinct_2", "kl_to_base")


# ---------------------------------------------------------------------------------------------
# pure pieces
# ---------------------------------------------------------------------------------------------


def test_plan_targets_marks_and_adds_extrapolation():
    assert plan_targets([0.5, -0.5, 0.0], 0.8, 0.25) == [
        (-0.5, False),
        (0.0, False),
        (0.5, False),
        (pytest.approx(1.05), True),
    ]
    # a given target already past best + margin: nothing added, it is the extrapolation
    assert plan_targets([0.0, 1.5], 0.8, 0.25) == [(0.0, False), (1.5, True)]
    # every target above the best is an extrapolation, even without the added one
    assert plan_targets([0.0, 0.9], 0.8, None) == [(0.0, False), (0.9, True)]
    # no buffer: nothing to extrapolate from
    assert plan_targets([0.0], None, 0.25) == [(0.0, False)]
    with pytest.raises(ValueError, match="finite"):
        plan_targets([math.nan], 0.8, 0.25)
    with pytest.raises(ValueError, match="margin"):
        plan_targets([0.0], 0.8, 0.0)


def test_calibration_row():
    row = calibration_row(
        0.5,
        ["p"] * 4,
        ["a", "b", "c", "d"],
        [[1, 2, 3], [1, 2, 4], [5], [1]],
        [0.0, 0.5, 1.0, 0.5],
        examples=2,
    )
    assert row["mean"] == pytest.approx(0.5) and row["median"] == pytest.approx(0.5)
    assert row["calibration_error"] == pytest.approx(0.0)
    assert row["std"] == pytest.approx(math.sqrt(0.125))
    assert row["distinct_1"] == pytest.approx(5 / 8)  # tokens 1,2,3,4,5 of 8
    assert row["distinct_2"] == pytest.approx(3 / 4)  # (1,2) twice, (2,3), (2,4)
    assert row["count"] == 4 and len(row["samples"]) == 2
    with pytest.raises(ValueError, match="lengths differ"):
        calibration_row(0.0, ["p"], ["a", "b"], [[1]], [0.0])


def test_recalibrated_targets_achieve_what_they_ask_with_fakes():
    """A policy that achieves 0.2 + 0.5 c asked for c: measured on a grid and inverted, the
    asks achieve the targets exactly (interpolated, and mixed in expectation); asked for the
    targets themselves it misses."""
    from online_dt.eval.calibration import measure_recalibration

    sampler = EchoSampler()
    score = lambda prompts, completions: [0.2 + 0.5 * float(c) for c in completions]  # noqa: E731
    recal = measure_recalibration(
        sampler, score, ["a", "b"], [-1.0, 0.0, 1.0], lambda k: SamplingParams(seed=k)
    )
    assert [c[1] for c in sampler.calls] == [[-1.0] * 2, [0.0] * 2, [1.0] * 2]
    assert recal.counts == (2, 2, 2)
    assert recal.achieved == pytest.approx((-0.2975, 0.2025, 0.7025))
    targets = [(-0.0475, False), (0.4525, False)]  # half way between grid values
    for strategy in ("interpolate", "mix"):
        rows = evaluate_calibration(
            sampler,
            score,
            ["a", "b", "c", "d"],
            targets,
            4,
            lambda k: SamplingParams(seed=k),
            ask=lambda t, n, s=strategy: recal.conditionings(t, n, s, seed=0),
        )
        # the means: 0.2 + 0.5 (c + 0.01 i) averaged over i = 0..3
        for row, (target, _) in zip(rows, targets, strict=True):
            assert row["mean"] == pytest.approx(target + 0.5 * 0.015 - 0.5 * 0.005, abs=1e-9)
        assert sum(n for _, n in rows[0]["asked"]) == 4
    assert rows[1]["asked"] == [[0.0, 2], [1.0, 2]]
    assert "50% 0.000 + 50% 1.000" in format_calibration_table(rows)
    plain = evaluate_calibration(sampler, score, ["a"], targets, 4, lambda k: SamplingParams())
    assert abs(plain[0]["mean"] - (-0.1)) > 0.1 and "asked" not in plain[0]


class EchoSampler:
    """Completions that say their own target: 'reward <target>', with two tokens each."""

    backend = "fake"

    def __init__(self):
        self.calls = []

    def generate(self, prompts, targets, params):
        self.calls.append((list(prompts), list(targets), params))
        return [
            Rollout(p, f"{t + 0.01 * i}", [i, i + 1], [-1.0, -2.0], t, 3, True, i, 0.0, 0.0)
            for i, (p, t) in enumerate(zip(prompts, targets, strict=True))
        ]


def test_evaluate_calibration_with_fakes():
    sampler = EchoSampler()
    rows = evaluate_calibration(
        sampler,
        lambda prompts, completions: [float(c) for c in completions],
        ["a", "b", "c"],
        [(0.0, False), (1.2, True)],
        4,
        lambda k: SamplingParams(seed=10 + k),
        kl=lambda rollouts: [0.5 * r.target for r in rollouts],
    )
    # every target sees the same prompts (cycling), each with its own seed
    assert [c[0] for c in sampler.calls] == [["a", "b", "c", "a"]] * 2
    assert [c[2].seed for c in sampler.calls] == [10, 11]
    assert [r["target"] for r in rows] == [0.0, 1.2]
    assert rows[0]["mean"] == pytest.approx(0.015) and rows[1]["mean"] == pytest.approx(1.215)
    assert [r["extrapolation"] for r in rows] == [False, True]
    assert rows[1]["kl_to_base"] == pytest.approx(0.6)
    assert rows[1]["kl_to_base_per_token"] == pytest.approx(0.6 / 2)  # two tokens each
    assert rows[0]["distinct_1"] == pytest.approx(5 / 8)
    table = format_calibration_table(rows)
    assert "1.200*" in table and "extrapolation" in table and "KL" in table
    assert "reward bin" not in table  # scalar mode: no bins
    # token mode: each row says the bin its target maps to; above the bins' range is marked
    binned = evaluate_calibration(
        sampler,
        lambda prompts, completions: [float(c) for c in completions],
        ["a"],
        [(0.0, False), (1.2, True)],
        1,
        lambda k: SamplingParams(seed=k),
        describe=lambda t: {
            "bin": int(t > 0.5),
            "bins": 2,
            "low": None if t <= 0.5 else 0.5,
            "high": 0.5 if t <= 0.5 else None,
            "token": f"<|reward_{int(t > 0.5)}|>",
            "above_range": t > 1.0,
            "range": [-1.0, 1.0],
        },
    )
    assert [r["bin"]["bin"] for r in binned] == [0, 1]
    table = format_calibration_table(binned)
    assert "0/2 [-inf, 0.500)" in table and "1/2 [0.500, inf)^" in table
    assert "cannot extrapolate" in table
    with pytest.raises(ValueError, match="samples_per_target"):
        evaluate_calibration(sampler, None, ["a"], [(0.0, False)], 0, lambda k: None)


def test_resolve_source_rejects_other_directories(tmp_path):
    with pytest.raises(EvalError, match="not a directory"):
        resolve_source(tmp_path / "missing")
    with pytest.raises(EvalError, match="not a run directory"):
        resolve_source(tmp_path)


def test_kl_estimate_matches_exact_kl_by_enumeration(tmp_path):
    """kl_per_completion is the k1 estimator of KL(policy || base): per completion it is
    ``log pi(y) - log p_base(y)``, and its expectation under the policy is the exact KL,
    computed here by enumerating every completion of a tiny-vocabulary model.

    Sampling is at temperature 1 and top-p 1 in scalar mode (no banned tokens), so the
    sampler's distribution is the policy's raw distribution, the one whose logprobs the rollouts
    carry; completions stop at EOS or after L tokens, as in ``tests.exact_kl``.
    """
    import copy

    import torch

    from online_dt.config import ConditioningConfig
    from online_dt.policy.policy import RewardConditionedPolicy
    from online_dt.rollout.hf_sampler import HFSampler
    from online_dt.training.kl import kl_per_completion
    from tests.exact_kl import (
        base_next_logprobs,
        build_word_model,
        enumerate_completions,
        exact_kl,
        policy_next_logprobs,
    )

    policy = RewardConditionedPolicy.from_base(
        build_word_model(tmp_path / "words"),
        ConditioningConfig(mode="scalar"),
        attn_implementation="eager",
    ).eval()
    base_model = copy.deepcopy(policy.model).eval().requires_grad_(False)  # as the Learner does
    # the policy's weights move away from the base's, as training would move them
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in policy.model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    prompt, target, length = "a b", 0.5, 3
    prompt_ids = policy.encode([prompt])[0]
    vocab, eos = policy.model.config.vocab_size, policy.eos_token_id
    assert vocab == 8 and len(prompt_ids) == 2
    space = enumerate_completions(
        policy_next_logprobs(policy, prompt_ids, target),
        base_next_logprobs(base_model, prompt_ids),
        vocab,
        eos,
        length,
    )
    probs = [math.exp(sum(c.policy_logprobs)) for c in space]
    # the enumeration is the whole sample space under both models
    assert len(space) == 1 + 7 + 49 * 8
    assert math.fsum(probs) == pytest.approx(1.0, abs=1e-9)
    assert math.fsum(math.exp(sum(c.base_logprobs)) for c in space) == pytest.approx(1, abs=1e-9)
    kl = exact_kl(space)
    assert kl > 0.5  # clearly apart (about 1.6 nats)

    def as_rollouts(completions, logprobs_of):
        return [
            Rollout(
                prompt=prompt,
                completion="",
                token_ids=list(c.token_ids),
                logprobs=logprobs_of(c),
                target=target,
                policy_version=0,
                finished=c.token_ids[-1] == eos,
                prompt_index=0,
                created_at=0.0,
                generate_seconds=0.0,
            )
            for c in completions
        ]

    # (a) sampled completions: kl_per_completion is log pi(y) - log p_base(y), completion by
    # completion (mixed lengths, so rows are padded, and several chunks)
    n = 4000
    made = HFSampler(policy, batch_size=n).generate(
        [prompt], [target], SamplingParams(n=n, max_new_tokens=length, seed=0)
    )
    by_ids = {c.token_ids: c for c in space}
    assert {len(r.token_ids) for r in made} == {1, 2, 3}
    assert any(r.finished for r in made) and not all(r.finished for r in made)
    # the sampler's logprobs are the policy's raw ones (a KeyError: it made a non-completion)
    sampled = [lp for r in made for lp in r.logprobs]
    assert sampled == pytest.approx(
        [lp for r in made for lp in by_ids[tuple(r.token_ids)].policy_logprobs], abs=1e-5
    )
    # float32 logits: each token's logprob is good to ~1e-6 nats, a completion's sum to ~1e-5
    ours = kl_per_completion(policy, base_model, made, batch_size=500)
    assert ours == pytest.approx([by_ids[tuple(r.token_ids)].log_ratio for r in made], abs=1e-4)

    # (b) the exact expectation: every completion's k1 value weighted by pi(y) is the exact KL
    # (each value good to 1e-4 as above, and the weights sum to 1)
    every = kl_per_completion(policy, base_model, as_rollouts(space, lambda c: c.policy_logprobs))
    assert math.fsum(p * k for p, k in zip(probs, every, strict=True)) == pytest.approx(
        kl, abs=1e-4
    )
    # ... and the mean over the sampler's completions estimates it: the k1 values' standard
    # deviation under pi is known exactly, so the mean of n samples is within 4.5 standard
    # errors of the KL except with probability below 1e-5 (and the seed fixes the draw)
    std = math.sqrt(
        math.fsum(p * (c.log_ratio - kl) ** 2 for p, c in zip(probs, space, strict=True))
    )
    stderr = std / math.sqrt(n)
    assert kl > 20 * stderr  # the check separates this KL from 0 (and from half of it)
    assert sum(ours) / n == pytest.approx(kl, abs=4.5 * stderr)

    # negative control: with the policy's distribution equal to the base's (the base model's
    # own logprobs as the policy side) the exact KL and every k1 value are 0. The conditioned
    # policy itself never equals the base, which does not see the reward slot.
    same = enumerate_completions(
        base_next_logprobs(base_model, prompt_ids),
        base_next_logprobs(base_model, prompt_ids),
        vocab,
        eos,
        length,
    )
    assert exact_kl(same) == pytest.approx(0.0, abs=1e-12)
    zeros = kl_per_completion(policy, base_model, as_rollouts(same, lambda c: c.base_logprobs))
    assert zeros == pytest.approx([0.0] * len(same), abs=1e-4)


# ---------------------------------------------------------------------------------------------
# the command on a short real run
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def run_copy(tmp_path_factory, embedded_model_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(real_run(tmp_path_factory, embedded_model_dir), run, symlinks=True)
    return run


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow
def test_cli_eval_writes_table_and_plot(run_copy, capsys):
    from online_dt.cli import main
    from online_dt.replay.export import export_dataset

    argv = ["eval", str(run_copy), "--targets", "-0.5", "0", "0.5", "1.5"]
    assert main([*argv, "--samples-per-target", "12", "--reference-samples", "96"]) == 0
    out = capsys.readouterr().out
    assert "extrapolation" in out and "calibration.json" in out
    # the binned-base reference: one line under each target's row
    lines = out.splitlines()
    under = [lines[i + 1] for i, line in enumerate(lines) if line.startswith("   0.000 ")]
    assert len(under) == 1 and under[0].startswith("  ^ base, r in [-0.100, 0.100]: n=")
    assert sum(line.startswith("  ^ base, r in [") for line in lines) == 4

    report = json.loads((run_copy / "eval" / "calibration.json").read_text())
    best = max(export_dataset(run_copy / "buffer")["achieved_reward"])
    assert report["buffer"]["best_reward"] == pytest.approx(best)
    assert report["iteration"] == ITERATIONS - 1 and report["policy_version"] == ITERATIONS
    assert report["samples_per_target"] == 12 and report["backend"] == "hf"
    rows = report["rows"]
    # 1.5 lies beyond best + 0.25 (VADER <= 1), so it is the extrapolation row; none is added
    assert [r["target"] for r in rows] == [-0.5, 0.0, 0.5, 1.5]
    assert [r["extrapolation"] for r in rows] == [t > best for t in (-0.5, 0.0, 0.5, 1.5)]
    assert rows[-1]["extrapolation"] is True
    for row in rows:
        assert row["count"] == 12
        for key in ROW_FIELDS:
            assert isinstance(row[key], float) and math.isfinite(row[key]), key
        assert row["p10"] <= row["median"] <= row["p90"]
        assert 0 <= row["distinct_1"] <= 1 and 0 <= row["distinct_2"] <= 1
        assert -1 <= row["mean"] <= 1
    ref = report["reference"]
    assert report["reference_error"] is None
    assert ref["samples"] == 96 and ref["half_width"] == 0.1 and ref["prompts"] == 12
    assert [b["center"] for b in ref["at_targets"]] == [-0.5, 0.0, 0.5, 1.5]
    assert ref["at_targets"][-1]["count"] == 0  # VADER never reaches 1.4
    assert ref["at_targets"][-1]["kl_ideal_lower_bound"] is None  # inf: strict JSON
    assert sum(b["count"] for b in ref["grid"]) >= 96  # the grid's bins cover every sample
    for b in ref["grid"]:
        if b["count"]:
            assert b["kl_ideal_lower_bound"] == pytest.approx(-math.log(b["count"] / 96))
            assert 0 < b["nll_per_token"] < 20 and abs(b["reward_mean"] - b["center"]) <= 0.1

    plot = (run_copy / "eval" / "calibration.png").read_bytes()
    assert png_size(plot) == (1000, 420) and len(plot) > 20_000
    assert not list((run_copy / "eval").glob(".*tmp"))  # atomic writes leave no temp file


@pytest.mark.slow
def test_eval_of_a_checkpoint_with_default_targets(run_copy, tmp_path):
    """A checkpoint directory given directly; default targets are the buffer's p10/p50/p90
    plus best + margin, marked as the extrapolation."""
    import numpy as np

    from online_dt.eval.run import run_eval
    from online_dt.replay.export import export_dataset

    checkpoint = run_copy / "checkpoints" / f"iter-{ITERATIONS - 2:06d}"
    out = tmp_path / "out"
    report = run_eval(
        checkpoint, samples_per_target=8, out_dir=out, with_kl=False, reference_samples=0
    )
    rewards = export_dataset(run_copy / "buffer")["achieved_reward"]
    expected = [*np.quantile(rewards, [0.1, 0.5, 0.9]), max(rewards) + 0.25]
    assert [r["target"] for r in report["rows"]] == pytest.approx(expected)
    assert [r["extrapolation"] for r in report["rows"]] == [False, False, False, True]
    assert all(r["kl_to_base"] is None for r in report["rows"])
    assert report["reference"] is None and report["reference_error"] is None
    assert report["iteration"] == ITERATIONS - 2
    assert (out / "calibration.json").is_file() and (out / "calibration.png").is_file()
    assert not (run_copy / "eval").exists()


@pytest.mark.slow
def test_cli_eval_with_guidance(run_copy, tmp_path, capsys):
    """``--guidance W`` samples with classifier-free guidance against the policy's mixture over
    rewards evenly spanning the buffer's (or ``--guidance-grid``'s), weighted by the buffer's
    share nearest each (or uniformly): other samples than
    unguided at the same seed, KL from the guided logprobs, recorded in the report; refused
    with the configured backend."""
    import numpy as np

    from online_dt.cli import main
    from online_dt.replay.export import export_dataset

    common = ["eval", str(run_copy), "--targets", "-0.5", "0.5", "--samples-per-target", "12"]
    common += ["--reference-samples", "0", "--no-extrapolation"]
    reports = {}
    for name, extra in {"plain": [], "guided": ["--guidance", "2"]}.items():
        out = tmp_path / name
        assert main([*common, "--out", str(out), *extra]) == 0
        reports[name] = json.loads((out / "calibration.json").read_text())
    printed = capsys.readouterr().out
    assert printed.count("guided sampling: weight 2 against the policy's own mixture") == 1
    guided, plain = reports["guided"], reports["plain"]
    rewards = export_dataset(run_copy / "buffer")["achieved_reward"]
    expected = np.linspace(min(rewards), max(rewards), 5)
    assert guided["guidance"]["weight"] == 2.0
    assert guided["guidance"]["rewards"] == pytest.approx(expected)
    nearest = np.abs(np.asarray(rewards)[:, None] - expected[None, :]).argmin(1)
    shares = np.bincount(nearest, minlength=5) / len(rewards)
    assert guided["guidance"]["prior"] == "buffer"
    assert guided["guidance"]["prior_weights"] == pytest.approx(shares)
    assert plain["guidance"] is None
    for g, p in zip(guided["rows"], plain["rows"], strict=True):
        assert math.isfinite(g["kl_to_base"]) and math.isfinite(g["mean"])
        assert (g["mean"], g["kl_to_base"]) != (p["mean"], p["kl_to_base"])
    out = tmp_path / "grid"
    argv = [*common, "--out", str(out), "--guidance", "1", "--guidance-grid", "-0.5", "0", "0.5"]
    assert main([*argv, "--guidance-prior", "uniform"]) == 0
    report = json.loads((out / "calibration.json").read_text())
    assert report["guidance"]["rewards"] == [-0.5, 0.0, 0.5]
    assert report["guidance"]["prior_weights"] == [1.0, 1.0, 1.0]
    assert main([*common, "--guidance", "1", "--backend", "config"]) == 2
    assert "--guidance needs the HF sampler" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_eval_recalibrated(run_copy, tmp_path, capsys):
    """``--recalibrate N`` measures the policy at every grid value on N prompts, records the
    isotonic fit, and asks each target for the value where the fitted curve crosses it."""
    import numpy as np

    from online_dt.cli import main

    out = tmp_path / "recal"
    argv = ["eval", str(run_copy), "--targets", "-0.3", "0.0", "0.3", "--out", str(out)]
    argv += ["--samples-per-target", "8", "--reference-samples", "0", "--no-extrapolation"]
    assert main([*argv, "--recalibrate", "6", "--recalibration-grid", "1", "-1", "0"]) == 0
    assert "recalibrated on 18 reward-model calls (6 prompts x 3" in capsys.readouterr().out
    report = json.loads((out / "calibration.json").read_text())
    recal = report["recalibration"]
    assert recal["conditioning"] == [-1.0, 0.0, 1.0] and recal["counts"] == [6, 6, 6]
    assert recal["strategy"] == "mix" and recal["calls"] == 18
    assert np.all(np.diff(recal["achieved"]) >= 0)
    fitted = dict(zip(recal["conditioning"], recal["achieved"], strict=True))
    for row, bracket in zip(report["rows"], recal["bracket"], strict=True):
        assert sum(n for _, n in row["asked"]) == 8
        if bracket["reachable"]:  # the mix's expected reward under the fit is the target
            expected = sum(fitted[c] * n for c, n in row["asked"]) / 8
            assert expected == pytest.approx(row["target"], abs=0.5 * np.ptp(recal["achieved"]) / 8)
        else:  # out of the fit: the grid value whose measured mean came nearest
            measured = np.asarray(recal["measured"])
            nearest = recal["conditioning"][int(np.argmin(np.abs(measured - row["target"])))]
            assert [c for c, _ in row["asked"]] == [nearest]
    # --recalibration-strategy interpolate: one value per target, on the fitted line
    assert (
        main(
            [
                *argv,
                "--recalibrate",
                "6",
                "--recalibration-grid",
                "-1",
                "0",
                "1",
                "--recalibration-strategy",
                "interpolate",
            ]
        )
        == 0
    )
    report = json.loads((out / "calibration.json").read_text())
    recal = report["recalibration"]
    for row, bracket in zip(report["rows"], recal["bracket"], strict=True):
        [[asked, count]] = row["asked"]
        assert count == 8
        if bracket["reachable"]:
            achieved = np.interp(asked, recal["conditioning"], recal["achieved"])
            assert achieved == pytest.approx(row["target"], abs=1e-9)
    assert main([*argv, "--recalibrate", "2", "--recalibration-grid", "0.5"]) == 1
    assert "at least two conditioning values" in capsys.readouterr().err
    # by default: 5 values over the buffer's rewards and one step beyond each end
    from online_dt.replay.export import export_dataset

    assert main([*argv, "--recalibrate", "2"]) == 0
    rewards = export_dataset(run_copy / "buffer")["achieved_reward"]
    lo, hi = min(rewards), max(rewards)
    expected = lo + (hi - lo) / 4 * np.arange(-1, 6)
    recal = json.loads((out / "calibration.json").read_text())["recalibration"]
    assert recal["conditioning"] == pytest.approx(expected) and recal["calls"] == 14


def test_cli_eval_rejects_bad_input(tmp_path, capsys):
    from online_dt.cli import main

    assert main(["eval", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["eval", str(tmp_path), "--targets", "nan"])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        main(["eval", str(tmp_path), "--samples-per-target", "0"])
    for bad in (["--reference-samples", "-1"], ["--reference-half-width", "0"]):
        with pytest.raises(SystemExit):
            main(["eval", str(tmp_path), *bad])

"""The peer benchmark (bench/peers.py): its metrics, checked against hand counts and against the
exact KL by enumeration, and the script end to end at a tiny budget."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest

from bench.peers_metrics import (
    best_of_n_kl_bound,
    binned_reference,
    k1_kl,
    nll_per_token,
    teacher_forced_logprobs,
    word_distinct_n,
)
from tests.bench_runner import run_peers

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "plain.yaml"
"""The recipe without a warm start or the best command: the budget arithmetic, guidance and
token mode below need one (the default's warm start alone spends 3,840 calls)."""

# ---------------------------------------------------------------------------------------------
# word distinct-n
# ---------------------------------------------------------------------------------------------


def test_word_distinct_n_counts_word_ngrams_per_completion():
    texts = [" the food was good", "the food was bad ", "good"]
    # words: [the food was good] [the food was bad] [good]: 9 unigrams, 5 distinct
    assert word_distinct_n(texts, 1) == pytest.approx(5 / 9)
    # bigrams: (the food) (food was) (was good) (the food) (food was) (was bad): 6, 4 distinct
    assert word_distinct_n(texts, 2) == pytest.approx(4 / 6)
    # trigrams: (the food was) x2, (food was good), (food was bad): 4, 3 distinct
    assert word_distinct_n(texts, 3) == pytest.approx(3 / 4)
    # n-grams never cross completions: "good" + "the" would be a bigram if they did
    assert word_distinct_n(["a b", "c d"], 2) == 1.0
    # whitespace of any kind splits words, and punctuation stays part of a word
    assert word_distinct_n(["good,  good\tgood."], 1) == pytest.approx(3 / 3)
    assert word_distinct_n(["x x x x"], 1) == pytest.approx(1 / 4)
    assert word_distinct_n(["one", ""], 2) == 0.0  # no bigram at all
    with pytest.raises(ValueError):
        word_distinct_n(texts, 0)


# ---------------------------------------------------------------------------------------------
# k1 KL, NLL, best-of-n bound, binned reference (pure arithmetic)
# ---------------------------------------------------------------------------------------------


def test_k1_kl_and_nll_on_hand_numbers():
    policy = [[-0.5, -1.0], [-2.0]]
    base = [[-1.0, -1.5], [-1.0]]
    kl = k1_kl(policy, base)
    # per completion: (-1.5 + 2.5) = 1.0 and (-2 + 1) = -1.0 -> mean 0; per token 0 / 3
    assert kl.per_completion == pytest.approx(0.0)
    assert kl.per_token == pytest.approx(0.0)
    assert kl.completions == 2 and kl.tokens == 3
    assert kl.stderr_per_completion == pytest.approx(math.sqrt(2.0 / 2))
    kl = k1_kl([[-0.1, -0.1, -0.1]], [[-1.1, -0.6, -0.1]])
    assert kl.per_completion == pytest.approx(1.5) and kl.per_token == pytest.approx(0.5)
    assert nll_per_token(base) == pytest.approx(3.5 / 3)
    with pytest.raises(ValueError, match="policy logprobs"):
        k1_kl([[-1.0]], [[-1.0, -2.0]])
    with pytest.raises(ValueError, match="rows"):
        k1_kl([[-1.0]], [])
    with pytest.raises(ValueError, match="no completion tokens"):
        nll_per_token([[]])


def test_best_of_n_bound():
    assert best_of_n_kl_bound(1) == 0.0
    assert best_of_n_kl_bound(4) == pytest.approx(math.log(4) - 0.75)
    with pytest.raises(ValueError):
        best_of_n_kl_bound(0)


def test_binned_reference_selects_the_bin():
    rewards = [0.0, 0.05, 0.1, 0.5, 0.95]
    texts = ["a b", "a b", "c d", "e f", "g h"]
    logprobs = [[-1.0, -1.0], [-2.0], [-3.0, -3.0, -3.0], [-0.5], [-0.1]]
    low, high, empty = binned_reference(rewards, texts, logprobs, [0.0, 1.0, -0.5])
    assert low.count == 3 and low.fraction == pytest.approx(0.6)  # 0.0, 0.05, 0.1 (edge kept)
    assert low.reward_mean == pytest.approx(0.05)
    assert low.nll_per_token == pytest.approx(13 / 6)
    assert low.mean_tokens == pytest.approx(2.0)
    assert low.distinct_2 == pytest.approx(2 / 3)  # (a b) twice, (c d)
    assert low.kl_ideal_lower_bound == pytest.approx(-math.log(0.6))
    assert low.kl_ideal_lower_bound_per_token == pytest.approx(-math.log(0.6) / 2)
    assert high.count == 1 and high.reward_mean == pytest.approx(0.95)
    assert empty.count == 0 and math.isinf(empty.kl_ideal_lower_bound)
    assert math.isnan(empty.nll_per_token)
    (sub,) = binned_reference(rewards, texts, logprobs, [0.0], max_samples=2, seed=3)
    assert sub.count == 3 and sub.distinct_2_samples == 2
    with pytest.raises(ValueError):
        binned_reference(rewards, texts, logprobs[:2], [0.0])


# ---------------------------------------------------------------------------------------------
# the k1 estimator against the exact KL by enumeration (tiny 8-word GPT-2)
# ---------------------------------------------------------------------------------------------


def test_k1_kl_with_teacher_forced_logprobs_matches_exact_kl(tmp_path):
    """The benchmark's KL of a plain causal LM (RAFT, GRPO, base): completions sampled from the
    policy with the shared sampler, both models' logprobs from ``teacher_forced_logprobs``,
    ``k1_kl`` of them. Against the exact KL(policy || base) over every completion of at most
    L tokens of a tiny 8-word GPT-2 (``tests.exact_kl``): per completion the values equal the
    enumeration's log-ratios, the pi-weighted sum over the whole space is the exact KL, and the
    sample mean is within 4.5 standard errors of it. Negative control: policy = base gives 0.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from online_dt.policy.generation import sample_unconditioned
    from tests.exact_kl import base_next_logprobs, build_word_model, enumerate_completions, exact_kl

    path = build_word_model(tmp_path / "words")
    tokenizer = AutoTokenizer.from_pretrained(path)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    policy = copy.deepcopy(base)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move the policy away from the base, as training would
        for p in policy.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    prompt_ids = tokenizer.encode("a b", add_special_tokens=False)
    vocab, eos, length = base.config.vocab_size, tokenizer.eos_token_id, 3
    assert vocab == 8 and len(prompt_ids) == 2
    space = enumerate_completions(
        base_next_logprobs(policy, prompt_ids),
        base_next_logprobs(base, prompt_ids),
        vocab,
        eos,
        length,
    )
    probs = [math.exp(sum(c.policy_logprobs)) for c in space]
    assert math.fsum(probs) == pytest.approx(1.0, abs=1e-9)
    kl = exact_kl(space)
    assert kl > 0.5

    # the enumeration's own logprobs: teacher_forced_logprobs gives the same per token
    every_ids = [list(c.token_ids) for c in space]
    prompts = [prompt_ids] * len(space)
    pol = teacher_forced_logprobs(policy, prompts, every_ids, batch_size=97)
    bas = teacher_forced_logprobs(base, prompts, every_ids, batch_size=97)
    flat = [x for row in pol for x in row]
    assert flat == pytest.approx([x for c in space for x in c.policy_logprobs], abs=1e-5)
    # the pi-weighted k1 values over the whole space are the exact KL
    values = [k1_kl([p], [b]).per_completion for p, b in zip(pol, bas, strict=True)]
    assert math.fsum(p * v for p, v in zip(probs, values, strict=True)) == pytest.approx(
        kl, abs=1e-4
    )

    # sampled completions (the benchmark's sampler), their k1 mean within 4.5 standard errors
    n = 4000
    sampled = sample_unconditioned(
        policy,
        [prompt_ids] * n,
        max_new_tokens=length,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
        generator=torch.Generator().manual_seed(0),
        batch_size=1000,
    )
    assert {len(t) for t in sampled.token_ids} == {1, 2, 3}
    est = k1_kl(
        teacher_forced_logprobs(policy, [prompt_ids] * n, sampled.token_ids),
        teacher_forced_logprobs(base, [prompt_ids] * n, sampled.token_ids),
    )
    by_ids = {c.token_ids: c for c in space}
    assert est.tokens == sum(len(t) for t in sampled.token_ids)
    std = math.sqrt(
        math.fsum(p * (c.log_ratio - kl) ** 2 for p, c in zip(probs, space, strict=True))
    )
    stderr = std / math.sqrt(n)
    assert kl > 20 * stderr
    assert est.per_completion == pytest.approx(kl, abs=4.5 * stderr)
    assert est.stderr_per_completion == pytest.approx(stderr, rel=0.1)
    mean_len = sum(p * len(c.token_ids) for p, c in zip(probs, space, strict=True))
    assert est.per_token == pytest.approx(kl / mean_len, rel=0.1)
    assert all(tuple(t) in by_ids for t in sampled.token_ids)

    # negative control: the base as its own policy has KL 0 exactly, sample by sample
    same = k1_kl(
        teacher_forced_logprobs(base, [prompt_ids] * n, sampled.token_ids),
        teacher_forced_logprobs(base, [prompt_ids] * n, sampled.token_ids),
    )
    assert same.per_completion == 0.0 and same.per_token == 0.0
    assert exact_kl(
        enumerate_completions(
            base_next_logprobs(base, prompt_ids),
            base_next_logprobs(base, prompt_ids),
            vocab,
            eos,
            length,
        )
    ) == pytest.approx(0.0, abs=1e-12)
    # negative control of the check itself: the same estimator on samples drawn from the BASE
    # (not from the policy) estimates -KL(base || policy) < 0, and the 4.5-standard-error check
    # above rejects it
    off = sample_unconditioned(
        base,
        [prompt_ids] * n,
        max_new_tokens=length,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
        generator=torch.Generator().manual_seed(0),
        batch_size=1000,
    )
    wrong = k1_kl(
        teacher_forced_logprobs(policy, [prompt_ids] * n, off.token_ids),
        teacher_forced_logprobs(base, [prompt_ids] * n, off.token_ids),
    )
    assert wrong.per_completion < 0
    assert abs(wrong.per_completion - kl) > 4.5 * stderr


def test_teacher_forced_logprobs_rejects_bad_input(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from tests.exact_kl import build_word_model

    model = AutoModelForCausalLM.from_pretrained(
        build_word_model(tmp_path / "w"), dtype=torch.float32
    )
    with pytest.raises(ValueError, match="prompts but"):
        teacher_forced_logprobs(model, [[1]], [])
    with pytest.raises(ValueError, match="non-empty"):
        teacher_forced_logprobs(model, [[1]], [[]])


# ---------------------------------------------------------------------------------------------
# the prompt split and the budget
# ---------------------------------------------------------------------------------------------


def test_split_prompts_is_seeded_and_disjoint():
    from bench.peers import split_prompts

    prompts = [f"p{i}" for i in range(50)] + ["p3"]  # a duplicate is dropped
    train, held = split_prompts(prompts, 10, seed=7)
    assert len(held) == 10 and len(train) == 40
    assert not set(train) & set(held) and set(train) | set(held) == set(prompts)
    assert split_prompts(prompts, 10, seed=7) == (train, held)
    assert split_prompts(prompts, 10, seed=8) != (train, held)
    for bad in (0, 50):
        with pytest.raises(ValueError, match="cannot be split"):
            split_prompts(prompts, bad, seed=0)


def test_plan_budget_default_scale_and_units():
    from bench.peers import METHODS, build_parser, plan_budget

    def budget(*argv):
        return plan_budget(build_parser().parse_args(["--config", str(CONFIG), *argv]), METHODS)

    assert budget() == 30 * 64 * 4  # the default config's iterations x prompts x samples
    assert budget("--scale", "0.5") == 3840
    assert budget("--scale", "0.25") == 2048  # rounded to whole online-dt iterations (256)
    assert budget("--budget", "512") == 512
    with pytest.raises(SystemExit, match="online-dt iterations"):
        budget("--budget", "128")
    with pytest.raises(SystemExit, match="grpo steps"):
        budget("--budget", "256", "--grpo-batch", "48")
    assert (
        budget(
            "--budget",
            "128",
            "--odt-set",
            "online.prompts_per_iteration=16",
            "--raft-prompts",
            "16",
        )
        == 128
    )


def test_the_default_budget_counts_the_configs_warm_start():
    from bench.peers import METHODS, build_parser, plan_budget

    def budget(*argv):
        config = str(ROOT / "configs" / "calibrated.yaml")
        return plan_budget(build_parser().parse_args(["--config", config, *argv]), METHODS)

    assert budget() == 512 * 14 + 2 * 64 * 4  # warm start, then its two iterations
    assert budget("--scale", "2") == 512 * 14 + 32 * 256  # the iterations fill the rest
    assert budget("--scale", "0.5") == 512 * 14 + 256  # at least one iteration
    # the warm start switched off: the whole default budget goes to iterations
    off = [f"online.{k}" for k in ("warm_start_prompts=null", "warm_start_lr=null")]
    off += ["online.warm_start_samples_per_prompt=0", "online.warm_start_steps=0"]
    assert budget(*(a for k in off for a in ("--odt-set", k))) == 30 * 256


def test_odt_modes_and_row_labels():
    from bench.peers import build_parser, is_odt, odt_method, odt_modes, odt_overrides

    def modes(*argv):
        return odt_modes(build_parser().parse_args(["--config", str(CONFIG), *argv]))

    assert modes() == ["scalar"]  # the config's own mode
    token_config = str(ROOT / "configs" / "token.yaml")
    assert odt_modes(build_parser().parse_args(["--config", token_config])) == ["token"]
    with pytest.raises(SystemExit, match=r"no-such\.yaml"):
        odt_modes(build_parser().parse_args(["--config", "no-such.yaml"]))
    assert modes("--odt-set", "conditioning.mode=token") == ["token"]
    assert modes("--odt-modes", "token,scalar") == ["token", "scalar"]
    assert modes("--odt-modes", "token", "--odt-set", "conditioning.mode=token") == ["token"]
    with pytest.raises(SystemExit, match="choose from"):
        modes("--odt-modes", "tokens")
    with pytest.raises(SystemExit, match="disagree"):
        modes("--odt-modes", "scalar,token", "--odt-set", "conditioning.mode=token")
    assert [odt_method(m) for m in ("scalar", "token")] == ["online-dt", "online-dt-token"]
    assert is_odt("online-dt") and is_odt("online-dt-token") and not is_odt("grpo-b0")
    args = build_parser().parse_args(["--odt-set", "conditioning.num_reward_tokens=4"])
    over = odt_overrides(args, "token")
    assert over["conditioning"] == {"num_reward_tokens": 4, "mode": "token"}
    assert over["sampler"]["backend"] == "hf"


def test_table_notes_the_bin_of_each_token_row():
    from bench.peers import format_table

    row = {
        "reward_mean": 0.1,
        "reward_p10": 0.0,
        "reward_p90": 0.2,
        "distinct_1": 0.1,
        "distinct_2": 0.3,
        "distinct_3": 0.6,
        "kl_per_token": 0.1,
        "kl_per_completion": 2.0,
        "nll_base_per_token": 1.6,
        "train_reward_calls": 128,
        "eval_reward_calls": 16,
        "train_s": 1.0,
    }
    rows = [
        {"method": "online-dt", "target": 0.9, "bin": None, **row},
        {
            "method": "online-dt-token",
            "target": 0.9,
            "bin": {"bin": 7, "bins": 8, "low": 0.871, "high": None, "above_range": True},
            **row,
        },
    ]
    table = format_table(rows, None).splitlines()
    assert table[2].startswith("online-dt ") and table[3].startswith("online-dt-token")
    assert table[4].startswith("  ^ reward bin 7/8 [0.871, inf) above the rewards")
    assert len(table) == 5  # no bin line under the scalar row


# ---------------------------------------------------------------------------------------------
# training paths (--path-evals)
# ---------------------------------------------------------------------------------------------


def test_path_points_are_evenly_spaced_whole_units():
    from bench.peers import path_points

    assert path_points(30, 0) == []
    assert path_points(30, 5) == [5, 10, 15, 20, 25]  # 1/6 .. 5/6 of 30 rounds
    assert path_points(120, 6) == [17, 34, 51, 69, 86, 103]  # round(120 i / 7)
    assert path_points(4, 2) == [1, 3]
    assert path_points(2, 2) == [1]  # round(2/3) = round(4/3) = 1: repeats dropped
    assert path_points(1, 3) == []  # 0 and the final unit are never path points
    for bad in ((0, 1), (3, -1)):
        with pytest.raises(ValueError):
            path_points(*bad)


def test_isolated_rng_restores_torch_python_and_numpy_streams():
    import random

    import numpy as np
    import torch

    from bench.peers import isolated_rng

    def draws():
        return torch.rand(3).tolist(), random.random(), np.random.rand()

    torch.manual_seed(5), random.seed(5), np.random.seed(5)
    expected = draws()
    torch.manual_seed(5), random.seed(5), np.random.seed(5)
    with isolated_rng():
        inside = draws()
        torch.rand(100), random.random(), np.random.rand(7)
    assert inside == expected  # the same state inside
    assert draws() == expected  # and after, as if nothing had run inside
    # negative control: without the context the streams move on
    torch.manual_seed(5), random.seed(5), np.random.seed(5)
    draws()
    assert draws() != expected


def test_table_prints_the_path_under_its_row():
    from bench.peers import format_table

    row = {
        "method": "raft",
        "reward_mean": 0.9,
        "reward_p10": 0.5,
        "reward_p90": 1.0,
        "distinct_1": 0.1,
        "distinct_2": 0.2,
        "distinct_3": 0.3,
        "kl_per_token": 2.0,
        "kl_per_completion": 80.0,
        "nll_base_per_token": 5.0,
        "train_reward_calls": 512,
        "eval_reward_calls": 16,
        "train_s": 1.0,
    }
    point = {"kl_per_token": 0.1, "nll_base_per_token": 1.6, "distinct_2": 0.4}
    path = [
        {"train_reward_calls": 256, "reward_mean": 0.25, "kl_per_completion": 3.04, **point},
        {"train_reward_calls": 512, "reward_mean": 0.9, "kl_per_completion": 80.0, **point},
    ]
    table = format_table([row, row | {"path": path}], None).splitlines()
    assert len(table) == 5  # header, rule, the row without a path, the row, its path
    assert (
        table[4]
        == "  ^ path (train calls -> r_mean @ KL/cmp): 256 -> 0.250 @ 3.0, 512 -> 0.900 @ 80.0"
    )


@pytest.mark.slow
def test_path_evals_leave_training_unchanged(tmp_path, embedded_model_dir):
    """bench/peers.py with --path-evals 2 ends RAFT and GRPO (beta 0 and 0.04) at the same final
    metrics and training history as with --path-evals 0 (4 RAFT rounds / GRPO steps at budget
    128, so the path points are after units 1 and 3); the path's reward calls are counted
    under <method>:path, outside the budget; each path ends with the final evaluation."""
    import trl  # noqa: F401  (the bench extra; without it this fails rather than skips)

    def run(evals: int) -> tuple[dict, str]:
        args = ["--methods=raft,grpo", "--budget=128", "--grpo-batch=32", "--raft-prompts=8"]
        args += [f"--config={CONFIG}"]
        args += ["--heldout-prompts=8", "--eval-samples=2", "--reference-samples=0"]
        return run_peers([*args, f"--path-evals={evals}"], tmp_path / f"out{evals}")

    timings = {"train_s", "eval_s", "wall_s", "argv"}
    path_keys = {"path", "path_eval_s", "path_reward_calls"}

    def strip(value, drop):
        if isinstance(value, dict):
            return {k: strip(v, drop) for k, v in value.items() if k not in drop}
        if isinstance(value, list):
            return [strip(v, drop) for v in value]
        return value

    plain, plain_out = run(0)
    pathed, pathed_out = run(2)
    assert [r["method"] for r in pathed["rows"]] == ["base", "raft", "grpo-b0", "grpo-b0.04"]
    assert not any(path_keys & set(r) for r in plain["rows"]) and "^ path" not in plain_out
    # the training is the same: every final metric and the training history
    assert strip(pathed["rows"], timings | path_keys) == strip(plain["rows"], timings)
    phases = pathed["setup"]["reward_calls_by_phase"]
    for row in pathed["rows"][1:]:
        name = row["method"]
        assert row["train_reward_calls"] == 128 and phases[f"{name}:train"] == 128
        assert row["path_reward_calls"] == phases[f"{name}:path"] == 2 * 16
        path = row["path"]
        assert [p["train_reward_calls"] for p in path] == [32, 96, 128]
        assert path[-1] == {k: row[k] for k in path[-1]}  # the final evaluation, last
        assert set(path[0]) == {
            "train_reward_calls",
            "reward_mean",
            "kl_per_token",
            "kl_per_completion",
            "nll_base_per_token",
            "distinct_2",
        }
        assert all(math.isfinite(v) for p in path for v in p.values())
        assert row["path_eval_s"] > 0
    assert pathed["setup"]["train_calls_differ_from_budget"] == []
    assert pathed_out.count("^ path (train calls -> r_mean @ KL/cmp): 32 -> ") == 3


# ---------------------------------------------------------------------------------------------
# the script end to end
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_peers_script_at_a_tiny_budget(tmp_path, embedded_model_dir):
    """bench/peers.py at budget 128 (8 held-out prompts x 2 samples): every method's row is in
    peers.json with finite metrics, the trained methods spent exactly the budget on train
    prompts, and peers.png was written."""
    # the bench extra (scripts/setup.sh installs it): without TRL this fails rather than skips
    import trl  # noqa: F401

    out = tmp_path / "out"
    report, stdout = run_peers(
        [
            f"--config={CONFIG}",
            "--odt-modes=scalar,token",
            "--budget=128",
            "--heldout-prompts=8",
            "--eval-samples=2",
            "--reference-samples=64",
            "--odt-set=online.prompts_per_iteration=16",
            "--raft-prompts=16",
            "--num-targets=3",
            "--odt-guidance=0.5",
            "--odt-guidance-reference",
            "mean",
            "mixture-buffer",
        ],
        out,
    )
    rows = report["rows"]
    methods = [r["method"] for r in rows]
    assert (
        methods
        == ["base", "best-of-4", "raft", "grpo-b0", "grpo-b0.04"]
        + ["online-dt"] * 3
        + ["online-dt-guided0.5"] * 3
        + ["online-dt-guided0.5-mixture-buffer"] * 3
        + ["online-dt-token"] * 3
        + ["online-dt-token-guided0.5"] * 3
        + ["online-dt-token-guided0.5-mixture-buffer"] * 3
    )
    for r in rows:
        for key in (
            "reward_mean",
            "reward_p10",
            "reward_p90",
            "distinct_1",
            "distinct_2",
            "distinct_3",
            "kl_per_token",
            "kl_per_completion",
            "nll_base_per_token",
            "train_s",
            "eval_s",
        ):
            assert isinstance(r[key], float) and math.isfinite(r[key]), (r["method"], key)
        assert r["samples"] == 16
    trained = [
        r
        for r in rows
        if r["method"] in ("raft", "grpo-b0", "grpo-b0.04") or r["method"].startswith("online-dt")
    ]
    assert all(r["train_reward_calls"] == 128 for r in trained)
    assert rows[0]["train_reward_calls"] == 0 and rows[0]["kl_per_token"] == 0.0
    assert rows[1]["eval_reward_calls"] == 16 * 4 and rows[1]["kl_kind"].startswith("analytic")
    odt, guided, mixed, token = rows[5:8], rows[8:11], rows[11:14], rows[14:17]
    # the guided rows: the same policy at the same targets, guided away from the base's mean
    assert [r["target"] for r in guided] == [r["target"] for r in odt]
    assert all(
        r["guidance"] == {"weight": 0.5, "reference": pytest.approx(rows[0]["reward_mean"])}
        for r in guided + rows[17:20]
    )
    # or against the policy's mixture over the default grid, weighted by its buffer's rewards
    for r in mixed + rows[20:]:
        pairs = r["guidance"]["reference"]
        assert [p[0] for p in pairs] == [-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0]
        assert sum(p[1] for p in pairs) == pytest.approx(1.0) and min(p[1] for p in pairs) >= 0
    assert all("guidance" not in r for r in odt + token)
    assert odt[0]["target"] == pytest.approx(rows[0]["reward_mean"])
    assert odt[-1]["target"] == pytest.approx(1.0)
    # token mode beside scalar mode, at the same targets, each row with the bin it maps to
    assert [r["target"] for r in token] == [r["target"] for r in odt]
    assert all(r["bin"] is None for r in odt) and all(r["mode"] == "token" for r in token)
    assert [r["bin"]["bin"] for r in token] == sorted(r["bin"]["bin"] for r in token)
    assert token[0]["config"]["conditioning"]["mode"] == "token"
    assert "online-dt-token" in stdout and "^ reward bin" in stdout
    assert len(report["reference"]["at_targets"]) == 3
    assert report["setup"]["train_calls_differ_from_budget"] == []
    # the split: 742 embedded openings, 8 held out
    assert report["setup"]["train_prompts"] + report["setup"]["heldout_prompts"] == 742
    assert (out / "peers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "online-dt" in stdout and "^ base |r-" in stdout
    # the goals' verdicts against GRPO beta 0.04, for scalar and token mode
    goals = stdout.split("issue 12's goals (bench/goals.py):\n")[1]
    assert goals.startswith("  online-dt: (a) ") and "\n  online-dt-token: (a) " in goals
    assert "on or above on the plane: best-of-4 " in goals


@pytest.mark.slow
def test_peers_recalibrated_rows(tmp_path, embedded_model_dir):
    """``--odt-recalibrate N``: each online-dt row gets a ``-recal`` twin asked for what the
    fit (N train prompts per grid value, counted apart from the training budget) says achieves
    the target: a mix of the two grid values around it (the default strategy). The scalar grid
    is eval's default, 5 values over the buffer's rewards and one step beyond each end."""
    import numpy as np

    report, stdout = run_peers(
        [
            f"--config={CONFIG}",
            "--methods=online-dt",
            "--odt-modes=scalar,token",
            "--budget=128",
            "--heldout-prompts=8",
            "--eval-samples=2",
            "--reference-samples=0",
            "--odt-set=online.prompts_per_iteration=16",
            "--targets",
            "-0.2",
            "0.2",
            "--odt-recalibrate=4",
        ],
        tmp_path / "out",
    )
    rows = report["rows"][1:]
    assert [r["method"] for r in rows] == ["online-dt"] * 2 + ["online-dt-recal"] * 2 + [
        "online-dt-token"
    ] * 2 + ["online-dt-token-recal"] * 2
    assert all(r["train_reward_calls"] == 128 and r["eval_reward_calls"] == 16 for r in rows)
    for r in rows[2:4] + rows[6:]:
        recal = r["recalibration"]
        fit = recal["fit"]
        scalar = r["mode"] == "scalar"
        assert recal["strategy"] == "mix"
        if scalar:  # 5 values over the buffer's rewards and one step beyond each end
            steps = np.diff(fit["conditioning"])
            assert len(fit["conditioning"]) == 7 and steps == pytest.approx([steps[0]] * 6)
            assert fit["conditioning"][0] < -1.0 and fit["conditioning"][-1] > 1.0  # VADER
        else:  # one midpoint per reward bin
            assert len(fit["conditioning"]) == len(rows[4]["config"]["bin_edges"]) + 1
        assert fit["counts"] == [4] * len(fit["conditioning"])
        assert recal["calls"] == 4 * len(fit["conditioning"])
        assert sorted(fit["achieved"]) == fit["achieved"]
        b = recal["bracket"]
        if b["reachable"] and b["low"] != b["high"]:  # the fit passes through the target
            lo, hi = (fit["achieved"][fit["conditioning"].index(c)] for c in (b["low"], b["high"]))
            assert lo + b["share_high"] * (hi - lo) == pytest.approx(r["target"])
    assert "^ recalibrated on 28 train-prompt calls" in stdout

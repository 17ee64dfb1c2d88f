"""The binned-base reference (``online_dt.eval.reference``): its reward grid, its console line,
and :func:`base_reference` on a tiny-vocabulary model against the exact bin probability and
NLL computed by enumerating every completion (``tests.exact_kl``)."""

from __future__ import annotations

import math

import pytest

from online_dt.eval.calibration import format_calibration_table
from online_dt.eval.reference import (
    MIN_BIN_COUNT,
    base_reference,
    reward_grid,
)
from online_dt.eval.reference_report import reference_line


def test_reward_grid_tiles_the_observed_range():
    assert reward_grid([-0.93, 0.97], 0.1) == pytest.approx(
        [-1.0, -0.8, -0.6, -0.4, -0.2, 0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    )
    # a level lands on a bin centre exactly when it is a multiple of the step
    assert reward_grid([0.4, 0.6], 0.1) == pytest.approx([0.4, 0.6])
    assert reward_grid([2.01, 2.9], 0.25) == pytest.approx([2.0, 2.5, 3.0])
    with pytest.raises(ValueError, match="half_width"):
        reward_grid([0.0], 0.0)
    with pytest.raises(ValueError, match="finite"):
        reward_grid([0.0, math.nan], 0.1)
    with pytest.raises(ValueError, match="finite"):
        reward_grid([], 0.1)


def _bin(center: float, count: int, fraction: float) -> dict:
    return {
        "center": center,
        "half_width": 0.1,
        "count": count,
        "fraction": fraction,
        "reward_mean": center + 0.01 if count else None,
        "nll_per_token": 1.5 if count else None,
        "mean_tokens": 10.0 if count else None,
        "distinct_2": 0.8 if count else None,
        "distinct_2_samples": count,
        "kl_ideal_lower_bound": -math.log(fraction) if count else None,
        "kl_ideal_lower_bound_per_token": -math.log(fraction) / 10 if count else None,
    }


def test_reference_line_under_each_calibration_row():
    reference = {"samples": 200, "at_targets": [_bin(0.0, 50, 0.25), _bin(0.9, 0, 0.0)]}
    rows = [
        {"target": t, "mean": t, "std": 0.1, "p10": t, "median": t, "p90": t}
        | {"calibration_error": 0.0, "distinct_1": 0.5, "distinct_2": 0.7}
        for t in (0.0, 0.5, 0.9)
    ]
    line = reference_line(rows[0], reference)
    assert line.startswith("  ^ base, r in [-0.100, 0.100]: n=50 (25.0%)")
    assert f"ideal KL >= {-math.log(0.25):.3f}" in line and "NLL/tok 1.500" in line
    assert reference_line(rows[1], reference) is None  # no bin at that target
    assert "none in the bin" in reference_line(rows[2], reference)
    assert reference_line(rows[0], None) is None
    table = format_calibration_table(rows, reference).splitlines()
    assert table[2].lstrip().startswith("0.000") and table[3] == line
    assert table[4].lstrip().startswith("0.500") and table[5].lstrip().startswith("0.900")
    assert "none in the bin" in table[6] and len(table) == 7
    assert format_calibration_table(rows) == "\n".join(table[:3] + table[4:6])


def test_base_reference_matches_the_exact_bin_probability(tmp_path):
    """On a tiny GPT-2 over 7 words, with the reward "share of the words that are 'a'", the
    reference's bin fraction, its -log P(bin) KL bound and its NLL per token agree with the
    exact values over every completion (4000 samples: within 4 binomial standard errors), and
    its ``at_targets`` bins are those of its grid at the same levels."""
    import torch

    from online_dt.config import SamplingConfig
    from online_dt.policy.loading import load_model_and_tokenizer
    from tests.exact_kl import WORDS, base_next_logprobs, build_word_model, enumerate_completions

    torch.manual_seed(0)
    model, tokenizer = load_model_and_tokenizer(build_word_model(tmp_path / "words"), "eager")
    model.eval().requires_grad_(False)
    prompt, length = "a b", 3
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    eos = tokenizer.eos_token_id

    def reward(words: list[str]) -> float:
        return sum(w == "a" for w in words) / len(words) if words else 0.0

    def score(prompts: list[str], texts: list[str]) -> list[float]:
        assert set(prompts) == {prompt}
        return [reward(t.split()) for t in texts]

    space = enumerate_completions(
        base_next_logprobs(model, prompt_ids),
        base_next_logprobs(model, prompt_ids),
        model.config.vocab_size,
        eos,
        length,
    )
    sampling = SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=length, batch_size=500)
    n = 4000
    ref = base_reference(
        model,
        tokenizer,
        [prompt],
        score,
        sampling,
        [0.0, 0.5, 1.0],
        samples=n,
        seed=3,
        subsample_seed=4,
        half_width=0.2,
    )
    assert ref["samples"] == n and ref["half_width"] == 0.2
    assert [b["center"] for b in ref["grid"]] == pytest.approx([0.0, 0.4, 0.8, 1.2])
    for b in ref["at_targets"]:
        inside = [
            c
            for c in space
            if abs(reward([WORDS[t - 1] for t in c.token_ids if t != eos]) - b["center"]) <= 0.2
        ]
        p = [math.exp(sum(c.base_logprobs)) for c in inside]
        exact = math.fsum(p)
        assert 0.02 < exact < 0.95  # about 0.79, 0.18 and 0.03: bins apart from each other
        se = math.sqrt(exact * (1 - exact) / n)
        assert b["fraction"] == pytest.approx(exact, abs=4 * se), b["center"]
        assert b["count"] == round(b["fraction"] * n) and b["count"] >= MIN_BIN_COUNT
        assert b["kl_ideal_lower_bound"] == pytest.approx(-math.log(b["fraction"]))
        # NLL per token of the bin: E[-log p(y) | bin] / E[len(y) | bin]
        nll = math.fsum(q * -sum(c.base_logprobs) for q, c in zip(p, inside, strict=True))
        tokens = math.fsum(q * len(c.token_ids) for q, c in zip(p, inside, strict=True))
        assert b["nll_per_token"] == pytest.approx(nll / tokens, rel=0.05), b["center"]
        assert b["kl_ideal_lower_bound_per_token"] == pytest.approx(
            b["kl_ideal_lower_bound"] / b["mean_tokens"]
        )
    grid = {round(b["center"], 6): b for b in ref["grid"]}
    assert ref["at_targets"][0] == grid[0.0]
    with pytest.raises(ValueError, match="samples"):
        base_reference(
            model, tokenizer, [prompt], score, sampling, [0.0], samples=0, seed=0, subsample_seed=0
        )

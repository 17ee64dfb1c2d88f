"""Reward models: the validation contract, VADER, a tiny local HF classifier, custom classes."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from online_dt.config import RewardModelConfig
from online_dt.rewards import (
    HFClassifierReward,
    RewardModel,
    RewardModelError,
    RewardModelLoadError,
    VaderSentimentReward,
    load_reward_model,
    score_checked,
    validate_scores,
)
from tests.tiny import build_tokenizer

PROMPTS = [f"prompt number {i}" for i in range(8)]
COMPLETIONS = [f"completion text {i}" for i in range(8)]


class FixedReward:
    """Returns whatever it was given, to test validation."""

    def __init__(self, scores):
        self.scores = scores
        self.calls = 0

    def score(self, prompts, completions):
        self.calls += 1
        return self.scores


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


def test_valid_scores_are_converted_to_python_floats():
    scores = [1, 0.5, np.float32(0.25), np.float64(-2.0), torch.tensor(3.0), np.array(4.0)]
    scores += [np.int64(7), torch.tensor([0.5])[0]]
    out = validate_scores(scores, PROMPTS, COMPLETIONS, "M")
    assert out == [1.0, 0.5, 0.25, -2.0, 3.0, 4.0, 7.0, 0.5]
    assert all(type(v) is float for v in out)
    # whole arrays and tensors are accepted too
    assert validate_scores(np.arange(8.0), PROMPTS, COMPLETIONS, "M") == [
        float(i) for i in range(8)
    ]
    assert validate_scores(torch.ones(8), PROMPTS, COMPLETIONS, "M") == [1.0] * 8


def test_nan_names_offending_samples():
    scores = [0.0] * 8
    scores[3] = math.nan
    scores[5] = np.float32("nan")
    with pytest.raises(RewardModelError) as info:
        score_checked(FixedReward(scores), PROMPTS, COMPLETIONS)
    err = info.value
    assert err.reason == "nan"
    assert err.indices == [3, 5]
    assert err.samples == [(PROMPTS[3], COMPLETIONS[3]), (PROMPTS[5], COMPLETIONS[5])]
    msg = str(err)
    assert "FixedReward" in msg and "NaN" in msg and "2 of 8" in msg
    assert "#3 'prompt number 3' -> 'completion text 3'" in msg
    assert "completion text 5" in msg
    assert "completion text 4" not in msg


def test_inf_names_offending_samples():
    scores = [0.0] * 8
    scores[6] = math.inf
    with pytest.raises(RewardModelError) as info:
        score_checked(FixedReward(scores), PROMPTS, COMPLETIONS)
    assert info.value.reason == "inf"
    assert info.value.indices == [6]
    assert "+inf" in str(info.value) and "completion text 6" in str(info.value)

    scores[6] = -math.inf
    with pytest.raises(RewardModelError, match=r"-inf for 1 of 8") as info:
        validate_scores(scores, PROMPTS, COMPLETIONS, "M")
    assert info.value.reason == "inf"


@pytest.mark.parametrize("bad", [None, "0.5", [0.1, 0.2], True])
def test_non_numbers_are_rejected(bad):
    scores = [0.0] * 8
    scores[2] = bad
    scores[7] = math.nan  # a non-number is reported first
    with pytest.raises(RewardModelError) as info:
        score_checked(FixedReward(scores), PROMPTS, COMPLETIONS)
    assert info.value.reason == "not_a_number"
    assert info.value.indices == [2]
    assert "completion text 2" in str(info.value)
    assert type(bad).__name__ in str(info.value)


@pytest.mark.parametrize("count", [7, 9, 0])
def test_wrong_count(count):
    with pytest.raises(RewardModelError) as info:
        score_checked(FixedReward([0.5] * count), PROMPTS, COMPLETIONS)
    err = info.value
    assert err.reason == "wrong_count"
    assert f"returned {count} scores for 8 samples" in str(err)
    assert err.indices == list(range(8))
    assert len(err.samples) == 8
    assert "completion text 0" in str(err)
    assert "(5 more)" in str(err)  # only a handful is shown


@pytest.mark.parametrize("bad", [0.5, "0.5", None])
def test_not_a_sequence(bad):
    with pytest.raises(RewardModelError) as info:
        score_checked(FixedReward(bad), PROMPTS, COMPLETIONS)
    assert info.value.reason == "not_a_sequence"
    assert info.value.indices == list(range(8))


def test_long_texts_are_shortened_in_messages():
    long = "x" * 500
    with pytest.raises(RewardModelError) as info:
        validate_scores([math.nan], [long], [long], "M")
    assert len(str(info.value)) < 200
    assert info.value.samples == [(long, long)]


def test_score_checked_input_checks():
    model = FixedReward([0.0] * 8)
    with pytest.raises(ValueError, match="8 prompts and 7 completions"):
        score_checked(model, PROMPTS, COMPLETIONS[:7])
    with pytest.raises(ValueError, match="single string"):
        score_checked(model, "abc", "def")
    assert model.calls == 0
    assert score_checked(model, [], []) == []
    assert model.calls == 0
    assert score_checked(model, PROMPTS, COMPLETIONS) == [0.0] * 8


def test_errors_raised_by_the_model_propagate():
    class Failing:
        def score(self, prompts, completions):
            raise RuntimeError("server down")

    with pytest.raises(RuntimeError, match="server down"):
        score_checked(Failing(), PROMPTS, COMPLETIONS)


def test_importing_rewards_is_cheap():
    code = (
        "import sys, online_dt.rewards; "
        "bad = [m for m in ('torch', 'transformers', 'vaderSentiment') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------
# VADER
# ---------------------------------------------------------------------------------------------


def test_vader_sign_and_range():
    model = VaderSentimentReward()
    assert isinstance(model, RewardModel)
    prompts = ["the movie was"] * 4
    completions = [
        " wonderful, I loved every minute of it!",
        " terrible, boring and a complete waste of time.",
        " 90 minutes long",
        "",
    ]
    pos, neg, neutral, empty = score_checked(model, prompts, completions)
    assert pos > 0.3
    assert neg < -0.3
    assert neutral == 0.0 and empty == 0.0
    many = score_checked(model, prompts * 5, completions * 5)
    assert all(-1.0 <= s <= 1.0 for s in many)
    assert many[:4] == [pos, neg, neutral, empty]


def test_vader_score_prompt():
    prompts = ["I hate this awful place, and"]
    completions = [" the walls are blue"]
    assert VaderSentimentReward().score(prompts, completions) == [0.0]
    with_prompt = VaderSentimentReward(score_prompt=True).score(prompts, completions)[0]
    assert with_prompt < -0.3
    with pytest.raises(ValueError):
        VaderSentimentReward().score(prompts * 2, completions)


def test_load_vader():
    model = load_reward_model(RewardModelConfig(kind="vader", score_prompt=True))
    assert isinstance(model, VaderSentimentReward) and model.score_prompt


# ---------------------------------------------------------------------------------------------
# Hugging Face classifier (a tiny random GPT-2 classifier built locally)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    path = tmp_path_factory.mktemp("classifier")
    tokenizer = build_tokenizer(path)
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=4,
        num_labels=2,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        initializer_range=0.5,  # large random weights, so the two labels' logits differ clearly
    )
    GPT2ForSequenceClassification(cfg).save_pretrained(path)
    return path


HF_PROMPTS = ["the movie was", "the food", "i thought", "this hotel is", "the plot"]
HF_COMPLETIONS = [
    " wonderful and the acting was great",
    " was terrible",
    " the book was boring but the ending was lovely and the music was sad and slow",
    " awful",
    "",
]


def reference_logits(path, texts):
    """Each text run alone, without padding, through the model loaded independently."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    rows = []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text)["input_ids"] or [tokenizer.eos_token_id]
            rows.append(model(input_ids=torch.tensor([ids])).logits[0].float())
    return torch.stack(rows)


def test_hf_probability(classifier_dir):
    model = HFClassifierReward(classifier_dir, label=1, batch_size=2, device="cpu")
    assert isinstance(model, RewardModel)
    scores = score_checked(model, HF_PROMPTS, HF_COMPLETIONS)
    assert len(scores) == len(HF_PROMPTS)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert len(set(scores)) > 1
    negative = HFClassifierReward(classifier_dir, label=0, batch_size=3, device="cpu")
    neg_scores = negative.score(HF_PROMPTS, HF_COMPLETIONS)
    for p, q in zip(scores, neg_scores, strict=True):
        assert p + q == pytest.approx(1.0, abs=1e-6)
    expected = reference_logits(classifier_dir, HF_COMPLETIONS).softmax(-1)[:, 1]
    assert scores == pytest.approx(expected.tolist(), abs=1e-5)
    # a batch holding only an empty completion (zero tokens) still gets a score
    assert model.score(["x"], [""]) == pytest.approx([scores[-1]], abs=1e-5)


def test_hf_logit_matches_model_and_label_by_name(classifier_dir):
    model = HFClassifierReward(
        classifier_dir, label="POSITIVE", output="logit", batch_size=2, device="cpu"
    )
    assert model.label_index == 1
    scores = score_checked(model, HF_PROMPTS, HF_COMPLETIONS)
    expected = reference_logits(classifier_dir, HF_COMPLETIONS)[:, 1]
    # batched with padding equals each text alone
    assert scores == pytest.approx(expected.tolist(), abs=1e-5)
    by_index = HFClassifierReward(classifier_dir, label=1, output="logit", device="cpu")
    assert by_index.score(HF_PROMPTS, HF_COMPLETIONS) == pytest.approx(scores, abs=1e-5)
    lower = HFClassifierReward(classifier_dir, label="negative", output="logit", device="cpu")
    assert lower.label_index == 0


def test_hf_score_prompt_and_truncation(classifier_dir):
    with_prompt = HFClassifierReward(
        classifier_dir, output="logit", device="cpu", score_prompt=True
    )
    texts = [p + c for p, c in zip(HF_PROMPTS, HF_COMPLETIONS, strict=True)]
    expected = reference_logits(classifier_dir, texts)[:, 1]
    assert with_prompt.score(HF_PROMPTS, HF_COMPLETIONS) == pytest.approx(
        expected.tolist(), abs=1e-5
    )
    # far longer than the model's 64 positions: truncated to them, not an index error
    assert with_prompt.max_length == 64
    long = ["the movie was wonderful " * 100]
    assert len(score_checked(with_prompt, long, long)) == 1


def test_hf_bad_labels(classifier_dir):
    with pytest.raises(ValueError, match=r"'NEUTRAL'.*NEGATIVE \(0\), POSITIVE \(1\)"):
        HFClassifierReward(classifier_dir, label="NEUTRAL", device="cpu")
    with pytest.raises(ValueError, match="out of range"):
        HFClassifierReward(classifier_dir, label=2, device="cpu")


def test_hf_missing_path(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(RewardModelLoadError, match="no_such_model"):
        HFClassifierReward(missing, device="cpu")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(RewardModelLoadError) as info:
        load_reward_model(
            RewardModelConfig(kind="hf_classifier", model_name_or_path=str(empty), device="cpu")
        )
    assert str(empty) in str(info.value)
    assert "Hub may be unreachable" in str(info.value)
    assert "local directory" in str(info.value)


def test_load_hf_classifier(classifier_dir):
    cfg = RewardModelConfig(
        kind="hf_classifier",
        model_name_or_path=str(classifier_dir),
        label="NEGATIVE",
        output="logit",
        batch_size=2,
        device="cpu",
    )
    model = load_reward_model(cfg)
    assert isinstance(model, HFClassifierReward)
    expected = reference_logits(classifier_dir, HF_COMPLETIONS)[:, 0]
    assert model.score(HF_PROMPTS, HF_COMPLETIONS) == pytest.approx(expected.tolist(), abs=1e-5)


# ---------------------------------------------------------------------------------------------
# custom classes
# ---------------------------------------------------------------------------------------------


def custom(class_path, **kwargs):
    return RewardModelConfig(kind="custom", class_path=class_path, kwargs=kwargs)


def test_custom_class_loads_with_kwargs():
    model = load_reward_model(custom("tests.custom_reward_example:LengthReward", scale=0.5))
    assert isinstance(model, RewardModel)
    assert score_checked(model, ["a", "b"], ["one two three", ""]) == [1.5, 0.0]


def test_custom_bad_module():
    with pytest.raises(RewardModelLoadError) as info:
        load_reward_model(custom("tests.no_such_module:LengthReward"))
    msg = str(info.value)
    assert "tests.no_such_module:LengthReward" in msg
    assert "could not import module 'tests.no_such_module'" in msg
    assert "ModuleNotFoundError" in msg
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_custom_missing_class():
    with pytest.raises(RewardModelLoadError) as info:
        load_reward_model(custom("tests.custom_reward_example:LenghtReward"))
    msg = str(info.value)
    assert "no attribute 'LenghtReward'" in msg
    assert "LengthReward" in msg  # the available classes are listed


def test_custom_without_score():
    with pytest.raises(RewardModelLoadError, match=r"NoScore.*no callable score"):
        load_reward_model(custom("tests.custom_reward_example:NoScore"))


def test_custom_constructor_errors():
    with pytest.raises(RewardModelLoadError, match=r"BrokenInit.*tokenizer file missing") as info:
        load_reward_model(custom("tests.custom_reward_example:BrokenInit"))
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(RewardModelLoadError, match=r"LengthReward.*TypeError.*scael"):
        load_reward_model(custom("tests.custom_reward_example:LengthReward", scael=2.0))

"""Multi-objective reward validation (``validate_objective_scores``, ``score_checked`` with
objectives) and the built-in :class:`SentimentBrevityReward`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from online_dt.config import RewardModelConfig
from online_dt.rewards import (
    RewardModel,
    RewardModelError,
    SentimentBrevityReward,
    load_reward_model,
    score_checked,
    validate_objective_scores,
    validate_scores,
)

PROMPTS = [f"prompt number {i}" for i in range(4)]
COMPLETIONS = [f"completion text {i}" for i in range(4)]
NAMES = ("sentiment", "brevity")


class FixedReward:
    """Returns whatever it was given, to test validation."""

    def __init__(self, scores):
        self.scores = scores

    def score(self, prompts, completions):
        return self.scores


def good(n=4):
    return [{"sentiment": 0.1 * i, "brevity": -float(i)} for i in range(n)]


def check(scores, objectives=NAMES):
    return validate_objective_scores(scores, PROMPTS, COMPLETIONS, "M", objectives)


def raised(scores, objectives=NAMES) -> RewardModelError:
    with pytest.raises(RewardModelError) as info:
        check(scores, objectives)
    assert info.value.model_name == "M"
    return info.value


# ---------------------------------------------------------------------------------------------
# valid output
# ---------------------------------------------------------------------------------------------


def test_tuples_follow_objectives_order_not_mapping_order():
    scores = [{"brevity": -float(i), "sentiment": 0.5} for i in range(4)]
    assert check(scores) == [(0.5, -float(i)) for i in range(4)]
    assert check(scores, ("brevity", "sentiment")) == [(-float(i), 0.5) for i in range(4)]


def test_numpy_and_torch_scalars_are_accepted():
    values = [np.float32(0.25), np.float64(-2.0), torch.tensor(3.0), np.int64(7)]
    scores = [{"sentiment": v, "brevity": torch.tensor([1.5])[0]} for v in values]
    out = check(scores)
    assert out == [(0.25, 1.5), (-2.0, 1.5), (3.0, 1.5), (7.0, 1.5)]
    assert all(type(v) is float for row in out for v in row)
    # a numpy object array of mappings is a sequence too
    assert check(np.array(good(), dtype=object)) == check(good())


def test_score_checked_with_objectives():
    out = score_checked(FixedReward(good()), PROMPTS, COMPLETIONS, NAMES)
    assert out == [(0.1 * i, -float(i)) for i in range(4)]
    assert score_checked(FixedReward(None), [], [], NAMES) == []  # model not called


def test_single_float_path_unchanged():
    model = FixedReward([0.5, np.float32(1.0), torch.tensor(2.0), 3])
    assert score_checked(model, PROMPTS, COMPLETIONS) == [0.5, 1.0, 2.0, 3.0]
    assert score_checked(model, PROMPTS, COMPLETIONS, ()) == [0.5, 1.0, 2.0, 3.0]
    with pytest.raises(RewardModelError) as info:
        score_checked(FixedReward([0.0, math.nan, 0.0, 0.0]), PROMPTS, COMPLETIONS)
    assert info.value.reason == "nan" and info.value.indices == [1]
    assert info.value.objective is None


def test_bad_objectives_argument():
    with pytest.raises(ValueError, match="at least one"):
        check(good(), ())
    with pytest.raises(ValueError, match="unique"):
        check(good(), ("sentiment", "sentiment"))
    with pytest.raises(ValueError, match="string"):
        score_checked(FixedReward(good()), PROMPTS, COMPLETIONS, "sentiment")


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def test_not_a_sequence_and_wrong_count():
    err = raised({"sentiment": 0.0, "brevity": 0.0})
    assert err.reason == "not_a_sequence" and err.indices == [0, 1, 2, 3]
    err = raised(good(3))
    assert err.reason == "wrong_count" and err.indices == [0, 1, 2, 3]
    assert "returned 3 scores for 4 samples" in str(err)


def test_plain_floats_with_objectives_listed():
    err = raised([0.5, 0.1, {"sentiment": 0.0, "brevity": 0.0}, 0.3])
    assert err.reason == "not_a_mapping"
    assert err.indices == [0, 1, 3]
    assert err.objective is None
    msg = str(err)
    assert "float instead of a mapping" in msg and "3 of 4 samples" in msg
    assert "#0 'prompt number 0' -> 'completion text 0'" in msg
    assert "completion text 2" not in msg
    assert "config lists objectives ['sentiment', 'brevity']" in msg
    assert "conditioning.objectives" in msg and "must be a mapping" in msg


def test_mappings_without_objectives_listed():
    with pytest.raises(RewardModelError) as info:
        score_checked(FixedReward(good()), PROMPTS, COMPLETIONS)
    err = info.value
    assert err.reason == "not_a_number" and err.indices == [0, 1, 2, 3]
    msg = str(err)
    assert "named objectives ('sentiment', 'brevity')" in msg
    assert "conditioning.objectives" in msg and "lists none" in msg
    # other non-numbers keep the plain message
    with pytest.raises(RewardModelError) as info:
        validate_scores([0.0, "x", 0.0, 0.0], PROMPTS, COMPLETIONS, "M")
    assert "conditioning.objectives" not in str(info.value)


def test_missing_objective():
    scores = good()
    del scores[1]["brevity"]
    del scores[3]["brevity"]
    scores[3]["sentimnet"] = scores[3].pop("sentiment")  # also unknown: missing is first
    err = raised(scores)
    assert err.reason == "missing_objective"
    assert err.objective == "sentiment"  # first in the order of objectives
    assert err.indices == [3]
    assert "objective 'sentiment'" in str(err) and "completion text 3" in str(err)
    assert "'sentimnet'" in str(err)  # the names it did return

    del scores[3]
    scores.append({"sentiment": 0.0})
    err = raised(scores)
    assert err.objective == "brevity" and err.indices == [1, 3]
    assert err.samples == [(PROMPTS[1], COMPLETIONS[1]), (PROMPTS[3], COMPLETIONS[3])]
    assert "no score for objective 'brevity' for 2 of 4 samples" in str(err)


def test_unknown_objective():
    scores = good()
    scores[2]["length"] = 3.0
    scores[3]["toxicity"] = 0.1
    scores[3]["length"] = 1.0
    err = raised(scores)
    assert err.reason == "unknown_objective"
    assert err.indices == [2, 3]
    assert err.objective == "length"
    msg = str(err)
    assert "'length', 'toxicity'" in msg and "completion text 2" in msg
    assert "completion text 3" in msg and "completion text 0" not in msg
    assert "['sentiment', 'brevity']" in msg


@pytest.mark.parametrize(
    ("value", "reason", "label"),
    [
        (None, "not_a_number", "NoneType"),
        ("0.5", "not_a_number", "str"),
        (True, "not_a_number", "bool"),
        ([0.1], "not_a_number", "list"),
        (math.nan, "nan", "NaN"),
        (np.float32("nan"), "nan", "NaN"),
        (math.inf, "inf", "+inf"),
        (-torch.tensor(math.inf), "inf", "-inf"),
    ],
)
def test_bad_values_name_sample_and_objective(value, reason, label):
    scores = good()
    scores[2]["brevity"] = value
    err = raised(scores)
    assert err.reason == reason
    assert err.objective == "brevity"
    assert err.indices == [2]
    msg = str(err)
    assert label in msg and "objective 'brevity'" in msg
    assert "#2 'prompt number 2' -> 'completion text 2'" in msg
    assert "completion text 1" not in msg


def test_bad_value_order():
    scores = good()
    scores[0]["sentiment"] = math.nan
    scores[1]["brevity"] = "x"  # a non-number is reported before NaN
    scores[3]["brevity"] = None
    err = raised(scores)
    assert (err.reason, err.objective, err.indices) == ("not_a_number", "brevity", [1, 3])

    scores = good()
    scores[0]["brevity"] = math.inf
    scores[1]["brevity"] = math.nan
    scores[2]["sentiment"] = math.nan
    scores[3]["brevity"] = math.nan
    err = raised(scores)
    # NaN before inf; objectives in the order given; other objectives with NaN are named
    assert (err.reason, err.objective, err.indices) == ("nan", "sentiment", [2])
    assert "'brevity' has such values too" in str(err)
    err = raised(scores, ("brevity", "sentiment"))
    assert (err.reason, err.objective, err.indices) == ("nan", "brevity", [1, 3])


# ---------------------------------------------------------------------------------------------
# SentimentBrevityReward
# ---------------------------------------------------------------------------------------------


def test_sentiment_brevity_scores():
    model = SentimentBrevityReward(max_words=5)
    assert isinstance(model, RewardModel)
    assert SentimentBrevityReward.OBJECTIVES == ("sentiment", "brevity")
    assert repr(model) == "SentimentBrevityReward(max_words=5)"
    completions = [
        "what a great, wonderful day",
        "terrible awful day",
        "the cat sat",
        "one two three four five six seven",
        "",
    ]
    out = model.score(["p"] * 5, completions)
    assert all(set(row) == {"sentiment", "brevity"} for row in out)
    assert all(
        type(v) is float and -1.0 <= row["sentiment"] <= 1.0 for row in out for v in row.values()
    )
    assert out[0]["sentiment"] > 0.5 > out[2]["sentiment"] == 0.0 > out[1]["sentiment"]
    assert [row["brevity"] for row in out] == [-5.0, -3.0, -3.0, -5.0, 0.0]
    assert SentimentBrevityReward().score(["p"], [completions[3]])[0]["brevity"] == -7.0


def test_sentiment_brevity_bad_args():
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_words"):
            SentimentBrevityReward(max_words=bad)
    with pytest.raises(ValueError):
        SentimentBrevityReward().score(["a", "b"], ["x"])


def test_sentiment_brevity_loads_from_config_and_validates():
    cfg = RewardModelConfig(
        kind="custom",
        class_path="online_dt.rewards.multi:SentimentBrevityReward",
        kwargs={"max_words": 4},
    )
    model = load_reward_model(cfg)
    assert isinstance(model, SentimentBrevityReward) and model.max_words == 4
    out = score_checked(model, ["p", "p"], ["I love it", "a b c d e f"], ("brevity", "sentiment"))
    assert out[0][0] == -3.0 and out[0][1] > 0.5
    assert out[1] == (-4.0, 0.0)
    # without objectives the mappings are refused with a helpful message
    with pytest.raises(RewardModelError, match=r"conditioning\.objectives"):
        score_checked(model, ["p"], ["x"])

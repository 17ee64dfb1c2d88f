"""Synthetic corpus and the embedded base model: determinism, sentiment spread, caching."""

from __future__ import annotations

import itertools
import json
import os
import re
import threading
from pathlib import Path

import pytest

from online_dt.config import BootstrapConfig
from online_dt.embedded import bootstrap as bootstrap
from online_dt.embedded import pretrain
from online_dt.embedded.bootstrap import (
    BUILD_INFO,
    EOS_TOKEN,
    config_hash,
    describe,
    ensure_embedded_model,
)
from online_dt.embedded.corpus import Review, all_openings, embedded_prompts, generate_reviews
from online_dt.embedded.vader_spread import sample_vader_spread
from online_dt.embedded.words import ADJECTIVES
from online_dt.rewards import VaderSentimentReward


def vader_compound(texts: list[str]) -> list[float]:
    """VADER compound of each text alone, through the default reward model."""
    return VaderSentimentReward().score([""] * len(texts), texts)


def _std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5


def tiny_config(cache_dir: Path, **overrides: object) -> BootstrapConfig:
    """A bootstrap config that builds in about a second."""
    fields: dict[str, object] = {
        "cache_dir": cache_dir,
        "num_texts": 500,
        "vocab_size": 350,
        "n_layer": 1,
        "n_embd": 32,
        "n_head": 2,
        "n_positions": 64,
        "steps": 20,
        "batch_size": 16,
    }
    fields.update(overrides)
    return BootstrapConfig(**fields)


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.endswith(".tmp"))


# ---------------------------------------------------------------------------------------------
# corpus
# ---------------------------------------------------------------------------------------------


def test_reviews_are_deterministic_under_seed() -> None:
    a = generate_reviews(300, seed=7)
    assert a == generate_reviews(300, seed=7)
    assert a != generate_reviews(300, seed=8)
    assert generate_reviews(50, seed=7) == a[:50]
    assert generate_reviews(0, seed=0) == []
    with pytest.raises(ValueError):
        generate_reviews(-1, seed=0)


def test_reviews_have_the_promised_shape() -> None:
    openings = set(all_openings())
    reviews = generate_reviews(2000, seed=0)
    assert all(isinstance(r, Review) for r in reviews)
    for r in reviews:
        assert r.text == r.prompt + r.completion
        assert r.prompt in openings
        assert r.prompt == r.prompt.strip()
        assert r.completion.startswith(" ") and not r.completion.startswith("  ")
        assert r.completion.endswith((".", "!"))
        assert 6 <= len(r.text.split()) <= 32, r.text
    lengths = sorted(len(r.text.split()) for r in reviews)
    assert 11 <= lengths[len(lengths) // 2] <= 22  # median text length in words
    assert len({r.text for r in reviews}) > 0.95 * len(reviews)  # hardly any repeats


def test_corpus_sentiment_varies_widely() -> None:
    reviews = generate_reviews(2000, seed=1)
    scores = vader_compound([r.completion for r in reviews])
    assert _std(scores) > 0.4
    assert abs(sum(scores) / len(scores)) < 0.15
    assert sum(s >= 0.5 for s in scores) > 0.25 * len(scores)
    assert sum(s <= -0.5 for s in scores) > 0.25 * len(scores)
    assert sum(abs(s) < 0.3 for s in scores) > 0.05 * len(scores)  # some neutral-ish ones too


def test_each_text_is_coherent_in_sentiment() -> None:
    # the shared mood keeps strongly positive and strongly negative words out of the same text
    # (about 2% of texts have both, mostly through negation: "not horrible"; without the mood
    # it would be about 20%)
    strong_positive = set(ADJECTIVES[2] + ADJECTIVES[3])
    strong_negative = set(ADJECTIVES[-2] + ADJECTIVES[-3])
    reviews = generate_reviews(2000, seed=2)
    mixed = 0
    for r in reviews:
        words = set(re.findall(r"[a-z]+", r.completion.lower()))
        mixed += bool(words & strong_positive) and bool(words & strong_negative)
    assert mixed < 0.06 * len(reviews)


def test_word_lists_sit_on_the_side_of_zero_their_level_claims() -> None:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    lexicon = SentimentIntensityAnalyzer().lexicon
    for level, words in ADJECTIVES.items():
        for word in words:
            valence = lexicon.get(word, 0.0)
            if level > 0:
                assert valence > 0, (word, level, valence)
            elif level < 0:
                assert valence < 0, (word, level, valence)
            else:
                assert word not in lexicon, (word, valence)


def test_prompts_are_distinct_neutral_openings() -> None:
    prompts = embedded_prompts()
    assert len(prompts) == len(set(prompts)) == len(all_openings())
    assert len(prompts) >= 300
    assert set(prompts) == set(all_openings())
    assert all(p == p.strip() and p for p in prompts)
    assert set(vader_compound(prompts)) == {0.0}  # openings carry no sentiment
    assert embedded_prompts(seed=0) == prompts
    assert embedded_prompts(10, seed=0) == prompts[:10]
    assert embedded_prompts(seed=1) != prompts
    assert embedded_prompts(0) == []
    with pytest.raises(ValueError):
        embedded_prompts(len(prompts) + 1)


def test_texts_start_with_their_opening() -> None:
    prompts = set(embedded_prompts())
    for r in generate_reviews(500, seed=3):
        assert r.prompt in prompts
        assert r.text.startswith(r.prompt + " ")


# ---------------------------------------------------------------------------------------------
# building and caching
# ---------------------------------------------------------------------------------------------


def test_lr_schedule_warms_up_then_decays() -> None:
    factors = [pretrain._lr_factor(s, 100) for s in range(100)]
    assert factors[0] < factors[4] == pytest.approx(1.0)
    assert max(factors) == pytest.approx(1.0)
    assert factors[-1] == pytest.approx(pretrain._MIN_LR_FRACTION, abs=0.01)
    assert all(a >= b for a, b in itertools.pairwise(factors[5:]))


def test_cache_key_ignores_cache_dir_only(tmp_path: Path) -> None:
    a = tiny_config(tmp_path / "a")
    assert config_hash(a) == config_hash(tiny_config(tmp_path / "b"))
    assert config_hash(a) != config_hash(tiny_config(tmp_path / "a", steps=21))
    assert config_hash(a) != config_hash(tiny_config(tmp_path / "a", seed=1))
    assert bootstrap.embedded_model_dir(a).parent == tmp_path / "a"


def test_cache_dir_falls_back_to_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ONLINE_DT_CACHE", str(tmp_path / "env"))
    cfg = tiny_config(tmp_path).model_copy(update={"cache_dir": None})
    assert bootstrap.embedded_model_dir(cfg).parent == tmp_path / "env"
    monkeypatch.delenv("ONLINE_DT_CACHE")
    assert bootstrap.embedded_model_dir(cfg).parent == Path.home() / ".cache" / "online-dt"


def test_tiny_build_is_a_loadable_hf_model_and_is_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = tiny_config(tmp_path / "cache")
    path = ensure_embedded_model(cfg, progress=False)
    assert path == bootstrap.embedded_model_dir(cfg)
    assert path.is_dir() and (path / BUILD_INFO).is_file()
    assert _leftovers(path.parent) == []

    info = describe(path)
    assert info["config"]["steps"] == 20 and "cache_dir" not in info["config"]
    assert info["num_parameters"] > 0 and info["final_loss"] < info["first_loss"]
    assert info["corpus_vader"]["std"] > 0.4
    assert info["build_seconds"] > 0 and info["tokens_per_second"] > 0

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert model.config.n_layer == 1 and model.config.n_embd == 32
    assert model.config.vocab_size == len(tokenizer) <= 350
    eos = tokenizer.eos_token_id
    assert tokenizer.eos_token == tokenizer.bos_token == tokenizer.pad_token == EOS_TOKEN
    assert tokenizer.unk_token == EOS_TOKEN
    assert tokenizer.pad_token_id == tokenizer.bos_token_id == eos
    assert model.config.eos_token_id == model.config.pad_token_id == eos
    assert tokenizer.padding_side == "left"
    ids = tokenizer("The movie was great")["input_ids"]
    assert eos not in ids  # no BOS/EOS added automatically
    assert tokenizer.decode(ids) == "The movie was great"
    # encoding prompt and completion separately gives the same tokens as the whole text
    review = generate_reviews(1, seed=0)[0]
    both = tokenizer.encode(review.prompt, add_special_tokens=False) + tokenizer.encode(
        review.completion, add_special_tokens=False
    )
    assert both == tokenizer.encode(review.text, add_special_tokens=False)

    # second call: reused, not rebuilt
    marker_mtime = os.stat(path / BUILD_INFO).st_mtime_ns

    def no_rebuild(*args: object, **kwargs: object) -> None:
        raise AssertionError("rebuilt a cached model")

    monkeypatch.setattr(bootstrap, "_build", no_rebuild)
    assert ensure_embedded_model(cfg, progress=False) == path
    assert os.stat(path / BUILD_INFO).st_mtime_ns == marker_mtime
    assert _leftovers(path.parent) == []


def test_failed_build_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_config(tmp_path)

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated crash during training")

    monkeypatch.setattr(bootstrap, "pretrain_model", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ensure_embedded_model(cfg, progress=False)
    assert not bootstrap.embedded_model_dir(cfg).exists()
    assert _leftovers(tmp_path) == []


def test_incomplete_directory_and_stale_temp_dirs_are_replaced(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    final = bootstrap.embedded_model_dir(cfg)
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")  # no BUILD_INFO.json: not a finished build
    stale = tmp_path / f".{final.name}.abc123.tmp"
    stale.mkdir()
    path = ensure_embedded_model(cfg, progress=False)
    assert path == final and (final / BUILD_INFO).is_file()
    assert json.loads((final / "config.json").read_text())["model_type"] == "gpt2"
    assert _leftovers(tmp_path) == []


def test_concurrent_callers_build_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_config(tmp_path)
    real_build = bootstrap._build
    calls: list[int] = []
    entered = threading.Event()

    def counting_build(*args: object, **kwargs: object) -> object:
        calls.append(1)
        entered.set()
        return real_build(*args, **kwargs)

    monkeypatch.setattr(bootstrap, "_build", counting_build)
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(ensure_embedded_model(cfg, progress=False))
        except BaseException as e:  # surfaced below
            errors.append(e)

    first = threading.Thread(target=worker)
    first.start()
    assert entered.wait(timeout=60)  # the first caller holds the lock and is building
    second = threading.Thread(target=worker)
    second.start()
    first.join(timeout=120)
    second.join(timeout=120)
    assert not errors
    assert len(calls) == 1
    assert results == [bootstrap.embedded_model_dir(cfg)] * 2


def test_sample_vader_spread_reports_a_summary(tmp_path: Path) -> None:
    path = ensure_embedded_model(tiny_config(tmp_path), progress=False)
    spread = sample_vader_spread(path, n=12, seed=0, max_new_tokens=8, num_examples=3)
    assert spread["n"] == 12
    assert -1.0 <= spread["min"] <= spread["mean"] <= spread["max"] <= 1.0
    assert spread["std"] >= 0.0
    assert sum(spread["histogram"]["counts"]) == 12
    assert 0.0 <= spread["frac_finished"] <= 1.0
    assert len(spread["examples"]) == 3
    assert spread["examples"][0]["prompt"] == embedded_prompts(seed=0)[0]
    with pytest.raises(ValueError):
        sample_vader_spread(path, n=0)


@pytest.mark.slow
def test_default_model_completions_vary_widely_in_sentiment(embedded_model_dir: Path) -> None:
    # embedded_model_dir: conftest's session fixture, ensure_embedded_model(BootstrapConfig())
    assert embedded_model_dir == bootstrap.embedded_model_dir(BootstrapConfig())
    spread = sample_vader_spread(embedded_model_dir, n=256, seed=0)
    assert spread["std"] > 0.4
    assert spread["frac_positive"] > 0.25 and spread["frac_negative"] > 0.25
    assert spread["frac_finished"] > 0.9
    assert spread["distinct_completions"] > 200

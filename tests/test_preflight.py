"""Preflight's prompt-length check counts the row the learner lays out; a local model's config
and tokenizer are read without transformers, with the counts transformers gives."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from online_dt.launch.preflight import (
    PreflightError,
    check_prompt_lengths,
    preflight,
    read_local_model,
)
from online_dt.policy.layout import context_length
from tests.tiny import build_tokenizer

PROMPT = "the movie was wonderful and the acting was great"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


def test_prompt_must_leave_room_for_the_slot_max_new_tokens_and_eos(tokenizer):
    """Training lays out slot + prompt + completion + EOS, and a completion cut at
    ``max_new_tokens`` has no EOS of its own: a prompt that fits the sampler with no position
    to spare overflowed the learner's row by one."""
    n = len(tokenizer(PROMPT, add_special_tokens=False)["input_ids"])
    max_new_tokens = 24
    check_prompt_lengths([PROMPT], tokenizer, max_new_tokens, n + max_new_tokens + 2, "test")
    with pytest.raises(PreflightError) as e:
        check_prompt_lengths([PROMPT], tokenizer, max_new_tokens, n + max_new_tokens + 1, "test")
    message = str(e.value)
    assert message.startswith("prompts: 1 of 1 prompts from test")
    assert f"has {n} tokens" in message
    assert "sampling.max_new_tokens=24" in message
    assert f"context of {n + max_new_tokens + 1}" in message


# -- a local model read without transformers ------------------------------------------------------

TEXTS = [
    PROMPT,
    " leading space, then  two spaces",
    "unicode: café, naïve, 東京 and an emoji 🎬",
    "the special token <|endoftext|> inside a prompt",
    "",
]


def copy_with(model_dir, tmp_path, change):
    """A copy of ``model_dir`` whose ``tokenizer_config.json`` has ``change`` applied."""
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    config_file = copy / "tokenizer_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **change}))
    return copy


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tests.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("gpt2"), "gpt2")


@pytest.mark.parametrize("tokenizer_class", ["TokenizersBackend", "PreTrainedTokenizerFast"])
def test_a_local_models_tokenizer_file_counts_as_transformers_does(
    model_dir, tmp_path, tokenizer_class
):
    """transformers 5 saves its generic tokenizer as ``TokenizersBackend``; a model saved by
    transformers 4 names ``PreTrainedTokenizerFast``."""
    from transformers import AutoConfig, AutoTokenizer

    model_dir = copy_with(model_dir, tmp_path, {"tokenizer_class": tokenizer_class})
    local = read_local_model(str(model_dir))
    assert local is not None, "a tokenizer saved by transformers' generic class is read directly"
    config, tokenizer = local
    reference = AutoTokenizer.from_pretrained(model_dir)
    for special in (False, True):
        assert (
            tokenizer(TEXTS, add_special_tokens=special)["input_ids"]
            == reference(TEXTS, add_special_tokens=special)["input_ids"]
        )
    assert context_length(config) == context_length(AutoConfig.from_pretrained(model_dir))


@pytest.mark.parametrize(
    "change", [{"tokenizer_class": "GPT2Tokenizer"}, {"add_prefix_space": True}]
)
def test_other_tokenizers_are_left_to_transformers(model_dir, tmp_path, change):
    """A model-specific tokenizer class, or an ``add_prefix_space`` override, may change how
    text is encoded when transformers loads it: preflight does not read those itself."""
    assert read_local_model(str(copy_with(model_dir, tmp_path, change))) is None
    assert read_local_model("gpt2") is None, "a Hub name is loaded through transformers"


def test_preflight_of_a_local_model_does_not_import_transformers(model_dir):
    """A run's start imports transformers only in its actors: preflight, on the driver's
    thread beside Ray's start, reads the local model's config and tokenizer itself."""
    script = (
        "import sys\n"
        "from online_dt.config import OnlineRunConfig\n"
        "from online_dt.launch.preflight import preflight\n"
        f"preflight(OnlineRunConfig(), [{PROMPT!r}], {str(model_dir)!r})\n"
        "assert 'transformers' not in sys.modules, 'transformers was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_preflight_names_the_model_field_for_a_broken_tokenizer_file(model_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    (copy / "tokenizer.json").write_text("{not json")
    from online_dt.config import OnlineRunConfig

    with pytest.raises(PreflightError, match=r"^model.name_or_path: cannot load"):
        preflight(OnlineRunConfig(), [PROMPT], str(copy))

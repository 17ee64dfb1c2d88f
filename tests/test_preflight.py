"""Preflight's prompt-length check counts the row the learner lays out."""

from __future__ import annotations

import pytest

from online_dt.launch.preflight import PreflightError, check_prompt_lengths
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

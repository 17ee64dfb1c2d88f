"""Token ids of texts, with the recently seen ones kept (the policy's ``encode``)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

TOKEN_CACHE_SIZE = 65_536
"""Distinct texts whose token ids a :class:`TokenIdCache` keeps."""


class TokenIdCache:
    """Tokenises texts without special tokens, keeping the ids of the last
    :data:`TOKEN_CACHE_SIZE` distinct texts (least recently used evicted first).

    The learner lays out every replay-buffer sample about twice and every prompt many times;
    tokenising them again was 4 % of a training step on the embedded model
    (``bench/learner.py``). Texts not held are tokenised in one batch call of the tokenizer,
    which gives the same ids as encoding them one by one.

    Args:
        tokenizer: a Hugging Face tokenizer.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._ids: OrderedDict[str, list[int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def texts(self) -> list[str]:
        """The texts held, least recently used first."""
        return list(self._ids)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens; a new list per text."""
        cache = self._ids
        missing = list(dict.fromkeys(t for t in texts if t not in cache))
        if missing:
            encoded = self.tokenizer(missing, add_special_tokens=False)["input_ids"]
            cache.update(zip(missing, encoded, strict=True))
        out = []
        for t in texts:
            cache.move_to_end(t)
            out.append(list(cache[t]))
        while len(cache) > TOKEN_CACHE_SIZE:
            cache.popitem(last=False)
        return out

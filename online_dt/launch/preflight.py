"""Checks of a run's inputs before its directory is created or any worker starts.

Config *values* are checked by pydantic (:mod:`online_dt.config`); this module checks what the
values point at, cheaply, so a run fails in seconds with one message naming the problem rather
than minutes later inside an actor:

* the base model's config and tokenizer load (a missing directory, an unreachable Hub name);
* the reward model: a custom class imports, a classifier's config loads;
* every prompt fits the model's context with the reward slot (``conditioning.slot_width``
  columns), ``max_new_tokens`` and the EOS
  that training appends to a completion cut at ``max_new_tokens``
  (:meth:`~online_dt.policy.policy.RewardConditionedPolicy.layout`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from online_dt.config import OnlineRunConfig
from online_dt.policy.layout import context_length
from online_dt.util.text import first_line


class PreflightError(ValueError):
    """A run's input is unusable. The message starts with the config field it comes from."""


def check_reward_model(cfg: OnlineRunConfig) -> None:
    """Import a custom reward class, or load a classifier's config (not its weights).

    Raises:
        PreflightError: naming ``reward_model.class_path`` or ``reward_model.model_name_or_path``.
    """
    rm = cfg.reward_model
    if rm.kind == "custom" and rm.class_path:
        from online_dt.rewards import RewardModelLoadError, import_reward_class

        try:
            import_reward_class(rm.class_path)
        except RewardModelLoadError as e:
            raise PreflightError(f"reward_model.class_path: {e}") from e
    elif rm.kind == "hf_classifier" and rm.model_name_or_path:
        from transformers import AutoConfig

        try:
            AutoConfig.from_pretrained(rm.model_name_or_path)
        except Exception as e:  # OSError, ValueError, HF hub errors...
            raise PreflightError(
                f"reward_model.model_name_or_path: cannot load {rm.model_name_or_path!r}: "
                f"{first_line(e)}"
            ) from e


def check_prompt_lengths(
    prompts: Sequence[str],
    tokenizer: Any,
    max_new_tokens: int,
    context: int,
    source: str,
    slot_width: int = 1,
) -> None:
    """Every prompt must fit: ``slot_width`` (the reward slot's columns,
    ``ConditioningConfig.slot_width``: 1, or one reward token per objective) + prompt tokens +
    ``max_new_tokens`` + ``1`` (the EOS training appends to a completion cut at
    ``max_new_tokens``) <= ``context``, the longest row the learner lays out.

    Raises:
        PreflightError: naming the longest prompt (its index, token count, start) and how
            many prompts are too long.
    """
    budget = context - slot_width - 1 - max_new_tokens
    slot = "the reward slot" if slot_width == 1 else f"the reward slot ({slot_width} tokens)"
    if budget < 1:
        raise PreflightError(
            f"sampling.max_new_tokens: {max_new_tokens} new tokens plus {slot} and the"
            f" EOS training appends leave no room for a prompt in the model's context of"
            f" {context} tokens"
        )
    lengths = [len(ids) for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
    too_long = [i for i, n in enumerate(lengths) if n > budget]
    if too_long:
        worst = max(too_long, key=lambda i: lengths[i])
        raise PreflightError(
            f"prompts: {len(too_long)} of {len(prompts)} prompts from {source} are longer than"
            f" {budget} tokens (the model's context of {context} minus {slot},"
            f" sampling.max_new_tokens={max_new_tokens} and the EOS training appends); the"
            f" longest, #{worst}, has"
            f" {lengths[worst]} tokens: {prompts[worst][:60]!r}... Shorten them (e.g."
            " prompts.prefix_words) or lower sampling.max_new_tokens"
        )


def preflight(cfg: OnlineRunConfig, prompts: Sequence[str], base_path: str) -> None:
    """Run every check of this module for a run on ``base_path`` with ``prompts``.

    Raises:
        PreflightError: the first problem found, naming its config field.
    """
    from transformers import AutoConfig, AutoTokenizer

    where = f"model.name_or_path: cannot load {cfg.model.name_or_path!r}"
    try:
        model_config = AutoConfig.from_pretrained(base_path)
        tokenizer = AutoTokenizer.from_pretrained(base_path)
    except Exception as e:  # OSError for a missing path, hub errors when offline
        raise PreflightError(f"{where} ({base_path}): {first_line(e)}") from e
    check_reward_model(cfg)
    context = context_length(model_config)
    if cfg.sampler.max_model_len is not None:
        context = min(context or cfg.sampler.max_model_len, cfg.sampler.max_model_len)
    if context is not None:
        source = cfg.prompts.source if cfg.prompts.path is None else str(cfg.prompts.path)
        check_prompt_lengths(
            prompts,
            tokenizer,
            cfg.sampling.max_new_tokens,
            context,
            source,
            cfg.conditioning.slot_width,
        )

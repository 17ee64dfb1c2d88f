"""Checks of a run's inputs before its directory is created or any worker starts.

Config *values* are checked by pydantic (:mod:`online_dt.config`); this module checks what the
values point at, cheaply, so a run fails in seconds with one message naming the problem rather
than minutes later inside an actor:

* the base model's config and tokenizer load (a missing directory, an unreachable Hub name);
  a local directory whose tokenizer is transformers' generic one is read with the
  ``tokenizers`` library and ``json``, without importing transformers
  (:func:`read_local_model`);
* the reward model: a custom class imports, a classifier's config loads;
* every prompt fits the model's context with the reward slot (``conditioning.slot_width``
  columns), ``max_new_tokens`` and the EOS
  that training appends to a completion cut at ``max_new_tokens``
  (:meth:`~online_dt.policy.policy.RewardConditionedPolicy.layout`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
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


GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")
"""``tokenizer_class`` values (``tokenizer_config.json``) with which transformers encodes text
with ``tokenizer.json`` as it is: its generic wrappers of the ``tokenizers`` library
(transformers 5's ``TokenizersBackend``, 4's ``PreTrainedTokenizerFast``). A model-specific
class may rebuild or adjust the tokenizer when it loads, so preflight loads those through
transformers."""


class TokenizerFile:
    """A ``tokenizer.json`` read with the ``tokenizers`` library, called as a transformers
    tokenizer is for :func:`check_prompt_lengths`.

    transformers' generic fast tokenizer wraps the same ``tokenizers.Tokenizer`` and encodes
    with it unchanged, so the token counts are the same (``tests/test_preflight.py`` compares
    them), without importing transformers (3-4 s of CPU on this project's machines, which a
    run's start spends beside Ray's own).
    """

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(path))

    def __call__(self, texts: list[str], add_special_tokens: bool = True) -> dict[str, Any]:
        """``{"input_ids": [ids of each text]}``, as a transformers tokenizer returns."""
        encoded = self.tokenizer.encode_batch(texts, add_special_tokens=add_special_tokens)
        return {"input_ids": [e.ids for e in encoded]}


def read_local_model(base_path: str) -> tuple[Any, Any] | None:
    """The model's config (its ``config.json`` as attributes) and a :class:`TokenizerFile`
    when ``base_path`` is a local directory whose tokenizer transformers would load from
    ``tokenizer.json`` as it is (``tokenizer_class`` in :data:`GENERIC_TOKENIZER_CLASSES`, no
    ``add_prefix_space`` override); ``None`` otherwise (a Hub name, another tokenizer class),
    and preflight loads both through transformers.

    Raises:
        ValueError: a file is not valid JSON, or ``tokenizer.json`` does not load.
    """
    import json
    from types import SimpleNamespace

    root = Path(base_path)
    files = [root / name for name in ("config.json", "tokenizer.json", "tokenizer_config.json")]
    if not all(f.is_file() for f in files):
        return None
    config_file, tokenizer_file, tokenizer_config_file = files
    tokenizer_config = json.loads(tokenizer_config_file.read_text())
    if (
        tokenizer_config.get("tokenizer_class") not in GENERIC_TOKENIZER_CLASSES
        or "add_prefix_space" in tokenizer_config
    ):
        return None
    config = SimpleNamespace(**json.loads(config_file.read_text()))
    try:
        return config, TokenizerFile(tokenizer_file)
    except Exception as e:  # tokenizers raises its own Exception subclass for a bad file
        raise ValueError(f"{tokenizer_file}: {first_line(e)}") from e


def preflight(cfg: OnlineRunConfig, prompts: Sequence[str], base_path: str) -> None:
    """Run every check of this module for a run on ``base_path`` with ``prompts``.

    Raises:
        PreflightError: the first problem found, naming its config field.
    """
    where = f"model.name_or_path: cannot load {cfg.model.name_or_path!r}"
    try:
        local = read_local_model(base_path)
        if local is None:
            from transformers import AutoConfig, AutoTokenizer

            local = AutoConfig.from_pretrained(base_path), AutoTokenizer.from_pretrained(base_path)
    except Exception as e:  # OSError for a missing path, hub errors when offline
        raise PreflightError(f"{where} ({base_path}): {first_line(e)}") from e
    model_config, tokenizer = local
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

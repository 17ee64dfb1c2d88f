"""Prompt sets: the embedded corpus's review openings, or a local text file."""

from __future__ import annotations

from online_dt.config import PromptsConfig


class PromptError(ValueError):
    """The prompt source is missing or yields no usable prompt."""


def load_prompts(cfg: PromptsConfig) -> list[str]:
    """Load prompts as configured.

    Returns:
        Non-empty prompt strings, at most ``cfg.limit`` of them, in source order.

    Raises:
        PromptError: the file does not exist or holds no non-blank line.
    """
    if cfg.source == "embedded":
        from online_dt.corpus import embedded_prompts

        prompts = embedded_prompts()
    else:
        assert cfg.path is not None
        if not cfg.path.is_file():
            raise PromptError(f"prompts file not found: {cfg.path}")
        prompts = [line.rstrip("\n") for line in cfg.path.read_text().splitlines()]
        prompts = [p for p in prompts if p.strip()]
    if cfg.limit is not None:
        prompts = prompts[: cfg.limit]
    if not prompts:
        raise PromptError(f"the prompt source ({cfg.source}) holds no prompt")
    return prompts

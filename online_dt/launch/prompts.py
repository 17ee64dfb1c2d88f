"""Prompt sets: the embedded corpus's review openings, a local text file, or a dataset."""

from __future__ import annotations

from online_dt.config import PromptsConfig


class PromptError(ValueError):
    """The prompt source is missing, unreachable or yields no usable prompt."""


def load_prompts(cfg: PromptsConfig) -> list[str]:
    """Load prompts as configured.

    Returns:
        Non-empty prompt strings (cut to ``prefix_words`` words when set), at most
        ``cfg.limit`` of them, in source order.

    Raises:
        PromptError: the file does not exist, the dataset cannot be loaded (e.g. the Hugging
            Face Hub is unreachable) or lacks the column, or no non-blank prompt remains.
    """
    if cfg.source == "embedded":
        from online_dt.embedded.corpus import embedded_prompts

        prompts = embedded_prompts()
    elif cfg.source == "file":
        assert cfg.path is not None
        if not cfg.path.is_file():
            raise PromptError(f"prompts file not found: {cfg.path}")
        prompts = cfg.path.read_text().splitlines()
    else:
        prompts = _dataset_prompts(cfg)
    if cfg.prefix_words is not None:
        prompts = [" ".join(p.split()[: cfg.prefix_words]) for p in prompts]
    prompts = [p for p in prompts if p.strip()]
    if cfg.limit is not None:
        prompts = prompts[: cfg.limit]
    if not prompts:
        raise PromptError(f"the prompt source ({cfg.source}) holds no prompt")
    return prompts


def _dataset_prompts(cfg: PromptsConfig) -> list[str]:
    import datasets

    assert cfg.dataset is not None
    try:
        data = datasets.load_dataset(cfg.dataset, split=cfg.split)
    except Exception as e:  # datasets raises many kinds for a missing or unreachable dataset
        raise PromptError(
            f"cannot load prompt dataset {cfg.dataset!r} (split {cfg.split!r}): {e}. "
            "Check that the Hugging Face Hub is reachable, or give a local path."
        ) from e
    if cfg.column not in data.column_names:
        raise PromptError(
            f"dataset {cfg.dataset!r} has no column {cfg.column!r} (columns: {data.column_names})"
        )
    if cfg.limit is not None:
        data = data.select(range(min(len(data), cfg.limit * 2)))
    return [str(x) for x in data[cfg.column]]

"""The ``prompts`` section: where prompts come from."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from online_dt.config.base import StrictModel


class PromptsConfig(StrictModel):
    """Where prompts come from."""

    source: Literal["embedded", "file", "dataset"] = "embedded"
    """``embedded``: the synthetic review openings of the embedded corpus. ``file``: one prompt
    per line of ``path``. ``dataset``: a column of a Hugging Face ``datasets`` dataset."""

    path: Path | None = None
    """Text file with one prompt per line, for ``source: file``."""

    dataset: str | None = None
    """``dataset``: hub name or local path passed to ``datasets.load_dataset`` (e.g. ``imdb``)."""

    split: str = "train"
    """``dataset``: the split to read."""

    column: str = "text"
    """``dataset``: the column holding the text."""

    prefix_words: int | None = Field(None, ge=1)
    """Cut each prompt to its first this many words (e.g. review openings from full reviews)."""

    limit: int | None = Field(None, ge=1)
    """Use at most this many prompts."""

    @model_validator(mode="after")
    def _check_path(self) -> PromptsConfig:
        if self.source == "file" and self.path is None:
            raise ValueError("path is required when source is 'file'")
        if self.source == "dataset" and not self.dataset:
            raise ValueError("dataset is required when source is 'dataset'")
        return self

"""What every config section builds on: the strict pydantic base model and the config error."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, fields document themselves."""

    model_config = ConfigDict(
        extra="forbid", use_attribute_docstrings=True, frozen=False, allow_inf_nan=False
    )


class ConfigError(ValueError):
    """A config file is missing, not YAML, or fails validation; the message names the field."""

"""Reading and writing config files: YAML in (with overrides, errors naming the dotted field),
YAML out, and which run kind a file describes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from online_dt.config.base import ConfigError
from online_dt.config.runs import OfflineRunConfig, OnlineRunConfig, RunConfig


def format_validation_error(err: ValidationError, source: str) -> str:
    """Render pydantic errors as one line per field, each naming the dotted field path."""
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


C = TypeVar("C", bound=BaseModel)


def load_config(path: str | Path, cls: type[C], overrides: dict[str, Any] | None = None) -> C:
    """Load a YAML file into the config class ``cls``.

    Args:
        path: YAML file.
        cls: the pydantic model to validate against (e.g. ``OfflineRunConfig``).
        overrides: nested dict merged over the file's content before validation.

    Raises:
        ConfigError: the file is missing, is not a YAML mapping, or a field is invalid; the
            message names every offending field by its dotted path.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(data).__name__}")
    if overrides:
        data = deep_merge(data, overrides)
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, str(path))) from None


def config_yaml(cfg: BaseModel) -> str:
    """A validated config as YAML, every field resolved (what a run directory's
    ``config.yaml`` holds); :func:`load_config` reads it back to an equal config."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def config_class_for(path: str | Path) -> type[RunConfig]:
    """``OnlineRunConfig`` for a YAML file with an ``online``, ``schedule``, ``buffer`` or
    ``sampler`` section, else ``OfflineRunConfig`` (the offline demo's); unreadable files get
    ``OfflineRunConfig`` and fail in :func:`load_config` with its message."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return OfflineRunConfig
    if isinstance(data, dict) and ({"online", "schedule", "buffer", "sampler"} & data.keys()):
        return OnlineRunConfig
    return OfflineRunConfig


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` merged over ``base``, nested dicts key by key (neither input is changed)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out

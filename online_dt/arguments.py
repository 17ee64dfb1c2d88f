"""Command-line arguments shared by ``online-dt`` and ``python -m online_dt.run``: the config
file, ``--set`` overrides and ``--no-progress``."""

from __future__ import annotations

import argparse
from typing import Any

from online_dt.config import ConfigError


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ``["training.steps=10", "conditioning.mode=token"]`` into a nested dict.

    Values are parsed as YAML scalars (``10`` is an int, ``true`` a bool, ``[1, 2]`` a list).

    Raises:
        ConfigError: a pair has no ``=`` or an empty key.
    """
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE with a dotted key, got {pair!r}")
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return out


def add_config_args(parser: argparse.ArgumentParser, default: str) -> None:
    """Add ``--config``, repeatable ``--set KEY=VALUE`` and ``--no-progress`` to a parser."""
    parser.add_argument("--config", default=default, help=f"YAML config (default: {default})")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field by its dotted path, e.g. --set training.steps=50 "
        "(repeatable)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")

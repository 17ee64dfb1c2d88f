"""Shared fixtures: the embedded default base model, built once per test session and cached."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def embedded_model_dir():
    """Path of the embedded default base model (built on first use, then reused from cache)."""
    from online_dt.config import BootstrapConfig
    from online_dt.embedded.bootstrap import ensure_embedded_model

    return ensure_embedded_model(BootstrapConfig(), progress=False)

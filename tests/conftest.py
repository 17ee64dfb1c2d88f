"""Shared fixtures: the embedded default base model, built once per test session and cached;
a fresh local Ray instance without its dashboard."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def embedded_model_dir():
    """Path of the embedded default base model (built on first use, then reused from cache)."""
    from online_dt.config import BootstrapConfig
    from online_dt.embedded.bootstrap import ensure_embedded_model

    return ensure_embedded_model(BootstrapConfig(), progress=False)


@pytest.fixture
def local_ray(monkeypatch):
    """A fresh in-process Ray instance with 2 CPUs and no dashboard (never an existing
    cluster), shut down after the test."""
    import ray

    # a throw-away local instance: no token authentication (see tests/test_e2e_ray_job.py)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=f"/tmp/ray-test-{os.getpid()}",
    )
    try:
        yield ray
    finally:
        ray.shutdown()

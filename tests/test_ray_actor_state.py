"""Whether a dead Ray actor may come back, read on a local Ray instance without its dashboard
(how ``online-dt run`` starts one): :func:`actors.ray_futures._may_come_back` reads Ray's
control store, not the dashboard's state API."""

from __future__ import annotations

import os
import signal
import time

import pytest

from actors.ray_futures import _may_come_back

pytestmark = pytest.mark.slow


@pytest.fixture
def ray_without_dashboard(local_ray, monkeypatch):
    """``local_ray`` (no dashboard) and the list of calls to Ray's state API, which the
    dashboard serves: the test checks that it stays empty (the stand-in raises, as the real
    API does without a dashboard, and ``_may_come_back`` would then assume a restart)."""
    import ray.util.state

    asked: list[tuple] = []

    def no_state_api(*args, **kwargs):
        asked.append(args)
        raise ConnectionError("the state API needs the dashboard")

    monkeypatch.setattr(ray.util.state, "get_actor", no_state_api)
    return local_ray, asked


def _wait_for(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_restartable_actor_may_come_back_until_its_restarts_are_spent(ray_without_dashboard):
    ray, state_api_calls = ray_without_dashboard

    @ray.remote(max_restarts=1, num_cpus=0)
    class Worker:
        def pid(self) -> int:
            return os.getpid()

    worker = Worker.remote()
    actor_id = worker._actor_id.hex()
    first = ray.get(worker.pid.remote(), timeout=30)
    assert _may_come_back(actor_id), "alive"
    assert state_api_calls == [], "read from Ray's control store, not the dashboard's state API"

    os.kill(first, signal.SIGKILL)  # one restart left: Ray brings it back
    assert _may_come_back(actor_id)
    _wait_for(lambda: _pid_or_none(ray, worker) not in (None, first))
    assert _may_come_back(actor_id)

    os.kill(_pid_or_none(ray, worker), signal.SIGKILL)  # restarts spent: gone for good
    _wait_for(lambda: not _may_come_back(actor_id))
    assert not _may_come_back(None)
    assert state_api_calls == [], "read from Ray's control store, not the dashboard's state API"


def _pid_or_none(ray, worker) -> int | None:
    try:
        return ray.get(worker.pid.remote(), timeout=10)
    except Exception:
        return None

"""Ray flavour of the loop's futures: a handle's method call submits to an actor and returns a
future (:mod:`online_dt.loop.futures` is the in-process flavour)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class RayFuture:
    """A submitted actor call; ``result()`` is ``ray.get`` with Ray's errors translated.

    The error a remote method raised comes back as itself (Ray's ``RayTaskError`` unwrapped,
    chained for its remote traceback), so the core handles it as it would in process; the
    death of the actor's process becomes :class:`online_dt.loop.futures.WorkerLostError`.
    ``name`` says which call it is in a timeout's message.
    """

    def __init__(self, ref: Any, name: str = "the actor call") -> None:
        self.ref = ref
        self.name = name

    def result(self, timeout: float | None = None) -> Any:
        """Block until the call finished, at most ``timeout`` seconds (``None``: no limit);
        return its value or raise its error.

        Raises:
            CallTimeoutError: the call had not finished after ``timeout`` seconds (Ray's
                ``GetTimeoutError``); the actor goes on running it (see :func:`kill_and_restart`).
            WorkerLostError: the actor died (``restarting=False``) or is unavailable while
                Ray restarts it (``restarting=True``).
            Exception: what the remote method raised.
        """
        import ray
        from ray.exceptions import (
            ActorUnavailableError,
            GetTimeoutError,
            RayActorError,
            RayTaskError,
        )

        from online_dt.loop.futures import CallTimeoutError, WorkerLostError

        try:
            return ray.get(self.ref, timeout=timeout)
        except GetTimeoutError as e:
            raise CallTimeoutError(f"{self.name} did not return within {timeout:g}s") from e
        except RayActorError as e:
            restarting = isinstance(e, ActorUnavailableError) or (
                not getattr(e, "_actor_init_failed", False) and _may_come_back(e.actor_id)
            )
            message = f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"
            raise WorkerLostError(message, restarting=restarting) from e
        except RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, Exception):
                raise cause from e
            raise


def _may_come_back(actor_id: str | None) -> bool:
    """Whether an actor that raised ``ActorDiedError`` is being restarted rather than gone.

    Calls that reached the old process before Ray noticed its death fail with
    ``ActorDiedError`` even when Ray restarts the actor (``max_restarts``), so the actor's
    state is asked for: anything but ``DEAD`` may come back. The state is read from Ray's
    control store (GCS) with ``ray._private.state.actors``, Ray's own lookup of one actor's
    table entry, which needs no dashboard (a local instance starts without one, see
    :func:`actors.controller.start_ray`); Ray's state API (``ray.util.state``, served by the
    dashboard) is the fallback should that lookup move in another Ray version. When neither
    can read it, a restart is assumed and the caller's restart timeout bounds the wait.
    """
    if not actor_id:
        return False
    try:
        from ray._private.state import actors

        entry = actors(actor_id=actor_id)
        return not entry or entry.get("State") != "DEAD"
    except Exception:  # the lookup moved or failed: ask the state API instead
        pass
    try:
        from ray.util.state import get_actor

        state = get_actor(actor_id, timeout=10)
    except Exception:  # the state API needs Ray's dashboard; without it, assume a restart
        return True
    return state is None or state.state != "DEAD"


class RayHandle:
    """Wraps a Ray actor handle so ``handle.method(*args)`` returns a :class:`RayFuture`."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def __getattr__(self, name: str) -> Callable[..., RayFuture]:
        method = getattr(self.actor, name)
        return lambda *args, **kwargs: RayFuture(
            method.remote(*args, **kwargs), f"actor method {name}"
        )


def wait_until_back(actor: Any, timeout_s: float, ping: str = "pid") -> float:
    """Wait until ``actor`` answers a call, e.g. while Ray restarts it.

    A call sent to a restarting actor waits in Ray's queue until the constructor has run
    (or fails at once while Ray has not yet noticed the death); waiting here first keeps a
    restart's time out of the timeout of the call that follows.

    Args:
        actor: the Ray actor handle.
        timeout_s: longest wait (seconds).
        ping: a method without arguments, cheap to call.

    Returns:
        Seconds waited.

    Raises:
        WorkerLostError: the actor will not come back (``max_restarts`` spent, or its
            constructor failed), or is still restarting after ``timeout_s``.
        CallTimeoutError: it did not answer ``ping`` within ``timeout_s``.
    """
    import time

    from online_dt.loop.futures import call_when_back

    start = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    method = getattr(actor, ping)
    call_when_back(
        lambda: RayFuture(method.remote(), f"actor method {ping}").result(
            timeout=max(0.0, deadline - time.monotonic())
        ),
        timeout_s,
    )
    return time.perf_counter() - start


def kill_and_restart(actor: Any, timeout_s: float, ping: str = "pid") -> float:
    """End ``actor``'s process and wait until Ray has restarted it.

    ``ray.kill(actor, no_restart=False)`` ends the process at once, whatever it is running (a
    call that hangs included; its pending result fails), and Ray starts a new one, which runs
    the constructor again. The restart spends one of the actor's ``max_restarts`` (measured on
    Ray 2.60: with ``max_restarts=1`` a second kill leaves the actor dead). Returns once the
    new process answers ``ping`` (:func:`wait_until_back`), so that what is called next does
    not count the restart's time against its own timeout.

    Args:
        actor: the Ray actor handle.
        timeout_s: longest wait for the restarted actor to answer (seconds).
        ping: the method called to see that it is back.

    Returns:
        Seconds from the kill until the restarted actor answered.

    Raises:
        WorkerLostError: the actor is not restarted (``max_restarts`` spent, or its constructor
            failed), or is still restarting after ``timeout_s``.
        CallTimeoutError: the restarted actor did not answer ``ping`` within ``timeout_s``.
    """
    import time

    import ray

    start = time.perf_counter()
    ray.kill(actor, no_restart=False)
    wait_until_back(actor, timeout_s, ping)
    return time.perf_counter() - start


def end_actor(actor: Any, timeout_s: float, ping: str = "pid", poll_s: float = 0.2) -> float:
    """End ``actor`` for good (``ray.kill(actor, no_restart=True)``) and wait until a call to
    it fails as a dead actor's does, so that nothing it runs can overlap a successor's work.

    Cheap for an actor whose process has died already (the usual case: the call fails at
    once); ``ray.kill`` of a dead actor is harmless.

    Args:
        actor: the Ray actor handle.
        timeout_s: longest wait for the actor to be gone (seconds).
        ping: a method without arguments, cheap to call.
        poll_s: pause between pings while the actor still answers (seconds).

    Returns:
        Seconds from the kill until the actor was seen gone.

    Raises:
        TimeoutError: it still answered (or was only unreachable) after ``timeout_s``.
    """
    import time

    import ray
    from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

    start = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    ray.kill(actor, no_restart=True)
    method = getattr(actor, ping)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the actor still answered {timeout_s:g}s after ray.kill")
        try:
            ray.get(method.remote(), timeout=left)
        except ActorUnavailableError:  # unreachable, not known dead yet
            pass
        except RayActorError:
            return time.perf_counter() - start
        except GetTimeoutError:
            continue
        time.sleep(poll_s)

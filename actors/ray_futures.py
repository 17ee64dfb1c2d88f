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
    """

    def __init__(self, ref: Any) -> None:
        self.ref = ref

    def result(self) -> Any:
        """Block until the call finished; return its value or raise its error.

        Raises:
            WorkerLostError: the actor died (``restarting=False``) or is unavailable while
                Ray restarts it (``restarting=True``).
            Exception: what the remote method raised.
        """
        import ray
        from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

        from online_dt.loop.futures import WorkerLostError

        try:
            return ray.get(self.ref)
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
    state is asked for: anything but ``DEAD`` may come back. When the state cannot be read
    (no dashboard), the caller's restart timeout bounds the wait.
    """
    if not actor_id:
        return False
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
        return lambda *args, **kwargs: RayFuture(method.remote(*args, **kwargs))

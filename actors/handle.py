"""Ray flavour of the loop's handles: method calls submit to an actor and return futures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class RayFuture:
    """A submitted actor call; ``result()`` is ``ray.get`` with Ray's errors translated.

    The error a remote method raised comes back as itself (Ray's ``RayTaskError`` unwrapped,
    chained for its remote traceback), so the core handles it as it would in process; the
    death of the actor's process becomes :class:`online_dt.handles.WorkerLostError`.
    """

    def __init__(self, ref: Any) -> None:
        self.ref = ref

    def result(self) -> Any:
        """Block until the call finished; return its value or raise its error.

        Raises:
            WorkerLostError: the actor died or is unreachable (Ray may be restarting it).
            Exception: what the remote method raised.
        """
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        from online_dt.handles import WorkerLostError

        try:
            return ray.get(self.ref)
        except RayActorError as e:
            raise WorkerLostError(f"{type(e).__name__}: {str(e).splitlines()[0]}") from e
        except RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, Exception):
                raise cause from e
            raise


class RayHandle:
    """Wraps a Ray actor handle so ``handle.method(*args)`` returns a :class:`RayFuture`."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def __getattr__(self, name: str) -> Callable[..., RayFuture]:
        method = getattr(self.actor, name)
        return lambda *args, **kwargs: RayFuture(method.remote(*args, **kwargs))

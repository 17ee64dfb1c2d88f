"""Ray flavour of the loop's handles: method calls submit to an actor and return futures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class RayFuture:
    """A submitted actor call; ``result()`` is ``ray.get``."""

    def __init__(self, ref: Any) -> None:
        self.ref = ref

    def result(self) -> Any:
        """Block until the call finished; return its value or raise its error."""
        import ray

        return ray.get(self.ref)


class RayHandle:
    """Wraps a Ray actor handle so ``handle.method(*args)`` returns a :class:`RayFuture`."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def __getattr__(self, name: str) -> Callable[..., RayFuture]:
        method = getattr(self.actor, name)
        return lambda *args, **kwargs: RayFuture(method.remote(*args, **kwargs))

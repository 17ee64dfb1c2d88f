"""Futures: how the loop calls its workers the same way in process and on Ray.

The loop calls methods on *handles* and gets *futures* back (:class:`Future`: anything with
``result()``). :class:`LocalHandle` runs the call at once (tests, ``--local``);
``actors.ray_futures.RayHandle`` submits it to a Ray actor. A worker whose process died shows
as :class:`WorkerLostError` from ``result()``, whichever the flavour.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

T = TypeVar("T", covariant=True)


class WorkerLostError(RuntimeError):
    """A worker's process died (or became unreachable) while a call was pending.

    Raised by a future's ``result()``; ``actors.RayFuture`` turns Ray's actor-death errors into
    this one so the core can tell a lost worker (retry) from an error raised by the call itself.

    Attributes:
        restarting: the worker is being restarted (Ray's ``ActorUnavailableError``): a call
            made once it is back will run; ``False`` when it is gone for good.
    """

    def __init__(self, message: str, *, restarting: bool = False) -> None:
        super().__init__(message)
        self.restarting = restarting


def call_when_back(
    call: Callable[[], T],
    timeout_s: float,
    poll_s: float = 0.5,
    on_lost: Callable[[WorkerLostError], None] | None = None,
) -> T:
    """``call()`` (submit and wait), repeated while the worker is restarting.

    A restart (a new process, a model loaded again) takes seconds to minutes; calls made
    meanwhile fail at once with a restarting :class:`WorkerLostError`. This waits them out.

    Args:
        call: submits the call and returns its result.
        timeout_s: longest wait for the worker to come back (seconds).
        poll_s: pause between tries (seconds).
        on_lost: called once, with the first restarting error, when a wait begins.

    Raises:
        WorkerLostError: the worker is gone for good, or still restarting after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    waiting = False
    while True:
        try:
            return call()
        except WorkerLostError as e:
            if not e.restarting or time.monotonic() >= deadline:
                raise
            if not waiting and on_lost is not None:
                on_lost(e)
            waiting = True
            time.sleep(poll_s)


class Future(Protocol[T]):
    """A pending result."""

    def result(self) -> T:
        """Block until the call finished; return its value or raise its exception."""
        ...


class Done:
    """An already finished call (holds a value or an exception)."""

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self._value = value
        self._error = error

    def result(self) -> Any:
        """Return the value, or raise the call's exception."""
        if self._error is not None:
            raise self._error
        return self._value


class Gather:
    """Results of several futures combined by ``combine`` (default: a list of them)."""

    def __init__(
        self, futures: Sequence[Any], combine: Callable[[list[Any]], Any] | None = None
    ) -> None:
        self.futures = list(futures)
        self.combine = combine or (lambda values: values)

    def result(self) -> Any:
        """Wait for every future, then combine their values."""
        return self.combine([f.result() for f in self.futures])


class LocalHandle:
    """Wraps an object so each method call returns a :class:`Done` future."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def __getattr__(self, name: str) -> Callable[..., Done]:
        method = getattr(self.target, name)

        def call(*args: Any, **kwargs: Any) -> Done:
            try:
                return Done(method(*args, **kwargs))
            except Exception as e:  # surfaced by result(), as a remote call would
                return Done(error=e)

        return call

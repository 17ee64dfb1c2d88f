"""Futures: how the loop calls its workers the same way in process and on Ray.

The loop calls methods on *handles* and gets *futures* back (:class:`Future`: anything with
``result()``). :class:`LocalHandle` runs the call at once (tests, ``--local``);
``actors.ray_futures.RayHandle`` submits it to a Ray actor; :class:`ThreadHandle` runs it on a
thread of its own, so that waiting for it can time out in process. A worker whose process died
shows as :class:`WorkerLostError` from ``result()``, and a call that did not return in time as
:class:`CallTimeoutError` from ``result(timeout)``, whichever the flavour.
"""

from __future__ import annotations

import itertools
import threading
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


class CallTimeoutError(TimeoutError):
    """A call did not return within the time its caller waited (``result(timeout)``).

    Only the wait ended: the worker may still be running the call. Ending it is the caller's
    business (a Ray actor can be killed; a thread in this process cannot).
    """


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


class TimedFuture(Protocol[T]):
    """A pending result whose wait can be bounded."""

    def result(self, timeout: float | None = None) -> T:
        """Block until the call finished, at most ``timeout`` seconds (``None``: no limit);
        return its value or raise its exception.

        Raises:
            CallTimeoutError: the call had not finished after ``timeout`` seconds.
        """
        ...


class Done:
    """An already finished call (holds a value or an exception)."""

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self._value = value
        self._error = error

    def result(self, timeout: float | None = None) -> Any:
        """Return the value, or raise the call's exception; ``timeout`` is accepted for
        :class:`TimedFuture` and never reached (the call has already run)."""
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


class ThreadFuture:
    """A call running on a thread of its own (see :class:`ThreadHandle`)."""

    def __init__(self, name: str, call: Callable[[], Any]) -> None:
        self.name = name
        self._finished = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        # a daemon thread: one that never returns does not keep the process alive at exit
        threading.Thread(target=self._run, args=(call,), name=name, daemon=True).start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self._value = call()
        except BaseException as e:  # surfaced by result(), as a remote call would
            self._error = e
        finally:
            self._finished.set()

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the call, at most ``timeout`` seconds (``None``: no limit).

        Raises:
            CallTimeoutError: it had not returned after ``timeout`` seconds; the thread goes on
                running it (a thread cannot be killed).
            Exception: what the call raised.
        """
        if not self._finished.wait(timeout):
            raise CallTimeoutError(f"{self.name} did not return within {timeout:g}s")
        if self._error is not None:
            raise self._error
        return self._value


class ThreadHandle:
    """Wraps an object so each method call starts on a new daemon thread and returns a
    :class:`ThreadFuture`, whose ``result(timeout)`` can stop waiting.

    This is how a call in process is timed out, and all it does: Python cannot kill a thread,
    so a call that never returns is abandoned, not ended. Its thread keeps running (and keeps
    its CPU if it computes) until the call returns or the process exits, and the next call
    runs on a new thread beside it, on the same object.
    """

    def __init__(self, target: Any) -> None:
        self.target = target
        self._calls = itertools.count(1)

    def __getattr__(self, name: str) -> Callable[..., ThreadFuture]:
        method = getattr(self.target, name)

        def call(*args: Any, **kwargs: Any) -> ThreadFuture:
            label = f"{type(self.target).__name__}.{name} (call {next(self._calls)})"
            return ThreadFuture(label, lambda: method(*args, **kwargs))

        return call

"""Call the loop's workers the same way in process and on Ray.

The controller's loop calls methods on *handles* and gets *futures* back (anything with
``result()``). :class:`LocalHandle` runs the call at once (tests, single process);
``actors.RayHandle`` submits it to a Ray actor. :class:`SamplerGroup` fans one rollout request
out over several sampler replicas and gathers the results, like OpenRLHF's ``RayActorGroup``;
when a replica's process dies mid-rollout (:class:`WorkerLostError`), the group re-sends it the
current weights and re-issues its chunk, or drops the chunk with a logged count.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from online_dt.rollout.sampler import SamplingParams
from online_dt.samples import Rollout

T = TypeVar("T", covariant=True)
log = logging.getLogger(__name__)


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


class RolloutFuture:
    """Pending rollouts of a :class:`SamplerGroup` request; ``result()`` gathers the chunks.

    A chunk whose replica was lost, or which comes back from an older policy version than the
    group last sent (the replica was restarted between calls), is re-issued after re-sending
    the current weights, up to ``retries`` times, then dropped. After ``result()``,
    :attr:`stats` holds ``prompts_reissued`` and ``prompts_dropped`` (each prompt stands for
    its ``n`` samples), ``sampler_failures`` (lost calls and stale answers seen) and
    ``sampler_recovery_s`` (seconds from the first failure to the re-issued chunk's result).

    Raises (from ``result()``):
        WorkerLostError: every chunk was dropped (no rollouts at all).
        Exception: any other error of a replica's ``generate``, unchanged.
    """

    def __init__(
        self,
        group: SamplerGroup,
        chunks: list[tuple[int, int, int, SamplingParams, Any]],
        request: tuple[Sequence[str], Sequence[float]],
    ) -> None:
        self.group = group
        self.chunks = chunks
        self.request = request
        self.expected_version: int | None = getattr(group.update, "version", None)
        self.stats: dict[str, float] = {
            "prompts_reissued": 0,
            "prompts_dropped": 0,
            "sampler_failures": 0,
            "sampler_recovery_s": 0.0,
        }

    def result(self) -> list[Rollout]:
        """Wait for every chunk; rollouts in prompt order, ``prompt_index`` over the request."""
        prompts, targets = self.request
        out: list[Rollout] = []
        for k, lo, hi, params, future in self.chunks:
            chunk = self._chunk_result(k, lo, hi, params, future, prompts, targets)
            for r in chunk:
                r.prompt_index += lo
                out.append(r)
        if self.chunks and not out and self.stats["prompts_dropped"]:
            raise WorkerLostError("every sampler replica was lost; no rollouts this iteration")
        return out

    def _chunk_result(
        self,
        k: int,
        lo: int,
        hi: int,
        params: SamplingParams,
        future: Any,
        prompts: Sequence[str],
        targets: Sequence[float],
    ) -> list[Rollout]:
        handle, retries = self.group.handles[k], self.group.retries
        lost_at: float | None = None
        problem = ""
        for attempt in range(retries + 1):
            if attempt:
                log.warning(
                    "sampler %d: %s; re-issuing its %d prompts (attempt %d/%d)",
                    k,
                    problem,
                    hi - lo,
                    attempt,
                    retries,
                )
                self.stats["prompts_reissued"] += hi - lo
                time.sleep(self.group.backoff_s * 2 ** (attempt - 1))
            try:
                if attempt:
                    call_when_back(lambda: self.group.resync(k), self.group.restart_timeout_s)
                    future = handle.generate(prompts[lo:hi], targets[lo:hi], params)
                chunk = future.result()
            except WorkerLostError as e:
                lost_at = lost_at or time.perf_counter()
                self.stats["sampler_failures"] += 1
                problem = f"lost during a rollout ({e})"
                continue
            oldest = min((r.policy_version for r in chunk), default=self.expected_version)
            if self.expected_version is not None and oldest < self.expected_version:
                # restarted between calls: it sampled with the weights it was created with
                lost_at = lost_at or time.perf_counter()
                self.stats["sampler_failures"] += 1
                problem = f"answered with policy version {oldest} < {self.expected_version}"
                continue
            if lost_at is not None:
                self.stats["sampler_recovery_s"] += time.perf_counter() - lost_at
            return chunk
        log.error(
            "sampler %d: %s after %d re-issues; dropping its %d prompts",
            k,
            problem,
            retries,
            hi - lo,
        )
        self.stats["prompts_dropped"] += hi - lo
        if lost_at is not None:
            self.stats["sampler_recovery_s"] += time.perf_counter() - lost_at
        self.group.stale.add(k)
        return []


class SamplerGroup:
    """Fans rollouts out over sampler replicas (handles whose calls return futures).

    A request of P prompts is split into contiguous chunks, one per replica; results come back
    in prompt order with ``prompt_index`` relative to the whole request. The group remembers
    the last weight update; a replica that was lost (and restarted by its supervisor, e.g.
    Ray's ``max_restarts``) gets it again before it samples.

    Args:
        handles: one handle per replica (``generate`` and ``load_weights`` return futures).
        retries: re-issues of a lost replica's chunk before it is dropped (>= 0).
        backoff_s: wait before the first re-issue, doubled at each further one (seconds).
        restart_timeout_s: how long a re-issue waits for a restarting replica (seconds).
    """

    def __init__(
        self,
        handles: Sequence[Any],
        retries: int = 2,
        backoff_s: float = 0.0,
        restart_timeout_s: float = 600.0,
    ) -> None:
        if not handles:
            raise ValueError("a sampler group needs at least one sampler")
        self.handles = list(handles)
        self.retries = retries
        self.backoff_s = backoff_s
        self.restart_timeout_s = restart_timeout_s
        self.update: Any = None
        self.stale: set[int] = set()

    def resync(self, k: int) -> None:
        """Send replica ``k`` the last weight update (a restarted replica starts from the
        weights it was created with). Raises :class:`WorkerLostError` if it is still lost."""
        if self.update is not None:
            self.handles[k].load_weights(self.update).result()
        self.stale.discard(k)

    def generate(
        self, prompts: Sequence[str], targets: Sequence[float], params: SamplingParams
    ) -> RolloutFuture:
        """Submit to every replica; the future's result is the concatenated rollouts."""
        n = len(self.handles)
        size = -(-len(prompts) // n)
        chunks = []
        for k, handle in enumerate(self.handles):
            lo, hi = k * size, min((k + 1) * size, len(prompts))
            if lo >= hi:
                continue
            seed = None if params.seed is None else params.seed + 1_000_003 * k
            chunk_params = SamplingParams(
                params.n, params.temperature, params.top_p, params.max_new_tokens, seed
            )
            if k in self.stale:
                with contextlib.suppress(WorkerLostError):  # else generate takes the re-issue path
                    self.resync(k)
            chunks.append(
                (
                    k,
                    lo,
                    hi,
                    chunk_params,
                    handle.generate(prompts[lo:hi], targets[lo:hi], chunk_params),
                )
            )
        return RolloutFuture(self, chunks, (prompts, targets))

    def load_weights(self, update: Any) -> Gather:
        """Apply a weight update on every replica; a lost replica is marked stale and gets the
        update before its next rollout instead of failing the sync."""
        self.update = update
        return Gather(
            [_SyncFuture(self, k, h.load_weights(update)) for k, h in enumerate(self.handles)]
        )


class _SyncFuture:
    """A replica's weight sync that marks the replica stale if it was lost."""

    def __init__(self, group: SamplerGroup, k: int, future: Any) -> None:
        self.group, self.k, self.future = group, k, future

    def result(self) -> None:
        try:
            self.future.result()
        except WorkerLostError as e:
            log.warning(
                "sampler %d lost during weight sync (%s); resync before it samples", self.k, e
            )
            self.group.stale.add(self.k)

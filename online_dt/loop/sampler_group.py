"""Fan one rollout request out over several sampler replicas, surviving lost replicas.

:class:`SamplerGroup` splits a request into one chunk per replica and gathers the results in
prompt order, like OpenRLHF's ``RayActorGroup``. When a replica's process dies mid-rollout
(:class:`~online_dt.loop.futures.WorkerLostError`), or answers that it has no weights (a restarted
``weight_sync: ray`` sampler, :class:`~online_dt.rollout.sampler.NoWeightsError`), the group
re-sends it the current weights and re-issues its chunk, or drops the chunk with a logged count
(:class:`SamplerRecovery`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from online_dt.loop.futures import Gather, WorkerLostError, call_when_back
from online_dt.rollout.sampler import NoWeightsError, SamplingParams
from online_dt.samples import Rollout
from online_dt.util.seeds import derived_seed

log = logging.getLogger(__name__)


@dataclass
class SamplerRecovery:
    """What a rollout request went through when replicas were lost.

    Attributes:
        prompts_reissued: prompts re-sent to a replica after it was lost (each stands for its
            ``n`` samples).
        prompts_dropped: prompts given up on after the retries.
        sampler_failures: lost calls and stale answers seen.
        sampler_recovery_s: seconds from the first failure to the re-issued chunk's result.
        samples_over_lag: samples dropped before scoring because they were more than
            ``online.max_policy_lag`` versions behind the learner (0 in ``sync`` mode); set by
            :func:`online_dt.loop.loop.bound_policy_lag`.
    """

    prompts_reissued: int = 0
    prompts_dropped: int = 0
    sampler_failures: int = 0
    sampler_recovery_s: float = 0.0
    samples_over_lag: int = 0

    def metrics(self) -> dict[str, float]:
        """The fields as the iteration record's keys."""
        return asdict(self)


@dataclass
class RolloutBatch:
    """The rollouts of one request, in prompt order, and how it recovered from lost replicas.

    Attributes:
        rollouts: ``P * n`` rollouts, ``prompt_index`` over the whole request.
        recovery: re-issues, drops and failures of this request.
    """

    rollouts: list[Rollout]
    recovery: SamplerRecovery = field(default_factory=SamplerRecovery)


class RolloutFuture:
    """Pending rollouts of a :class:`SamplerGroup` request; ``result()`` gathers the chunks.

    A chunk whose replica was lost, or which comes back from an older policy version than the
    group last sent or with :class:`~online_dt.rollout.sampler.NoWeightsError` (the replica
    was restarted between calls: a checkpoint sampler starts from the newest published
    version, a ``ray`` one without weights), is re-issued after re-sending the current
    weights, up to ``retries`` times, then dropped; the result's :class:`SamplerRecovery`
    counts both.

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
        self.recovery = SamplerRecovery()

    def result(self) -> RolloutBatch:
        """Wait for every chunk; rollouts in prompt order, ``prompt_index`` over the request."""
        prompts, targets = self.request
        out: list[Rollout] = []
        for k, lo, hi, params, future in self.chunks:
            chunk = self._chunk_result(k, lo, hi, params, future, prompts, targets)
            for r in chunk:
                r.prompt_index += lo
                out.append(r)
        if self.chunks and not out and self.recovery.prompts_dropped:
            raise WorkerLostError("every sampler replica was lost; no rollouts this iteration")
        return RolloutBatch(out, self.recovery)

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
                self.recovery.prompts_reissued += hi - lo
                time.sleep(self.group.backoff_s * 2 ** (attempt - 1))
            try:
                if attempt:
                    call_when_back(lambda: self.group.resync(k), self.group.restart_timeout_s)
                    future = handle.generate(prompts[lo:hi], targets[lo:hi], params)
                chunk = future.result()
            except WorkerLostError as e:
                lost_at = lost_at or time.perf_counter()
                self.recovery.sampler_failures += 1
                problem = f"lost during a rollout ({e})"
                continue
            except NoWeightsError:
                # restarted between calls, rebuilt without weights (weight_sync: ray)
                lost_at = lost_at or time.perf_counter()
                self.recovery.sampler_failures += 1
                problem = "answered that it has no weights (restarted)"
                continue
            oldest = min((r.policy_version for r in chunk), default=self.expected_version)
            if self.expected_version is not None and oldest < self.expected_version:
                # restarted between calls: it sampled with the weights it was created with
                lost_at = lost_at or time.perf_counter()
                self.recovery.sampler_failures += 1
                problem = f"answered with policy version {oldest} < {self.expected_version}"
                continue
            if lost_at is not None:
                self.recovery.sampler_recovery_s += time.perf_counter() - lost_at
            return chunk
        log.error(
            "sampler %d: %s after %d re-issues; dropping its %d prompts",
            k,
            problem,
            retries,
            hi - lo,
        )
        self.recovery.prompts_dropped += hi - lo
        if lost_at is not None:
            self.recovery.sampler_recovery_s += time.perf_counter() - lost_at
        self.group.stale.add(k)
        return []


class SamplerGroup:
    """Fans rollouts out over sampler replicas (handles whose calls return futures).

    A request of P prompts is split into contiguous chunks, one per replica; results come back
    in prompt order with ``prompt_index`` relative to the whole request. The group remembers
    the last weight update (with ``weight_sync: ray`` it holds the update's state, or its
    ``ObjectRef``, which keeps the object in Ray's object store); a replica that was lost (and
    restarted by its supervisor, e.g. Ray's ``max_restarts``) gets it again before it
    samples.

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
            seed = None if params.seed is None else derived_seed(params.seed, k)
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

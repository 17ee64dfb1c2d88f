"""Fan one rollout request out over several sampler replicas, surviving lost replicas.

:class:`SamplerGroup` splits a request into one chunk per replica and gathers the results in
prompt order, like OpenRLHF's ``RayActorGroup``. When a replica's process dies mid-rollout
(:class:`~online_dt.loop.futures.WorkerLostError`), or answers that it has no weights (a restarted
``weight_sync: ray`` sampler, :class:`~online_dt.rollout.sampler.NoWeightsError`), the group
re-sends it the current weights and re-issues its chunk (:class:`SamplerRecovery`).

A replica found lost (it did not come back within ``restart_timeout_s``, Ray reports it dead
for good, or it failed every re-issue) is taken out of the split: its chunk is re-issued to the
remaining healthy replicas, and later rollouts split their prompts over those only. With a
``probe`` method, a lost replica is asked at the start of each rollout whether it answers
again (one call at a time, polled without waiting); once it does, it gets the current weights
and is put back in the split. Only when every replica is lost is a chunk dropped (counted), as
before, and a rollout with no sample at all raises :class:`WorkerLostError`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from online_dt.loop.futures import CallTimeoutError, Gather, WorkerLostError, call_when_back
from online_dt.loop.rollout_batch import RolloutBatch, SamplerRecovery
from online_dt.rollout.sampler import NoWeightsError, SamplingParams
from online_dt.samples import Reward, Rollout
from online_dt.util.seeds import derived_seed

log = logging.getLogger(__name__)


class RolloutFuture:
    """Pending rollouts of a :class:`SamplerGroup` request; ``result()`` gathers the chunks.

    A chunk whose replica was lost, or which comes back from an older policy version than the
    group last sent or with :class:`~online_dt.rollout.sampler.NoWeightsError` (the replica
    was restarted between calls and starts without weights), is re-issued to it after
    re-sending the current weights, up to ``retries`` times. A replica that does not take the
    weights again within ``restart_timeout_s`` (or is gone for good) while other replicas
    are healthy, or that fails every re-issue, is marked lost
    (:meth:`SamplerGroup.mark_lost`) and the chunk is split over the healthy replicas; with
    none left it is dropped. The result's :class:`SamplerRecovery` counts all of it.

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
        self.recovery.samplers_healthy = len(self.group.healthy())
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
        targets: Sequence[Reward],
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
                time.sleep(self.group.backoff_s * 2 ** (attempt - 1))
                try:
                    call_when_back(lambda: self.group.resync(k), self.group.restart_timeout_s)
                except WorkerLostError as e:  # still restarting after the wait, or gone for good
                    self.recovery.sampler_failures += 1
                    problem = f"did not come back ({e})"
                    if any(j != k for j in self.group.healthy()):
                        break  # the healthy replicas take its chunk
                    continue  # no other replica: wait for this one as many times as configured
                self.recovery.prompts_reissued += hi - lo
                future = handle.generate(prompts[lo:hi], targets[lo:hi], params)
            try:
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
            if k in self.group.lost:  # every replica was lost, and this one answered again
                self.group.put_back(k)
            return chunk
        else:
            problem = f"{problem} after {retries} re-issues"
        chunk = self._fall_back(k, lo, hi, params, prompts, targets, problem)
        if lost_at is not None:
            self.recovery.sampler_recovery_s += time.perf_counter() - lost_at
        return chunk

    def _fall_back(
        self,
        k: int,
        lo: int,
        hi: int,
        params: SamplingParams,
        prompts: Sequence[str],
        targets: Sequence[Reward],
        problem: str,
    ) -> list[Rollout]:
        """Mark replica ``k`` lost and re-issue its chunk ``[lo, hi)`` over the healthy
        replicas (each part seeded from ``params.seed`` and the replica), or drop it when none
        is left. Rollouts come back in prompt order, ``prompt_index`` relative to ``lo``."""
        self.group.mark_lost(k, problem)
        healthy = self.group.healthy()
        if not healthy:
            log.error(
                "sampler %d: %s; no healthy replica left: dropping its %d prompts",
                k,
                problem,
                hi - lo,
            )
            self.recovery.prompts_dropped += hi - lo
            return []
        log.warning(
            "sampler %d: %s; re-issuing its %d prompts to the %d healthy replica(s)",
            k,
            problem,
            hi - lo,
            len(healthy),
        )
        parts = []
        for j, (a, b) in zip(healthy, split(lo, hi, len(healthy)), strict=True):
            if a >= b:
                continue
            seed = None if params.seed is None else derived_seed(params.seed, j)
            part = SamplingParams(
                params.n, params.temperature, params.top_p, params.max_new_tokens, seed
            )
            self.recovery.prompts_reissued += b - a
            parts.append(
                (j, a, b, part, self.group.handles[j].generate(prompts[a:b], targets[a:b], part))
            )
        out: list[Rollout] = []
        for j, a, b, part, future in parts:
            for r in self._chunk_result(j, a, b, part, future, prompts, targets):
                r.prompt_index += a - lo
                out.append(r)
        return out


def split(lo: int, hi: int, parts: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` cut into ``parts`` contiguous ranges of ``ceil((hi - lo) / parts)`` items
    (the last ones shorter, possibly empty)."""
    size = -(-(hi - lo) // parts)
    return [(min(lo + i * size, hi), min(lo + (i + 1) * size, hi)) for i in range(parts)]


class SamplerGroup:
    """Fans rollouts out over sampler replicas (handles whose calls return futures).

    A request of P prompts is split into contiguous chunks, one per replica; results come back
    in prompt order with ``prompt_index`` relative to the whole request. The group remembers
    the last weight update (with ``weight_sync: ray`` it holds the update's state, or its
    ``ObjectRef``, which keeps the object in Ray's object store); a replica that was lost (and
    restarted by its supervisor, e.g. Ray's ``max_restarts``) gets it again before it
    samples.

    A replica found lost for good is taken out of the split (:meth:`mark_lost`) and gets no
    work and no weight update until it answers ``probe`` again (see the module's docstring).

    Args:
        handles: one handle per replica (``generate`` and ``load_weights`` return futures).
        retries: re-issues of a lost replica's chunk before it is taken out of the split (>= 0).
        backoff_s: wait before the first re-issue, doubled at each further one (seconds).
        restart_timeout_s: how long a re-issue waits for a restarting replica (seconds).
        probe: name of a cheap method without arguments (e.g. ``pid`` of a Ray sampler actor)
            called on a lost replica to see whether it answers again; its future must accept
            ``result(timeout=0)``. ``None``: a lost replica never rejoins.
    """

    def __init__(
        self,
        handles: Sequence[Any],
        retries: int = 2,
        backoff_s: float = 0.0,
        restart_timeout_s: float = 600.0,
        probe: str | None = None,
    ) -> None:
        if not handles:
            raise ValueError("a sampler group needs at least one sampler")
        self.handles = list(handles)
        self.retries = retries
        self.backoff_s = backoff_s
        self.restart_timeout_s = restart_timeout_s
        self.probe = probe
        self.update: Any = None
        self.stale: set[int] = set()
        self.lost: dict[int, Any] = {}
        """Replicas out of the split, each with its pending probe (``None``: none in flight)."""
        self.gone: set[int] = set()
        """Lost replicas whose probe said they will not come back (never probed again)."""

    def healthy(self) -> list[int]:
        """The replicas in the split, in order."""
        return [k for k in range(len(self.handles)) if k not in self.lost]

    def mark_lost(self, k: int, reason: str) -> None:
        """Take replica ``k`` out of the split until it answers again; logged once (WARNING)."""
        if k in self.lost:
            return
        self.lost[k] = None
        self.stale.add(k)
        log.warning(
            "sampler %d taken out of the split (%s); %d of %d replicas healthy%s",
            k,
            reason,
            len(self.healthy()),
            len(self.handles),
            "" if self.probe else "; it will not be sent work again",
        )

    def probe_lost(self) -> None:
        """Put back in the split each lost replica whose probe answered and which took the
        current weights. A replica with no probe in flight is sent one (its previous one
        failed while it was restarting, or it was just lost). Never waits for a probe (each is
        polled with ``result(timeout=0)``); the resync of a replica that answered does wait
        (it is up). A replica whose probe fails as gone for good is not probed again."""
        if self.probe is None:
            return
        for k, pending in list(self.lost.items()):
            if k in self.gone:
                continue
            if pending is None:  # at most one probe in flight per replica
                pending = self.lost[k] = getattr(self.handles[k], self.probe)()
            try:
                pending.result(timeout=0)
            except CallTimeoutError:
                continue  # no answer yet
            except WorkerLostError as e:
                self.lost[k] = None  # ask again at the next rollout
                if not e.restarting:
                    self.gone.add(k)
                    log.warning("sampler %d will not come back (%s); no longer probed", k, e)
                continue
            try:
                self.resync(k)
            except WorkerLostError:
                self.lost[k] = None
                continue
            self.put_back(k)

    def put_back(self, k: int) -> None:
        """Put lost replica ``k`` back in the split (it answered and has the current
        weights); logged once (WARNING)."""
        if self.lost.pop(k, False) is False:
            return
        self.gone.discard(k)
        log.warning(
            "sampler %d answers again: back in the split; %d of %d replicas healthy",
            k,
            len(self.healthy()),
            len(self.handles),
        )

    def resync(self, k: int) -> None:
        """Send replica ``k`` the last weight update (a restarted replica starts from the
        weights it was created with). Raises :class:`WorkerLostError` if it is still lost."""
        if self.update is not None:
            self.handles[k].load_weights(self.update).result()
        self.stale.discard(k)

    def generate(
        self, prompts: Sequence[str], targets: Sequence[Reward], params: SamplingParams
    ) -> RolloutFuture:
        """Submit a chunk to every healthy replica (to every replica when none is healthy:
        each is waited for and re-issued to as configured, then its chunk is dropped); the
        future's result is the concatenated rollouts. Lost replicas are probed first
        (:meth:`probe_lost`)."""
        self.probe_lost()
        active = self.healthy() or list(range(len(self.handles)))
        chunks = []
        for k, (lo, hi) in zip(active, split(0, len(prompts), len(active)), strict=True):
            handle = self.handles[k]
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
        """Apply a weight update on every healthy replica; a replica lost meanwhile is marked
        stale and gets the update before its next rollout instead of failing the sync. A
        replica out of the split gets the latest update when it is put back."""
        self.update = update
        return Gather(
            [_SyncFuture(self, k, self.handles[k].load_weights(update)) for k in self.healthy()]
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

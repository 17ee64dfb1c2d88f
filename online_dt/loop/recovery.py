"""Continuing a run from its last checkpoint: ``--resume`` in a new job, and the learner
restarted within the job after its process died.

Both go through :func:`resume_or_start_over` and a learner built from what it finds:
:func:`resume_point` (the checkpoint, the iteration after it and the schedule state stored in
it; the logs of later iterations dropped, as those iterations run again), and a learner from
that checkpoint, which applies ``online.resume_policy`` to the samples persisted after it
(:class:`~online_dt.training.learner.Learner`), so the two cannot diverge.

A run with no checkpoint yet (its learner lost, or its driver stopped, in the warm start, or
in the first iterations with ``online.checkpoint_every`` above 1) starts over instead
(:func:`start_over_point`): a fresh learner deletes the replay-buffer shards persisted before
it, and the warm start runs again.

:func:`run_recovering` runs the loop and, when the learner is lost
(:class:`LearnerLostError`), restarts it through ``Workers.restart_learner`` up to
``fault_tolerance.learner_max_restarts`` times in the job: the new learner publishes the
checkpoint's version, every sampler is resynced to it, and the loop goes on from the
checkpoint.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from online_dt.config import OnlineRunConfig
from online_dt.launch.rundir import CHECKPOINT_STATE_FILE, RunDir, RunDirError
from online_dt.loop.futures import WorkerLostError
from online_dt.loop.loop import run_loop
from online_dt.loop.schedule import ScheduleState
from online_dt.loop.workers import LearnerWorker, Workers

log = logging.getLogger(__name__)


class LearnerLostError(WorkerLostError):
    """The learner's process died (or became unreachable) while one of its calls was pending,
    or it was lost and could not be restarted (the message says why)."""


@dataclass(frozen=True)
class ResumePoint:
    """Where a run continues from its last checkpoint.

    Attributes:
        checkpoint: the checkpoint directory (the learner is rebuilt from it); ``None``: the
            run starts over with a fresh learner (:func:`start_over_point`).
        start_iteration: the first iteration to run (the one after the checkpoint's).
        schedule_state: the target schedule's state stored in the checkpoint; ``None`` when
            the run starts over (the loop then runs the warm start, if any, as a new run does).
    """

    checkpoint: Path | None
    start_iteration: int
    schedule_state: ScheduleState | None


def resume_point(run: RunDir) -> ResumePoint:
    """Find ``run``'s last complete checkpoint and drop the metrics and sample-log records of
    the iterations after it (they run again).

    Raises:
        RunDirError: the run has no checkpoint yet.
    """
    checkpoint = run.latest_checkpoint()
    state = json.loads((checkpoint / CHECKPOINT_STATE_FILE).read_text())["controller"]
    run.truncate_logs(state["iteration"])
    schedule = ScheduleState.from_dict(state["schedule"])
    return ResumePoint(checkpoint, state["iteration"] + 1, schedule)


def start_over_point(run: RunDir) -> ResumePoint:
    """The point of a run that has no checkpoint yet: from the start, with a fresh learner (the
    warm start runs again, and every iteration's metrics and sample records are dropped)."""
    run.truncate_logs(-1)
    return ResumePoint(None, 0, None)


def resume_or_start_over(run: RunDir) -> ResumePoint:
    """:func:`resume_point` of ``run``, or :func:`start_over_point` when it has no checkpoint
    yet (``checkpoint`` is then ``None``): where a restarted learner and ``--resume`` go on."""
    try:
        return resume_point(run)
    except RunDirError:  # stopped before its first checkpoint: nothing to continue from
        return start_over_point(run)


class _Watched:
    """A learner handle whose futures raise :class:`LearnerLostError` for a lost worker, so
    that a lost learner is told apart from lost samplers (a plain ``WorkerLostError``)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def __getattr__(self, name: str) -> Callable[..., _WatchedFuture]:
        method = getattr(self.handle, name)
        return lambda *args, **kwargs: _WatchedFuture(method(*args, **kwargs))


class _WatchedFuture:
    def __init__(self, future: Any) -> None:
        self.future = future

    def result(self) -> Any:
        try:
            return self.future.result()
        except LearnerLostError:
            raise
        except WorkerLostError as e:
            raise LearnerLostError(str(e)) from e


def watched(learner: LearnerWorker) -> Any:
    """``learner`` (a :class:`~online_dt.loop.workers.LearnerWorker`) with its lost-worker
    errors raised as :class:`LearnerLostError`."""
    return learner if isinstance(learner, _Watched) else _Watched(learner)


@dataclass
class LearnerRestarts:
    """The learner restarts of one job, and the figures of the next metrics record.

    Attributes:
        limit: the most restarts allowed (``fault_tolerance.learner_max_restarts``).
        done: restarts so far in this job (successful or not).
        unrecorded: restarts not yet in a metrics record.
        unrecorded_s: their seconds, from the loss being noticed to every sampler resynced
            (a learner lost again while it started included).
    """

    limit: int
    done: int = 0
    unrecorded: int = 0
    unrecorded_s: float = 0.0

    def record_metrics(self) -> dict[str, Any]:
        """``learner_restarts`` and ``learner_recovery_s`` since the previous record (0 when
        none), for the next ``metrics.jsonl`` record; resets them."""
        out = {"learner_restarts": self.unrecorded, "learner_recovery_s": self.unrecorded_s}
        self.unrecorded, self.unrecorded_s = 0, 0.0
        return out


def restart_learner(
    workers: Workers,
    run: RunDir,
    lost: LearnerLostError,
    restarts: LearnerRestarts,
    resume_policy: str = "keep",
) -> tuple[Workers, ResumePoint]:
    """Start a new learner from ``run``'s last checkpoint and resync every sampler to it; with
    no checkpoint yet, a fresh learner that deletes the lost one's replay-buffer shards, and the
    run starts over (:func:`start_over_point`).

    The new learner deletes the versions published after the checkpoint and publishes the
    checkpoint's version; every sampler loads it before it samples again (a sampler lost
    meanwhile is marked stale and gets it before its next rollout). A call the old loop left
    running on a sampler (async mode) is waited out first: it runs before the load.

    A learner lost again while it starts spends a further restart. ``resume_policy`` is only
    named in the log: the new learner applies ``online.resume_policy`` itself.

    Returns:
        The workers with the new learner, and where the loop continues.

    Raises:
        LearnerLostError: the learner cannot be restarted: restarts spent
            (``fault_tolerance.learner_max_restarts``) or none possible
            (``Workers.restart_learner`` is ``None``, as in process).
    """
    started = time.perf_counter()
    while True:
        if workers.restart_learner is None:
            raise LearnerLostError(
                f"the learner was lost ({lost}); it cannot be restarted here"
            ) from lost
        if restarts.done >= restarts.limit:
            spent = (
                f"its {restarts.limit} restart(s) in this job are spent"
                if restarts.limit
                else "restarts are off"
            )
            raise LearnerLostError(
                f"the learner was lost ({lost}) and {spent} "
                f"(fault_tolerance.learner_max_restarts={restarts.limit})"
            ) from lost
        restarts.done += 1
        restarts.unrecorded += 1
        point = resume_or_start_over(run)
        if point.checkpoint is None:
            log.warning(
                "the learner was lost (%s) before the run's first checkpoint; starting a fresh "
                "one (restart %d of %d): the run starts over, its warm start included, and "
                "the samples the lost learner persisted are deleted",
                lost,
                restarts.done,
                restarts.limit,
            )
        else:
            log.warning(
                "the learner was lost (%s); restarting it from %s (restart %d of %d): "
                "iterations from %d run again; samples persisted after the checkpoint are %s "
                "(online.resume_policy)",
                lost,
                point.checkpoint.name,
                restarts.done,
                restarts.limit,
                point.start_iteration,
                "kept once" if resume_policy == "keep" else "dropped",
            )
        learner = watched(workers.restart_learner(point.checkpoint))
        try:
            update = learner.initial_update().result()
        except LearnerLostError as again:
            lost = again
            continue
        workers.samplers.load_weights(update).result()
        seconds = time.perf_counter() - started
        restarts.unrecorded_s += seconds
        log.info(
            "the learner is back at policy version %d after %.1fs, every sampler resynced; "
            "continuing at iteration %d",
            update.version,
            seconds,
            point.start_iteration,
        )
        return replace(workers, learner=learner), point


def run_recovering(
    cfg: OnlineRunConfig,
    prompts: Sequence[str],
    workers: Workers,
    run: RunDir,
    *,
    start_iteration: int = 0,
    schedule_state: ScheduleState | None = None,
    progress: bool = True,
    on_metrics: Callable[[dict[str, Any]], None] = lambda record: None,
) -> list[dict[str, Any]]:
    """:func:`~online_dt.loop.loop.run_loop`, with the learner restarted from the last
    checkpoint when it is lost (:func:`restart_learner`), up to
    ``fault_tolerance.learner_max_restarts`` times; every record carries
    ``learner_restarts`` and ``learner_recovery_s`` (seconds) since the previous one.

    Returns:
        The records of the iterations this call ran, as ``metrics.jsonl`` holds them (an
        iteration run again appears once, with its last run's figures).

    Raises:
        LearnerLostError: the learner was lost and could not be restarted (the run can be
            continued with ``--resume``).
        Exception: whatever else stops :func:`~online_dt.loop.loop.run_loop`.
    """
    restarts = LearnerRestarts(cfg.fault_tolerance.learner_max_restarts)
    records: list[dict[str, Any]] = []

    def collect(record: dict[str, Any]) -> None:
        records.append(record)
        on_metrics(record)

    workers = replace(workers, learner=watched(workers.learner))
    while True:
        try:
            run_loop(
                cfg,
                prompts,
                workers,
                run,
                start_iteration=start_iteration,
                schedule_state=schedule_state,
                progress=progress,
                on_metrics=collect,
                extra_metrics=restarts.record_metrics,
            )
            return records
        except LearnerLostError as lost:
            workers, point = restart_learner(workers, run, lost, restarts, cfg.online.resume_policy)
        start_iteration, schedule_state = point.start_iteration, point.schedule_state
        records[:] = [r for r in records if r["iteration"] < start_iteration]

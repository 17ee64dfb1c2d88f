"""The controller: starts the actors on Ray, then runs the loop of :mod:`online_dt.loop.loop`."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from actors.placement import ActorOptions
from online_dt.loop.plan import MetricsCallback, RunPlan, base_model_path, execute
from online_dt.loop.sampler_group import SamplerGroup
from online_dt.loop.workers import Workers

log = logging.getLogger(__name__)


def metrics_exporter(prefix: str = "online_dt_") -> MetricsCallback:
    """A callback that mirrors each numeric per-iteration figure to a ``ray.util.metrics``
    gauge (exported in Prometheus format by Ray's metrics agent)."""
    from ray.util.metrics import Gauge

    gauges: dict[str, Gauge] = {}

    def export(record: dict[str, Any]) -> None:
        for key, value in record.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                if key not in gauges:
                    gauges[key] = Gauge(prefix + key, description=f"online-dt {key} per iteration")
                gauges[key].set(float(value))

    return export


def start_ray(dashboard: bool = False) -> bool:
    """Connect to ``RAY_ADDRESS`` when it is set (``ray job submit``), else start a local Ray
    instance; a no-op when this process has joined one already. Returns whether this call
    joined (``False``: it was joined before).

    ``dashboard``: start Ray's own dashboard (port 8265) with a local instance that this call
    starts. Off by default: it takes 1.5-3 s of a run's start on two cores, and the run needs
    nothing it serves (the fault handling reads actors' states from Ray's control store,
    :func:`actors.ray_futures._may_come_back`; the run's own dashboard is separate). A cluster
    that this call joins keeps whatever dashboard it was started with.

    Call it on the main thread (or one that lives as long as the run): the local instance's
    processes get a parent-death signal tied to the thread that started them (``prctl
    PR_SET_PDEATHSIG``), so they are killed when that thread ends.
    """
    import ray

    from online_dt.util.logs import silence_known_harmless

    silence_known_harmless("ray")  # Ray's own handler, which its records reach first
    if ray.is_initialized():
        return False
    ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=True, include_dashboard=dashboard)
    return True


def stop_ray() -> None:
    """Leave Ray at the end of a run started from this process: a local instance that
    :func:`start_ray` started is shut down, a cluster that it joined keeps running (this
    process only disconnects); a no-op when Ray is not initialised.

    Called explicitly, not left to the exit hook that ``ray.init`` registers, which first
    sleeps 0.5 s so that the actors' last console lines arrive; here the actors write their
    output to ``RUN_DIR/logs/`` and have finished their calls when the loop returns.
    """
    import ray

    if ray.is_initialized():
        ray.shutdown()


def run_on_ray(
    plan: RunPlan,
    *,
    progress: bool = True,
    callbacks: Sequence[MetricsCallback] = (),
    verbose: bool = False,
) -> int:
    """Start sampler, reward-model and learner actors with the configured resources and run
    the loop. Connects to ``RAY_ADDRESS`` when set (``ray job submit``), else starts a local
    Ray instance (or uses the one this process already joined).

    Sampler and reward actors are restarted by Ray after their process dies
    (``fault_tolerance.*_max_restarts``); the loop re-issues the interrupted call. A learner
    whose process dies is replaced by a new actor started from the last checkpoint, up to
    ``fault_tolerance.learner_max_restarts`` times (:mod:`online_dt.loop.recovery`); after
    that the run stops and ``--resume`` continues it. ``callbacks`` get each iteration's
    metrics record.

    Each actor's output (and its engine's) goes to ``RUN_DIR/logs/<actor>.log``; only the
    project's warnings and errors from the actors reach this console. ``verbose``: the actors'
    whole output streams to this console instead, as Ray does by default.

    Returns:
        0 (the loop raised otherwise); the records are in ``RUN_DIR/metrics.jsonl``.
    """
    from actors.placement import start_placement

    cfg, res = plan.cfg, plan.cfg.resources
    base = base_model_path(cfg)  # builds the embedded model here, once, before any actor
    start_ray()
    opts = start_placement(res)  # reserves the placement group (see online_dt/config/placement.py)
    if cfg.online.mode == "sync":
        plan = with_sync_threads(plan, opts.one_node)
    try:
        workers = start_workers(plan, base, opts, None if verbose else plan.run.logs_dir)
        execute(plan, workers, progress=progress, callbacks=[metrics_exporter(), *callbacks])
    finally:
        opts.remove()  # frees the reserved resources (and ends the actors in the group)
    return 0


def with_sync_threads(plan: RunPlan, one_node: bool) -> RunPlan:
    """``plan`` whose config gives the actors of a sync run on one node the CPUs that the
    others leave idle (:func:`online_dt.config.placement.threads_for_sync`); ``plan`` itself
    when nothing changes. The run directory keeps the config as written."""
    from dataclasses import replace

    from online_dt.config.placement import threads_for_sync

    resources = threads_for_sync(plan.cfg.resources, one_node)
    if resources is plan.cfg.resources:
        return plan
    log.info(
        "sync mode on one node: the learner trains on %d torch threads, each sampler samples "
        "on %d (resources.sync_shares_cpus)",
        resources.learner_threads,
        resources.sampler_threads,
    )
    return replace(plan, cfg=plan.cfg.model_copy(update={"resources": resources}))


def start_workers(
    plan: RunPlan, base: str, opts: ActorOptions, logs_dir: Path | None = None
) -> Workers:
    """Start the learner, the reward model and the sampler replicas in their placement-group
    bundles, and send the samplers the learner's first published version. With checkpoint
    weight sync the three start at once: a sampler imports its libraries while the learner
    starts, then builds itself from that version. With ``sampler.weight_sync: ray`` the
    samplers start after the learner, from its skeleton, and get the version through the
    object store. Return the loop's :class:`online_dt.loop.workers.Workers`. With
    ``logs_dir`` each actor writes its output to ``learner.log``, ``sampler-<i>.log`` or
    ``reward.log`` there.

    A dead learner is replaced through ``Workers.restart_learner`` (:class:`LearnerStarter`).
    A dead sampler or reward actor is restarted by Ray (``fault_tolerance.*_max_restarts``);
    Ray does not retry its calls (``max_task_retries=0``): the loop re-issues them itself. A
    reward actor whose call hangs past ``fault_tolerance.reward_timeout_s`` is killed and
    restarted by the loop (``Workers.restart_reward``, :func:`kill_and_restart`); after a
    crash the loop waits for the restarted reward actor before it sends the batch again
    (``Workers.wait_for_reward``), so that the restart is not timed as the call.
    """
    import ray

    from actors.ray_futures import RayFuture, RayHandle, kill_and_restart, wait_until_back
    from actors.reward import RewardModelActor
    from actors.workers import SamplerActor

    cfg, ft = plan.cfg, plan.cfg.fault_tolerance

    def log_file(name: str) -> str | None:
        return None if logs_dir is None else str(logs_dir / f"{name}.log")

    start_learner = LearnerStarter(plan, base, opts, log_file("learner"))
    learner = start_learner(plan.checkpoint)
    reward = (
        ray.remote(RewardModelActor)
        .options(**opts.reward, max_restarts=ft.reward_max_restarts, max_task_retries=0)
        .remote(cfg, log_file("reward"))
    )
    first = learner.initial_update()
    # checkpoints: the samplers start beside the learner, without weights, and are sent its
    # first version through the group. weight_sync ray: they start from the learner's skeleton
    # (passed by value, so a restarted actor can rebuild from it). Either way the group keeps
    # the update and re-sends it to a sampler that Ray restarted.
    in_memory = cfg.sampler.weight_sync == "ray"
    start = learner.sampler_skeleton().result() if in_memory else None
    samplers = [
        ray.remote(SamplerActor)
        .options(**opts.samplers[i], max_restarts=ft.sampler_max_restarts, max_task_retries=0)
        .remote(cfg, start, log_file(f"sampler-{i}"), base)
        for i in range(cfg.resources.num_samplers)
    ]
    update = first.result()
    # the scoring calls are timed (fault_tolerance.reward_timeout_s): wait for the reward actor's
    # constructor here, so that loading its model (a large classifier, a download) is not
    # counted against the first call
    RayFuture(reward.pid.remote(), "the reward actor's start").result()
    group = SamplerGroup(
        [RayHandle(s) for s in samplers],
        ft.rollout_retries,
        ft.retry_backoff_s,
        ft.restart_timeout_s,
        probe="pid",  # a lost sampler that answers again is put back in the split
    )
    # the group keeps this update (with ray, its object) for samplers Ray restarts
    group.load_weights(update).result()
    return Workers(
        group,
        RayHandle(reward),
        learner,
        restart_reward=lambda: kill_and_restart(reward, ft.restart_timeout_s),
        wait_for_reward=lambda: wait_until_back(reward, ft.restart_timeout_s),
        restart_learner=start_learner,
    )


class LearnerStarter:
    """Starts the learner actor in its placement-group bundle: first, and again from a
    checkpoint after its process died (``Workers.restart_learner``).

    The learner is not restarted by Ray (``max_restarts=0``): Ray would run its constructor
    with the first arguments, and the new learner must load the newest checkpoint instead.
    Before a new actor starts, the previous one is ended for good (:func:`end_actor`), so
    that two learners never write the run directory at once.

    Args:
        plan: the run plan (config and run directory).
        base: the base model path.
        opts: the actors' options (the learner's bundle).
        log_file: the learner's log (appended by each new actor), or ``None``.
    """

    def __init__(self, plan: RunPlan, base: str, opts: ActorOptions, log_file: str | None) -> None:
        self.plan, self.base, self.opts, self.log_file = plan, base, opts, log_file
        self.actor: Any = None

    def __call__(self, checkpoint: Path | None) -> Any:
        """Start a learner actor from ``checkpoint`` (``None``: fresh); return its
        ``RayHandle``. Its constructor's errors surface at its first call. A fresh learner
        that replaces a lost one starts over (``Learner(start_over=True)``: the run had no
        checkpoint yet, and the lost learner's replay-buffer shards are deleted).

        Raises:
            TimeoutError: the previous actor still answered ``restart_timeout_s`` after it
                was killed.
        """
        import ray

        from actors.ray_futures import RayHandle, end_actor
        from actors.workers import LearnerActor

        # a fresh learner replacing a lost one, or the first of a resumed run that had no
        # checkpoint, deletes the shards persisted before it
        start_over = checkpoint is None and (self.actor is not None or self.plan.start_over)
        if self.actor is not None:
            end_actor(self.actor, self.plan.cfg.fault_tolerance.restart_timeout_s)
        self.actor = (
            ray.remote(LearnerActor)
            .options(**self.opts.learner)
            .remote(
                self.plan.cfg,
                self.base,
                str(self.plan.run.path),
                None if checkpoint is None else str(checkpoint),
                self.log_file,
                start_over,
            )
        )
        return RayHandle(self.actor)

"""The online decision-transformer loop, written once for in-process and Ray workers.

Each iteration: pick the target from the schedule and the buffer's achieved rewards -> roll
out completions conditioned on it (a spread of targets around it) -> score them -> append them
to the replay buffer relabelled with their achieved reward -> train k steps on buffer batches ->
publish and sync the weights -> log metrics and checkpoint.

In ``async`` mode the next iteration's rollouts are submitted before training starts, so on
Ray they run while the learner trains, from the policy one version behind it. Nothing the
controller waits on is queued behind them: the schedule's ``buffer_rewards`` is asked before
``train`` is submitted to the (single-threaded) learner actor, and the samplers' weight load is
submitted behind the in-flight rollouts without waiting for it (an actor runs its calls in the
order they were submitted, so the load lands before the rollouts after next); the controller
collects it once it next needs the samplers. A sample more than ``online.max_policy_lag``
versions behind the learner (0 in ``sync`` mode) is dropped before scoring and counted
(``samples_over_lag``); ``policy_lag_max`` in the metrics is the largest lag trained on.
In process (:class:`~online_dt.loop.futures.LocalHandle`) every call runs at once, so ``async``
has the same lag bookkeeping but nothing overlaps.
The workers are reached through handles whose calls return futures (:mod:`online_dt.loop.workers`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from online_dt.config import OnlineRunConfig
from online_dt.launch.rundir import RunDir
from online_dt.loop.console import iteration_line, reward_text, warm_start_line
from online_dt.loop.front_schedule import front_targets, mean_target
from online_dt.loop.futures import Future
from online_dt.loop.records import iteration_record, sample_log
from online_dt.loop.reward_stats import RewardStats
from online_dt.loop.rollout_batch import RolloutBatch, SamplerRecovery
from online_dt.loop.schedule import ScheduleState, next_target, sample_targets
from online_dt.loop.scoring import score_rollouts
from online_dt.loop.timing import STAGES, StageTimer
from online_dt.loop.workers import Workers
from online_dt.rollout.sampler import SamplingParams
from online_dt.samples import Reward
from online_dt.util.seeds import derived_seed

log = logging.getLogger(__name__)

SAMPLING_SEED_STREAM = 2
"""Seed key of each iteration's sampling (the schedule's streams are 0 and 1)."""

Launched = tuple[Reward, ScheduleState, Future[RolloutBatch]]
"""An iteration's target (with several objectives, the mean of its prompts' target vectors),
the schedule state after it, and its pending rollouts."""


def prompts_for(prompts: Sequence[str], iteration: int, count: int) -> list[str]:
    """The prompts of an iteration: the next ``count`` prompts cycling through the set."""
    start = iteration * count
    return [prompts[(start + j) % len(prompts)] for j in range(count)]


def sampling_params(cfg: OnlineRunConfig, iteration: int, n: int) -> SamplingParams:
    """Sampling parameters of an iteration (-1: the warm start), seeded by the run's seed and
    the iteration."""
    seed = derived_seed(cfg.online.seed, SAMPLING_SEED_STREAM, iteration + 1)
    return SamplingParams.from_config(cfg.sampling, n=n, seed=seed)


def launch(
    cfg: OnlineRunConfig,
    prompts: Sequence[str],
    workers: Workers,
    iteration: int,
    state: ScheduleState,
) -> Launched:
    """Pick iteration ``iteration``'s target from the buffer's rewards and submit its rollouts
    (with ``conditioning.objectives``, a target vector per prompt from the ``pareto``
    schedule)."""
    rewards = workers.learner.buffer_rewards().result()
    batch = prompts_for(prompts, iteration, cfg.online.prompts_per_iteration)
    targets: list[Reward]
    if cfg.conditioning.objectives:
        vectors, state = front_targets(
            cfg.schedule, cfg.conditioning.objectives, state, rewards, len(batch)
        )
        target: Reward = mean_target(vectors)
        targets = list(vectors)
    else:
        target, state = next_target(
            cfg.schedule, state, RewardStats.from_rewards(rewards, cfg.schedule.k)
        )
        best = cfg.conditioning.best_target if cfg.conditioning.best_command else None
        targets = list(sample_targets(cfg.schedule, target, len(batch), state, best_target=best))
    params = sampling_params(cfg, iteration, cfg.online.samples_per_prompt)
    return target, state, workers.samplers.generate(batch, targets, params)


def bound_policy_lag(
    batch: RolloutBatch, learner_version: int | None, max_lag: int
) -> RolloutBatch:
    """Drop the rollouts of ``batch`` more than ``max_lag`` versions behind ``learner_version``
    (``None``: the learner has published nothing in this loop yet, so every sample is from its
    current weights). The kept rollouts stay in order; the dropped ones are logged and counted
    in the result's ``recovery.samples_over_lag``.

    The loop's own pipelining never exceeds one version; an older sample comes from a replica
    that missed weight updates, and training on it would break ``online.max_policy_lag``.
    """
    if learner_version is None:
        return batch
    floor = learner_version - max_lag
    kept = [r for r in batch.rollouts if r.policy_version >= floor]
    dropped = len(batch.rollouts) - len(kept)
    if not dropped:
        return batch
    oldest = min(r.policy_version for r in batch.rollouts)
    log.warning(
        "dropping %d of %d samples more than %d version(s) behind the learner (v%d, oldest v%d)",
        dropped,
        len(batch.rollouts),
        max_lag,
        learner_version,
        oldest,
    )
    recovery = SamplerRecovery(**{**batch.recovery.metrics(), "samples_over_lag": dropped})
    return RolloutBatch(kept, recovery)


WARM_START_STEPS_PER_CALL = 25
"""The warm start trains in calls of at most this many steps to the learner, so that its
progress bar moves between them; the batches, learning rates and weights are those of one call
of every step (tests/test_warm_start.py)."""


def warm_start(
    cfg: OnlineRunConfig,
    prompts: Sequence[str],
    workers: Workers,
    run: RunDir,
    state: ScheduleState,
    progress: bool = True,
) -> None:
    """Optional offline warm start before iteration 0: sample ``warm_start_samples_per_prompt``
    completions of ``warm_start_prompts`` prompts (one iteration's by default) at the
    schedule's ``start`` target (with objectives, the middle of each objective's range), score
    them, append them (iteration -1), train ``warm_start_steps`` steps (at ``warm_start_lr``
    when set; a progress bar counts them when ``progress``), sync the weights and checkpoint
    (after iteration -1, with the schedule's initial ``state``): a run stopped before its first
    iteration's checkpoint resumes after the warm start instead of starting over.

    Its record goes to the run directory (``warm_start.json``) and is logged as one line
    (:func:`~online_dt.loop.console.warm_start_line`): ``samples`` (kept after scoring),
    ``prompts``, ``steps``, ``loss`` (the mean over the steps; NaN without steps), and
    ``rollout_s``, ``scoring_s``, ``training_s`` (appending included), ``sync_s``,
    ``checkpoint_s``, ``other_s`` and ``wall_s`` in seconds.
    """
    on = cfg.online
    timer = StageTimer(STAGES)
    batch = prompts_for(prompts, 0, on.warm_start_prompt_count)
    params = sampling_params(cfg, -1, on.warm_start_samples_per_prompt)
    start: Reward = cfg.schedule.start
    if cfg.conditioning.objectives:  # the middle of every objective's range
        start = tuple(o.center for o in cfg.conditioning.objectives)
    log.info(
        "warm start: sampling %d completions (%d prompts x %d) at target %s",
        len(batch) * params.n,
        len(batch),
        params.n,
        reward_text(start),
    )
    with timer("rollout"):
        rollouts = workers.samplers.generate(batch, [start] * len(batch), params).result().rollouts
    with timer("scoring"):
        scored = score_rollouts(
            workers.reward.score,
            rollouts,
            -1,
            cfg.fault_tolerance,
            run,
            restart=workers.restart_reward,
            wait_for_restart=workers.wait_for_reward,
        )
    with timer("training"):
        appended = workers.learner.append(*scored.kept(rollouts), -1, time.time()).result()
        loss = _train_with_progress(workers, on.warm_start_steps, on.warm_start_lr, progress)
    with timer("sync"):
        workers.samplers.load_weights(workers.learner.publish().result()).result()
    with timer("checkpoint"):  # in the foreground: no earlier checkpoint to fall back on
        controller = {"schedule": state.to_dict(), "iteration": -1}
        workers.learner.checkpoint(-1, controller, background=False).result()
    record = {
        "samples": appended["count"],
        "prompts": len(batch),
        "steps": on.warm_start_steps,
        "loss": loss,
        **timer.seconds(),
    }
    run.write_warm_start(record)
    log.info("%s", warm_start_line(record))


def _train_with_progress(workers: Workers, steps: int, lr: float | None, progress: bool) -> float:
    """Train ``steps`` steps in calls of :data:`WARM_START_STEPS_PER_CALL`; their mean loss."""
    total = 0.0
    with tqdm(total=steps, desc="warm start", unit="step", disable=not progress) as bar:
        for done in range(0, steps, WARM_START_STEPS_PER_CALL):
            n = min(WARM_START_STEPS_PER_CALL, steps - done)
            trained = workers.learner.train(n, lr).result()
            total += trained["loss"] * n
            bar.update(n)
            bar.set_postfix(loss=f"{trained['loss']:.3f}")
    return total / steps if steps else float("nan")


def run_loop(
    cfg: OnlineRunConfig,
    prompts: Sequence[str],
    workers: Workers,
    run: RunDir,
    *,
    start_iteration: int = 0,
    schedule_state: ScheduleState | None = None,
    progress: bool = True,
    on_metrics: Callable[[dict[str, Any]], None] = lambda record: None,
    extra_metrics: Callable[[], dict[str, Any]] = dict,
) -> list[dict[str, Any]]:
    """Run iterations ``start_iteration .. cfg.online.iterations - 1``; return their records.

    A new run (``schedule_state`` ``None``) starts with the warm start when the config has one
    (:func:`warm_start`); a resumed one (the checkpoint's ``schedule_state``) never repeats it.
    Each record is also logged as one line (:func:`online_dt.loop.console.iteration_line`,
    logger ``online_dt.loop.loop``, INFO), printed above the progress bar when it is shown.
    ``extra_metrics`` is called once per record, and what it returns is added to the record
    (e.g. :meth:`online_dt.loop.recovery.LearnerRestarts.record_metrics`).
    """
    with logging_redirect_tqdm():  # log lines go above the bar instead of through it
        return _run_loop(
            cfg,
            prompts,
            workers,
            run,
            start_iteration,
            schedule_state,
            progress,
            on_metrics,
            extra_metrics,
        )


def _run_loop(
    cfg: OnlineRunConfig,
    prompts: Sequence[str],
    workers: Workers,
    run: RunDir,
    start_iteration: int,
    schedule_state: ScheduleState | None,
    progress: bool,
    on_metrics: Callable[[dict[str, Any]], None],
    extra_metrics: Callable[[], dict[str, Any]],
) -> list[dict[str, Any]]:
    on, ft, learner = cfg.online, cfg.fault_tolerance, workers.learner
    names = cfg.conditioning.objective_names
    overlap = on.mode == "async"
    max_lag = on.max_policy_lag if overlap else 0
    best_above = cfg.conditioning.reward_max if cfg.conditioning.best_command else None
    state = schedule_state or ScheduleState.initial(cfg.schedule)
    if schedule_state is None and on.warm_start_samples_per_prompt > 0:  # a new run
        warm_start(cfg, prompts, workers, run, state, progress)
    history: list[dict[str, Any]] = []
    pending: Launched | None = None  # async: the next iteration, submitted during training
    loading: Future[Any] | None = None  # async: the samplers' weight load, queued behind it
    version: int | None = None  # the learner's version, once this loop has published one
    bar = tqdm(range(start_iteration, on.iterations), desc="online", disable=not progress)
    timer = StageTimer(STAGES)
    for it in bar:
        last = it + 1 == on.iterations
        with timer("rollout"):
            target, state, inflight = pending or launch(cfg, prompts, workers, it, state)
            batch, pending = bound_policy_lag(inflight.result(), version, max_lag), None
        with timer("scoring"):
            scored = score_rollouts(
                workers.reward.score,
                batch.rollouts,
                it,
                ft,
                run,
                restart=workers.restart_reward,
                wait_for_restart=workers.wait_for_reward,
            )
        rollouts, rewards = scored.kept(batch.rollouts)
        with timer("training"):
            appended = learner.append(rollouts, rewards, it, time.time()).result()
        if overlap and not last:  # submitted before training, so it can overlap it
            with timer("sync"):  # the previous load ran behind the last rollouts, during scoring
                if loading is not None:
                    loading.result()
                    loading = None
            with timer("rollout"):
                pending = launch(cfg, prompts, workers, it + 1, state)
        with timer("training"):
            training = learner.train(on.train_steps_per_iteration)
            kl = learner.kl_estimate(rollouts).result() if on.kl_samples else None
            trained = training.result()
        with timer("sync"):
            update = learner.publish().result()
            version = update.version
            loading = workers.samplers.load_weights(update)
            if pending is None:  # no rollouts in flight: the next ones need the new weights
                loading.result()
                loading = None
        record = iteration_record(
            it, target, batch, scored, appended, trained, kl, update, timer, names, best_above
        )
        record.update(extra_metrics())
        # the next iteration's timer starts here, so the writes and the checkpoint below count
        # in its wall time (as ``checkpoint_s`` and ``other_s``): no second goes unrecorded
        timer = StageTimer(STAGES)
        run.append_samples(sample_log(it, rollouts, rewards, on.samples_logged_per_iteration))
        run.append_metrics(record)
        history.append(record)
        on_metrics(record)
        log.info("%s", iteration_line(record, on.iterations))
        bar.set_postfix(
            target=reward_text(target), achieved=reward_text(record.get("achieved_mean"))
        )
        if (it + 1) % on.checkpoint_every == 0 or last:
            with timer("checkpoint"):  # after the record: a checkpointed iteration has its record
                controller = {"schedule": state.to_dict(), "iteration": it}
                background = on.background_checkpoints and not last
                learner.checkpoint(it, controller, background=background).result()
    return history

"""The online decision-transformer loop, written once for in-process and Ray workers.

Each iteration: pick the target from the schedule and the buffer's achieved rewards -> roll
out completions conditioned on it (a spread of targets around it) -> score them -> append them
to the replay buffer relabeled with their achieved reward -> train k steps on buffer batches ->
publish and sync the weights -> log metrics and checkpoint.

In ``async`` mode the next iteration's rollouts are submitted before training starts, so they
overlap it and come from the policy one version behind the learner (the lag is logged). The
workers are reached through handles whose calls return futures (:mod:`online_dt.loop.handles`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from online_dt.config import OnlineRunConfig
from online_dt.launch.rundir import RunDir
from online_dt.loop.schedule import RewardStats, ScheduleState, next_target, sample_targets
from online_dt.loop.scoring import score_rollouts
from online_dt.rollout.sampler import SamplingParams
from online_dt.samples import Rollout
from online_dt.util.metrics import distinct_n, reward_summary

log = logging.getLogger(__name__)


@dataclass
class Workers:
    """Handles of the loop's workers; every call returns a future (``.result()``).

    Attributes:
        samplers: ``generate(prompts, targets, params)``, ``load_weights(update)``.
        reward: ``score(prompts, completions)`` -> validated rewards.
        learner: the :class:`online_dt.training.learner.Learner` methods.
    """

    samplers: Any
    reward: Any
    learner: Any


def prompts_for(prompts: Sequence[str], iteration: int, count: int) -> list[str]:
    """The prompts of an iteration: the next ``count`` prompts cycling through the set."""
    start = iteration * count
    return [prompts[(start + j) % len(prompts)] for j in range(count)]


def sampling_params(cfg: OnlineRunConfig, iteration: int, n: int) -> SamplingParams:
    """Sampling parameters of an iteration, seeded by (run seed, iteration)."""
    seed = cfg.online.seed * 1_000_003 + iteration * 7919
    return SamplingParams.from_config(cfg.sampling, n=n, seed=seed)


def iteration_metrics(
    iteration: int,
    target: float,
    rollouts: Sequence[Rollout],
    rewards: Sequence[float],
    learner_version: int,
) -> dict[str, Any]:
    """Reward, calibration, diversity and length figures of one iteration's rollouts.

    ``learner_version`` is the version the learner trained these samples on (before this
    iteration's update); ``policy_lag_max`` is how many versions the oldest sample is behind it
    (0 in sync mode, up to 1 in async mode). With no rollouts (a skipped batch) only
    ``iteration``, ``target`` and ``samples`` are set.
    """
    tokens = [r.token_ids for r in rollouts]
    record: dict[str, Any] = {"iteration": iteration, "target": target, "samples": len(rollouts)}
    if not rollouts:  # the batch was skipped (reward model failed) or every replica was lost
        return record
    summary = reward_summary(rewards)
    versions = [r.policy_version for r in rollouts]
    return {
        **record,
        "achieved_mean": summary["mean"],
        "achieved_median": summary["median"],
        "achieved_p10": summary["p10"],
        "achieved_p90": summary["p90"],
        "achieved_std": summary["std"],
        "calibration_error": abs(summary["mean"] - target),
        "distinct_1": distinct_n(tokens, 1),
        "distinct_2": distinct_n(tokens, 2),
        "completion_tokens_mean": sum(map(len, tokens)) / max(1, len(tokens)),
        "sample_policy_version_min": min(versions),
        "policy_lag_max": learner_version - min(versions),
    }


def warm_start(
    cfg: OnlineRunConfig, prompts: Sequence[str], workers: Workers, run: RunDir
) -> dict[str, Any]:
    """Optional offline warm start before iteration 0: sample ``warm_start_samples_per_prompt``
    completions of one iteration's prompts at the schedule's ``start`` target, score them,
    append them (iteration -1), train ``warm_start_steps`` steps and sync the weights."""
    on = cfg.online
    batch = prompts_for(prompts, 0, on.prompts_per_iteration)
    params = sampling_params(cfg, -1, on.warm_start_samples_per_prompt)
    rollouts = workers.samplers.generate(batch, [cfg.schedule.start] * len(batch), params).result()
    rewards = score_rollouts(workers.reward.score, rollouts, -1, cfg.fault_tolerance, run).rewards
    if rewards is None:
        rollouts, rewards = [], []
    appended = workers.learner.append(rollouts, rewards, -1, time.time()).result()
    trained = workers.learner.train(on.warm_start_steps).result()
    update = workers.learner.publish().result()
    workers.samplers.load_weights(update).result()
    log.info(
        "warm start: %d samples, %d steps, loss %.3f",
        appended["count"],
        on.warm_start_steps,
        trained["loss"],
    )
    return appended


def run_loop(
    cfg: OnlineRunConfig,
    prompts: Sequence[str],
    workers: Workers,
    run: RunDir,
    *,
    start_iteration: int = 0,
    schedule_state: ScheduleState | None = None,
    progress: bool = True,
    on_metrics: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run iterations ``start_iteration .. cfg.online.iterations - 1``; return their metrics."""
    on = cfg.online
    state = schedule_state or ScheduleState.initial(cfg.schedule)

    def launch(it: int, state: ScheduleState) -> tuple[float, ScheduleState, Any]:
        stats = RewardStats.from_rewards(workers.learner.buffer_rewards().result(), cfg.schedule.k)
        target, state = next_target(cfg.schedule, state, stats)
        batch = prompts_for(prompts, it, on.prompts_per_iteration)
        targets = sample_targets(cfg.schedule, target, len(batch), state)
        params = sampling_params(cfg, it, on.samples_per_prompt)
        return target, state, workers.samplers.generate(batch, targets, params)

    history: list[dict[str, Any]] = []
    if start_iteration == 0 and on.warm_start_samples_per_prompt > 0:
        warm_start(cfg, prompts, workers, run)
    target, next_state, inflight = launch(start_iteration, state)
    bar = tqdm(range(start_iteration, on.iterations), desc="online", disable=not progress)
    for it in bar:
        t_start = time.perf_counter()
        rollouts = inflight.result()
        t_rollout = time.perf_counter()
        scored = score_rollouts(workers.reward.score, rollouts, it, cfg.fault_tolerance, run)
        if scored.rewards is None:  # skipped after the retries; kept in rejected/
            rollouts = []
        rewards = scored.rewards or []
        t_scored = time.perf_counter()
        appended = workers.learner.append(rollouts, rewards, it, time.time()).result()
        training = workers.learner.train(on.train_steps_per_iteration)
        state = next_state
        if on.mode == "async" and it + 1 < on.iterations:
            upcoming = launch(it + 1, state)  # overlaps training; one version behind
        kl = workers.learner.kl_estimate(rollouts).result() if on.kl_samples else None
        train_metrics = training.result()
        t_trained = time.perf_counter()
        update = workers.learner.publish().result()
        workers.samplers.load_weights(update).result()
        t_synced = time.perf_counter()

        record = iteration_metrics(it, target, rollouts, rewards, update.version - 1)
        wall = t_synced - t_start
        record.update(
            kl_to_base=kl,
            loss=train_metrics["loss"],
            kl_penalty=train_metrics["kl_penalty"],
            buffer_size=appended["buffer_size"],
            first_sample_id=appended["first_id"],
            last_sample_id=appended["last_id"],
            policy_version=update.version,
            samples_per_s=len(rollouts) / wall,
            rollout_tokens_per_s=sum(len(r.token_ids) for r in rollouts)
            / max(t_rollout - t_start, 1e-9),
            rollout_s=t_rollout - t_start,
            scoring_s=t_scored - t_rollout,
            training_s=train_metrics["seconds"],
            sync_s=t_synced - t_trained,
            idle_s=max(
                0.0,
                wall
                - (t_rollout - t_start)
                - (t_scored - t_rollout)
                - train_metrics["seconds"]
                - (t_synced - t_trained),
            ),
            **scored.metrics(),
            **getattr(inflight, "stats", {}),
            time=time.time(),
        )
        run.append_samples(
            {
                "iteration": it,
                "prompt": r.prompt,
                "completion": r.completion,
                "target": r.target,
                "achieved_reward": w,
                "policy_version": r.policy_version,
            }
            for r, w in list(zip(rollouts, rewards, strict=True))[: on.samples_logged_per_iteration]
        )
        run.append_metrics(record)
        history.append(record)
        if on_metrics is not None:
            on_metrics(record)
        bar.set_postfix(target=f"{target:.3f}", achieved=f"{record.get('achieved_mean', 0):.3f}")
        if (it + 1) % on.checkpoint_every == 0 or it + 1 == on.iterations:
            workers.learner.checkpoint(it, {"schedule": state.to_dict(), "iteration": it}).result()
        if it + 1 < on.iterations:
            if on.mode == "sync":
                upcoming = launch(it + 1, state)
            target, next_state, inflight = upcoming
    return history

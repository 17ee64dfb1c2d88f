"""The plan of an online run, decided before any worker starts, and running it.

:func:`plan_run` checks the inputs, then creates the run directory or finds the checkpoint to
resume from; :func:`execute` runs the loop of :mod:`online_dt.loop.loop` for a plan with any
workers (in process or on Ray), with the per-iteration records going to callbacks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from online_dt.config import OnlineRunConfig, config_yaml, load_config
from online_dt.embedded.base_model import resolve_base_model
from online_dt.launch.preflight import preflight
from online_dt.launch.prompts import load_prompts
from online_dt.launch.rundir import CONFIG_FILE, TENSORBOARD_DIR, RunDir
from online_dt.loop.recovery import resume_or_start_over, run_recovering
from online_dt.loop.schedule import ScheduleState
from online_dt.loop.workers import Workers
from online_dt.util.atomic import atomic_write_text

log = logging.getLogger(__name__)

MetricsCallback = Callable[[dict[str, Any]], None]
"""Receives each iteration's metrics record."""


@dataclass
class RunPlan:
    """Everything decided before any worker starts.

    Attributes:
        cfg: the validated config (on resume: the run directory's own config).
        run: the run directory.
        checkpoint: checkpoint to resume from, or ``None``.
        start_iteration: first iteration to run.
        schedule_state: schedule state to continue from, or ``None``.
        prompts: the loaded prompt set.
        start_over: a resumed run that stopped before its first checkpoint (in its warm
            start): it runs again from the start with a fresh learner, which deletes the
            replay-buffer shards it had persisted (``Learner(start_over=True)``).
    """

    cfg: OnlineRunConfig
    run: RunDir
    checkpoint: Path | None
    start_iteration: int
    schedule_state: ScheduleState | None
    prompts: list[str]
    start_over: bool = False


def plan_run(
    cfg: OnlineRunConfig | None,
    resume: str | Path | None,
    overrides: dict[str, Any] | None = None,
) -> RunPlan:
    """Load the prompts and check the inputs, then create the run directory, or find where to
    resume.

    Prompts are loaded and :func:`online_dt.launch.preflight.preflight` checks the base model, the
    reward model and the prompt lengths first, so that bad input fails before anything is
    created.
    On resume the run directory's ``config.yaml`` is authoritative, with ``overrides`` applied
    on top (e.g. more ``online.iterations``); logs of iterations after the checkpoint are
    dropped (they will be run again). A run that stopped before its first checkpoint (in its
    warm start) starts over (``RunPlan.start_over``), as a learner lost then does.

    Raises:
        RunDirError: a new run would overwrite an existing one.
        ConfigError: the run directory's config is invalid.
        PromptError: the prompt source is missing or empty.
        PreflightError: the base model or reward model cannot be loaded, or a prompt is too
            long for the model's context.
    """
    if resume is not None:
        run = RunDir(resume)
        cfg = load_config(run.path / CONFIG_FILE, OnlineRunConfig, overrides)
        prompts = load_prompts(cfg.prompts)
        preflight(cfg, prompts, base_model_path(cfg))
        point = resume_or_start_over(run)  # the same as a learner restarted within a job
        if point.checkpoint is None:
            log.warning(
                "%s has no checkpoint yet (it stopped in its warm start): it starts over, and "
                "the samples it had persisted are deleted",
                run.path,
            )
        if overrides:  # the run directory's config stays the one the run actually uses
            atomic_write_text(run.path / CONFIG_FILE, config_yaml(cfg))
        return RunPlan(
            cfg,
            run,
            point.checkpoint,
            point.start_iteration,
            point.schedule_state,
            prompts,
            start_over=point.checkpoint is None,
        )
    assert cfg is not None
    prompts = load_prompts(cfg.prompts)
    run = RunDir(cfg.online.run_dir)
    run.check_new()
    preflight(cfg, prompts, base_model_path(cfg))
    run.create(config_yaml(cfg))
    return RunPlan(cfg, run, None, 0, None, prompts)


def execute(
    plan: RunPlan,
    workers: Workers,
    *,
    progress: bool = True,
    callbacks: Sequence[MetricsCallback] = (),
) -> list[dict[str, Any]]:
    """Run the loop of :mod:`online_dt.loop.loop` for a plan with any workers (local or Ray),
    restarting a lost learner from the last checkpoint when the workers can
    (:func:`online_dt.loop.recovery.run_recovering`); per-iteration records also go to
    ``callbacks`` and, when configured, TensorBoard.

    Raises:
        LearnerLostError: the learner was lost and could not be restarted.
        Exception: whatever else stops the loop (see :func:`online_dt.run.stopped_message`).
    """
    return run_recovering(
        plan.cfg,
        plan.prompts,
        workers,
        plan.run,
        start_iteration=plan.start_iteration,
        schedule_state=plan.schedule_state,
        progress=progress,
        on_metrics=metrics_callback(plan, *callbacks),
    )


def metrics_callback(plan: RunPlan, *extra: MetricsCallback) -> MetricsCallback:
    """One ``on_metrics`` callback calling ``extra`` callbacks and, when configured, the
    TensorBoard logger (``RUN_DIR/tensorboard``)."""
    callbacks = list(extra)
    if plan.cfg.online.tensorboard:
        from online_dt.util.metrics import TensorBoardLogger

        callbacks.append(TensorBoardLogger(str(plan.run.path / TENSORBOARD_DIR)))

    def call(record: dict[str, Any]) -> None:
        for callback in callbacks:
            callback(record)

    return call


def base_model_path(cfg: OnlineRunConfig) -> str:
    """The base model path, building the embedded model if it is configured and absent."""
    return resolve_base_model(cfg.model, cfg.bootstrap, progress=True)

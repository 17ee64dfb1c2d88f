"""Entry point of the online loop: ``python -m online_dt.run --config configs/default.yaml``.

This is what ``online-dt run`` and ``ray job submit ... -- python -m online_dt.run`` execute.
The config is validated (and the run directory checked) before Ray or any model is touched.
With ``--local`` the workers run in this process instead of Ray actors (debugging, tests).
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from online_dt.config import ConfigError, OnlineRunConfig, config_yaml, load_config
from online_dt.launch.rundir import RunDir, RunDirError
from online_dt.loop.schedule import ScheduleState
from online_dt.util.atomic import atomic_write_text

log = logging.getLogger("online_dt.run")


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
    """

    cfg: OnlineRunConfig
    run: RunDir
    checkpoint: Path | None
    start_iteration: int
    schedule_state: ScheduleState | None
    prompts: list[str]


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
    dropped (they will be run again).

    Raises:
        RunDirError: a new run would overwrite an existing one, or there is nothing to resume.
        ConfigError: the run directory's config is invalid.
        PromptError: the prompt source is missing or empty.
        PreflightError: the base model or reward model cannot be loaded, or a prompt is too
            long for the model's context.
    """
    from online_dt.launch.preflight import preflight
    from online_dt.launch.prompts import load_prompts

    if resume is not None:
        run = RunDir(resume)
        cfg = load_config(run.path / "config.yaml", OnlineRunConfig, overrides)
        prompts = load_prompts(cfg.prompts)
        preflight(cfg, prompts, base_model_path(cfg))
        checkpoint = run.latest_checkpoint()
        if overrides:  # the run directory's config stays the one the run actually uses
            atomic_write_text(run.path / "config.yaml", config_yaml(cfg))
        state = json.loads((checkpoint / "state.json").read_text())["controller"]
        run.truncate_logs(state["iteration"])
        schedule_state = ScheduleState.from_dict(state["schedule"])
        return RunPlan(cfg, run, checkpoint, state["iteration"] + 1, schedule_state, prompts)
    assert cfg is not None
    prompts = load_prompts(cfg.prompts)
    run = RunDir(cfg.online.run_dir)
    run.check_new()
    preflight(cfg, prompts, base_model_path(cfg))
    run.create(config_yaml(cfg))
    return RunPlan(cfg, run, None, 0, None, prompts)


def execute(
    plan: RunPlan, workers: Any, *, progress: bool = True, callbacks: Sequence[Any] = ()
) -> list[dict[str, Any]]:
    """Run the loop of :mod:`online_dt.loop.loop` for a plan with any workers (local or Ray);
    per-iteration records also go to ``callbacks`` and, when configured, TensorBoard."""
    from online_dt.loop.loop import run_loop

    return run_loop(
        plan.cfg,
        plan.prompts,
        workers,
        plan.run,
        start_iteration=plan.start_iteration,
        schedule_state=plan.schedule_state,
        progress=progress,
        on_metrics=metrics_callback(plan, *callbacks),
    )


def metrics_callback(plan: RunPlan, *extra: Any) -> Any:
    """One ``on_metrics`` callback calling ``extra`` callbacks and, when configured, the
    TensorBoard logger (``RUN_DIR/tensorboard``)."""
    callbacks = list(extra)
    if plan.cfg.online.tensorboard:
        from online_dt.util.metrics import TensorBoardLogger

        callbacks.append(TensorBoardLogger(str(plan.run.path / "tensorboard")))

    def call(record: dict[str, Any]) -> None:
        for callback in callbacks:
            callback(record)

    return call


def base_model_path(cfg: OnlineRunConfig) -> str:
    """The base model path, building the embedded model if it is configured and absent."""
    from online_dt.embedded.base_model import resolve_base_model

    return resolve_base_model(cfg.model, cfg.bootstrap, progress=True)


def local_workers(plan: RunPlan) -> Any:
    """Workers in this process: one sampler, the reward model and the learner."""
    from online_dt.loop.handles import LocalHandle, SamplerGroup
    from online_dt.loop.loop import Workers
    from online_dt.rewards import load_reward_model, score_checked
    from online_dt.training.learner import Learner

    cfg = plan.cfg
    learner = Learner(cfg, base_model_path(cfg), plan.run.path, plan.checkpoint)
    update = learner.initial_update()
    from online_dt.rollout.factory import make_sampler

    sampler = make_sampler(cfg, update.path, update.version)
    reward_model = load_reward_model(cfg.reward_model)

    class Scorer:
        def score(self, prompts: list[str], completions: list[str]) -> list[float]:
            return score_checked(reward_model, prompts, completions)

    ft = cfg.fault_tolerance
    return Workers(
        SamplerGroup(
            [LocalHandle(sampler)], ft.rollout_retries, ft.retry_backoff_s, ft.restart_timeout_s
        ),
        LocalHandle(Scorer()),
        LocalHandle(learner),
    )


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``online-dt run`` / ``python -m online_dt.run``."""
    parser = argparse.ArgumentParser(
        prog="online-dt run",
        description="Run the online decision-transformer loop (Ray actors by default).",
    )
    from online_dt.cli import add_config_args

    add_config_args(parser, "configs/default.yaml")
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint"
    )
    parser.add_argument(
        "--local", action="store_true", help="run the workers in this process, without Ray"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the loop; returns the exit code (2: bad config or run directory)."""
    from online_dt.cli import parse_overrides

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    from online_dt.launch.preflight import PreflightError
    from online_dt.launch.prompts import PromptError

    try:
        cfg = None
        overrides = parse_overrides(args.overrides)
        if args.resume is None:
            cfg = load_config(args.config, OnlineRunConfig, overrides)
        plan = plan_run(cfg, args.resume, overrides)
    except (ConfigError, RunDirError, PromptError, PreflightError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log.info(
        "run directory %s, iterations %d..%d",
        plan.run.path,
        plan.start_iteration,
        plan.cfg.online.iterations - 1,
    )
    from online_dt.dashboard import start_for_run

    dashboard = start_for_run(plan.run.path, plan.cfg.dashboard)  # None: disabled or failed
    try:
        if args.local:
            execute(plan, local_workers(plan), progress=not args.no_progress)
            return 0
        from actors.controller import run_on_ray

        return run_on_ray(plan, progress=not args.no_progress)
    except Exception as e:
        print(f"error: {stopped_message(plan, e)}", file=sys.stderr)
        if args.resume is None and plan.run.remove_if_unstarted():
            print(f"(nothing was run; removed {plan.run.path})", file=sys.stderr)
        return 1
    finally:
        if dashboard is not None:
            dashboard.stop()
            log.info("dashboard stopped; `online-dt dashboard %s` serves it again", plan.run.path)


WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
"""``OSError`` numbers that mean the run directory cannot be written."""


def stopped_message(plan: RunPlan, error: Exception) -> str:
    """One message for a run that stopped on ``error``: what went wrong and how to continue."""
    from online_dt.loop.handles import WorkerLostError
    from online_dt.loop.scoring import RewardBatchError, first_line

    if isinstance(error, RewardBatchError):
        what = f"{error}. Fix the reward model"
    elif isinstance(error, OSError) and error.errno in WRITE_ERRNOS:
        what = f"cannot write to the run directory {plan.run.path}: {error}"
    elif isinstance(error, WorkerLostError):
        what = f"a worker was lost for good: {error}"
    else:
        what = f"{type(error).__name__}: {first_line(error)}"
        log.exception("the run stopped")
    try:
        checkpoint = plan.run.latest_checkpoint().name
        return (
            f"{what}. The last complete checkpoint is {checkpoint}; continue with"
            f" --resume {plan.run.path}"
        )
    except RunDirError:
        return f"{what}. No checkpoint was written yet: start a new run (another online.run_dir)"


if __name__ == "__main__":
    sys.exit(main())

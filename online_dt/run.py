"""Entry point of the online loop: ``python -m online_dt.run --config configs/default.yaml``.

This is what ``online-dt run`` and ``ray job submit ... -- python -m online_dt.run`` execute.
The config is validated (and the run directory checked) before Ray or any model is touched.
With ``--local`` the workers run in this process instead of Ray actors (debugging, tests).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from online_dt.arguments import add_config_args, parse_overrides
from online_dt.config import ConfigError, OnlineRunConfig, load_config
from online_dt.launch.rundir import RunDirError
from online_dt.util.text import first_line

if TYPE_CHECKING:
    from online_dt.loop.plan import RunPlan

log = logging.getLogger("online_dt.run")


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``online-dt run`` / ``python -m online_dt.run``."""
    parser = argparse.ArgumentParser(
        prog="online-dt run",
        description="Run the online decision-transformer loop (Ray actors by default).",
    )
    add_config_args(parser, "configs/default.yaml")
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint"
    )
    parser.add_argument(
        "--local", action="store_true", help="run the workers in this process, without Ray"
    )
    parser.add_argument(
        "--ray-dashboard",
        action="store_true",
        help="start Ray's own dashboard (port 8265) with the local Ray instance that the run "
        "starts (about 2 s more); a cluster the run joins keeps the dashboard it has",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="stream the workers' whole output (Ray actors, vLLM engines) to the console "
        "instead of RUN_DIR/logs/, with the project's debug messages and the known-harmless "
        "warnings that are otherwise dropped",
    )
    return parser


class ConsoleFormatter(logging.Formatter):
    """``HH:MM:SS message`` for information, ``HH:MM:SS LEVEL logger: message`` for warnings
    and errors (and for every record of a library, so its origin shows)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one console line (plus its traceback, if any)."""
        ours = record.name.split(".")[0] in ("online_dt", "actors")
        if record.levelno == logging.INFO and ours:
            self._style._fmt = "%(asctime)s %(message)s"
        else:
            self._style._fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
        return super().format(record)


def configure_console(verbose: bool) -> None:
    """Console logging of a run: INFO and up (DEBUG of the project's loggers with
    ``verbose``); the known-harmless warnings dropped unless ``verbose``
    (:mod:`online_dt.util.logs`, ``ONLINE_DT_VERBOSE`` for the processes started later)."""
    handler = logging.StreamHandler()
    handler.setFormatter(ConsoleFormatter(datefmt="%H:%M:%S"))
    root = logging.getLogger()
    # replace plain console handlers (ours from an earlier call, a library's basicConfig);
    # keep every other kind, such as a test's log capture
    for old in [h for h in root.handlers if type(h) is logging.StreamHandler]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    from online_dt.util.logs import VERBOSE_ENV, silence_known_harmless

    if verbose:
        os.environ[VERBOSE_ENV] = "1"
        for name in ("online_dt", "actors"):
            logging.getLogger(name).setLevel(logging.DEBUG)
    silence_known_harmless("")


def main(argv: list[str] | None = None) -> int:
    """Run the loop; returns the exit code (2: bad config or run directory)."""
    args = build_parser().parse_args(argv)
    configure_console(args.verbose)
    from online_dt.launch.preflight import PreflightError
    from online_dt.launch.prompts import PromptError
    from online_dt.loop.plan import execute, plan_run

    try:
        cfg = None
        overrides = parse_overrides(args.overrides)
        if args.resume is None:
            cfg = load_config(args.config, OnlineRunConfig, overrides)
        if args.local:
            plan, ray_error = plan_run(cfg, args.resume, overrides), None
        else:
            plan, ray_error = plan_while_ray_starts(
                lambda: plan_run(cfg, args.resume, overrides), ray_dashboard=args.ray_dashboard
            )
    except (ConfigError, RunDirError, PromptError, PreflightError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log.info(
        "run directory %s, iterations %d..%d of %d",
        plan.run.path,
        plan.start_iteration + 1,
        plan.cfg.online.iterations,
        plan.cfg.online.iterations,
    )
    from online_dt.dashboard import start_for_run

    dashboard = start_for_run(plan.run.path, plan.cfg.dashboard)  # None: disabled or failed
    try:
        if args.local:
            from online_dt.loop.plan import base_model_path
            from online_dt.loop.workers import local_workers
            from online_dt.util.malloc import retain_freed_memory

            if plan.cfg.resources.retain_freed_memory:
                retain_freed_memory()
            base = base_model_path(plan.cfg)
            workers = local_workers(plan.cfg, base, plan.run.path, plan.checkpoint, plan.start_over)
            try:
                execute(plan, workers, progress=not args.no_progress)
            finally:
                workers.close()
        else:
            from actors.controller import run_on_ray

            if ray_error is not None:
                raise ray_error
            run_on_ray(plan, progress=not args.no_progress, verbose=args.verbose)
        print_summary(plan, ray=not args.local)
        return 0
    except Exception as e:
        print(f"error: {stopped_message(plan, e)}", file=sys.stderr)
        if args.resume is None and plan.run.remove_if_unstarted():
            print(f"(nothing was run; removed {plan.run.path})", file=sys.stderr)
        return 1
    finally:
        if dashboard is not None:
            dashboard.stop()
            log.debug("dashboard stopped; `online-dt dashboard %s` serves it again", plan.run.path)
        if not args.local:
            from actors.controller import stop_ray

            stop_ray()  # 0.5 s sooner than Ray's exit hook (see stop_ray)


def plan_while_ray_starts(
    plan: Callable[[], RunPlan], *, ray_dashboard: bool = False
) -> tuple[RunPlan, Exception | None]:
    """Run ``plan`` (loading the prompts and the preflight checks, about 2 s on a CPU core) on
    a thread while this thread starts Ray (:func:`actors.controller.start_ray`, about 3 s for
    a local instance, with its dashboard if ``ray_dashboard``), which must run on the main
    thread.

    Returns:
        The plan, and the error that starting Ray raised, if any: the caller raises it where
        it reports a run's errors (the run directory that ``plan`` created is then removed).

    Raises:
        Exception: what ``plan`` raised; Ray is shut down again first if this call started
            or joined it.
    """
    from concurrent.futures import ThreadPoolExecutor

    from actors.controller import start_ray

    with ThreadPoolExecutor(1, thread_name_prefix="plan") as pool:
        planned = pool.submit(plan)
        ray_error: Exception | None = None
        joined = False
        try:
            joined = start_ray(dashboard=ray_dashboard)
        except Exception as e:
            ray_error = e
        try:
            return planned.result(), ray_error
        except BaseException:
            if joined:  # no actor has started
                import ray

                ray.shutdown()
            raise


def print_summary(plan: RunPlan, *, ray: bool) -> None:
    """Print :func:`online_dt.loop.console.run_summary` of the run's whole ``metrics.jsonl``."""
    from online_dt.config.dashboard import TOKEN_ENV
    from online_dt.loop.console import run_summary

    try:
        checkpoint: Path | None = plan.run.latest_checkpoint()
    except RunDirError:
        checkpoint = None
    logs = plan.run.logs_dir if ray else None
    # `online-dt dashboard RUN_DIR` applies the run's dashboard.token, or the variable if set
    token = plan.cfg.dashboard.token is not None or bool(os.environ.get(TOKEN_ENV))
    summary = run_summary(
        plan.run.read_metrics(),
        plan.run.path,
        checkpoint,
        logs,
        token,
        warm_start=plan.run.read_warm_start(),
    )
    print(summary, flush=True)


WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
"""``OSError`` numbers that mean the run directory cannot be written."""


def stopped_message(plan: RunPlan, error: Exception) -> str:
    """One message for a run that stopped on ``error``: what went wrong and how to continue."""
    from online_dt.loop.futures import WorkerLostError
    from online_dt.loop.scoring import RewardBatchError

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
        return (
            f"{what}. No checkpoint was written yet: --resume {plan.run.path} starts the run over"
        )


if __name__ == "__main__":
    sys.exit(main())

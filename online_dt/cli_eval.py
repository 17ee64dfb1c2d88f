"""The ``online-dt eval`` subcommand: its arguments and the printing of its report.

:func:`add_eval_parser` adds the subcommand to the parser of :mod:`online_dt.cli` (with the
argparse types its options need, e.g. ``--targets -0.5,-10``); :func:`eval_command` runs
:func:`online_dt.eval.run.run_eval` and prints the calibration table, or the objectives table
of a run with several objectives.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from typing import Any

from online_dt.config import ConfigError
from online_dt.eval.reference import DEFAULT_BIN_HALF_WIDTH, DEFAULT_REFERENCE_SAMPLES


def add_eval_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``eval`` subcommand and its options to ``sub`` (the CLI's subparsers)."""
    p = sub.add_parser(
        "eval",
        help="calibration of a policy: achieved vs target reward, diversity, KL; JSON + PNG",
        description="Sample completions of a run's policy (its latest checkpoint, a checkpoint "
        "or a policy directory) for each target, score them with the run's reward model and "
        "write calibration.json and calibration.png to RUN_DIR/eval/. A target above the best "
        "reward in the replay buffer is added and marked as extrapolation (a run with "
        "conditioning.best_command gets the best command's target instead). A run with several "
        "objectives (conditioning.objectives) is evaluated on a grid of target vectors instead "
        "(--grid N: N points per objective between the buffer's 10th and 90th percentile, or "
        "--targets S,B ...), and gets objectives.json and objectives.png: per target and "
        "objective the achieved mean and its error, whether the buffer has samples near the "
        "target (achievable), the calibration error over the achievable targets and the "
        "hypervolume of the achieved front next to the buffer's.",
    )
    p.add_argument("source", metavar="RUN_DIR_OR_CHECKPOINT", help="run, checkpoint or policy")
    p.add_argument(
        "--targets",
        nargs="+",
        type=_target,
        metavar="R",
        help="target rewards (default: the buffer's 10th, 50th and 90th percentile); for a run "
        "with several objectives, vectors with one comma-separated value per objective in the "
        "config's order, e.g. --targets 0.5,-10 0.8,-5",
    )
    # argparse takes "-0.5,-10" for an option (it looks like a negative number only without the
    # comma): let this parser read comma-separated numbers as values, as it does "-0.5"
    p._negative_number_matcher = _NEGATIVE_NUMBERS  # type: ignore[attr-defined]
    p.add_argument(
        "--grid",
        type=_positive_int,
        default=None,
        metavar="N",
        help="runs with several objectives only: N target values per objective, spanning the "
        "buffer's 10th to 90th percentile, N ** M targets in all (default: 3)",
    )
    p.add_argument(
        "--samples-per-target",
        type=_positive_int,
        default=64,
        metavar="N",
        help="completions per target (default: 64)",
    )
    p.add_argument("--out", help="output directory (default: RUN_DIR/eval)")
    p.add_argument("--config", help="config to use instead of the run's config.yaml")
    p.add_argument(
        "--backend",
        choices=["hf", "config"],
        default="hf",
        help="hf: the in-process reference sampler (default); config: the run's sampler backend",
    )
    p.add_argument(
        "--extrapolation-margin",
        type=_finite_float,
        default=0.25,
        metavar="M",
        help="add the target best-buffer-reward + M (default: 0.25; one-reward runs without "
        "conditioning.best_command only)",
    )
    p.add_argument(
        "--no-extrapolation",
        action="store_true",
        help="do not add the extrapolation target (a run with conditioning.best_command still "
        "gets the best command's row with the default targets)",
    )
    p.add_argument("--no-kl", action="store_true", help="skip the KL estimate (no base model)")
    p.add_argument(
        "--reference-samples",
        type=_nonnegative_int,
        default=DEFAULT_REFERENCE_SAMPLES,
        metavar="N",
        help="base-model samples for the binned-base reference: the base's own samples with "
        "reward within --reference-half-width of each target (NLL per token, -log P(bin) as "
        f"a KL lower bound), printed under each row (default: {DEFAULT_REFERENCE_SAMPLES}; "
        "0: none; one-reward runs only, skipped for runs with several objectives)",
    )
    p.add_argument(
        "--reference-half-width",
        type=_positive_float,
        default=DEFAULT_BIN_HALF_WIDTH,
        metavar="W",
        help=f"half the width of the reference's reward bins (default: {DEFAULT_BIN_HALF_WIDTH})",
    )
    p.add_argument(
        "--guidance",
        type=_nonnegative_float,
        default=0.0,
        metavar="W",
        help="sample with classifier-free guidance of weight W against the policy's own "
        "mixture over --guidance-grid: sharper, better calibrated conditionals at some cost "
        "in diversity and KL (docs/method.md, round 7; default: 0, off; --backend hf, "
        "one-reward runs only)",
    )
    p.add_argument(
        "--guidance-grid",
        type=_finite_float,
        nargs="+",
        metavar="R",
        help="the rewards of the guidance mixture, ascending (default: 5 evenly from the "
        "replay buffer's lowest reward to its highest)",
    )
    p.add_argument(
        "--guidance-prior",
        choices=["buffer", "uniform"],
        default="buffer",
        help="the guidance mixture's weights: buffer, the share of the replay buffer's rewards "
        "nearest to each grid reward (default); uniform, equal",
    )
    p.add_argument(
        "--recalibrate",
        type=_nonnegative_int,
        default=0,
        metavar="N",
        help="first measure the mean reward the policy achieves at each conditioning value of "
        "--recalibration-grid (token mode: each reward bin's midpoint) on N of the run's "
        "prompts (N x grid reward-model calls), then ask each target's samples for the "
        "conditioning that achieves it (docs/method.md, round 8; default: 0, off; any "
        "--backend, one-reward runs only)",
    )
    p.add_argument(
        "--recalibration-grid",
        type=_finite_float,
        nargs="+",
        metavar="C",
        help="scalar mode: the conditioning values --recalibrate measures (default: 5 evenly "
        "from the replay buffer's lowest reward to its highest, plus one step beyond each end; "
        "with a best command not the step above conditioning.reward_max, which asks for it)",
    )
    p.add_argument(
        "--recalibration-strategy",
        choices=["mix", "interpolate"],
        default="mix",
        help="how a target between two measured values is asked for: mix, a share of its "
        "samples at each (default; exact in expectation); interpolate, every sample at the "
        "interpolated value (assumes the curve is straight in between)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")


def _finite_float(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


_NUMBER = r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_NEGATIVE_NUMBERS = re.compile(rf"^-(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?:,\s*{_NUMBER})*$")
"""What the ``eval`` parser reads as a value, not an option, though it starts with ``-``: a
negative number or a comma-separated vector starting with one (``-0.5,-10``)."""


def _target(text: str) -> float | tuple[float, ...]:
    """An argparse ``type`` for ``--targets``: ``R`` (a number) or ``R1,R2,...`` (a vector,
    one value per objective); every value finite."""
    if "," not in text:
        return _finite_float(text)
    return tuple(_finite_float(part.strip()) for part in text.split(","))


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer ``>= minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_nonnegative_int = _int_at_least(0)


def _positive_float(text: str) -> float:
    value = _finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def _nonnegative_float(text: str) -> float:
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def eval_command(args: argparse.Namespace) -> int:
    """Run ``online-dt eval`` with the parsed ``args`` and print the report; the exit code (2
    for an unusable source, config or prompts, 1 for other errors)."""
    from online_dt.eval.calibration import format_calibration_table
    from online_dt.eval.run import run_eval
    from online_dt.eval.source import EvalError
    from online_dt.launch.prompts import PromptError
    from online_dt.replay.schema import BufferCorruptError
    from online_dt.rewards import RewardModelLoadError

    try:
        report = run_eval(
            args.source,
            targets=args.targets,
            samples_per_target=args.samples_per_target,
            out_dir=args.out,
            config_path=args.config,
            backend=args.backend,
            extrapolation_margin=None if args.no_extrapolation else args.extrapolation_margin,
            with_kl=not args.no_kl,
            seed=args.seed,
            reference_samples=args.reference_samples,
            reference_half_width=args.reference_half_width,
            grid=args.grid,
            guidance_weight=args.guidance,
            guidance_rewards=args.guidance_grid,
            guidance_prior=args.guidance_prior,
            recalibration_samples=args.recalibrate,
            recalibration_grid=args.recalibration_grid,
            recalibration_strategy=args.recalibration_strategy,
        )
    except (EvalError, ConfigError, PromptError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (OSError, ValueError, ImportError, RewardModelLoadError, BufferCorruptError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    where = "" if report["iteration"] is None else f" (iteration {report['iteration']})"
    print(f"policy {report['policy']}{where}, {report['samples_per_target']} samples per target")
    if report.get("kind") == "objectives":
        return _print_objectives(report)
    if report.get("guidance"):
        g = report["guidance"]
        print(
            f"guided sampling: weight {g['weight']:g} against the policy's own mixture over "
            f"{len(g['rewards'])} rewards from {min(g['rewards']):.3f} to {max(g['rewards']):.3f}"
            f", {g['prior']} prior"
        )
    if report.get("recalibration"):
        r = report["recalibration"]
        print(
            f"recalibrated on {r['calls']} reward-model calls ({r['samples']} prompts x "
            f"{len(r['conditioning'])} conditioning values, {r['strategy']}): each target asks "
            "for the conditioning that achieved it"
        )
    print(format_calibration_table(report["rows"], report["reference"]))
    if report["reference"] is not None:
        ref = report["reference"]
        print(
            f"^ base: {ref['samples']} samples of the base model on the same prompts; "
            "ideal KL >= -log P(bin), nats per completion: the least KL to the base of a policy "
            "whose samples all earn that reward"
        )
    elif report["reference_error"]:
        print(f"no binned-base reference: {report['reference_error']}")
    print(f"\nwrote {report['table']} and {report['plot']}")
    return 0


def _print_objectives(report: dict[str, Any]) -> int:
    """Print a multi-objective evaluation (:mod:`online_dt.eval.objectives`): the table, the
    summary, and where it was written."""
    from online_dt.config import ObjectiveConfig
    from online_dt.eval.objectives_table import (
        format_objectives_summary,
        format_objectives_table,
    )

    objectives = [ObjectiveConfig.model_validate(o) for o in report["objectives"]]
    grid = report["grid_points"]
    names = ", ".join(o.name for o in objectives)
    print(
        f"objectives ({names}): "
        + (f"a grid of {grid} points per objective" if grid else "the given targets")
        + f", {len(report['rows'])} targets; buffer: {report['buffer']['samples']} samples"
    )
    print(format_objectives_table(report["rows"], objectives, report["goal"]))
    print()
    print(format_objectives_summary(report["summary"], objectives))
    if report["kl_error"]:
        print(f"no KL estimate: {report['kl_error']}")
    if report["reference_error"]:
        print(f"no binned-base reference: {report['reference_error']}")
    print(f"\nwrote {report['table']} and {report['plot']}")
    return 0

"""Command-line entry point: ``online-dt <command>``.

Configs are parsed and validated before heavy libraries are imported, so ``--help`` is instant
and an invalid config fails in well under a second with the field named. The ``eval``
subcommand's options and report printing are in :mod:`online_dt.cli_eval`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from online_dt.arguments import add_config_args, parse_overrides
from online_dt.cli_eval import add_eval_parser, eval_command
from online_dt.config import ConfigError, OfflineRunConfig, config_class_for, load_config
from online_dt.launch.rundir import (
    BUFFER_DIR,
    CHECKPOINT_POLICY_DIR,
    CONFIG_FILE,
    EVAL_TABLE_FILE,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="online-dt",
        description="Online decision-transformer training of reward-conditioned language models.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "bootstrap",
        help="build (or reuse) the embedded tiny GPT-2 base model and report its reward spread",
        description="Build the embedded default base model: a synthetic review corpus, a BPE "
        "tokenizer and a tiny GPT-2 pretrained on CPU, cached and reused.",
    )
    add_config_args(p, "configs/offline.yaml")
    p.add_argument("--samples", type=int, default=256, help="samples for the VADER spread report")

    p = sub.add_parser(
        "train-offline",
        help="offline decision-transformer demo: sample, score, train conditioned, evaluate",
        description="Sample completions from the base model, score them with the reward model, "
        "train the reward-conditioned policy on them and print a calibration table (achieved "
        "reward for a low, a middle and a high target), saved as calibration.json.",
    )
    add_config_args(p, "configs/offline.yaml")

    p = sub.add_parser(
        "validate", help="validate a config file (offline or online) and print it resolved"
    )
    add_config_args(p, "configs/offline.yaml")

    sub.add_parser(
        "run",
        add_help=False,
        help="the online decision-transformer loop on Ray (see `online-dt run --help`)",
    )
    p = sub.add_parser(
        "export",
        help="export a run's replay buffer as a Hugging Face dataset directory",
        description="Write every persisted sample of RUN_DIR/buffer (sorted by sample id) with "
        "datasets' save_to_disk.",
    )
    p.add_argument("run_dir", help="run directory")
    p.add_argument("--out", help="output directory (default: RUN_DIR/export)")

    p = sub.add_parser(
        "dashboard",
        help="serve the read-only web dashboard of a finished or running run directory",
        description="Serve the dashboard of RUN_DIR (schedule, calibration, buffer rewards, "
        "diversity and KL, throughput, recent samples, status, latest evaluation) until Ctrl-C. "
        "It reads the run directory only and updates as iterations land.",
    )
    p.add_argument("run_dir", help="run directory")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    p.add_argument(
        "--port",
        type=int,
        default=None,
        help="TCP port, 0 for any free port (default: the run's dashboard.port, 8470, or a free "
        "port when that one is busy)",
    )
    p.add_argument(
        "--token",
        default=None,
        help="access token every request then needs (default: the environment variable "
        "ONLINE_DT_DASHBOARD_TOKEN, else the run's dashboard.token, else none); the variable "
        "keeps it out of the process list",
    )
    add_eval_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (2 for config errors)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "run":
        from online_dt.run import main as run_main

        return run_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.command == "export":
        return _export(Path(args.run_dir), Path(args.out) if args.out else None)
    if args.command == "dashboard":
        return _dashboard(Path(args.run_dir), args.host, args.port, args.token)
    if args.command == "eval":
        return eval_command(args)
    try:
        cls = config_class_for(args.config) if args.command == "validate" else OfflineRunConfig
        cfg = load_config(args.config, cls, parse_overrides(args.overrides))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    progress = not args.no_progress
    if args.command == "validate":
        print(json.dumps(cfg.model_dump(mode="json"), indent=2))
        return 0
    if args.command == "bootstrap":
        return _bootstrap(cfg, args.samples, progress)
    return _train_offline(cfg, progress)


def _export(run_dir: Path, out: Path | None) -> int:
    from online_dt.replay.export import export_to_disk

    buffer_dir = run_dir / BUFFER_DIR
    if not buffer_dir.is_dir():
        print(f"error: {run_dir} has no {BUFFER_DIR}/ directory", file=sys.stderr)
        return 2
    out = out or run_dir / "export"
    data = export_to_disk(buffer_dir, out)
    print(f"wrote {len(data)} samples with columns {data.column_names} to {out}")
    return 0


def _dashboard(run_dir: Path, host: str, port: int | None, token: str | None) -> int:
    from online_dt.config import DashboardConfig, format_validation_error
    from online_dt.config.dashboard import resolve_token
    from online_dt.dashboard import DashboardError, serve
    from online_dt.dashboard.server import describe

    if not run_dir.is_dir():
        print(f"error: {run_dir} is not a directory", file=sys.stderr)
        return 2
    import yaml
    from pydantic import ValidationError

    settings = DashboardConfig()
    config_file = run_dir / CONFIG_FILE
    section = None
    if config_file.exists():  # the run's own poll interval, table size and token
        try:
            section = (yaml.safe_load(config_file.read_text()) or {}).get("dashboard")
            settings = DashboardConfig.model_validate(section or {})
        except (OSError, ValueError, AttributeError, yaml.YAMLError) as e:
            reason: object = e
            if isinstance(e, ValidationError):  # its own text shows the values, a token too
                reason = format_validation_error(e, "dashboard section")
            note = f"note: {config_file} unreadable ({reason}); default dashboard settings"
            print(note, file=sys.stderr)
    try:
        token = resolve_token(settings.token, explicit=token)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if token is None and isinstance(section, dict) and section.get("token") is not None:
        # the run asked for a token that cannot be read: never serve without one
        print(f"error: {config_file}: dashboard.token is not usable; pass --token", file=sys.stderr)
        return 2
    try:
        handle = serve(
            run_dir,
            host,
            settings.port if port is None else port,
            poll_interval_s=settings.poll_interval_s,
            recent_samples=settings.recent_samples,
            fallback=port is None,
            token=token,
        )
    except DashboardError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"dashboard of {run_dir}: {describe(handle)}; Ctrl-C to stop", flush=True)
    handle.wait()
    return 0


def _bootstrap(cfg: OfflineRunConfig, samples: int, progress: bool) -> int:
    from online_dt.embedded.bootstrap import ensure_embedded_model
    from online_dt.embedded.vader_spread import sample_vader_spread

    path = ensure_embedded_model(cfg.bootstrap, progress=progress)
    print(f"embedded base model: {path}")
    spread = sample_vader_spread(path, n=samples, seed=0)
    print(json.dumps(spread, indent=2))
    return 0


def _train_offline(cfg: OfflineRunConfig, progress: bool) -> int:
    from online_dt.eval.calibration import format_calibration_table
    from online_dt.offline import run_offline

    try:
        report = run_offline(cfg, progress=progress)
    except (OSError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    base = report["base_samples"]
    print(
        f"\nbase model samples: {base['count']}, "
        f"reward mean {base['mean']:.3f} sd {base['std']:.3f}"
    )
    print(f"conditioned policy ({report['conditioning']} mode), achieved reward per target:")
    print(format_calibration_table(report["calibration"]))
    run_dir = Path(cfg.offline.run_dir)
    print(f"\nwrote {run_dir / EVAL_TABLE_FILE} and {run_dir / CHECKPOINT_POLICY_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

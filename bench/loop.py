"""Loop benchmark: the online loop on Ray in sync and async mode, and the standalone sampler.

Runs the online loop on Ray with the given config (default: configs/plain.yaml, the default before
round 30, on which the README's loop figures were measured; shortened) once per mode (``--modes``,
default ``sync,async``), then the standalone sampler alone with the same prompts, samples per
prompt and sampling settings, and prints from that one run, per mode: steady-state samples/s
(iteration 0 left out: it holds the engine's first rollout), the time per stage (rollout, scoring,
training, weight sync, checkpoint, other) and how much of each iteration's wall time the stages
cover, and, measured from timestamps taken inside the actors, the share of each training interval
overlapped by the next iteration's rollouts. Then async ÷ sync samples/s and each mode ÷ the
standalone sampler.

With ``--grpo-beta B``, TRL's ``GRPOTrainer`` (the ``bench/peers.py`` setup: same base model,
reward model, sampling settings and train prompts) then runs at the same reward-model calls as
each online-dt run (iterations x prompts x samples), and each mode's whole wall time (Ray
start, actors, engine start and the loop, as a user of ``online-dt run`` waits for it) is
divided by GRPO's (model load and training), which runs first, before Ray starts.

With ``--repeats N`` the modes run N times, alternating (sync, async, sync, async, ...), so
that a machine's drift slows both alike: the report's ``modes`` are the first repeat's, and
``repeats`` lists each repeat's samples/s and async ÷ sync with their median. On a 2-core
machine one repeat's ratio moves by about 0.05 from run to run (docs/method.md, round 11).

With ``--processes`` (and ``--grpo-beta``), the comparison a user makes from a shell comes
last: each mode's ``python -m online_dt.run`` (what ``online-dt run`` runs), the same run with
``--local`` (sync, the workers in one process without Ray: what Ray's start, actors and
shutdown cost) and a process that runs the same GRPO, each timed from its start to its exit
(imports, preflight, Ray's start and shutdown, model loads; TRL imports vLLM when it is
installed).

Usage:
    .venv/bin/python bench/loop.py [--config configs/plain.yaml] [--iterations 10]
        [--modes sync,async] [--repeats 1] [--set key=value ...] [--grpo-beta 0.04]
        [--processes]
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STAGES = ["rollout_s", "scoring_s", "training_s", "sync_s", "checkpoint_s", "other_s"]


def overlap_share(metrics: list[dict[str, Any]]) -> float | None:
    """Seconds of training (iteration i) during which iteration i + 1's rollouts ran, over the
    seconds of training, from the actors' own timestamps; ``None`` without them."""
    trained = overlapped = 0.0
    for prev, nxt in itertools.pairwise(metrics):
        keys = ("train_started_at", "train_finished_at", "rollout_started_at")
        if any(prev.get(k) is None for k in keys[:2]) or nxt.get(keys[2]) is None:
            return None
        t0, t1 = prev["train_started_at"], prev["train_finished_at"]
        r0, r1 = nxt["rollout_started_at"], nxt["rollout_finished_at"]
        trained += t1 - t0
        overlapped += max(0.0, min(t1, r1) - max(t0, r0))
    return overlapped / trained if trained > 0 else None


def summarise(metrics: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    """The figures of one mode's run."""
    steady = metrics[1:] if len(metrics) > 1 else metrics
    per_stage = {s: round(sum(m.get(s, 0.0) for m in steady) / len(steady), 3) for s in STAGES}
    stage_sum = sum(sum(m.get(s, 0.0) for s in STAGES) for m in steady)
    share = overlap_share(metrics)
    return {
        "loop_wall_s_including_startup": round(wall, 1),
        "samples_per_iteration": metrics[0]["samples"],
        "steady_samples_per_s": round(
            sum(m["samples"] for m in steady) / sum(m["wall_s"] for m in steady), 2
        ),
        "seconds_per_iteration_by_stage": per_stage,
        "stages_over_wall": round(stage_sum / sum(m["wall_s"] for m in steady), 4),
        "training_overlapped_by_next_rollouts": None if share is None else round(share, 3),
        "policy_lag_max": max(m.get("policy_lag_max", 0) for m in metrics),
        "achieved_first_last": [
            round(metrics[0]["achieved_mean"], 3),
            round(metrics[-1]["achieved_mean"], 3),
        ],
    }


def ratio_of(modes: dict[str, Any]) -> dict[str, float]:
    """``{"async_over_sync_samples_per_s": ...}`` of one repeat's modes (empty unless both
    ran)."""
    if "sync" not in modes or "async" not in modes:
        return {}
    rate = {m: modes[m]["steady_samples_per_s"] for m in ("sync", "async")}
    return {"async_over_sync_samples_per_s": round(rate["async"] / rate["sync"], 3)}


def grpo_seconds(config: str, cfg: Any, beta: float) -> float:
    """Wall seconds of ``bench/peers.py``'s TRL GRPO run (model load and training, evaluation
    left out) at ``cfg``'s reward calls: iterations x prompts_per_iteration x
    samples_per_prompt."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import peers

    budget = (
        cfg.online.iterations * cfg.online.prompts_per_iteration * cfg.online.samples_per_prompt
    )
    args = peers.build_parser().parse_args(
        ["--config", config, "--methods", "grpo", "--budget", str(budget), "--no-progress"]
    )
    setup = peers.make_setup(args, peers.plan_budget(args, ["grpo"]))
    try:
        row = peers.run_grpo(setup, beta)[0]
    finally:
        shutil.rmtree(setup.work, ignore_errors=True)
    return float(row["train_s"])


def process_seconds(command: list[str]) -> float:
    """Wall seconds of ``command`` as a process, from its start to its exit (its output is
    discarded; a failure raises ``CalledProcessError``)."""
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def whole_processes(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Each mode's ``python -m online_dt.run``, the same run in sync mode with ``--local`` (the
    workers in one process, no Ray: ``local``) and the GRPO run as processes, timed from start
    to exit, and each one's time over GRPO's."""
    figures: dict[str, Any] = {}
    runs = [(mode, mode, []) for mode in args.modes.split(",")] + [("local", "sync", ["--local"])]
    for name, mode, flags in runs:
        command = [sys.executable, "-m", "online_dt.run", "--config", args.config, *flags]
        overrides = [
            *args.set,
            f"online.run_dir={work / f'process-{name}'}",
            f"online.iterations={args.iterations}",
            f"online.mode={mode}",
        ]
        command += [a for kv in overrides for a in ("--set", kv)] + ["--no-progress"]
        figures[f"{name}_s"] = round(process_seconds(command), 1)
    command = [sys.executable, __file__, "--config", args.config, "--iterations"]
    command += [str(args.iterations), "--grpo-only", str(args.grpo_beta)]
    command += [a for kv in args.set for a in ("--set", kv)]
    grpo = figures["grpo_s"] = round(process_seconds(command), 1)
    for name, _, _ in runs:
        figures[f"{name}_over_grpo"] = round(figures[f"{name}_s"] / grpo, 3)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/plain.yaml")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--modes", default="sync,async", help="comma-separated online.mode values")
    parser.add_argument("--sampler-repeats", type=int, default=5)
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run the modes this many times, alternating, and report each repeat's ratio",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--grpo-beta",
        type=float,
        default=None,
        help="also time TRL's GRPO with this KL coefficient at the same reward calls",
    )
    parser.add_argument(
        "--processes",
        action="store_true",
        help="with --grpo-beta: also time each mode's `python -m online_dt.run` and the GRPO "
        "run as whole processes, start to exit",
    )
    parser.add_argument("--grpo-only", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.processes and args.grpo_beta is None:
        parser.error("--processes needs --grpo-beta")
    if args.grpo_only is not None:  # the GRPO process that --processes times
        from online_dt.arguments import parse_overrides
        from online_dt.config import OnlineRunConfig, load_config

        probe = load_config(args.config, OnlineRunConfig, parse_overrides(args.set))
        probe.online.iterations = args.iterations
        grpo_seconds(args.config, probe, args.grpo_only)
        return 0

    import ray

    from actors.controller import run_on_ray
    from online_dt.arguments import parse_overrides
    from online_dt.config import OnlineRunConfig, load_config
    from online_dt.loop.loop import prompts_for, sampling_params
    from online_dt.loop.plan import plan_run
    from online_dt.rollout.factory import make_sampler

    grpo_s = None
    if args.grpo_beta is not None:  # first, before Ray starts any process on this machine
        probe = load_config(args.config, OnlineRunConfig, parse_overrides(args.set))
        probe.online.iterations = args.iterations
        grpo_s = grpo_seconds(args.config, probe, args.grpo_beta)
    work = Path(tempfile.mkdtemp(prefix="odt-bench-loop-"))
    report: dict[str, Any] = {"config": args.config, "iterations": args.iterations, "modes": {}}
    cfg = plan = None
    repeats: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        figures: dict[str, Any] = {}
        for mode in args.modes.split(","):
            run_dir = work / (mode if repeat == 0 else f"{mode}-{repeat}")
            overrides = parse_overrides(args.set)
            overrides.setdefault("online", {}).update(
                {"run_dir": str(run_dir), "iterations": args.iterations, "mode": mode}
            )
            overrides.setdefault("dashboard", {}).update({"enabled": False})
            cfg = load_config(args.config, OnlineRunConfig, overrides)
            plan = plan_run(cfg, None)
            start = time.perf_counter()
            run_on_ray(plan, progress=False)
            wall = time.perf_counter() - start
            figures[mode] = {
                **summarise(plan.run.read_metrics(), wall),
                "run_dir": str(plan.run.path),
            }
        if repeat == 0:
            report["modes"] = figures
        repeats.append(
            {
                **{f"{m}_samples_per_s": f["steady_samples_per_s"] for m, f in figures.items()},
                **ratio_of(figures),
            }
        )
    assert cfg is not None and plan is not None
    ray.shutdown()

    # the standalone sampler, same prompts and settings, on the last run's last weights
    metrics = plan.run.read_metrics()
    versions = sorted(plan.run.weights_dir.glob("v*"))
    sampler = make_sampler(cfg, str(versions[-1]), 0)
    batch = prompts_for(plan.prompts, 0, cfg.online.prompts_per_iteration)
    targets = [metrics[0]["target"]] * len(batch)
    params = sampling_params(cfg, 0, cfg.online.samples_per_prompt)
    sampler.generate(batch, targets, params)  # warm-up
    start = time.perf_counter()
    produced = sum(
        len(sampler.generate(batch, targets, params)) for _ in range(args.sampler_repeats)
    )
    sampler_rate = produced / (time.perf_counter() - start)
    if hasattr(sampler, "close"):
        sampler.close()
    report["standalone_sampler_samples_per_s"] = round(sampler_rate, 2)
    modes = report["modes"]
    for figures in modes.values():
        figures["ratio_over_sampler"] = round(figures["steady_samples_per_s"] / sampler_rate, 3)
    if grpo_s is not None:
        report["grpo"] = {"beta": args.grpo_beta, "wall_s": round(grpo_s, 1)}
        for figures in modes.values():
            figures["wall_over_grpo"] = round(figures["loop_wall_s_including_startup"] / grpo_s, 3)
    report.update(ratio_of(modes))
    if args.processes:
        report["processes"] = whole_processes(args, work)
    if args.repeats > 1:
        key = "async_over_sync_samples_per_s"
        ratios = [r[key] for r in repeats if key in r]
        report["repeats"] = repeats
        if ratios:
            report["async_over_sync_median"] = round(statistics.median(ratios), 3)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

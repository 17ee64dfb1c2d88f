"""Loop benchmark: end-to-end samples/s of the online loop vs. the standalone sampler.

Runs the online loop on Ray with the given config (default: configs/default.yaml, shortened),
then the standalone sampler alone with the same prompts, samples per prompt and sampling
settings, and prints from that one run: end-to-end samples/s, standalone sampler samples/s,
their ratio, and the time per stage (rollout, scoring, training, weight sync, other).

Usage:
    .venv/bin/python bench/loop.py [--config configs/default.yaml] [--iterations 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--sampler-repeats", type=int, default=5)
    args = parser.parse_args()

    from actors.controller import run_on_ray
    from online_dt.config import OnlineRunConfig, load_config
    from online_dt.loop.loop import prompts_for, sampling_params
    from online_dt.loop.plan import plan_run
    from online_dt.rollout.factory import make_sampler

    work = Path(tempfile.mkdtemp(prefix="odt-bench-loop-"))
    overrides = {"online": {"run_dir": str(work / "run"), "iterations": args.iterations}}
    cfg = load_config(args.config, OnlineRunConfig, overrides)
    plan = plan_run(cfg, None)
    start = time.perf_counter()
    run_on_ray(plan, progress=False)
    loop_wall = time.perf_counter() - start
    metrics = plan.run.read_metrics()

    # the standalone sampler, same prompts and settings, on the run's first published weights
    import ray

    ray.shutdown()
    versions = sorted((plan.run.weights_dir).glob("v*"))
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

    stages = ["rollout_s", "scoring_s", "training_s", "sync_s", "other_s"]
    steady = metrics[1:] if len(metrics) > 1 else metrics
    per_stage = {s: round(sum(m[s] for m in steady) / len(steady), 3) for s in stages}
    total = sum(per_stage.values())
    loop_rate = sum(m["samples"] for m in steady) / sum(m["wall_s"] for m in steady)
    report = {
        "config": args.config,
        "iterations": args.iterations,
        "samples_per_iteration": metrics[0]["samples"],
        "loop_wall_s_including_startup": round(loop_wall, 1),
        "end_to_end_samples_per_s": round(loop_rate, 1),
        "standalone_sampler_samples_per_s": round(sampler_rate, 1),
        "ratio_end_to_end_over_sampler": round(loop_rate / sampler_rate, 3),
        "seconds_per_iteration_by_stage": per_stage,
        "share_by_stage": {s: round(v / total, 3) for s, v in per_stage.items()},
        "achieved_first_last": [
            round(metrics[0]["achieved_mean"], 3),
            round(metrics[-1]["achieved_mean"], 3),
        ],
        "run_dir": str(plan.run.path),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One policy conditioned on two rewards against two single-objective runs, at equal reward calls.

Issue #14's measurement: a multi-objective run (``--config``, default
``configs/multi_objective.yaml``: VADER sentiment and brevity) spends the whole budget of
reward-model calls; two single-objective runs spend half each, one on sentiment (the recipe
without the best command, ``configs/plain.yaml``, the default before round 30, on which
``configs/multi_objective.yaml`` is built) and one on brevity (the same recipe with
:class:`~online_dt.rewards.multi.BrevityReward` and its range). Every run trains in process on
the same train prompts; every policy is scored on the same held-out prompts, never trained on,
by :class:`~online_dt.rewards.multi.SentimentBrevityReward` (both objectives):

* the targets: a grid of ``--grid`` values per objective, evenly from the base model's 10th to
  90th percentile of that objective (from ``--base-samples`` base samples on the held-out
  prompts). The multi-objective policy is asked for every grid vector; each single-objective
  policy for its own objective's values (it cannot be asked for the other);
* calibration error per objective: ``|mean achieved - target|`` in normalised units (the
  objective's ``[low, high]`` maps to ``[-1, 1]``, so 0.1 is 5 % of the range), over every
  target and over the achievable ones: those with at least 5 of the multi-objective run's
  replay-buffer samples within 0.1 (normalised, every objective) of the target;
* the achieved front: the Pareto front of the mean achieved vectors at the targets (the
  multi-objective policy's grid; for the two single-objective runs, the union of both
  policies' points), and its hypervolume in normalised units against ``(-1, ..., -1)``.

Prints a table, writes ``objectives.json`` and ``objectives.png`` to ``--out``. Run from the
repository root: ``.venv/bin/python bench/objectives.py`` (``--help`` for the settings).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: this checkout's online_dt, not an installed one
    sys.path.insert(0, str(ROOT))

SINGLE_CONFIG = ROOT / "configs" / "plain.yaml"
"""The single-objective recipe both single-objective runs start from."""

BREVITY_OVERRIDES: dict[str, Any] = {
    "reward_model": {
        "kind": "custom",
        "class_path": "online_dt.rewards.multi:BrevityReward",
        "kwargs": {"max_words": 20},
    },
    # the default's VADER settings scaled to a range 10x as wide ([-20, 0] words, not [-1, 1])
    "conditioning": {
        "normalization": {"kind": "affine", "center": -10.0, "scale": 5.0},
        "reward_min": -20.0,
        "reward_max": 0.0,
    },
    "schedule": {"start": -10.0, "max_increase": 1.0, "spread": 1.0, "max_target": 0.0},
}
"""``configs/plain.yaml`` changed for the brevity run: its reward model, and the reward
units of the normalisation and the schedule (the sentiment recipe's, times 10)."""


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        description="one multi-objective online-dt run against two single-objective runs at "
        "the same total reward calls: per-objective calibration over a grid of targets and "
        "the hypervolume of the achieved front, on held-out prompts",
    )
    p.add_argument("--config", default=str(ROOT / "configs" / "multi_objective.yaml"))
    p.add_argument("--grid", type=int, default=3, help="target values per objective")
    p.add_argument("--heldout-prompts", type=int, default=128)
    p.add_argument(
        "--eval-samples", type=int, default=2, help="samples per held-out prompt per target"
    )
    p.add_argument("--base-samples", type=int, default=4, help="base samples per held-out prompt")
    p.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="iterations of the multi-objective run (default: the config's); each "
        "single-objective run gets half as many, so the total reward calls are equal",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a field of the multi-objective config, as `online-dt run --set` (repeatable)",
    )
    p.add_argument("--out", default="bench-objectives", help="output directory")
    p.add_argument("--keep-work", action="store_true", help="keep the runs' directories")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the three runs, evaluate them and report."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from online_dt.arguments import parse_overrides
    from online_dt.config import OnlineRunConfig, load_config
    from online_dt.config.loading import deep_merge
    from online_dt.embedded.base_model import resolve_base_model
    from online_dt.launch.prompts import load_prompts
    from online_dt.rewards.multi import SentimentBrevityReward

    args = build_parser().parse_args(argv)
    if args.grid < 2:
        raise SystemExit("error: --grid must be at least 2")
    overrides = parse_overrides(args.sets)
    overrides.setdefault("sampler", {}).setdefault("backend", "hf")
    cfg = load_config(args.config, OnlineRunConfig, overrides)
    objectives = cfg.conditioning.objectives
    if [o.name for o in objectives] != ["sentiment", "brevity"]:
        raise SystemExit("error: the bench compares the objectives sentiment and brevity")
    iterations = args.iterations or cfg.online.iterations
    if iterations % 2:
        raise SystemExit("error: the multi-objective run needs an even number of iterations")
    torch.manual_seed(args.seed)
    base_path = resolve_base_model(cfg.model, cfg.bootstrap, progress=not args.no_progress)
    prompts = list(dict.fromkeys(load_prompts(cfg.prompts)))
    random.Random(args.seed).shuffle(prompts)
    heldout, train = prompts[: args.heldout_prompts], prompts[args.heldout_prompts :]
    scorer = SentimentBrevityReward(max_words=20)
    work = Path(tempfile.mkdtemp(prefix="odt-objectives-"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(base_path)
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32).eval()
        base_points = base_rewards(base, tokenizer, heldout, scorer, cfg, args)
        axes = [
            np.linspace(
                np.quantile(base_points[:, m], 0.1), np.quantile(base_points[:, m], 0.9), args.grid
            )
            for m in range(len(objectives))
        ]
        grid = [(float(s), float(b)) for s in axes[0] for b in axes[1]]

        runs: dict[str, dict[str, Any]] = {}
        multi_overrides = deep_merge(overrides, {"online": {"iterations": iterations}})
        runs["multi"] = train_run(
            Path(args.config), multi_overrides, train, base_path, work / "multi", args
        )
        half = {  # half the iterations, of the same size: half the reward calls each
            "sampler": {"backend": cfg.sampler.backend},
            "online": {
                "iterations": iterations // 2,
                "prompts_per_iteration": cfg.online.prompts_per_iteration,
                "samples_per_prompt": cfg.online.samples_per_prompt,
            },
        }
        runs["sentiment"] = train_run(
            SINGLE_CONFIG, half, train, base_path, work / "sentiment", args
        )
        runs["brevity"] = train_run(
            SINGLE_CONFIG,
            deep_merge(BREVITY_OVERRIDES, half),
            train,
            base_path,
            work / "brevity",
            args,
        )
        report = evaluate(runs, grid, axes, heldout, scorer, objectives, args)
        report["base"] = {
            "samples": len(base_points),
            "p10": [float(np.quantile(base_points[:, m], 0.1)) for m in range(2)],
            "p90": [float(np.quantile(base_points[:, m], 0.9)) for m in range(2)],
            "front": front_figures(base_points, objectives),
        }
        report["settings"] = {**vars(args), "iterations": iterations}
        (out / "objectives.json").write_text(json.dumps(report, indent=2))
        plot(report, objectives, out / "objectives.png")
        print(format_report(report))
        print(f"\nwrote {out / 'objectives.json'} and {out / 'objectives.png'}")
    finally:
        if args.keep_work:
            print(f"runs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def base_rewards(
    base: Any, tokenizer: Any, prompts: list[str], scorer: Any, cfg: Any, args: argparse.Namespace
) -> Any:
    """``[N, 2]`` (sentiment, brevity) of ``--base-samples`` base samples per prompt."""
    import numpy as np
    import torch

    from online_dt.eval.base_samples import encode_prompts
    from online_dt.policy.generation import sample_unconditioned
    from online_dt.policy.loading import pad_id

    repeated = [p for p in prompts for _ in range(args.base_samples)]
    generator = torch.Generator().manual_seed(args.seed + 1)
    sampled = sample_unconditioned(
        base,
        encode_prompts(tokenizer, repeated),
        max_new_tokens=cfg.sampling.max_new_tokens,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad_id(tokenizer),
        temperature=cfg.sampling.temperature,
        top_p=cfg.sampling.top_p,
        generator=generator,
    )
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in sampled.token_ids]
    scores = scorer.score(repeated, texts)
    return np.array([[s["sentiment"], s["brevity"]] for s in scores], dtype=np.float64)


def train_run(
    config: Path,
    overrides: dict[str, Any],
    prompts: list[str],
    base_path: str,
    run_dir: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Train one run in process on ``prompts``; returns its final policy, buffer rewards,
    reward calls and training seconds."""
    from online_dt.config import OnlineRunConfig, load_config
    from online_dt.config.loading import deep_merge
    from online_dt.launch.rundir import CHECKPOINT_POLICY_DIR
    from online_dt.loop.plan import execute, plan_run
    from online_dt.loop.workers import local_workers
    from online_dt.policy.policy import RewardConditionedPolicy
    from online_dt.replay.buffer import ReplayBuffer

    cfg = load_config(
        config, OnlineRunConfig, deep_merge(overrides, {"online": {"run_dir": str(run_dir)}})
    )
    start = time.perf_counter()
    plan = plan_run(cfg, None)
    plan.prompts = list(prompts)  # held-out prompts are never trained on
    workers = local_workers(plan.cfg, base_path, plan.run.path, None)
    records = execute(plan, workers, progress=not args.no_progress)
    train_s = time.perf_counter() - start
    checkpoint = plan.run.latest_checkpoint()
    policy = RewardConditionedPolicy.from_pretrained(checkpoint / CHECKPOINT_POLICY_DIR).eval()
    buffer = ReplayBuffer.load(cfg.buffer, plan.run.buffer_dir)
    calls = cfg.online.iterations * cfg.online.prompts_per_iteration * cfg.online.samples_per_prompt
    return {
        "policy": policy,
        "buffer_rewards": buffer.rewards(),
        "reward_calls": calls,
        "train_s": train_s,
        "iterations": cfg.online.iterations,
        "last_record": records[-1] if records else {},
        "sampling": cfg.sampling,
    }


def sample_scores(
    policy: Any, target: Any, prompts: list[str], scorer: Any, sampling: Any, n: int, seed: int
) -> Any:
    """``[len(prompts) * n, 2]`` (sentiment, brevity) of the policy's samples at ``target``."""
    import numpy as np

    repeated = [p for p in prompts for _ in range(n)]
    rollouts = policy.generate(
        repeated,
        [target] * len(repeated),
        max_new_tokens=sampling.max_new_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        seed=seed,
    )
    scores = scorer.score(repeated, [r.completion for r in rollouts])
    return np.array([[s["sentiment"], s["brevity"]] for s in scores], dtype=np.float64)


def front_figures(points: Any, objectives: Any) -> dict[str, Any]:
    """The Pareto front of ``points`` ``[N, 2]`` (reward units) and its normalised
    hypervolume (reference ``(-1, -1)``)."""
    from online_dt.objectives import front_summary, normalize
    from online_dt.util.pareto import pareto_front

    front = pareto_front(normalize(points, objectives)) if len(points) else []
    return {
        **front_summary(points, objectives),
        "points_normalised": [list(map(float, p)) for p in front],
    }


def evaluate(
    runs: dict[str, dict[str, Any]],
    grid: list[tuple[float, float]],
    axes: list[Any],
    heldout: list[str],
    scorer: Any,
    objectives: Any,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Every policy at its targets; calibration errors and fronts."""
    import numpy as np

    from online_dt.objectives import normalize

    half = np.array([o.half_width for o in objectives])
    buffer = normalize(runs["multi"]["buffer_rewards"], objectives)
    rows: list[dict[str, Any]] = []
    multi = runs["multi"]
    for k, target in enumerate(grid):
        scores = sample_scores(
            multi["policy"],
            target,
            heldout,
            scorer,
            multi["sampling"],
            args.eval_samples,
            args.seed + k,
        )
        mean = scores.mean(axis=0)
        near = np.abs(buffer - normalize(np.array(target), objectives)).max(axis=1) <= 0.1
        rows.append(
            {
                "method": "multi",
                "target": list(target),
                "achieved": mean.tolist(),
                "p10": np.quantile(scores, 0.1, axis=0).tolist(),
                "p90": np.quantile(scores, 0.9, axis=0).tolist(),
                "error_normalised": (np.abs(mean - np.array(target)) / half).tolist(),
                "achievable": bool(near.sum() >= 5),
            }
        )
    achievable_axis = [
        {
            float(v): any(r["achievable"] for r in rows if r["target"][m] == float(v))
            for v in axes[m]
        }
        for m in range(2)
    ]
    for m, name in enumerate(("sentiment", "brevity")):
        run = runs[name]
        for k, value in enumerate(axes[m]):
            scores = sample_scores(
                run["policy"],
                float(value),
                heldout,
                scorer,
                run["sampling"],
                args.eval_samples,
                args.seed + 100 + k,
            )
            mean = scores.mean(axis=0)
            rows.append(
                {
                    "method": name,
                    "target": [float(value) if i == m else None for i in range(2)],
                    "achieved": mean.tolist(),
                    "p10": np.quantile(scores, 0.1, axis=0).tolist(),
                    "p90": np.quantile(scores, 0.9, axis=0).tolist(),
                    "error_normalised": [
                        float(abs(mean[m] - value) / half[m]) if i == m else None for i in range(2)
                    ],
                    "achievable": achievable_axis[m][float(value)],
                }
            )
    summary: dict[str, Any] = {}
    for label, methods in (
        ("multi", ("multi",)),
        ("two single-objective runs", ("sentiment", "brevity")),
    ):
        chosen = [r for r in rows if r["method"] in methods]
        errors: dict[str, Any] = {}
        for m, name in enumerate(("sentiment", "brevity")):
            own = [r for r in chosen if r["error_normalised"][m] is not None]
            every = [r["error_normalised"][m] for r in own]
            ok = [r["error_normalised"][m] for r in own if r["achievable"]]
            errors[name] = {
                "mean": float(np.mean(every)),
                "max": float(np.max(every)),
                "mean_achievable": float(np.mean(ok)) if ok else None,
                "max_achievable": float(np.max(ok)) if ok else None,
                "within_0.1_achievable": f"{sum(e <= 0.1 for e in ok)}/{len(ok)}",
            }
        points = np.array([r["achieved"] for r in chosen])
        summary[label] = {
            "calibration_error_normalised": errors,
            "achieved_front": front_figures(points, objectives),
            "reward_calls": sum(runs[m]["reward_calls"] for m in methods),
            "train_s": sum(runs[m]["train_s"] for m in methods),
        }
    summary["multi"]["buffer_front"] = front_figures(runs["multi"]["buffer_rewards"], objectives)
    return {"rows": rows, "summary": summary, "grid": [list(t) for t in grid]}


def format_report(report: dict[str, Any]) -> str:
    """The console table: every row, then the two summaries side by side."""
    lines = [
        f"{'method':<10} {'target':>16} {'achieved':>16} {'|err| (norm.)':>16} achievable",
        "-" * 72,
    ]

    def pair(values: list[Any], spec: str) -> str:
        return "(" + ", ".join("-" if v is None else format(v, spec) for v in values) + ")"

    for r in report["rows"]:
        lines.append(
            f"{r['method']:<10} {pair(r['target'], '.2f'):>16} {pair(r['achieved'], '.2f'):>16}"
            f" {pair(r['error_normalised'], '.3f'):>16} {'yes' if r['achievable'] else 'no'}"
        )
    lines.append("")
    for label, s in report["summary"].items():
        e = s["calibration_error_normalised"]
        lines.append(
            f"{label}: {s['reward_calls']} reward calls, {s['train_s']:.0f} s of training;"
            f" achieved front hypervolume {s['achieved_front']['front_hypervolume']:.3f}"
            f" ({s['achieved_front']['front_size']} points)"
        )
        for name, v in e.items():
            lines.append(
                f"  {name:<9} |err| normalised: mean {v['mean']:.3f}, max {v['max']:.3f};"
                f" where achievable: mean {fmt(v['mean_achievable'])}, max"
                f" {fmt(v['max_achievable'])}, within 0.1: {v['within_0.1_achievable']}"
            )
    buffer = report["summary"]["multi"]["buffer_front"]
    base = report["base"]["front"]
    lines.append(
        f"fronts of the samples (hypervolume): base {base['front_hypervolume']:.3f} on"
        f" {report['base']['samples']} samples; the multi-objective run's replay buffer"
        f" {buffer['front_hypervolume']:.3f}"
    )
    return "\n".join(lines)


def fmt(value: float | None) -> str:
    """A number to 3 decimals, ``-`` for ``None``."""
    return "-" if value is None else f"{value:.3f}"


def plot(report: dict[str, Any], objectives: Any, path: Path) -> None:
    """The objective plane: grid targets, what each policy achieved, and the fronts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5.5))
    for r in report["rows"]:
        t, a = r["target"], r["achieved"]
        if r["method"] == "multi":
            ax.plot(*t, "k+", ms=9)
            ax.annotate("", xy=a, xytext=t, arrowprops={"arrowstyle": "->", "color": "tab:blue"})
            ax.plot(*a, "o", color="tab:blue")
        else:
            colour = "tab:orange" if r["method"] == "sentiment" else "tab:green"
            ax.plot(*a, "s", color=colour)
    ax.plot([], [], "k+", label="grid target (multi)")
    ax.plot([], [], "o", color="tab:blue", label="multi-objective policy")
    ax.plot([], [], "s", color="tab:orange", label="sentiment-only policy")
    ax.plot([], [], "s", color="tab:green", label="brevity-only policy")
    ax.set_xlabel(f"{objectives[0].name} (reward units)")
    ax.set_ylabel(f"{objectives[1].name} (reward units)")
    ax.set_title("held-out prompts: mean achieved reward at each target")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())

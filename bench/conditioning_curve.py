"""Conditioning curve: how a run's policy learns to follow its target reward, version by version.

Reads the weight versions a run published (``RUN_DIR/weights/vN``; keep them all with
``--set sampler.keep_versions=1000``, or ``bench/peers.py --keep-work --odt-set
sampler.keep_versions=1000``) and samples every ``--every``-th one, asked for each of
``--targets``, on bench/peers.py's held-out prompts (the same seeded split: ``--seed``,
``--heldout-prompts``), ``--samples`` completions per prompt with the run's sampling settings.
For each version and target it prints the achieved reward's mean, p10 and p90 and the fraction
of samples within ``--half-width`` of the target (``in_bin``).

``--per-prompt T`` adds, for the last version asked for ``T``, where the miss sits: the base
model samples ``--base-samples`` completions per held-out prompt, each prompt gets the base's
fraction of samples within ``--half-width`` of ``T`` (how often the base itself writes text
that earns ``T`` there), and the prompts are split into quartiles of that fraction, each with
the policy's mean reward and in-bin fraction. A miss concentrated on prompts where the base
rarely reaches ``T`` is a limit of the prompts; a miss spread evenly is the conditioning's.

Usage:
    .venv/bin/python bench/conditioning_curve.py RUN_DIR [--targets -0.8 0.0 0.8]
        [--every 5] [--samples 4] [--per-prompt -0.8] [--out FILE.json]

Prints a table; ``--out`` also writes its rows as JSON. A run conditioned on several objectives
is refused (one reward per sample is read).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: this checkout's bench and online_dt
    sys.path.insert(0, str(ROOT))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("run_dir", type=Path, help="an online run directory (with weights/vN)")
    p.add_argument("--targets", type=float, nargs="+", default=[-0.8, 0.0, 0.8])
    p.add_argument("--every", type=int, default=5, help="every k-th version (and the last)")
    p.add_argument("--samples", type=int, default=4, help="completions per prompt and target")
    p.add_argument("--half-width", type=float, default=0.1, help="the in-bin half width")
    p.add_argument("--seed", type=int, default=0, help="bench/peers.py's --seed (the split)")
    p.add_argument("--heldout-prompts", type=int, default=128, help="as bench/peers.py's")
    p.add_argument("--per-prompt", type=float, default=None, metavar="T")
    p.add_argument("--base-samples", type=int, default=48, help="per prompt, --per-prompt")
    p.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    return p


def versions(weights_dir: Path, every: int) -> list[tuple[int, Path]]:
    """The published versions ``vN`` under ``weights_dir`` whose N is a multiple of ``every``,
    plus the last, in order.

    Raises:
        FileNotFoundError: no version is there.
    """
    found = sorted(
        (int(d.name[1:]), d) for d in weights_dir.glob("v*") if d.is_dir() and d.name[1:].isdigit()
    )
    if not found:
        raise FileNotFoundError(f"no weight version vN under {weights_dir}")
    return [(n, d) for i, (n, d) in enumerate(found) if n % every == 0 or i == len(found) - 1]


def reward_stats(rewards: Sequence[float], target: float, half_width: float) -> dict[str, float]:
    """Mean, p10 and p90 of ``rewards`` as every report of the project gives them
    (:func:`online_dt.util.metrics.reward_summary`), and the fraction within ``half_width`` of
    ``target``.

    Raises:
        ValueError: ``rewards`` is empty.
    """
    from online_dt.util.metrics import reward_summary

    summary = reward_summary(rewards)
    return {
        "mean": summary["mean"],
        "p10": summary["p10"],
        "p90": summary["p90"],
        "in_bin": sum(abs(r - target) <= half_width for r in rewards) / len(rewards),
    }


def per_prompt_quartiles(
    base_in_bin: Sequence[float],
    policy: Sequence[Sequence[float]],
    target: float,
    half_width: float,
) -> list[dict[str, Any]]:
    """Prompts sorted by the base's in-bin fraction (``base_in_bin[i]``, in ``[0, 1]``) and cut
    into four equal parts (the last takes the remainder); each part's range of that fraction,
    and the policy's mean reward and in-bin fraction over its prompts' samples
    (``policy[i]``: prompt i's rewards).

    Raises:
        ValueError: fewer than four prompts, or the two sequences differ in length.
    """
    if len(base_in_bin) != len(policy) or len(policy) < 4:
        raise ValueError("need as many base fractions as prompts, and at least four prompts")
    order = sorted(range(len(policy)), key=lambda i: base_in_bin[i])
    n = len(order)
    out = []
    for q in range(4):
        part = order[q * n // 4 : (q + 1) * n // 4]
        rewards = [r for i in part for r in policy[i]]
        out.append(
            {
                "quartile": q,
                "prompts": len(part),
                "base_in_bin_min": base_in_bin[part[0]],
                "base_in_bin_max": base_in_bin[part[-1]],
                "policy_mean": statistics.fmean(rewards),
                "policy_in_bin": reward_stats(rewards, target, half_width)["in_bin"],
            }
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.every < 1 or args.samples < 1 or args.base_samples < 1:
        parser.error("--every, --samples and --base-samples must be at least 1")
    if args.per_prompt is not None and args.per_prompt not in args.targets:
        parser.error(f"--per-prompt {args.per_prompt:g} must be one of --targets")
    import torch

    from bench.peers import SEED_SPLIT, split_prompts
    from online_dt.config import OnlineRunConfig
    from online_dt.config.loading import load_config
    from online_dt.embedded.base_model import resolve_base_model
    from online_dt.eval.base_samples import sample_base
    from online_dt.launch.prompts import load_prompts
    from online_dt.policy.policy import RewardConditionedPolicy
    from online_dt.rewards import load_reward_model
    from online_dt.util.seeds import derived_seed

    cfg = load_config(args.run_dir / "config.yaml", OnlineRunConfig)
    if cfg.conditioning.objectives:
        raise SystemExit(
            "error: the run is conditioned on several objectives; this script reads one reward"
        )
    _, heldout = split_prompts(
        load_prompts(cfg.prompts), args.heldout_prompts, derived_seed(args.seed, SEED_SPLIT)
    )
    reward = load_reward_model(cfg.reward_model)
    s = cfg.sampling
    prompts = [p for p in heldout for _ in range(args.samples)]
    rows: list[dict[str, Any]] = []
    last: dict[float, list[float]] = {}
    print(f"{'version':>7} {'target':>7} {'mean':>7} {'p10':>7} {'p90':>7} {'in_bin':>7}")
    for number, path in versions(args.run_dir / "weights", args.every):
        policy = RewardConditionedPolicy.from_pretrained(path, device=cfg.model.device).eval()
        for target in args.targets:
            rollouts = policy.generate(
                prompts,
                [target] * len(prompts),
                max_new_tokens=s.max_new_tokens,
                temperature=s.temperature,
                top_p=s.top_p,
                seed=derived_seed(args.seed, 7),
                batch_size=s.batch_size,
            )
            rewards = reward.score(prompts, [r.completion for r in rollouts])
            last[target] = rewards
            row = {"version": number, "target": target}
            row |= reward_stats(rewards, target, args.half_width)
            rows.append(row)
            print(
                f"{number:>7} {target:>7.2f} {row['mean']:>7.3f} {row['p10']:>7.3f}"
                f" {row['p90']:>7.3f} {row['in_bin']:>7.3f}",
                flush=True,
            )
    out: dict[str, Any] = {"rows": rows}
    if args.per_prompt is not None:
        t, k = args.per_prompt, args.samples
        base_path = resolve_base_model(cfg.model, cfg.bootstrap, progress=False)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
        base = base.to(next(policy.parameters()).device).eval()
        tok = AutoTokenizer.from_pretrained(base_path)
        b = args.base_samples
        base_prompts = [p for p in heldout for _ in range(b)]
        with torch.no_grad():
            _, texts = sample_base(base, tok, base_prompts, s, derived_seed(args.seed, 8))
        base_rewards = reward.score(base_prompts, texts)
        in_bin = [
            sum(abs(r - t) <= args.half_width for r in base_rewards[i * b : (i + 1) * b]) / b
            for i in range(len(heldout))
        ]
        policy_rewards = [last[t][i * k : (i + 1) * k] for i in range(len(heldout))]
        quartiles = per_prompt_quartiles(in_bin, policy_rewards, t, args.half_width)
        out["per_prompt"] = {"target": t, "base_samples": b, "quartiles": quartiles}
        print(f"\nlast version asked for {t:g}, by quartile of the base's in-bin fraction:")
        for q in quartiles:
            print(
                f"  base in-bin {q['base_in_bin_min']:.3f}-{q['base_in_bin_max']:.3f}"
                f" ({q['prompts']} prompts): policy mean {q['policy_mean']:.3f},"
                f" in-bin {q['policy_in_bin']:.3f}"
            )
        print(f"  prompts where no base sample is in the bin: {sum(f == 0 for f in in_bin)}")
    if args.out is not None:
        args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

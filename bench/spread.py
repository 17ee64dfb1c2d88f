"""Where a reward-conditioned policy's calibration error comes from: the spread of the rewards
it achieves at each target.

A policy asked for ``c`` whose achieved rewards have the right centre but a wide, skewed spread
misses ``|mean - c| <= tol`` near the ends of a bounded reward range, where the spread can only
reach inwards. This script separates the two. For each ask it samples ``--samples-per-prompt``
completions on each of ``--prompts`` prompts from a run's policy and prints:

* the achieved reward's mean, median, standard deviation, p10 and p90, and the mean's and the
  median's error;
* the share of the reward variance that lies within prompts (the rest is between prompts:
  a policy that follows the target on some prompts and not on others);
* the NLL of the samples under the base model, nats per token, beside the binned-base
  reference at the ask (the base's own samples with reward within ``--half-width`` of it,
  :func:`online_dt.eval.reference.base_reference`, and how many there are): what a perfect
  conditional model ``p_base(y | r(y) ~ c)`` would give;
* with ``--raw-score vader``, VADER's unnormalised valence sum of each sample, recovered from
  its compound score ``c = x / sqrt(x^2 + alpha)`` (``vaderSentiment``'s ``normalize``,
  ``alpha = 15``) as ``x = c sqrt(alpha / (1 - c^2))``: its mean and standard deviation, and the
  compound score of that mean. A policy whose raw-score mean is on target but whose raw scores
  spread widely has a mean compound score drawn towards 0 by the squashing alone (Jensen's
  inequality: the squash is concave above 0 and convex below).

Last, the least-squares slopes over the asks of the mean, the median and (with
``--raw-score``) the compound of the mean raw score against the ask: 1 for a policy calibrated
in that statistic.

Usage (from the repository root; a run directory of ``online-dt run`` or ``bench/peers.py
--keep-work``, a checkpoint or a saved policy)::

    .venv/bin/python bench/spread.py RUN_DIR [--asks -0.8 -0.4 0 0.4 0.8] \\
        [--prompts 128] [--samples-per-prompt 4] [--peers-seed S] [--raw-score vader]

``--peers-seed S`` takes the held-out prompts of ``bench/peers.py --seed S`` (its default
``--heldout-prompts``), so a ``--keep-work`` run is measured on the prompts its table was.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: this checkout's bench package
    sys.path.insert(0, str(ROOT))

VADER_ALPHA = 15.0
"""``vaderSentiment.vaderSentiment.normalize``'s default ``alpha``."""

PEERS_HELDOUT_PROMPTS = 128
"""``bench/peers.py``'s default ``--heldout-prompts``."""


def vader_raw_score(
    compound: Sequence[float] | np.ndarray, alpha: float = VADER_ALPHA
) -> np.ndarray:
    """VADER's unnormalised valence sum from its compound score: the inverse of
    ``vaderSentiment``'s ``normalize(x, alpha) = x / sqrt(x^2 + alpha)``.

    Args:
        compound: compound scores in ``[-1, 1]``; ``|c|`` is capped at ``1 - 1e-6`` (VADER
            rounds to 4 decimals, so ``+-1`` stands for a sum beyond about ``+-270``).
        alpha: the normaliser's ``alpha`` (> 0).

    Returns:
        ``x = c sqrt(alpha / (1 - c^2))``, same shape, valence units.

    Raises:
        ValueError: a score outside ``[-1, 1]`` or ``alpha <= 0``.
    """
    c = np.asarray(compound, dtype=np.float64)
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if np.isnan(c).any() or (c.size and np.abs(c).max() > 1.0):
        raise ValueError("compound scores must lie in [-1, 1]")
    c = np.clip(c, -1 + 1e-6, 1 - 1e-6)
    return c * np.sqrt(alpha / (1.0 - c**2))


def vader_compound(raw: float, alpha: float = VADER_ALPHA) -> float:
    """VADER's compound score of a raw sum: ``vaderSentiment``'s own ``normalize(x, alpha) =
    x / sqrt(x^2 + alpha)``, clipped to ``[-1, 1]``."""
    from vaderSentiment.vaderSentiment import normalize

    return float(normalize(raw, alpha))


def variance_split(values: Sequence[float], per_prompt: int) -> tuple[float, float]:
    """The variance of ``values`` and the part of it within prompts.

    Args:
        values: ``P * per_prompt`` values, each prompt's ``per_prompt`` adjacent.
        per_prompt: values per prompt, >= 2.

    Returns:
        ``(total, within)``: the population variance of all values, and the mean over prompts
        of each prompt's unbiased sample variance (an unbiased estimate of the within-prompt
        variance; ``total - within`` estimates the variance between prompts' means and can be
        slightly negative).

    Raises:
        ValueError: ``per_prompt < 2`` or ``len(values)`` not a multiple of it.
    """
    if per_prompt < 2:
        raise ValueError(f"per_prompt must be >= 2 to split the variance, got {per_prompt}")
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0 or v.size % per_prompt:
        raise ValueError(f"{v.size} values are not a whole number of groups of {per_prompt}")
    groups = v.reshape(-1, per_prompt)
    return float(v.var()), float(groups.var(axis=1, ddof=1).mean())


def spread_row(
    ask: float, rewards: Sequence[float], per_prompt: int, raw_alpha: float | None
) -> dict[str, Any]:
    """The reward statistics of one ask's samples (see the module docstring).

    Args:
        ask: the target the policy was asked for (reward units).
        rewards: the achieved rewards, ``per_prompt`` adjacent per prompt.
        per_prompt: samples per prompt (>= 2).
        raw_alpha: VADER's ``alpha`` for the raw-score columns; ``None``: none.

    Returns:
        ``ask``, ``mean``, ``median``, ``std``, ``p10``, ``p90``, ``mean_error``,
        ``median_error`` (achieved - ask), ``within_prompt_share`` (within / total variance of
        :func:`variance_split`, about 1 when prompts do not matter, and then by chance up to
        ``per_prompt / (per_prompt - 1)``; ``nan`` when every reward is equal); with
        ``raw_alpha`` also ``raw_ask`` (the ask's raw score), ``raw_mean``, ``raw_std`` and
        ``compound_of_raw_mean``.
    """
    from online_dt.util.metrics import reward_summary

    s = reward_summary(rewards)
    total, within = variance_split(rewards, per_prompt)
    row: dict[str, Any] = {
        "ask": ask,
        **{k: s[k] for k in ("mean", "median", "std", "p10", "p90")},
        "mean_error": s["mean"] - ask,
        "median_error": s["median"] - ask,
        "within_prompt_share": within / total if total > 0 else float("nan"),
    }
    if raw_alpha is not None:
        raw = vader_raw_score(rewards, raw_alpha)
        row["raw_ask"] = float(vader_raw_score([ask], raw_alpha)[0])
        row["raw_mean"] = float(raw.mean())
        row["raw_std"] = float(raw.std())
        row["compound_of_raw_mean"] = vader_compound(row["raw_mean"], raw_alpha)
    return row


def slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of ``ys`` on ``xs`` (``None`` with fewer than two distinct xs)."""
    if len(set(xs)) < 2:
        return None
    return statistics.linear_regression(list(xs), list(ys)).slope


def slopes(rows: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """The slopes against the ask of the mean, the median and, when present, the compound of
    the mean raw score."""
    asks = [r["ask"] for r in rows]
    out = {
        "mean": slope(asks, [r["mean"] for r in rows]),
        "median": slope(asks, [r["median"] for r in rows]),
    }
    if rows and "compound_of_raw_mean" in rows[0]:
        out["compound_of_raw_mean"] = slope(asks, [r["compound_of_raw_mean"] for r in rows])
    return out


def format_table(rows: Sequence[dict[str, Any]], slopes_: dict[str, float | None]) -> str:
    """The printed table: one line per ask, then the slopes."""
    raw = bool(rows) and "raw_mean" in rows[0]
    head = (
        f"{'ask':>6} {'mean':>7} {'median':>7} {'std':>6} {'p10':>7} {'p90':>7} "
        f"{'err':>7} {'med_err':>7} {'within':>6} {'NLL/tok':>7} {'bin NLL':>7} {'bin n':>6}"
    )
    if raw:
        head += f" {'raw ask':>7} {'raw mean':>8} {'raw std':>7} {'c(raw mean)':>11}"
    lines = [head, "-" * len(head)]
    for r in rows:
        line = (
            f"{r['ask']:>6.3f} {r['mean']:>7.3f} {r['median']:>7.3f} {r['std']:>6.3f} "
            f"{r['p10']:>7.3f} {r['p90']:>7.3f} {r['mean_error']:>+7.3f} "
            f"{r['median_error']:>+7.3f} {r['within_prompt_share']:>6.2f} "
            f"{r['nll_per_token']:>7.3f} {r['bin_nll_per_token']:>7.3f} {r['bin_count']:>6d}"
        )
        if raw:
            line += (
                f" {r['raw_ask']:>+7.2f} {r['raw_mean']:>+8.2f} {r['raw_std']:>7.2f} "
                f"{r['compound_of_raw_mean']:>+11.3f}"
            )
        lines.append(line)
    text = ", ".join(f"{k} {'-' if v is None else f'{v:.3f}'}" for k, v in slopes_.items())
    lines.append(f"slope against the ask: {text}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("source", help="run directory, checkpoint or saved policy")
    p.add_argument(
        "--asks",
        type=float,
        nargs="+",
        default=[-0.8, -0.4, 0.0, 0.4, 0.8],
        metavar="R",
        help="target rewards to ask the policy for (reward units)",
    )
    p.add_argument(
        "--prompts", type=int, default=128, help="prompts per ask (the prompt set's last)"
    )
    p.add_argument(
        "--samples-per-prompt", type=int, default=4, help="completions per prompt (>= 2)"
    )
    p.add_argument(
        "--peers-seed",
        type=int,
        default=None,
        help="use bench/peers.py --seed S's held-out prompts instead of the prompt set's last",
    )
    p.add_argument(
        "--reference-samples", type=int, default=4096, help="base samples for the binned reference"
    )
    p.add_argument("--half-width", type=float, default=0.1, help="the reference bins' half width")
    p.add_argument(
        "--raw-score",
        choices=["vader"],
        default=None,
        help="also the raw-score columns (VADER's unnormalised valence sum)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args(argv)
    if args.samples_per_prompt < 2:
        p.error("--samples-per-prompt must be >= 2 (the within-prompt variance needs two)")
    if args.prompts < 1 or args.reference_samples < 1 or args.half_width <= 0:
        p.error("--prompts and --reference-samples must be >= 1, --half-width > 0")
    return args


def choose_prompts(prompts: Sequence[str], n: int, peers_seed: int | None) -> list[str]:
    """The evaluated prompts: ``bench/peers.py --seed peers_seed``'s held-out prompts (their
    first ``n``), or the prompt set's last ``n`` distinct prompts."""
    if peers_seed is not None:
        from bench.peers import SEED_SPLIT, split_prompts
        from online_dt.util.seeds import derived_seed

        _, heldout = split_prompts(
            prompts, PEERS_HELDOUT_PROMPTS, derived_seed(peers_seed, SEED_SPLIT)
        )
        return heldout[:n]
    return list(dict.fromkeys(prompts))[-n:]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the measurement and print the table; returns the exit status."""
    args = parse_args(argv)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from online_dt.config import OnlineRunConfig, load_config
    from online_dt.embedded.base_model import resolve_base_model
    from online_dt.eval.base_samples import encode_prompts, nll_per_token, teacher_forced_logprobs
    from online_dt.eval.reference import base_reference
    from online_dt.eval.source import EvalError, resolve_source
    from online_dt.launch.prompts import load_prompts
    from online_dt.policy.policy import RewardConditionedPolicy
    from online_dt.rewards import load_reward_model
    from online_dt.util.seeds import derived_seed

    try:
        source = resolve_source(args.source)
    except EvalError as e:
        raise SystemExit(f"error: {e}") from None
    if source.config_path is None:
        raise SystemExit(f"error: no config.yaml found above {source.policy_dir}")
    cfg = load_config(source.config_path, OnlineRunConfig)
    if cfg.conditioning.objectives:
        raise SystemExit("error: the run has several objectives; this script takes one reward")
    if args.raw_score == "vader" and cfg.reward_model.kind != "vader":
        raise SystemExit(
            f"error: --raw-score vader needs the run's reward model to be VADER "
            f"(reward_model.kind is {cfg.reward_model.kind!r})"
        )
    base_path = resolve_base_model(cfg.model, cfg.bootstrap, progress=False)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    base.eval().requires_grad_(False)
    policy = RewardConditionedPolicy.from_pretrained(source.policy_dir, device=cfg.model.device)
    policy.eval()
    reward = load_reward_model(cfg.reward_model)

    def score(prompts: list[str], completions: list[str]) -> list[float]:
        return [float(r) for r in reward.score(prompts, completions)]

    prompts = choose_prompts(load_prompts(cfg.prompts), args.prompts, args.peers_seed)
    k = args.samples_per_prompt
    batch = [p for p in prompts for _ in range(k)]
    s = cfg.sampling
    start = time.perf_counter()
    reference = base_reference(
        base,
        tokenizer,
        prompts,
        score,
        s,
        args.asks,
        samples=args.reference_samples,
        seed=derived_seed(args.seed, 1),
        subsample_seed=derived_seed(args.seed, 2),
        half_width=args.half_width,
    )
    rows = []
    alpha = VADER_ALPHA if args.raw_score == "vader" else None
    for i, (ask, bin_) in enumerate(zip(args.asks, reference["at_targets"], strict=True)):
        rollouts = policy.generate(
            batch,
            [ask] * len(batch),
            max_new_tokens=s.max_new_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            seed=derived_seed(args.seed, 3, i),
            batch_size=s.batch_size,
        )
        texts = [r.completion for r in rollouts]
        rewards = score(batch, texts)
        base_lp = teacher_forced_logprobs(
            base,
            encode_prompts(tokenizer, batch),
            [r.token_ids for r in rollouts],
            pad_id=tokenizer.pad_token_id,
        )
        row = spread_row(ask, rewards, k, alpha)
        row["nll_per_token"] = nll_per_token(base_lp)
        row["bin_nll_per_token"] = bin_["nll_per_token"]
        row["bin_count"] = bin_["count"]
        rows.append(row)
    fitted = slopes(rows)
    print(
        f"{source.policy_dir}: {len(prompts)} prompts x {k} samples per ask; binned-base "
        f"reference from {args.reference_samples} base samples, half width {args.half_width}"
    )
    print(format_table(rows, fitted))
    print(f"sampled, scored and measured in {time.perf_counter() - start:.0f} s")
    if args.json is not None:
        report = {"source": str(source.policy_dir), "args": vars(args), "rows": rows}
        report["slopes"] = fitted
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

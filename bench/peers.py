"""Peer benchmark: online-dt against TRL's GRPO, RAFT and best-of-n at equal reward-model calls.

One invocation, one machine, one shared setup: the base model of ``--config`` (the embedded
default), its sampling settings (temperature, top-p, max new tokens), its reward model (VADER),
and a seeded split of its prompts into TRAIN prompts and HELD-OUT prompts; no method ever
trains on a held-out prompt. Every trained method spends exactly ``--budget`` reward-model calls
(one call = one scored completion, counted by wrapping the reward model) on train prompts:

* ``online-dt`` / ``online-dt-token``: the config run in process (``plan_run`` + ``execute``
  with ``local_workers``) in each ``--odt-modes`` conditioning mode (scalar: the reward
  embedding; token: reward tokens, each row noting the bin its target maps to),
  ``online.iterations`` chosen so that iterations x prompts x samples = budget, then its final
  policy evaluated at several targets, from the base model's mean reward to the maximum;
* ``grpo-b0`` / ``grpo-b0.04``: TRL's ``GRPOTrainer`` with beta 0 and 0.04, on CPU, the reward
  function being the same reward model on the completion;
* ``raft``: RAFT / expert iteration (Dong et al., 2023, arXiv 2304.06767) on the plain base LM:
  sample k completions per prompt, keep the best per prompt, a few next-token steps on them;
* ``best-of-n``: no training: n base samples per held-out sample, the best one kept (its reward
  calls are made at evaluation time, on held-out prompts);
* ``base``: the base model itself.

Every method is then evaluated identically on the held-out prompts (``--heldout-prompts`` x
``--eval-samples``, same sampling settings and seed): reward mean/p10/p90, word-level
distinct-1/2/3, the k1 estimate of KL(policy || base) per token and per completion, the NLL of
the samples under the base model; and beside each online-dt point, the binned-base reference:
base samples whose reward is within ``--bin-half-width`` of the target (what a perfect
conditional model would produce there). The metric functions are in ``bench/peers_metrics.py``.

Training paths (``--path-evals N``, default 0 = none): GRPO (each beta) and RAFT are also
evaluated N times during training, at evenly spaced fractions 1/(N+1), ..., N/(N+1) of their
training units (GRPO steps, RAFT rounds; rounded to whole units, repeats dropped), with the same
held-out evaluation; each row's ``path`` lists the points (train reward calls spent so far, reward
mean, KL per token and per completion, NLL under base, distinct-2), the final evaluation last.
Those evaluations' reward calls are counted under their own phase (``<method>:path``), never in
the training budget; their time is left out of ``train_s`` and given as ``path_eval_s``; they run
with the torch, Python and NumPy RNG states saved and restored and the model's train/eval mode
restored, so training ends where it ends without them.

Output: a table on stdout (each path under its method's line), ``OUT/peers.json`` and
``OUT/peers.png`` (each path drawn as a thin line ending at its method's point).

Usage (from the repository root)::

    .venv/bin/python bench/peers.py                       # the full default budget (7,680 calls)
    .venv/bin/python bench/peers.py --scale 0.5           # half of it
    .venv/bin/python bench/peers.py --budget 128 --heldout-prompts 8 --eval-samples 2 \\
        --odt-set online.prompts_per_iteration=16 --raft-prompts 16   # a smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: this checkout's online_dt, not an installed one
    sys.path.insert(0, str(ROOT))

METHODS = ("base", "best-of-n", "raft", "grpo", "online-dt")
"""Method groups ``--methods`` may name (``grpo`` runs one row per ``--grpo-betas`` value,
``online-dt`` one run per ``--odt-modes`` mode)."""

ODT_MODES = ("scalar", "token")
"""Conditioning modes ``--odt-modes`` may name."""


def odt_method(mode: str) -> str:
    """The row label of online-dt in a conditioning mode: ``online-dt`` (scalar) or
    ``online-dt-token``."""
    return "online-dt" if mode == "scalar" else f"online-dt-{mode}"


def is_odt(method: str) -> bool:
    """Whether a row label is one of online-dt's (any mode)."""
    return method == "online-dt" or method.startswith("online-dt-")


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The command line (parsed before any heavy import, so ``--help`` is instant)."""
    p = argparse.ArgumentParser(
        description="online-dt vs TRL GRPO, RAFT and best-of-n at equal reward-model calls "
        "(table on stdout, OUT/peers.json, OUT/peers.png)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("shared setup")
    g.add_argument(
        "--config",
        default="configs/default.yaml",
        help="online-dt config (base "
        "model, sampling, reward model, prompts, and online-dt's own settings)",
    )
    g.add_argument(
        "--budget",
        type=int,
        default=None,
        help="reward-model calls each trained "
        "method spends on train prompts (default: the config's warm-start calls plus "
        "iterations x prompts_per_iteration x samples_per_prompt, 7,680 for "
        "configs/default.yaml and configs/calibrated.yaml)",
    )
    g.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply the default budget by this, rounded to whole online-dt iterations "
        "(ignored with --budget)",
    )
    g.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the prompt split, every method's sampling and training, and the evaluation",
    )
    g.add_argument(
        "--heldout-prompts",
        type=int,
        default=128,
        help="prompts held out from training and used for evaluation",
    )
    g.add_argument(
        "--eval-samples",
        type=int,
        default=4,
        help="samples per held-out prompt per method (and per online-dt target)",
    )
    g.add_argument(
        "--reference-samples",
        type=int,
        default=8192,
        help="base samples on the held-out prompts for the binned-base reference (8192: the "
        "bins at -0.4 and 0 hold 400-600, enough for goal (b)'s 0.1 nats/token; with 2048 "
        "their NLL moved by 0.11 from seed to seed, docs/method.md round 13)",
    )
    g.add_argument(
        "--bin-half-width",
        type=float,
        default=0.1,
        help="the reference bins are |reward - target| <= this",
    )
    g.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated subset of "
        f"{', '.join(METHODS)} (base always runs: its mean reward is the first "
        "online-dt target)",
    )
    g.add_argument("--out", default=None, help="output directory (default: runs/peers-<timestamp>)")
    g.add_argument(
        "--path-evals",
        type=int,
        default=0,
        help="evaluate GRPO and RAFT this many times during training too, at evenly spaced "
        "fractions 1/(N+1) .. N/(N+1) of their steps / rounds (on the held-out prompts, reward "
        "calls counted as <method>:path, outside the budget), recorded as each row's `path`, "
        "printed under its line and drawn in peers.png; 0: none",
    )
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")
    g.add_argument(
        "--keep-work",
        action="store_true",
        help="keep the temporary work directory (online-dt run directory, TRL outputs)",
    )

    g = p.add_argument_group("online-dt")
    g.add_argument(
        "--odt-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override "
        "a field of --config for the online-dt run, as `online-dt run --set` "
        "(repeatable), e.g. online.prompts_per_iteration=16 for small budgets",
    )
    g.add_argument(
        "--odt-modes",
        default=None,
        help="comma-separated conditioning modes to run online-dt in, one run each: scalar "
        "(rows `online-dt`), token (rows `online-dt-token`); default the mode an --odt-set "
        "conditioning.mode=... names, else --config's own; scalar,token runs both",
    )
    g.add_argument(
        "--targets",
        type=float,
        nargs="+",
        default=None,
        help="targets to evaluate "
        "the final policy at (default: --num-targets evenly from the base model's "
        "mean reward to --max-target); with conditioning.best_command, a target above "
        "conditioning.reward_max is the best command, and its row (conditioning.best_target) "
        "is added when no target asks for it",
    )
    g.add_argument("--num-targets", type=int, default=5, help="number of default targets")
    g.add_argument(
        "--odt-guidance",
        type=float,
        nargs="+",
        default=[],
        metavar="W",
        help="also evaluate the final policy with guidance weight W at every target (rows "
        "`online-dt-guidedW[-REF]`, the same policy, no extra training): tokens sampled from "
        "l(target) + W (l(target) - l_ref), l_ref from --odt-guidance-reference, "
        "RewardConditionedPolicy.generate's guidance_weight; KL from the guided "
        "distribution's logprobs",
    )
    g.add_argument(
        "--odt-guidance-reference",
        choices=["mean", "base", "mixture", "mixture-buffer"],
        nargs="+",
        default=["mean"],
        help="what --odt-guidance contrasts the target with: `mean`, the policy at the base "
        "model's mean reward (rows online-dt-guidedW); `base`, the base model itself as the "
        "unconditional model of classifier-free guidance (generate's guidance_model; rows "
        "online-dt-guidedW-base); `mixture`, the policy's own mixture over the rewards of "
        "--odt-guidance-grid, uniform prior, updated by Bayes' rule as tokens are sampled "
        "(generate's guidance_mixture; rows online-dt-guidedW-mixture); `mixture-buffer`, "
        "the same with the prior of the rewards the policy was trained on, the share of the "
        "run's replay buffer nearest to each grid reward (online_dt.policy.guidance."
        "buffer_prior; rows online-dt-guidedW-mixture-buffer); several for each",
    )
    g.add_argument(
        "--odt-guidance-grid",
        type=float,
        nargs="+",
        default=[-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0],
        metavar="R",
        help="the rewards of the `mixture` guidance reference",
    )
    g.add_argument(
        "--odt-recalibrate",
        type=int,
        default=0,
        metavar="N",
        help="also evaluate every online-dt variant (unguided and each guided one) "
        "recalibrated (rows `...-recal`): after training, sample N train prompts (never the "
        "held-out ones) at each conditioning value of --odt-recalibration-grid (token mode: "
        "the midpoint of each reward bin), score them (N x grid reward calls per variant, "
        "shown under each row and in its JSON), fit the mean achieved reward as an isotonic "
        "function of the conditioning value (online_dt.policy.recalibration) and ask each "
        "held-out sample for the conditioning that achieves the target "
        "(--odt-recalibration-strategy); 0 (the default) skips it",
    )
    g.add_argument(
        "--odt-recalibration-grid",
        type=float,
        nargs="+",
        default=None,
        metavar="C",
        help="scalar mode: the conditioning values --odt-recalibrate measures (default: as "
        "online-dt eval, 5 evenly over the run's replay-buffer rewards plus one step beyond "
        "each end, online_dt.policy.recalibration.default_grid; with a best command not the "
        "step above conditioning.reward_max)",
    )
    g.add_argument(
        "--odt-recalibration-strategy",
        choices=["mix", "interpolate"],
        default="mix",
        help="how --odt-recalibrate asks for a target between two grid values: `interpolate`, "
        "every sample at the interpolated value; `mix`, a share of the samples at each of the "
        "two (online_dt.policy.recalibration; the default)",
    )
    g.add_argument(
        "--max-target",
        type=float,
        default=None,
        help="highest default target (default: the config's schedule.max_target, 1.0 for VADER)",
    )

    g = p.add_argument_group("TRL GRPOTrainer")
    g.add_argument(
        "--grpo-betas", default="0,0.04", help="comma-separated KL coefficients, one GRPO run each"
    )
    g.add_argument("--grpo-lr", type=float, default=1e-4, help="learning rate (constant)")
    g.add_argument(
        "--grpo-num-generations", type=int, default=8, help="completions per prompt (the group)"
    )
    g.add_argument(
        "--grpo-batch",
        type=int,
        default=64,
        help="completions per optimizer step "
        "(per_device_train_batch_size; one generation round per step)",
    )

    g = p.add_argument_group("RAFT (expert iteration)")
    g.add_argument("--raft-prompts", type=int, default=64, help="train prompts per round")
    g.add_argument("--raft-k", type=int, default=4, help="samples per prompt per round")
    g.add_argument("--raft-keep", type=int, default=1, help="best samples kept per prompt")
    g.add_argument(
        "--raft-steps", type=int, default=4, help="optimizer steps per round on the kept samples"
    )
    g.add_argument(
        "--raft-lr",
        type=float,
        default=None,
        help="learning rate (default: the config's training.lr)",
    )

    g = p.add_argument_group("best-of-n")
    g.add_argument("--bon-n", type=int, default=4, help="base samples per kept sample")
    return p


# ---------------------------------------------------------------------------------------------
# shared setup
# ---------------------------------------------------------------------------------------------


class CountingReward:
    """A reward model that counts its calls (scored completions) by phase, and how many of the
    calls of each phase were on held-out prompts (a ``*:train`` phase must have none).

    Attributes:
        model: the wrapped reward model (the ``RewardModel`` protocol of ``online_dt.rewards``).
        heldout: the held-out prompts.
        phase: the label the next calls are counted under.
        counts: completions scored per phase.
        heldout_counts: of those, completions of a held-out prompt, per phase.
    """

    def __init__(self, model: Any, heldout: Sequence[str] = ()) -> None:
        self.model = model
        self.heldout = set(heldout)
        self.phase = "unassigned"
        self.counts: dict[str, int] = {}
        self.heldout_counts: dict[str, int] = {}

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """Score through the wrapped model (validated by ``score_checked``), counting
        ``len(prompts)`` calls under the current phase."""
        from online_dt.rewards import score_checked

        self.counts[self.phase] = self.counts.get(self.phase, 0) + len(prompts)
        held = sum(p in self.heldout for p in prompts)
        self.heldout_counts[self.phase] = self.heldout_counts.get(self.phase, 0) + held
        return score_checked(self.model, prompts, completions)

    def calls(self, phase: str) -> int:
        """Completions scored under ``phase``."""
        return self.counts.get(phase, 0)

    def heldout_in_training(self) -> dict[str, int]:
        """Per ``*:train`` phase, completions scored on held-out prompts (all zero when no
        method trained on a held-out prompt)."""
        return {k: v for k, v in self.heldout_counts.items() if k.endswith(":train")}


def split_prompts(prompts: Sequence[str], heldout: int, seed: int) -> tuple[list[str], list[str]]:
    """A seeded split into (train, held-out) prompts: duplicates removed (first kept), shuffled
    with ``random.Random(seed)``, the first ``heldout`` held out.

    Raises:
        ValueError: the split leaves no train or no held-out prompt.
    """
    order = list(dict.fromkeys(prompts))
    random.Random(seed).shuffle(order)
    if not 0 < heldout < len(order):
        raise ValueError(
            f"{len(order)} distinct prompts cannot be split into {heldout} held-out prompts and "
            "at least one train prompt"
        )
    return order[heldout:], order[:heldout]


@dataclass
class Setup:
    """What every method shares.

    Attributes:
        args: the parsed command line.
        cfg: the validated ``OnlineRunConfig`` of ``--config``.
        base_path: the base model's directory.
        base_model: the frozen base causal LM (float32, eval mode).
        tokenizer: its tokenizer.
        train_prompts: prompts methods may train on.
        heldout_prompts: prompts for evaluation only.
        budget: reward calls per trained method.
        reward: the counting reward model.
        work: a temporary directory for runs and trainer outputs.
    """

    args: argparse.Namespace
    cfg: Any
    base_path: str
    base_model: Any
    tokenizer: Any
    train_prompts: list[str]
    heldout_prompts: list[str]
    budget: int
    reward: CountingReward
    work: Path

    @property
    def sampling(self) -> Any:
        """The config's ``SamplingConfig`` (temperature, top_p, max_new_tokens)."""
        return self.cfg.sampling

    def seed(self, *keys: int) -> int:
        """A seed derived from ``--seed`` and integer keys (``online_dt.util.seeds``)."""
        from online_dt.util.seeds import derived_seed

        return derived_seed(self.args.seed, *keys)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids without special tokens (as the project's policy encodes prompts)."""
        from online_dt.eval.base_samples import encode_prompts

        return encode_prompts(self.tokenizer, texts)


def per_iteration_calls(cfg: Any) -> int:
    """Reward calls of one online-dt iteration: prompts_per_iteration x samples_per_prompt."""
    return cfg.online.prompts_per_iteration * cfg.online.samples_per_prompt


def plan_budget(args: argparse.Namespace, methods: Sequence[str]) -> int:
    """The budget of reward calls per trained method, checked against every method's unit.

    ``--budget`` as given, else the default (``--config``'s reward calls: its warm start's,
    ``online.warm_start_calls``, plus online.iterations x prompts_per_iteration x
    samples_per_prompt) times ``--scale``, rounded so that what online-dt's warm start leaves is
    a whole number of its iterations (at least one).

    Raises:
        SystemExit: the budget is not a whole number of online-dt iterations, RAFT rounds
            (``--raft-prompts x --raft-k``) or GRPO steps (``--grpo-batch``) for the methods
            asked for; the message names each.
    """
    from online_dt.config import OnlineRunConfig, load_config

    plain = load_config(args.config, OnlineRunConfig)
    odt = load_config(args.config, OnlineRunConfig, odt_overrides(args))
    unit = per_iteration_calls(odt)
    warm = odt.online.warm_start_calls
    if args.budget is not None:
        budget = args.budget
    else:
        runs = per_iteration_calls(plain) * plain.online.iterations
        default = plain.online.warm_start_calls + runs
        budget = warm + max(1, round((default * args.scale - warm) / unit)) * unit
    units = {
        "online-dt": (unit, "iteration", "online.prompts_per_iteration x samples_per_prompt"),
        "raft": (args.raft_prompts * args.raft_k, "round", "--raft-prompts x --raft-k"),
        "grpo": (args.grpo_batch, "step", "--grpo-batch"),
    }
    spent = {"online-dt": warm}  # the warm start's calls come out of online-dt's budget
    bad = [
        f"{m} {what}s ({size} calls per {what}: {how}"
        + (f", after {spent[m]} warm-start calls" if spent.get(m) else "")
        + ")"
        for m, (size, what, how) in units.items()
        if m in methods and (budget - spent.get(m, 0) < size or (budget - spent.get(m, 0)) % size)
    ]
    if budget < 1 or bad:
        raise SystemExit(
            f"error: the budget {budget} is not a whole number of "
            + "; ".join(bad or ["(must be positive)"])
            + ". Change --budget, or the sizes (online-dt: --odt-set "
            "online.prompts_per_iteration=N)."
        )
    return budget


TEXTS_KEY = "_texts"
"""Row key holding the evaluated completion texts in memory (dropped from ``peers.json``)."""


def match_distinct_2(rows: list[dict[str, Any]], reference: dict[str, Any], seed: int) -> None:
    """Give each online-dt row ``distinct_2_at_bin_size``: the word distinct-2 of a seeded
    subsample of its completions as large as the set its target's reference bin was measured on
    (distinct-n falls as a set grows, so only equal sizes compare)."""
    from bench.peers_metrics import word_distinct_n

    bins = {round(b["center"], 6): b for b in reference["at_targets"]}
    for row in rows:
        ref = bins.get(round(row.get("target", math.nan), 6)) if "target" in row else None
        texts = row.get(TEXTS_KEY, [])
        if ref is None or not ref["distinct_2_samples"] or not texts:
            continue
        size = min(ref["distinct_2_samples"], len(texts))
        row["distinct_2_at_bin_size"] = word_distinct_n(random.Random(seed).sample(texts, size), 2)
        row["distinct_2_at_bin_size_samples"] = size


SEED_SPLIT, SEED_EVAL, SEED_REFERENCE, SEED_RAFT, SEED_GRPO, SEED_BON, SEED_RECAL = range(7)
"""Keys of the derived seeds."""


def make_setup(args: argparse.Namespace, budget: int) -> Setup:
    """Load the config, base model, reward model and prompts; split the prompts (seeded).

    Raises:
        SystemExit: the split leaves no train or no held-out prompt.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from online_dt.config import OnlineRunConfig, load_config
    from online_dt.embedded.base_model import resolve_base_model
    from online_dt.launch.prompts import load_prompts
    from online_dt.rewards import load_reward_model
    from online_dt.util.seeds import derived_seed

    cfg = load_config(args.config, OnlineRunConfig)
    base_path = resolve_base_model(cfg.model, cfg.bootstrap, progress=not args.no_progress)
    prompts = load_prompts(cfg.prompts)
    try:
        train, heldout = split_prompts(
            prompts, args.heldout_prompts, derived_seed(args.seed, SEED_SPLIT)
        )
    except ValueError as e:
        raise SystemExit(f"error: {e}") from e
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    base_model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    base_model.eval().requires_grad_(False)
    work = Path(tempfile.mkdtemp(prefix="odt-peers-"))
    reward = CountingReward(load_reward_model(cfg.reward_model), heldout)
    return Setup(args, cfg, base_path, base_model, tokenizer, train, heldout, budget, reward, work)


# ---------------------------------------------------------------------------------------------
# evaluation (identical for every method)
# ---------------------------------------------------------------------------------------------


def eval_prompts(setup: Setup) -> list[str]:
    """The held-out prompts, each repeated ``--eval-samples`` times (adjacent)."""
    k = setup.args.eval_samples
    return [p for p in setup.heldout_prompts for _ in range(k)]


def summarize(
    setup: Setup,
    texts: Sequence[str],
    rewards: Sequence[float],
    base_logprobs: Sequence[Sequence[float]],
    policy_logprobs: Sequence[Sequence[float]] | None,
) -> dict[str, Any]:
    """The evaluation metrics of one set of held-out samples.

    ``policy_logprobs`` ``None`` leaves the KL fields to the caller (best-of-n).
    """
    from bench.peers_metrics import k1_kl, nll_per_token, word_distinct_n
    from online_dt.util.metrics import reward_summary

    summary = reward_summary(rewards)
    tokens = sum(len(lb) for lb in base_logprobs)
    row: dict[str, Any] = {
        "samples": len(texts),
        "reward_mean": summary["mean"],
        "reward_p10": summary["p10"],
        "reward_p90": summary["p90"],
        "reward_std": summary["std"],
        "distinct_1": word_distinct_n(texts, 1),
        "distinct_2": word_distinct_n(texts, 2),
        "distinct_3": word_distinct_n(texts, 3),
        "nll_base_per_token": nll_per_token(base_logprobs),
        "mean_tokens": tokens / len(texts),
        "examples": list(texts[: 2 * setup.args.eval_samples : setup.args.eval_samples]),
        TEXTS_KEY: list(texts),  # for size-matched distinct-2; not written to the JSON
    }
    if policy_logprobs is not None:
        kl = k1_kl(policy_logprobs, base_logprobs)
        row |= {
            "kl_per_token": kl.per_token,
            "kl_per_completion": kl.per_completion,
            "kl_per_completion_stderr": kl.stderr_per_completion,
            "kl_kind": "k1 estimate",
        }
    return row


def sample_plain(setup: Setup, model: Any, prompts: Sequence[str], seed: int) -> tuple[Any, list]:
    """Sample one completion per prompt from a plain causal LM with the shared settings
    (``online_dt.eval.base_samples.sample_base``); returns the sampled tokens and the decoded
    texts."""
    from online_dt.eval.base_samples import sample_base

    return sample_base(model, setup.tokenizer, prompts, setup.sampling, seed)


def max_abs_diff(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> float:
    """Largest ``|a_ij - b_ij|`` over aligned ragged lists (a check of two logprob sources)."""
    return max(
        (abs(x - y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True)),
        default=0.0,
    )


def evaluate_plain(setup: Setup, model: Any, phase: str) -> dict[str, Any]:
    """Evaluate a plain causal LM (base, RAFT, GRPO) on the held-out prompts.

    KL: k1 with the policy's and the base's teacher-forced logprobs of the policy's samples.
    """
    from bench.peers_metrics import teacher_forced_logprobs

    prompts = eval_prompts(setup)
    sampled, texts = sample_plain(setup, model, prompts, setup.seed(SEED_EVAL))
    setup.reward.phase = phase
    rewards = setup.reward.score(prompts, texts)
    ids, pad = setup.encode(prompts), setup.tokenizer.pad_token_id
    policy_lp = teacher_forced_logprobs(model, ids, sampled.token_ids, pad_id=pad)
    base_lp = teacher_forced_logprobs(setup.base_model, ids, sampled.token_ids, pad_id=pad)
    row = summarize(setup, texts, rewards, base_lp, policy_lp)
    row["check_sampler_vs_teacher_forced_logprob"] = max_abs_diff(sampled.logprobs, policy_lp)
    return row


def generate_conditioned(
    setup: Setup,
    policy: Any,
    prompts: Sequence[str],
    targets: Sequence[float],
    seed: int,
    guidance: tuple[float, Any] | None,
) -> list[Any]:
    """``policy.generate`` with the shared sampling settings and ``guidance`` ``(weight,
    reference)`` mapped onto ``generate``'s arguments: a reward (``guidance_reference``),
    ``"base"`` (``guidance_model`` = the base model) or ``(reward, weight)`` pairs
    (``guidance_mixture``); ``None``: unguided."""
    s = setup.sampling
    weight, reference = guidance if guidance is not None else (0.0, None)
    by_base, by_mixture = reference == "base", isinstance(reference, list)
    return policy.generate(
        prompts,
        targets,
        max_new_tokens=s.max_new_tokens,
        temperature=s.temperature,
        top_p=s.top_p,
        seed=seed,
        batch_size=s.batch_size,
        guidance_weight=weight,
        guidance_reference=None if by_base or by_mixture else reference,
        guidance_model=setup.base_model if by_base else None,
        guidance_mixture=reference if by_mixture else None,
    )


def evaluate_conditioned(
    setup: Setup,
    policy: Any,
    target: float | Sequence[float],
    phase: str,
    guidance: tuple[float, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate a reward-conditioned policy asked for ``target`` on the held-out prompts
    (one value for every sample, or one per held-out prompt, in :func:`eval_prompts` order).

    KL: k1 with the policy's teacher-forced logprobs at the target
    (``online_dt.policy.logprobs.completion_logprobs``) and the base's teacher-forced logprobs of
    the same prompt + completion tokens (the base sees no conditioning slot). With
    ``guidance`` ``(weight, reference)`` the samples come from the guided distribution
    (``generate``'s ``guidance_weight`` and, for a reference reward, ``guidance_reference``; for
    ``"base"``, ``guidance_model`` = the base model; for a list of ``(reward, weight)``
    pairs, ``guidance_mixture``), and the KL uses the
    logprobs the sampler returns, which are that distribution's.
    """
    from bench.peers_metrics import teacher_forced_logprobs
    from online_dt.policy.logprobs import completion_logprobs

    s = setup.sampling
    prompts = eval_prompts(setup)
    targets = [target] * len(prompts) if isinstance(target, (int, float)) else list(target)
    rollouts = generate_conditioned(
        setup, policy, prompts, targets, setup.seed(SEED_EVAL), guidance
    )
    texts = [r.completion for r in rollouts]
    setup.reward.phase = phase
    rewards = setup.reward.score(prompts, texts)
    completion_ids = [r.token_ids for r in rollouts]
    base_lp = teacher_forced_logprobs(
        setup.base_model, setup.encode(prompts), completion_ids, pad_id=setup.tokenizer.pad_token_id
    )
    if guidance is not None:
        return summarize(setup, texts, rewards, base_lp, [r.logprobs for r in rollouts])
    policy_lp: list[list[float]] = []
    for start in range(0, len(prompts), s.batch_size):
        end = start + s.batch_size
        policy_lp += completion_logprobs(
            policy, prompts[start:end], targets[start:end], completion_ids[start:end]
        )
    row = summarize(setup, texts, rewards, base_lp, policy_lp)
    row["check_sampler_vs_teacher_forced_logprob"] = max_abs_diff(
        [r.logprobs for r in rollouts], policy_lp
    )
    return row


def recalibrate(
    setup: Setup,
    policy: Any,
    phase: str,
    guidance: tuple[float, Any] | None,
    scalar_grid: Sequence[float],
) -> Any:
    """Fit a :class:`~online_dt.policy.recalibration.Recalibration` of ``policy`` (sampled as
    ``guidance`` says, see :func:`evaluate_conditioned`) from ``--odt-recalibrate`` train
    prompts (seeded; the same prompts at every grid value) x the grid of
    :func:`~online_dt.policy.recalibration.conditioning_grid` (``scalar_grid`` in scalar
    mode), scored under the reward phase ``phase`` (counted)."""
    from online_dt.policy.recalibration import Recalibration, conditioning_grid

    n = setup.args.odt_recalibrate
    rng = random.Random(setup.seed(SEED_RECAL))
    prompts = [setup.train_prompts[rng.randrange(len(setup.train_prompts))] for _ in range(n)]
    grid = conditioning_grid(policy.conditioner, scalar_grid)
    conditioning, achieved = [], []
    for value in grid:
        seed = setup.seed(SEED_RECAL, 1)
        rollouts = generate_conditioned(setup, policy, prompts, [value] * n, seed, guidance)
        setup.reward.phase = phase
        conditioning += [value] * n
        achieved += setup.reward.score(prompts, [r.completion for r in rollouts])
    return Recalibration.fit(conditioning, achieved)


PATH_KEYS = (
    "train_reward_calls",
    "reward_mean",
    "kl_per_token",
    "kl_per_completion",
    "nll_base_per_token",
    "distinct_2",
)
"""Fields of one point of a training path (``--path-evals``)."""


def path_points(units: int, evals: int) -> list[int]:
    """The training units (GRPO steps, RAFT rounds) after which ``--path-evals`` evaluates:
    ``round(i * units / (evals + 1))`` for i = 1..evals, without 0, ``units`` itself (the
    final evaluation covers it) and repeats, ascending (so fewer than ``evals`` when
    ``units <= evals``).

    Raises:
        ValueError: ``units < 1`` or ``evals < 0``.
    """
    if units < 1 or evals < 0:
        raise ValueError(f"need units >= 1 and evals >= 0, got {units} and {evals}")
    return sorted({round(i * units / (evals + 1)) for i in range(1, evals + 1)} - {0, units})


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """A context that saves the torch (CPU, and CUDA where present: ``torch.random.fork_rng``),
    Python ``random`` and NumPy global RNG states on entry and restores them on exit, so what
    runs inside (an evaluation during training) leaves the training's random streams
    untouched."""
    import numpy as np
    import torch

    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    python, numpy = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        np.random.set_state(numpy)
        random.setstate(python)


def path_point(setup: Setup, model: Any, name: str) -> tuple[dict[str, Any], float]:
    """One point of ``name``'s training path: :func:`evaluate_plain` of ``model`` (in eval
    mode) on the held-out prompts, its reward calls counted under ``<name>:path``, inside
    :func:`isolated_rng`; the model's train/eval mode and the reward counter's phase are put
    back afterwards. Returns the point (:data:`PATH_KEYS`, ``train_reward_calls`` being the
    ``<name>:train`` calls so far) and the seconds it took."""
    start = time.perf_counter()
    was_training, phase = model.training, setup.reward.phase
    with isolated_rng():
        model.eval()
        row = evaluate_plain(setup, model, f"{name}:path")
    model.train(was_training)
    setup.reward.phase = phase
    point = {"train_reward_calls": setup.reward.calls(f"{name}:train")} | {
        k: row[k] for k in PATH_KEYS[1:]
    }
    return point, time.perf_counter() - start


def with_path(
    setup: Setup, name: str, row: dict[str, Any], path: list[dict[str, Any]], seconds: float
) -> dict[str, Any]:
    """``row`` (a method's final row) with its training path when ``--path-evals`` > 0: the
    points, then the final evaluation as the last point; ``path_eval_s`` (seconds, not in
    ``train_s``) and ``path_reward_calls``. Unchanged with ``--path-evals 0``."""
    if setup.args.path_evals <= 0:
        return row
    final = {k: row[k] for k in PATH_KEYS}
    return row | {
        "path_eval_s": seconds,
        "path_reward_calls": setup.reward.calls(f"{name}:path"),
        "path": [*path, final],
    }


# ---------------------------------------------------------------------------------------------
# the methods
# ---------------------------------------------------------------------------------------------


def run_base(setup: Setup) -> list[dict[str, Any]]:
    """The base model itself: no training, no train reward calls."""
    start = time.perf_counter()
    row = evaluate_plain(setup, setup.base_model, "base:eval")
    return [
        {"method": "base", "train_s": 0.0, "eval_s": time.perf_counter() - start, **row}
        | calls(setup, "base")
    ]


def calls(setup: Setup, name: str) -> dict[str, int]:
    """The reward calls a method made in training and in evaluation."""
    return {
        "train_reward_calls": setup.reward.calls(f"{name}:train"),
        "eval_reward_calls": setup.reward.calls(f"{name}:eval"),
    }


def run_best_of_n(setup: Setup) -> list[dict[str, Any]]:
    """Best-of-n from the base model: for each held-out sample, ``--bon-n`` base samples, the
    highest-reward one kept (ties: the first). Its reward calls are made on held-out prompts at
    evaluation time (held-out prompts x eval samples x n). KL: the analytic bound
    ``log n - (n - 1)/n`` (the kept sample is no sample of the base distribution, so the k1
    estimate does not apply); per token: that bound over the kept samples' mean length."""
    from bench.peers_metrics import best_of_n_kl_bound, teacher_forced_logprobs

    n = setup.args.bon_n
    start = time.perf_counter()
    prompts = eval_prompts(setup)
    expanded = [p for p in prompts for _ in range(n)]
    sampled, texts = sample_plain(setup, setup.base_model, expanded, setup.seed(SEED_BON))
    setup.reward.phase = "best-of-n:eval"
    rewards = setup.reward.score(expanded, texts)
    best = [max(range(i, i + n), key=lambda j: rewards[j]) for i in range(0, len(expanded), n)]
    kept_ids = [sampled.token_ids[j] for j in best]
    base_lp = teacher_forced_logprobs(
        setup.base_model, setup.encode(prompts), kept_ids, pad_id=setup.tokenizer.pad_token_id
    )
    row = summarize(setup, [texts[j] for j in best], [rewards[j] for j in best], base_lp, None)
    bound = best_of_n_kl_bound(n)
    row |= {
        "kl_per_completion": bound,
        "kl_per_token": bound / row["mean_tokens"],
        "kl_per_completion_stderr": None,
        "kl_kind": f"analytic bound log n - (n-1)/n, n={n}",
    }
    return [
        {"method": f"best-of-{n}", "n": n, "train_s": 0.0, "eval_s": time.perf_counter() - start}
        | row
        | calls(setup, "best-of-n")
    ]


def plain_sft_step(
    setup: Setup, model: Any, optimizer: Any, prompt_ids: list[list[int]], completion_ids: list
) -> float:
    """One next-token step of a plain causal LM on (prompt, completion) token rows, the loss on
    completion tokens only (``online_dt.training.losses.next_token_loss``), gradients clipped
    to the config's ``training.grad_clip``; returns the loss (nats per token)."""
    import torch

    from online_dt.policy.layout import IGNORE_INDEX
    from online_dt.training.losses import next_token_loss

    width = max(len(p) + len(c) for p, c in zip(prompt_ids, completion_ids, strict=True))
    pad = setup.tokenizer.pad_token_id
    ids = torch.full((len(prompt_ids), width), pad, dtype=torch.long)
    labels = torch.full((len(prompt_ids), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids, strict=True)):
        ids[i, : len(p) + len(c)] = torch.tensor([*p, *c])
        labels[i, len(p) : len(p) + len(c)] = torch.tensor(c)
        mask[i, : len(p) + len(c)] = 1
    model.train()
    logits = model(input_ids=ids, attention_mask=mask).logits
    loss, _ = next_token_loss(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip = setup.cfg.training.grad_clip
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip if clip is not None else math.inf)
    optimizer.step()
    return float(loss.detach())


def run_raft(setup: Setup) -> list[dict[str, Any]]:
    """RAFT (Dong et al., 2023, "RAFT: Reward rAnked FineTuning", arXiv 2304.06767) / expert
    iteration on the plain base causal LM. Each round: ``--raft-prompts`` train prompts (cycling
    through the train split), ``--raft-k`` samples each from the current model, scored; the
    ``--raft-keep`` best per prompt are kept; ``--raft-steps`` AdamW steps on shuffled batches of
    the kept samples (batch: the config's ``training.batch_size``; lr, betas, weight decay,
    warm-up and clipping: the config's ``training``, lr overridable). Rounds run until the next
    one would exceed the budget. With ``--path-evals``, also evaluated after the rounds
    :func:`path_points` names (:func:`path_point`)."""
    import torch
    from transformers import AutoModelForCausalLM

    from online_dt.loop.loop import prompts_for
    from online_dt.training.optim import adamw

    a, tc = setup.args, setup.cfg.training
    per_round = a.raft_prompts * a.raft_k
    rounds = setup.budget // per_round
    if rounds < 1:
        raise SystemExit(f"error: RAFT needs {per_round} calls a round, budget {setup.budget}")
    start = time.perf_counter()
    torch.manual_seed(setup.seed(SEED_RAFT))
    model = AutoModelForCausalLM.from_pretrained(setup.base_path, dtype=torch.float32)
    lr = a.raft_lr if a.raft_lr is not None else tc.lr
    optimizer = adamw(
        model.parameters(), model.device, lr=lr, betas=tc.betas, weight_decay=tc.weight_decay
    )
    warm = tc.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warm) if warm else 1.0
    )
    rng = random.Random(setup.seed(SEED_RAFT, 1))
    history = []
    points, path, path_s = set(path_points(rounds, a.path_evals)), [], 0.0
    setup.reward.phase = "raft:train"
    for r in range(rounds):
        batch = prompts_for(setup.train_prompts, r, a.raft_prompts)
        expanded = [p for p in batch for _ in range(a.raft_k)]
        sampled, texts = sample_plain(setup, model, expanded, setup.seed(SEED_RAFT, 2, r))
        rewards = setup.reward.score(expanded, texts)
        kept = []
        for i in range(0, len(expanded), a.raft_k):
            group = sorted(range(i, i + a.raft_k), key=lambda j: -rewards[j])[: a.raft_keep]
            kept += group
        prompt_ids = setup.encode(expanded)
        losses = []
        size = min(tc.batch_size, len(kept))
        order: list[int] = []
        for _ in range(a.raft_steps):
            if len(order) < size:
                order = rng.sample(kept, len(kept))
            chosen, order = order[:size], order[size:]
            losses.append(
                plain_sft_step(
                    setup,
                    model,
                    optimizer,
                    [prompt_ids[j] for j in chosen],
                    [sampled.token_ids[j] for j in chosen],
                )
            )
            scheduler.step()
        history.append(
            {
                "round": r,
                "sampled_reward_mean": sum(rewards) / len(rewards),
                "kept_reward_mean": sum(rewards[j] for j in kept) / len(kept),
                "loss": sum(losses) / len(losses) if losses else None,
            }
        )
        if r + 1 in points:
            point, seconds = path_point(setup, model, "raft")
            path.append(point)
            path_s += seconds
    model.eval()
    train_s = time.perf_counter() - start - path_s
    start = time.perf_counter()
    row = evaluate_plain(setup, model, "raft:eval")
    config = {
        "rounds": rounds,
        "prompts_per_round": a.raft_prompts,
        "k": a.raft_k,
        "keep": a.raft_keep,
        "steps_per_round": a.raft_steps,
        "batch_size": size,
        "lr": lr,
        "betas": list(tc.betas),
        "weight_decay": tc.weight_decay,
        "warmup_steps": warm,
        "grad_clip": tc.grad_clip,
        "policy": "plain base causal LM (no conditioning slot), loss on completion tokens + EOS",
    }
    out = (
        {"method": "raft", "train_s": train_s, "eval_s": time.perf_counter() - start, **row}
        | calls(setup, "raft")
        | {"config": config, "history": history}
    )
    return [with_path(setup, "raft", out, path, path_s)]


def run_grpo(setup: Setup, beta: float) -> list[dict[str, Any]]:
    """TRL ``GRPOTrainer`` (Shao et al., 2024, DeepSeekMath) on CPU from the base model, with KL
    coefficient ``beta``: ``--grpo-num-generations`` completions per prompt, ``--grpo-batch``
    completions per optimizer step (one generation round per step:
    ``gradient_accumulation_steps = 1``, so ``steps_per_generation = 1`` and
    ``generation_batch_size = per_device_train_batch_size``), ``max_steps = budget //
    grpo_batch``, the shared sampling settings, constant learning rate ``--grpo-lr``, everything
    else TRL 1.16's defaults (loss ``dapo``, epsilon 0.2, ``scale_rewards=group``, one
    iteration per batch). The reward function is the shared reward model on the completion.
    With ``--path-evals``, a ``transformers.TrainerCallback`` evaluates the model at the end of
    the steps :func:`path_points` names (:func:`path_point`, after the optimizer step)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    a, s = setup.args, setup.sampling
    name = f"grpo-b{beta:g}"
    steps = setup.budget // a.grpo_batch
    if steps < 1:
        raise SystemExit(f"error: GRPO needs {a.grpo_batch} calls a step, budget {setup.budget}")
    start = time.perf_counter()
    counter = setup.reward

    def reward_fn(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
        counter.phase = f"{name}:train"
        return counter.score(list(prompts), list(completions))

    args = GRPOConfig(
        output_dir=str(setup.work / name),
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        learning_rate=a.grpo_lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        beta=beta,
        num_generations=a.grpo_num_generations,
        max_completion_length=s.max_new_tokens,
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=0,
        per_device_train_batch_size=a.grpo_batch,
        gradient_accumulation_steps=1,
        max_steps=steps,
        logging_steps=max(1, steps // 10),
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=setup.seed(SEED_GRPO),
        data_seed=setup.seed(SEED_GRPO),
        dataloader_num_workers=0,
    )
    torch.manual_seed(setup.seed(SEED_GRPO))
    model = AutoModelForCausalLM.from_pretrained(setup.base_path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(setup.base_path)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_fn,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": setup.train_prompts}),
        processing_class=tokenizer,
    )
    trainer.remove_callback(PrinterCallback)
    path: list[dict[str, Any]] = []
    path_s = [0.0]
    points = set(path_points(steps, a.path_evals))

    class PathCallback(TrainerCallback):
        """Evaluates the model at the end of the steps in ``points``."""

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step in points:
                point, seconds = path_point(setup, kwargs["model"], name)
                path.append(point)
                path_s[0] += seconds

    if points:
        trainer.add_callback(PathCallback())
    trainer.train()
    trained = trainer.model.eval()
    train_s = time.perf_counter() - start - path_s[0]
    start = time.perf_counter()
    row = evaluate_plain(setup, trained, f"{name}:eval")
    config = {
        "beta": beta,
        "learning_rate": args.learning_rate,
        "lr_scheduler_type": getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type),
        "num_generations": args.num_generations,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "generation_batch_size": args.generation_batch_size,
        "steps_per_generation": args.steps_per_generation,
        "max_steps": args.max_steps,
        "max_completion_length": args.max_completion_length,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "loss_type": args.loss_type,
        "epsilon": args.epsilon,
        "scale_rewards": args.scale_rewards,
        "num_iterations": args.num_iterations,
        "optim": getattr(args.optim, "value", args.optim),
        "weight_decay": args.weight_decay,
        "max_grad_norm": args.max_grad_norm,
        "adam_betas": [args.adam_beta1, args.adam_beta2],
        "steps_done": trainer.state.global_step,
    }
    logs = [
        {k: v for k, v in rec.items() if k in ("step", "reward", "kl", "loss", "entropy")}
        for rec in trainer.state.log_history
    ]
    out = (
        {"method": name, "train_s": train_s, "eval_s": time.perf_counter() - start, **row}
        | calls(setup, name)
        | {"config": config, "history": logs}
    )
    return [with_path(setup, name, out, path, path_s[0])]


def odt_overrides(args: argparse.Namespace, mode: str | None = None) -> dict[str, Any]:
    """``--odt-set`` as nested overrides, with the HF reference sampler unless
    ``--odt-set sampler.backend=...`` says otherwise, and ``conditioning.mode`` set to
    ``mode`` when one is given."""
    from online_dt.arguments import parse_overrides

    overrides = parse_overrides(args.odt_set)
    overrides.setdefault("sampler", {}).setdefault("backend", "hf")
    if mode is not None:
        overrides.setdefault("conditioning", {})["mode"] = mode
    return overrides


def config_mode(path: str | Path) -> str:
    """``conditioning.mode`` of the run config at ``path`` (``scalar`` or ``token``).

    Raises:
        SystemExit: the config cannot be loaded (its error names the field).
    """
    from online_dt.config import ConfigError, OnlineRunConfig, load_config

    try:
        return load_config(path, OnlineRunConfig).conditioning.mode
    except (ConfigError, OSError) as e:
        raise SystemExit(f"error: --config {path}: {e}") from None


def odt_modes(args: argparse.Namespace) -> list[str]:
    """The conditioning modes online-dt runs in: ``--odt-modes``, else the one
    ``--odt-set conditioning.mode=...`` names, else ``--config``'s own ``conditioning.mode``.

    Raises:
        SystemExit: an unknown mode, or ``--odt-modes`` and ``--odt-set conditioning.mode``
            disagree.
    """
    from online_dt.arguments import parse_overrides

    named = parse_overrides(args.odt_set).get("conditioning", {}).get("mode")
    if args.odt_modes is None:
        return [named if named is not None else config_mode(args.config)]
    modes = [m.strip() for m in args.odt_modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(ODT_MODES))
    if unknown or not modes:
        raise SystemExit(f"error: --odt-modes {unknown or modes}: choose from {ODT_MODES}")
    if named is not None and modes != [named]:
        raise SystemExit(
            f"error: --odt-set conditioning.mode={named} and --odt-modes {args.odt_modes} "
            "disagree; give one of them"
        )
    return list(dict.fromkeys(modes))


def odt_config(setup: Setup, mode: str | None = None) -> Any:
    """The online-dt run's config: ``--config`` with ``--odt-set`` applied (and the HF sampler,
    :func:`odt_overrides`), ``online.run_dir`` in the work directory and ``online.iterations``
    = (budget - warm-start calls) / (prompts_per_iteration x samples_per_prompt)
    (divisibility is checked by :func:`plan_budget`)."""
    from online_dt.config import OnlineRunConfig, load_config

    overrides = odt_overrides(setup.args, mode)
    probe = load_config(setup.args.config, OnlineRunConfig, overrides)
    online = overrides.setdefault("online", {})
    online["run_dir"] = str(setup.work / odt_method(probe.conditioning.mode))
    left = setup.budget - probe.online.warm_start_calls  # the warm start's calls come first
    online["iterations"] = left // per_iteration_calls(probe)
    return load_config(setup.args.config, OnlineRunConfig, overrides)


def check_odt_config(setup: Setup, mode: str) -> None:
    """Load the online-dt run's config of ``mode`` (:func:`odt_config`) and check what the bench
    adds to it, before any method runs.

    Raises:
        SystemExit: the config is invalid (e.g. ``conditioning.best_command`` in token mode:
            pass ``--odt-modes scalar``), or an ``--odt-recalibration-grid`` value above
            ``reward_max`` with ``conditioning.best_command`` (it asks for the best command),
            or ``--odt-guidance`` with
            ``conditioning.best_command_lora_rank`` or ``reward_lora_rank`` (guided generation
            is refused with a gated LoRA).
    """
    from pydantic import ValidationError

    try:
        cfg = odt_config(setup, mode)
    except (ValidationError, ValueError) as e:
        raise SystemExit(f"error: the online-dt config in {mode} mode: {e}") from e
    grid = setup.args.odt_recalibration_grid or []
    if any(cfg.conditioning.asks_best_command(c) for c in grid):
        raise SystemExit(
            f"error: --odt-recalibration-grid {grid}: a value above conditioning.reward_max "
            f"({cfg.conditioning.reward_max:g}) asks for the best command, not for a reward"
        )
    if setup.args.odt_guidance and cfg.conditioning.lora_option is not None:
        raise SystemExit(
            f"error: --odt-guidance with conditioning.{cfg.conditioning.lora_option} is not "
            "available: the LoRA's gate follows one conditioned batch, and guidance runs a "
            "second beside it"
        )


def run_online_dt(setup: Setup, base_mean: float, mode: str) -> list[dict[str, Any]]:
    """The online decision-transformer loop of the config in conditioning ``mode``, in process,
    on the train prompts, then its final policy (the last checkpoint's) evaluated at each
    target. Rows are labelled :func:`odt_method` of the mode; in token mode each row's ``bin``
    is the reward bin its target maps to (``describe_target`` of the policy's conditioner)."""
    from online_dt.eval.source import buffer_rewards
    from online_dt.launch.rundir import CHECKPOINT_POLICY_DIR
    from online_dt.loop.futures import LocalHandle
    from online_dt.loop.plan import execute, plan_run
    from online_dt.loop.workers import CheckedRewardModel, local_workers
    from online_dt.policy.guidance import buffer_prior
    from online_dt.policy.policy import RewardConditionedPolicy
    from online_dt.policy.recalibration import default_grid, without_best_command

    a = setup.args
    start = time.perf_counter()
    cfg = odt_config(setup, mode)
    name = odt_method(cfg.conditioning.mode)
    plan = plan_run(cfg, None)
    plan.prompts = list(setup.train_prompts)  # held-out prompts are never trained on
    workers = local_workers(plan.cfg, setup.base_path, plan.run.path, None)
    workers.reward = LocalHandle(CheckedRewardModel.for_run(setup.reward, cfg))  # counted
    setup.reward.phase = f"{name}:train"
    records = execute(plan, workers, progress=not a.no_progress)
    train_s = time.perf_counter() - start
    checkpoint = plan.run.latest_checkpoint()
    policy = RewardConditionedPolicy.from_pretrained(
        checkpoint / CHECKPOINT_POLICY_DIR, device=cfg.model.device
    ).eval()
    max_target = a.max_target if a.max_target is not None else cfg.schedule.max_target
    targets = a.targets or [
        base_mean + (max_target - base_mean) * i / max(a.num_targets - 1, 1)
        for i in range(a.num_targets)
    ]
    if cfg.conditioning.best_command and not any(t > cfg.conditioning.reward_max for t in targets):
        targets = [*targets, cfg.conditioning.best_target]  # the best command's own row
    config = {
        "iterations": cfg.online.iterations,
        "prompts_per_iteration": cfg.online.prompts_per_iteration,
        "samples_per_prompt": cfg.online.samples_per_prompt,
        "train_steps_per_iteration": cfg.online.train_steps_per_iteration,
        "training": cfg.training.model_dump(mode="json"),
        "schedule": cfg.schedule.model_dump(mode="json"),
        "conditioning": cfg.conditioning.model_dump(mode="json"),
        "sampler_backend": cfg.sampler.backend,
        "overrides": a.odt_set,
        "checkpoint": checkpoint.name,
        "bin_edges": policy.conditioner.binning.edges if policy.conditioner.binning else None,
        "bin_range": policy.conditioner.bin_range,
    }
    history = [
        {k: rec.get(k) for k in ("iteration", "target", "achieved_mean", "kl_to_base", "loss")}
        for rec in records
    ]
    rows = []
    grid = a.odt_guidance_grid
    references: dict[str, Any] = {
        "mean": base_mean,
        "base": "base",
        "mixture": [(r, 1.0) for r in grid],
    }
    if "mixture-buffer" in a.odt_guidance_reference:
        prior = buffer_prior(buffer_rewards(plan.run.path), grid)
        references["mixture-buffer"] = list(zip(grid, prior, strict=True))
    variants: list[tuple[str, tuple[float, Any] | None]] = [(name, None)]
    for weight in a.odt_guidance:
        for ref in a.odt_guidance_reference:
            suffix = "" if ref == "mean" else f"-{ref}"
            variants.append((f"{name}-guided{weight:g}{suffix}", (weight, references[ref])))
    strategy = a.odt_recalibration_strategy
    scalar_grid = a.odt_recalibration_grid
    if a.odt_recalibrate and not scalar_grid:
        scalar_grid = default_grid(buffer_rewards(plan.run.path))
        if cfg.conditioning.best_command:  # the step beyond the top would ask for it
            scalar_grid = without_best_command(scalar_grid, cfg.conditioning.reward_max)
    n_eval = len(eval_prompts(setup))
    for label, guidance in variants:
        weight = None if guidance is None else guidance[0]
        runs: list[tuple[str, Any]] = [(label, None)]
        if a.odt_recalibrate:
            fit = recalibrate(setup, policy, f"{label}:recal", guidance, scalar_grid)
            runs.append((f"{label}-recal", fit))
        for row_label, recal in runs:
            for i, target in enumerate(targets):
                start, before = time.perf_counter(), setup.reward.calls(f"{row_label}:eval")
                asked = target
                extra: dict[str, Any] = {}
                if recal is not None and not cfg.conditioning.asks_best_command(target):
                    asked = recal.conditionings(target, n_eval, strategy, setup.seed(SEED_RECAL, 2))
                    extra["recalibration"] = {
                        "strategy": strategy,
                        "bracket": dataclasses.asdict(recal.bracket(target)),
                        "fit": recal.to_dict(),
                        "calls": setup.reward.calls(f"{label}:recal"),
                    }
                row = evaluate_conditioned(setup, policy, asked, f"{row_label}:eval", guidance)
                rows.append(
                    {
                        "method": row_label,
                        "mode": cfg.conditioning.mode,
                        "target": target,
                        "bin": policy.conditioner.describe_target(target)
                        if recal is None
                        else None,
                        "train_s": train_s,
                        "eval_s": time.perf_counter() - start,
                        **row,
                        "train_reward_calls": setup.reward.calls(f"{name}:train"),
                        "eval_reward_calls": setup.reward.calls(f"{row_label}:eval") - before,
                    }
                    | extra
                    | (
                        {"config": config, "history": history}
                        if i == 0 and weight is None and recal is None
                        else {}
                    )
                    | (
                        {"guidance": {"weight": weight, "reference": guidance[1]}}
                        if guidance
                        else {}
                    )
                )
    return rows


# ---------------------------------------------------------------------------------------------
# the binned-base reference
# ---------------------------------------------------------------------------------------------


def base_reference(setup: Setup, centers: Sequence[float]) -> dict[str, Any]:
    """``--reference-samples`` base samples on the held-out prompts (cycling), scored, with the
    binned statistics at ``centers`` (online-dt's targets) and on a grid of reward levels (the
    base's own reward-vs-NLL curve; -1 to 1 every ``2 x --bin-half-width``), by
    ``online_dt.eval.reference.base_reference`` (which ``online-dt eval`` uses too). Its reward
    calls are counted as ``reference``."""
    from online_dt.eval.reference import base_reference as binned_base

    w = setup.args.bin_half_width
    setup.reward.phase = "reference"
    out = binned_base(
        setup.base_model,
        setup.tokenizer,
        setup.heldout_prompts,
        setup.reward.score,
        setup.sampling,
        centers,
        samples=setup.args.reference_samples,
        seed=setup.seed(SEED_REFERENCE),
        subsample_seed=setup.seed(SEED_REFERENCE, 1),
        half_width=w,
        max_samples=len(setup.heldout_prompts) * setup.args.eval_samples,
        grid=[round(-1 + k * 2 * w, 6) for k in range(round(1 / w) + 1)],
    )
    return {
        "samples": out["samples"],
        "half_width": out["half_width"],
        "reward_calls": setup.reward.calls("reference"),
        "seconds": out["seconds"],
        "at_targets": out["at_targets"],
        "grid": out["grid"],
    }


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------


def fmt(x: Any, digits: int = 3) -> str:
    """A number for the table (``-`` for missing, ``inf`` kept)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def format_path(path: Sequence[dict[str, Any]]) -> str:
    """A training path as one table line: ``train calls -> reward mean @ KL per completion``
    per point, the final evaluation last."""
    points = ", ".join(
        f"{p['train_reward_calls']} -> {fmt(p['reward_mean'])} @ {fmt(p['kl_per_completion'], 1)}"
        for p in path
    )
    return f"  ^ path (train calls -> r_mean @ KL/cmp): {points}"


def format_recalibration(recal: dict[str, Any]) -> str:
    """The ``^ recalibrated`` line under a ``-recal`` row: what each sample was asked for."""
    b = recal["bracket"]
    if recal["strategy"] == "interpolate" or b["low"] == b["high"]:
        asked = f"asked for {b['low'] + b['share_high'] * (b['high'] - b['low']):.3f}"
    else:
        share = b["share_high"]
        asked = f"asked {1 - share:.0%} for {b['low']:.3f}, {share:.0%} for {b['high']:.3f}"
    reach = "" if b["reachable"] else " (outside the measured rewards: the end of the grid)"
    return f"  ^ recalibrated on {recal['calls']} train-prompt calls: {asked}{reach}"


def format_table(rows: Sequence[dict[str, Any]], reference: dict[str, Any] | None) -> str:
    """The stdout table: one line per method (and per online-dt target), the binned-base
    reference under each online-dt line, the training path (``--path-evals``) under each line
    that has one (:func:`format_path`)."""
    cols = [
        ("method", 18),
        ("target", 6),
        ("r_mean", 6),
        ("r_p10", 6),
        ("r_p90", 6),
        ("dist1", 5),
        ("dist2", 5),
        ("dist3", 5),
        ("KL/tok", 6),
        ("KL/cmp", 6),
        ("NLL/tok", 7),
        ("train_calls", 11),
        ("eval_calls", 10),
        ("train_s", 7),
    ]
    head = " ".join(f"{c:>{w}}" if i else f"{c:<{w}}" for i, (c, w) in enumerate(cols))
    lines = [head, "-" * len(head)]
    refs = {round(b["center"], 6): b for b in (reference or {}).get("at_targets", [])}
    for r in rows:
        kl_mark = "<=" if r.get("kl_kind", "").startswith("analytic") else ""
        values = [
            r["method"],
            fmt(r.get("target")),
            fmt(r["reward_mean"]),
            fmt(r["reward_p10"]),
            fmt(r["reward_p90"]),
            fmt(r["distinct_1"]),
            fmt(r["distinct_2"]),
            fmt(r["distinct_3"]),
            kl_mark + fmt(r["kl_per_token"]),
            kl_mark + fmt(r["kl_per_completion"]),
            fmt(r["nll_base_per_token"]),
            fmt(r["train_reward_calls"]),
            fmt(r["eval_reward_calls"]),
            fmt(r["train_s"], 1),
        ]
        lines.append(
            " ".join(
                f"{v:>{w}}" if i else f"{v:<{w}}"
                for i, (v, (_, w)) in enumerate(zip(values, cols, strict=True))
            )
        )
        if r.get("path"):
            lines.append(format_path(r["path"]))
        if r.get("bin") is not None:
            b = r["bin"]
            low = "-inf" if b["low"] is None else f"{b['low']:.3f}"
            high = "inf" if b["high"] is None else f"{b['high']:.3f}"
            lines.append(
                f"  ^ reward bin {b['bin']}/{b['bins']} [{low}, {high})"
                + (
                    " above the rewards the bins were cut from: the top bin, not the target"
                    if b["above_range"]
                    else ""
                )
            )
        if r.get("recalibration") is not None:
            lines.append(format_recalibration(r["recalibration"]))
        ref = refs.get(round(r["target"], 6)) if r.get("target") is not None else None
        if ref is not None:
            lines.append(
                f"  ^ base |r-{r['target']:.3f}|<={ref['half_width']:g}: n={ref['count']} "
                f"({100 * ref['fraction']:.1f}% of base samples), "
                f"r_mean {fmt(ref['reward_mean'])}, "
                f"NLL/tok {fmt(ref['nll_per_token'])}, dist2 {fmt(ref['distinct_2'])} "
                f"(on {ref['distinct_2_samples']}; online-dt on as many: "
                f"{fmt(r.get('distinct_2_at_bin_size'))}), ideal KL/cmp >= "
                f"{fmt(ref['kl_ideal_lower_bound'])} (/tok >= "
                f"{fmt(ref['kl_ideal_lower_bound_per_token'])})"
            )
    return "\n".join(lines)


def plot(rows: Sequence[dict[str, Any]], reference: dict[str, Any] | None, path: Path) -> None:
    """``peers.png``, mean reward on the held-out prompts against: KL per token (online-dt as a
    curve over targets, peers as points, and the base's ideal-KL lower bound per reward bin),
    the NLL under the base per token (with the base's own samples binned by reward), and word
    distinct-2 (each method on its full evaluation set; beside each online-dt target, the base
    bin's distinct-2 and online-dt's on an equal number of samples). A peer with a training path
    (``--path-evals``) has it drawn on every panel as a thin line in its colour, ending at its
    final point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    panels = [
        ("kl_per_token", "KL(policy || base), nats per token (k1; best-of-n: bound)"),
        ("nll_base_per_token", "NLL of the samples under the base model, nats per token"),
        ("distinct_2", "word distinct-2"),
    ]
    odt = [r for r in rows if is_odt(r["method"])]
    odt_names = list(dict.fromkeys(r["method"] for r in odt))
    peers = [r for r in rows if not is_odt(r["method"])]
    colors = {name: f"C{9 - i}" if i else "C0" for i, name in enumerate(odt_names)}
    width = reference["half_width"] if reference is not None else None
    for ax, (key, label) in zip(axes, panels, strict=True):
        if reference is not None and key != "distinct_2":
            grid = [b for b in reference["grid"] if b["count"] >= 5]
            ref_key = "kl_ideal_lower_bound_per_token" if key == "kl_per_token" else "nll_per_token"
            ref_label = (
                "base, ideal KL >= -log P(bin) / length"
                if key == "kl_per_token"
                else "base samples by reward bin"
            )
            ax.plot(
                [b[ref_key] for b in grid],
                [b["reward_mean"] for b in grid],
                ":",
                color="grey",
                marker=".",
                label=f"{ref_label} (bins +-{width:g}, >= 5 samples)",
            )
        if reference is not None and key == "distinct_2":
            bins = [b for b in reference["at_targets"] if b["count"] >= 5]
            ax.plot(
                [b["distinct_2"] for b in bins],
                [b["reward_mean"] for b in bins],
                "x",
                color="grey",
                ms=8,
                label=f"base samples within +-{width:g} of each target",
            )
            for name in odt_names:
                matched = [
                    r
                    for r in odt
                    if r["method"] == name and r.get("distinct_2_at_bin_size_samples", 0) >= 5
                ]
                ax.plot(
                    [r["distinct_2_at_bin_size"] for r in matched],
                    [r["reward_mean"] for r in matched],
                    "o",
                    mfc="none",
                    color=colors[name],
                    label=f"{name} on as many samples as that bin",
                )
        for name in odt_names:
            mine = [r for r in odt if r["method"] == name]
            ax.plot(
                [r[key] for r in mine],
                [r["reward_mean"] for r in mine],
                "-o",
                color=colors[name],
                label=f"{name} (one point per target)",
            )
            for r in mine:
                ax.annotate(
                    f"t={r['target']:.2f}",
                    (r[key], r["reward_mean"]),
                    fontsize=7,
                    textcoords="offset points",
                    xytext=(4, -9),
                )
        markers = iter("sD^v<>ph*x")
        for i, r in enumerate(peers):
            marker = next(markers)
            ax.plot(
                [r[key]],
                [r["reward_mean"]],
                marker,
                color=f"C{i + 1}",
                ms=8,
                label=r["method"],
            )
            if r.get("path"):
                ax.plot(
                    [p[key] for p in r["path"]],
                    [p["reward_mean"] for p in r["path"]],
                    "-",
                    marker=marker,
                    color=f"C{i + 1}",
                    lw=0.8,
                    ms=3,
                    alpha=0.8,
                    label=f"{r['method']} during training (then its end point)",
                )
        ax.set_xlabel(label)
        ax.set_ylabel("mean reward on held-out prompts")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle("online-dt vs peers at equal reward-model calls (held-out prompts)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def to_json(value: Any) -> Any:
    """``value`` with non-finite floats as ``None`` (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def goals_text(report: dict[str, Any], peer: str = "grpo-b0.04") -> str:
    """``bench/goals.py``'s verdicts for each online-dt method of ``report`` against ``peer``'s
    row; ``""`` when the report lacks either."""
    from bench.goals import ODT_METHODS, format_verdict, score

    rows = report["rows"]
    peers = [r for r in rows if r["method"] == peer]
    methods = [m for m in ODT_METHODS if any(r["method"] == m for r in rows)]
    if not peers or not methods:
        return ""
    return "\n".join(format_verdict(score(report, peers[0], m), peer) for m in methods)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status: 0, or 1 when a method's train reward calls
    differ from the budget or any were on a held-out prompt (both reported in the JSON)."""
    from online_dt.util.atomic import atomic_write_text

    args = build_parser().parse_args(argv)
    wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(wanted) - set(METHODS))
    if unknown:
        raise SystemExit(f"error: unknown methods {unknown}; choose from {', '.join(METHODS)}")
    if args.path_evals < 0:
        raise SystemExit(f"error: --path-evals must be >= 0, got {args.path_evals}")
    if args.odt_recalibrate < 0:
        raise SystemExit(f"error: --odt-recalibrate must be >= 0, got {args.odt_recalibrate}")
    betas = [float(b) for b in args.grpo_betas.split(",") if b.strip()]
    modes = odt_modes(args)
    out = Path(args.out or f"runs/peers-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    budget = plan_budget(args, wanted)
    setup = make_setup(args, budget)
    print(
        f"[peers] budget {setup.budget} reward calls per method; {len(setup.train_prompts)} train"
        f" / {len(setup.heldout_prompts)} held-out prompts; eval {args.eval_samples} samples per "
        f"held-out prompt; work dir {setup.work}",
        file=sys.stderr,
    )
    if "online-dt" in wanted:  # a config online-dt refuses stops the bench before any method runs
        for mode in modes:
            check_odt_config(setup, mode)
    rows: list[dict[str, Any]] = []

    def step(label: str, fn: Any, *fn_args: Any) -> None:
        t = time.perf_counter()
        print(f"[peers] {label} ...", file=sys.stderr, flush=True)
        rows.extend(fn(setup, *fn_args))
        print(f"[peers] {label} done in {time.perf_counter() - t:.1f} s", file=sys.stderr)

    step("base", run_base)
    base_mean = rows[0]["reward_mean"]
    if "best-of-n" in wanted:
        step(f"best-of-{args.bon_n}", run_best_of_n)
    if "raft" in wanted:
        step("raft", run_raft)
    if "grpo" in wanted:
        for beta in betas:
            step(f"grpo beta={beta:g}", run_grpo, beta)
    if "online-dt" in wanted:
        for mode in modes:
            step(odt_method(mode), run_online_dt, base_mean, mode)
    targets = list(dict.fromkeys(r["target"] for r in rows if is_odt(r["method"])))
    reference = None
    if args.reference_samples > 0:
        t = time.perf_counter()
        print("[peers] binned-base reference ...", file=sys.stderr, flush=True)
        reference = base_reference(setup, targets)
        match_distinct_2(rows, reference, setup.seed(SEED_REFERENCE, 2))
        print(f"[peers] reference done in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    for row in rows:
        row.pop(TEXTS_KEY, None)

    mismatched = [
        r["method"]
        for r in rows
        if r["method"] not in ("base",)
        and not r["method"].startswith("best-of")
        and r["train_reward_calls"] != setup.budget
    ]
    table = format_table(rows, reference)
    report = {
        "setup": {
            "config": args.config,
            "base_model": setup.base_path,
            "budget": setup.budget,
            "train_prompts": len(setup.train_prompts),
            "heldout_prompts": len(setup.heldout_prompts),
            "eval_samples_per_prompt": args.eval_samples,
            "sampling": setup.sampling.model_dump(mode="json"),
            "reward_model": setup.cfg.reward_model.model_dump(mode="json"),
            "seed": args.seed,
            "argv": list(argv) if argv is not None else sys.argv[1:],
            "wall_s": time.perf_counter() - started,
            "reward_calls_by_phase": dict(setup.reward.counts),
            "train_calls_differ_from_budget": mismatched,
            "heldout_prompt_calls_in_training": setup.reward.heldout_in_training(),
        },
        "rows": rows,
        "reference": reference,
    }
    # written whole or not at all: bench/seeds.py takes a run whose peers.json exists as done
    atomic_write_text(out / "peers.json", json.dumps(to_json(report), indent=2))
    plot(rows, reference, out / "peers.png")
    print(table)
    goals = goals_text(report)
    if goals:
        print(f"\nissue 12's goals (bench/goals.py):\n{goals}")
    print(
        f"\nbudget {setup.budget} reward calls; wall {report['setup']['wall_s']:.0f} s; "
        f"wrote {out / 'peers.json'} and {out / 'peers.png'}"
    )
    if args.keep_work:
        print(f"kept the work directory {setup.work}")
    else:
        shutil.rmtree(setup.work, ignore_errors=True)
    if mismatched:
        print(f"WARNING: train reward calls differ from the budget for {mismatched}")
    leaks = {k: v for k, v in setup.reward.heldout_in_training().items() if v}
    if leaks:
        print(f"WARNING: reward calls on held-out prompts during training: {leaks}")
    return 1 if mismatched or leaks else 0


if __name__ == "__main__":
    sys.exit(main())

"""The offline decision-transformer demo: sample, score, train conditioned, evaluate.

1. Sample completions of the prompts from the *base* model (no conditioning).
2. Score them with the reward model.
3. Train the conditioned policy on (prompt, completion, achieved reward) records.
4. For a low, a middle and a high target, sample conditioned completions, score them and write
   a calibration table (target vs achieved reward, distinct-n) as JSON
   (:func:`online_dt.eval.calibration.evaluate_calibration`, as ``online-dt eval`` does).

This is the warm-start phase of the online loop run on its own, and the quickest way to see
that conditioning works: the achieved reward should rise with the target.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from online_dt.config import OfflineRunConfig, config_yaml
from online_dt.embedded.base_model import resolve_base_model
from online_dt.eval.calibration import evaluate_calibration
from online_dt.launch.prompts import load_prompts
from online_dt.launch.rundir import CHECKPOINT_POLICY_DIR, CONFIG_FILE, EVAL_TABLE_FILE
from online_dt.policy.generation import sample_unconditioned
from online_dt.policy.policy import RewardConditionedPolicy
from online_dt.rewards import load_reward_model, score_checked
from online_dt.rollout.hf_sampler import HFSampler
from online_dt.rollout.sampler import SamplingParams
from online_dt.samples import Sample
from online_dt.training.trainer import ConditionedTrainer
from online_dt.util.atomic import atomic_write_dir, atomic_write_json, atomic_write_text
from online_dt.util.metrics import reward_summary
from online_dt.util.seeds import derived_seed

EVAL_SEED_STREAM = 1
"""Seed key of the calibration samples (the base samples use ``offline.seed`` itself)."""

log = logging.getLogger(__name__)


def collect_base_samples(
    policy: RewardConditionedPolicy,
    prompts: Sequence[str],
    samples_per_prompt: int,
    cfg: OfflineRunConfig,
    seed: int,
) -> tuple[list[str], list[str], list[int]]:
    """Sample ``samples_per_prompt`` completions per prompt from the policy's base model
    (called before any conditioned training). Returns (prompts, completions, sampled token
    counts, EOS included where a completion ended), aligned."""
    repeated = [p for p in prompts for _ in range(samples_per_prompt)]
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    sampled = sample_unconditioned(
        policy.model,
        policy.encode(repeated),
        max_new_tokens=cfg.sampling.max_new_tokens,
        eos_token_id=policy.eos_token_id,
        pad_token_id=policy.pad_token_id,
        temperature=cfg.sampling.temperature,
        top_p=cfg.sampling.top_p,
        generator=generator,
        banned_token_ids=policy.reward_token_ids,
        batch_size=cfg.sampling.batch_size,
    )
    completions = policy.tokenizer.batch_decode(sampled.token_ids, skip_special_tokens=True)
    return repeated, completions, [len(ids) for ids in sampled.token_ids]


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_offline(cfg: OfflineRunConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run the whole offline demo and write ``policy/`` and ``calibration.json`` to the run dir.

    Returns:
        The report written to ``calibration.json``: base-sample reward summary, training loss,
        the calibration rows, and timings in seconds.

    Raises:
        ConfigError-style errors from loading (missing model, bad reward class, no prompts)
        before any training starts.
    """
    seed_everything(cfg.offline.seed)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    prompts = load_prompts(cfg.prompts)
    reward_model = load_reward_model(cfg.reward_model)
    base = resolve_base_model(cfg.model, cfg.bootstrap, progress)
    policy = RewardConditionedPolicy.fresh(cfg, base)
    timings["load_s"] = time.perf_counter() - t0
    log.info(
        "base model %s, %d prompts, %s conditioning", base, len(prompts), cfg.conditioning.mode
    )

    t0 = time.perf_counter()
    data_prompts, completions, lengths = collect_base_samples(
        policy, prompts, cfg.offline.samples_per_prompt, cfg, cfg.offline.seed
    )
    timings["sample_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rewards = score_checked(reward_model, data_prompts, completions)
    timings["score_s"] = time.perf_counter() - t0
    base_summary = reward_summary(rewards)
    log.info(
        "scored %d base samples: reward mean %.3f std %.3f",
        len(rewards),
        base_summary["mean"],
        base_summary["std"],
    )

    t0 = time.perf_counter()
    samples = [
        Sample(p, c, r, completion_tokens=n)
        for p, c, r, n in zip(data_prompts, completions, rewards, lengths, strict=True)
    ]
    policy.fit_reward_statistics(rewards)
    trainer = ConditionedTrainer(
        policy,
        cfg.training,
        bf16_autocast=cfg.model.bf16_autocast,
        max_new_tokens=cfg.sampling.max_new_tokens,  # cut completions get no EOS label
    )
    history = trainer.fit(samples, cfg.training.steps, progress=progress, desc="offline training")
    timings["train_s"] = time.perf_counter() - t0

    targets = cfg.offline.eval_targets or [float(q) for q in np.quantile(rewards, [0.1, 0.5, 0.9])]
    t0 = time.perf_counter()
    rows = evaluate_calibration(
        HFSampler(policy, batch_size=cfg.sampling.batch_size),
        lambda p, c: score_checked(reward_model, p, c),
        prompts,
        [(t, False) for t in targets],  # in the given order; nothing is extrapolated
        cfg.offline.eval_samples_per_target,
        lambda k: SamplingParams.from_config(
            cfg.sampling, n=1, seed=derived_seed(cfg.offline.seed, EVAL_SEED_STREAM, k)
        ),
        describe=policy.conditioner.describe_target,
    )
    timings["eval_s"] = time.perf_counter() - t0

    run_dir = Path(cfg.offline.run_dir)
    atomic_write_dir(run_dir / CHECKPOINT_POLICY_DIR, policy.save_pretrained)
    atomic_write_text(run_dir / CONFIG_FILE, config_yaml(cfg))
    tail = history[-min(20, len(history)) :]
    report = {
        "base_model": base,
        "conditioning": cfg.conditioning.mode,
        "base_samples": {"count": len(rewards), **base_summary},
        "train": {
            "steps": len(history),
            "final_loss": float(np.mean([h.loss for h in tail])) if tail else None,
        },
        "calibration": rows,
        "timings_s": timings,
    }
    atomic_write_json(run_dir / EVAL_TABLE_FILE, report)
    return report

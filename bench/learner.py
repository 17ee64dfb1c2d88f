"""Learner benchmark: the conditioned training step against plain HF causal-LM training.

Both sides train the same base model (a fresh copy each) with fused AdamW (transformers'
default), the config's learning rate, weight decay and gradient clipping, on the same batches:
prompts from the config's prompt set, completions sampled from the base model once at the
start, ``training.batch_size`` rows a step, on the same number of torch threads.

* ``conditioned``: :meth:`online_dt.training.trainer.ConditionedTrainer.step` on
  :class:`~online_dt.samples.Sample` rows, as the learner runs it in the online loop (the batch
  is laid out from the samples' text inside the step: tokenisation, the reward slot, padding).
* ``plain``: what a user of ``transformers`` writes for causal-LM fine-tuning on the same text,
  tokenised once up front (as ``datasets.map`` would): right-padded ``prompt + completion + EOS``
  with labels ``-100`` on the prompt and padding, ``model(input_ids, attention_mask, labels)``,
  ``loss.backward()``, clipping, ``optimizer.step()``.

The two sides alternate step by step (``--rounds`` x ``--steps`` batches, each trained by
both, in turns that swap which side goes first) so that a noisy machine slows both alike;
per-step times are taken with ``time.perf_counter`` and the median is
reported. Tokens are labelled tokens (completion tokens and EOS), the same on both sides.

Usage:
    .venv/bin/python bench/learner.py [--config configs/plain.yaml] [--threads 2]
        [--rounds 5] [--steps 8] [--set key=value ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", default="configs/plain.yaml", help="run config (YAML)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, as `online-dt run --set`",
    )
    p.add_argument("--threads", type=int, default=2, help="torch threads for both sides")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    p.add_argument("--steps", type=int, default=8, help="optimizer steps per side per round")
    p.add_argument("--samples", type=int, default=512, help="completions to draw batches from")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the batches")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return p.parse_args(argv)


def make_samples(cfg: Any, base_path: str, count: int, seed: int) -> list[Any]:
    """``count`` (prompt, completion, reward) samples: base-model completions of the config's
    prompts at its sampling settings; rewards uniform in [-1, 1] (the step's cost does not
    depend on them)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from online_dt.launch.prompts import load_prompts
    from online_dt.policy.generation import sample_unconditioned
    from online_dt.samples import Sample

    prompts = load_prompts(cfg.prompts)
    rng = torch.Generator().manual_seed(seed)
    chosen = [prompts[int(i)] for i in torch.randint(len(prompts), (count,), generator=rng)]
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    model = AutoModelForCausalLM.from_pretrained(base_path).eval()
    eos = int(tokenizer.eos_token_id)
    sampled = sample_unconditioned(
        model,
        [tokenizer.encode(p, add_special_tokens=False) for p in chosen],
        max_new_tokens=cfg.sampling.max_new_tokens,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
        temperature=cfg.sampling.temperature,
        top_p=cfg.sampling.top_p,
        generator=torch.Generator().manual_seed(seed),
    )
    rewards = (torch.rand(count, generator=rng) * 2 - 1).tolist()
    return [
        Sample(p, tokenizer.decode(ids, skip_special_tokens=True), r)
        for p, ids, r in zip(chosen, sampled.token_ids, rewards, strict=True)
    ]


class PlainStep:
    """Plain HF causal-LM training of the base model on pre-tokenised rows."""

    def __init__(self, cfg: Any, base_path: str, samples: Sequence[Any]) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from online_dt.training.optim import adamw

        tokenizer = AutoTokenizer.from_pretrained(base_path)
        self.model = AutoModelForCausalLM.from_pretrained(
            base_path, attn_implementation=cfg.model.attn_implementation
        ).train()
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        eos = int(tokenizer.eos_token_id)
        self.rows = [
            (
                tokenizer.encode(s.prompt, add_special_tokens=False),
                [*tokenizer.encode(s.completion, add_special_tokens=False), eos],
            )
            for s in samples
        ]
        t = cfg.training
        self.clip = t.grad_clip
        # fused, as transformers' Trainer defaults to with torch >= 2.8
        self.optimizer = adamw(
            self.model.parameters(),
            self.model.device,
            lr=t.lr,
            betas=t.betas,
            weight_decay=t.weight_decay,
        )

    def collate(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` of the rows."""
        rows = [self.rows[i] for i in indices]
        width = max(len(p) + len(c) for p, c in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, (p, c) in enumerate(rows):
            ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            mask[i, : len(p) + len(c)] = 1
            labels[i, len(p) : len(p) + len(c)] = torch.tensor(c)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def __call__(self, indices: Sequence[int]) -> int:
        """One optimizer step; returns the labelled tokens."""
        batch = self.collate(indices)
        loss = self.model(**batch).loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        return int((batch["labels"] != -100).sum())


def timed_steps(step: Callable[[Sequence[int]], int], batches: Sequence[Sequence[int]]) -> tuple:
    """Per-step seconds and labelled tokens of running ``step`` on each batch."""
    seconds, tokens = [], 0
    for batch in batches:
        start = time.perf_counter()
        tokens += step(batch)
        seconds.append(time.perf_counter() - start)
    return seconds, tokens


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its table; returns the exit code."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from online_dt.arguments import parse_overrides
    from online_dt.config import OnlineRunConfig, load_config
    from online_dt.embedded.base_model import resolve_base_model
    from online_dt.policy.policy import RewardConditionedPolicy
    from online_dt.training.trainer import ConditionedTrainer

    cfg = load_config(args.config, OnlineRunConfig, parse_overrides(args.set))
    base_path = resolve_base_model(cfg.model, cfg.bootstrap, progress=True)
    samples = make_samples(cfg, base_path, args.samples, args.seed)
    policy = RewardConditionedPolicy.fresh(cfg, base_path)
    trainer = ConditionedTrainer(policy, cfg.training, bf16_autocast=False)
    plain = PlainStep(cfg, base_path, samples)

    def conditioned(indices: Sequence[int]) -> int:
        return trainer.step([samples[i] for i in indices]).tokens

    rng = torch.Generator().manual_seed(args.seed)
    size = cfg.training.batch_size
    times: dict[str, list[float]] = {"conditioned": [], "plain": []}
    tokens = {"conditioned": 0, "plain": 0}
    # one warm-up step each (allocator, lazy inits), not timed
    warm = torch.randperm(len(samples), generator=rng)[:size].tolist()
    conditioned(warm), plain(warm)
    for _ in range(args.rounds):
        batches = [
            torch.randperm(len(samples), generator=rng)[:size].tolist() for _ in range(args.steps)
        ]
        for i, batch in enumerate(batches):
            sides = [("conditioned", conditioned), ("plain", plain)]
            for name, step in sides if i % 2 == 0 else sides[::-1]:
                seconds, count = timed_steps(step, [batch])
                times[name] += seconds
                tokens[name] += count
    result: dict[str, Any] = {"threads": args.threads, "batch_size": size}
    for name in times:
        median = statistics.median(times[name])
        per_step_tokens = tokens[name] / len(times[name])
        result[name] = {
            "steps": len(times[name]),
            "median_step_s": round(median, 4),
            "tokens_per_step": round(per_step_tokens, 1),
            "tokens_per_s": round(per_step_tokens / median, 1),
        }
    ratio = result["conditioned"]["tokens_per_s"] / result["plain"]["tokens_per_s"]
    result["conditioned_over_plain"] = round(ratio, 3)
    print(f"\nlearner step, batch {size}, {args.threads} threads, median of alternating rounds")
    print(f"{'side':<12} {'steps':>5} {'step ms':>8} {'tokens/step':>11} {'tokens/s':>9}")
    for name in times:
        r = result[name]
        print(
            f"{name:<12} {r['steps']:>5} {1000 * r['median_step_s']:>8.1f} "
            f"{r['tokens_per_step']:>11.1f} {r['tokens_per_s']:>9.0f}"
        )
    print(f"conditioned / plain tokens/s: {ratio:.3f} (goal >= 0.95)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

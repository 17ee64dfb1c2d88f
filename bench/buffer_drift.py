"""Buffer drift: how far the replay buffer's samples at a given reward are from the base model.

Hindsight relabeling trains the policy on ``p_buffer(completion | prompt, reward)``. That is the
base model's ``p_base(completion | prompt, reward)`` only if the samples came from the base.
They come from the policy versions of the run, each conditioned on its own target, so the text
that earned a reward late in a run can be further from the base than the text that earned the
same reward early. This script reads a run directory's replay buffer and prints, per reward bin
and per range of iterations, the NLL of those samples under the base model (nats per token,
teacher forced, completion tokens and EOS where the sample ended with it) and, when the buffer
has them, the mean log importance weight ``log p_base - log pi`` of the samples.

Usage:
    .venv/bin/python bench/buffer_drift.py RUN_DIR [--bins -0.8 0.0 0.8] [--half-width 0.1]
        [--chunks 3] [--max-per-cell 200]

Prints one JSON object per line: bin, iterations, count (samples in the cell), scored (how
many of them, at most ``--max-per-cell``, the NLL is computed on), NLL per token, and the mean
log importance weight over the whole cell. It reads every persisted sample (evicted ones
included), not only those the buffer holds. The shards store text, not token ids: each
completion is re-tokenised, with EOS appended when the sample was longer than its text's
tokens (it ended at EOS).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="an online run directory (with buffer/)")
    p.add_argument("--bins", type=float, nargs="+", default=[-0.8, 0.0, 0.8], help="centres")
    p.add_argument("--half-width", type=float, default=0.1, help="half a bin's width")
    p.add_argument("--chunks", type=int, default=3, help="ranges of iterations, equal length")
    p.add_argument("--max-per-cell", type=int, default=200, help="samples scored per cell")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from online_dt.config import OnlineRunConfig
    from online_dt.config.loading import load_config
    from online_dt.embedded.base_model import resolve_base_model
    from online_dt.eval.base_samples import nll_per_token, teacher_forced_logprobs
    from online_dt.launch.rundir import RunDir
    from online_dt.policy.loading import load_model_and_tokenizer
    from online_dt.replay.export import export_dataset

    torch.manual_seed(0)
    run = RunDir(args.run_dir)
    cfg = load_config(args.run_dir / "config.yaml", OnlineRunConfig)
    model, tok = load_model_and_tokenizer(
        resolve_base_model(cfg.model, cfg.bootstrap, progress=False),
        cfg.model.attn_implementation,
    )
    model.eval()
    data = export_dataset(run.buffer_dir).to_pandas()
    data = data[data["iteration"] >= 0]  # warm-start samples (-1) are the base's own
    last = int(data["iteration"].max())
    step = (last + 1) / args.chunks
    for center in args.bins:
        for c in range(args.chunks):
            lo, hi = round(c * step), round((c + 1) * step) - 1
            cell = data[
                (data["achieved_reward"] - center).abs().le(args.half_width)
                & data["iteration"].between(lo, hi)
            ]
            out = {"bin": center, "iterations": [lo, hi], "count": len(cell)}
            weights = cell["log_importance_weight"].dropna()
            if len(weights):
                out["mean_log_importance_weight"] = round(float(weights.mean()), 4)
            if len(cell):
                cell = cell.sample(min(len(cell), args.max_per_cell), random_state=0)
                out["scored"] = len(cell)
                prompts = [tok(p, add_special_tokens=False)["input_ids"] for p in cell["prompt"]]
                completions = []
                for text, n in zip(cell["completion"], cell["completion_tokens"], strict=True):
                    ids = tok(text, add_special_tokens=False)["input_ids"]
                    completions.append([*ids, tok.eos_token_id] if n > len(ids) else ids)
                keep = [
                    i for i, (p, c) in enumerate(zip(prompts, completions, strict=True)) if p and c
                ]
                lps = teacher_forced_logprobs(
                    model,
                    [prompts[i] for i in keep],
                    [completions[i] for i in keep],
                    pad_id=tok.pad_token_id or 0,
                )
                out["nll_base_per_token"] = round(nll_per_token(lps), 4)
            print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

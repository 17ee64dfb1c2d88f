"""Sampler benchmark: vLLM with conditioning vs. its plain-prompt ceiling vs. the HF reference.

Prints, from one run with the same prompts and sampling settings:
  * vLLM tokens/s with reward conditioning (scalar: prompt_embeds; token: reward token ids),
  * vLLM tokens/s on plain token-id prompts without conditioning, same engine and weights
    (the ceiling conditioning is measured against),
  * HF reference sampler tokens/s,
  * the ratios between them, and weight-sync milliseconds (publish + in-place reload) for each
    backend of ``--weight-sync``: ``checkpoint`` (write ``weights/vN``, the engine reloads it)
    and ``ray`` (capture the state in memory and put it into a local Ray object store, get it
    back and copy it into an engine running in this process; ``--no-object-store``: hand the
    state over directly, as ``online-dt run --local`` does). For ``ray`` it also prints the
    in-process engine's conditioned tokens/s (``vllm_conditioned_in_process``). The ray part
    runs on the torch threads less one (``in_process_threads``), as vLLM gives its
    child-process CPU worker the cores less one and keeps one for its scheduler.

Usage (CPU, embedded model; builds it first if needed):
    .venv/bin/python bench/sampler.py [--mode scalar|token] [--prompts 256] [--max-new-tokens 24]
        [--weight-sync checkpoint,ray] [--no-object-store]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="embedded", help="base model (default: embedded)")
    parser.add_argument("--mode", choices=["scalar", "token"], default="scalar")
    parser.add_argument("--prompts", type=int, default=256, help="prompts per timed call")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per backend")
    parser.add_argument("--syncs", type=int, default=5, help="weight syncs to time")
    parser.add_argument(
        "--weight-sync",
        default="checkpoint,ray",
        help="weight-sync backends to time, comma-separated (checkpoint, ray)",
    )
    parser.add_argument(
        "--object-store",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ray backend: pass each state through a local Ray object store (ray.put/ray.get)",
    )
    args = parser.parse_args()
    backends = [b.strip() for b in args.weight_sync.split(",") if b.strip()]
    if not set(backends) <= {"checkpoint", "ray"}:
        parser.error(f"--weight-sync: unknown backend in {args.weight_sync!r}")

    import torch

    from online_dt.config import BootstrapConfig, ConditioningConfig, SamplerConfig, TrainingConfig
    from online_dt.embedded.corpus import embedded_prompts
    from online_dt.policy.policy import RewardConditionedPolicy
    from online_dt.rollout.hf_sampler import HFSampler
    from online_dt.rollout.sampler import SamplingParams
    from online_dt.rollout.vllm_sampler import VLLMSampler
    from online_dt.rollout.weight_sync import CheckpointPublisher, MemoryPublisher, PolicySkeleton
    from online_dt.samples import Sample
    from online_dt.training.trainer import ConditionedTrainer

    if "ray" in backends and args.object_store:
        # started first, so that its start-up is over before anything is timed
        import ray

        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)

    base = args.model
    if base == "embedded":
        from online_dt.embedded.bootstrap import ensure_embedded_model

        base = str(ensure_embedded_model(BootstrapConfig()))
    prompts = [embedded_prompts()[i % len(embedded_prompts())] for i in range(args.prompts)]
    targets = [(-1.0 + 2.0 * i / max(1, args.prompts - 1)) for i in range(args.prompts)]
    params = SamplingParams(n=1, temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)
    cond = ConditioningConfig(mode=args.mode, bin_method="fixed")
    policy = RewardConditionedPolicy.from_base(base, cond).eval()
    work = Path(tempfile.mkdtemp(prefix="odt-bench-"))
    publisher = CheckpointPublisher(work / "weights")
    first = publisher.publish(policy, 0)
    sampler = VLLMSampler(first.path, SamplerConfig(), policy_version=0)

    def timed(fn) -> tuple[float, int]:
        start = time.perf_counter()
        tokens = fn()
        return time.perf_counter() - start, tokens

    def vllm_conditioned() -> int:
        return sum(len(r.token_ids) for r in sampler.generate(prompts, targets, params))

    plain_inputs = [{"prompt_token_ids": ids} for ids in sampler.prompts.encode(prompts)]

    def vllm_plain() -> int:
        from vllm import SamplingParams as VP

        sp = [VP(max_tokens=args.max_new_tokens, seed=i, logprobs=0) for i in range(len(prompts))]
        outs = sampler.llm.generate(plain_inputs, sp, use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in outs)

    hf = HFSampler(policy, batch_size=256)

    def hf_conditioned() -> int:
        return sum(len(r.token_ids) for r in hf.generate(prompts, targets, params))

    results = {}
    for name, fn in [("vllm_conditioned", vllm_conditioned), ("vllm_plain", vllm_plain)]:
        fn()  # warm-up
        runs = [timed(fn) for _ in range(args.repeats)]
        results[name] = sum(t for _, t in runs) / sum(s for s, _ in runs)
    runs = [timed(hf_conditioned) for _ in range(max(1, args.repeats - 1))]
    results["hf_reference"] = sum(t for _, t in runs) / sum(s for s, _ in runs)

    trainer = ConditionedTrainer(policy, TrainingConfig(batch_size=8))
    records = [Sample(p, " it was great", t) for p, t in zip(prompts[:8], targets[:8], strict=True)]
    sync_ms: dict[str, dict[str, float]] = {}
    if "checkpoint" in backends:
        publish_ms, reload_ms = [], []
        for version in range(1, args.syncs + 1):
            trainer.step(records)
            start = time.perf_counter()
            update = publisher.publish(policy, version)
            publish_ms.append(1000 * (time.perf_counter() - start))
            start = time.perf_counter()
            sampler.load_weights(update)
            reload_ms.append(1000 * (time.perf_counter() - start))
        sync_ms["checkpoint"] = {
            "publish_median": median(publish_ms),
            "reload_median": median(reload_ms),
            "total_median": median(p + r for p, r in zip(publish_ms, reload_ms, strict=True)),
        }
    sampler.close()

    if "ray" in backends:
        put = ray.put if args.object_store else None
        memory = MemoryPublisher(put=put)

        def fetch(update):
            return replace(update, state=ray.get(update.state)) if put else update

        # vLLM's child-process CPU worker gets the cores less one, kept for its scheduler and
        # front end (OMPProcessManager): run the in-process engine on as many torch threads
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, threads - 1))
        in_process = VLLMSampler.from_skeleton(
            PolicySkeleton.of(policy), SamplerConfig(weight_sync="ray")
        )
        in_process.load_weights(fetch(memory.publish(policy, 0)))

        def vllm_in_process() -> int:
            return sum(len(r.token_ids) for r in in_process.generate(prompts, targets, params))

        vllm_in_process()  # warm-up
        runs = [timed(vllm_in_process) for _ in range(args.repeats)]
        results["vllm_conditioned_in_process"] = sum(t for _, t in runs) / sum(s for s, _ in runs)
        publish_ms, fetch_ms, load_ms = [], [], []
        for version in range(1, args.syncs + 1):
            trainer.step(records)
            start = time.perf_counter()
            update = memory.publish(policy, version)
            publish_ms.append(1000 * (time.perf_counter() - start))
            start = time.perf_counter()
            update = fetch(update)
            fetch_ms.append(1000 * (time.perf_counter() - start))
            start = time.perf_counter()
            in_process.load_weights(update)
            load_ms.append(1000 * (time.perf_counter() - start))
        in_process.close()
        torch.set_num_threads(threads)
        sync_ms["ray"] = {
            "object_store": bool(put),
            "state_mb": round(update.state.nbytes / 2**20, 2),
            "publish_median": median(publish_ms),
            "fetch_median": median(fetch_ms),
            "load_median": median(load_ms),
            "total_median": median(
                p + f + m for p, f, m in zip(publish_ms, fetch_ms, load_ms, strict=True)
            ),
        }
        if put:
            ray.shutdown()

    report = {
        "model": base,
        "mode": args.mode,
        "params": sum(p.numel() for p in policy.model.parameters()),
        "prompts": args.prompts,
        "max_new_tokens": args.max_new_tokens,
        "torch_threads": torch.get_num_threads(),
        "in_process_threads": max(1, torch.get_num_threads() - 1) if "ray" in backends else None,
        "tokens_per_s": {k: round(v, 1) for k, v in results.items()},
        "ratios": {
            "vllm_conditioned / vllm_plain": round(
                results["vllm_conditioned"] / results["vllm_plain"], 3
            ),
            "vllm_conditioned / hf_reference": round(
                results["vllm_conditioned"] / results["hf_reference"], 3
            ),
        },
        "weight_sync_ms": sync_ms,
    }
    if "vllm_conditioned_in_process" in results:
        report["ratios"]["vllm_conditioned_in_process / vllm_conditioned"] = round(
            results["vllm_conditioned_in_process"] / results["vllm_conditioned"], 3
        )
    report["tokens_per_s"] = {k: round(v, 1) for k, v in results.items()}
    print(json.dumps(report, indent=2))


def median(values) -> float:
    """Median of ``values``, rounded to 0.1 (milliseconds here)."""
    return round(statistics.median(list(values)), 1)


if __name__ == "__main__":
    sys.exit(main())

"""Sampler benchmark: vLLM with conditioning vs. its plain-prompt ceiling vs. the HF reference.

Prints, from one run with the same prompts and sampling settings:
  * vLLM tokens/s with reward conditioning (``VLLMSampler.generate``; scalar: prompt_embeds;
    token: reward token ids, the reward tokens banned from completions),
  * vLLM tokens/s on plain token-id prompts without conditioning (``vllm_plain``, the ceiling):
    the same weights and sampling settings on a second engine built with the sampler's own
    engine arguments less those conditioning needs (``engine_args_differ`` lists them and
    why; ``sampling_params_differ`` likewise), and plain prompts on the sampler's engine
    (``vllm_plain_same_engine``: what those engine arguments cost by themselves),
  * HF reference sampler tokens/s,
  * the ratios between them, and weight-sync milliseconds (publish + in-place reload) for each
    backend of ``--weight-sync``: ``checkpoint`` (write ``weights/vN``, the engine reloads it)
    and ``ray`` (capture the state in memory and put it into a local Ray object store, get it
    back and copy it into an engine running in this process; ``--no-object-store``: hand the
    state over directly, as ``online-dt run --local`` does). For ``ray`` it also prints the
    in-process engine's conditioned tokens/s (``vllm_conditioned_in_process``). The ray part
    runs on the torch threads less one (``in_process_threads``), as vLLM gives its
    child-process CPU worker the cores less one and keeps one for its scheduler.

The vLLM variants run in ``--rounds`` rounds, each variant once per round in an order that
rotates from round to round, so that a change in the machine's load falls on all of them.
``tokens_per_s`` gives each variant's median over the rounds; the ratio
``vllm_conditioned / vllm_plain`` is the median of the per-round ratios (``ratio_spread``:
their minimum and maximum). ``tokens_per_cpu_s`` divides the same tokens by the CPU seconds
this process and its children (the engines) spent, which a busy machine disturbs less than
wall time.

Usage (CPU, embedded model; builds it first if needed):
    .venv/bin/python bench/sampler.py [--mode scalar|token] [--prompts 256] [--max-new-tokens 24]
        [--rounds 7] [--weight-sync checkpoint,ray] [--no-object-store]
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
    parser.add_argument(
        "--rounds", type=int, default=7, help="rounds of timed vLLM calls (one per variant each)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed calls of the HF and in-process samplers"
    )
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
    from online_dt.rollout.vllm_sampler import (
        CONDITIONING_ENGINE_ARGS,
        VLLMSampler,
        vllm_sampling_params,
    )
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
    from vllm import LLM  # after the sampler, which sets vLLM's logging up before its import

    # the ceiling: an engine with the sampler's arguments less those conditioning needs
    plain_args = {k: v for k, v in sampler.engine_args.items() if k not in CONDITIONING_ENGINE_ARGS}
    plain_llm = LLM(model=str(first.path), **plain_args)
    engine_args_differ = {
        name: {
            "conditioned": sampler.engine_args.get(name),
            "plain": plain_args.get(name),
            "why": why,
        }
        for name, why in CONDITIONING_ENGINE_ARGS.items()
        if sampler.engine_args.get(name) not in (None, False)
    }
    banned = sampler.prompts.conditioner.reward_token_ids
    sampling_params_differ = (
        {"extra_args": f"token mode bans the {len(banned)} reward tokens (plain: no ban)"}
        if banned
        else {}
    )

    def timed(fn) -> tuple[float, float, int]:
        cpu = cpu_seconds()
        start = time.perf_counter()
        tokens = fn()
        return time.perf_counter() - start, cpu_seconds() - cpu, tokens

    def vllm_conditioned() -> int:
        return sum(len(r.token_ids) for r in sampler.generate(prompts, targets, params))

    plain_inputs = [{"prompt_token_ids": ids} for ids in sampler.prompts.encode(prompts)]
    # Conditioned and plain prompts stop at EOS after different numbers of tokens, and a call
    # takes as many engine steps as its longest completion, so tokens/s would also measure
    # what the text is. The seeded sampler draws the same completions every call: the plain
    # requests are pinned to their lengths (ignore EOS, stop at that many tokens), so both
    # sample the same tokens per request in the same number of steps.
    lengths = [len(r.token_ids) for r in sampler.generate(prompts, targets, params)]
    free_outs = plain_llm.generate(
        plain_inputs, vllm_sampling_params(params, len(prompts)), use_tqdm=False
    )
    free_tokens = sum(len(o.token_ids) for request in free_outs for o in request.outputs)

    def plain_params() -> list:
        """The sampler's parameters less the ban, built per call as the sampler builds its."""
        sampling = vllm_sampling_params(params, len(prompts))
        for sp, length in zip(sampling, lengths, strict=True):
            sp.max_tokens, sp.ignore_eos = length, True
        return sampling

    def plain_on(llm):
        def vllm_plain() -> int:
            outs = llm.generate(plain_inputs, plain_params(), use_tqdm=False)
            return sum(len(o.token_ids) for request in outs for o in request.outputs)

        return vllm_plain

    variants = {
        "vllm_conditioned": vllm_conditioned,
        "vllm_plain": plain_on(plain_llm),
        "vllm_plain_same_engine": plain_on(sampler.llm),
    }
    for fn in variants.values():
        fn()  # warm-up
    names = list(variants)
    runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            runs[name].append(timed(variants[name]))
    plain_llm.llm_engine.engine_core.shutdown()
    del plain_llm
    results = {name: statistics.median(t / s for s, _, t in rs) for name, rs in runs.items()}
    per_cpu = {name: statistics.median(t / c for _, c, t in rs) for name, rs in runs.items()}

    def round_ratios(a: str, b: str) -> list[float]:
        return [
            (ta / sa) / (tb / sb) for (sa, _, ta), (sb, _, tb) in zip(runs[a], runs[b], strict=True)
        ]

    cond_plain = round_ratios("vllm_conditioned", "vllm_plain")
    same_plain = round_ratios("vllm_plain_same_engine", "vllm_plain")

    hf = HFSampler(policy, batch_size=256)

    def hf_conditioned() -> int:
        return sum(len(r.token_ids) for r in hf.generate(prompts, targets, params))

    hf_runs = [timed(hf_conditioned) for _ in range(max(1, args.repeats - 1))]
    results["hf_reference"] = sum(t for _, _, t in hf_runs) / sum(s for s, _, _ in hf_runs)

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
        ip_runs = [timed(vllm_in_process) for _ in range(args.repeats)]
        results["vllm_conditioned_in_process"] = sum(t for _, _, t in ip_runs) / sum(
            s for s, _, _ in ip_runs
        )
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
        "rounds": args.rounds,
        "engine_args_differ": engine_args_differ,
        "sampling_params_differ": sampling_params_differ,
        "tokens_per_call": {
            "vllm_conditioned": sum(lengths),
            "vllm_plain (pinned to the conditioned lengths)": runs["vllm_plain"][0][2],
            "vllm_plain if left to stop at EOS": free_tokens,
        },
        "tokens_per_s": {k: round(v, 1) for k, v in results.items()},
        "tokens_per_cpu_s": {k: round(v, 1) for k, v in per_cpu.items()},
        "ratios": {
            "vllm_conditioned / vllm_plain": round(statistics.median(cond_plain), 3),
            "vllm_plain_same_engine / vllm_plain": round(statistics.median(same_plain), 3),
            "vllm_conditioned / hf_reference": round(
                results["vllm_conditioned"] / results["hf_reference"], 3
            ),
            "per_cpu_s vllm_conditioned / vllm_plain": round(
                per_cpu["vllm_conditioned"] / per_cpu["vllm_plain"], 3
            ),
        },
        "ratio_spread": {
            "vllm_conditioned / vllm_plain": [round(min(cond_plain), 3), round(max(cond_plain), 3)]
        },
        "weight_sync_ms": sync_ms,
    }
    if "vllm_conditioned_in_process" in results:
        report["ratios"]["vllm_conditioned_in_process / vllm_conditioned"] = round(
            results["vllm_conditioned_in_process"] / results["vllm_conditioned"], 3
        )
    report["tokens_per_s"] = {k: round(v, 1) for k, v in results.items()}
    print(json.dumps(report, indent=2))


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and all its live descendants (the engines)."""
    import psutil

    total = 0.0
    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def median(values) -> float:
    """Median of ``values``, rounded to 0.1 (milliseconds here)."""
    return round(statistics.median(list(values)), 1)


if __name__ == "__main__":
    sys.exit(main())

"""Soak: a few hundred iterations of a shrunken config on Ray, watched for drift.

Runs the online loop on Ray exactly as ``online-dt run`` does (``plan_run`` then
``actors.controller.run_on_ray``: learner, sampler and reward actors, a checkpoint after every
iteration), on ``configs/plain.yaml`` (no warm start) shrunk so that hundreds of iterations fit in
minutes (:data:`SHRUNK`; ``--set`` overrides it). While it runs, every ``--sample-every``
iterations it records, from the loop's metrics callback in the driver:

* the resident set size (RSS) of the driver and of each live actor (psutil on the actors'
  pids, found with Ray's state API);
* the CPU seconds each of them has used, and the machine's 1-minute load average;
* the number of replay-buffer shard files (``RUN_DIR/buffer``) and of all files in the run
  directory, and the run directory's size;

and every iteration's wall time comes from ``metrics.jsonl``. After the run:

* **resume** (``--resumes`` times): ``plan_run(None, RUN_DIR)`` and ``run_on_ray`` for one
  more iteration, as ``online-dt run --resume RUN_DIR`` does (the Ray instance is kept, as
  after a killed driver whose cluster survives); the seconds until the first record, and that
  minus the iteration's own wall time (the startup);
* **dashboard**: each ``/api/...`` endpoint (and the page) loaded through FastAPI's
  ``TestClient`` on a fresh app over the run directory (cold: nothing cached), then again (warm);
* **shards**: the replay buffer loaded as ``--resume`` loads it (``ReplayBuffer.load``) and the
  dashboard's ``/api/buffer`` cold, over the run's shards and over the same samples rewritten
  as one shard: what the number of shards costs.

It checks, and prints, two goals: the mean iteration wall time of the last ``--window``
iterations is within ``--tolerance`` (10 %) of the mean of the first ``--window`` iterations
after ``--warmup`` iterations of warm-up; and the RSS of each process (and of all together)
grows by less than ``--tolerance`` from the first sample after the warm-up to the last sample.
With fewer iterations than ``warmup + 2 * window`` the window (then the warm-up) shrinks to fit;
the JSON names the iterations used. Beside the wall time it prints each window's time by stage,
CPU seconds per iteration (driver and actors) and load average: on a shared machine the wall
time follows the neighbours' load, while the CPU time per iteration shows whether an iteration
does more work. Exit status 0 whether the goals hold or not (the JSON
says); 1 only if the run fails.

Usage:
    .venv/bin/python bench/soak.py [--iterations 300] [--config configs/plain.yaml]
        [--set key=value ...] [--sample-every 1] [--warmup 10] [--window 50]
        [--tolerance 0.1] [--resumes 2] [--json runs/soak.json] [--keep-run-dir]

Needs Ray and psutil (the ``cpu`` or ``gpu`` extra installs both).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/soak.py` from anywhere: import actors/ and online_dt/
    sys.path.insert(0, str(ROOT))

SHRUNK = [
    "online.prompts_per_iteration=4",
    "online.samples_per_prompt=2",
    "online.train_steps_per_iteration=1",
    "training.batch_size=8",
    "sampling.max_new_tokens=8",
    "sampler.backend=hf",
    # the default config writes 256 samples an iteration into 1024-sample shards (a new shard
    # every 4 iterations); at 8 samples an iteration, 32-sample shards keep that pace
    "buffer.shard_size=32",
]
"""Overrides applied to the config before ``--set``: 8 samples and 1 training step per
iteration, 8 new tokens, the HF sampler; the shard size keeps the default config's pace of
shards per iteration."""

ENDPOINTS = [
    "/",
    "/api/settings",
    "/api/status",
    "/api/config",
    "/api/metrics?since=-1",
    "/api/samples",
    "/api/buffer",
    "/api/buffer?iteration=0",
    "/api/eval",
    "/api/klplane",
]
"""The dashboard's GET routes timed after the run (``/api/eval/plot.png`` is 404 without an
evaluation and ``/login`` exists only with a token)."""

STAGES = ["rollout_s", "scoring_s", "training_s", "sync_s", "checkpoint_s", "other_s"]
"""The stages of an iteration's wall time in ``metrics.jsonl`` (they sum to ``wall_s``)."""

MIB = 1024 * 1024


# -- what is sampled during the run -----------------------------------------------------------


def actor_pids() -> dict[str, int]:
    """``{name: pid}`` of the live actors of the Ray instance this process joined, named by
    class (``LearnerActor``, ``SamplerActor-0``, ``RewardModelActor``; replicas of a class are
    numbered in pid order).

    Uses Ray's state API (``ray[default]``, which the ``cpu`` and ``gpu`` extras install).

    Raises:
        RuntimeError: Ray is not initialised.
        Exception: whatever the state API raises when it cannot answer.
    """
    import ray
    from ray.util.state import list_actors

    if not ray.is_initialized():
        raise RuntimeError("actor_pids needs ray.init() first")
    # this instance's address: with several Ray instances on the machine the API cannot guess
    address = ray.get_runtime_context().gcs_address
    alive = list_actors(address, filters=[("state", "=", "ALIVE")], limit=1000, timeout=30)
    found = [(actor.class_name, int(actor.pid)) for actor in alive]
    by_class: dict[str, list[int]] = {}
    for name, pid in found:
        by_class.setdefault(name, []).append(pid)
    out = {}
    for name, pids in sorted(by_class.items()):
        pids.sort()
        for i, pid in enumerate(pids):
            out[f"{name}-{i}" if len(pids) > 1 or name == "SamplerActor" else name] = pid
    return out


def process_usage(pids: dict[str, int]) -> dict[str, tuple[int, float] | None]:
    """``(RSS in bytes, CPU seconds used so far, user + system)`` of each named process;
    ``None`` for one that is gone."""
    import psutil

    out: dict[str, tuple[int, float] | None] = {}
    for name, pid in pids.items():
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                cpu = proc.cpu_times()
                out[name] = (proc.memory_info().rss, cpu.user + cpu.system)
        except psutil.Error:
            out[name] = None
    return out


def count_files(root: Path) -> tuple[int, int]:
    """Regular files under ``root`` (recursively, hidden ones included) and their total size
    in bytes; ``(0, 0)`` when ``root`` does not exist."""
    files = size = 0
    for folder, _, names in os.walk(root):
        for name in names:
            try:
                st = os.stat(os.path.join(folder, name), follow_symlinks=False)
            except OSError:  # replaced by a writer between the listing and the stat
                continue
            files += 1
            size += st.st_size
    return files, size


def count_shards(buffer_dir: Path) -> int:
    """Replay-buffer shard files in ``buffer_dir`` (temporary files not counted)."""
    from online_dt.replay.shards import list_shards

    return len(list_shards(buffer_dir)) if buffer_dir.is_dir() else 0


class Monitor:
    """The metrics callback that samples RSS and file counts every ``every`` iterations.

    Args:
        run_dir: the run directory.
        every: sample at iterations ``0, every, 2 * every, ...`` and at ``last``.
        last: the run's last iteration (always sampled).
    """

    def __init__(self, run_dir: Path, every: int, last: int) -> None:
        self.run_dir, self.every, self.last = run_dir, every, last
        self.samples: list[dict[str, Any]] = []
        self._pids: dict[str, int] = {}

    def __call__(self, record: dict[str, Any]) -> None:
        """Sample after iteration ``record["iteration"]`` if it is due (never raises: a failed
        sample is recorded with its error, so the soak goes on)."""
        it = int(record["iteration"])
        if it % self.every and it != self.last:
            return
        start = time.perf_counter()
        try:
            if not self._pids or any(v is None for v in process_usage(self._pids).values()):
                self._pids = actor_pids()  # first sample, or an actor was restarted
            pids = {"driver": os.getpid(), **self._pids}
            usage = process_usage(pids)
            files, size = count_files(self.run_dir)
            sample: dict[str, Any] = {
                "iteration": it,
                "pids": pids,
                "rss_mib": {k: None if v is None else v[0] / MIB for k, v in usage.items()},
                "cpu_s": {k: None if v is None else v[1] for k, v in usage.items()},
                "buffer_shards": count_shards(self.run_dir / "buffer"),
                "run_dir_files": files,
                "run_dir_mib": size / MIB,
                "load_avg_1m": os.getloadavg()[0],  # other work on the machine slows iterations
            }
        except Exception as e:  # a monitoring error must not end the soak
            sample = {"iteration": it, "error": f"{type(e).__name__}: {e}"}
            if not any("error" in s for s in self.samples):
                print(f"warning: iteration {it} not sampled: {sample['error']}", file=sys.stderr)
        sample["probe_s"] = time.perf_counter() - start
        self.samples.append(sample)


# -- the goals --------------------------------------------------------------------------------


def windows(n: int, warmup: int, window: int) -> tuple[int, int]:
    """The warm-up and window sizes used for ``n`` iterations: ``window`` shrinks to
    ``(n - warmup) // 2`` when the iterations do not hold ``warmup + 2 * window``; the warm-up
    shrinks to ``n // 4`` when even a window of 1 does not fit.

    Raises:
        ValueError: fewer than 2 iterations, or a negative warm-up or a window < 1.
    """
    if n < 2 or warmup < 0 or window < 1:
        raise ValueError(f"need n >= 2, warmup >= 0, window >= 1; got {n}, {warmup}, {window}")
    if n - warmup < 2:
        warmup = n // 4
    return warmup, max(1, min(window, (n - warmup) // 2))


def wall_drift(
    walls: Sequence[float], warmup: int, window: int, tolerance: float
) -> dict[str, Any]:
    """Compare the mean wall time of the first ``window`` iterations after ``warmup`` with
    that of the last ``window`` (indices into ``walls``, seconds; sizes from :func:`windows`).

    Returns:
        ``first`` and ``last`` (``[from, to]`` iteration indices, inclusive), their ``mean_s``
        and ``median_s``, ``drift`` (last mean / first mean - 1) and ``ok`` (``|drift| <=
        tolerance``).

    Raises:
        ValueError: see :func:`windows`; or a wall time that is not finite and positive.
    """
    if any(not (math.isfinite(w) and w > 0) for w in walls):
        raise ValueError("every wall time must be finite and > 0")
    warmup, window = windows(len(walls), warmup, window)
    first = list(walls[warmup : warmup + window])
    last = list(walls[len(walls) - window :])
    drift = statistics.fmean(last) / statistics.fmean(first) - 1.0
    return {
        "warmup_iterations": warmup,
        "window": window,
        "first": [warmup, warmup + window - 1],
        "last": [len(walls) - window, len(walls) - 1],
        "first_mean_s": statistics.fmean(first),
        "last_mean_s": statistics.fmean(last),
        "first_median_s": statistics.median(first),
        "last_median_s": statistics.median(last),
        "drift": drift,
        "tolerance": tolerance,
        "ok": abs(drift) <= tolerance,
    }


def rss_growth(samples: Sequence[dict[str, Any]], warmup: int, tolerance: float) -> dict[str, Any]:
    """RSS growth of each process, and of all together, from the first sample at an iteration
    ``>= warmup`` to the last sample (samples as :class:`Monitor` records them; failed ones
    are skipped). A process missing from either sample (restarted) is left out of the total.

    Returns:
        ``from_iteration``, ``to_iteration``, ``processes`` (``{name: {from_mib, to_mib,
        max_mib, growth, slope_kib_per_iteration}}``, the slope a least-squares line through
        every sample from the first to the last), ``total`` (``from_mib``, ``to_mib``,
        ``growth`` of the sum), ``max_growth`` over the processes and the total, and ``ok``
        (every growth ``< tolerance``).

    Raises:
        ValueError: no usable sample at or after the warm-up.
    """
    good = [s for s in samples if "rss_mib" in s]
    after = [s for s in good if s["iteration"] >= warmup]
    if not after:
        errors = [s["error"] for s in samples if "error" in s]
        raise ValueError(
            f"no RSS sample at or after iteration {warmup}"
            + (f"; the first error: {errors[0]}" if errors else "")
        )
    a, b = after[0], after[-1]
    processes: dict[str, dict[str, float]] = {}
    total_from = total_to = 0.0
    for name, start in a["rss_mib"].items():
        end = b["rss_mib"].get(name)
        if start is None or end is None:
            continue
        points = [(s["iteration"], s["rss_mib"][name]) for s in after if s["rss_mib"].get(name)]
        slope = (
            statistics.linear_regression(*zip(*points, strict=True)).slope
            if len({x for x, _ in points}) > 1
            else 0.0
        )
        processes[name] = {
            "from_mib": start,
            "to_mib": end,
            "max_mib": max(y for _, y in points),
            "growth": end / start - 1.0,
            "slope_kib_per_iteration": 1024 * slope,
        }
        total_from += start
        total_to += end
    if not processes:
        raise ValueError("no process has an RSS in both the first and the last sample")
    total = {"from_mib": total_from, "to_mib": total_to, "growth": total_to / total_from - 1.0}
    growths = [p["growth"] for p in processes.values()] + [total["growth"]]
    return {
        "from_iteration": a["iteration"],
        "to_iteration": b["iteration"],
        "processes": processes,
        "total": total,
        "max_growth": max(growths),
        "tolerance": tolerance,
        "ok": max(growths) < tolerance,
    }


def window_usage(samples: Sequence[dict[str, Any]], span: Sequence[int]) -> dict[str, Any]:
    """CPU seconds per iteration of the sampled processes together (the driver and the
    actors), and the mean 1-minute load average of the machine, over iterations ``span[0] ..
    span[1]``: from the last sample before ``span[0]`` (else the first in the span) to the last
    sample in the span. If the wall time grows while the CPU time per iteration does not, the
    iterations did not do more work: they waited for a CPU (other work on the machine).

    Returns:
        ``from_iteration`` and ``to_iteration`` (the samples used), ``cpu_s_per_iteration``
        (``None`` when the two are the same sample) and ``load_avg_1m``.

    Raises:
        ValueError: no usable sample in the span.
    """
    good = [s for s in samples if "cpu_s" in s]
    inside = [s for s in good if span[0] <= s["iteration"] <= span[1]]
    if not inside:
        raise ValueError(f"no sample in iterations {span[0]}..{span[1]}")
    before = [s for s in good if s["iteration"] < span[0]]
    a, b = (before or inside)[-1 if before else 0], inside[-1]
    cpu = None
    if b["iteration"] > a["iteration"]:
        used = [
            b["cpu_s"][k] - a["cpu_s"][k]
            for k in b["cpu_s"]
            if a["cpu_s"].get(k) is not None
            and b["cpu_s"][k] is not None
            and a["pids"].get(k) == b["pids"].get(k)  # a restarted process starts from 0
        ]
        cpu = sum(used) / (b["iteration"] - a["iteration"])
    return {
        "from_iteration": a["iteration"],
        "to_iteration": b["iteration"],
        "cpu_s_per_iteration": cpu,
        "load_avg_1m": statistics.fmean(s["load_avg_1m"] for s in inside),
    }


def stage_means(metrics: Sequence[dict[str, Any]], span: Sequence[int]) -> dict[str, float]:
    """Mean seconds of each stage of :data:`STAGES` over the records at indices ``span[0] ..
    span[1]`` (inclusive), so a drift can be traced to a stage."""
    chosen = metrics[span[0] : span[1] + 1]
    return {k: statistics.fmean(float(m.get(k, 0.0)) for m in chosen) for k in STAGES}


# -- after the run ----------------------------------------------------------------------------


def time_resume(run_dir: Path, iterations: int) -> dict[str, float]:
    """Resume the run for one more iteration as ``online-dt run --resume`` does (``plan_run``
    with ``online.iterations`` raised by one, then ``run_on_ray``), in this process's Ray
    instance.

    Returns:
        ``plan_s`` (checks, the checkpoint found, logs truncated), ``to_first_record_s``
        (from the start to the first iteration's record), ``first_iteration_wall_s`` (that
        record's ``wall_s``) and ``startup_s`` (the difference: the actors started, the
        learner built from the checkpoint and the buffer loaded, the weights published).
    """
    from actors.controller import run_on_ray
    from online_dt.loop.plan import plan_run

    first: dict[str, Any] = {}

    def on_first(record: dict[str, Any]) -> None:
        if not first:
            first.update(record, at=time.perf_counter())

    start = time.perf_counter()
    plan = plan_run(None, run_dir, {"online": {"iterations": iterations + 1}})
    planned = time.perf_counter()
    run_on_ray(plan, progress=False, callbacks=[on_first])
    if not first:
        raise RuntimeError("the resumed run recorded no iteration")
    to_first = first["at"] - start
    return {
        "plan_s": planned - start,
        "to_first_record_s": to_first,
        "first_iteration_wall_s": float(first["wall_s"]),
        "startup_s": to_first - float(first["wall_s"]),
    }


def time_endpoints(
    run_dir: Path, paths: Sequence[str] = ENDPOINTS, repeats: int = 3
) -> dict[str, dict[str, Any]]:
    """Load each dashboard path through FastAPI's ``TestClient``: ``cold_s``, the first
    request on a fresh app over ``run_dir`` (nothing cached: the buffer's shards, the logs'
    tails), and ``warm_s``, a further request on that app; each the best of ``repeats``
    (seconds). One untimed pass over every path first pays this process's one-time imports.

    Returns:
        ``{path: {status, bytes, cold_s, warm_s}}``.
    """
    from fastapi.testclient import TestClient

    from online_dt.dashboard.app import create_app

    warm_up = TestClient(create_app(run_dir))
    for path in paths:
        warm_up.get(path)
    out = {}
    for path in paths:
        colds, warms = [], []
        for _ in range(repeats):
            client = TestClient(create_app(run_dir))
            start = time.perf_counter()
            response = client.get(path)
            colds.append(time.perf_counter() - start)
            start = time.perf_counter()
            client.get(path)
            warms.append(time.perf_counter() - start)
        out[path] = {
            "status": response.status_code,
            "bytes": len(response.content),
            "cold_s": min(colds),
            "warm_s": min(warms),
        }
    return out


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    """Least wall seconds of ``repeats`` calls of ``fn`` (the least is the least disturbed by
    other work on the machine)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def shard_cost(run_dir: Path, repeats: int = 5) -> dict[str, Any]:
    """What the number of shards costs resume and the dashboard: ``ReplayBuffer.load`` (as
    ``--resume`` loads the buffer) and a cold ``/api/buffer`` over a copy of the run's shards
    and over the same samples rewritten as one shard (best of ``repeats`` each, seconds).

    Returns:
        ``shards``, ``samples``, ``load_s`` and ``api_buffer_s`` (each ``{"as_run":
        seconds, "one_shard": seconds}``) and ``per_extra_shard_ms`` of each.
    """
    from fastapi.testclient import TestClient

    from online_dt.config import OnlineRunConfig, load_config
    from online_dt.dashboard.app import create_app
    from online_dt.replay.buffer import ReplayBuffer
    from online_dt.replay.schema import shard_name
    from online_dt.replay.shards import read_persisted, write_parquet_atomic

    cfg = load_config(run_dir / "config.yaml", OnlineRunConfig)
    work = Path(tempfile.mkdtemp(prefix="odt-soak-shards-"))
    try:
        as_run, one = work / "as_run", work / "one_shard"
        shutil.copytree(run_dir / "buffer", as_run / "buffer")
        table = read_persisted(as_run / "buffer")
        (one / "buffer").mkdir(parents=True)
        write_parquet_atomic(one / "buffer" / shard_name(0, len(table) - 1), table)
        shards = count_shards(as_run / "buffer")
        figures: dict[str, Any] = {"shards": shards, "samples": len(table)}
        for key, fn in {
            "load_s": lambda d: ReplayBuffer.load(cfg.buffer, d / "buffer", cfg.training.seed),
            "api_buffer_s": lambda d: TestClient(create_app(d)).get("/api/buffer"),
        }.items():
            figures[key] = {
                "as_run": best_of(lambda fn=fn: fn(as_run), repeats),
                "one_shard": best_of(lambda fn=fn: fn(one), repeats),
            }
            extra = figures[key]["as_run"] - figures[key]["one_shard"]
            figures[f"{key.removesuffix('_s')}_per_extra_shard_ms"] = (
                1000 * extra / (shards - 1) if shards > 1 else 0.0
            )
        return figures
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- the report -------------------------------------------------------------------------------


def print_report(report: dict[str, Any]) -> None:
    """The soak's tables and its two verdicts on stdout."""
    samples = [s for s in report["samples"] if "rss_mib" in s]
    names = list(samples[-1]["rss_mib"]) if samples else []
    walls = {m["iteration"]: m["wall_s"] for m in report["per_iteration"]}
    step = max(1, len(samples) // 12)
    shown = samples[::step] + ([samples[-1]] if samples and (len(samples) - 1) % step else [])
    head = ["iter", "wall_s", *[f"{n} MiB" for n in names], "shards", "files", "run MiB", "load"]
    print("  ".join(f"{h:>12}" for h in head))
    for s in shown:
        row = [str(s["iteration"]), f"{walls.get(s['iteration'], float('nan')):.3f}"]
        row += [f"{s['rss_mib'].get(n) or float('nan'):.1f}" for n in names]
        row += [str(s["buffer_shards"]), str(s["run_dir_files"]), f"{s['run_dir_mib']:.1f}"]
        row += [f"{s['load_avg_1m']:.1f}"]
        print("  ".join(f"{c:>12}" for c in row))
    d, r = report["wall_drift"], report["rss_growth"]
    print(
        f"\nwarm-up: iterations 0..{d['warmup_iterations'] - 1}"
        if d["warmup_iterations"]
        else "\nwarm-up: none"
    )
    print(
        f"wall time: iterations {d['first'][0]}..{d['first'][1]} mean {d['first_mean_s']:.3f} s"
        f" (median {d['first_median_s']:.3f}), iterations {d['last'][0]}..{d['last'][1]} mean"
        f" {d['last_mean_s']:.3f} s (median {d['last_median_s']:.3f}): drift"
        f" {100 * d['drift']:+.1f} % -> {'OK' if d['ok'] else 'DRIFT'}"
        f" (tolerance {100 * d['tolerance']:.0f} %)"
    )
    print(f"RSS from iteration {r['from_iteration']} to {r['to_iteration']}:")
    for name, p in {**r["processes"], "all": r["total"]}.items():
        slope = p.get("slope_kib_per_iteration")
        print(
            f"  {name:>18}: {p['from_mib']:8.1f} -> {p['to_mib']:8.1f} MiB"
            f" ({100 * p['growth']:+.1f} %)"
            + ("" if slope is None else f", {slope:+.1f} KiB per iteration")
        )
    print(
        f"  -> {'OK' if r['ok'] else 'GROWTH'} (largest {100 * r['max_growth']:+.1f} %,"
        f" tolerance {100 * r['tolerance']:.0f} %)"
    )
    first, last = d["first_stages_s"], d["last_stages_s"]
    print(
        "  by stage, first -> last window (s): "
        + ", ".join(f"{k.removesuffix('_s')} {first[k]:.3f} -> {last[k]:.3f}" for k in STAGES)
    )
    u0, u1 = d["first_usage"], d["last_usage"]
    if d["cpu_drift"] is not None:
        print(
            f"  CPU s per iteration (driver and actors) {u0['cpu_s_per_iteration']:.3f} ->"
            f" {u1['cpu_s_per_iteration']:.3f} ({100 * d['cpu_drift']:+.1f} %); load average"
            f" {u0['load_avg_1m']:.2f} ->"
            f" {u1['load_avg_1m']:.2f} on {report['cpus']} CPUs"
        )
    for k, res in enumerate(report["resume"], 1):
        print(
            f"resume {k}: {res['to_first_record_s']:.1f} s to the first record (startup"
            f" {res['startup_s']:.1f} s, of which plan {res['plan_s']:.2f} s; the iteration"
            f" {res['first_iteration_wall_s']:.2f} s)"
        )
    print("dashboard (cold / warm ms):")
    for path, e in report["dashboard"].items():
        print(
            f"  {path:<26} {e['status']}  {1000 * e['cold_s']:8.1f} / {1000 * e['warm_s']:7.1f}"
            f"  {e['bytes']:>9} bytes"
        )
    sc = report["shard_cost"]
    print(
        f"shards: {sc['shards']} shards of {sc['samples']} samples vs one shard:"
        f" ReplayBuffer.load {1000 * sc['load_s']['as_run']:.1f} vs"
        f" {1000 * sc['load_s']['one_shard']:.1f} ms ({sc['load_per_extra_shard_ms']:.2f} ms per"
        f" extra shard), /api/buffer cold {1000 * sc['api_buffer_s']['as_run']:.1f} vs"
        f" {1000 * sc['api_buffer_s']['one_shard']:.1f} ms"
        f" ({sc['api_buffer_per_extra_shard_ms']:.2f} ms per extra shard)"
    )


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and each option's default."""


def build_parser() -> argparse.ArgumentParser:
    """The soak's command-line arguments."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\nUsage:")[0],
        epilog="The shrunken config (applied before --set): " + " ".join(SHRUNK),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--config", default="configs/plain.yaml", help="base config")
    parser.add_argument("--iterations", type=int, default=300, help="iterations of the soak")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override"
    )
    parser.add_argument(
        "--sample-every", type=int, default=1, help="sample RSS and files every N iterations"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=10,
        help="first iterations left out of the drift check as warm-up",
    )
    parser.add_argument("--window", type=int, default=50, help="iterations compared at each end")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.10,
        help="allowed wall-time drift and RSS growth (fraction)",
    )
    parser.add_argument(
        "--resumes", type=int, default=2, help="resumes timed after the run, one iteration each"
    )
    parser.add_argument(
        "--json", type=Path, default=Path("runs/soak.json"), help="where the JSON report goes"
    )
    parser.add_argument(
        "--run-dir", type=Path, default=None, help="where the run goes (None: a temporary folder)"
    )
    parser.add_argument(
        "--keep-run-dir", action="store_true", help="keep the run directory afterwards"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the soak; returns the exit status (0 with the report written)."""
    args = build_parser().parse_args(argv)
    if args.iterations < 2 or args.sample_every < 1 or args.resumes < 1:
        raise SystemExit("error: --iterations must be >= 2, --sample-every and --resumes >= 1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import ray

    from actors.controller import run_on_ray
    from online_dt.arguments import parse_overrides
    from online_dt.config import OnlineRunConfig, load_config
    from online_dt.loop.plan import plan_run

    work = None
    if args.run_dir is None:
        work = Path(tempfile.mkdtemp(prefix="odt-soak-"))
        run_dir = work / "run"
    else:
        run_dir = args.run_dir
    overrides = parse_overrides([*SHRUNK, *args.set])
    overrides.setdefault("online", {})["iterations"] = args.iterations
    overrides["online"]["run_dir"] = str(run_dir)
    overrides["online"]["tensorboard"] = False
    overrides.setdefault("dashboard", {})["enabled"] = False
    cfg = load_config(args.config, OnlineRunConfig, overrides)

    began = time.perf_counter()
    start = time.perf_counter()
    ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=True)
    ray_init_s = time.perf_counter() - start
    try:
        plan = plan_run(cfg, None)
        monitor = Monitor(plan.run.path, args.sample_every, args.iterations - 1)
        start = time.perf_counter()
        run_on_ray(plan, progress=False, callbacks=[monitor])
        loop_s = time.perf_counter() - start
        metrics = plan.run.read_metrics()
        walls = [float(m["wall_s"]) for m in metrics]
        drift = wall_drift(walls, args.warmup, args.window, args.tolerance)
        drift["first_stages_s"] = stage_means(metrics, drift["first"])
        drift["last_stages_s"] = stage_means(metrics, drift["last"])
        drift["first_usage"] = window_usage(monitor.samples, drift["first"])
        drift["last_usage"] = window_usage(monitor.samples, drift["last"])
        cpu0, cpu1 = (drift[k]["cpu_s_per_iteration"] for k in ("first_usage", "last_usage"))
        drift["cpu_drift"] = cpu1 / cpu0 - 1.0 if cpu0 and cpu1 is not None else None
        growth = rss_growth(monitor.samples, drift["warmup_iterations"], args.tolerance)
        resume = [time_resume(plan.run.path, args.iterations + k) for k in range(args.resumes)]
        files_after_resume = count_files(plan.run.path)[0]
    finally:
        ray.shutdown()
    try:
        dashboard = time_endpoints(plan.run.path)
        shards = shard_cost(plan.run.path)
        report = {
            "command": " ".join(["bench/soak.py", *(argv if argv is not None else sys.argv[1:])]),
            "config": args.config,
            "overrides": [*SHRUNK, *args.set],
            "iterations": args.iterations,
            "samples_per_iteration": cfg.online.prompts_per_iteration
            * cfg.online.samples_per_prompt,
            "sample_every": args.sample_every,
            "cpus": os.cpu_count(),
            "soak_wall_s": time.perf_counter() - began,
            "ray_init_s": ray_init_s,
            "loop_s": loop_s,
            "wall_drift": drift,
            "rss_growth": growth,
            "resume": resume,
            "run_dir_files_after_resume": files_after_resume,
            "dashboard": dashboard,
            "shard_cost": shards,
            "per_iteration": [
                {k: m.get(k) for k in ("iteration", "wall_s", "buffer_size")} for m in metrics
            ],
            "samples": monitor.samples,
            "run_dir": str(plan.run.path) if args.keep_run_dir or args.run_dir else None,
        }
    finally:
        if work is not None and not args.keep_run_dir:
            shutil.rmtree(work, ignore_errors=True)
    print_report(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    print(f"\nreport: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

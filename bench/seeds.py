"""Issue 12's goals over several seeds: ``bench/peers.py`` per seed, scored by ``bench/goals.py``.

One seed of ``bench/peers.py`` tells a recipe from another only by margins the next seed undoes
(docs/method.md, rounds 29-33), so the method's tables are five or ten seeds each: for every
seed, one online-dt run (``--methods online-dt``) and one run of its peer, TRL's GRPO at one
beta (``--methods grpo``), with the same budget, config and seed. This script runs them,
``--jobs`` at a time, each process with ``--threads`` torch threads, and prints
``bench/goals.py``'s verdicts and summary, also written to ``OUT/goals.txt``.

* Runs land in ``OUT/online-dt-s<seed>/`` and ``PEER_DIR/grpo-b<beta>-s<seed>/`` (each a
  ``peers.json``, ``peers.png`` and ``run.log``). A run whose ``peers.json`` exists is not run
  again, so an interrupted sweep resumes, and a sweep of another recipe can reuse the peer runs
  of an earlier one with ``--peer-dir``: the peer does not depend on ``--odt-set``.
* A reused peer run must have been made with the same shared setup as the online-dt run (base
  model, budget, prompt split, sampling, reward model, seed); otherwise the pairing is refused
  with the field that differs.
* Timings of runs that share the machine are not comparable to a run alone: (d) is scored, but
  the full side-by-side (``bench/peers.py`` alone) is the timing.

Usage (from the repository root)::

    .venv/bin/python bench/seeds.py --seeds 0-4 --out runs/seeds/default
    .venv/bin/python bench/seeds.py --seeds 0-4 --out runs/seeds/disc2 \\
        --peer-dir runs/seeds/default --odt-set training.discriminative_coef=2
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: this checkout's bench package
    sys.path.insert(0, str(ROOT))

from bench import goals  # noqa: E402

PEERS = ROOT / "bench" / "peers.py"
DEFAULT_TARGETS = (-0.8, -0.4, 0.0, 0.4, 0.8, 1.0)
"""The targets of the method's tables: base p10 to p90 for (b) and (c), and 1.0."""

SHARED_SETUP = (
    "base_model",
    "budget",
    "train_prompts",
    "heldout_prompts",
    "eval_samples_per_prompt",
    "sampling",
    "reward_model",
    "seed",
)
"""``peers.json`` ``setup`` fields an online-dt run and its peer run must share."""


def parse_seeds(items: Sequence[str]) -> list[int]:
    """Seeds from ``["0-4", "7"]`` (inclusive ranges and single seeds), in order, without repeats.

    Raises:
        ValueError: an item is neither an integer nor ``A-B`` with ``A <= B``.
    """
    seeds: list[int] = []
    for item in items:
        lo, sep, hi = item.partition("-")
        try:
            span = range(int(lo), int(hi) + 1) if sep else range(int(lo), int(lo) + 1)
        except ValueError:
            raise ValueError(f"--seeds: {item!r} is not a seed or a range A-B") from None
        if not span:
            raise ValueError(f"--seeds: {item!r} is an empty range")
        seeds += [s for s in span if s not in seeds]
    return seeds


@dataclass(frozen=True)
class Run:
    """One ``bench/peers.py`` process: its arguments after the script, and its output folder."""

    label: str
    seed: int
    out: Path
    argv: tuple[str, ...]

    @property
    def report(self) -> Path:
        """The ``peers.json`` the run writes."""
        return self.out / "peers.json"


def plan(args: argparse.Namespace) -> list[tuple[Run, Run]]:
    """The (online-dt, peer) pair of runs of each seed.

    Both get ``--config``, ``--seed``, ``--budget`` / ``--scale`` and every ``--shared-arg``;
    online-dt also ``--targets`` and every ``--odt-set``, the peer ``--grpo-betas`` with the one
    beta.
    """
    shared = ["--config", args.config, "--no-progress"]
    if args.budget is not None:
        shared += ["--budget", str(args.budget)]
    if args.scale is not None:
        shared += ["--scale", str(args.scale)]
    shared += args.shared_arg
    odt_extra = ["--targets", *(f"{t:g}" for t in args.targets)]
    for kv in args.odt_set:
        odt_extra += ["--odt-set", kv]
    peer_dir = args.peer_dir or args.out
    pairs = []
    for seed in args.seeds:
        common = [*shared, "--seed", str(seed)]
        odt_out = args.out / f"online-dt-s{seed}"
        peer_out = peer_dir / f"grpo-b{args.grpo_beta:g}-s{seed}"
        odt = Run(
            "online-dt",
            seed,
            odt_out,
            ("--methods", "online-dt", *common, *odt_extra, "--out", str(odt_out)),
        )
        peer = Run(
            f"grpo-b{args.grpo_beta:g}",
            seed,
            peer_out,
            (
                "--methods",
                "grpo",
                "--grpo-betas",
                f"{args.grpo_beta:g}",
                *common,
                "--out",
                str(peer_out),
            ),
        )
        pairs.append((odt, peer))
    return pairs


def execute(run: Run, threads: int) -> int:
    """Run one ``bench/peers.py`` process with ``threads`` torch threads (``OMP_NUM_THREADS``),
    its output in ``run.out/run.log``; returns its exit status."""
    run.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with (run.out / "run.log").open("w") as log:
        cmd = [sys.executable, str(PEERS), *run.argv]
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return done.returncode


def check_pair(odt: dict, peer: dict) -> None:
    """Refuse a peer run made with another shared setup than the online-dt run's.

    Raises:
        ValueError: naming the first ``setup`` field of :data:`SHARED_SETUP` that differs.
    """
    for key in SHARED_SETUP:
        a, b = odt["setup"].get(key), peer["setup"].get(key)
        if a != b:
            raise ValueError(f"setup.{key} differs: online-dt {a!r}, peer {b!r}")


def score(pairs: Sequence[tuple[Run, Run]], peer: str) -> str:
    """``bench/goals.py``'s verdicts and summary of the pairs' reports, as text.

    Raises:
        ValueError: a pair's shared setup differs (:func:`check_pair`), or goals.py refused
            its input (its message).
    """
    for odt, p in pairs:
        try:
            check_pair(json.loads(odt.report.read_text()), json.loads(p.report.read_text()))
        except ValueError as e:
            raise ValueError(f"seed {odt.seed}: {p.report} cannot be the peer: {e}") from None
    argv = [str(o.report) for o, _ in pairs] + ["--peer", peer, "--peer-json"]
    argv += [str(p.report) for _, p in pairs]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = goals.main(argv)
    if status:
        raise ValueError(err.getvalue().strip())
    return out.getvalue()


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        description=(
            "Run bench/peers.py's online-dt and its GRPO peer for each seed, a few at a time, "
            "and score issue 12's goals over the seeds with bench/goals.py (OUT/goals.txt)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--seeds", nargs="+", default=["0-4"], help="seeds and ranges, e.g. 0-4 7")
    p.add_argument("--out", type=Path, required=True, help="folder of the online-dt runs")
    p.add_argument(
        "--peer-dir",
        type=Path,
        default=None,
        help="folder of the peer runs, reused where they exist; --out when not given",
    )
    p.add_argument("--config", default="configs/default.yaml", help="online-dt config")
    p.add_argument(
        "--odt-set", action="append", default=[], metavar="KEY=VALUE", help="as bench/peers.py's"
    )
    p.add_argument(
        "--targets", type=float, nargs="+", default=list(DEFAULT_TARGETS), help="online-dt targets"
    )
    p.add_argument("--grpo-beta", type=float, default=0.04, help="the peer: TRL GRPO at this beta")
    p.add_argument("--budget", type=int, default=None, help="as bench/peers.py's, for both runs")
    p.add_argument("--scale", type=float, default=None, help="as bench/peers.py's, for both runs")
    p.add_argument(
        "--shared-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="another bench/peers.py argument for both runs, e.g. --shared-arg=--eval-samples=2",
    )
    p.add_argument("--jobs", type=int, default=2, help="processes at a time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run what is missing, then score; returns 0, 1 when a run failed (its ``run.log`` is
    named), or 2 on unusable arguments or reports."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.seeds = parse_seeds(args.seeds)
    except ValueError as e:
        parser.error(str(e))
    if args.jobs < 1 or args.threads < 1:
        parser.error("--jobs and --threads must be at least 1")
    # the runs start in the repository root: paths given relative to here must not move
    args.out = args.out.resolve()
    args.peer_dir = args.peer_dir.resolve() if args.peer_dir else None
    if Path(args.config).exists():
        args.config = str(Path(args.config).resolve())
    pairs = plan(args)
    todo = list(dict.fromkeys(r for pair in pairs for r in pair if not r.report.exists()))
    print(f"{len(pairs)} seeds, {len(todo)} runs to do, {args.jobs} at a time", flush=True)
    failed = []
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(execute, r, args.threads): r for r in todo}
        for future in tqdm(as_completed(futures), total=len(todo), desc="runs", unit="run"):
            run = futures[future]
            if future.result() != 0 or not run.report.exists():
                failed.append(run)
                tqdm.write(f"failed: {run.label} seed {run.seed}, see {run.out / 'run.log'}")
    if failed:
        return 1
    try:
        text = score(pairs, pairs[0][1].label)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(text, end="")
    (args.out / "goals.txt").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

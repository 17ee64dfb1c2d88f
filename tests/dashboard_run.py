"""Short real runs for the dashboard and evaluation tests, built once per test session.

``real_run`` runs 4 online iterations of the embedded default model in process (HF sampler,
no Ray, about 15 s on 2 cores); ``evaluated_run`` is a copy of it with an ``online-dt eval``
report in ``eval/``. Both are memoised for the session, so the dashboard, browser and eval tests
share them. Tests that write into a run directory copy it first.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from online_dt.config import OnlineRunConfig

_BUILT: dict[str, Path] = {}

ITERATIONS = 4


def run_config(run_dir: Path, base: Path, **online: Any) -> OnlineRunConfig:
    """A tiny online config over the embedded model: 8 prompts x 2 samples per iteration."""
    return OnlineRunConfig.model_validate(
        {
            "model": {"name_or_path": str(base), "device": "cpu"},
            "sampler": {"backend": "hf"},
            "sampling": {"max_new_tokens": 12, "batch_size": 64},
            "training": {"batch_size": 16, "lr": 1e-3},
            "prompts": {"source": "embedded", "limit": 64},
            "schedule": {
                "kind": "quantile",
                "iterations": 3,
                "max_increase": 0.1,
                "spread": 0.05,
            },
            "online": {
                "run_dir": str(run_dir),
                "iterations": ITERATIONS,
                "prompts_per_iteration": 8,
                "samples_per_prompt": 2,
                "train_steps_per_iteration": 3,
                "kl_samples": 8,
                "samples_logged_per_iteration": 6,
                **online,
            },
            "dashboard": {"enabled": False},
        }
    )


def real_run(tmp_path_factory: Any, base: Path) -> Path:
    """The run directory of a finished 4-iteration in-process run (built on first call)."""
    if "run" not in _BUILT:
        from online_dt.loop.plan import base_model_path, execute, plan_run
        from online_dt.loop.workers import local_workers

        run_dir = tmp_path_factory.mktemp("dashboard-run") / "run"
        plan = plan_run(run_config(run_dir, base), None)
        workers = local_workers(plan.cfg, base_model_path(plan.cfg), plan.run.path, None)
        execute(plan, workers, progress=False)
        _BUILT["run"] = run_dir
    return _BUILT["run"]


def evaluated_run(tmp_path_factory: Any, base: Path) -> Path:
    """A copy of :func:`real_run` with a small evaluation (16 samples per target) in ``eval/``."""
    if "evaluated" not in _BUILT:
        from online_dt.eval.run import run_eval

        run_dir = tmp_path_factory.mktemp("dashboard-evaluated") / "run"
        shutil.copytree(real_run(tmp_path_factory, base), run_dir, symlinks=True)
        run_eval(run_dir, targets=[-0.5, 0.0, 0.5], samples_per_target=16)
        _BUILT["evaluated"] = run_dir
    return _BUILT["evaluated"]

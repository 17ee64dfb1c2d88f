"""The console of a run: worker output to log files, known-harmless warnings dropped (and only
those), one line per iteration and the end-of-run summary."""

from __future__ import annotations

import copy
import logging
import logging.config
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from online_dt.loop.console import iteration_line, run_summary, warm_start_line
from online_dt.rollout.vllm_logging import logging_config
from online_dt.run import main
from online_dt.util.logs import HARMLESS, VERBOSE_ENV, KnownHarmless
from tests.tiny import build_tiny_model

REPO = Path(__file__).resolve().parents[1]


def record(name: str, message: str, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


def test_known_harmless_drops_only_the_listed_warnings(monkeypatch):
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    keep = KnownHarmless().filter
    assert not keep(record("vllm.layerwise", "ParallelLMHead: Failed to load weights"))
    assert not keep(record("vllm", "Triton is not installed. triton-cpu is expected"))
    assert keep(record("vllm.model_executor", "ParallelLMHead: shapes differ"))  # not listed
    assert keep(record("vllmx", "Triton is not installed."))  # another logger
    assert keep(record("online_dt.loop", "ParallelLMHead: Failed to load weights"))
    assert keep(record("vllm", "CUDA out of memory"))
    monkeypatch.setenv(VERBOSE_ENV, "1")  # --verbose: nothing dropped
    assert keep(record("vllm", "Triton is not installed."))
    assert all(len(why) > 20 for _, _, why in HARMLESS)  # each says why it is harmless


def test_vllm_logging_config_carries_the_filter(monkeypatch, capsys):
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    cfg = copy.deepcopy(logging_config("WARNING"))
    assert cfg["handlers"]["vllm"]["filters"] == ["known_harmless"]
    assert cfg["filters"]["known_harmless"]["()"] == "online_dt.util.logs.KnownHarmless"
    # the same config with a plain formatter (vLLM's needs its record factory)
    cfg["formatters"]["vllm"] = {"format": "%(name)s %(message)s"}
    logging.config.dictConfig(cfg)
    try:
        logger = logging.getLogger("vllm.worker")
        logger.warning("ParallelLMHead: Failed to load weights")
        logger.warning("a real problem")
    finally:
        logging.getLogger("vllm").handlers.clear()
    out = capsys.readouterr().out
    assert "a real problem" in out and "ParallelLMHead" not in out


def test_redirected_output_goes_to_the_file_and_warnings_to_the_console(tmp_path):
    """What an actor does: fds 1 and 2 (C output and child processes too) go to its log
    file; the project's warnings still reach the original stderr, its INFO does not."""
    log_file = tmp_path / "logs" / "sampler-0.log"
    script = textwrap.dedent(
        f"""
        import logging, os, subprocess, sys
        from pathlib import Path
        from online_dt.util.logs import forward_warnings, redirect_output
        console = redirect_output(Path({str(log_file)!r}))
        logging.basicConfig(level=logging.INFO)
        forward_warnings(console)
        print("python stdout")
        os.write(2, b"raw fd 2\\n")
        subprocess.run([sys.executable, "-c", "print('child process')"], check=True)
        logging.getLogger("online_dt.rollout").info("routine info")
        logging.getLogger("online_dt.rollout").warning("a real warning")
        logging.getLogger("vllm").warning("library noise")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr.strip() == "WARNING online_dt.rollout: a real warning"
    text = log_file.read_text()
    for line in ("python stdout", "raw fd 2", "child process", "routine info", "a real warning"):
        assert line in text, line
    assert "library noise" in text


METRICS = [
    {"iteration": 0, "target": 0.0, "achieved_mean": 0.1, "achieved_p10": -0.5,
     "achieved_p90": 0.7, "loss": 1.5, "kl_to_base": 0.2, "wall_s": 3.0, "rollout_s": 2.0,
     "training_s": 0.9, "sync_s": 0.1, "scoring_s": 0.0, "checkpoint_s": 0.0,
     "policy_lag_max": 0},
    {"iteration": 1, "target": 0.1, "achieved_mean": 0.3, "achieved_p10": -0.2,
     "achieved_p90": 0.8, "loss": 1.4, "kl_to_base": None, "wall_s": 2.0, "rollout_s": 0.0,
     "training_s": 1.8, "sync_s": 0.1, "scoring_s": 0.0, "checkpoint_s": 0.1,
     "policy_lag_max": 1},
    {"iteration": 2, "target": 0.2, "samples": 0, "loss": float("nan"), "wall_s": 1.0},
]  # fmt: skip


def test_iteration_line_and_summary(tmp_path):
    first = iteration_line(METRICS[0], 30)
    assert first.startswith("iter  1/30  target 0.000  achieved 0.100 [-0.50, 0.70]")
    assert "KL 0.2" in first and "3.0s (rollout 2.0, training 0.9)" in first
    assert "lag" not in first
    second = iteration_line(METRICS[1], 30)
    assert "KL" not in second and second.endswith("lag 1")
    assert "no samples" in iteration_line(METRICS[2], 30)
    assert "best command" not in first
    best = iteration_line({**METRICS[0], "best_asks": 64, "best_achieved_mean": 0.912}, 30)
    assert "achieved 0.100 [-0.50, 0.70]  best command 0.912  loss" in best
    only = {k: v for k, v in METRICS[0].items() if not k.startswith("achieved")}
    only_best = iteration_line({**only, "best_asks": 64, "best_achieved_mean": 0.912}, 30)
    assert "target 0.000  best command 0.912  loss" in only_best
    summary = run_summary(METRICS, tmp_path, tmp_path / "checkpoints" / "iter-000002", None)
    assert "iterations       3" in summary
    assert "final            target 0.200, achieved -" in summary
    assert "best             achieved 0.300 at iter 2/3 (target 0.100)" in summary
    assert f"online-dt dashboard {tmp_path}\n" in summary
    tokened = run_summary(METRICS, tmp_path, None, None, dashboard_token=True)
    assert f"online-dt dashboard {tmp_path}  (token required: dashboard.token or " in tokened
    assert "ONLINE_DT_DASHBOARD_TOKEN)" in tokened
    assert f"online-dt eval {tmp_path}" in summary
    assert "iter-000002" in summary
    assert "no iteration ran" in run_summary([], tmp_path, None)
    assert "warm start" not in summary


def test_warm_start_line_and_summary(tmp_path):
    warm = {"samples": 7168, "prompts": 512, "steps": 300, "loss": 1.4271, "rollout_s": 8.72,
            "scoring_s": 0.41, "training_s": 36.08, "sync_s": 0.05, "other_s": 0.0,
            "wall_s": 45.26}  # fmt: skip
    line = warm_start_line(warm)
    assert line == (
        "warm start  7168 samples of 512 prompts  300 steps  loss 1.427  45.3s "
        "(training 36.1, rollout 8.7)"
    )
    assert "loss -" in warm_start_line({**warm, "loss": float("nan")})
    summary = run_summary(METRICS, tmp_path, None, None, warm_start=warm)
    assert "  warm start       45.3s, 7168 samples, 300 steps\n  loop time" in summary


def test_local_run_prints_a_line_per_iteration_and_the_summary(tmp_path, capsys):
    base = build_tiny_model(tmp_path / "gpt2", "gpt2")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the movie was\nthe food was\n")
    cfg = {
        "model": {"name_or_path": str(base), "device": "cpu"},
        "sampler": {"backend": "hf"},
        "sampling": {"max_new_tokens": 4},
        "training": {"batch_size": 4},
        "prompts": {"source": "file", "path": str(prompts)},
        "dashboard": {"enabled": False},
        "online": {
            "run_dir": str(tmp_path / "run"),
            "iterations": 3,
            "prompts_per_iteration": 2,
            "samples_per_prompt": 2,
            "train_steps_per_iteration": 1,
        },
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert main(["--config", str(path), "--local", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    lines = [line.split(" ", 1)[1] for line in err.splitlines() if " iter " in line]
    assert [line.split("  ")[0] for line in lines] == ["iter 1/3", "iter 2/3", "iter 3/3"]
    assert "WARNING" not in err
    assert f"run finished: {tmp_path / 'run'}" in out
    assert "checkpoints/iter-000002" in out and "worker logs" not in out  # no actors here


def test_run_console_formatter():
    from online_dt.run import ConsoleFormatter

    fmt = ConsoleFormatter(datefmt="%H:%M:%S")
    ours = fmt.format(record("online_dt.loop.loop", "iter 1/3", logging.INFO))
    theirs = fmt.format(record("ray", "started", logging.INFO))
    warning = fmt.format(record("online_dt.loop.loop", "careful"))
    assert ours.endswith(" iter 1/3") and "INFO" not in ours
    assert theirs.endswith("INFO ray: started")
    assert warning.endswith("WARNING online_dt.loop.loop: careful")

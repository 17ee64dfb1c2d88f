"""The online loop in process (no Ray): bookkeeping, hindsight relabeling, resume."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from online_dt.config import OnlineRunConfig
from online_dt.loop.futures import Done, Gather, LocalHandle
from online_dt.loop.loop import STAGES, bound_policy_lag, prompts_for
from online_dt.loop.plan import base_model_path, execute, plan_run
from online_dt.loop.rollout_batch import RolloutBatch
from online_dt.loop.sampler_group import SamplerGroup
from online_dt.loop.workers import local_workers
from online_dt.replay.export import export_dataset
from online_dt.rollout.sampler import SamplingParams
from online_dt.run import main
from online_dt.samples import Rollout
from tests.tiny import build_tiny_model

PROMPTS = ["the movie was", "the food was", "honestly the game is", "this hotel is"]


def make_cfg(tmp_path, base, **online):
    return OnlineRunConfig.model_validate(
        {
            "model": {"name_or_path": str(base), "device": "cpu"},
            "sampler": {"backend": "hf"},
            "sampling": {"max_new_tokens": 6},
            "training": {"batch_size": 8, "lr": 1e-3},
            "schedule": {"kind": "quantile", "iterations": 3, "max_increase": 0.1, "spread": 0.05},
            "online": {
                "run_dir": str(tmp_path / "run"),
                "iterations": 4,
                "prompts_per_iteration": 4,
                "samples_per_prompt": 2,
                "train_steps_per_iteration": 2,
                "kl_samples": 4,
                **online,
            },
        }
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("gpt2"), "gpt2")


def run_local(cfg, resume=None, overrides=None):
    plan = plan_run(None if resume else cfg, resume, overrides)
    plan.prompts = PROMPTS
    workers = local_workers(plan.cfg, base_model_path(plan.cfg), plan.run.path, plan.checkpoint)
    return execute(plan, workers, progress=False), plan


def test_handles_and_sampler_group():
    assert Done(3).result() == 3
    with pytest.raises(KeyError):
        LocalHandle({}).__getitem__("x").result()
    assert Gather([Done(1), Done(2)], sum).result() == 3

    class Echo:
        def generate(self, prompts, targets, params):
            from online_dt.samples import Rollout

            return [
                Rollout(p, "", [], [], t, 0, True, i, 0.0, 0.0)
                for i, (p, t) in enumerate(zip(prompts, targets, strict=True))
            ]

    group = SamplerGroup([LocalHandle(Echo()), LocalHandle(Echo())])
    out = group.generate(["a", "b", "c"], [1.0, 2.0, 3.0], SamplingParams(seed=0)).result().rollouts
    assert [(r.prompt, r.prompt_index, r.target) for r in out] == [
        ("a", 0, 1.0),
        ("b", 1, 2.0),
        ("c", 2, 3.0),
    ]
    assert prompts_for(["x", "y", "z"], 1, 2) == ["z", "x"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_loop_bookkeeping(tmp_path, base, mode):
    cfg = make_cfg(tmp_path, base, mode=mode)
    history, plan = run_local(cfg)
    assert [m["iteration"] for m in history] == [0, 1, 2, 3]
    assert plan.run.read_metrics() == history
    # every scored sample is in the buffer exactly once, labelled with its achieved reward
    data = export_dataset(plan.run.buffer_dir)
    assert len(data) == 4 * 4 * 2 == history[-1]["buffer_size"]
    assert sorted(data["sample_id"]) == list(range(len(data)))
    # each sample's version is one the learner published, and the lag is bounded
    published = {0} | {m["policy_version"] for m in history}
    assert set(data["policy_version"]) <= published
    lags = [m["policy_lag_max"] for m in history]
    assert lags == ([0, 0, 0, 0] if mode == "sync" else [0, 1, 1, 1])
    for m in history:
        for key in ("target", "achieved_mean", "distinct_1", "kl_to_base", "rollout_s", "sync_s"):
            assert m[key] is not None, key
    # targets follow the capped schedule
    targets = [m["target"] for m in history]
    assert all(b - a <= 0.1 + 1e-9 for a, b in itertools.pairwise(targets))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_stage_timings_cover_each_iterations_wall_time(tmp_path, base, mode):
    """One StageTimer per iteration, in process: the stages and other_s add up to wall_s, and
    wall_s is the real time from one record to the next (the metrics and sample writes and the
    checkpoint after a record count in the next iteration), within 5 %."""
    history, _ = run_local(make_cfg(tmp_path, base, mode=mode))
    for m in history:
        stages = sum(m[f"{s}_s"] for s in STAGES) + m["other_s"]
        assert stages == pytest.approx(m["wall_s"], rel=1e-9)
        assert m["scoring_s"] > 0 and m["training_s"] > 0 and m["sync_s"] > 0
    # sync and the first async iteration wait for their own rollouts; in process the async
    # loop runs the next rollouts inside the current iteration's launch (nothing overlaps)
    assert all(m["rollout_s"] > 0 for m in history[: None if mode == "sync" else -1])
    assert all(m["checkpoint_s"] > 0 for m in history[1:])  # the previous iteration's
    for prev, m in itertools.pairwise(history):
        assert m["time"] - prev["time"] == pytest.approx(m["wall_s"], rel=0.05)


def test_samples_beyond_the_policy_lag_are_dropped_before_scoring():
    def rollout(version):
        return Rollout("p", "c", [1], [0.0], 0.0, policy_version=version)

    batch = RolloutBatch([rollout(v) for v in (3, 2, 1, 3)])
    assert bound_policy_lag(batch, None, 0) is batch  # nothing published yet in this loop
    assert bound_policy_lag(batch, 3, 2) is batch
    kept = bound_policy_lag(batch, 3, 1)
    assert [r.policy_version for r in kept.rollouts] == [3, 2, 3]
    assert kept.recovery.samples_over_lag == 1
    synced = bound_policy_lag(batch, 3, 0)  # sync mode: only the learner's own version
    assert [r.policy_version for r in synced.rollouts] == [3, 3]
    assert synced.recovery.samples_over_lag == 2 and batch.recovery.samples_over_lag == 0


def test_importance_weights_are_the_k1_terms_of_each_sample(tmp_path, base, capsys):
    """With buffer.importance_weighting, every sample carries log p_base - log pi of its
    completion: minus the per-completion k1 KL term, so each iteration's kl_to_base (the mean
    over its first kl_samples rollouts) is minus the mean of those samples' weights."""
    cfg = make_cfg(tmp_path, base)
    cfg = cfg.model_copy(
        update={"buffer": cfg.buffer.model_copy(update={"importance_weighting": True})}
    )
    history, plan = run_local(cfg)
    data = export_dataset(plan.run.buffer_dir).to_pandas()
    assert data["log_importance_weight"].notna().all()
    for m in history:
        rows = data[data["iteration"] == m["iteration"]].sort_values("sample_id")
        first = rows["log_importance_weight"].to_numpy()[: cfg.online.kl_samples]
        assert -first.mean() == pytest.approx(m["kl_to_base"], abs=1e-4)
    # bench/buffer_drift.py reads the same buffer: every sample in one bin, two ranges
    import json
    import math

    from bench import buffer_drift

    capsys.readouterr()
    argv = [str(plan.run.path), "--bins", "0.0", "--half-width", "10", "--chunks", "2"]
    assert buffer_drift.main(argv) == 0
    cells = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [c["iterations"] for c in cells] == [[0, 1], [2, 3]]
    assert sum(c["count"] for c in cells) == len(data)
    for c in cells:
        assert math.isfinite(c["nll_base_per_token"]) and c["nll_base_per_token"] > 0
        first = data[data["iteration"].between(*c["iterations"])]
        assert c["mean_log_importance_weight"] == pytest.approx(
            first["log_importance_weight"].mean(), abs=1e-3
        )
    # without importance weights the KL is computed afresh; iteration 0 (same weights, same
    # rollouts) gives the same figure
    off_history, off_plan = run_local(make_cfg(tmp_path / "off", base))
    assert off_history[0]["kl_to_base"] == pytest.approx(history[0]["kl_to_base"], abs=1e-5)
    off = export_dataset(off_plan.run.buffer_dir)
    assert off.to_pandas()["log_importance_weight"].isna().all()


def test_sampler_base_logprobs_give_the_learners_importance_weights(tmp_path, base, monkeypatch):
    """With sampler.base_logprobs the sampler sends log p_base with each rollout: the learner's
    first iteration stores the same importance weights and KL estimate as when it runs the base
    model itself, and never runs it (the learner's base forward would raise)."""
    from online_dt.rollout.base_logprobs import BaseLogprobSampler
    from online_dt.training import kl as kl_module

    def configured(root, base_logprobs):
        cfg = make_cfg(root, base, iterations=1)
        return cfg.model_copy(
            update={
                "buffer": cfg.buffer.model_copy(update={"importance_weighting": True}),
                "sampler": cfg.sampler.model_copy(update={"base_logprobs": base_logprobs}),
            }
        )

    learner_side, plan = run_local(configured(tmp_path / "learner", False))
    expected = export_dataset(plan.run.buffer_dir).to_pandas()

    def refuse(*args, **kwargs):
        raise AssertionError("the learner ran the base model")

    monkeypatch.setattr(kl_module, "completion_base_logprobs", refuse)
    cfg = configured(tmp_path / "sampler", True)
    plan = plan_run(cfg, None)
    plan.prompts = PROMPTS
    workers = local_workers(plan.cfg, base_model_path(plan.cfg), plan.run.path, plan.checkpoint)
    assert isinstance(workers.samplers.handles[0].target, BaseLogprobSampler)
    sampler_side = execute(plan, workers, progress=False)
    got = export_dataset(plan.run.buffer_dir).to_pandas()
    assert list(got["completion"]) == list(expected["completion"])
    assert got["log_importance_weight"].to_numpy() == pytest.approx(
        expected["log_importance_weight"].to_numpy(), abs=1e-5
    )
    assert sampler_side[0]["kl_to_base"] == pytest.approx(learner_side[0]["kl_to_base"], abs=1e-5)


def test_resume_matches_uninterrupted_run(tmp_path, base):
    full, _ = run_local(make_cfg(tmp_path / "full", base))
    _first, plan = run_local(make_cfg(tmp_path / "cut", base, iterations=2))
    # continue the stopped run to 4 iterations (the run dir's config, with an override)
    _rest, plan = run_local(None, resume=plan.run.path, overrides={"online": {"iterations": 4}})
    resumed = plan.run.read_metrics()
    assert [m["iteration"] for m in resumed] == [0, 1, 2, 3]
    assert [m["target"] for m in resumed] == pytest.approx([m["target"] for m in full])
    assert len(export_dataset(plan.run.buffer_dir)) == full[-1]["buffer_size"]
    assert resumed[-1]["buffer_size"] == full[-1]["buffer_size"]


def test_new_run_refuses_existing_dir(tmp_path, base, capsys):
    cfg = make_cfg(tmp_path, base)
    plan_run(cfg, None)
    assert main(["--config", "nope.yaml"]) == 2
    cfg_path = tmp_path / "c.yaml"
    import yaml

    cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert main(["--config", str(cfg_path), "--local"]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_cli_export_writes_a_dataset(tmp_path, base, capsys):
    from datasets import load_from_disk

    from online_dt.cli import main as cli_main

    cfg = make_cfg(tmp_path, base, iterations=1)
    run_local(cfg)
    assert cli_main(["export", str(tmp_path / "run")]) == 0
    data = load_from_disk(str(tmp_path / "run" / "export"))
    assert len(data) == 8 and "achieved_reward" in data.column_names
    assert cli_main(["export", str(tmp_path / "nothing")]) == 2


def test_custom_reward_model_and_warm_start_through_config(tmp_path, base):
    """The example reward model is swapped in by the config alone; the warm start adds one
    batch of samples (iteration -1) before iteration 0."""
    cfg = make_cfg(
        tmp_path, base, iterations=2, warm_start_samples_per_prompt=1, warm_start_steps=2
    )
    cfg = cfg.model_copy(
        update={
            "reward_model": cfg.reward_model.model_copy(
                update={
                    "kind": "custom",
                    "class_path": "examples.length_reward:LengthReward",
                    "kwargs": {"target_words": 3},
                }
            )
        }
    )
    history, plan = run_local(cfg)
    data = export_dataset(plan.run.buffer_dir)
    assert data["iteration"].count(-1) == 4
    assert len(data) == 4 + 2 * 8
    # the rewards are the example model's: 1 - |words - 3| / 3, clipped at -1
    for completion, reward in zip(data["completion"], data["achieved_reward"], strict=True):
        assert reward == pytest.approx(max(-1.0, 1 - abs(len(completion.split()) - 3) / 3))
    assert history[0]["policy_version"] == 2  # warm start published version 1


def test_tensorboard_logging(tmp_path, base):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    history, plan = run_local(make_cfg(tmp_path, base, iterations=2, tensorboard=True))
    events = EventAccumulator(str(plan.run.path / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert "online_dt/achieved_mean" in scalars
    assert [e.value for e in events.Scalars("online_dt/target")] == pytest.approx(
        [m["target"] for m in history]
    )


def test_gpt2_imdb_config_fails_clearly_without_the_hub(tmp_path):
    """The GPU config validates; without the Hub it stops with a clear message before any run
    directory is created."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    run_dir = tmp_path / "imdb"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "online_dt.run",
            "--config",
            "configs/gpt2_imdb.yaml",
            "--set",
            f"online.run_dir={run_dir}",
        ],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "cannot load prompt dataset 'imdb'" in proc.stderr
    assert "Hub" in proc.stderr
    assert not run_dir.exists()


def test_background_checkpoint_writes_the_state_it_was_taken_with(tmp_path, base, monkeypatch):
    """A background checkpoint holds the policy and optimizer as they were when it was asked
    for, though training changes them while it is written; ``latest.json`` names it only once
    it is complete; it writes what a foreground checkpoint of the same state writes; and its
    error surfaces at the next call, the previous checkpoint kept."""
    import threading

    import torch
    from safetensors.torch import load_file

    import online_dt.training.learner as learner_module
    from online_dt.launch.rundir import CHECKPOINT_POLICY_DIR, CHECKPOINT_TRAINER_FILE
    from online_dt.policy.policy import RewardConditionedPolicy
    from online_dt.samples import Sample
    from online_dt.training.learner import Learner

    cfg = make_cfg(tmp_path, base)
    learner = Learner(cfg, str(base), cfg.online.run_dir)
    samples = [Sample(p, " was good", 0.5) for p in PROMPTS]
    learner.trainer.step(samples)  # the optimizer has state to save
    learner.checkpoint(0, {"iteration": 0})
    run = learner.run
    assert run.latest_checkpoint().name == "iter-000000"

    release = threading.Event()
    write = learner_module.atomic_write_dir

    def held_write(path, writer):
        assert release.wait(30)
        write(path, writer)

    monkeypatch.setattr(learner_module, "atomic_write_dir", held_write)
    expected = {n: p.detach().clone() for n, p in learner.policy.named_parameters()}
    expected_avg = {
        i: s["exp_avg"].clone() for i, s in learner.trainer.optimizer.state_dict()["state"].items()
    }
    path = learner.checkpoint(1, {"iteration": 1}, background=True)
    learner.trainer.step(samples)  # training goes on while the checkpoint waits to be written
    assert run.latest_checkpoint().name == "iter-000000"  # not named before it is complete
    release.set()
    learner.wait_for_checkpoint()
    assert run.latest_checkpoint().name == "iter-000001" == Path(path).name

    saved = RewardConditionedPolicy.from_pretrained(Path(path) / CHECKPOINT_POLICY_DIR)
    changed = 0
    for name, param in saved.named_parameters():
        torch.testing.assert_close(param, expected[name], rtol=0, atol=0)
        changed += not torch.equal(dict(learner.policy.named_parameters())[name], param)
    assert changed > 0  # the second step moved the live policy away from what was saved
    trainer = torch.load(Path(path) / CHECKPOINT_TRAINER_FILE, weights_only=False)
    for i, state in trainer["optimizer"]["state"].items():
        torch.testing.assert_close(state["exp_avg"], expected_avg[i], rtol=0, atol=0)

    # the same files as a foreground checkpoint of the same state
    monkeypatch.setattr(learner_module, "atomic_write_dir", write)
    for background, iteration in ((True, 2), (False, 3)):
        learner.checkpoint(iteration, {"iteration": 2}, background=background)
    learner.wait_for_checkpoint()
    two, three = (run.checkpoint_path(i) / CHECKPOINT_POLICY_DIR for i in (2, 3))
    assert sorted(p.name for p in two.rglob("*")) == sorted(p.name for p in three.rglob("*"))
    for part in ("model.safetensors", "reward_conditioning/head.safetensors"):
        a, b = load_file(two / part), load_file(three / part)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    for part in ("config.json", "reward_conditioning/conditioning.json", "tokenizer.json"):
        assert (two / part).read_text() == (three / part).read_text()

    def failing_save(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(learner_module.torch, "save", failing_save)
    learner.checkpoint(4, {"iteration": 4}, background=True)  # returns: the write is behind it
    with pytest.raises(OSError, match="No space left"):
        learner.checkpoint(5, {"iteration": 5}, background=True)
    assert run.latest_checkpoint().name == "iter-000003"
    assert not run.checkpoint_path(4).exists()

"""Faults and bad input in process (no Ray): reward failures, lost samplers, bad inputs,
a full disk and a killed driver. Each test injects the fault for real and checks that nothing
is lost: every sample is in the buffer once or kept in ``rejected/``."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

import tests.test_loop as loop_tests
from online_dt.config import FaultToleranceConfig, RewardModelConfig
from online_dt.launch.rundir import RunDir
from online_dt.loop.futures import (
    CallTimeoutError,
    Done,
    LocalHandle,
    ThreadHandle,
    WorkerLostError,
)
from online_dt.loop.reward_stats import RewardStats
from online_dt.loop.sampler_group import SamplerGroup
from online_dt.loop.schedule import ScheduleState, next_target
from online_dt.loop.scoring import RewardBatchError, score_rollouts
from online_dt.replay.export import export_dataset
from online_dt.replay.shards import read_persisted
from online_dt.rollout.sampler import SamplingParams
from online_dt.rollout.weight_sync import WeightUpdate
from online_dt.run import main
from online_dt.samples import Rollout
from tests.faulty_rewards import FaultyReward, length_reward

REPO = Path(__file__).resolve().parents[1]
NO_WAIT = FaultToleranceConfig(retry_backoff_s=0.0)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return loop_tests.build_tiny_model(tmp_path_factory.mktemp("gpt2"), "gpt2")


def rollouts(n=6):
    return [
        Rollout(f"prompt {i}", "a b c " * i, [1] * i, [0.0] * i, 0.5, 3, True, i, 0.0, 0.1)
        for i in range(n)
    ]


def faulty(tmp_path, fail_calls, fault, **kw):
    return FaultyReward(str(tmp_path / "calls"), fail_calls, fault, **kw)


def reward_cfg(tmp_path, fail_calls, fault, **kw):
    return RewardModelConfig(
        kind="custom",
        class_path="tests.faulty_rewards:FaultyReward",
        kwargs={
            "counter_file": str(tmp_path / "calls"),
            "fail_calls": fail_calls,
            "fault": fault,
            **kw,
        },
    )


class Scorer:
    """The reward actor's ``score``, validation included (as ``RewardModelActor``)."""

    def __init__(self, model):
        self.model = model

    def score(self, prompts, completions):
        from online_dt.rewards import score_checked

        return score_checked(self.model, prompts, completions)


# -- scoring: retries, rejection, stop or skip ---------------------------------------------------


def test_failed_scoring_is_retried_then_succeeds(tmp_path):
    run = RunDir(tmp_path / "run")
    model = faulty(tmp_path, [1, 2], "raise")
    out = score_rollouts(LocalHandle(Scorer(model)).score, rollouts(), 0, NO_WAIT, run)
    assert out.attempts == 3 and out.rejected == 0 and out.reason is None
    assert out.rewards == [length_reward(r.completion) for r in rollouts()]
    assert not run.rejected_dir.exists()


def test_exhausted_retries_stop_and_keep_the_batch(tmp_path):
    run = RunDir(tmp_path / "run")
    model = faulty(tmp_path, [1, 2, 3], "raise")
    with pytest.raises(
        RewardBatchError,
        match=r"after 3 attempt\(s\): injected failure on call 3; the batch is kept in",
    ) as info:
        score_rollouts(LocalHandle(Scorer(model)).score, rollouts(), 4, NO_WAIT, run)
    assert info.value.reason == "error" and info.value.iteration == 4
    [kept] = run.read_rejected()
    assert kept["file"] == "iter-000004-error.json" and kept["reason"] == "error"
    assert kept["attempts"] == 3 and "injected failure on call 3" in kept["message"]
    assert [s["prompt"] for s in kept["samples"]] == [r.prompt for r in rollouts()]
    assert {s["policy_version"] for s in kept["samples"]} == {3}


@pytest.mark.parametrize(
    ("fault", "reason", "indices"),
    [("nan", "nan", [3]), ("inf", "inf", [0]), ("wrong_count", "wrong_count", list(range(6)))],
)
def test_invalid_scores_are_rejected_without_retry(tmp_path, fault, reason, indices):
    run = RunDir(tmp_path / "run")
    model = faulty(tmp_path, [1], fault)
    skip = NO_WAIT.model_copy(update={"on_reward_failure": "skip"})
    out = score_rollouts(LocalHandle(Scorer(model)).score, rollouts(), 2, skip, run)
    assert out.rewards is None and out.attempts == 1 and out.reason == reason
    assert out.rejected == 6
    [kept] = run.read_rejected()
    assert kept["reason"] == reason and kept["offending_indices"] == indices
    assert len(kept["samples"]) == 6


def test_lost_reward_worker_is_retried(tmp_path):
    calls = []

    class Dying:
        def score(self, prompts, completions):
            calls.append(1)
            if len(calls) == 1:
                return Done(error=WorkerLostError("ActorDiedError: killed"))
            return Done([0.0] * len(prompts))

    run = RunDir(tmp_path / "run")
    out = score_rollouts(Dying().score, rollouts(), 0, NO_WAIT, run)
    assert out.rewards == [0.0] * 6 and out.attempts == 2 and out.recovery_s >= 0
    never = NO_WAIT.model_copy(update={"reward_retries": 0})
    calls.clear()
    with pytest.raises(RewardBatchError) as info:
        score_rollouts(Dying().score, rollouts(), 1, never, run)
    assert info.value.reason == "worker_lost"


def test_restarting_reward_worker_is_waited_for_within_the_same_attempt(tmp_path):
    calls = []

    class Restarting:
        def score(self, prompts, completions):
            calls.append(1)
            if len(calls) <= 3:  # died mid-call, then unavailable while Ray restarts it
                return Done(error=WorkerLostError("ActorUnavailableError", restarting=True))
            return Done([1.0] * len(prompts))

    policy = NO_WAIT.model_copy(update={"reward_retries": 0})
    out = score_rollouts(Restarting().score, rollouts(), 0, policy, RunDir(tmp_path / "run"))
    assert out.rewards == [1.0] * 6 and out.attempts == 1 and out.workers_lost == 1
    assert len(calls) == 4 and out.recovery_s > 0


# -- a reward model that hangs: timed out, retried, rejected ------------------------------------

TIMED = NO_WAIT.model_copy(update={"reward_timeout_s": 0.5})


def test_thread_handle_times_out_without_ending_the_call():
    release = threading.Event()

    class Slow:
        def wait(self):
            release.wait(10)
            return "done"

        def fail(self):
            raise ValueError("bad input")

    handle = ThreadHandle(Slow())
    future = handle.wait()
    start = time.perf_counter()
    with pytest.raises(
        CallTimeoutError, match=r"Slow\.wait \(call 1\) did not return within 0\.2s"
    ):
        future.result(timeout=0.2)
    assert 0.2 <= time.perf_counter() - start < 2
    release.set()
    assert future.result(timeout=5) == "done", "only the wait ended, not the call"
    with pytest.raises(ValueError, match="bad input"):
        handle.fail().result(timeout=5)
    assert Done(3).result(timeout=0) == 3  # already run: nothing to wait for


def test_a_hung_call_times_out_is_retried_and_its_batch_rejected_whole(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="online_dt.loop.scoring")
    run = RunDir(tmp_path / "run")
    model = faulty(tmp_path, [1, 2, 3], "hang", hang_s=30)
    policy = TIMED.model_copy(update={"reward_retries": 2, "on_reward_failure": "skip"})
    start = time.perf_counter()
    out = score_rollouts(ThreadHandle(Scorer(model)).score, rollouts(), 5, policy, run)
    elapsed = time.perf_counter() - start
    assert out.rewards is None and out.reason == "timeout" and out.rejected == 6
    assert out.attempts == 3 and out.timeouts == 3
    assert out.metrics()["reward_timeouts"] == 3 and out.metrics()["rejected_samples"] == 6
    assert 1.5 <= elapsed < 10, "three waits of 0.5 s, not the 30 s hang"
    [kept] = run.read_rejected()
    assert kept["file"] == "iter-000005-timeout.json" and kept["reason"] == "timeout"
    assert kept["attempts"] == 3
    assert kept["errors"] == [
        f"CallTimeoutError: Scorer.score (call {k}) did not return within 0.5s" for k in (1, 2, 3)
    ]
    fields = ("prompt", "completion", "target", "policy_version", "prompt_index")
    assert [tuple(s[f] for f in fields) for s in kept["samples"]] == [
        tuple(getattr(r, f) for f in fields) for r in rollouts()
    ], "every sample kept whole"
    # in process the hung call cannot be ended, and the log says so at each timeout
    assert caplog.text.count("in process the call cannot be ended") == 3
    # with on_reward_failure=stop the same batch stops the run, named as a timeout
    with pytest.raises(RewardBatchError, match=r"\(timeout\) after 1 attempt") as info:
        score_rollouts(
            ThreadHandle(Scorer(faulty(tmp_path, [4], "hang", hang_s=30))).score,
            rollouts(),
            6,
            TIMED.model_copy(update={"reward_retries": 0}),
            run,
        )
    assert info.value.reason == "timeout" and info.value.rejected_file.endswith("-timeout.json")


def test_a_hung_worker_is_restarted_before_the_retry(tmp_path):
    calls_file = tmp_path / "calls"
    model = faulty(tmp_path, [1], "hang", hang_s=30)
    restarts = []

    def restart():  # what kill_and_restart does on Ray, here only recorded
        restarts.append(calls_file.stat().st_size)  # scoring calls made when it was called
        return 0.0

    run = RunDir(tmp_path / "run")
    score = ThreadHandle(Scorer(model)).score
    out = score_rollouts(score, rollouts(), 0, TIMED, run, restart=restart)
    assert out.rewards == [length_reward(r.completion) for r in rollouts()]
    assert out.attempts == 2 and out.timeouts == 1 and out.rejected == 0
    assert restarts == [1], "killed once, after the hung call and before the retry"
    assert out.recovery_s > 0 and not run.rejected_dir.exists()
    # the last attempt's hung worker is ended too, so it does not hold the next batch
    model.faults[3] = "hang"
    last = TIMED.model_copy(update={"reward_retries": 0, "on_reward_failure": "skip"})
    out = score_rollouts(score, rollouts(), 1, last, run, restart=restart)
    assert out.reason == "timeout" and out.timeouts == 1 and restarts == [1, 3]


def test_a_crashed_worker_is_waited_for_before_its_batch_is_timed_again(tmp_path):
    events = []

    class Crashing:
        def score(self, prompts, completions):
            events.append("score")
            if len(events) == 1:  # died mid-call; Ray restarts it
                return Done(error=WorkerLostError("ActorUnavailableError", restarting=True))
            return Done([1.0] * len(prompts))

    def back():  # what wait_until_back does on Ray: returns once the restarted actor answers
        events.append("back")
        return 0.0

    run = RunDir(tmp_path / "run")
    out = score_rollouts(Crashing().score, rollouts(), 0, TIMED, run, wait_for_restart=back)
    assert events == ["score", "back", "score"], "the batch is sent again once it is back"
    assert out.rewards == [1.0] * 6 and out.attempts == 1 and out.workers_lost == 1
    assert out.timeouts == 0


def test_loop_in_process_rejects_a_hung_batch_and_goes_on(tmp_path, base):
    cfg = loop_tests.make_cfg(tmp_path, base)
    reward = reward_cfg(tmp_path, [2, 3], "hang", hang_s=30)  # iteration 1, and its retry
    policy = TIMED.model_copy(update={"reward_retries": 1, "on_reward_failure": "skip"})
    cfg = cfg.model_copy(update={"reward_model": reward, "fault_tolerance": policy})
    history, plan = loop_tests.run_local(cfg)
    assert [m["reward_timeouts"] for m in history] == [0, 2, 0, 0]
    assert [m["reward_attempts"] for m in history] == [1, 2, 1, 1]
    assert [m["samples"] for m in history] == [8, 0, 8, 8]
    assert [m["rejected_samples"] for m in history] == [0, 8, 0, 0]
    [kept] = plan.run.read_rejected()
    assert kept["iteration"] == 1 and kept["reason"] == "timeout" and len(kept["samples"]) == 8
    assert len(export_dataset(plan.run.buffer_dir)) == 24


def test_a_local_run_with_an_abandoned_hung_call_still_exits(tmp_path, base):
    cfg = loop_tests.make_cfg(tmp_path, base, iterations=2, kl_samples=0)
    policy = TIMED.model_copy(update={"reward_retries": 0, "on_reward_failure": "skip"})
    reward = reward_cfg(tmp_path, [2], "hang")  # an hour: only a daemon thread lets it exit
    cfg = cfg.model_copy(update={"reward_model": reward, "fault_tolerance": policy})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "online_dt.run", "--config", str(path), "--local", "--no-progress"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "in process the call cannot be ended" in done.stdout + done.stderr
    assert [m["reward_timeouts"] for m in RunDir(cfg.online.run_dir).read_metrics()] == [0, 1]
    print(f"\nlocal run with an abandoned hung call exited in {time.perf_counter() - start:.0f}s")


# -- lost sampler replicas -----------------------------------------------------------------------


class Replica:
    """A sampler replica that 'dies' during the listed generate calls (1-based) and restarts
    at its initial weights, like a Ray actor re-created by ``max_restarts``."""

    def __init__(self, die_on=()):
        self.die_on, self.calls, self.version, self.loads = set(die_on), 0, 0, []

    def generate(self, prompts, targets, params):
        self.calls += 1
        if self.calls in self.die_on:
            self.version = 0  # the restarted process starts from its constructor's weights
            raise WorkerLostError("ActorDiedError: the actor's process died")
        return [
            Rollout(p, "x", [1], [0.0], t, self.version, True, i, 0.0, 0.0)
            for i, (p, t) in enumerate(zip(prompts, targets, strict=True))
        ]

    def load_weights(self, update):
        self.loads.append(update)
        self.version = update.version


def test_lost_sampler_chunk_is_reissued_with_current_weights():
    alive, dying = Replica(), Replica(die_on=[2])
    group = SamplerGroup([LocalHandle(alive), LocalHandle(dying)], retries=2)
    group.load_weights(WeightUpdate(5, "checkpoint")).result()
    prompts = [f"p{i}" for i in range(6)]
    first = group.generate(prompts, [0.0] * 6, SamplingParams(seed=0)).result()
    assert first.recovery.prompts_reissued == 0
    batch = group.generate(prompts, [0.0] * 6, SamplingParams(seed=0)).result()
    out = batch.rollouts
    assert [r.prompt for r in out] == prompts and [r.prompt_index for r in out] == list(range(6))
    assert {r.policy_version for r in out} == {5}, "the restarted replica got the weights again"
    assert batch.recovery.prompts_reissued == 3 and batch.recovery.prompts_dropped == 0
    assert batch.recovery.sampler_failures == 1 and len(first.rollouts) == 6


def test_sampler_restarted_between_calls_is_caught_by_its_policy_version():
    replica = Replica()
    group = SamplerGroup([LocalHandle(replica)], retries=1)
    group.load_weights(WeightUpdate(4, "checkpoint")).result()
    replica.version = 0  # killed and restarted by Ray between two calls: no error seen
    batch = group.generate(["a", "b"], [0.0] * 2, SamplingParams(seed=0)).result()
    assert {r.policy_version for r in batch.rollouts} == {4}
    assert batch.recovery.prompts_reissued == 2 and batch.recovery.sampler_failures == 1


class Gone(Replica):
    """A replica whose actor will not come back (no node with room for its bundle, or
    ``max_restarts`` spent) after its generate call number ``dies_at``: every call fails
    until ``back()``, as Ray's calls to a dead actor do; ``pid`` is the probe."""

    def __init__(self, dies_at=1):
        super().__init__()
        self.dies_at, self.dead, self.probes, self.resyncs = dies_at, False, 0, 0

    def generate(self, prompts, targets, params):
        if self.calls + 1 == self.dies_at:
            self.dead = True
        if self.dead:
            self.calls += 1
            raise WorkerLostError("ActorDiedError: the actor is dead")
        return super().generate(prompts, targets, params)

    def load_weights(self, update):
        self.resyncs += 1
        if self.dead:
            raise WorkerLostError("ActorDiedError: the actor is dead")
        super().load_weights(update)

    def pid(self):
        self.probes += 1
        if self.dead:
            raise WorkerLostError("ActorUnavailableError: restarting", restarting=True)
        return 1234

    def back(self):
        self.dead, self.version = False, 0  # restarted: the constructor's weights


def test_a_lost_replicas_chunk_goes_to_the_healthy_ones_and_it_leaves_the_split(caplog):
    prompts = [f"p{i}" for i in range(6)]
    alive, other, gone = Replica(), Replica(), Gone(dies_at=1)
    group = SamplerGroup([LocalHandle(r) for r in (alive, gone, other)], retries=2)
    group.load_weights(WeightUpdate(3, "checkpoint")).result()
    with caplog.at_level(logging.WARNING, "online_dt.loop.sampler_group"):
        batch = group.generate(prompts, [0.0] * 6, SamplingParams(seed=0)).result()
    out = batch.rollouts
    assert [r.prompt for r in out] == prompts and [r.prompt_index for r in out] == list(range(6))
    assert {r.policy_version for r in out} == {3}
    # its resync failed at the first re-issue: no waiting out the other retries
    assert gone.calls == 1 and batch.recovery.sampler_failures == 2
    assert batch.recovery.prompts_dropped == 0 and batch.recovery.prompts_reissued == 2
    assert batch.recovery.samplers_healthy == 2 and group.healthy() == [0, 2]
    assert sum("taken out of the split" in r.message for r in caplog.records) == 1
    # later rollouts and weight updates skip it; a probe-less group never asks it again
    group.load_weights(WeightUpdate(4, "checkpoint")).result()
    again = group.generate(prompts, [0.0] * 6, SamplingParams(seed=0)).result()
    assert [r.prompt for r in again.rollouts] == prompts and gone.calls == 1
    assert again.recovery.sampler_failures == 0 and again.recovery.prompts_reissued == 0
    assert (alive.calls, other.calls) == (3, 3) and gone.loads == [WeightUpdate(3, "checkpoint")]
    assert again.recovery.samplers_healthy == 2


def test_a_lost_replica_is_put_back_once_its_probe_answers(caplog):
    prompts = [f"p{i}" for i in range(4)]
    alive, gone = Replica(), Gone(dies_at=2)
    group = SamplerGroup([LocalHandle(alive), LocalHandle(gone)], retries=1, probe="pid")
    group.load_weights(WeightUpdate(1, "checkpoint")).result()
    params = SamplingParams(seed=0)
    assert group.generate(prompts, [0.0] * 4, params).result().recovery.samplers_healthy == 2
    lost = group.generate(prompts, [0.0] * 4, params).result()  # lost during this rollout
    assert lost.recovery.samplers_healthy == 1 and len(lost.rollouts) == 4
    group.load_weights(WeightUpdate(2, "checkpoint")).result()
    still = group.generate(prompts, [0.0] * 4, params).result()  # its probe fails
    assert still.recovery.samplers_healthy == 1 and gone.probes == 1
    gone.back()
    with caplog.at_level(logging.WARNING, "online_dt.loop.sampler_group"):
        back = group.generate(prompts, [0.0] * 4, params).result()  # answers: resynced
    assert gone.probes == 2 and back.recovery.samplers_healthy == 2
    assert [r.policy_version for r in back.rollouts] == [2] * 4
    assert [r.prompt for r in back.rollouts[2:]] == prompts[2:] and gone.version == 2
    assert sum("back in the split" in r.message for r in caplog.records) == 1


def test_every_replica_lost_drops_the_chunks_and_stops_the_rollout():
    group = SamplerGroup([LocalHandle(Gone()), LocalHandle(Gone())], retries=1)
    with pytest.raises(WorkerLostError, match="every sampler replica was lost"):
        group.generate(["a", "b"], [0.0] * 2, SamplingParams(seed=0)).result()
    assert group.healthy() == []
    # a replica that keeps failing its calls is taken out too, after its re-issues
    alive, flaky = Replica(), Replica(die_on=[1, 2, 3])
    group = SamplerGroup([LocalHandle(alive), LocalHandle(flaky)], 2)
    batch = group.generate(["a", "b", "c", "d"], [0.0] * 4, SamplingParams(seed=0)).result()
    assert [r.prompt for r in batch.rollouts] == ["a", "b", "c", "d"]
    assert batch.recovery.prompts_dropped == 0 and batch.recovery.prompts_reissued == 6
    assert group.healthy() == [0] and flaky.calls == 3
    # with one replica, losing it stops the rollout as before, after every re-issue's wait
    group = SamplerGroup([LocalHandle(Replica(die_on=[1, 2]))], retries=1)
    with pytest.raises(WorkerLostError, match="every sampler replica was lost"):
        group.generate(["a"], [0.0], SamplingParams(seed=0)).result()
    solo = Gone()
    group = SamplerGroup([LocalHandle(solo)], retries=3)
    group.load_weights(WeightUpdate(1, "checkpoint")).result()
    with pytest.raises(WorkerLostError, match="every sampler replica was lost"):
        group.generate(["a"], [0.0], SamplingParams(seed=0)).result()
    assert solo.resyncs == 1 + 3, "no other replica: it is waited for at every re-issue"


def test_sampler_lost_during_weight_sync_is_resynced_before_sampling():
    replica = Replica()

    class DiesOnSync(LocalHandle):
        def __getattr__(self, name):
            if name == "load_weights" and not replica.loads:
                replica.loads.append("lost")
                return lambda update: Done(error=WorkerLostError("died during sync"))
            return super().__getattr__(name)

    group = SamplerGroup([DiesOnSync(replica)])
    group.load_weights(WeightUpdate(7, "checkpoint")).result()  # no error: marked stale
    assert group.stale == {0}
    out = group.generate(["a"], [0.0], SamplingParams(seed=0)).result().rollouts
    assert out[0].policy_version == 7 and group.stale == set()


# -- the loop with a misbehaving reward model ----------------------------------------------------


def faulty_run_cfg(tmp_path, base, fail_calls, fault, on_failure, **online):
    cfg = loop_tests.make_cfg(tmp_path, base, **online)
    return cfg.model_copy(
        update={
            "reward_model": reward_cfg(tmp_path, fail_calls, fault),
            "fault_tolerance": NO_WAIT.model_copy(update={"on_reward_failure": on_failure}),
        }
    )


def test_loop_skips_a_rejected_batch_and_loses_nothing(tmp_path, base):
    cfg = faulty_run_cfg(tmp_path, base, [2], "nan", "skip")
    history, plan = loop_tests.run_local(cfg)
    assert [m["samples"] for m in history] == [8, 0, 8, 8]
    assert history[1]["rejected_samples"] == 8 and "achieved_mean" not in history[1]
    data = export_dataset(plan.run.buffer_dir)
    assert len(data) == 24 and all(math.isfinite(r) for r in data["achieved_reward"])
    assert sorted(data["sample_id"]) == list(range(24))
    [kept] = plan.run.read_rejected()
    assert kept["iteration"] == 1 and kept["reason"] == "nan" and len(kept["samples"]) == 8
    # metrics.jsonl is strict JSON (a browser can parse it)
    for line in plan.run.metrics_file.read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


def test_loop_stops_on_a_failed_batch_and_resumes_after_the_fix(tmp_path, base, capsys):
    cfg = faulty_run_cfg(tmp_path, base, [3, 4, 5], "raise", "stop")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert main(["--config", str(path), "--local", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "iteration 2" in err and "after 3 attempt(s)" in err and "--resume" in err
    run = RunDir(cfg.online.run_dir)
    assert [m["iteration"] for m in run.read_metrics()] == [0, 1]
    [kept] = run.read_rejected()
    assert kept["iteration"] == 2 and len(kept["samples"]) == 8
    # the 'fixed' reward model: no more failures
    fixed = "reward_model.kwargs.fail_calls=[]"
    assert main(["--resume", str(run.path), "--set", fixed, "--local", "--no-progress"]) == 0
    metrics = run.read_metrics()
    assert [m["iteration"] for m in metrics] == [0, 1, 2, 3]
    assert len(export_dataset(run.buffer_dir)) == 32
    # the run directory's config is the one the resumed run used
    saved = yaml.safe_load((run.path / "config.yaml").read_text())
    assert saved["reward_model"]["kwargs"]["fail_calls"] == []


def test_a_batch_failing_before_the_first_checkpoint_is_kept_with_its_run_dir(
    tmp_path, base, capsys
):
    cfg = faulty_run_cfg(tmp_path, base, [1, 2, 3], "raise", "stop")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert main(["--config", str(path), "--local", "--no-progress"]) == 1
    err = capsys.readouterr().err
    run = RunDir(cfg.online.run_dir)
    assert f"No checkpoint was written yet: --resume {run.path} starts the run over" in err
    [kept] = run.read_rejected()
    assert kept["iteration"] == 0 and len(kept["samples"]) == 8
    fixed = "reward_model.kwargs.fail_calls=[]"
    assert main(["--resume", str(run.path), "--set", fixed, "--local", "--no-progress"]) == 0
    assert [m["iteration"] for m in run.read_metrics()] == [0, 1, 2, 3]
    assert len(export_dataset(run.buffer_dir)) == 32


# -- bad configuration and inputs: one message, no run directory ---------------------------------


def run_main_with(tmp_path, base, capsys, *sets, prompts=None):
    cfg = loop_tests.make_cfg(tmp_path, base)
    path = tmp_path / "c.yaml"
    data = cfg.model_dump(mode="json")
    if prompts is not None:
        (tmp_path / "prompts.txt").write_text(prompts)
        data["prompts"] = {"source": "file", "path": str(tmp_path / "prompts.txt")}
    path.write_text(yaml.safe_dump(data))
    args = ["--config", str(path), "--local", "--no-progress"]
    for s in sets:
        args += ["--set", s]
    code = main(args)
    return code, capsys.readouterr().err, Path(cfg.online.run_dir)


@pytest.mark.parametrize(
    ("sets", "prompts", "expected"),
    [
        (["online.iterationz=3"], None, "online.iterationz: unknown key"),
        (["online.iterations=three"], None, "online.iterations: Input should be a valid integer"),
        (["training.lr=-1"], None, "training.lr: Input should be greater than 0"),
        (
            ["reward_model.kind=custom", "reward_model.class_path=no_such_pkg.mod:Reward"],
            None,
            "reward_model.class_path: custom reward model 'no_such_pkg.mod:Reward': could not "
            "import module 'no_such_pkg.mod'",
        ),
        (
            ["reward_model.kind=custom", "reward_model.class_path=tests.faulty_rewards:Nope"],
            None,
            "has no attribute 'Nope'; classes in 'tests.faulty_rewards': FaultyMultiReward,"
            " FaultyReward, WordsLettersReward",
        ),
        (
            ["model.name_or_path=/no/such/model"],
            None,
            "model.name_or_path: cannot load '/no/such/model'",
        ),
        ([], "\n\n", "holds no prompt"),
        ([], "the movie was " * 200 + "\nshort one\n", "prompts: 1 of 2 prompts from"),
        (["sampling.max_new_tokens=4000"], None, "sampling.max_new_tokens: 4000 new tokens"),
    ],
)
def test_bad_input_gives_one_message_and_no_run_dir(
    tmp_path, base, capsys, sets, prompts, expected
):
    code, err, run_dir = run_main_with(tmp_path, base, capsys, *sets, prompts=prompts)
    assert code == 2
    assert expected in err
    assert err.count("error:") == 1
    assert not run_dir.exists(), "no half-created run directory"


def test_failure_while_starting_workers_removes_the_new_run_dir(tmp_path, base, capsys):
    # the class imports, but constructing it fails (inside the worker, after the run dir exists)
    code, err, run_dir = run_main_with(
        tmp_path,
        base,
        capsys,
        "reward_model.kind=custom",
        "reward_model.class_path=tests.faulty_rewards:FaultyReward",
        "reward_model.kwargs.unknown_arg=1",
    )
    assert code == 1 and "unknown_arg" in err and "removed" in err
    assert not run_dir.exists()


# -- the disk fills up ---------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path):
    """A real 3 MiB tmpfs (the tests run as root, as CI does), unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def tmp_leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.endswith(".old")]


@pytest.mark.slow  # needs root (mount), as CI has; not in a Docker build's fast tier
def test_full_disk_stops_cleanly_and_resumes(tmp_path, base, capsys, small_fs):
    cfg = loop_tests.make_cfg(tmp_path, base, iterations=40, kl_samples=0)
    cfg = cfg.model_copy(
        update={"online": cfg.online.model_copy(update={"run_dir": small_fs / "run"})}
    )
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    code = main(["--config", str(path), "--local", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "cannot write to the run directory" in err and "No space left on device" in err
    run = RunDir(small_fs / "run")
    assert tmp_leftovers(run.path) == [], "no half-written checkpoint, shard or log"
    checkpoint = run.latest_checkpoint()
    state = json.loads((checkpoint / "state.json").read_text())
    done = [m["iteration"] for m in run.read_metrics()]
    assert done and state["iteration"] <= done[-1] < 39
    persisted = read_persisted(run.buffer_dir).to_pylist()
    assert [r["sample_id"] for r in persisted] == list(range(len(persisted)))
    # room again: the run continues from its last checkpoint to the end
    subprocess.run(["mount", "-o", "remount,size=200m", str(small_fs)], check=True)
    assert main(["--resume", str(run.path), "--local", "--no-progress"]) == 0
    assert [m["iteration"] for m in run.read_metrics()] == list(range(40))
    data = export_dataset(run.buffer_dir)
    assert sorted(data["sample_id"]) == list(range(len(data)))
    assert len(data) >= 40 * 8


# -- the driver is killed ------------------------------------------------------------------------


@pytest.mark.slow
def test_driver_sigkill_then_resume_keeps_every_persisted_sample(tmp_path, base):
    cfg = loop_tests.make_cfg(tmp_path, base, iterations=12, kl_samples=0)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    run = RunDir(cfg.online.run_dir)
    cmd = [sys.executable, "-m", "online_dt.run", "--config", str(path), "--local", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True)
    deadline = time.time() + 300
    while len(run.read_metrics()) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    time.sleep(0.3)  # land somewhere inside the next iteration
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {r["sample_id"]: r for r in read_persisted(run.buffer_dir).to_pylist()}
    stopped = json.loads((run.latest_checkpoint() / "state.json").read_text())["controller"]
    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "online_dt.run",
            "--resume",
            str(run.path),
            "--local",
            "--no-progress",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = run.read_metrics()
    assert [m["iteration"] for m in metrics] == list(range(12))
    data = read_persisted(run.buffer_dir).to_pylist()
    ids = [r["sample_id"] for r in data]
    assert len(ids) == len(set(ids)), "no sample twice"
    after = {r["sample_id"]: r for r in data}
    for sid, row in before.items():  # every sample persisted before the kill, unchanged
        assert after[sid] == row
    # the schedule continued from its checkpointed state and the kept samples: the first
    # resumed target is exactly what the schedule gives from there
    state = ScheduleState.from_dict(stopped["schedule"])
    stats = RewardStats.from_rewards(
        [r["achieved_reward"] for r in before.values()], cfg.schedule.k
    )
    expected, _ = next_target(cfg.schedule, state, stats)
    assert metrics[stopped["iteration"] + 1]["target"] == pytest.approx(expected, abs=1e-12)
    targets = [m["target"] for m in metrics]
    assert all(b - a <= 0.1 + 1e-9 for a, b in zip(targets, targets[1:], strict=False))


def test_a_resumed_run_discards_the_versions_published_after_its_checkpoint(tmp_path):
    from online_dt.rollout.weight_sync import CheckpointPublisher

    root = tmp_path / "weights"
    for v in (3, 4, 5):  # 5 was published after the last checkpoint, then the driver died
        (root / f"v{v:06d}").mkdir(parents=True)
    CheckpointPublisher(root).discard_after(4)  # what Learner.initial_update does on resume
    assert sorted(p.name for p in root.iterdir()) == ["v000003", "v000004"]


# -- the learner is lost (in-process fakes of a killed learner actor) ----------------------------


class MortalLearner(LocalHandle):
    """A learner handle whose 'process dies' at its ``die_at``-th call of ``method``: that call
    and every later one fail with ``WorkerLostError``, as calls to a Ray actor killed with
    ``SIGKILL`` do (the learner actor has no Ray restarts).

    It dies after the checkpoint it was writing in the background landed, as a learner
    process killed during training does (the write takes tens of milliseconds, a training
    call a second): a learner object does not stop when its handle fails, and a write landing
    after the restart would race the new learner's. A death during the write is
    ``test_a_learner_lost_while_writing_a_checkpoint_resumes_from_the_one_before``."""

    def __init__(self, learner, method="train", die_at=None, *, writes_land=True):
        super().__init__(learner)
        self.method, self.die_at, self.calls, self.dead = method, die_at, 0, False
        self.writes_land = writes_land

    def __getattr__(self, name):
        call = super().__getattr__(name)

        def maybe_dead(*args, **kwargs):
            if name == self.method:
                self.calls += 1
                if self.calls == self.die_at and not self.dead and self.writes_land:
                    self.target.wait_for_checkpoint()
                self.dead = self.dead or self.calls == self.die_at
            if self.dead:
                return Done(error=WorkerLostError("ActorDiedError: the learner's process died"))
            return call(*args, **kwargs)

        return maybe_dead


def mortal_run(tmp_path, base, die_at, restart_die_at=None, **settings):
    """A 4-iteration in-process run whose learner dies at ``die_at`` (method, call), and
    whose restarted learners die at ``restart_die_at`` (``None``: never); the restarts are
    recorded in the returned list (checkpoint, sampler version at the restart)."""
    from dataclasses import replace

    from online_dt.loop.plan import base_model_path, plan_run
    from online_dt.loop.workers import local_workers
    from online_dt.training.learner import Learner

    ft = settings.pop("fault_tolerance", {})
    cfg = loop_tests.make_cfg(tmp_path, base, kl_samples=0, **settings)
    cfg = cfg.model_copy(update={"fault_tolerance": NO_WAIT.model_copy(update=ft)})
    plan = plan_run(cfg, None)
    plan.prompts = loop_tests.PROMPTS
    workers = local_workers(cfg, base_model_path(cfg), plan.run.path, None)
    first = MortalLearner(workers.learner.target, *die_at)
    restarts = []

    def restart(checkpoint):
        name = None if checkpoint is None else checkpoint.name
        update = workers.samplers.update  # None until the samplers loaded a version
        restarts.append((name, None if update is None else update.version))
        fresh = checkpoint is None  # lost before the first checkpoint: start over
        learner = Learner(cfg, base_model_path(cfg), plan.run.path, checkpoint, start_over=fresh)
        return MortalLearner(learner, *(restart_die_at or ("train", None)))

    return plan, replace(workers, learner=first, restart_learner=restart), restarts


@pytest.mark.parametrize("resume_policy", ["keep", "discard"])
def test_a_lost_learner_is_restarted_from_its_checkpoint_and_the_samplers_resynced(
    tmp_path, base, resume_policy, caplog
):
    from online_dt.loop.plan import execute

    # the learner dies at its third checkpoint, iteration 2's: after its record was written
    # and after the samplers loaded version 3, published after the last checkpoint (iter 1)
    plan, workers, restarts = mortal_run(
        tmp_path, base, ("checkpoint", 3), resume_policy=resume_policy
    )
    first_tries = []
    caplog.set_level(logging.INFO, logger="online_dt.loop.recovery")
    history = execute(plan, workers, progress=False, callbacks=[first_tries.append])
    assert restarts == [("iter-000001", 3)], "restarted once, from iteration 1's checkpoint"
    metrics = plan.run.read_metrics()
    assert [m["iteration"] for m in metrics] == [0, 1, 2, 3], "iteration 2 once, run again"
    assert [m["iteration"] for m in history] == [0, 1, 2, 3]
    assert [m["iteration"] for m in first_tries] == [0, 1, 2, 2, 3]
    assert [m["learner_restarts"] for m in metrics] == [0, 0, 1, 0]
    assert metrics[2]["learner_recovery_s"] > 0
    assert [m["learner_recovery_s"] for m in metrics[:2] + metrics[3:]] == [0.0] * 3
    # the samplers were resynced to the checkpoint's weights (version 2), not the lost
    # learner's version 3: the iteration run again sampled from version 2, then published 3
    assert [m["sample_policy_version_min"] for m in metrics] == [0, 1, 2, 3]
    assert [m["policy_version"] for m in metrics] == [1, 2, 3, 4]
    if resume_policy == "discard":  # the same schedule state and buffer: the same target
        assert metrics[2]["target"] == pytest.approx(first_tries[2]["target"], abs=1e-12)
    rows = read_persisted(plan.run.buffer_dir).to_pylist()
    ids = [r["sample_id"] for r in rows]
    assert ids == list(range(len(ids))), "every persisted sample once, no gap"
    per_iteration = [sum(r["iteration"] == i for r in rows) for i in range(4)]
    # keep: the first try's 8 samples of iteration 2 stay once; discard: they are dropped
    assert per_iteration == ([8, 8, 16, 8] if resume_policy == "keep" else [8, 8, 8, 8])
    said = caplog.text
    assert "the learner was lost" in said and "restarting it from iter-000001" in said
    assert "restart 1 of 2" in said and "every sampler resynced" in said


@pytest.mark.parametrize("dies_in", ["append", "train"])
def test_a_learner_lost_in_the_warm_start_is_replaced_by_a_fresh_one_and_the_run_starts_over(
    tmp_path, base, dies_in, caplog
):
    """The learner dies in the warm start, before the run's first checkpoint: in its append
    (``append`` 1, nothing persisted yet) or in its training (``train`` 1, after its samples
    were persisted). A fresh learner replaces it, deletes what it persisted, and the warm start
    runs again: the buffer holds its samples once, and every iteration runs once."""
    from online_dt.loop.plan import execute

    plan, workers, restarts = mortal_run(
        tmp_path,
        base,
        (dies_in, 1),
        warm_start_samples_per_prompt=2,
        warm_start_prompts=6,
        warm_start_steps=2,
    )
    caplog.set_level(logging.INFO, logger="online_dt")
    history = execute(plan, workers, progress=False)
    assert restarts == [(None, None)], "one fresh learner; the samplers never loaded a version"
    metrics = plan.run.read_metrics()
    assert [m["iteration"] for m in metrics] == [0, 1, 2, 3] == [m["iteration"] for m in history]
    assert [m["learner_restarts"] for m in metrics] == [1, 0, 0, 0]
    # the warm start's checkpoint published version 1; each iteration one more
    assert [m["policy_version"] for m in metrics] == [2, 3, 4, 5]
    rows = read_persisted(plan.run.buffer_dir).to_pylist()
    assert [r["sample_id"] for r in rows] == list(range(len(rows)))
    per_iteration = [sum(r["iteration"] == i for r in rows) for i in range(-1, 4)]
    assert per_iteration == [12, 8, 8, 8, 8], "the warm start's 6 x 2 samples once"
    assert plan.run.read_warm_start()["samples"] == 12
    said = caplog.text
    assert "before the run's first checkpoint; starting a fresh one (restart 1 of 2)" in said
    deleted = 1 if dies_in == "train" else 0
    assert f"deleted {deleted} replay-buffer shard(s) persisted before it" in said


def test_a_run_stopped_in_its_warm_start_is_resumed_from_the_start(tmp_path, base, caplog):
    """In process the learner cannot be restarted: lost in the warm start's training, after
    its samples were persisted, it stops the run with no checkpoint. ``--resume`` then starts
    the run over with a fresh learner, which deletes those samples."""
    from dataclasses import replace

    from online_dt.loop.plan import base_model_path, execute, plan_run
    from online_dt.loop.recovery import LearnerLostError
    from online_dt.loop.workers import local_workers

    plan, workers, _ = mortal_run(
        tmp_path,
        base,
        ("train", 1),
        warm_start_samples_per_prompt=2,
        warm_start_prompts=6,
        warm_start_steps=2,
    )
    with pytest.raises(LearnerLostError, match="cannot be restarted here"):
        execute(plan, replace(workers, restart_learner=None), progress=False)
    assert len(read_persisted(plan.run.buffer_dir)) == 12, "the warm start's append landed"
    caplog.set_level(logging.WARNING, logger="online_dt")
    resumed = plan_run(None, plan.run.path)
    assert resumed.start_over and resumed.checkpoint is None and resumed.schedule_state is None
    assert "has no checkpoint yet (it stopped in its warm start): it starts over" in caplog.text
    resumed.prompts = loop_tests.PROMPTS
    cfg = resumed.cfg
    again = local_workers(cfg, base_model_path(cfg), resumed.run.path, None, start_over=True)
    execute(resumed, again, progress=False)
    assert [m["iteration"] for m in resumed.run.read_metrics()] == [0, 1, 2, 3]
    rows = read_persisted(plan.run.buffer_dir).to_pylist()
    assert [sum(r["iteration"] == i for r in rows) for i in range(-1, 4)] == [12, 8, 8, 8, 8]


def test_starting_over_takes_no_checkpoint(tmp_path, base):
    from online_dt.training.learner import Learner

    cfg = loop_tests.make_cfg(tmp_path, base)
    with pytest.raises(ValueError, match="start_over is a fresh start"):
        Learner(cfg, str(base), tmp_path / "run", tmp_path / "ckpt", start_over=True)


def test_a_learner_lost_while_writing_a_checkpoint_resumes_from_the_one_before(
    tmp_path, base, monkeypatch
):
    """A learner killed while its background checkpoint of iteration 1 is being written
    leaves no trace of it (``latest.json`` still names iteration 0's): the restarted learner
    continues from iteration 0's checkpoint and iteration 1 runs again."""
    from dataclasses import replace

    import online_dt.training.learner as learner_module
    from online_dt.loop.plan import execute

    write = learner_module.atomic_write_dir
    killed = []

    def killed_during_the_first_write_of_iteration_1(path, writer):
        if path.name == "iter-000001" and not killed:
            killed.append(path.name)  # the process dies here: nothing of the write lands
            raise SystemExit("killed")
        write(path, writer)

    monkeypatch.setattr(
        learner_module, "atomic_write_dir", killed_during_the_first_write_of_iteration_1
    )
    plan, workers, restarts = mortal_run(tmp_path, base, ("train", 3))
    learner = workers.learner.target
    workers = replace(workers, learner=MortalLearner(learner, "train", 3, writes_land=False))
    first_tries = []
    execute(plan, workers, progress=False, callbacks=[first_tries.append])
    assert killed == ["iter-000001"]
    assert restarts == [("iter-000000", 2)], "from iteration 0's checkpoint, the one complete"
    assert [m["iteration"] for m in first_tries] == [0, 1, 1, 2, 3]
    assert [m["iteration"] for m in plan.run.read_metrics()] == [0, 1, 2, 3]
    assert plan.run.latest_checkpoint().name == "iter-000003"


@pytest.mark.parametrize(
    ("max_restarts", "restarted_dies_in"),
    [(0, "train"), (1, "train"), (2, "initial_update")],  # the last: lost while it starts
)
def test_a_learner_lost_once_too_often_stops_the_run_with_the_resume_message(
    tmp_path, base, max_restarts, restarted_dies_in
):
    from online_dt.loop.plan import execute
    from online_dt.loop.recovery import LearnerLostError
    from online_dt.run import stopped_message

    plan, workers, restarts = mortal_run(
        tmp_path,
        base,
        ("train", 2),  # iteration 1's training
        restart_die_at=(restarted_dies_in, 1),  # every restarted learner dies at once
        fault_tolerance={"learner_max_restarts": max_restarts},
    )
    with pytest.raises(LearnerLostError) as info:
        execute(plan, workers, progress=False)
    assert len(restarts) == max_restarts
    assert f"fault_tolerance.learner_max_restarts={max_restarts}" in str(info.value)
    assert [m["iteration"] for m in plan.run.read_metrics()] == [0]
    message = stopped_message(plan, info.value)
    assert "the learner was lost" in message and "ActorDiedError" in message
    assert f"checkpoint is iter-000000; continue with --resume {plan.run.path}" in message

"""Faults on a real Ray cluster (one local cluster for the module): a sampler actor's process
is killed mid-rollout, the reward actor's process dies mid-call, the reward actor hangs, and
the driver is SIGKILLed and the run resumed by a new driver. Each test prints its recovery
figures (``-s``).

Also ``sampler.weight_sync: ray`` on the same cluster: a policy state travelling through the
object store to a sampler actor, and a sampler actor restarted without weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from online_dt.config import OnlineRunConfig, load_config
from online_dt.launch.rundir import RunDir, RunDirError
from online_dt.loop.plan import plan_run
from online_dt.replay.shards import read_persisted
from tests.tiny import build_tiny_model

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray cluster with 2 CPUs; this process is its first driver."""
    import ray

    os.environ["RAY_task_events_report_interval_ms"] = "100"  # noqa: SIM112 (Ray's own name)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(
        num_cpus=2,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},  # tests.faulty_rewards in actors
        log_to_driver=False,
    )
    address = ray.get_runtime_context().gcs_address
    # the state API (list_tasks, list_actors) finds its cluster by RAY_ADDRESS: name this one,
    # or it refuses when another Ray instance runs on the machine
    previous = os.environ.get("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = address
    yield address
    ray.shutdown()
    if previous is None:
        os.environ.pop("RAY_ADDRESS", None)
    else:
        os.environ["RAY_ADDRESS"] = previous


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("gpt2"), "gpt2")


def online_cfg(run_dir, **sections) -> OnlineRunConfig:
    """``configs/plain.yaml`` (no warm start, no best command: the figures of
    docs/reliability.md are its) with ``sections`` overriding its fields."""
    overrides = {
        "online": {"run_dir": str(run_dir), "kl_samples": 0},
        "dashboard": {"enabled": False},
    }
    for key, value in sections.items():
        overrides.setdefault(key, {}).update(value)
    return load_config(REPO / "configs/plain.yaml", OnlineRunConfig, overrides)


def kill_when_running(method: str, address: str, timeout: float = 180.0) -> dict:
    """Wait until a *new* actor task ``method`` (e.g. ``SamplerActor.generate``) runs on the
    cluster at ``address`` (named: other Ray instances may run on this machine), then SIGKILL
    its actor's process. Tasks already known when called are ignored, so a finished
    call whose end has not been reported yet is never mistaken for a running one."""
    from ray.util.state import list_actors, list_tasks

    known = {
        t.task_id
        for t in list_tasks(address=address, filters=[("name", "=", method)], limit=10_000)
    }
    deadline = time.time() + timeout
    while time.time() < deadline:
        running = list_tasks(
            address=address, filters=[("name", "=", method), ("state", "=", "RUNNING")]
        )
        fresh = [t for t in running if t.task_id not in known]
        if fresh:
            actor = list_actors(address=address, filters=[("actor_id", "=", fresh[0].actor_id)])[0]
            os.kill(actor.pid, signal.SIGKILL)
            return {"killed_at": time.perf_counter(), "pid": actor.pid}
        time.sleep(0.05)
    raise TimeoutError(f"no new {method} ran within {timeout}s")


def kill_after(iteration: int, method: str, killed: dict, address: str):
    """A metrics callback that, after ``iteration``'s record, kills ``method``'s actor as soon
    as its next call runs (on a thread, so the loop goes on meanwhile); the outcome, or the
    thread's error, lands in ``killed``."""

    def kill() -> None:
        try:
            killed.update(kill_when_running(method, address))
        except Exception as e:
            killed["error"] = e

    def callback(record):
        if record["iteration"] == iteration:
            killed["thread"] = threading.Thread(target=kill)
            killed["thread"].start()

    return callback


@pytest.mark.parametrize("weight_sync", ["checkpoint", "ray"])
def test_sampler_killed_mid_rollout_is_restarted_and_resynced(
    ray_address, embedded_model_dir, tmp_path, weight_sync
):
    """The vLLM sampler (asked for: ``auto`` is the HF sampler on CPU); with ``weight_sync: ray``
    its engine runs inside the actor's process and the restarted actor rebuilds it from the
    skeleton, without weights."""
    from actors.controller import run_on_ray

    cfg = online_cfg(
        tmp_path / "run",
        online={"iterations": 4, "prompts_per_iteration": 128, "train_steps_per_iteration": 4},
        fault_tolerance={"retry_backoff_s": 0.2},
        sampler={"backend": "vllm", "weight_sync": weight_sync},
    )
    plan = plan_run(cfg, None)
    killed: dict = {}
    start = time.perf_counter()
    assert (
        run_on_ray(
            plan,
            progress=False,
            callbacks=[kill_after(1, "SamplerActor.generate", killed, ray_address)],
        )
        == 0
    )
    killed["thread"].join()
    assert "error" not in killed, killed.get("error")
    metrics = plan.run.read_metrics()
    assert [m["iteration"] for m in metrics] == [0, 1, 2, 3]
    [hit] = [m for m in metrics if m["sampler_failures"]]  # the rollout after iteration 1
    assert hit["iteration"] >= 2 and hit["prompts_reissued"] == 128
    assert all(m["prompts_dropped"] == 0 for m in metrics)
    assert all(m["samples"] == 512 for m in metrics), "nothing lost"
    # the restarted sampler got the current weights: every sample of iteration i is version i
    assert [m["sample_policy_version_min"] for m in metrics] == [0, 1, 2, 3]
    rows = read_persisted(plan.run.buffer_dir).to_pylist()
    assert len(rows) == 4 * 512 and len({r["sample_id"] for r in rows}) == len(rows)
    assert {(r["iteration"], r["policy_version"]) for r in rows} == {(i, i) for i in range(4)}
    assert no_weight_files(plan.run) == (weight_sync == "ray")
    assert "sampler backend: vLLM" in (plan.run.logs_dir / "sampler-0.log").read_text()
    print(
        f"\n{weight_sync} weight sync, sampler killed mid-rollout: recovered in "
        f"{hit['sampler_recovery_s']:.1f}s "
        f"(restart, resync, re-issue of 128 prompts), 0 samples lost, "
        f"run {time.perf_counter() - start:.0f}s"
    )


def test_reward_actor_death_and_errors(ray_address, tiny, tmp_path):
    from actors.controller import run_on_ray

    cfg = online_cfg(
        tmp_path / "run",
        model={"name_or_path": str(tiny)},
        sampler={"backend": "hf"},
        sampling={"max_new_tokens": 8},
        online={"iterations": 4, "prompts_per_iteration": 16, "train_steps_per_iteration": 2},
        reward_model={
            "kind": "custom",
            "class_path": "tests.faulty_rewards:FaultyReward",
            # call 2 (iteration 1): the process dies mid-call; calls 4-6 (iteration 2) raise
            "kwargs": {
                "counter_file": str(tmp_path / "calls"),
                "faults": {"2": "exit", "4": "raise", "5": "raise", "6": "raise"},
                # the restarted actor takes 7 s to build, longer than the timeout below: the
                # batch sent again after the death must not time out while Ray restarts it
                "restart_delay_s": 7.0,
            },
        },
        fault_tolerance={
            "reward_retries": 2,
            "on_reward_failure": "skip",
            "retry_backoff_s": 0.2,
            # Ray reports the in-flight call's failure 1.6-1.8 s after the process died (Ray
            # 2.60, idle 2 cores; more on a loaded machine, where 2 s was once too short)
            "reward_timeout_s": 5.0,
        },
    )
    plan = plan_run(cfg, None)
    assert run_on_ray(plan, progress=False) == 0
    metrics = plan.run.read_metrics()
    assert [m["reward_attempts"] for m in metrics] == [1, 1, 3, 1]
    assert [m["reward_workers_lost"] for m in metrics] == [0, 1, 0, 0]
    assert [m["reward_timeouts"] for m in metrics] == [0, 0, 0, 0]
    assert metrics[1]["reward_recovery_s"] > 0
    assert [m["samples"] for m in metrics] == [64, 64, 0, 64]
    assert [m["rejected_samples"] for m in metrics] == [0, 0, 64, 0]
    [kept] = plan.run.read_rejected()
    assert kept["iteration"] == 2 and kept["reason"] == "error" and len(kept["samples"]) == 64
    rows = read_persisted(plan.run.buffer_dir).to_pylist()
    assert len(rows) == 3 * 64 and len({r["sample_id"] for r in rows}) == len(rows)
    print(
        f"\nreward actor died mid-call: restarted and scored in "
        f"{metrics[1]['reward_recovery_s']:.1f}s, 0 samples lost; a batch failing 3 times "
        f"was skipped, its 64 samples kept in rejected/"
    )


def test_hung_reward_actor_is_timed_out_killed_and_restarted(ray_address, tiny, tmp_path):
    from ray.util.state import list_actors

    from actors.controller import run_on_ray

    timeout_s = 2.0
    cfg = online_cfg(
        tmp_path / "run",
        model={"name_or_path": str(tiny)},
        sampler={"backend": "hf"},
        sampling={"max_new_tokens": 8},
        online={"iterations": 4, "prompts_per_iteration": 16, "train_steps_per_iteration": 2},
        reward_model={
            "kind": "custom",
            "class_path": "tests.faulty_rewards:FaultyReward",
            # call 2, iteration 1's first: the actor hangs (far longer than the test may take)
            "kwargs": {"counter_file": str(tmp_path / "calls"), "faults": {"2": "hang"}},
        },
        fault_tolerance={
            "reward_timeout_s": timeout_s,
            "reward_retries": 2,
            "on_reward_failure": "skip",
            "retry_backoff_s": 0.2,
        },
    )
    plan = plan_run(cfg, None)
    pids: list[int] = []  # the reward actor's process after each iteration

    def reward_pid(record):
        [actor] = list_actors(
            address=ray_address,
            filters=[("class_name", "=", "RewardModelActor"), ("state", "=", "ALIVE")],
        )
        pids.append(actor.pid)

    start = time.perf_counter()
    assert run_on_ray(plan, progress=False, callbacks=[reward_pid]) == 0
    metrics = plan.run.read_metrics()
    assert [m["reward_timeouts"] for m in metrics] == [0, 1, 0, 0]
    assert [m["reward_attempts"] for m in metrics] == [1, 2, 1, 1]
    assert [m["reward_workers_lost"] for m in metrics] == [0, 0, 0, 0]
    assert [m["samples"] for m in metrics] == [64] * 4, "the hung batch was scored on retry"
    assert [m["rejected_samples"] for m in metrics] == [0] * 4
    assert plan.run.read_rejected() == []
    # the hung process was killed (it does not hold its CPU) and Ray restarted the actor once
    assert pids[0] != pids[1] and pids[1:] == [pids[1]] * 3
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)
    assert (tmp_path / "calls").stat().st_size == 5, "calls 1-5: the hung one, then 4 scored"
    rows = read_persisted(plan.run.buffer_dir).to_pylist()
    assert len(rows) == 4 * 64 and len({r["sample_id"] for r in rows}) == len(rows)
    recovery = metrics[1]["reward_recovery_s"]
    print(
        f"\nreward actor hung: timed out after {timeout_s:.0f}s, killed, restarted and the "
        f"batch scored {recovery:.1f}s later ({timeout_s + recovery:.1f}s from the call), "
        f"0 samples lost; run {time.perf_counter() - start:.0f}s"
    )


def alive_actor_ids(address: str) -> set[str]:
    """Ids of the actors ALIVE on the cluster at ``address``."""
    from ray.util.state import list_actors

    alive = list_actors(address=address, filters=[("state", "=", "ALIVE")], limit=10_000)
    return {a.actor_id for a in alive}


def wait_until_dead(address: str, actor_ids: set[str], timeout: float = 60.0) -> None:
    """Return once Ray reports every actor of ``actor_ids`` ``DEAD``."""
    from ray.util.state import list_actors

    deadline = time.time() + timeout
    while time.time() < deadline:
        states = {a.actor_id: a.state for a in list_actors(address=address, limit=10_000)}
        if all(states.get(i) == "DEAD" for i in actor_ids):
            return
        time.sleep(0.1)
    raise TimeoutError(f"actors {sorted(actor_ids)} were not all DEAD within {timeout}s")


def start_driver(
    cfg: OnlineRunConfig, tmp_path: Path, address: str
) -> tuple[subprocess.Popen, RunDir, dict[str, str], set[str]]:
    """Start ``python -m online_dt.run`` on ``cfg`` (written to ``tmp_path/c.yaml``) as a
    driver of the cluster at ``address``; return the process, its run directory, the
    environment it ran with and the ids of the actors alive before it."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {**os.environ, "RAY_ADDRESS": address, "PYTHONPATH": str(REPO)}
    known = alive_actor_ids(address)
    driver = subprocess.Popen(
        [sys.executable, "-m", "online_dt.run", "--config", str(path), "--no-progress"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return driver, RunDir(cfg.online.run_dir), env, known


def resume_driver(run: RunDir, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``python -m online_dt.run --resume RUN`` as a new driver, to its end (10 min at most)."""
    return subprocess.run(
        [sys.executable, "-m", "online_dt.run", "--resume", str(run.path), "--no-progress"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_driver_killed_then_resumed_by_a_new_driver(ray_address, tiny, tmp_path):
    cfg = online_cfg(
        tmp_path / "run",
        model={"name_or_path": str(tiny)},
        sampler={"backend": "hf"},
        sampling={"max_new_tokens": 8},
        online={"iterations": 8, "prompts_per_iteration": 16, "train_steps_per_iteration": 2},
    )
    driver, run, env, known = start_driver(cfg, tmp_path, ray_address)
    deadline = time.time() + 300
    while len(run.read_metrics()) < 3 and driver.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert driver.poll() is None, "the run ended before it could be killed"
    time.sleep(0.3)
    driver.send_signal(signal.SIGKILL)  # Ray then kills the job's actors and placement group
    driver.wait()
    killed_at = time.time()
    # what was persisted is read once the job's learner can no longer write (its actors DEAD)
    wait_until_dead(ray_address, alive_actor_ids(ray_address) - known)
    before = {r["sample_id"]: r for r in read_persisted(run.buffer_dir).to_pylist()}
    stopped = json.loads((run.latest_checkpoint() / "state.json").read_text())["controller"]
    resumed = resume_driver(run, env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = run.read_metrics()
    assert [m["iteration"] for m in metrics] == list(range(8))
    rows = read_persisted(run.buffer_dir).to_pylist()
    assert len({r["sample_id"] for r in rows}) == len(rows), "no sample twice"
    after = {r["sample_id"]: r for r in rows}
    changed = [(row, after.get(sid)) for sid, row in before.items() if after.get(sid) != row]
    assert not changed, f"{len(changed)} persisted samples changed or lost, e.g. {changed[0]}"
    first_resumed = next(m for m in metrics if m["iteration"] == stopped["iteration"] + 1)
    print(
        f"\ndriver SIGKILLed after iteration {stopped['iteration']} was checkpointed: "
        f"{len(before)} persisted samples all kept once; the new driver finished iteration "
        f"{first_resumed['iteration']} {first_resumed['time'] - killed_at:.0f}s after the kill"
    )


def warm_start_cfg(run_dir: Path, tiny: Path, **online: int) -> OnlineRunConfig:
    """Two iterations of 16 prompts on the tiny model after a warm start on 32 prompts x 2
    samples (64 of iteration -1), with ``online``'s other settings."""
    warm = {"warm_start_samples_per_prompt": 2, "warm_start_prompts": 32}
    return online_cfg(
        run_dir,
        model={"name_or_path": str(tiny)},
        sampler={"backend": "hf"},
        sampling={"max_new_tokens": 8},
        online={"iterations": 2, "prompts_per_iteration": 16, **warm, **online},
    )


def test_driver_killed_in_the_warm_start_then_resumed_starts_over(ray_address, tiny, tmp_path):
    """SIGKILL the driver in the warm start, after its samples were persisted and before the
    run's first checkpoint: ``--resume`` by a new driver starts the run over (its first learner
    deletes those samples) and finishes it with the warm start's samples once and each
    iteration once."""
    # seconds of warm-start training after its append: time to kill the driver
    cfg = warm_start_cfg(tmp_path / "run", tiny, train_steps_per_iteration=2, warm_start_steps=60)
    driver, run, env, known = start_driver(cfg, tmp_path, ray_address)

    def persisted() -> int:
        return len(read_persisted(run.buffer_dir)) if run.buffer_dir.exists() else 0

    deadline = time.time() + 300
    while not persisted() and driver.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert driver.poll() is None, "the run ended before it could be killed"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    wait_until_dead(ray_address, alive_actor_ids(ray_address) - known)
    assert persisted() == 64, "the warm start's append landed"
    with pytest.raises(RunDirError):
        run.latest_checkpoint()
    resumed = resume_driver(run, env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "it starts over" in resumed.stdout + resumed.stderr
    assert [m["iteration"] for m in run.read_metrics()] == [0, 1]
    rows = read_persisted(run.buffer_dir).to_pylist()
    assert sorted(r["sample_id"] for r in rows) == list(range(len(rows))), "the old ones deleted"
    assert [sum(r["iteration"] == i for r in rows) for i in (-1, 0, 1)] == [64, 64, 64]
    assert run.latest_checkpoint().name == "iter-000001"


# -- weight_sync: ray (the object store instead of files) ----------------------------------------

RAY_SYNC = {"backend": "hf", "weight_sync": "ray"}
PROMPTS = ["the movie was", "honestly the game is fun and", "i", "this hotel is awful, dirty"]
TARGETS = [0.9, -0.5, 0.1, -1.0]


def no_weight_files(run: RunDir) -> bool:
    return not run.weights_dir.exists() or not any(run.weights_dir.iterdir())


def test_sampler_actor_loads_a_policy_state_from_the_object_store(ray_address, tiny, tmp_path):
    """The Ray path of ``weight_sync: ray`` without the loop: the learner actor's update carries
    an ObjectRef, the sampler actor (built from the skeleton, without weights) resolves it and
    samples what the same version samples in this process."""
    import ray

    from actors.ray_futures import RayHandle
    from actors.workers import LearnerActor, SamplerActor
    from online_dt.policy.policy import RewardConditionedPolicy
    from online_dt.rollout.hf_sampler import HFSampler
    from online_dt.rollout.sampler import NO_WEIGHTS, NoWeightsError, SamplingParams
    from online_dt.rollout.weight_sync import PolicySkeleton, PolicyState

    cfg = online_cfg(
        tmp_path / "run",
        model={"name_or_path": str(tiny)},
        sampler={**RAY_SYNC, "base_logprobs": False},  # nothing reads them without weights
        sampling={"max_new_tokens": 8},
        buffer={"importance_weighting": False},
    )
    run = RunDir(cfg.online.run_dir)
    learner = RayHandle(
        ray.remote(LearnerActor).options(num_cpus=0).remote(cfg, str(tiny), str(run.path), None)
    )
    first = learner.initial_update().result()
    assert first.version == 0 and isinstance(first.state, ray.ObjectRef)
    skeleton = learner.sampler_skeleton().result()
    assert isinstance(skeleton, PolicySkeleton)
    sampler = RayHandle(ray.remote(SamplerActor).options(num_cpus=0).remote(cfg, skeleton))
    params = SamplingParams(n=2, max_new_tokens=8, seed=11)
    try:
        assert sampler.policy_version().result() == NO_WEIGHTS
        with pytest.raises(NoWeightsError):
            sampler.generate(PROMPTS, TARGETS, params).result()

        sampler.load_weights(first).result()
        version0 = sampler.generate(PROMPTS, TARGETS, params).result()
        # the same config builds the same version 0 here: the actor got it from the store
        fresh = RewardConditionedPolicy.fresh(cfg, tiny).eval()
        here = HFSampler(fresh).generate(PROMPTS, TARGETS, params)
        assert [r.token_ids for r in version0] == [r.token_ids for r in here]
        assert {r.policy_version for r in version0} == {0}

        learner.append(version0, [r.target for r in version0], 0, 0.0).result()
        learner.train(4).result()
        second = learner.publish().result()
        assert second.version == 1 and isinstance(second.state, ray.ObjectRef)
        sampler.load_weights(second).result()
        version1 = sampler.generate(PROMPTS, TARGETS, params).result()
        assert {r.policy_version for r in version1} == {1}
        # the driver resolves the same object: loaded here, it samples what the actor sampled
        state = ray.get(second.state)
        assert isinstance(state, PolicyState) and "lm_head.weight" in state.tied
        local = HFSampler(fresh)
        local.load_weights(replace(second, state=state))
        expected = local.generate(PROMPTS, TARGETS, params)
        assert [r.token_ids for r in version1] == [r.token_ids for r in expected]
        gaps = [
            abs(a - b)
            for r, e in zip(version1, expected, strict=True)
            for a, b in zip(r.logprobs, e.logprobs, strict=True)
        ]
        assert max(gaps) < 1e-5
        assert [r.token_ids for r in version1] != [r.token_ids for r in version0]
        assert no_weight_files(run)
    finally:
        ray.kill(sampler.actor)
        ray.kill(learner.actor)


def restart_sampler_actor(address: str, timeout: float = 120.0) -> dict:
    """SIGKILL the (one) sampler actor's process between calls and wait until Ray has
    re-created it (a new process, its constructor run again)."""
    from ray.util.state import list_actors

    alive = [("class_name", "=", "SamplerActor"), ("state", "=", "ALIVE")]
    [actor] = list_actors(address=address, filters=alive)
    os.kill(actor.pid, signal.SIGKILL)
    deadline = time.time() + timeout
    while time.time() < deadline:
        [now] = list_actors(address=address, filters=[("actor_id", "=", actor.actor_id)])
        if now.state == "ALIVE" and now.pid != actor.pid:
            return {"old_pid": actor.pid, "new_pid": now.pid}
        time.sleep(0.1)
    raise TimeoutError(f"the sampler actor was not restarted within {timeout}s")


def test_ray_weight_sync_restarted_sampler_is_resent_the_latest_version(
    ray_address, tiny, tmp_path
):
    """A sampler actor Ray re-creates is rebuilt from its skeleton, without weights (nothing
    on disk to start from); asked to sample, it says so, and the loop re-sends it the latest
    update (its ObjectRef is still held by the sampler group) and re-issues its prompts."""
    from actors.controller import run_on_ray

    cfg = online_cfg(
        tmp_path / "run",
        model={"name_or_path": str(tiny)},
        sampler=RAY_SYNC,
        sampling={"max_new_tokens": 8},
        online={
            "iterations": 4,
            "prompts_per_iteration": 16,
            "train_steps_per_iteration": 2,
            "mode": "sync",
        },
        fault_tolerance={"retry_backoff_s": 0.2},
    )
    plan = plan_run(cfg, None)
    restarted: dict = {}

    def restart_after_iteration_1(record: dict) -> None:
        if record["iteration"] == 1:  # version 2 is loaded (sync mode); the next rollout waits
            restarted.update(restart_sampler_actor(ray_address))

    assert run_on_ray(plan, progress=False, callbacks=[restart_after_iteration_1]) == 0
    assert restarted["new_pid"] != restarted["old_pid"]
    metrics = plan.run.read_metrics()
    assert [m["iteration"] for m in metrics] == [0, 1, 2, 3]
    assert [m["sampler_failures"] for m in metrics] == [0, 0, 1, 0]
    assert [m["prompts_reissued"] for m in metrics] == [0, 0, 16, 0]
    assert all(m["prompts_dropped"] == 0 for m in metrics)
    # the restarted sampler sampled iteration 2 with version 2, re-sent from the object store
    assert [m["sample_policy_version_min"] for m in metrics] == [0, 1, 2, 3]
    rows = read_persisted(plan.run.buffer_dir).to_pylist()
    assert {(r["iteration"], r["policy_version"]) for r in rows} == {(i, i) for i in range(4)}
    assert no_weight_files(plan.run)
    print(
        f"\nweight_sync ray: sampler restarted between calls (pid {restarted['old_pid']} -> "
        f"{restarted['new_pid']}), re-sent version 2 and its 16 prompts re-issued in "
        f"{metrics[2]['sampler_recovery_s']:.1f}s; no weights on disk"
    )


def kill_one_sampler_for_good(address: str, timeout: float = 60.0) -> dict:
    """SIGKILL the process of one of the (ALIVE) sampler actors, whose restarts are spent,
    and wait until Ray reports it ``DEAD``."""
    from ray.util.state import list_actors

    alive = [("class_name", "=", "SamplerActor"), ("state", "=", "ALIVE")]
    actor = list_actors(address=address, filters=alive)[0]
    os.kill(actor.pid, signal.SIGKILL)
    deadline = time.time() + timeout
    while time.time() < deadline:
        [now] = list_actors(address=address, filters=[("actor_id", "=", actor.actor_id)])
        if now.state == "DEAD":
            return {"pid": actor.pid}
        time.sleep(0.1)
    raise TimeoutError(f"the sampler actor was not DEAD within {timeout}s")


def test_a_sampler_lost_for_good_leaves_the_split_and_its_prompts_go_to_the_other(
    ray_address, tiny, tmp_path
):
    """Two samplers, no restart left (``sampler_max_restarts: 0``, as when no node has room
    for the lost one's bundle for good): one is killed after iteration 1 (between calls, so
    that the rollout it fails in is known). At iteration 2's rollout its call fails, it is
    taken out of the split at its first re-issue (the resync fails: dead for good) and its
    chunk goes to the other sampler; later rollouts and weight updates go to that one only.
    Nothing is dropped and every sample has the current version."""
    from actors.controller import run_on_ray

    cfg = online_cfg(
        tmp_path / "run",
        model={"name_or_path": str(tiny)},
        sampler={"backend": "hf"},
        sampling={"max_new_tokens": 8},
        online={
            "iterations": 4,
            "prompts_per_iteration": 32,
            "train_steps_per_iteration": 2,
            "mode": "sync",
        },
        resources={"num_samplers": 2, "sampler_cpus": 0.5},
        fault_tolerance={
            "sampler_max_restarts": 0,
            "retry_backoff_s": 0.2,
            "restart_timeout_s": 60,
        },
    )
    plan = plan_run(cfg, None)
    killed: dict = {}

    def kill_after_iteration_1(record: dict) -> None:
        if record["iteration"] == 1:  # version 2 is loaded (sync mode); the next rollout fails
            killed.update(kill_one_sampler_for_good(ray_address))

    start = time.perf_counter()
    assert run_on_ray(plan, progress=False, callbacks=[kill_after_iteration_1]) == 0
    assert killed
    metrics = plan.run.read_metrics()
    assert [m["iteration"] for m in metrics] == [0, 1, 2, 3]
    assert [m["samplers_healthy"] for m in metrics] == [2, 2, 1, 1]
    assert [m["prompts_reissued"] for m in metrics] == [0, 0, 16, 0]
    assert [bool(m["sampler_failures"]) for m in metrics] == [False, False, True, False]
    assert all(m["prompts_dropped"] == 0 for m in metrics)
    assert all(m["samples"] == 128 for m in metrics), "nothing lost"
    assert [m["sample_policy_version_min"] for m in metrics] == [0, 1, 2, 3]
    rows = read_persisted(plan.run.buffer_dir).to_pylist()
    assert len(rows) == 4 * 128 and len({r["sample_id"] for r in rows}) == len(rows)
    rollout_s = ", ".join(f"{m['rollout_s']:.1f}" for m in metrics)
    print(
        f"\ntwo samplers, one killed with no restart left: its 16 prompts went to the other in "
        f"{metrics[2]['sampler_recovery_s']:.1f}s; rollouts {rollout_s}s; 0 samples lost, "
        f"run {time.perf_counter() - start:.0f}s"
    )


def test_learner_killed_in_the_warm_start_is_replaced_by_a_fresh_one(ray_address, tiny, tmp_path):
    """SIGKILL the learner actor's process in the warm start's training, before the run's
    first checkpoint: the controller starts a fresh learner, which deletes the replay-buffer
    shards the killed one persisted, and the run starts over at the warm start; it finishes
    with the warm start's samples once and each iteration once."""
    from actors.controller import run_on_ray

    # enough warm-start steps that its first training call lasts seconds
    cfg = warm_start_cfg(tmp_path / "run", tiny, train_steps_per_iteration=4, warm_start_steps=50)
    plan = plan_run(cfg, None)
    killed: dict = {}

    def kill() -> None:
        try:
            killed.update(kill_when_running("LearnerActor.train", ray_address))
        except Exception as e:
            killed["error"] = e

    killed["thread"] = threading.Thread(target=kill)
    killed["thread"].start()
    assert run_on_ray(plan, progress=False) == 0
    killed["thread"].join()
    assert "error" not in killed, killed.get("error")
    with pytest.raises(ProcessLookupError):
        os.kill(killed["pid"], 0)
    metrics = plan.run.read_metrics()
    assert [m["iteration"] for m in metrics] == [0, 1]
    assert [m["learner_restarts"] for m in metrics] == [1, 0]
    assert [m["policy_version"] for m in metrics] == [2, 3], "the warm start published 1"
    rows = read_persisted(plan.run.buffer_dir).to_pylist()
    assert sorted(r["sample_id"] for r in rows) == list(range(len(rows)))
    assert [sum(r["iteration"] == i for r in rows) for i in (-1, 0, 1)] == [64, 64, 64]
    assert plan.run.latest_checkpoint().name == "iter-000001"


@pytest.mark.parametrize("weight_sync", ["checkpoint", "ray"])
def test_learner_killed_mid_training_is_restarted_from_its_checkpoint(
    ray_address, tiny, tmp_path, weight_sync
):
    """SIGKILL the learner actor's process in iteration 2's training: the controller starts a
    new learner from iteration 1's checkpoint and resyncs the samplers (with ``weight_sync:
    ray`` the first update of the new learner is a new object in the store, owned by it),
    and the run finishes with each iteration once and every persisted sample kept once."""
    from ray.util.state import list_actors

    from actors.controller import run_on_ray

    cfg = online_cfg(
        tmp_path / "run",
        model={"name_or_path": str(tiny)},
        sampler={"backend": "hf", "weight_sync": weight_sync},
        sampling={"max_new_tokens": 8},
        # enough steps that training lasts seconds: the kill lands inside `train`
        online={"iterations": 5, "prompts_per_iteration": 16, "train_steps_per_iteration": 40},
    )
    plan = plan_run(cfg, None)
    killed: dict = {}
    pids: list[int] = []  # the learner actor's process after each iteration

    def kill() -> None:  # iteration 2's training, once iteration 1 is checkpointed
        try:
            killed.update(kill_when_running("LearnerActor.train", ray_address))
            killed["wall"] = time.time()
            # the learner is dead and a new one needs seconds to start: nothing is persisted
            killed["rows"] = read_persisted(plan.run.buffer_dir).to_pylist()
        except Exception as e:
            killed["error"] = e

    def callback(record):
        [learner] = list_actors(
            filters=[("class_name", "=", "LearnerActor"), ("state", "=", "ALIVE")]
        )
        pids.append(learner.pid)
        if record["iteration"] == 1:
            killed["thread"] = threading.Thread(target=kill)
            killed["thread"].start()

    start = time.perf_counter()
    assert run_on_ray(plan, progress=False, callbacks=[callback]) == 0
    killed["thread"].join()
    assert "error" not in killed, killed.get("error")
    metrics = plan.run.read_metrics()
    assert [m["iteration"] for m in metrics] == [0, 1, 2, 3, 4], "each iteration once, in order"
    assert [m["learner_restarts"] for m in metrics] == [0, 0, 1, 0, 0]
    recovery_s = metrics[2]["learner_recovery_s"]
    assert recovery_s > 0
    # the killed learner is gone; the new one ran iteration 2 again and everything after it
    assert pids[0] == pids[1] == killed["pid"] and pids[2:] == [pids[2]] * 3
    assert pids[2] != killed["pid"]
    with pytest.raises(ProcessLookupError):
        os.kill(killed["pid"], 0)
    # the sampler was resynced to the checkpoint's version 2 (iteration 1's) before iteration
    # 2 ran again
    assert [m["sample_policy_version_min"] for m in metrics] == [0, 1, 2, 3, 4]
    assert [m["policy_version"] for m in metrics] == [1, 2, 3, 4, 5]
    # online.resume_policy: keep: the 64 samples iteration 2 persisted before the kill stay,
    # once, unchanged, beside the 64 of its second run
    before = {r["sample_id"]: r for r in killed["rows"]}
    rows = read_persisted(plan.run.buffer_dir).to_pylist()
    ids = [r["sample_id"] for r in rows]
    assert sorted(ids) == list(range(len(ids))), "every persisted sample once"
    after = {r["sample_id"]: r for r in rows}
    changed = [(row, after.get(sid)) for sid, row in before.items() if after.get(sid) != row]
    assert not changed, f"{len(changed)} persisted samples changed or lost, e.g. {changed[0]}"
    assert len(before) == 3 * 64, "killed in iteration 2's training, after its append"
    assert [sum(r["iteration"] == i for r in rows) for i in range(5)] == [64, 64, 128, 64, 64]
    back = metrics[2]["time"] - killed["wall"]
    print(
        f"\nlearner SIGKILLed in iteration 2's training ({weight_sync}): restarted from "
        f"iteration 1's checkpoint and the sampler resynced in {recovery_s:.1f}s "
        f"(learner_recovery_s); iteration 2 finished again {back:.1f}s after the kill; "
        f"{len(before)} persisted samples all kept once, 0 lost; "
        f"run {time.perf_counter() - start:.0f}s"
    )

"""Node loss on a multi-node Ray cluster, on one machine (``ray.cluster_utils.Cluster``: one
raylet per node, all on this host). The head node holds the learner and the reward model, the
sampler sits on a worker node (custom resources pin each bundle of the run's placement group):

* a worker node that joins mid-run is left idle, then the sampler's node is removed
  mid-rollout: Ray reschedules the sampler's bundle onto the idle node, restarts the actor
  there, and the loop re-sends the weights and re-issues the interrupted chunk;
* the sampler's node is removed mid-rollout while no other node can hold its bundle: the loop
  waits (the actor stays ``RESTARTING``, the placement group ``RESCHEDULING``) until a node
  that can is added, then recovers the same way.

The nodes are removed as a crash removes them (``allow_graceful=False``: the raylet and its
workers are SIGKILLed). Each test prints its recovery figures (``-s``).

The cluster is this module's own: its temporary directory (``RAY_TMPDIR``) is private, so
that neither its address file nor its sessions meet another Ray instance on the machine, and
``RAY_ADDRESS`` names it for the state API while the module runs.
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from online_dt.loop.plan import RunPlan, plan_run
from online_dt.replay.shards import read_persisted
from tests.test_faults_ray import online_cfg
from tests.tiny import build_tiny_model

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]

LEARNER_SLOT = "node_loss_learner"
SAMPLER_SLOT = "node_loss_sampler"
# Ray's defaults notice a dead raylet after 5 missed health checks 3 s apart; shortened here so
# that the tests do not wait 15 s for it. NODE_LOSS_HEALTH_CHECKS=default keeps Ray's
# (docs/reliability.md gives both figures)
HEALTH_CHECKS = (
    {}
    if os.environ.get("NODE_LOSS_HEALTH_CHECKS") == "default"
    else {"health_check_period_ms": 500, "health_check_failure_threshold": 3}
)
PROMPTS = 96
SAMPLES_PER_PROMPT = 4
ENV = ("RAY_TMPDIR", "RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_task_events_report_interval_ms")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A head node (1 CPU, the learner's slot) on a private temporary directory; this
    process is its driver. Shut down, and the environment restored, however the module ends."""
    import ray
    from ray.cluster_utils import Cluster

    assert not ray.is_initialized(), "another Ray instance is connected in this process"
    saved = {k: os.environ.get(k) for k in ENV}
    # short: Ray's socket paths under it must stay below the 107 characters of a unix socket
    tmp = tempfile.mkdtemp(prefix="rnl-", dir="/tmp")
    os.environ["RAY_TMPDIR"] = tmp
    os.environ["RAY_task_events_report_interval_ms"] = "100"  # noqa: SIM112 (Ray's own name)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    made = None
    try:
        made = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 1,
                "resources": {LEARNER_SLOT: 1},
                "dashboard_port": 0,  # the state API needs the dashboard; 8265 may be taken
                "_system_config": HEALTH_CHECKS,
            },
        )
        ray.init(
            address=made.address,
            runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
            log_to_driver=False,
        )
        os.environ["RAY_ADDRESS"] = made.address
        yield made
    finally:
        ray.shutdown()
        if made is not None:
            made.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def add_node(cluster) -> Iterator[Callable[[], Any]]:
    """Adds a worker node that can hold one sampler (1 CPU, the sampler's slot); every worker
    node still up is removed when the test ends."""

    def add() -> Any:
        return cluster.add_node(num_cpus=1, resources={SAMPLER_SLOT: 1}, wait=True)

    yield add
    for node in list(cluster.worker_nodes):
        cluster.remove_node(node)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("gpt2"), "gpt2")


def pinned_plan(run_dir: Path, tiny: Path, iterations: int) -> RunPlan:
    """The HF sampler on the tiny model; the learner (and the reward model, in its bundle)
    pinned to the head, the sampler to a sampler node."""
    cfg = online_cfg(
        run_dir,
        model={"name_or_path": str(tiny)},
        sampler={"backend": "hf"},
        sampling={"max_new_tokens": 16},  # a rollout of about a second: long enough to hit
        online={
            "iterations": iterations,
            "prompts_per_iteration": PROMPTS,
            "samples_per_prompt": SAMPLES_PER_PROMPT,
            "train_steps_per_iteration": 2,
        },
        resources={
            "sampler_resources": {SAMPLER_SLOT: 1},
            "learner_resources": {LEARNER_SLOT: 1},
            "placement_timeout_s": 120,
        },
        fault_tolerance={"retry_backoff_s": 0.2, "restart_timeout_s": 120},
    )
    return plan_run(cfg, None)


class LoopThread:
    """``run_on_ray`` on a thread of its own, so that this (main) thread can add nodes, which
    ``Cluster.add_node`` only does on the main thread. Each iteration's record goes to
    :attr:`records`; after an iteration listed in ``pause_after`` the loop waits until
    :meth:`resume` is called."""

    def __init__(self, plan: RunPlan, pause_after: set[int]) -> None:
        self.records: queue.Queue[dict[str, Any]] = queue.Queue()
        self.gates = {i: threading.Event() for i in pause_after}
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(plan,), daemon=True)
        self.thread.start()

    def _run(self, plan: RunPlan) -> None:
        from actors.controller import run_on_ray

        def on_record(record: dict[str, Any]) -> None:
            self.records.put(record)
            gate = self.gates.get(record["iteration"])
            if gate is not None and not gate.wait(timeout=300):
                raise TimeoutError(f"not resumed after iteration {record['iteration']}")

        try:
            run_on_ray(plan, progress=False, callbacks=[on_record])
        except BaseException as e:
            self.error = e

    def record(self, iteration: int, timeout: float = 240.0) -> dict[str, Any]:
        """Wait for iteration ``iteration``'s record.

        Raises:
            AssertionError: the loop failed, or another iteration's record came first.
            queue.Empty: none within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                record = self.records.get(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                assert self.error is None, f"the loop failed: {self.error!r}"
                if time.monotonic() >= deadline:
                    raise
                continue
            assert record["iteration"] == iteration, record["iteration"]
            return record

    def resume(self, iteration: int) -> None:
        self.gates[iteration].set()

    def join(self, timeout: float = 300.0) -> None:
        """Wait for the run's end (resuming every pause first).

        Raises:
            AssertionError: it did not end within ``timeout`` seconds, or it failed.
        """
        for gate in self.gates.values():
            gate.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the loop did not end within {timeout:g}s"
        assert self.error is None, f"the loop failed: {self.error!r}"

    def close(self) -> None:
        """End the run whatever state it is in (a failed test's cleanup): resume it, and if it
        is still running a few seconds later (e.g. waiting for a sampler that has no node),
        remove its placement group, which ends its actors and so the loop, and frees the
        head node's slot for the next test."""
        from ray.util import placement_group_table, remove_placement_group
        from ray.util.placement_group import PlacementGroup

        for gate in self.gates.values():
            gate.set()
        self.thread.join(5.0)
        if self.thread.is_alive():
            for group_id, group in placement_group_table().items():
                if group["state"] != "REMOVED":
                    remove_placement_group(PlacementGroup(ray_pg_id(group_id)))
            self.thread.join(60.0)


def ray_pg_id(hex_id: str) -> Any:
    from ray._raylet import PlacementGroupID

    return PlacementGroupID(bytes.fromhex(hex_id))


def actor(class_name: str) -> Any:
    """The one actor of ``class_name`` not dead (the running test's): its state, node and
    process."""
    from ray.util.state import list_actors

    [found] = list_actors(filters=[("class_name", "=", class_name), ("state", "!=", "DEAD")])
    return found


def sampler_generate_tasks() -> set[str]:
    from ray.util.state import list_tasks

    tasks = list_tasks(filters=[("name", "=", "SamplerActor.generate")], limit=10_000)
    return {t.task_id for t in tasks}


def remove_node_mid_rollout(cluster, node, known: set[str], timeout: float = 120.0) -> dict:
    """Wait until a ``SamplerActor.generate`` not in ``known`` runs, then remove ``node`` as a
    crash would (its raylet and workers SIGKILLed). Returns the task's id and the removal's
    UNIX time."""
    from ray.util.state import list_tasks

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = list_tasks(
            filters=[("name", "=", "SamplerActor.generate"), ("state", "=", "RUNNING")]
        )
        fresh = [t for t in running if t.task_id not in known]
        if fresh:
            removed_at = time.time()
            cluster.remove_node(node, allow_graceful=False)
            return {"task_id": fresh[0].task_id, "removed_at": removed_at}
        time.sleep(0.02)
    raise TimeoutError(f"no new SamplerActor.generate ran within {timeout:g}s")


def placement_group_bundles() -> tuple[str, set[str]]:
    """The run's placement group: its state and the nodes its bundles are on."""
    from ray.util import placement_group_table

    groups = [g for g in placement_group_table().values() if g["state"] != "REMOVED"]
    [group] = groups
    return group["state"], {n for n in group["bundles_to_node_id"].values() if n}


def assert_nothing_lost(plan: RunPlan, iterations: int, hit: int) -> list[dict[str, Any]]:
    """Every iteration complete, the interrupted one's chunk re-issued once, every sample of
    iteration i from policy version i, each persisted once; returns the metrics."""
    metrics = plan.run.read_metrics()
    assert [m["iteration"] for m in metrics] == list(range(iterations))
    per_iteration = PROMPTS * SAMPLES_PER_PROMPT
    assert [m["samples"] for m in metrics] == [per_iteration] * iterations, "nothing lost"
    assert [m["prompts_dropped"] for m in metrics] == [0] * iterations
    reissued = [PROMPTS if i == hit else 0 for i in range(iterations)]
    assert [m["prompts_reissued"] for m in metrics] == reissued
    assert metrics[hit]["sampler_failures"] >= 1
    assert [m["sample_policy_version_min"] for m in metrics] == list(range(iterations))
    rows = read_persisted(plan.run.buffer_dir).to_pylist()
    assert len(rows) == iterations * per_iteration
    assert len({r["sample_id"] for r in rows}) == len(rows), "no sample twice"
    assert {(r["iteration"], r["policy_version"]) for r in rows} == {
        (i, i) for i in range(iterations)
    }
    return metrics


def assert_interrupted(task_id: str) -> None:
    """The generate call that ran when the node was removed did not finish."""
    from ray.util.state import list_tasks

    [task] = list_tasks(filters=[("task_id", "=", task_id)])
    assert task.state == "FAILED", task.state


def test_a_node_added_mid_run_stays_idle_until_the_samplers_node_is_lost(
    cluster, add_node, tiny, tmp_path
):
    first = add_node()
    plan = pinned_plan(tmp_path / "run", tiny, iterations=5)
    loop = LoopThread(plan, pause_after={1, 2})
    try:
        loop.record(0)
        loop.record(1)
        sampler = actor("SamplerActor")
        assert sampler.node_id == first.node_id
        spare = add_node()  # mid-run: after iteration 1, before iteration 2
        loop.resume(1)
        loop.record(2)  # a whole iteration with the new node up
        # left idle: Ray moves no running actor and no placed bundle onto a new node, and the
        # run asks for no more actors than it started with
        now = actor("SamplerActor")
        assert (now.node_id, now.pid, now.state) == (first.node_id, sampler.pid, "ALIVE")
        assert placement_group_bundles() == ("CREATED", {cluster.head_node.node_id, first.node_id})
        known = sampler_generate_tasks()
        loop.resume(2)
        removal = remove_node_mid_rollout(cluster, first, known)
        hit = loop.record(3)
        # now it is used: the sampler's bundle, and the restarted sampler, are on the spare
        moved = actor("SamplerActor")
        assert (moved.node_id, moved.state) == (spare.node_id, "ALIVE")
        assert moved.pid != sampler.pid
        assert placement_group_bundles() == ("CREATED", {cluster.head_node.node_id, spare.node_id})
        loop.join()
    finally:
        loop.close()
    assert_interrupted(removal["task_id"])
    metrics = assert_nothing_lost(plan, 5, hit=3)
    recovery = hit["rollout_finished_at"] - removal["removed_at"]
    print(
        f"\nsampler's node removed mid-rollout, a spare node up: the sampler was restarted on "
        f"it and the rollout finished {recovery:.1f}s after the removal "
        f"(sampler_recovery_s {metrics[3]['sampler_recovery_s']:.1f}s, from the first failed "
        f"call to the re-issued chunk's result); {PROMPTS} prompts re-issued, 0 samples lost"
    )


def test_the_samplers_node_lost_with_no_room_left_waits_for_a_new_node(
    cluster, add_node, tiny, tmp_path
):
    only = add_node()
    plan = pinned_plan(tmp_path / "run", tiny, iterations=4)
    loop = LoopThread(plan, pause_after={1})
    try:
        loop.record(0)
        loop.record(1)
        sampler = actor("SamplerActor")
        assert sampler.node_id == only.node_id
        known = sampler_generate_tasks()
        loop.resume(1)
        removal = remove_node_mid_rollout(cluster, only, known)
        # no node can hold the sampler's bundle: Ray keeps it pending, the actor restarting
        deadline = time.monotonic() + 60
        while placement_group_bundles()[0] != "RESCHEDULING" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert placement_group_bundles() == ("RESCHEDULING", {cluster.head_node.node_id})
        assert actor("SamplerActor").state == "RESTARTING"
        time.sleep(3.0)
        assert loop.records.empty(), "the loop waits for the sampler"
        assert loop.thread.is_alive() and loop.error is None
        added_at = time.time()
        fresh = add_node()
        up_s = time.time() - added_at  # add_node returns once the new raylet is registered
        hit = loop.record(2)
        moved = actor("SamplerActor")
        assert (moved.node_id, moved.state) == (fresh.node_id, "ALIVE")
        loop.join()
    finally:
        loop.close()
    assert_interrupted(removal["task_id"])
    metrics = assert_nothing_lost(plan, 4, hit=2)
    print(
        f"\nsampler's node removed mid-rollout, no room for it: the loop waited; a node "
        f"added {added_at - removal['removed_at']:.1f}s later took the sampler, and the "
        f"rollout finished {hit['rollout_finished_at'] - added_at:.1f}s after the node was "
        f"added, which took {up_s:.1f}s to come up "
        f"({hit['rollout_finished_at'] - removal['removed_at']:.1f}s after the "
        f"removal; sampler_recovery_s {metrics[2]['sampler_recovery_s']:.1f}s); "
        f"{PROMPTS} prompts re-issued, 0 samples lost"
    )

"""The placement plan: bundles and actor places from ``resources`` configs, invalid
combinations named at load time, and (slow) the default config's plan on a real local Ray."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from actors.placement import actor_options, describe_shortfall
from online_dt.config import ConfigError, OnlineRunConfig, ResourcesConfig, load_config
from online_dt.config.placement import PlacementPlan, assign_bundles, fits, plan_placement

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ONLINE_CONFIGS = sorted(
    p for p in CONFIGS.glob("*.yaml") if "online" in (yaml.safe_load(p.read_text()) or {})
)


def check_consistent(plan: PlacementPlan, res: ResourcesConfig) -> None:
    """Invariants every plan keeps: one learner, reward, N samplers; each bundle is exactly
    the sum of its actors' requests; no bundle mixes a fraction of a GPU with more than one."""
    roles = sorted((a.role, a.replica) for a in plan.actors)
    assert roles == sorted(
        [("learner", 0), ("reward", 0)] + [("sampler", i) for i in range(res.num_samplers)]
    )
    for i, bundle in enumerate(plan.bundles):
        members = [a for a in plan.actors if a.bundle_index == i]
        assert members, f"bundle {i} holds no actor"
        cpus = sum(a.num_cpus for a in members)
        gpus = sum(a.num_gpus for a in members)
        assert bundle.get("CPU", 0.0) == pytest.approx(cpus)
        assert bundle.get("GPU", 0.0) == pytest.approx(gpus)
        assert gpus <= 1 + 1e-9 or float(gpus).is_integer()
        assert all(v > 0 for v in bundle.values())
    assert plan.actor("learner").num_gpus == res.learner_gpus
    assert all(a.num_gpus == res.sampler_gpus for a in plan.samplers())


# ---------------------------------------------------------------------------------------------
# plans from configs
# ---------------------------------------------------------------------------------------------


def test_default_config_plan():
    res = load_config(CONFIGS / "default.yaml", OnlineRunConfig).resources
    plan = plan_placement(res)
    assert plan.bundles == [{"CPU": 1.0}, {"CPU": 1.0}]
    assert plan.strategy == "PACK" and plan.use_placement_group
    assert plan.actor("learner").bundle_index == 0
    assert plan.actor("sampler", 0).bundle_index == 1
    # the light reward model asks for nothing and shares the learner's bundle
    reward = plan.actor("reward")
    assert (reward.bundle_index, reward.num_cpus, reward.num_gpus) == (0, 0.0, 0.0)
    assert plan.total() == {"CPU": 2.0}
    check_consistent(plan, res)


@pytest.mark.parametrize("path", ONLINE_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_online_config_has_a_consistent_plan(path):
    res = load_config(path, OnlineRunConfig).resources
    check_consistent(plan_placement(res), res)


def test_fractional_samplers_share_sampler_only_bundles():
    res = ResourcesConfig(
        num_samplers=6, sampler_gpus=0.25, sampler_cpus=1, learner_gpus=1, reward_cpus=1
    )
    plan = plan_placement(res)
    assert plan.bundles == [
        {"CPU": 1.0, "GPU": 1.0},  # learner alone (not colocated)
        {"CPU": 4.0, "GPU": 1.0},  # samplers 0-3 share a GPU
        {"CPU": 2.0, "GPU": 0.5},  # samplers 4-5
        {"CPU": 1.0},  # reward model
    ]
    assert [a.bundle_index for a in plan.samplers()] == [1, 1, 1, 1, 2, 2]
    assert plan.actor("reward").bundle_index == 3
    check_consistent(plan, res)


def test_whole_gpu_samplers_get_one_bundle_each_with_custom_resources():
    res = ResourcesConfig(
        num_samplers=3,
        sampler_gpus=1,
        sampler_cpus=2,
        learner_gpus=2,
        learner_cpus=4,
        sampler_resources={"online_dt_sampler": 1},
        learner_resources={"online_dt_learner": 1},
    )
    plan = plan_placement(res)
    assert plan.bundles[0] == {"CPU": 4.0, "GPU": 2.0, "online_dt_learner": 1.0}
    assert plan.bundles[1:] == [{"CPU": 2.0, "GPU": 1.0, "online_dt_sampler": 1.0}] * 3
    assert plan.total() == {
        "CPU": 10.0,
        "GPU": 5.0,
        "online_dt_learner": 1.0,
        "online_dt_sampler": 3.0,
    }
    check_consistent(plan, res)


def test_colocated_learner_and_samplers_share_gpu_bundles():
    res = ResourcesConfig(
        num_samplers=4, sampler_gpus=0.25, learner_gpus=0.5, colocate=True, reward_cpus=0
    )
    plan = plan_placement(res)
    # learner first, then samplers first-fit into bundles of at most one GPU
    assert plan.bundles == [{"CPU": 3.0, "GPU": 1.0}, {"CPU": 2.0, "GPU": 0.5}]
    assert plan.actor("learner").bundle_index == 0
    assert [a.bundle_index for a in plan.samplers()] == [0, 0, 1, 1]
    assert plan.actor("reward").bundle_index == 0
    assert "bundle 0 {'CPU': 3.0, 'GPU': 1.0}: learner, sampler0, sampler1, reward" in (
        plan.describe()
    )
    check_consistent(plan, res)


def test_colocated_without_gpus_is_one_bundle():
    plan = plan_placement(ResourcesConfig(num_samplers=2, colocate=True))
    assert plan.bundles == [{"CPU": 3.0}]
    assert {a.bundle_index for a in plan.actors} == {0}


def test_without_placement_group_actors_get_plain_options():
    res = ResourcesConfig(
        use_placement_group=False, sampler_gpus=0.5, sampler_resources={"online_dt_sampler": 1}
    )
    plan = plan_placement(res)
    assert not plan.use_placement_group
    assert actor_options(plan.actor("sampler", 0)) == {
        "num_cpus": 1.0,
        "num_gpus": 0.5,
        "resources": {"online_dt_sampler": 1},
    }
    assert actor_options(plan.actor("reward")) == {"num_cpus": 0.0, "num_gpus": 0.0}
    # an actor asking for nothing is fine without a group (no empty bundle is created)
    assert plan_placement(ResourcesConfig(use_placement_group=False, learner_cpus=0))


# ---------------------------------------------------------------------------------------------
# invalid combinations fail at load time, naming the field
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ("{sampler_gpus: 1.5}", "sampler_gpus: 1.5 GPUs: a share above 1 must be a whole"),
        ("{learner_gpus: 2.5}", "learner_gpus: 2.5 GPUs"),
        ("{reward_gpus: 1.25}", "reward_gpus: 1.25 GPUs"),
        (
            "{colocate: true, learner_gpus: 0.75, sampler_gpus: 0.5}",
            "learner_gpus + sampler_gpus = 1.25 exceeds 1 GPU per bundle",
        ),
        ("{colocate: true, learner_gpus: 2, sampler_gpus: 0.5}", "learner_gpus: 2.0 GPUs cannot"),
        ("{colocate: true, use_placement_group: false}", "colocate: sharing GPUs"),
        ("{learner_cpus: 0}", "learner_cpus/learner_gpus: bundle 0 (learner) asks for no"),
        ("{sampler_cpus: 0, num_samplers: 2}", "sampler_cpus/sampler_gpus: bundle 1"),
        ("{sampler_resources: {GPU: 1}}", "sampler_resources: 'GPU' is not a custom resource"),
        ("{learner_resources: {node_a: 0}}", "learner_resources: node_a must be positive"),
        ("{num_samplers: 0}", "resources.num_samplers"),
        ("{placement_strategy: TIGHT}", "resources.placement_strategy"),
        ("{placement_timeout_s: 0}", "resources.placement_timeout_s"),
    ],
)
def test_invalid_resources_fail_at_load_naming_the_field(tmp_path, resources, message):
    path = tmp_path / "c.yaml"
    path.write_text(f"online: {{iterations: 1}}\nresources: {resources}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, OnlineRunConfig)
    assert message in str(err.value)


def test_plan_placement_itself_rejects_unvalidated_input():
    """A config built without validation (``model_construct``) still cannot be planned."""
    res = ResourcesConfig.model_construct(
        **{
            **ResourcesConfig().model_dump(),
            "colocate": True,
            "learner_gpus": 1.0,
            "sampler_gpus": 0.5,
        }
    )
    with pytest.raises(ConfigError, match="exceeds 1 GPU per bundle"):
        plan_placement(res)


# ---------------------------------------------------------------------------------------------
# checking a cluster layout against a plan (no cluster)
# ---------------------------------------------------------------------------------------------


def test_assign_bundles_to_nodes():
    plan = plan_placement(
        ResourcesConfig(num_samplers=2, sampler_gpus=1, learner_gpus=1, reward_cpus=1)
    )
    gpu_node = {"CPU": 2.0, "GPU": 1.0}
    head = {"CPU": 2.0}
    assert assign_bundles(plan, [head, gpu_node, gpu_node, gpu_node]) == [1, 2, 3, 0]
    assert assign_bundles(plan, [head, gpu_node, gpu_node]) is None  # one GPU short
    strict = PlacementPlan(plan.bundles, plan.actors, "STRICT_PACK")
    assert assign_bundles(strict, [head, gpu_node, gpu_node, gpu_node]) is None
    assert assign_bundles(strict, [{"CPU": 8.0, "GPU": 4.0}]) == [0, 0, 0, 0]
    spread = PlacementPlan([{"CPU": 1.0}] * 3, plan.actors, "STRICT_SPREAD")
    assert assign_bundles(spread, [{"CPU": 4.0}, {"CPU": 4.0}]) is None
    assert fits({"CPU": 1.0, "GPU": 0.5}, {"CPU": 1.0, "GPU": 1.0})
    assert not fits({"x": 1.0}, {"CPU": 8.0})


def test_shortfall_message_names_missing_resources():
    plan = plan_placement(ResourcesConfig(num_samplers=2, sampler_gpus=1, learner_gpus=1))
    message = describe_shortfall(plan, {"CPU": 2.0}, [{"CPU": 2.0}])
    assert "missing CPU 1, GPU 3" in message
    assert "no node can hold bundle 0 {'CPU': 1.0, 'GPU': 1.0}" in message
    ok = describe_shortfall(plan, {"CPU": 8.0, "GPU": 4.0}, [{"CPU": 8.0, "GPU": 4.0}])
    assert "missing" not in ok and "the totals fit" in ok


# ---------------------------------------------------------------------------------------------
# the default config's plan on a real local Ray instance
# ---------------------------------------------------------------------------------------------


def _bundle_usage(ray, pg_id: str, n: int) -> tuple[list[int], list[float]]:
    """Actors pinned to, and CPUs used in, each bundle, from Ray's per-bundle resources
    (``bundle_group_<i>_<pg>``: 1000 units, 0.001 per actor; ``CPU_group_<i>_<pg>``)."""
    total, free = ray.cluster_resources(), ray.available_resources()
    actors = [round((1000 - free.get(f"bundle_group_{i}_{pg_id}", 0.0)) / 0.001) for i in range(n)]
    cpus = [
        total.get(f"CPU_group_{i}_{pg_id}", 0.0) - free.get(f"CPU_group_{i}_{pg_id}", 0.0)
        for i in range(n)
    ]
    return actors, cpus


@pytest.mark.slow
def test_default_plan_on_local_ray(local_ray):
    from ray.util import placement_group_table

    from actors.placement import PlacementError, start_placement

    ray = local_ray
    res = load_config(CONFIGS / "default.yaml", OnlineRunConfig).resources
    opts = start_placement(res, timeout_s=30)
    plan, pg = opts.plan, opts.placement_group
    table = placement_group_table(pg)
    assert table["state"] == "CREATED" and table["strategy"] == "PACK"
    assert [table["bundles"][i] for i in range(len(plan.bundles))] == plan.bundles

    @ray.remote
    class Probe:
        def where(self) -> tuple[str, str]:
            ctx = ray.get_runtime_context()
            return ctx.get_node_id(), ctx.get_placement_group_id()

    probes = {
        ("learner", 0): Probe.options(**opts.learner).remote(),
        **{("sampler", i): Probe.options(**o).remote() for i, o in enumerate(opts.samplers)},
        ("reward", 0): Probe.options(**opts.reward).remote(),
    }
    for (role, replica), probe in probes.items():
        node, group = ray.get(probe.where.remote(), timeout=30)
        assert group == pg.id.hex()
        assert node == table["bundles_to_node_id"][plan.actor(role, replica).bundle_index]

    n = len(plan.bundles)
    want_actors = [sum(a.bundle_index == i for a in plan.actors) for i in range(n)]
    want_cpus = [sum(a.num_cpus for a in plan.actors if a.bundle_index == i) for i in range(n)]
    deadline = time.monotonic() + 15
    while _bundle_usage(ray, pg.id.hex(), n) != (want_actors, want_cpus):
        assert time.monotonic() < deadline, _bundle_usage(ray, pg.id.hex(), n)
        time.sleep(0.2)
    assert want_actors == [2, 1]  # learner + reward model in bundle 0, the sampler in 1

    opts.remove()
    assert placement_group_table(pg)["state"] == "REMOVED"

    # a plan the cluster cannot hold fails in time, naming what is missing
    with pytest.raises(PlacementError) as err:
        start_placement(ResourcesConfig(learner_gpus=1), timeout_s=2)
    assert "missing GPU 1" in str(err.value)
    assert "no node can hold bundle 0 {'CPU': 1.0, 'GPU': 1.0}" in str(err.value)

"""A run's start on Ray, in process: the plan (prompts, preflight) on a thread while the main
thread starts Ray; a sampler actor started without weights, built by its first weight update;
the torch threads of a sync run's actors on one node. The real Ray path runs in
``tests/test_faults_ray.py`` and ``tests/test_async_ray.py``."""

from __future__ import annotations

import threading

import pytest
import yaml

import tests.test_loop as loop_tests
from actors.workers import SamplerActor
from online_dt.config import ResourcesConfig
from online_dt.config.placement import threads_for_sync
from online_dt.launch.preflight import PreflightError
from online_dt.rollout.sampler import NO_WEIGHTS, NoWeightsError, SamplingParams
from online_dt.run import build_parser, main, plan_while_ray_starts
from online_dt.training.learner import Learner
from tests.test_sampling import PROMPTS, TARGETS
from tests.tiny import build_tiny_model


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("gpt2"), "gpt2")


# -- the plan beside Ray's start ------------------------------------------------------------------


class FakeRay:
    """Stands in for ``actors.controller.start_ray`` and ``ray.shutdown``: records the thread
    each runs on and what happened."""

    def __init__(self, monkeypatch, fails: bool = False) -> None:
        import ray

        import actors.controller

        self.started_on: threading.Thread | None = None
        self.dashboard: bool | None = None
        self.shut_down = False
        self.fails = fails
        monkeypatch.setattr(actors.controller, "start_ray", self.start)
        monkeypatch.setattr(ray, "shutdown", self.shutdown)

    def start(self, dashboard: bool = False) -> bool:
        self.started_on = threading.current_thread()
        self.dashboard = dashboard
        if self.fails:
            raise ConnectionError("no Ray cluster at RAY_ADDRESS")
        return True

    def shutdown(self) -> None:
        self.shut_down = True


def test_the_plan_runs_on_a_thread_while_the_main_thread_starts_ray(monkeypatch):
    ray = FakeRay(monkeypatch)
    planned_on: list[threading.Thread] = []

    def plan():
        planned_on.append(threading.current_thread())
        return "the plan"

    assert plan_while_ray_starts(plan) == ("the plan", None)
    assert ray.started_on is threading.main_thread()
    assert planned_on and planned_on[0] is not threading.main_thread()
    assert not ray.shut_down
    assert ray.dashboard is False, "a local Ray instance starts without its dashboard"


def test_ray_dashboard_flag_reaches_rays_start(monkeypatch):
    ray = FakeRay(monkeypatch)
    plan_while_ray_starts(lambda: "the plan", ray_dashboard=True)
    assert ray.dashboard is True
    assert build_parser().parse_args(["--ray-dashboard"]).ray_dashboard
    assert not build_parser().parse_args([]).ray_dashboard


def test_a_plan_that_fails_shuts_ray_down_and_raises(monkeypatch):
    ray = FakeRay(monkeypatch)

    def plan():
        raise PreflightError("prompts: 1 of 2 prompts are too long")

    with pytest.raises(PreflightError, match="too long"):
        plan_while_ray_starts(plan)
    assert ray.shut_down, "no actor started: Ray is not left running"


def test_rays_start_error_is_returned_for_the_run_to_report(monkeypatch):
    ray = FakeRay(monkeypatch, fails=True)
    plan, error = plan_while_ray_starts(lambda: "the plan")
    assert plan == "the plan" and isinstance(error, ConnectionError)
    assert not ray.shut_down


def test_a_run_on_ray_leaves_ray_itself_when_it_ends(monkeypatch, tmp_path, base):
    """``online-dt run`` shuts its Ray down (or disconnects) as its last step, after the
    summary, rather than through Ray's exit hook, which sleeps 0.5 s first; also when the
    loop fails."""
    import ray

    import actors.controller

    fake = FakeRay(monkeypatch)
    monkeypatch.setattr(ray, "is_initialized", lambda: fake.started_on is not None)
    calls: list[str] = []

    def run_on_ray(plan, **kwargs):
        calls.append("loop")
        assert not fake.shut_down, "Ray is left only after the loop"
        if fails:
            raise RuntimeError("the learner's process died")
        return 0

    monkeypatch.setattr(actors.controller, "run_on_ray", run_on_ray)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the movie was\nthe food was\n")
    for fails in (False, True):
        fake.shut_down = False
        cfg = {
            "model": {"name_or_path": str(base), "device": "cpu"},
            "prompts": {"source": "file", "path": str(prompts)},
            "dashboard": {"enabled": False},
            "online": {"run_dir": str(tmp_path / f"run-{fails}")},
        }
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(cfg))
        assert main(["--config", str(path), "--no-progress"]) == (1 if fails else 0)
        assert fake.shut_down
    assert calls == ["loop", "loop"]


def test_stop_ray_is_a_no_op_without_ray(monkeypatch):
    import ray

    from actors.controller import stop_ray

    fake = FakeRay(monkeypatch)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    stop_ray()
    assert not fake.shut_down


# -- a sampler actor started without weights -------------------------------------------------------


def test_a_sampler_actor_started_without_weights_is_built_by_its_first_update(tmp_path, base):
    cfg = loop_tests.make_cfg(tmp_path, base)
    actor = SamplerActor(cfg, None)  # in process: the class Ray makes the actor from
    params = SamplingParams(n=2, max_new_tokens=6, seed=3)
    assert actor.policy_version() == NO_WEIGHTS
    with pytest.raises(NoWeightsError, match="no weights yet"):
        actor.generate(PROMPTS, TARGETS, params)

    learner = Learner(cfg, str(base), tmp_path / "run")
    actor.load_weights(learner.initial_update())
    assert actor.policy_version() == 0
    rollouts = actor.generate(PROMPTS, TARGETS, params)
    assert {r.policy_version for r in rollouts} == {0}
    assert len(rollouts) == 2 * len(PROMPTS)

    actor.load_weights(learner.publish())  # a later update is loaded in place, as before
    assert actor.policy_version() == 1


# -- a sync run's torch threads ------------------------------------------------------------------


def test_a_sync_run_on_one_node_gives_each_actor_the_idle_cpus():
    res = ResourcesConfig()  # learner 1 CPU, one sampler 1 CPU, reward 0
    shared = threads_for_sync(res, one_node=True)
    assert (shared.learner_threads, shared.sampler_threads) == (2, 2)
    assert (res.learner_threads, res.sampler_threads) == (None, None), "a copy"

    three = threads_for_sync(ResourcesConfig(num_samplers=2, learner_cpus=2), one_node=True)
    assert (three.learner_threads, three.sampler_threads) == (4, 2)  # samplers run at once


def test_threads_set_in_the_config_win():
    res = ResourcesConfig(learner_threads=1, sampler_threads=3)
    shared = threads_for_sync(res, one_node=True)
    assert (shared.learner_threads, shared.sampler_threads) == (1, 3)


@pytest.mark.parametrize(
    ("res", "one_node"),
    [
        (ResourcesConfig(sync_shares_cpus=False), True),
        (ResourcesConfig(), False),  # bundles on several nodes, or no placement group
        (ResourcesConfig(sampler_cpus=0.5, learner_cpus=1), True),  # under 2 CPUs in all
    ],
)
def test_threads_stay_as_configured(res, one_node):
    assert threads_for_sync(res, one_node) is res


def test_sampler_threads_in_one_process_are_reported_as_not_applied(tmp_path, base, caplog):
    from online_dt.loop.workers import local_workers

    cfg = loop_tests.make_cfg(tmp_path, base)
    cfg = cfg.model_copy(
        update={"resources": cfg.resources.model_copy(update={"sampler_threads": 2})}
    )
    with caplog.at_level("WARNING", logger="online_dt.loop.workers"):
        workers = local_workers(cfg, str(base), tmp_path / "run", None)
    workers.close()
    assert "resources.sampler_threads applies to Ray's sampler actors" in caplog.text

"""The KubeRay RayJob manifest agrees with the config it runs and the image it names.

``rayjob_problems`` parses docker/kuberay-rayjob.yaml and lists every disagreement: the
entrypoint (parsed with the real ``online-dt run`` argument parser, the config validated with
its ``--set`` overrides), the image tag (the one docker/README.md builds from docker/Dockerfile),
the Ray version, the shared volume (run directory and model cache on the PVC, mounted in every
pod), the dashboard ports, and the resources: the config's placement plan must fit the worker
groups' Ray resources, with the samplers on the sampler pods, the learner on the learner pod
and no GPU left idle. Mutated copies of the manifest must fail.
"""

from __future__ import annotations

import copy
import json
import math
import shlex
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from online_dt.arguments import parse_overrides
from online_dt.config import ConfigError, OnlineRunConfig, load_config
from online_dt.config.placement import assign_bundles, plan_placement
from online_dt.run import build_parser
from tests.test_docker import documented_builds, load_project, workdir

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "docker" / "kuberay-rayjob.yaml"
RAY_DASHBOARD_PORT = 8265


def load_manifest(path: Path = MANIFEST) -> list[dict[str, Any]]:
    """Every YAML document of the manifest."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def quantity(value: Any) -> float:
    """A Kubernetes CPU/GPU quantity (``"4"``, ``"500m"``, ``1``) as a number."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def ray_start_resources(params: dict[str, Any]) -> dict[str, float]:
    """The Ray resources a pod advertises from its ``rayStartParams`` (num-cpus, num-gpus and
    the JSON of ``resources``, which KubeRay wants wrapped in an extra pair of quotes)."""
    out = {"CPU": float(params.get("num-cpus", 0)), "GPU": float(params.get("num-gpus", 0))}
    custom = params.get("resources")
    if custom:
        # KubeRay pastes the value into the shell command `ray start --resources=...`
        (text,) = shlex.split(custom)
        out.update({k: float(v) for k, v in json.loads(text).items()})
    return out


def rayjob_problems(docs: list[dict[str, Any]], repo: Path = REPO) -> list[str]:
    """Every disagreement between the manifest, its config, the image and pyproject."""
    problems: list[str] = []
    jobs = [d for d in docs if d.get("kind") == "RayJob"]
    pvcs = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "PersistentVolumeClaim"}
    if len(jobs) != 1:
        return [f"expected one RayJob, found {len(jobs)}"]
    job = jobs[0]
    if job.get("apiVersion") != "ray.io/v1":
        problems.append(f"apiVersion {job.get('apiVersion')} is not ray.io/v1")
    spec = job["spec"]
    cluster = spec["rayClusterSpec"]
    project = load_project(repo / "pyproject.toml")
    if cluster.get("rayVersion") != project.pins["ray"]:
        problems.append(f"rayVersion {cluster.get('rayVersion')} != ray {project.pins['ray']}")

    # --- entrypoint: python -m online_dt.run --config <config in the image> --set ... ---
    argv = shlex.split(spec["entrypoint"])
    if argv[:3] != ["python", "-m", "online_dt.run"]:
        return [*problems, f"entrypoint {argv[:3]} is not python -m online_dt.run"]
    args = build_parser().parse_args(argv[3:])
    image_dir = PurePosixPath(workdir((repo / "docker" / "Dockerfile").read_text()))
    config = PurePosixPath(args.config)
    if not config.is_relative_to(image_dir):
        return [*problems, f"--config {config} is not inside the image's source {image_dir}"]
    config_path = repo / config.relative_to(image_dir)
    try:
        cfg = load_config(config_path, OnlineRunConfig, parse_overrides(args.overrides))
    except ConfigError as e:
        return [*problems, f"the entrypoint's config does not validate: {e}"]

    # --- pods: head + worker groups, each with its Ray resources and replicas ---
    head = cluster["headGroupSpec"]
    groups = {"head": (head, 1)}
    for group in cluster.get("workerGroupSpecs", []):
        replicas = group.get("replicas", 1)
        lo, hi = group.get("minReplicas", replicas), group.get("maxReplicas", replicas)
        if not lo <= replicas <= hi:
            problems.append(f"group {group['groupName']}: replicas {replicas} not in [{lo}, {hi}]")
        groups[group["groupName"]] = (group, replicas)

    want_image = documented_builds((repo / "docker" / "README.md").read_text()).get(
        "docker/Dockerfile"
    )
    if want_image != f"online-dt:{project.version}-gpu":
        problems.append(f"docker/README.md builds docker/Dockerfile as {want_image}")
    mounts: dict[str, str] = {}
    pod_resources: dict[str, dict[str, float]] = {}
    for name, (group, _) in groups.items():
        pod = group["template"]["spec"]
        (container,) = [c for c in pod["containers"] if c["name"].startswith("ray-")]
        if container["image"].rpartition("/")[2] != want_image:
            problems.append(f"group {name}: image {container['image']} != {want_image}")
        res = ray_start_resources(group.get("rayStartParams", {}))
        pod_resources[name] = res
        limits = container.get("resources", {}).get("limits", {})
        if quantity(limits.get("nvidia.com/gpu", 0)) != res["GPU"]:
            problems.append(
                f"group {name}: pod has {limits.get('nvidia.com/gpu', 0)} nvidia.com/gpu,"
                f" Ray is told num-gpus {res['GPU']:g}"
            )
        if "cpu" not in limits or quantity(limits["cpu"]) < res["CPU"]:
            problems.append(f"group {name}: CPU limit {limits.get('cpu')} < num-cpus {res['CPU']}")
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in pod.get("volumes", [])
            if "persistentVolumeClaim" in v
        }
        shared = [m for m in container.get("volumeMounts", []) if m["name"] in claims]
        if len(shared) != 1 or claims[shared[0]["name"]] not in pvcs:
            problems.append(f"group {name}: no mount of the manifest's PersistentVolumeClaim")
        else:
            mounts[name] = shared[0]["mountPath"]
            pvc = pvcs[claims[shared[0]["name"]]]
            if "ReadWriteMany" not in pvc["spec"].get("accessModes", []):
                problems.append(f"PVC {pvc['metadata']['name']} is not ReadWriteMany")

    # --- run directory and model cache on the shared volume, seen at the same path ---
    if len(set(mounts.values())) > 1:
        problems.append(f"the shared volume is mounted at different paths: {mounts}")
    mount = PurePosixPath(next(iter(mounts.values()), "/nonexistent"))
    run_dir = PurePosixPath(str(cfg.online.run_dir))
    if not run_dir.is_relative_to(mount):
        problems.append(f"online.run_dir {run_dir} is not on the shared volume {mount}")
    env = (yaml.safe_load(spec.get("runtimeEnvYAML") or "{}") or {}).get("env_vars", {})
    cache = env.get("ONLINE_DT_CACHE")
    if cache is None or not PurePosixPath(cache).is_relative_to(mount):
        problems.append(f"ONLINE_DT_CACHE {cache} is not on the shared volume {mount}")

    # --- dashboards: ours binds 0.0.0.0 on the head (the driver's node), and Ray's ---
    (head_container,) = [
        c for c in head["template"]["spec"]["containers"] if c["name"].startswith("ray-")
    ]
    ports = {p["containerPort"] for p in head_container.get("ports", [])}
    if cfg.dashboard.host != "0.0.0.0":
        problems.append(f"dashboard.host {cfg.dashboard.host} is not 0.0.0.0")
    for port in (cfg.dashboard.port, RAY_DASHBOARD_PORT):
        if port not in ports:
            problems.append(f"head does not expose port {port}")
    if head.get("rayStartParams", {}).get("dashboard-host") != "0.0.0.0":
        problems.append("the Ray dashboard does not bind 0.0.0.0 (rayStartParams.dashboard-host)")

    problems += resource_problems(cfg, groups, pod_resources)
    return problems


def resource_problems(
    cfg: OnlineRunConfig,
    groups: dict[str, tuple[dict[str, Any], int]],
    pod_resources: dict[str, dict[str, float]],
) -> list[str]:
    """The config's placement plan on the manifest's pods: every bundle fits, samplers and
    learner land on their own groups, and each GPU group has exactly the GPUs they use."""
    res = cfg.resources
    plan = plan_placement(res)
    problems: list[str] = []
    nodes, owner = [], []
    for name, (_, replicas) in groups.items():
        nodes += [pod_resources[name]] * replicas
        owner += [name] * replicas
    assignment = assign_bundles(plan, nodes)
    if assignment is None:
        problems.append(f"the worker groups cannot hold the placement plan\n{plan.describe()}")

    for role, custom in (("sampler", res.sampler_resources), ("learner", res.learner_resources)):
        names = [
            n
            for n, r in sorted(pod_resources.items())
            if n != "head" and custom and custom.keys() <= r.keys()
        ]
        if len(names) != 1:
            problems.append(
                f"resources.{role}_resources {custom} must name exactly one worker group's"
                f" custom resource, found groups {names}"
            )
            continue
        group = names[0]
        actors = plan.samplers() if role == "sampler" else [plan.actor("learner")]
        bundles = sorted({a.bundle_index for a in actors})
        landed = {owner[assignment[b]] for b in bundles} if assignment else {group}
        if landed != {group}:
            problems.append(f"{role} bundles land on {sorted(landed)}, not on group {group}")
        used = sum(math.ceil(plan.bundles[b].get("GPU", 0.0) - 1e-9) for b in bundles)
        have = groups[group][1] * pod_resources[group]["GPU"]
        if used != have:
            problems.append(
                f"group {group}: {have:g} GPUs ({groups[group][1]} replicas x"
                f" {pod_resources[group]['GPU']:g}) but the {role}s use {used}"
                f" (num_samplers {res.num_samplers}, sampler_gpus {res.sampler_gpus:g},"
                f" learner_gpus {res.learner_gpus:g})"
            )
        one_per_pod = role == "sampler" and res.sampler_gpus == pod_resources[group]["GPU"]
        if one_per_pod and groups[group][1] != res.num_samplers:
            problems.append(
                f"group {group}: {groups[group][1]} replicas with one sampler each,"
                f" resources.num_samplers is {res.num_samplers}"
            )
    return problems


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------


def test_manifest_agrees_with_config_and_image():
    assert rayjob_problems(load_manifest()) == []


def test_referenced_config_is_the_cluster_config():
    (job,) = [d for d in load_manifest() if d["kind"] == "RayJob"]
    args = build_parser().parse_args(shlex.split(job["spec"]["entrypoint"])[3:])
    assert args.config.endswith("/configs/cluster_gpu.yaml")
    cfg = load_config(REPO / "configs" / "cluster_gpu.yaml", OnlineRunConfig)
    assert cfg.sampler.backend == "vllm" and cfg.resources.sampler_gpus > 0


def _job(docs):
    return next(d for d in docs if d["kind"] == "RayJob")


def _group(docs, name):
    spec = _job(docs)["spec"]["rayClusterSpec"]
    if name == "head":
        return spec["headGroupSpec"]
    return next(g for g in spec["workerGroupSpecs"] if g["groupName"] == name)


def _container(docs, name):
    return _group(docs, name)["template"]["spec"]["containers"][0]


def _set_entry(docs, old, new):
    spec = _job(docs)["spec"]
    assert old in spec["entrypoint"]
    spec["entrypoint"] = spec["entrypoint"].replace(old, new)


def _add_set(docs, override):
    _job(docs)["spec"]["entrypoint"] += f" --set {override}"


MUTATIONS = {
    "more sampler replicas": (
        lambda d: _group(d, "samplers").update(replicas=3, maxReplicas=3),
        "group samplers: 3 GPUs (3 replicas x 1) but the samplers use 2",
    ),
    "fewer sampler replicas": (
        lambda d: _group(d, "samplers").update(replicas=1, minReplicas=1),
        "cannot hold the placement plan",
    ),
    "num_samplers override": (
        lambda d: _add_set(d, "resources.num_samplers=1"),
        "but the samplers use 1",
    ),
    "sampler_gpus override": (
        lambda d: _add_set(d, "resources.sampler_gpus=0.5"),  # 2 samplers in one bundle
        "cannot hold the placement plan",
    ),
    "learner GPUs": (
        lambda d: _group(d, "learner")["rayStartParams"].update({"num-gpus": "2"}),
        "group learner: pod has 1 nvidia.com/gpu, Ray is told num-gpus 2",
    ),
    "learner CPUs short": (
        lambda d: _add_set(d, "resources.learner_cpus=6"),
        "cannot hold the placement plan",
    ),
    "head CPUs for the reward model": (
        lambda d: _group(d, "head")["rayStartParams"].update({"num-cpus": "0"}),
        "cannot hold the placement plan",
    ),
    "pod CPU limit": (
        lambda d: _container(d, "learner")["resources"]["limits"].update(cpu="2"),
        "group learner: CPU limit 2 < num-cpus 4.0",
    ),
    "sampler custom resource": (
        lambda d: _group(d, "samplers")["rayStartParams"].update(resources='"{\\"gpu_pool\\": 1}"'),
        "resources.sampler_resources",
    ),
    "learner pod also offers the sampler resource": (
        lambda d: _group(d, "learner")["rayStartParams"].update(
            resources='"{\\"online_dt_learner\\": 1, \\"online_dt_sampler\\": 1}"'
        ),
        "found groups ['learner', 'samplers']",
    ),
    "image tag": (
        lambda d: _container(d, "samplers").update(image="online-dt:0.0.9-gpu"),
        "group samplers: image online-dt:0.0.9-gpu",
    ),
    "ray version": (
        lambda d: _job(d)["spec"]["rayClusterSpec"].update(rayVersion="2.59.0"),
        "rayVersion 2.59.0",
    ),
    "other module": (
        lambda d: _set_entry(d, "online_dt.run", "online_dt.cli"),
        "is not python -m online_dt.run",
    ),
    "config outside the image": (
        lambda d: _set_entry(d, "/home/ray/online-dt/configs", "/tmp/configs"),
        "is not inside the image's source",
    ),
    "invalid override": (
        lambda d: _add_set(d, "resources.sampler_gpus=1.5"),
        "does not validate",
    ),
    "run dir off the volume": (
        lambda d: _set_entry(d, "run_dir=/shared/", "run_dir=/tmp/"),
        "online.run_dir /tmp/online-dt/runs/cluster-gpu is not on the shared volume /shared",
    ),
    "mount path differs": (
        lambda d: _container(d, "learner")["volumeMounts"][0].update(mountPath="/data"),
        "mounted at different paths",
    ),
    "no volume on the samplers": (
        lambda d: _container(d, "samplers")["volumeMounts"].pop(0),
        "group samplers: no mount",
    ),
    "cache off the volume": (
        lambda d: _job(d)["spec"].update(runtimeEnvYAML="env_vars: {ONLINE_DT_CACHE: /tmp/c}"),
        "ONLINE_DT_CACHE /tmp/c",
    ),
    "loopback dashboard": (
        lambda d: _add_set(d, "dashboard.host=127.0.0.1"),
        "dashboard.host 127.0.0.1",
    ),
    "dashboard port not exposed": (
        lambda d: _add_set(d, "dashboard.port=9000"),
        "head does not expose port 9000",
    ),
    "no Ray dashboard port": (
        lambda d: _container(d, "head")["ports"].pop(1),
        "head does not expose port 8265",
    ),
    "PVC access mode": (
        lambda d: next(x for x in d if x["kind"] == "PersistentVolumeClaim")["spec"].update(
            accessModes=["ReadWriteOnce"]
        ),
        "is not ReadWriteMany",
    ),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_mutated_manifest_fails(name):
    mutate, problem = MUTATIONS[name]
    docs = copy.deepcopy(load_manifest())
    mutate(docs)
    problems = rayjob_problems(docs)
    assert any(problem in p for p in problems), problems

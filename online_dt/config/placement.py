"""Where each actor runs: a placement plan computed from the ``resources`` config section.

Pure and Ray-free, so it is unit-tested without a cluster and runs while the config is
validated (``OnlineRunConfig`` calls :func:`plan_placement` on its ``resources``), i.e. before
any actor starts.
``actors/placement.py`` turns a plan into a Ray placement group and per-actor options.

The layout:

* **Not colocated** (``colocate: false``): the learner has its own bundle; samplers with a
  whole number of GPUs (or none) have one bundle each; samplers with a fractional GPU share are
  packed first-fit into sampler-only bundles of at most one GPU (4 x 0.25 -> one bundle holding
  a whole GPU and the 4 samplers).
* **Colocated** (``colocate: true``): the learner and the samplers are packed first-fit into
  shared bundles of at most one GPU, the learner first (learner 0.5 + 2 samplers x 0.25 -> one
  bundle; more samplers open further bundles). Without GPUs everything shares one bundle.
* **Reward model**: its own bundle when it asks for CPUs or GPUs; with neither it is pinned
  to the learner's bundle and shares its node.

A bundle reserves exactly the sum of its actors' requests (CPUs, GPUs and the custom resources
of ``sampler_resources``/``learner_resources``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from online_dt.config.base import ConfigError

if TYPE_CHECKING:
    from online_dt.config.resources import ResourcesConfig

Role = Literal["learner", "sampler", "reward"]

_EPS = 1e-9
_DIGITS = 6  # Ray keeps resource quantities to 1e-4; rounding hides float noise from sums


@dataclass(frozen=True)
class ActorPlacement:
    """Where one actor goes and what it asks Ray for.

    Attributes:
        role: ``learner``, ``sampler`` or ``reward``.
        replica: replica index within the role (samplers 0..N-1; 0 for the others).
        bundle_index: index into :attr:`PlacementPlan.bundles`.
        num_cpus: the actor's ``num_cpus`` option.
        num_gpus: the actor's ``num_gpus`` option (fractions share a GPU).
        resources: custom Ray resources the actor's bundle (or, without a placement group, the
            actor itself) requests, e.g. ``{"online_dt_sampler": 1}``.
    """

    role: Role
    replica: int
    bundle_index: int
    num_cpus: float
    num_gpus: float
    resources: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PlacementPlan:
    """Bundles of one placement group and the actors assigned to them.

    Attributes:
        bundles: Ray bundles, e.g. ``[{"CPU": 1.0, "GPU": 0.5}]`` (zero amounts omitted).
        actors: every actor: the learner, the samplers in replica order, the reward model.
        strategy: Ray placement strategy (``PACK``, ``SPREAD``, ``STRICT_PACK``,
            ``STRICT_SPREAD``).
        use_placement_group: whether the actors are started in a placement group built from
            :attr:`bundles`, or each scheduled on its own with its ``num_cpus``/``num_gpus``.
    """

    bundles: list[dict[str, float]]
    actors: list[ActorPlacement]
    strategy: str = "PACK"
    use_placement_group: bool = True

    def actor(self, role: Role, replica: int = 0) -> ActorPlacement:
        """The placement of one actor (``KeyError`` when there is no such actor)."""
        for a in self.actors:
            if a.role == role and a.replica == replica:
                return a
        raise KeyError(f"no {role} replica {replica} in the plan")

    def samplers(self) -> list[ActorPlacement]:
        """The sampler placements in replica order."""
        return [a for a in self.actors if a.role == "sampler"]

    def total(self) -> dict[str, float]:
        """Sum of every bundle's resources: what the cluster must have free."""
        out: dict[str, float] = {}
        for bundle in self.bundles:
            for key, amount in bundle.items():
                out[key] = round(out.get(key, 0.0) + amount, _DIGITS)
        return out

    def describe(self) -> str:
        """One line per bundle with its actors, for logs and error messages."""
        lines = [f"placement ({self.strategy}, {len(self.bundles)} bundles, total {self.total()}):"]
        for i, bundle in enumerate(self.bundles):
            names = [
                f"{a.role}{a.replica if a.role == 'sampler' else ''}"
                for a in self.actors
                if a.bundle_index == i
            ]
            lines.append(f"  bundle {i} {bundle}: {', '.join(names)}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# planning
# ---------------------------------------------------------------------------------------------


@dataclass
class _Bundle:
    gpu: float = 0.0
    members: list[tuple[Role, int, float, float, dict[str, float]]] = field(default_factory=list)

    def add(
        self, role: Role, replica: int, cpus: float, gpus: float, res: dict[str, float]
    ) -> None:
        self.gpu += gpus
        self.members.append((role, replica, cpus, gpus, res))


def _pack(
    bundles: list[_Bundle],
    role: Role,
    replica: int,
    cpus: float,
    gpus: float,
    res: dict[str, float],
) -> int:
    """First fit of a fractional GPU share into bundles of at most one GPU; returns the index."""
    for i, b in enumerate(bundles):
        if b.gpu + gpus <= 1.0 + _EPS:
            b.add(role, replica, cpus, gpus, res)
            return i
    bundles.append(_Bundle())
    bundles[-1].add(role, replica, cpus, gpus, res)
    return len(bundles) - 1


def _bundle_dict(b: _Bundle) -> dict[str, float]:
    out: dict[str, float] = {}
    for _, _, cpus, gpus, res in b.members:
        for key, amount in (("CPU", cpus), ("GPU", gpus), *res.items()):
            out[key] = round(out.get(key, 0.0) + amount, _DIGITS)
    return {k: v for k, v in out.items() if v > 0}


def _check_share(name: str, gpus: float) -> None:
    if gpus > 1 and not float(gpus).is_integer():
        raise ConfigError(
            f"{name}: {gpus} GPUs: a share above 1 must be a whole number (Ray schedules a"
            " fraction only within one GPU)"
        )


def plan_placement(resources: ResourcesConfig) -> PlacementPlan:
    """Compute the bundles and each actor's place from the ``resources`` section.

    Raises:
        ConfigError: a combination that cannot be placed; the message starts with the
            offending field(s), e.g. colocated shares above one GPU per bundle, a fractional
            share above 1 GPU, colocation without a placement group, or an actor that asks
            for nothing at all (Ray refuses empty bundles).
    """
    r = resources
    for name in ("sampler_gpus", "learner_gpus", "reward_gpus"):
        _check_share(name, getattr(r, name))
    for name in ("sampler_resources", "learner_resources"):
        for key, amount in getattr(r, name).items():
            if key in ("CPU", "GPU", "memory", "object_store_memory"):
                raise ConfigError(f"{name}: {key!r} is not a custom resource (use *_cpus/*_gpus)")
            if amount <= 0:
                raise ConfigError(f"{name}: {key} must be positive, got {amount}")
    sampler_res = dict(r.sampler_resources)
    learner_res = dict(r.learner_resources)

    bundles: list[_Bundle] = []
    if r.colocate:
        if not r.use_placement_group:
            raise ConfigError(
                "colocate: sharing GPUs between the learner and the samplers needs"
                " use_placement_group: true"
            )
        for name in ("learner_gpus", "sampler_gpus"):
            if getattr(r, name) > 1 + _EPS:
                raise ConfigError(
                    f"{name}: {getattr(r, name)} GPUs cannot share a GPU (colocate: true"
                    " packs shares of at most 1 GPU into bundles of one GPU)"
                )
        if r.learner_gpus + r.sampler_gpus > 1 + _EPS:
            raise ConfigError(
                f"learner_gpus + sampler_gpus = {r.learner_gpus + r.sampler_gpus:g} exceeds 1 GPU"
                " per bundle with colocate: true (lower the shares, or set colocate: false)"
            )
        _pack(bundles, "learner", 0, r.learner_cpus, r.learner_gpus, learner_res)
        for i in range(r.num_samplers):
            _pack(bundles, "sampler", i, r.sampler_cpus, r.sampler_gpus, sampler_res)
    else:
        bundles.append(_Bundle())
        bundles[0].add("learner", 0, r.learner_cpus, r.learner_gpus, learner_res)
        if 0 < r.sampler_gpus < 1:
            shared: list[_Bundle] = []
            for i in range(r.num_samplers):
                _pack(shared, "sampler", i, r.sampler_cpus, r.sampler_gpus, sampler_res)
            bundles.extend(shared)
        else:
            for i in range(r.num_samplers):
                bundles.append(_Bundle())
                bundles[-1].add("sampler", i, r.sampler_cpus, r.sampler_gpus, sampler_res)

    reward_asks = r.reward_cpus > 0 or r.reward_gpus > 0
    if reward_asks:
        bundles.append(_Bundle())
        bundles[-1].add("reward", 0, r.reward_cpus, r.reward_gpus, {})

    dicts = [_bundle_dict(b) for b in bundles]
    actors: list[ActorPlacement] = []
    for index, b in enumerate(bundles):
        for role, replica, cpus, gpus, res in b.members:
            actors.append(ActorPlacement(role, replica, index, float(cpus), float(gpus), res))
    if not reward_asks:  # a light reward model shares the learner's bundle (and node)
        actors.append(ActorPlacement("reward", 0, actors[0].bundle_index, 0.0, 0.0))

    if r.use_placement_group:
        for index, bundle in enumerate(dicts):
            if not bundle:
                roles = sorted({m[0] for m in bundles[index].members})
                fields = ", ".join(f"{role}_cpus/{role}_gpus" for role in roles)
                raise ConfigError(
                    f"{fields}: bundle {index} ({', '.join(roles)}) asks for no CPU, GPU or"
                    " custom resource, and Ray refuses empty bundles (give it CPUs, or set"
                    " use_placement_group: false)"
                )
    order = {"learner": 0, "sampler": 1, "reward": 2}
    actors.sort(key=lambda a: (order[a.role], a.replica))
    return PlacementPlan(dicts, actors, r.placement_strategy, r.use_placement_group)


def fits(bundle: dict[str, float], node: dict[str, float]) -> bool:
    """Whether a node with these resources can hold the bundle (every amount covered)."""
    return all(node.get(k, 0.0) + _EPS >= v for k, v in bundle.items())


def assign_bundles(plan: PlacementPlan, nodes: list[dict[str, float]]) -> list[int] | None:
    """A node index for every bundle such that each node's resources cover its bundles, or
    ``None`` when first-fit (largest bundles first) finds none. ``STRICT_PACK`` puts every
    bundle on one node and ``STRICT_SPREAD`` each on a different node, as Ray does; ``PACK``
    and ``SPREAD`` are best effort in Ray and only need some fit here. Used to check a cluster
    layout (e.g. a KubeRay manifest's worker groups) against a plan without a cluster."""
    free = [dict(n) for n in nodes]
    order = sorted(
        range(len(plan.bundles)),
        key=lambda i: (-plan.bundles[i].get("GPU", 0.0), -plan.bundles[i].get("CPU", 0.0), i),
    )
    if plan.strategy == "STRICT_PACK":
        total = plan.total()
        node = next((j for j, n in enumerate(free) if fits(total, n)), None)
        return None if node is None else [node] * len(plan.bundles)
    out: list[int | None] = [None] * len(plan.bundles)
    used: set[int] = set()
    for i in order:
        bundle = plan.bundles[i]
        for j, n in enumerate(free):
            if plan.strategy == "STRICT_SPREAD" and j in used:
                continue
            if fits(bundle, n):
                for key, amount in bundle.items():
                    n[key] = n.get(key, 0.0) - amount
                out[i] = j
                used.add(j)
                break
        else:
            return None
    return [j for j in out if j is not None]


def threads_for_sync(resources: ResourcesConfig, one_node: bool) -> ResourcesConfig:
    """``resources`` with the torch threads of a sync run whose bundles are on one node
    (``resources.sync_shares_cpus``): the learner gets the CPUs of every bundle, each sampler
    that total over ``num_samplers`` (at least 1 each, rounded down), where
    ``learner_threads`` / ``sampler_threads`` are not set. ``resources`` itself when the
    option is off, the bundles are on several nodes (``one_node`` false) or they have under 2
    CPUs in all. The caller checks that the mode is sync.
    """
    cpus = (
        resources.learner_cpus
        + resources.reward_cpus
        + resources.num_samplers * resources.sampler_cpus
    )
    if not resources.sync_shares_cpus or not one_node or cpus < 2:
        return resources
    learner = resources.learner_threads or int(cpus + _EPS)
    sampler = resources.sampler_threads or max(1, int(cpus / resources.num_samplers + _EPS))
    return resources.model_copy(update={"learner_threads": learner, "sampler_threads": sampler})

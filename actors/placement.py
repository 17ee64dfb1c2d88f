"""The placement plan on Ray: one placement group, and each actor's ``.options(...)``.

:func:`start_placement` reserves the bundles of :func:`online_dt.config.placement.plan_placement` in
a placement group, waits until the cluster has granted all of them (or fails naming what is
missing), and returns per-actor option dicts that the controller passes as
``ray.remote(Cls).options(**opts.learner)``. With ``use_placement_group: false`` the dicts
only carry ``num_cpus``/``num_gpus`` (and custom resources), and nothing is reserved.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from online_dt.config import ResourcesConfig
from online_dt.config.placement import ActorPlacement, PlacementPlan, fits, plan_placement

log = logging.getLogger(__name__)


class PlacementError(RuntimeError):
    """The cluster did not grant the placement group in time; the message says what is missing."""


@dataclass
class ActorOptions:
    """Keyword arguments for ``.options(...)`` of each actor, and the group they live in.

    Attributes:
        plan: the placement plan the options come from.
        learner: options of the learner actor.
        samplers: options of each sampler replica, in replica order.
        reward: options of the reward-model actor.
        placement_group: the Ray placement group, or ``None`` without one.
        one_node: every bundle of the group is on one node (``False`` without a group: the
            actors' nodes are not known before they start).
    """

    plan: PlacementPlan
    learner: dict[str, Any]
    samplers: list[dict[str, Any]]
    reward: dict[str, Any]
    placement_group: Any = None
    one_node: bool = False
    _removed: bool = field(default=False, repr=False)

    def remove(self) -> None:
        """Remove the placement group (its actors are killed); a no-op without one or twice."""
        if self.placement_group is not None and not self._removed:
            from ray.util import remove_placement_group

            remove_placement_group(self.placement_group)
            self._removed = True


def actor_options(placement: ActorPlacement, pg: Any = None) -> dict[str, Any]:
    """``.options(...)`` keyword arguments of one actor: its CPUs and GPUs, and either its
    bundle of ``pg`` (``PlacementGroupSchedulingStrategy``) or, without a group, its custom
    resources."""
    opts: dict[str, Any] = {"num_cpus": placement.num_cpus, "num_gpus": placement.num_gpus}
    if pg is None:
        if placement.resources:
            opts["resources"] = dict(placement.resources)
        return opts
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
        placement_group=pg,
        placement_group_bundle_index=placement.bundle_index,
    )
    return opts


def create_placement_group(plan: PlacementPlan, timeout_s: float, name: str = "") -> Any:
    """Create the plan's placement group and wait until it is ready.

    Raises:
        PlacementError: not ready within ``timeout_s``; the group is removed and the message
            names the missing resources (totals, and bundles no node can hold).
    """
    import ray
    from ray.util import placement_group, remove_placement_group

    pg = placement_group(plan.bundles, strategy=plan.strategy, name=name)
    start = time.monotonic()
    try:
        ray.get(pg.ready(), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        message = describe_shortfall(plan, ray.available_resources(), _node_resources())
        remove_placement_group(pg)
        raise PlacementError(
            f"placement group not ready after {timeout_s:g} s: {message}\n{plan.describe()}"
        ) from None
    log.info("placement group ready in %.1f s\n%s", time.monotonic() - start, plan.describe())
    return pg


def start_placement(resources: ResourcesConfig, *, timeout_s: float | None = None) -> ActorOptions:
    """Plan the placement, reserve it (when ``use_placement_group``) and return the options of
    every actor. ``timeout_s`` defaults to ``resources.placement_timeout_s``."""
    plan = plan_placement(resources)
    pg = None
    one_node = False
    if plan.use_placement_group:
        from ray.util import placement_group_table

        pg = create_placement_group(plan, timeout_s or resources.placement_timeout_s)
        nodes = placement_group_table(pg).get("bundles_to_node_id", {})
        one_node = len(set(nodes.values())) == 1
    return ActorOptions(
        plan=plan,
        learner=actor_options(plan.actor("learner"), pg),
        samplers=[actor_options(a, pg) for a in plan.samplers()],
        reward=actor_options(plan.actor("reward"), pg),
        placement_group=pg,
        one_node=one_node,
    )


def describe_shortfall(
    plan: PlacementPlan, available: dict[str, float], nodes: list[dict[str, float]]
) -> str:
    """What keeps the plan from being placed: resources whose free total is below the plan's,
    and bundles that no single node can hold even when idle."""
    need = plan.total()
    missing = {
        k: round(v - available.get(k, 0.0), 4)
        for k, v in need.items()
        if available.get(k, 0.0) + 1e-9 < v
    }
    parts = [f"needs {need}, cluster has free {_rounded(available, need)}"]
    if missing:
        parts.append("missing " + ", ".join(f"{k} {v:g}" for k, v in missing.items()))
    too_big = [i for i, b in enumerate(plan.bundles) if not any(fits(b, n) for n in nodes)]
    if too_big:
        parts.append(
            "no node can hold "
            + ", ".join(f"bundle {i} {plan.bundles[i]}" for i in too_big)
            + f" (nodes: {[_rounded(n, need) for n in nodes]})"
        )
    if not missing and not too_big:
        parts.append(f"the totals fit; the {plan.strategy} strategy or other jobs may block it")
    return "; ".join(parts)


def _rounded(resources: dict[str, float], keys: dict[str, float]) -> dict[str, float]:
    return {k: round(resources.get(k, 0.0), 4) for k in keys}


def _node_resources() -> list[dict[str, float]]:
    import ray

    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]

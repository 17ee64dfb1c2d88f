"""The ``resources`` section: Ray resources of the online run's actors."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from online_dt.config.base import StrictModel


class ResourcesConfig(StrictModel):
    """Ray resources of the actors and where they go (fractional GPUs allowed).

    Checked when an :class:`~online_dt.config.runs.OnlineRunConfig` is validated, by computing
    the placement plan (:func:`online_dt.config.placement.plan_placement`), so a combination
    that cannot be placed fails at load time, before any actor starts.
    """

    num_samplers: int = Field(1, ge=1)
    """Sampler actor replicas; each prompt batch is split across them."""

    sampler_cpus: float = Field(1.0, ge=0.0)
    """CPUs per sampler actor."""

    sampler_gpus: float = Field(0.0, ge=0.0)
    """GPUs per sampler actor: a fraction (0.25: four samplers share one GPU) or a whole
    number (a value above 1 must be whole)."""

    learner_cpus: float = Field(1.0, ge=0.0)
    """CPUs of the learner actor."""

    learner_threads: int | None = Field(None, ge=1)
    """Torch intra-op threads of the learner (``torch.set_num_threads`` when the learner
    starts); ``None`` leaves torch's setting, which inside a Ray actor follows its CPUs
    (Ray sets ``OMP_NUM_THREADS`` to ``learner_cpus``, at least 1), except in a sync run on one
    node, where ``sync_shares_cpus`` gives it the samplers' CPUs too. In ``async`` the sampler
    runs beside training and extra threads compete with it. With ``--local`` the learner
    shares the one process, so the setting applies to the sampler too."""

    sampler_threads: int | None = Field(None, ge=1)
    """Torch intra-op threads of each sampler actor's process (``torch.set_num_threads`` when
    it starts; the HF sampler's, vLLM's engine sets its own); ``None`` leaves torch's
    setting, which follows ``sampler_cpus``. Ray actors only: with ``--local``,
    ``learner_threads`` is the one process's setting."""

    sync_shares_cpus: bool = True
    """In ``online.mode: sync`` the samplers, the reward model and the learner run one after
    another, so each can use the others' CPUs while they wait. With this on, ``mode: sync``
    and every bundle on one node, the learner gets as many torch threads as all the bundles
    have CPUs, and each sampler that total over ``num_samplers`` (samplers run at once),
    unless ``learner_threads`` / ``sampler_threads`` are set. Async mode, or bundles on
    several nodes: each actor keeps its own CPUs."""

    retain_freed_memory: bool = True
    """Each actor's process (and the one process of ``--local``) keeps the memory it frees for
    its next allocations instead of returning it to the OS at every step: glibc's
    ``M_MMAP_THRESHOLD`` 32 MiB and ``M_TRIM_THRESHOLD`` 1 GiB
    (:func:`online_dt.util.malloc.retain_freed_memory`). On the default config on 2 CPU cores
    this removed 30,000-65,000 page faults per iteration and 7 % of an iteration's time on
    Ray (docs/method.md, round 17). Up to
    1 GiB of freed memory per heap then stays resident. No effect where the C library is not
    glibc. ``false``: glibc's defaults."""

    learner_gpus: float = Field(0.0, ge=0.0)
    """GPUs of the learner actor (a fraction, or a whole number above 1)."""

    reward_cpus: float = Field(0.0, ge=0.0)
    """CPUs of the reward-model actor (0 with ``reward_gpus`` 0: it gets no bundle of its own
    and shares the learner's bundle and node; VADER is light)."""

    reward_gpus: float = Field(0.0, ge=0.0)
    """GPUs of the reward-model actor (a fraction, or a whole number above 1)."""

    sampler_resources: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources per sampler, e.g. ``{online_dt_sampler: 1}``: pins samplers to the
    nodes that advertise them (``ray start --resources``, a KubeRay group's
    ``rayStartParams.resources``)."""

    learner_resources: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources of the learner, e.g. ``{online_dt_learner: 1}`` (see
    ``sampler_resources``)."""

    colocate: bool = False
    """Sampler replicas and the learner share GPUs: their shares are packed, learner first,
    into bundles of at most one GPU (``learner_gpus + sampler_gpus`` must be at most 1), instead
    of the learner getting a bundle of its own."""

    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    """Ray placement-group strategy for the actors' bundles (Ray's own names)."""

    use_placement_group: bool = True
    """Reserve the actors' resources in one Ray placement group before starting them, so a
    run either gets all its resources or waits; ``false`` schedules each actor on its own."""

    placement_timeout_s: float = Field(600.0, gt=0.0)
    """How long to wait for the placement group (e.g. while an autoscaler adds nodes) before
    failing with the resources the cluster is missing, in seconds."""

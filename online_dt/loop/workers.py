"""The loop's three workers, typed by what the loop calls on them, and their in-process build.

Every method returns a :class:`~online_dt.loop.futures.Future`: in process the call has already
run (:class:`~online_dt.loop.futures.LocalHandle`), or runs on a thread of its own for the
reward model (:class:`~online_dt.loop.futures.ThreadHandle`, so that a hung call can be timed
out); on Ray it was submitted to an actor (``actors.ray_futures.RayHandle``). The loop is
written once against these Protocols.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from online_dt.config import OnlineRunConfig
from online_dt.loop.futures import Future, LocalHandle, ThreadHandle, TimedFuture
from online_dt.loop.rollout_batch import RolloutBatch
from online_dt.loop.sampler_group import SamplerGroup
from online_dt.rollout.sampler import SamplingParams
from online_dt.rollout.weight_sync import WeightUpdate
from online_dt.samples import Reward, Rollout

log = logging.getLogger(__name__)


class SamplerWorkers(Protocol):
    """The sampler replicas as one (a :class:`~online_dt.loop.sampler_group.SamplerGroup`)."""

    def generate(
        self, prompts: Sequence[str], targets: Sequence[Reward], params: SamplingParams
    ) -> Future[RolloutBatch]:
        """``params.n`` rollouts per prompt, each prompt conditioned on its target."""
        ...

    def load_weights(self, update: WeightUpdate) -> Future[Any]:
        """Apply a published policy version on every replica."""
        ...


class RewardWorker(Protocol):
    """The reward model, its scores validated."""

    def score(self, prompts: list[str], completions: list[str]) -> TimedFuture[list[Any]]:
        """One finite reward per sample, a float or (with ``conditioning.objectives``) a tuple
        of one float per objective (raises ``RewardModelError`` on invalid scores); the
        future's ``result(timeout)`` raises ``CallTimeoutError`` when the call hangs."""
        ...


class LearnerWorker(Protocol):
    """The :class:`online_dt.training.learner.Learner`, as the loop calls it."""

    def initial_update(self) -> Future[WeightUpdate]:
        """Publish the current version (a restarted learner: its checkpoint's) for samplers to
        start from, deleting the versions published after it."""
        ...

    def buffer_rewards(self) -> Future[list[float]]:
        """Achieved rewards held in the replay buffer."""
        ...

    def append(
        self,
        rollouts: Sequence[Rollout],
        rewards: Sequence[float],
        iteration: int,
        scored_at: float,
    ) -> Future[dict[str, Any]]:
        """Append scored rollouts with hindsight relabeling."""
        ...

    def train(self, steps: int, lr: float | None = None) -> Future[dict[str, float]]:
        """``steps`` optimizer steps on replay-buffer batches (at body learning rate ``lr``
        when given, else ``training.lr``)."""
        ...

    def kl_estimate(self, rollouts: Sequence[Rollout]) -> Future[float | None]:
        """KL(policy || base) per completion, in nats."""
        ...

    def publish(self) -> Future[WeightUpdate]:
        """Publish the current weights as the next policy version."""
        ...

    def checkpoint(
        self, iteration: int, controller_state: dict[str, Any], *, background: bool = False
    ) -> Future[str]:
        """Write a resumable checkpoint after ``iteration`` (``background``: the learner
        writes it on a thread of its own, and the future resolves once the state is copied)."""
        ...


@dataclass
class Workers:
    """Handles of the loop's workers.

    Attributes:
        samplers: the sampler replicas, as one group.
        reward: the reward model.
        learner: the learner (replay buffer, training, weight publication, checkpoints).
        close: releases what the workers hold in this process (the local sampler's engine
            processes); a no-op for actors, which their placement group ends.
        restart_reward: ends the reward worker after a scoring call timed out and returns
            (the seconds it took) once a new one takes calls; on Ray the actor is killed and
            restarted. ``None`` in process, where a hung call cannot be ended (see
            :class:`~online_dt.loop.futures.ThreadHandle`).
        wait_for_reward: returns (the seconds waited) once a reward worker that died is back
            and takes calls, so that a restart is not timed as the scoring call sent after it;
            on Ray the restarted actor answers ``pid``. ``None`` in process (nothing restarts).
        restart_learner: ends the lost learner and starts a new one from the given checkpoint
            directory, or, given ``None`` (no checkpoint yet), a fresh one that starts over
            (``Learner(start_over=True)``), returning its handle
            (:func:`online_dt.loop.recovery.restart_learner` then publishes its version and
            resyncs the samplers); on Ray a new learner actor. ``None`` in process, where the
            learner dies with the loop.
    """

    samplers: SamplerWorkers
    reward: RewardWorker
    learner: LearnerWorker
    close: Callable[[], None] = lambda: None
    restart_reward: Callable[[], float] | None = None
    wait_for_reward: Callable[[], float] | None = None
    restart_learner: Callable[[Path | None], LearnerWorker] | None = None


class CheckedRewardModel:
    """A reward model whose ``score`` validates every batch (``score_checked``): one finite
    float per sample, or, with ``objectives`` (``conditioning.objectives``' names), a tuple of
    one finite float per objective, in that order; with ``upper_bound``, no score above it
    (``conditioning.reward_max`` with ``best_command``, where a higher label would ask for the
    best command)."""

    def __init__(
        self, model: Any, objectives: Sequence[str] = (), upper_bound: float | None = None
    ) -> None:
        self.model = model
        self.objectives = list(objectives)
        self.upper_bound = upper_bound

    @classmethod
    def for_run(cls, model: Any, cfg: OnlineRunConfig) -> CheckedRewardModel:
        """``model`` checked as ``cfg`` needs: its objectives, and ``conditioning.reward_max``
        as the upper bound with ``conditioning.best_command``."""
        c = cfg.conditioning
        return cls(model, c.objective_names, c.reward_max if c.best_command else None)

    def score(self, prompts: list[str], completions: list[str]) -> list[Any]:
        """See :func:`online_dt.rewards.score_checked`.

        Raises:
            RewardModelError: as ``score_checked``; or, reason ``above_reward_max``, a score
                above ``upper_bound``.
        """
        from online_dt.rewards import RewardModelError, score_checked

        scores = score_checked(self.model, prompts, completions, self.objectives)
        bound = self.upper_bound
        above = [i for i, x in enumerate(scores) if bound is not None and x > bound]
        if above:
            raise RewardModelError(
                f"{len(above)} score(s) above conditioning.reward_max ({bound}), e.g. "
                f"{scores[above[0]]}: with conditioning.best_command a label above it asks "
                "for the best command; set reward_max to the reward model's highest score",
                indices=above,
                reason="above_reward_max",
                samples=[(prompts[i], completions[i]) for i in above],
                model_name=type(self.model).__name__,
            )
        return scores


def local_workers(
    cfg: OnlineRunConfig,
    base_path: str,
    run_dir: Path,
    checkpoint: Path | None,
    start_over: bool = False,
) -> Workers:
    """Workers in this process (``--local``, tests): one sampler, the reward model and the
    learner, built from the config; the sampler starts from the learner's first version.
    ``start_over``: the learner is fresh and deletes the replay-buffer shards of a run that
    stopped before its first checkpoint (``RunPlan.start_over``).

    With ``sampler.weight_sync: ray`` the sampler is built from the policy's skeleton (config
    and tokenizer) and the first version's in-memory state is sent to it through the sampler
    group, as every later one; no weights are written to disk.

    With ``fault_tolerance.reward_timeout_s`` set, each scoring call runs on a thread of its
    own (:class:`~online_dt.loop.futures.ThreadHandle`) so that the loop can stop waiting for
    it; a call that hangs cannot be killed in process and is abandoned on its thread."""
    from online_dt.rewards import load_reward_model
    from online_dt.rollout.factory import make_sampler, make_sampler_from_skeleton
    from online_dt.rollout.weight_sync import PolicySkeleton
    from online_dt.training.learner import Learner

    if cfg.resources.sampler_threads is not None:
        log.warning(
            "resources.sampler_threads applies to Ray's sampler actors; in one process the "
            "learner and the sampler share resources.learner_threads (or torch's default)"
        )
    learner = Learner(cfg, base_path, run_dir, checkpoint, start_over)
    update = learner.initial_update()
    if update.backend == "ray":
        sampler = make_sampler_from_skeleton(cfg, PolicySkeleton.of(learner.policy), base_path)
    else:
        assert update.path is not None  # checkpoint weight sync: a directory to load
        sampler = make_sampler(cfg, update.path, update.version, base_path)
    ft = cfg.fault_tolerance
    group = SamplerGroup(
        [LocalHandle(sampler)], ft.rollout_retries, ft.retry_backoff_s, ft.restart_timeout_s
    )
    if update.backend == "ray":
        group.load_weights(update).result()
    reward = CheckedRewardModel.for_run(load_reward_model(cfg.reward_model), cfg)
    timed = ft.reward_timeout_s is not None
    reward_handle = ThreadHandle(reward) if timed else LocalHandle(reward)
    close = getattr(sampler, "close", lambda: None)  # vLLM: shut its engine down before exit
    return Workers(group, reward_handle, LocalHandle(learner), close)

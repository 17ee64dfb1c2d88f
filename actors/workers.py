"""The Ray actors: thin wrappers that build core objects inside the actor process.

No algorithm lives here; each class only constructs pieces of :mod:`online_dt` where Ray
placed it. The controller turns them into actors with ``ray.remote(...).options(...)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from online_dt.config import OnlineRunConfig
from online_dt.loop.workers import CheckedRewardModel
from online_dt.rollout.sampler import SamplingParams
from online_dt.rollout.weight_sync import WeightUpdate
from online_dt.samples import Rollout
from online_dt.training.learner import Learner
from online_dt.util.logs import forward_warnings, redirect_output


def log_to_file(log_file: str | None) -> None:
    """Send this actor's output (and that of the processes it starts, e.g. vLLM's engine) to
    ``log_file``, appended (a restarted actor continues it), with the project's own INFO and
    up in it; its warnings and errors still reach the driver's console. ``None``: leave the
    output to Ray, which streams it to the driver (``online-dt run --verbose``)."""
    if log_file is None:
        return
    import logging
    from pathlib import Path

    console = redirect_output(Path(log_file))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    forward_warnings(console)


class SamplerActor:
    """A sampler replica (vLLM, or the HF reference when vLLM is absent).

    Args:
        cfg: the run config.
        update: the weights to start from (a restarted actor takes the newest published).
        log_file: where its output goes (see :func:`log_to_file`).
    """

    def __init__(
        self, cfg: OnlineRunConfig, update: WeightUpdate, log_file: str | None = None
    ) -> None:
        log_to_file(log_file)
        from online_dt.rollout.factory import make_sampler
        from online_dt.rollout.weight_sync import newest_published

        update = newest_published(update)  # a restarted actor starts from the newest weights
        assert update.path is not None
        self.sampler = make_sampler(cfg, update.path, update.version)

    def generate(
        self, prompts: Sequence[str], targets: Sequence[float], params: SamplingParams
    ) -> list[Rollout]:
        """See :meth:`online_dt.rollout.sampler.Sampler.generate`."""
        return self.sampler.generate(prompts, targets, params)

    def load_weights(self, update: WeightUpdate) -> None:
        """See :meth:`online_dt.rollout.sampler.Sampler.load_weights`."""
        self.sampler.load_weights(update)

    def pid(self) -> int:
        """The actor's process id (operators and fault-injection tests kill it by pid)."""
        return os.getpid()


class RewardModelActor:
    """The reward model (built-in or a user's class by import path), scores checked; its
    output goes to ``log_file`` (see :func:`log_to_file`)."""

    def __init__(self, cfg: OnlineRunConfig, log_file: str | None = None) -> None:
        log_to_file(log_file)
        from online_dt.rewards import load_reward_model

        self.reward = CheckedRewardModel(load_reward_model(cfg.reward_model))

    def score(self, prompts: list[str], completions: list[str]) -> list[float]:
        """Validated scores, one finite float per sample (raises RewardModelError)."""
        return self.reward.score(prompts, completions)

    def pid(self) -> int:
        """The actor's process id."""
        return os.getpid()


class LearnerActor(Learner):
    """The :class:`online_dt.training.learner.Learner` itself, as an actor; its output goes
    to ``log_file`` (see :func:`log_to_file`)."""

    def __init__(
        self,
        cfg: OnlineRunConfig,
        base_path: str,
        run_dir: str,
        checkpoint: Any,
        log_file: str | None = None,
    ) -> None:
        log_to_file(log_file)
        super().__init__(cfg, base_path, run_dir, checkpoint)

    def pid(self) -> int:
        """The actor's process id (the controller pings it; fault-injection tests kill it)."""
        return os.getpid()

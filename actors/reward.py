"""The reward-model actor, in a module of its own: its process imports the reward model and
the project's config, not torch or the learner (about 1 s less of start-up on a CPU core, and
the memory torch would take), unless the user's reward model imports them itself.
"""

from __future__ import annotations

import os
from typing import Any

from actors.log_files import log_to_file
from online_dt.config import OnlineRunConfig
from online_dt.loop.workers import CheckedRewardModel
from online_dt.util.malloc import retain_freed_memory


class RewardModelActor:
    """The reward model (built-in or a user's class by import path), scores checked; its
    output goes to ``log_file`` (see :func:`log_to_file`)."""

    def __init__(self, cfg: OnlineRunConfig, log_file: str | None = None) -> None:
        log_to_file(log_file)
        if cfg.resources.retain_freed_memory:
            retain_freed_memory()
        from online_dt.rewards import load_reward_model

        self.reward = CheckedRewardModel.for_run(load_reward_model(cfg.reward_model), cfg)

    def score(self, prompts: list[str], completions: list[str]) -> list[Any]:
        """Validated scores, one finite float per sample, or a tuple of one per objective with
        ``conditioning.objectives`` (raises RewardModelError)."""
        return self.reward.score(prompts, completions)

    def pid(self) -> int:
        """The actor's process id."""
        return os.getpid()

"""The learner: replay buffer, conditioned training, weight publication and checkpoints.

Pure core (no Ray): ``actors.workers.LearnerActor`` runs one :class:`Learner` as a Ray actor.
Scored rollouts are appended to the replay buffer labelled with the reward they *achieved*
(hindsight relabeling), along with the target they were asked for, the policy version that
produced them and the iteration; training batches are drawn from the buffer and the policy is
conditioned on each sample's achieved reward.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from online_dt.config import OnlineRunConfig
from online_dt.launch.rundir import (
    CHECKPOINT_POLICY_DIR,
    CHECKPOINT_STATE_FILE,
    CHECKPOINT_TRAINER_FILE,
    RunDir,
)
from online_dt.objectives import front_summary
from online_dt.policy.labelled_logits import LabelledLogits
from online_dt.policy.policy import RewardConditionedPolicy
from online_dt.replay import shards
from online_dt.replay.buffer import ReplayBuffer
from online_dt.replay.schema import coerce_samples
from online_dt.rollout.weight_sync import PolicyState, WeightUpdate, make_publisher
from online_dt.samples import Reward, Rollout, Sample, as_reward
from online_dt.training.best_rows import BestRows, best_of_prompts
from online_dt.training.kl import kl_per_completion
from online_dt.training.trainer import ConditionedTrainer
from online_dt.util.atomic import atomic_write_dir

log = logging.getLogger(__name__)


class Learner:
    """Owns the policy, its optimizer, the replay buffer and the published versions.

    Args:
        cfg: the run config.
        base_path: the base model (hub name or directory).
        run_dir: the run directory.
        checkpoint: a checkpoint directory to resume from (``None``: fresh start).
        start_over: a fresh start of a run that has no checkpoint yet but persisted samples
            (its learner was lost, or its driver stopped, in the warm start): those
            replay-buffer shards are deleted first, as nothing refers to them and the warm start
            runs again (:func:`online_dt.loop.recovery.restart_learner`, ``--resume``).

    Raises:
        FileExistsError: a fresh start (not ``start_over``) finds replay-buffer shards in the
            run directory.
        ValueError: ``start_over`` with a ``checkpoint``.
    """

    def __init__(
        self,
        cfg: OnlineRunConfig,
        base_path: str,
        run_dir: str | Path,
        checkpoint: str | Path | None = None,
        start_over: bool = False,
    ) -> None:
        if start_over and checkpoint is not None:
            raise ValueError("start_over is a fresh start: it takes no checkpoint")
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one bar per published version would flood the log
        if cfg.resources.learner_threads is not None:
            torch.set_num_threads(cfg.resources.learner_threads)
        torch.manual_seed(cfg.training.seed)
        self.cfg = cfg
        self.run = RunDir(run_dir)
        state: dict[str, Any] = {}
        if checkpoint is None:
            self.policy = RewardConditionedPolicy.fresh(cfg, base_path)
        else:
            checkpoint = Path(checkpoint)
            state = json.loads((checkpoint / CHECKPOINT_STATE_FILE).read_text())
            self.policy = RewardConditionedPolicy.from_pretrained(
                checkpoint / CHECKPOINT_POLICY_DIR,
                device=cfg.model.device,
                attn_implementation=cfg.model.attn_implementation,
            )
        self._k1_cache: dict[tuple[str, float, tuple[int, ...]], float] = {}
        """The last append's k1 terms (``log pi - log p_base`` per completion), by rollout."""
        self.base_model = None
        if cfg.online.kl_coef > 0 or cfg.online.kl_samples > 0 or cfg.buffer.importance_weighting:
            # the frozen reference: the base model as the fresh policy wraps it (same vocabulary,
            # reward tokens included), rebuilt identically on resume
            fresh = (
                self.policy if checkpoint is None else RewardConditionedPolicy.fresh(cfg, base_path)
            )
            self.base_model = copy.deepcopy(fresh.model).eval().requires_grad_(False)
        self.base_logits = (
            None
            if self.base_model is None
            else LabelledLogits(self.base_model, split=cfg.training.logits_at_labelled_only)
        )
        """The base model's logits at the completion's positions, for the log-probs of the
        importance weights and the KL estimate (checked once, kept for every iteration)."""
        self.trainer = ConditionedTrainer(
            self.policy,
            cfg.training,
            bf16_autocast=cfg.model.bf16_autocast,
            base_model=self.base_model if cfg.online.kl_coef > 0 else None,
            kl_coef=cfg.online.kl_coef,
            entropy_coef=cfg.online.entropy_coef,
            max_new_tokens=cfg.sampling.max_new_tokens,  # cut completions get no EOS label
        )
        self.best_rows = BestRows(
            cfg.online.best_rows if cfg.conditioning.best_command else 0, cfg.training.seed
        )
        """The best command's rows of each training step (none without ``best_command``)."""
        self.publisher = make_publisher(cfg.sampler, self.run.weights_dir)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._writing: Future[None] | None = None
        """The checkpoint being written in the background, if any."""
        if start_over:
            removed = shards.remove_all(self.run.buffer_dir)
            log.warning(
                "starting over without a checkpoint: deleted %d replay-buffer shard(s) persisted "
                "before it",
                removed,
            )
        if checkpoint is None:
            self.buffer = ReplayBuffer(cfg.buffer, self.run.buffer_dir, seed=cfg.training.seed)
            self.version = 0
        else:
            self.trainer.load_state_dict(
                torch.load(checkpoint / CHECKPOINT_TRAINER_FILE, weights_only=False)
            )
            upto = state["buffer"]["last_sample_id"]
            self.buffer = ReplayBuffer.load(
                cfg.buffer,
                self.run.buffer_dir,
                seed=cfg.training.seed,
                upto_sample_id=upto if cfg.online.resume_policy == "discard" else None,
            )
            if cfg.online.resume_policy == "discard" and upto is not None:
                self.buffer.drop_after(upto)
            self.buffer.load_state_dict(state["buffer"])
            self.version = state["version"]

    # -- the iteration's steps -------------------------------------------------------------------

    def publish(self) -> WeightUpdate:
        """Publish the current weights as the next policy version."""
        self.version += 1
        return self.publisher.publish(self.policy, self.version)

    def initial_update(self) -> WeightUpdate:
        """Publish the current version (0 on a fresh start) for samplers to start from.

        With checkpoint weight sync, versions newer than it, published by an interrupted run
        after its last checkpoint, are deleted first, so no sampler (a restarted one included)
        can load them; ``ray`` weight sync keeps nothing on disk to delete.
        """
        self.publisher.discard_after(self.version)
        return self.publisher.publish(self.policy, self.version)

    def buffer_rewards(self) -> list[Any]:
        """Achieved rewards held in the buffer (for the target schedule): a float each, or a
        list of one float per objective with ``conditioning.objectives``."""
        return self.buffer.rewards().tolist()

    def append(
        self,
        rollouts: Sequence[Rollout],
        rewards: Sequence[Reward],
        iteration: int,
        scored_at: float,
    ) -> dict[str, Any]:
        """Append scored rollouts with hindsight relabeling: the achieved reward becomes each
        sample's conditioning label; the target it was asked for is kept beside it. With
        ``buffer.importance_weighting``, each sample also gets its log importance weight
        ``log p_base - log pi`` from the base model and the rollout's sampled log-probs
        (``log p_base`` as the sampler sent it with ``sampler.base_logprobs``, else from a
        forward pass of the base model here). With ``conditioning.best_command``, the best
        sample of each prompt that asked for it becomes the best command's rows; with
        ``online.best_asks_in_buffer: false`` those prompts' samples are not appended.

        Then the conditioning follows the rewards: the new ones feed a running normaliser
        (scalar mode), and token mode's quantile bins are re-cut (or their top bin split) from
        every achieved reward the buffer holds (``conditioning.bin_refit``). Labels are not
        stored: each training batch maps its samples' achieved rewards to reward tokens under
        the bins current when it is drawn.

        Returns:
            ``count``, ``first_id``, ``last_id`` and ``buffer_size``; with several objectives
            also the held rewards' ``front_size`` and ``front_hypervolume``
            (:func:`online_dt.objectives.front_summary`).

        Raises:
            ValueError: lengths differ or a reward is not finite (nothing is appended).
        """
        if len(rollouts) != len(rewards):
            raise ValueError(f"{len(rollouts)} rollouts but {len(rewards)} rewards")
        weights: list[float | None] = [None] * len(rollouts)
        if self.cfg.buffer.importance_weighting and self.base_model is not None and rollouts:
            # log p_base - log pi(behaviour): minus the k1 KL term of each completion
            k1 = kl_per_completion(self.policy, self.base_model, rollouts, logits=self.base_logits)
            # a completion the base model gives probability 0 (k1 = inf) gets no weight (None:
            # its bin's mean) rather than ending the run at the buffer's finiteness check
            weights = [-k if math.isfinite(k) else None for k in k1]
            self._k1_cache = {_rollout_key(r): k for r, k in zip(rollouts, k1, strict=True)}
        new = [
            Sample.from_rollout(r, reward, iteration, scored_at, log_iw)
            for r, reward, log_iw in zip(rollouts, rewards, weights, strict=True)
        ]
        c = self.cfg.conditioning
        kept = new
        if self.best_rows.rows and not self.cfg.online.best_asks_in_buffer:
            coerce_samples(new)  # the buffer's checks, also for the samples it will not hold
            kept = [s for s in new if not c.asks_best_command(s.target_reward)]  # type: ignore[arg-type]
        added = self.buffer.append(kept)
        if self.best_rows.rows:  # from the buffer's copies (with their ids) when it holds them
            pool = added if kept is new else new
            on = self.cfg.online
            full = self.cfg.sampling.max_new_tokens if on.best_full_length else None
            best = best_of_prompts(pool, c.reward_max, on.best_kl_coef, full)
            self.best_rows.update(best, c.best_target, iteration)
        # the new rewards feed the running and quantile normalisers (every reward ever scored,
        # evicted ones and best asks kept out of the buffer included); the token bins describe
        # the buffer's held rewards
        self.policy.fit_reward_statistics([as_reward(x) for x in rewards], self.buffer.rewards())
        result: dict[str, Any] = {
            "count": len(added),
            "first_id": added[0].sample_id if added else None,
            "last_id": added[-1].sample_id if added else None,
            "buffer_size": len(self.buffer),
        }
        objectives = self.cfg.conditioning.objectives
        if objectives and len(self.buffer):
            result.update(front_summary(self.buffer.rewards(), objectives))
        return result

    def train(self, steps: int, lr: float | None = None) -> dict[str, float]:
        """``steps`` optimizer steps on batches drawn from the buffer (``training.batch_size``
        rows each, plus ``online.best_rows`` of the best command's with
        ``conditioning.best_command``), at the body's learning rate ``lr`` when given (the warm
        start's ``online.warm_start_lr``; :meth:`ConditionedTrainer.learning_rate`), else
        ``training.lr``.

        Returns:
            Mean ``loss``, ``kl_penalty`` and ``entropy`` (the policy's per-token entropy in
            nats, 0 unless ``online.entropy_coef`` is on) over the steps, ``train_tokens``
            trained on, ``seconds``, and ``started_at`` / ``finished_at`` (UNIX times, taken
            where the learner runs, e.g. inside its Ray actor; the loop records them to show
            what overlapped training). No steps, loss NaN, while the buffer is empty.
        """
        started_at, start = time.time(), time.perf_counter()
        losses, kls, entropies, tokens = [], [], [], 0
        if len(self.buffer) == 0:
            steps = 0  # every batch so far was rejected: nothing to learn from yet
        with self.trainer.learning_rate(lr):
            for _ in range(steps):
                batch = self.buffer.sample_batch(self.cfg.training.batch_size)
                metrics = self.trainer.step(batch + self.best_rows.take())
                losses.append(metrics.loss)
                kls.append(metrics.kl)
                entropies.append(metrics.entropy)
                tokens += metrics.tokens
        self.policy.eval()
        return {
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "kl_penalty": float(np.mean(kls)) if kls else 0.0,
            "entropy": float(np.mean(entropies)) if entropies else 0.0,
            "train_tokens": tokens,
            "seconds": time.perf_counter() - start,
            "started_at": started_at,
            "finished_at": time.time(),
        }

    @torch.no_grad()
    def kl_estimate(self, rollouts: Sequence[Rollout]) -> float | None:
        """Sample-based KL(policy || base) per completion, in nats: the mean of
        :func:`~online_dt.training.kl.kl_per_completion` (the ``k1`` estimator) over the first
        ``online.kl_samples`` rollouts asked for reward targets: with
        ``conditioning.best_command`` the best command's asks are left out, as from the
        achieved reward's metrics (with its LoRA their KL is 75-125 nats and would swamp the
        reward targets'). ``None`` without a base model or such rollouts."""
        asks_best = self.cfg.conditioning.asks_best_command
        rollouts = [r for r in rollouts if not asks_best(r.target)]  # type: ignore[arg-type]
        if self.base_model is None or not rollouts:
            return None
        chosen = list(rollouts[: self.cfg.online.kl_samples])
        cached = [self._k1_cache.get(_rollout_key(r)) for r in chosen]
        if any(k is None for k in cached):  # not appended with importance weights
            cached = kl_per_completion(
                self.policy,
                self.base_model,
                chosen,
                batch_size=len(chosen),
                logits=self.base_logits,
            )
        return float(np.mean(cached))

    # -- checkpoints -----------------------------------------------------------------------------

    def checkpoint(
        self, iteration: int, controller_state: dict[str, Any], *, background: bool = False
    ) -> str:
        """Write a resumable checkpoint after ``iteration`` and mark it latest.

        Holds the policy (with conditioning), optimizer and LR schedule, buffer position and
        RNG, the policy version, and the controller's state (schedule, prompt cursor, RNG).
        Older checkpoints than the previous one are deleted. A checkpoint still being written
        in the background is waited for first (and its error raised), so checkpoints land in
        order and one at a time.

        Args:
            iteration: the iteration just finished.
            controller_state: the controller's state to store (JSON values).
            background: return once the state is copied to host memory (the policy's and the
                optimizer's tensors: one extra copy of each until written) and write the
                files on a background thread while training goes on; ``checkpoints/latest.json``
                names the checkpoint once it is complete. Its error, if any, is raised by the
                next ``checkpoint`` or :meth:`wait_for_checkpoint` call. ``False``: write
                from the live policy and optimizer (no host copy) and return once written.

        Returns:
            The checkpoint directory.

        Raises:
            OSError: the checkpoint (or, in the background, the previous one) could not be
                written; the run directory keeps the previous complete checkpoint.
        """
        self.wait_for_checkpoint()
        path = self.run.checkpoint_path(iteration)
        state = {
            "iteration": iteration,
            "version": self.version,
            "buffer": self.buffer.state_dict(),
            "controller": controller_state,
        }
        # in the background, training goes on beside the write: it writes copies
        policy = PolicyState.capture(self.policy) if background else None
        trainer = _host_copy(self.trainer.state_dict()) if background else None

        def write(tmp: Path) -> None:
            if policy is None or trainer is None:
                self.policy.save_pretrained(tmp / CHECKPOINT_POLICY_DIR)
                torch.save(self.trainer.state_dict(), tmp / CHECKPOINT_TRAINER_FILE)
            else:
                policy.save_pretrained(tmp / CHECKPOINT_POLICY_DIR, self.policy)
                torch.save(trainer, tmp / CHECKPOINT_TRAINER_FILE)
            (tmp / CHECKPOINT_STATE_FILE).write_text(json.dumps(state, indent=2))

        def land() -> None:
            atomic_write_dir(path, write)
            self.run.mark_latest(path)
            for old in sorted(self.run.checkpoints_dir.glob("iter-*"))[:-2]:
                shutil.rmtree(old, ignore_errors=True)

        if background:
            self._writing = self._writer.submit(land)
        else:
            land()
        return str(path)

    def wait_for_checkpoint(self) -> None:
        """Return once no checkpoint is being written in the background.

        Raises:
            OSError: (or whatever else it raised) the background write failed; the run
                directory keeps the previous complete checkpoint.
        """
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.result()


def _host_copy(value: Any) -> Any:
    """``value`` (nested dicts, lists and tuples) with every tensor copied to the CPU, so that
    later in-place updates of the originals (an optimizer step) do not show in it."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _host_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_host_copy(v) for v in value)
    return value


def _rollout_key(rollout: Rollout) -> tuple[str, Reward, tuple[int, ...]]:
    """A rollout's identity across processes: prompt, target and sampled token ids."""
    return (rollout.prompt, as_reward(rollout.target), tuple(rollout.token_ids))

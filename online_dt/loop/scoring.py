"""Scoring a rollout batch with retries, and keeping the batches that could not be scored.

The reward model is user code and runs in its own worker: it can raise, its process can die,
it can hang, and it can return NaN, infinities or the wrong number of scores.
:func:`score_rollouts`

* retries a batch whose scoring raised, whose worker was lost or whose call did not return
  within ``reward_timeout_s`` (``reward_retries`` times, with exponential back-off; Ray
  restarts a dead actor meanwhile, ``reward_max_restarts``, and a hung one is killed first so
  that Ray restarts it);
* does not retry a batch whose scores failed validation (:class:`RewardModelError`: the same
  inputs give the same NaN);
* writes every batch it gives up on to ``RUN_DIR/rejected/`` with the reason, the message and
  every sample (prompt, completion, target, policy version), so nothing is lost;
* then stops the run (:class:`RewardBatchError`) or skips the batch, as configured.

The buffer never sees a non-finite reward: validation happens here, and the buffer checks again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from online_dt.config import FaultToleranceConfig
from online_dt.launch.rundir import RunDir
from online_dt.loop.futures import CallTimeoutError, WorkerLostError, call_when_back
from online_dt.rewards import RewardModelError
from online_dt.samples import Rollout
from online_dt.util.text import first_line

log = logging.getLogger(__name__)


class RewardBatchError(RuntimeError):
    """A batch could not be scored and ``fault_tolerance.on_reward_failure`` is ``stop``.

    Attributes:
        iteration: the iteration whose batch failed.
        reason: ``nan``, ``inf``, ``wrong_count``, ``not_a_number``, ``not_a_sequence``
            (validation), ``above_reward_max`` (with ``conditioning.best_command``),
            ``worker_lost``, ``timeout`` (no answer within
            ``reward_timeout_s``) or ``error`` (the model raised).
        rejected_file: where the batch was kept.
    """

    def __init__(self, message: str, *, iteration: int, reason: str, rejected_file: str) -> None:
        super().__init__(message)
        self.iteration = iteration
        self.reason = reason
        self.rejected_file = rejected_file


@dataclass
class ScoreOutcome:
    """What :func:`score_rollouts` did with one batch.

    Attributes:
        rewards: one finite reward per rollout, or ``None`` when the batch was skipped.
        attempts: scoring attempts made (1 when the first succeeded); a call repeated once
            the worker restarted after dying mid-call is the same attempt.
        workers_lost: times the reward worker died during a call and was waited for.
        timeouts: calls that did not return within ``reward_timeout_s`` (each a failed
            attempt whose worker was then ended, or abandoned in process).
        rejected: samples written to ``rejected/`` (0 or the batch size).
        reason: why the batch was rejected (``None`` when scored).
        recovery_s: seconds from the first failure to the successful retry (0 if none).
        errors: ``"Type: message"`` of each failed attempt, in order.
    """

    rewards: list[float] | None
    attempts: int = 1
    workers_lost: int = 0
    timeouts: int = 0
    rejected: int = 0
    reason: str | None = None
    recovery_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    def kept(self, rollouts: Sequence[Rollout]) -> tuple[list[Rollout], list[float]]:
        """The scored rollouts and their rewards; both empty when the batch was skipped."""
        if self.rewards is None:
            return [], []
        return list(rollouts), list(self.rewards)

    def metrics(self) -> dict[str, Any]:
        """The per-iteration figures of this batch's scoring (``errors`` only when some
        attempt failed; the dashboard lists them)."""
        return {
            **({"errors": [e[:2000] for e in self.errors]} if self.errors else {}),
            "reward_attempts": self.attempts,
            "reward_workers_lost": self.workers_lost,
            "reward_timeouts": self.timeouts,
            "rejected_samples": self.rejected,
            "reward_recovery_s": self.recovery_s,
        }


def failure_reason(error: BaseException) -> str:
    """Short reason of a scoring failure: the :class:`RewardModelError` reason,
    ``worker_lost``, ``timeout`` or ``error``."""
    if isinstance(error, RewardModelError):
        return error.reason
    if isinstance(error, WorkerLostError):
        return "worker_lost"
    if isinstance(error, CallTimeoutError):
        return "timeout"
    return "error"


def score_rollouts(
    score: Callable[[list[str], list[str]], Any],
    rollouts: Sequence[Rollout],
    iteration: int,
    fault_tolerance: FaultToleranceConfig,
    run: RunDir,
    *,
    restart: Callable[[], float] | None = None,
    wait_for_restart: Callable[[], float] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ScoreOutcome:
    """Score ``rollouts`` with ``score(prompts, completions)`` (returns a future), retrying.

    Args:
        score: the reward worker's ``score`` (a handle method; its future's
            ``result(timeout)`` gives the validated rewards or raises, ``CallTimeoutError``
            when ``fault_tolerance.reward_timeout_s`` passed first).
        rollouts: the batch, ``N`` rollouts.
        iteration: the iteration (names the rejected file).
        fault_tolerance: timeout, retries, back-off and what to do after them.
        run: the run directory (``rejected/``).
        restart: ends the reward worker after a call timed out, and returns (the seconds it
            took) once a new one takes calls; on Ray,
            :func:`actors.ray_futures.kill_and_restart`. ``None`` where the worker cannot be
            ended (in process): the hung call is abandoned on its thread, with a warning.
        wait_for_restart: returns once a worker that died mid-call is back (Ray restarts it),
            so that the batch sent again is timed without the restart; ``None``: the batch is
            sent again at once and its call waits in the restarting worker's queue, within
            ``reward_timeout_s``.
        sleep: back-off function (tests pass a no-op).

    Returns:
        A :class:`ScoreOutcome`; ``rewards`` is ``None`` when the batch was skipped.

    Raises:
        RewardBatchError: the batch failed for good and ``on_reward_failure`` is ``stop``.
        OSError: ``rejected/`` cannot be written (the batch is then not kept).
    """
    prompts = [r.prompt for r in rollouts]
    completions = [r.completion for r in rollouts]
    outcome = ScoreOutcome(rewards=None, attempts=0)
    first_failure: float | None = None
    error: BaseException | None = None

    def lost(e: WorkerLostError) -> None:  # the worker died mid-call; Ray restarts it
        nonlocal first_failure
        outcome.workers_lost += 1
        first_failure = first_failure or time.perf_counter()
        log.warning("iteration %d: reward worker lost (%s); waiting for its restart", iteration, e)
        if wait_for_restart is not None:  # raises when it is not back: a failed attempt
            log.info("iteration %d: reward worker back after %.1fs", iteration, wait_for_restart())

    def timed_out() -> None:  # the call hangs: end its worker (on Ray) so it frees its CPU
        outcome.timeouts += 1
        limit = fault_tolerance.reward_timeout_s
        if restart is None:
            log.warning(
                "iteration %d: scoring did not return within %gs; in process the call cannot be "
                "ended: its thread is abandoned and keeps running (and its CPU, if it computes) "
                "until it returns or the run ends",
                iteration,
                limit,
            )
            return
        log.warning(
            "iteration %d: scoring did not return within %gs; killing the reward worker so that "
            "it is restarted",
            iteration,
            limit,
        )
        try:
            log.info("iteration %d: reward worker restarted in %.1fs", iteration, restart())
        except Exception as e:  # the next attempt meets the same: it fails and is counted
            log.error(
                "iteration %d: the killed reward worker is not back: %s: %s",
                iteration,
                type(e).__name__,
                first_line(e),
            )

    while outcome.attempts <= fault_tolerance.reward_retries:
        outcome.attempts += 1
        try:
            outcome.rewards = list(
                call_when_back(
                    lambda: score(prompts, completions).result(
                        timeout=fault_tolerance.reward_timeout_s
                    ),
                    fault_tolerance.restart_timeout_s,
                    on_lost=lost,
                )
            )
            if first_failure is not None:
                outcome.recovery_s = time.perf_counter() - first_failure
                log.info(
                    "iteration %d: scored after %d attempts (%.1fs after the first failure)",
                    iteration,
                    outcome.attempts,
                    outcome.recovery_s,
                )
            return outcome
        except Exception as e:  # the reward model is user code: anything can come back
            error = e
            first_failure = first_failure or time.perf_counter()
            outcome.errors.append(f"{type(e).__name__}: {e}")
            if isinstance(e, RewardModelError):
                break  # invalid scores are not retried: the same inputs give the same output
            if isinstance(e, CallTimeoutError):
                timed_out()  # the last attempt's too: a hung worker would hold the next batch
            if outcome.attempts <= fault_tolerance.reward_retries:
                wait = fault_tolerance.retry_backoff_s * 2 ** (outcome.attempts - 1)
                log.warning(
                    "iteration %d: scoring failed (%s: %s); retry %d/%d in %.1fs",
                    iteration,
                    type(e).__name__,
                    first_line(e),
                    outcome.attempts,
                    fault_tolerance.reward_retries,
                    wait,
                )
                sleep(wait)
    assert error is not None
    outcome.rewards = None
    outcome.reason = failure_reason(error)
    outcome.rejected = len(rollouts)
    if first_failure is not None:
        outcome.recovery_s = time.perf_counter() - first_failure
    path = run.write_rejected(
        iteration,
        outcome.reason,
        {
            "message": str(error),
            "errors": outcome.errors,
            "attempts": outcome.attempts,
            "offending_indices": getattr(error, "indices", None),
            "samples": [
                {
                    "prompt": r.prompt,
                    "completion": r.completion,
                    "target": r.target,
                    "policy_version": r.policy_version,
                    "prompt_index": r.prompt_index,
                }
                for r in rollouts
            ],
        },
    )
    summary = (
        f"iteration {iteration}: the reward model failed on a batch of {len(rollouts)} samples "
        f"({outcome.reason}) after {outcome.attempts} attempt(s): {first_line(error)}; "
        f"the batch is kept in {path}"
    )
    if fault_tolerance.on_reward_failure == "stop":
        raise RewardBatchError(
            summary,
            iteration=iteration,
            reason=outcome.reason,
            rejected_file=str(path),
        )
    log.error("%s; skipping it (fault_tolerance.on_reward_failure=skip)", summary)
    return outcome

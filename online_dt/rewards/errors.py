"""The errors of reward models: :class:`RewardModelError` (a model returned unusable scores,
raised by :mod:`online_dt.rewards.validation`) and :class:`RewardModelLoadError` (a model could
not be built)."""

from __future__ import annotations

from collections.abc import Sequence


class RewardModelError(ValueError):
    """A reward model returned unusable scores for a batch.

    Attributes:
        indices: indices (into the batch) of the offending samples. For ``wrong_count`` and
            ``not_a_sequence`` the scores cannot be matched to samples, so every sample of the
            batch is listed.
        reason: what was wrong: ``"nan"``, ``"inf"`` (either sign), ``"not_a_number"`` (``None``,
            a string, a bool, a nested list, a mapping where one float was expected, ...),
            ``"wrong_count"`` (not one score per sample) or ``"not_a_sequence"`` (``score`` did
            not return a list-like). With objectives also ``"not_a_mapping"`` (a sample's score
            is not a mapping of objective names), ``"missing_objective"`` (a configured name is
            absent) or ``"unknown_objective"`` (a name that is not configured). With
            ``conditioning.best_command``, ``"above_reward_max"`` (a score above
            ``conditioning.reward_max``; :class:`~online_dt.loop.workers.CheckedRewardModel`).
        samples: ``(prompt, completion)`` of every offending sample, in the order of
            ``indices``; the message shows only the first few.
        model_name: the name of the model used in the message.
        objective: the objective at fault, when one is: the missing one for
            ``missing_objective``, the first unknown name found (in batch order) for
            ``unknown_objective`` (the message names all of them), the objective whose values
            are bad for ``not_a_number``/``nan``/``inf`` from
            :func:`~online_dt.rewards.validation.validate_objective_scores`; ``None`` otherwise.
    """

    def __init__(
        self,
        message: str,
        *,
        indices: Sequence[int],
        reason: str,
        samples: Sequence[tuple[str, str]],
        model_name: str = "",
        objective: str | None = None,
    ) -> None:
        super().__init__(message)
        self.indices: list[int] = list(indices)
        self.reason: str = reason
        self.samples: list[tuple[str, str]] = list(samples)
        self.model_name: str = model_name
        self.objective: str | None = objective


class RewardModelLoadError(RuntimeError):
    """A reward model could not be built: a classifier failed to load (path missing, Hub
    unreachable, not a sequence classifier), or a custom class could not be imported or
    constructed. The message names what was being loaded and the underlying cause."""

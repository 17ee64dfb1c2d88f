"""The reward-model contract: the :class:`RewardModel` protocol and the checks around every
call (:func:`score_checked`, :func:`check_inputs`).

The training loop never calls ``score`` directly but goes through :func:`score_checked`, which
checks the inputs, calls the model and validates what came back
(:mod:`online_dt.rewards.validation`): a wrong number of scores, a value that is not a number,
NaN or infinity (and, with several objectives, a score that is not a mapping of exactly the
configured names) raises :class:`~online_dt.rewards.errors.RewardModelError` naming the
offending samples, so a broken reward model fails loudly at the batch that broke it instead of
silently poisoning the reward normaliser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, overload, runtime_checkable

from online_dt.rewards.validation import validate_objective_scores, validate_scores


@runtime_checkable
class RewardModel(Protocol):
    """Anything that scores (prompt, completion) pairs.

    Contract of ``score``:

    * Inputs: ``prompts`` and ``completions`` are sequences of ``str`` of equal length ``N``;
      sample ``i`` is the completion ``completions[i]`` generated for ``prompts[i]`` (the
      completion alone, without the prompt in front). ``N`` may be 0.
    * Output: a ``list`` of ``N`` finite floats, one per sample, in the order of the inputs.
      Higher means better. The units and range are the model's own and must be documented by
      the model (VADER: ``[-1, 1]``; a classifier's probability: ``[0, 1]``; a logit: all
      reals). Numpy or torch scalars are accepted by
      :func:`~online_dt.rewards.validation.validate_scores` and converted.
    * Several objectives: when the run's config lists objectives (``conditioning.objectives``),
      ``score`` instead returns, per sample, a ``Mapping[str, float]`` of named objectives,
      e.g. ``{"sentiment": 0.6, "brevity": -3.0}``: every sample has exactly the configured
      names (the mapping's order does not matter), each value a finite float in that
      objective's own documented units, higher is better. A model returning plain floats is
      a single-objective model (the default, with no objectives listed). Validated by
      :func:`~online_dt.rewards.validation.validate_objective_scores`.
    * Errors: raising any exception means the whole batch failed and no score of it is used;
      there is no way to fail a single sample. Returning NaN, an infinity, a non-number, the
      wrong number of scores, or (with objectives) a non-mapping or a mapping with missing or
      unknown names is a bug of the model, reported by :func:`score_checked` as
      :class:`~online_dt.rewards.errors.RewardModelError`.
    * ``score`` must not modify its inputs. It may be called many times with batches of any
      size, so expensive set-up belongs in the constructor.
    """

    def score(
        self, prompts: Sequence[str], completions: Sequence[str]
    ) -> Sequence[float] | Sequence[Mapping[str, float]]:
        """Score each (prompt, completion) pair: one float, or one mapping of objective names
        to floats, per sample; see the class docstring for the contract."""
        ...


def check_inputs(prompts: Sequence[str], completions: Sequence[str]) -> None:
    """Check one batch's inputs: two sequences of strings of equal length.

    Raises:
        ValueError: ``prompts`` or ``completions`` is a single string, or their lengths differ.
    """
    for name, seq in (("prompts", prompts), ("completions", completions)):
        if isinstance(seq, str | bytes):
            raise ValueError(f"{name} must be a sequence of strings, got a single string")
    if len(prompts) != len(completions):
        raise ValueError(
            f"prompts and completions must have the same length, got {len(prompts)} prompts"
            f" and {len(completions)} completions"
        )


@overload
def score_checked(
    model: RewardModel, prompts: Sequence[str], completions: Sequence[str]
) -> list[float]: ...


@overload
def score_checked(
    model: RewardModel,
    prompts: Sequence[str],
    completions: Sequence[str],
    objectives: Sequence[str],
) -> list[float] | list[tuple[float, ...]]: ...


def score_checked(
    model: RewardModel,
    prompts: Sequence[str],
    completions: Sequence[str],
    objectives: Sequence[str] = (),
) -> list[float] | list[tuple[float, ...]]:
    """Score a batch with ``model`` and validate the result.

    Returns ``[]`` for an empty batch without calling the model.

    Args:
        model: any :class:`RewardModel`.
        prompts: ``N`` prompts.
        completions: ``N`` completions (without the prompt).
        objectives: the configured objective names (``conditioning.objectives``). Empty (the
            default): a single reward, the model returns one float per sample. Otherwise the
            model returns one mapping of exactly these names per sample.

    Returns:
        Without objectives, ``N`` finite floats in the model's units, in order. With
        objectives, ``N`` tuples of ``len(objectives)`` finite floats, each in the order of
        ``objectives``.

    Raises:
        ValueError: ``prompts`` and ``completions`` differ in length, or one is a single string;
            ``objectives`` is a single string or has duplicate names.
        RewardModelError: the model's output failed
            :func:`~online_dt.rewards.validation.validate_scores` (no objectives) or
            :func:`~online_dt.rewards.validation.validate_objective_scores` (with objectives).
        Exception: whatever ``model.score`` raised, unchanged (the whole batch failed).
    """
    check_inputs(prompts, completions)
    if isinstance(objectives, str | bytes):
        raise ValueError(f"objectives must be a sequence of names, got the string {objectives!r}")
    if len(set(objectives)) != len(objectives):
        raise ValueError(f"objective names must be unique, got {list(objectives)}")
    if len(prompts) == 0:
        return []
    scores = model.score(prompts, completions)
    name = type(model).__name__
    if objectives:
        return validate_objective_scores(scores, prompts, completions, name, objectives)
    return validate_scores(scores, prompts, completions, name)

"""The reward-model contract: the :class:`RewardModel` protocol, its errors, and the checks
around every call (:func:`score_checked`, :func:`validate_scores`).

The training loop never calls ``score`` directly but goes through :func:`score_checked`, which
checks the inputs, calls the model and validates what came back: a wrong number of scores, a
value that is not a number, NaN or infinity raises :class:`RewardModelError` naming the
offending samples, so a broken reward model fails loudly at the batch that broke it instead of
silently poisoning the reward normaliser.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from online_dt.util.text import shorten

# how many offending samples an error message shows (all of them are kept on the exception)
_SHOWN_SAMPLES = 3
# characters of a prompt or completion shown per sample in an error message
_SHOWN_CHARS = 40


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
      reals). Numpy or torch scalars are accepted by :func:`validate_scores` and converted.
    * Errors: raising any exception means the whole batch failed and no score of it is used;
      there is no way to fail a single sample. Returning NaN, an infinity, a non-number or the
      wrong number of scores is a bug of the model, reported by :func:`score_checked` as
      :class:`RewardModelError`.
    * ``score`` must not modify its inputs. It may be called many times with batches of any
      size, so expensive set-up belongs in the constructor.
    """

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """Score each (prompt, completion) pair; see the class docstring for the contract."""
        ...


class RewardModelError(ValueError):
    """A reward model returned unusable scores for a batch.

    Attributes:
        indices: indices (into the batch) of the offending samples. For ``wrong_count`` and
            ``not_a_sequence`` the scores cannot be matched to samples, so every sample of the
            batch is listed.
        reason: what was wrong: ``"nan"``, ``"inf"`` (either sign), ``"not_a_number"`` (``None``,
            a string, a bool, a nested list, ...), ``"wrong_count"`` (not one score per sample)
            or ``"not_a_sequence"`` (``score`` did not return a list-like).
        samples: ``(prompt, completion)`` of every offending sample, in the order of
            ``indices``; the message shows only the first few.
        model_name: the name of the model used in the message.
    """

    def __init__(
        self,
        message: str,
        *,
        indices: Sequence[int],
        reason: str,
        samples: Sequence[tuple[str, str]],
        model_name: str = "",
    ) -> None:
        super().__init__(message)
        self.indices: list[int] = list(indices)
        self.reason: str = reason
        self.samples: list[tuple[str, str]] = list(samples)
        self.model_name: str = model_name


class RewardModelLoadError(RuntimeError):
    """A reward model could not be built: a classifier failed to load (path missing, Hub
    unreachable, not a sequence classifier), or a custom class could not be imported or
    constructed. The message names what was being loaded and the underlying cause."""


def _describe_samples(
    indices: Sequence[int], prompts: Sequence[str], completions: Sequence[str]
) -> str:
    shown = [
        f"#{i} {shorten(prompts[i], _SHOWN_CHARS)} -> {shorten(completions[i], _SHOWN_CHARS)}"
        for i in indices
    ]
    text = ", ".join(shown[:_SHOWN_SAMPLES])
    if len(shown) > _SHOWN_SAMPLES:
        text += f", ... ({len(shown) - _SHOWN_SAMPLES} more)"
    return text


def _to_float(value: Any) -> float | None:
    """``value`` as a float, or ``None`` when it is not a real number.

    Accepts Python and numpy reals and 0-d / one-element arrays and tensors (via ``.item()``);
    rejects ``None``, strings, bools and anything else.
    """
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    item = getattr(value, "item", None)
    size = getattr(value, "size", None)
    numel = getattr(value, "numel", None)
    count = numel() if callable(numel) else size if isinstance(size, int) else None
    if callable(item) and count == 1:
        try:
            inner = item()
        except (TypeError, ValueError, RuntimeError):
            return None
        return _to_float(inner)
    return None


def validate_scores(
    scores: Any,
    prompts: Sequence[str],
    completions: Sequence[str],
    model_name: str,
) -> list[float]:
    """Check a reward model's output for one batch and return it as a list of floats.

    Args:
        scores: what ``score`` returned: a list or tuple of numbers (Python, numpy or 0-d torch
            scalars) or a 1-d numpy array / torch tensor.
        prompts: the batch's prompts (used to name offending samples).
        completions: the batch's completions, same length as ``prompts``.
        model_name: name of the model, for the message (e.g. its class name).

    Returns:
        ``len(prompts)`` finite Python floats, in order.

    Raises:
        RewardModelError: with ``reason`` ``"not_a_sequence"`` or ``"wrong_count"`` when the
            output is not one score per sample; otherwise ``"not_a_number"``, ``"nan"`` or
            ``"inf"`` (checked in that order; the first kind found is reported, with every
            sample of that kind in ``indices``).
    """
    n = len(prompts)
    everything = list(range(n))
    if hasattr(scores, "tolist") and not isinstance(scores, list | tuple):
        # a numpy array or torch tensor: a 1-d one becomes a list of floats
        scores = scores.tolist()
    if isinstance(scores, str | bytes) or not isinstance(scores, Sequence):
        raise RewardModelError(
            f"reward model {model_name} returned {type(scores).__name__} instead of a list of"
            f" {n} scores",
            indices=everything,
            reason="not_a_sequence",
            samples=list(zip(prompts, completions, strict=True)),
            model_name=model_name,
        )
    if len(scores) != n:
        message = f"reward model {model_name} returned {len(scores)} scores for {n} samples"
        if n:
            message += f"; the batch was: {_describe_samples(everything, prompts, completions)}"
        raise RewardModelError(
            message,
            indices=everything,
            reason="wrong_count",
            samples=list(zip(prompts, completions, strict=True)),
            model_name=model_name,
        )

    values: list[float] = []
    bad: dict[str, list[int]] = {"not_a_number": [], "nan": [], "inf": []}
    for i, raw in enumerate(scores):
        value = _to_float(raw)
        if value is None:
            bad["not_a_number"].append(i)
            values.append(math.nan)
            continue
        if math.isnan(value):
            bad["nan"].append(i)
        elif math.isinf(value):
            bad["inf"].append(i)
        values.append(value)

    for reason, label in (("not_a_number", "a non-number"), ("nan", "NaN"), ("inf", "inf")):
        indices = bad[reason]
        if not indices:
            continue
        if reason == "not_a_number":
            kinds = sorted({type(scores[i]).__name__ for i in indices})
            label = f"a non-number ({', '.join(kinds)})"
        elif reason == "inf":
            signs = sorted({"+inf" if values[i] > 0 else "-inf" for i in indices})
            label = "/".join(signs)
        raise RewardModelError(
            f"reward model {model_name} returned {label} for {len(indices)} of {n} samples: "
            f"{_describe_samples(indices, prompts, completions)}",
            indices=indices,
            reason=reason,
            samples=[(prompts[i], completions[i]) for i in indices],
            model_name=model_name,
        )
    return values


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


def score_checked(
    model: RewardModel, prompts: Sequence[str], completions: Sequence[str]
) -> list[float]:
    """Score a batch with ``model`` and validate the result.

    Returns ``[]`` for an empty batch without calling the model.

    Args:
        model: any :class:`RewardModel`.
        prompts: ``N`` prompts.
        completions: ``N`` completions (without the prompt).

    Returns:
        ``N`` finite floats in the model's units, in order.

    Raises:
        ValueError: ``prompts`` and ``completions`` differ in length, or one is a single string.
        RewardModelError: the model's output failed :func:`validate_scores`.
        Exception: whatever ``model.score`` raised, unchanged (the whole batch failed).
    """
    check_inputs(prompts, completions)
    if len(prompts) == 0:
        return []
    scores = model.score(prompts, completions)
    return validate_scores(scores, prompts, completions, type(model).__name__)

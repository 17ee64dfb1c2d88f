"""Validation of what a reward model returned for one batch: :func:`validate_scores` (one
float per sample) and :func:`validate_objective_scores` (one mapping of objective names per
sample), which raise :class:`~online_dt.rewards.errors.RewardModelError` naming the offending
samples. :func:`~online_dt.rewards.protocol.score_checked` calls them after every ``score``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from online_dt.rewards.errors import RewardModelError
from online_dt.util.text import shorten

# how many offending samples an error message shows (all of them are kept on the exception)
_SHOWN_SAMPLES = 3
# characters of a prompt or completion shown per sample in an error message
_SHOWN_CHARS = 40


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


def _as_batch(
    scores: Any, prompts: Sequence[str], completions: Sequence[str], model_name: str
) -> Sequence[Any]:
    """``scores`` as a sequence of one item per sample, or :class:`RewardModelError` with
    reason ``not_a_sequence`` or ``wrong_count``."""
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
    return scores


def _value_label(reason: str, raws: Sequence[Any], values: Sequence[float]) -> str:
    """How a message names bad values of one kind: ``a non-number (str)``, ``NaN``, ``-inf``."""
    if reason == "not_a_number":
        kinds = sorted({type(raw).__name__ for raw in raws})
        return f"a non-number ({', '.join(kinds)})"
    if reason == "inf":
        return "/".join(sorted({"+inf" if v > 0 else "-inf" for v in values}))
    return "NaN"


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
            sample of that kind in ``indices``). A sample scored with a mapping (named
            objectives) is ``"not_a_number"``, and the message says that the config lists no
            objectives (``conditioning.objectives``).
    """
    n = len(prompts)
    scores = _as_batch(scores, prompts, completions, model_name)

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

    for reason in ("not_a_number", "nan", "inf"):
        indices = bad[reason]
        if not indices:
            continue
        label = _value_label(reason, [scores[i] for i in indices], [values[i] for i in indices])
        message = (
            f"reward model {model_name} returned {label} for {len(indices)} of {n} samples: "
            f"{_describe_samples(indices, prompts, completions)}"
        )
        named = next((scores[i] for i in indices if isinstance(scores[i], Mapping)), None)
        if named is not None:
            names = ", ".join(repr(k) for k in named)
            message += (
                f"; it returned named objectives ({names}) but the config lists none under"
                " conditioning.objectives: list them there to condition on several rewards,"
                " or return one float per sample"
            )
        raise RewardModelError(
            message,
            indices=indices,
            reason=reason,
            samples=[(prompts[i], completions[i]) for i in indices],
            model_name=model_name,
        )
    return values


def validate_objective_scores(
    scores: Any,
    prompts: Sequence[str],
    completions: Sequence[str],
    model_name: str,
    objectives: Sequence[str],
) -> list[tuple[float, ...]]:
    """Check a multi-objective reward model's output for one batch and return it as tuples.

    Args:
        scores: what ``score`` returned: a list or tuple with one ``Mapping`` per sample from
            objective name to number (Python, numpy or 0-d / one-element torch scalars).
        prompts: the batch's prompts (used to name offending samples).
        completions: the batch's completions, same length as ``prompts``.
        model_name: name of the model, for the message (e.g. its class name).
        objectives: the configured objective names (``conditioning.objectives``), at least
            one, no duplicates. Every mapping must have exactly these names.

    Returns:
        ``len(prompts)`` tuples of ``len(objectives)`` finite Python floats, one tuple per
        sample in batch order, each in the order of ``objectives`` (not the mapping's order).

    Raises:
        ValueError: ``objectives`` is empty, a single string or has duplicate names (a bug of
            the caller).
        RewardModelError: the first problem found, in this order, with every sample having
            it in ``indices``:

            1. ``"not_a_sequence"`` / ``"wrong_count"``: not one score per sample (as in
               :func:`validate_scores`).
            2. ``"not_a_mapping"``: a sample's score is not a ``Mapping`` (e.g. a plain float:
               the message says the config lists objectives, so each score must be a mapping).
            3. ``"missing_objective"``: a configured name is absent; the first such name in the
               order of ``objectives`` is reported (``objective``), with the samples lacking it.
            4. ``"unknown_objective"``: a name that is not configured; the message names every
               unknown name, ``objective`` is the first one found, ``indices`` every sample
               with any of them.
            5. ``"not_a_number"``, ``"nan"``, ``"inf"`` (kinds in that order, then objectives in
               the order of ``objectives``): the first (kind, objective) pair found is reported,
               ``objective`` set, ``indices`` every sample whose value for that objective is of
               that kind; the message also names other objectives with the same kind.
    """
    if isinstance(objectives, str | bytes):
        raise ValueError(f"objectives must be a sequence of names, got the string {objectives!r}")
    names = list(objectives)
    if not names:
        raise ValueError("validate_objective_scores needs at least one objective name")
    if len(set(names)) != len(names):
        raise ValueError(f"objective names must be unique, got {names}")
    n = len(prompts)
    scores = _as_batch(scores, prompts, completions, model_name)
    configured = f"{names} (conditioning.objectives)"

    def fail(message: str, reason: str, indices: list[int], objective: str | None) -> NoReturn:
        raise RewardModelError(
            message,
            indices=indices,
            reason=reason,
            samples=[(prompts[i], completions[i]) for i in indices],
            model_name=model_name,
            objective=objective,
        )

    def where(indices: list[int]) -> str:
        return f"{len(indices)} of {n} samples: {_describe_samples(indices, prompts, completions)}"

    not_mapping = [i for i, raw in enumerate(scores) if not isinstance(raw, Mapping)]
    if not_mapping:
        kinds = ", ".join(sorted({type(scores[i]).__name__ for i in not_mapping}))
        example = ", ".join(f"{name!r}: 0.0" for name in names)
        fail(
            f"reward model {model_name} returned {kinds} instead of a mapping of objective"
            f" scores for {where(not_mapping)}; the config lists objectives {configured}, so"
            f" each score must be a mapping with exactly those names, e.g. {{{example}}}",
            "not_a_mapping",
            not_mapping,
            None,
        )

    for name in names:
        missing = [i for i, raw in enumerate(scores) if name not in raw]
        if missing:
            got = [repr(k) for k in scores[missing[0]]]
            fail(
                f"reward model {model_name} returned no score for objective {name!r} for"
                f" {where(missing)}; the first of them has names [{', '.join(got)}], but each"
                f" score must map exactly the objectives {configured}",
                "missing_objective",
                missing,
                name,
            )

    known = set(names)
    unknown: list[Any] = []
    with_unknown: list[int] = []
    for i, raw in enumerate(scores):
        extra = [k for k in raw if k not in known]
        if extra:
            with_unknown.append(i)
            unknown.extend(k for k in extra if k not in unknown)
    if with_unknown:
        fail(
            f"reward model {model_name} returned unknown objective(s)"
            f" {', '.join(repr(k) for k in unknown)} for {where(with_unknown)}; the config"
            f" lists only {configured}: add them there or stop returning them",
            "unknown_objective",
            with_unknown,
            unknown[0] if isinstance(unknown[0], str) else repr(unknown[0]),
        )

    rows: list[tuple[float, ...]] = []
    # bad[reason][objective position] -> sample indices
    bad: dict[str, list[list[int]]] = {
        r: [[] for _ in names] for r in ("not_a_number", "nan", "inf")
    }
    for i, raw in enumerate(scores):
        row: list[float] = []
        for j, name in enumerate(names):
            value = _to_float(raw[name])
            if value is None:
                bad["not_a_number"][j].append(i)
                value = math.nan
            elif math.isnan(value):
                bad["nan"][j].append(i)
            elif math.isinf(value):
                bad["inf"][j].append(i)
            row.append(value)
        rows.append(tuple(row))

    for reason in ("not_a_number", "nan", "inf"):
        per_objective = bad[reason]
        j = next((j for j, indices in enumerate(per_objective) if indices), None)
        if j is None:
            continue
        name, indices = names[j], per_objective[j]
        label = _value_label(
            reason, [scores[i][name] for i in indices], [rows[i][j] for i in indices]
        )
        message = (
            f"reward model {model_name} returned {label} for objective {name!r} for"
            f" {where(indices)}"
        )
        others = [repr(names[k]) for k in range(j + 1, len(names)) if per_objective[k]]
        if others:
            verb = "has" if len(others) == 1 else "have"
            plural = "" if len(others) == 1 else "s"
            message += f" (objective{plural} {', '.join(others)} {verb} such values too)"
        fail(message, reason, indices, name)
    return rows

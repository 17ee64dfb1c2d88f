"""The binned-base reference in an ``online-dt eval`` report: computed for the run, and printed.

:func:`eval_reference` runs :func:`~online_dt.eval.reference.base_reference` on the run's base
model with the evaluation's prompts and sampling settings; :func:`report_reference` makes it the
report's ``reference`` (or says in ``reference_error`` why it is missing); :func:`reference_line`
is the console line under each calibration row.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

from online_dt.eval.reference import DEFAULT_BIN_HALF_WIDTH, MIN_BIN_COUNT, base_reference
from online_dt.launch.rundir import finite_or_none

log = logging.getLogger(__name__)


def eval_reference(
    cfg: Any,
    prompts: Sequence[str],
    score: Callable[[list[str], list[str]], list[float]],
    centers: Sequence[float],
    *,
    samples: int,
    seed: int,
    half_width: float = DEFAULT_BIN_HALF_WIDTH,
    max_samples: int | None = None,
) -> dict[str, Any]:
    """:func:`base_reference` for ``online-dt eval``: the run's base model (loaded plain, as
    the run resolves it: :func:`online_dt.embedded.base_model.resolve_base_model`) on the
    evaluation's prompts with the run's sampling settings.

    Args:
        cfg: the run config (``model``, ``bootstrap``, ``sampling``).
        prompts: the prompts the calibration rows were sampled on (cycled).
        score: the validated reward function.
        centers: the evaluated targets.
        samples: base samples, >= 1.
        seed: the sampling seed (each bin's distinct-2 subsample uses ``seed + 1``).
        half_width: half the bin width (reward units), > 0.
        max_samples: each bin's distinct-2 is on at most this many samples (the evaluation's
            samples per target, so the sizes compare).

    Returns:
        The dict of :func:`base_reference` plus ``base_model`` (its path), ``prompts`` (how many
        distinct prompts) and ``min_count`` (:data:`MIN_BIN_COUNT`: bins below it are left off
        the dashboard's curve).

    Raises:
        OSError: the base model cannot be loaded.
        ValueError: as :func:`base_reference`.
    """
    from online_dt.embedded.base_model import resolve_base_model
    from online_dt.policy.loading import load_model_and_tokenizer
    from online_dt.util.devices import resolve_device

    path = resolve_base_model(cfg.model, cfg.bootstrap, progress=False)
    model, tokenizer = load_model_and_tokenizer(path, cfg.model.attn_implementation)
    model = model.to(resolve_device(cfg.model.device)).eval().requires_grad_(False)
    out = base_reference(
        model,
        tokenizer,
        prompts,
        score,
        cfg.sampling,
        centers,
        samples=samples,
        seed=seed,
        subsample_seed=seed + 1,
        half_width=half_width,
        max_samples=max_samples,
    )
    return {
        **out,
        "base_model": str(path),
        "prompts": len(set(prompts)),
        "min_count": MIN_BIN_COUNT,
    }


def report_reference(
    cfg: Any,
    prompts: Sequence[str],
    score: Any,
    targets: Sequence[float],
    samples: int,
    half_width: float,
    max_samples: int,
    seed: int,
) -> tuple[dict[str, Any] | None, str | None]:
    """The report's binned-base reference (:func:`eval_reference`), or why it is missing.

    Args:
        cfg: the run config (``model``, ``bootstrap``, ``sampling``).
        prompts: the prompts the calibration rows were sampled on (cycled).
        score: the validated reward function.
        targets: the evaluated targets (reward units): the bins' centres.
        samples: base-model samples (``>= 0``; 0: no reference).
        half_width: half the bin width (reward units, ``> 0``).
        max_samples: each bin's distinct-2 is on at most this many samples.
        seed: the base model's sampling seed.

    Returns:
        ``(reference, None)`` with non-finite numbers as ``None``; ``(None, None)`` for
        ``samples == 0``; ``(None, why)`` when the base model cannot be loaded (an
        ``OSError``, logged as a warning and not raised).

    Raises:
        ValueError: as :func:`~online_dt.eval.reference.base_reference`.
    """
    if samples == 0:
        return None, None
    try:
        reference = eval_reference(
            cfg,
            prompts,
            score,
            targets,
            samples=samples,
            seed=seed,
            half_width=half_width,
            max_samples=max_samples,
        )
    except OSError as e:
        log.warning("no binned-base reference: base model could not be loaded: %s", e)
        return None, f"base model could not be loaded: {e}"
    return finite_or_none(reference), None


def reference_line(row: dict[str, Any], reference: dict[str, Any] | None) -> str | None:
    """The console line under a calibration row: the base's samples in the row's target bin
    (count and share, mean reward, NLL per token, the ``-log P(bin)`` KL lower bound per
    completion and per token, word distinct-2), or ``None`` when ``reference`` has no bin at
    the row's target."""
    if not reference:
        return None
    target = row.get("target")
    if target is None:
        return None
    bins = {round(b["center"], 6): b for b in reference.get("at_targets", [])}
    b = bins.get(round(float(target), 6))
    if b is None:
        return None
    w = b["half_width"]
    head = f"  ^ base, r in [{target - w:.3f}, {target + w:.3f}]: n={b['count']}"
    if not b["count"]:
        return head + f" of {reference.get('samples')} base samples (none in the bin)"

    def num(x: Any) -> str:
        return "-" if x is None or not math.isfinite(x) else f"{x:.3f}"

    return (
        head + f" ({100 * b['fraction']:.1f}%), r_mean {num(b['reward_mean'])}, "
        f"NLL/tok {num(b['nll_per_token'])}, ideal KL >= {num(b['kl_ideal_lower_bound'])} "
        f"(/tok >= {num(b['kl_ideal_lower_bound_per_token'])}), "
        f"word d-2 {num(b['distinct_2'])} on {b['distinct_2_samples']}"
    )

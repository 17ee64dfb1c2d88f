"""Per-sample-set statistics: reward summaries, calibration error and distinct-n."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def distinct_n(token_sequences: Sequence[Sequence[int | str]], n: int) -> float:
    """Distinct-n (Li et al., 2016, "A Diversity-Promoting Objective Function for Neural
    Conversation Models"): unique n-grams divided by all n-grams over a set of completions.

    Args:
        token_sequences: one sequence of tokens (ids or strings) per completion.
        n: n-gram order, >= 1.

    Returns:
        A ratio in ``[0, 1]``; 0.0 when there is no n-gram at all.

    Raises:
        ValueError: ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    total = 0
    unique: set[tuple[int | str, ...]] = set()
    for seq in token_sequences:
        grams = [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]
        total += len(grams)
        unique.update(grams)
    return len(unique) / total if total else 0.0


def reward_summary(rewards: Sequence[float]) -> dict[str, float]:
    """Mean, std, p10, median and p90 of rewards (reward units).

    Raises:
        ValueError: ``rewards`` is empty.
    """
    if len(rewards) == 0:
        raise ValueError("no rewards to summarise")
    values = np.asarray(rewards, dtype=np.float64)
    p10, p50, p90 = np.quantile(values, [0.1, 0.5, 0.9])
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "p10": float(p10),
        "median": float(p50),
        "p90": float(p90),
    }


class TensorBoardLogger:
    """Writes every numeric field of each per-iteration record as a TensorBoard scalar
    (``online_dt/<field>`` at step ``iteration``), through ``torch.utils.tensorboard``.

    Raises:
        ImportError: the ``tensorboard`` package is not installed (``pip install
            online-dt[tensorboard]``).
    """

    def __init__(self, log_dir: str) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError(
                "online.tensorboard needs the tensorboard package: pip install "
                "'online-dt[tensorboard]'"
            ) from e
        self.writer = SummaryWriter(log_dir)

    def __call__(self, record: dict) -> None:
        """Log one iteration's record."""
        step = int(record["iteration"])
        for key, value in record.items():
            if (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and key != "iteration"
            ):
                self.writer.add_scalar(f"online_dt/{key}", value, step)
        self.writer.flush()

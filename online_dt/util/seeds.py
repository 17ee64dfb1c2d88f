"""Seeds derived from a run's seed and a few keys, by NumPy's ``SeedSequence``.

Every random stream of a run (the schedule's draws, each iteration's sampling, each sampler
replica's share of it) is determined by the run's seed and integer keys alone, never by a
generator carried across iterations, so a resumed run reproduces them. ``SeedSequence`` mixes
the entropy and keys so that nearby keys give unrelated streams (NumPy's documented way to
spawn independent streams), instead of hand-written arithmetic such as ``seed * P + k``.
"""

from __future__ import annotations

import numpy as np


def _entropy(seed: int, keys: tuple[int, ...]) -> list[int]:
    if any(k < 0 for k in keys):
        raise ValueError(f"seed keys must be >= 0, got {keys}")
    return [seed % 2**64, *keys]


def derived_rng(seed: int, *keys: int) -> np.random.Generator:
    """A NumPy generator determined by ``seed`` (any int) and the ``keys`` (each >= 0).

    Raises:
        ValueError: a key is negative.
    """
    return np.random.default_rng(_entropy(seed, keys))


def derived_seed(seed: int, *keys: int) -> int:
    """An integer seed in ``[0, 2**31)`` determined by ``seed`` and the ``keys`` (each >= 0),
    for libraries that take an int (torch, vLLM).

    Raises:
        ValueError: a key is negative.
    """
    state = np.random.SeedSequence(_entropy(seed, keys)).generate_state(1, np.uint32)[0]
    return int(state) >> 1

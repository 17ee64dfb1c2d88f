"""Pretraining of the embedded base model: the CPU training loop of its build.

:func:`pretrain_model` trains a causal LM on length-bucketed batches of whole sequences with AdamW,
a warm-up then cosine learning-rate schedule (:func:`_lr_factor`) and a CPU thread count that is
re-measured as it goes (:class:`_ThreadTuner`). Used by :mod:`online_dt.embedded.bootstrap`, which
builds and caches the model.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from online_dt.config import BootstrapConfig

if TYPE_CHECKING:
    import torch

# Fraction of the steps used for linear warm-up, and the floor of the cosine decay (x peak).
_WARMUP_FRACTION = 0.05
_MIN_LR_FRACTION = 0.1
_WEIGHT_DECAY = 0.01
_BETAS = (0.9, 0.95)
_GRAD_CLIP = 1.0
# Thread-count probing of the training loop (see _ThreadTuner): every this many steps.
_PROBE_EVERY = 50
# Length bucketing: texts are sorted by length within windows of this many batches.
_BUCKET_WINDOW = 32


def _lr_factor(step: int, total: int) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based): linear warm-up over
    ``_WARMUP_FRACTION`` of the steps, then cosine decay to ``_MIN_LR_FRACTION``."""
    warmup = max(1, round(_WARMUP_FRACTION * total))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return _MIN_LR_FRACTION + (1 - _MIN_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress))


def num_threads() -> int:
    """CPU threads for training: the cores this process may run on (the most
    :func:`pretrain_model` uses; a build records it as ``cpu_cores``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _length_bucketed_batches(
    lengths: Sequence[int], batch_size: int, generator: torch.Generator
) -> list[list[int]]:
    """One epoch of batches of indices: shuffled, then sorted by length within windows of
    ``_BUCKET_WINDOW`` batches so each batch holds texts of similar length (little padding),
    and the batches themselves in random order. Texts left over after the last full batch
    wait for the next epoch (unless there is no full batch at all)."""
    import torch

    order = torch.randperm(len(lengths), generator=generator).tolist()
    window = batch_size * _BUCKET_WINDOW
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    batches = [b for b in batches if len(b) == batch_size] or batches  # drop a short tail
    shuffle = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffle]


@dataclass
class _TrainStats:
    """What :func:`pretrain_model` reports: per-step losses (nats per token), real tokens trained
    on, and how many steps ran with each CPU thread count."""

    losses: list[float] = field(default_factory=list)
    tokens: int = 0
    steps_per_thread_count: dict[int, int] = field(default_factory=dict)


class _ThreadTuner:
    """Picks the CPU thread count for training, re-measured every ``_PROBE_EVERY`` steps.

    With all cores free, ``n`` threads are fastest (two cores: about 1.4x one thread). When
    other processes compete for the cores, OpenMP threads that wait for a descheduled sibling
    make ``n`` threads several times *slower* than one (measured: 1.3 s against 0.26 s per
    step). So at the start of every block of ``_PROBE_EVERY`` steps, two steps run with each
    candidate (1 and ``n``) and the block continues with the one that took less time per token.
    Training results do not depend on the choice beyond floating-point summation order.
    """

    def __init__(self, max_threads: int) -> None:
        self.candidates = sorted({1, max_threads})
        self.current = max_threads
        self._timings: dict[int, list[float]] = {}

    def threads_for(self, step: int) -> int:
        """The thread count to use for ``step`` (0-based)."""
        pos = step % _PROBE_EVERY
        if len(self.candidates) > 1 and 1 <= pos <= 2 * len(self.candidates):
            return self.candidates[(pos - 1) // 2]  # probing; step 0 of a block warms up
        return self.current

    def record(self, step: int, threads: int, seconds_per_token: float) -> None:
        """Report the time of ``step``; after the last probe step, pick the faster count."""
        pos = step % _PROBE_EVERY
        if len(self.candidates) == 1 or not 1 <= pos <= 2 * len(self.candidates):
            return
        self._timings.setdefault(threads, []).append(seconds_per_token)
        if pos == 2 * len(self.candidates):
            self.current = min(self._timings, key=lambda k: min(self._timings[k]))
            self._timings.clear()


def pretrain_model(
    model: torch.nn.Module,
    sequences: Sequence[Sequence[int]],
    cfg: BootstrapConfig,
    pad_id: int,
    *,
    progress: bool,
) -> _TrainStats:
    """Next-token training on right-padded, length-bucketed batches of whole sequences (loss on
    every real token, including the final EOS; padding carries no loss).

    Trains ``model`` in place for ``cfg.steps`` steps (``cfg.lr``, ``cfg.batch_size``,
    ``cfg.seed``), padding with ``pad_id``, with a tqdm bar when ``progress``. It sets torch's
    CPU thread count as it goes and leaves it set: the caller restores it
    (:mod:`online_dt.embedded.bootstrap` does). Returns the per-step losses, tokens trained on and
    steps per thread count.
    """
    import torch
    from tqdm.auto import tqdm

    from online_dt.policy.layout import IGNORE_INDEX

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": _WEIGHT_DECAY},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=_BETAS,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _lr_factor(step, cfg.steps)
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    lengths = [len(s) for s in sequences]
    batches: list[list[int]] = []
    stats = _TrainStats()
    tuner = _ThreadTuner(num_threads())
    model.train()
    # transformers warns once that input_ids contain the pad id (it is also EOS) and no mask is
    # given; that is intended here, so its logger is quietened for the loop.
    hf_logger = logging.getLogger("transformers")
    hf_level = hf_logger.level
    hf_logger.setLevel(logging.ERROR)
    bar = tqdm(total=cfg.steps, desc="building embedded model", disable=not progress, leave=False)
    try:
        for step in range(cfg.steps):
            if not batches:  # a new epoch
                batches = _length_bucketed_batches(lengths, cfg.batch_size, generator)
            batch = [sequences[i] for i in batches.pop()]
            width = max(len(s) for s in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
            for row, seq in enumerate(batch):
                ids[row, : len(seq)] = torch.tensor(seq)
                labels[row, : len(seq)] = ids[row, : len(seq)]
            threads = tuner.threads_for(step)
            if threads != torch.get_num_threads():
                torch.set_num_threads(threads)
            started = time.perf_counter()
            # Right padding: real tokens never attend to the padding after them (causal mask),
            # so no attention mask is needed and default positions 0..T-1 are correct. Passing
            # no mask also keeps SDPA on its fast causal path (about 6x faster on CPU).
            loss = model(input_ids=ids, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), _GRAD_CLIP)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            stats.losses.append(float(loss.detach()))
            tuner.record(step, threads, (time.perf_counter() - started) / ids.numel())
            stats.tokens += sum(len(s) for s in batch)
            counts = stats.steps_per_thread_count
            counts[threads] = counts.get(threads, 0) + 1
            bar.update(1)
            if step % 10 == 0 or step == cfg.steps - 1:
                bar.set_postfix(loss=f"{stats.losses[-1]:.3f}", threads=threads)
    finally:
        bar.close()
        hf_logger.setLevel(hf_level)
    return stats

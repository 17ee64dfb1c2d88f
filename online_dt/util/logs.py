"""Where a worker's output goes: its own log file, with real warnings still on the console.

A Ray actor's stdout and stderr (and those of the processes it starts, such as vLLM's engine
and workers) are streamed to the driver's console by Ray. :func:`redirect_output` sends them
to one file per actor instead (``RUN_DIR/logs/<actor>.log``), at the level of the file
descriptors so that C++ libraries and child processes follow; :func:`forward_warnings` keeps
the project's own warnings and errors on the original stream, which Ray still forwards.

:class:`KnownHarmless` drops, by logger and exact message start, the warnings that are known
to be harmless here; each entry of :data:`HARMLESS` says why. It is not a blanket filter:
anything not listed passes.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TextIO

HARMLESS: tuple[tuple[str, str, str], ...] = (
    # (logger name prefix, message start, why it is harmless here)
    (
        "vllm",
        "ParallelLMHead: Failed to load weights",
        "GPT-2 ties lm_head to the input embedding, so the checkpoint has no lm_head tensor; "
        "after every reload PolicyReloadExtension re-packs the tied head from the embedding "
        "(online_dt/rollout/vllm_worker.py), which the logprob tests check",
    ),
    (
        "vllm",
        "Triton is installed, but doesn't include CPU backend",
        "vLLM's CPU build runs its own kernels; Triton only serves the GPU and V2 runners",
    ),
    (
        "vllm",
        "Triton is not installed",
        "vLLM's CPU build runs its own kernels; Triton only serves the GPU and V2 runners",
    ),
    (
        "vllm",
        "Model Runner V2 requires Triton",
        "the V1 model runner it falls back to is the one the sampler tests were run on",
    ),
    (
        "vllm",
        "Enforce eager set",
        "sampler.enforce_eager is the project's own default on CPU (no graph capture there)",
    ),
    (
        "vllm",
        "Inductor compilation was disabled",
        "follows from enforce_eager, which the project sets itself",
    ),
    (
        "vllm",
        "vLLM has deprecated support for supporting different tokenizers for different LoRAs",
        "the best command's adapter (online_dt/rollout/vllm_lora.py) has no tokenizer of its "
        "own; the base model's is the one it needs",
    ),
    (
        "vllm",
        "Reset SSM cache type",
        "concerns Mamba-style state caches; the policies here are attention-only",
    ),
    (
        "vllm",
        "libtcmalloc is not found in LD_PRELOAD",
        "a speed hint for large CPU models (a faster allocator); results are the same",
    ),
    (
        "vllm",
        "libiomp is not found in LD_PRELOAD",
        "a speed hint for large CPU models (Intel's OpenMP); results are the same",
    ),
    (
        "vllm",
        "The global random seed is set to",
        "an engine started in process (weight_sync: ray) seeds the global generators; "
        "in_process_engine (online_dt/rollout/vllm_sampler.py) restores their CPU states",
    ),
    (
        "vllm",
        "CPU backend doesn't allow to use `torch.set_num_threads`",
        "vLLM's own calls while an in-process CPU engine starts (weight_sync: ray) are skipped; "
        "in_process_engine restores torch.set_num_threads afterwards",
    ),
    (
        "ray",
        "Token authentication is enabled for this Ray cluster",
        "Ray 2.60 secures the local instance that `online-dt run` starts with a token it "
        "generates (~/.ray/auth_token); that is its default and needs nothing from the user "
        "(the warning that it is disabled is not listed)",
    ),
)
"""Warnings dropped by :class:`KnownHarmless`: (logger prefix, message start, why harmless)."""


VERBOSE_ENV = "ONLINE_DT_VERBOSE"
"""Set to ``1`` (``online-dt run --verbose``): :class:`KnownHarmless` lets everything pass,
in this process and in those it starts."""


class KnownHarmless(logging.Filter):
    """Drops the log records listed in :data:`HARMLESS` (matched by logger name prefix and
    the start of the formatted message); every other record passes, and every record passes
    while ``ONLINE_DT_VERBOSE=1``."""

    def filter(self, record: logging.LogRecord) -> bool:
        """``False`` for a listed harmless record, ``True`` otherwise."""
        if os.environ.get(VERBOSE_ENV) == "1":
            return True
        name = record.name
        message = record.getMessage()
        for prefix, start, _why in HARMLESS:
            if (name == prefix or name.startswith(prefix + ".")) and message.startswith(start):
                return False
        return True


def silence_known_harmless(logger_name: str) -> None:
    """Attach :class:`KnownHarmless` to the handlers of ``logger_name`` (and to the logger,
    for handlers added later). Idempotent."""
    logger = logging.getLogger(logger_name)
    for target in [logger, *logger.handlers]:
        if not any(isinstance(f, KnownHarmless) for f in target.filters):
            target.addFilter(KnownHarmless())


def redirect_output(path: Path) -> TextIO:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so C/C++ output and
    child processes started afterwards follow) to ``path``, appended.

    Returns:
        A text stream on the original stderr (what Ray forwards to the driver), for
        :func:`forward_warnings`.

    Raises:
        OSError: ``path`` cannot be created or opened.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    original = os.fdopen(os.dup(2), "w", buffering=1)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return original


def forward_warnings(stream: TextIO, loggers: tuple[str, ...] = ("online_dt", "actors")) -> None:
    """Also write warnings and errors of ``loggers`` (the project's own) to ``stream``."""
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    for name in loggers:
        logging.getLogger(name).addHandler(handler)

"""vLLM's logging, with its known-harmless warnings dropped in every process it starts.

vLLM configures its ``vllm`` logger when it is first imported, in the engine's process and in
each worker process it spawns, from ``VLLM_LOGGING_CONFIG_PATH`` when that is set. So a filter
attached in this process only would miss the engine and its workers; :func:`configure` writes
a logging config with :class:`online_dt.util.logs.KnownHarmless` on vLLM's handler and points
``VLLM_LOGGING_CONFIG_PATH`` at it before vLLM is imported (children inherit the variable). A
config the user set themselves is left alone.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from online_dt.util.logs import VERBOSE_ENV, silence_known_harmless

FORMAT = "(%(vllm_process_name)s pid=%(process)d) %(levelname)s %(asctime)s %(message)s"
"""vLLM's own layout, less the source position."""


def logging_config(level: str) -> dict:
    """A ``logging.config.dictConfig`` for vLLM's logger: its own formatter and stream
    (stdout, vLLM's default), ``level``, and the known-harmless filter."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"known_harmless": {"()": "online_dt.util.logs.KnownHarmless"}},
        "formatters": {
            "vllm": {
                "()": "vllm.logging_utils.NewLineFormatter",
                "datefmt": "%m-%d %H:%M:%S",
                "format": FORMAT,
            }
        },
        "handlers": {
            "vllm": {
                "class": "logging.StreamHandler",
                "formatter": "vllm",
                "level": level,
                "stream": "ext://sys.stdout",
                "filters": ["known_harmless"],
            }
        },
        "loggers": {"vllm": {"handlers": ["vllm"], "level": level, "propagate": False}},
    }


def configure() -> None:
    """Point ``VLLM_LOGGING_CONFIG_PATH`` at :func:`logging_config` (level
    ``VLLM_LOGGING_LEVEL``, default ``WARNING``) unless it is set, and drop the known-harmless
    records that reach this process's root handlers (vLLM logs a few while it is imported,
    before its logger is configured). Call it before importing vLLM; idempotent."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    silence_known_harmless("")
    # vLLM logs while it is imported, before it configures its logger to VLLM_LOGGING_LEVEL:
    # apply that level already, so its import-time INFO lines do not reach the root handlers
    logging.getLogger("vllm").setLevel(os.environ["VLLM_LOGGING_LEVEL"].upper())
    # vLLM's Triton dispatcher reads torch.distributed.reduce_op (a deprecated alias of
    # ReduceOp) while it scans modules for kernels, in every engine process; nothing uses the
    # alias, so the FutureWarning is harmless. PYTHONWARNINGS reaches the spawned processes.
    harmless = "ignore:`torch.distributed.reduce_op` is deprecated:FutureWarning"
    current = os.environ.get("PYTHONWARNINGS", "")
    if harmless not in current and os.environ.get(VERBOSE_ENV) != "1":
        os.environ["PYTHONWARNINGS"] = f"{current},{harmless}" if current else harmless
    if "VLLM_LOGGING_CONFIG_PATH" in os.environ:
        return
    level = os.environ["VLLM_LOGGING_LEVEL"].upper()
    path = Path(tempfile.gettempdir()) / f"online-dt-vllm-logging-{os.getuid()}-{level}.json"
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(logging_config(level)))
    tmp.replace(path)
    os.environ["VLLM_LOGGING_CONFIG_PATH"] = str(path)
    logging.getLogger(__name__).debug("vLLM logging config: %s", path)

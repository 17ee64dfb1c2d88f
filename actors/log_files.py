"""Where a Ray actor's output goes: its own file under ``RUN_DIR/logs/``.

Kept apart from the actor classes so that an actor whose module is light (the reward model's,
:mod:`actors.reward`) does not import torch to set up its log.
"""

from __future__ import annotations

from online_dt.util.logs import forward_warnings, redirect_output


def log_to_file(log_file: str | None) -> None:
    """Send this actor's output (and that of the processes it starts, e.g. vLLM's engine) to
    ``log_file``, appended (a restarted actor continues it), with the project's own INFO and
    up in it; its warnings and errors still reach the driver's console. ``None``: leave the
    output to Ray, which streams it to the driver (``online-dt run --verbose``)."""
    if log_file is None:
        return
    import logging
    from pathlib import Path

    console = redirect_output(Path(log_file))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    forward_warnings(console)

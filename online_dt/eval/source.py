"""What ``online-dt eval`` evaluates: the policy, run directory, config and checkpoint state
behind a path, and the rewards of the run's replay buffer."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from online_dt.launch.rundir import (
    BUFFER_DIR,
    CHECKPOINT_POLICY_DIR,
    CHECKPOINT_STATE_FILE,
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    EVAL_DIR,
    LATEST_FILE,
    RunDir,
    RunDirError,
)
from online_dt.policy.conditioner_state import CONDITIONING_FILE
from online_dt.replay.shards import read_persisted


class EvalError(ValueError):
    """The evaluation source is not a run, checkpoint or policy directory, or lacks a config."""


@dataclass
class EvalSource:
    """What ``online-dt eval`` evaluates.

    Attributes:
        policy_dir: the saved policy (``save_pretrained`` directory).
        run_dir: the run directory it belongs to, if found.
        config_path: the run's ``config.yaml``, if found.
        iteration: the checkpoint's iteration, if known.
        policy_version: the checkpoint's policy version, if known.
    """

    policy_dir: Path
    run_dir: Path | None
    config_path: Path | None
    iteration: int | None = None
    policy_version: int | None = None

    def out_dir(self, out_dir: str | Path | None) -> Path:
        """Where an evaluation writes: ``out_dir``, else ``RUN_DIR/eval`` (or ``eval/`` next
        to the policy when there is no run directory)."""
        if out_dir is not None:
            return Path(out_dir)
        return (self.run_dir or self.policy_dir.parent) / EVAL_DIR

    def report_header(self, source: str | Path, config: str | Path) -> dict[str, Any]:
        """The fields every evaluation report opens with: when, what was asked for
        (``source``), the policy, run directory, config file, iteration and policy version."""
        return {
            "created_at": time.time(),
            "source": str(source),
            "policy": str(self.policy_dir),
            "run_dir": str(self.run_dir) if self.run_dir else None,
            "config": str(config),
            "iteration": self.iteration,
            "policy_version": self.policy_version,
        }


def _is_policy(path: Path) -> bool:
    return (path / CONDITIONING_FILE).is_file()


def resolve_source(path: str | Path) -> EvalSource:
    """Find the policy, run directory and config of a path given to ``online-dt eval``.

    Accepted: an online run directory (its latest checkpoint's policy), a checkpoint directory
    (``checkpoints/iter-NNNNNN``), a run directory holding ``policy/`` (the offline demo's), or a
    policy directory itself (``weights/v000NNN``, ``.../policy``); the config is the nearest
    ``config.yaml`` at most three levels up.

    Raises:
        EvalError: the path is none of these.
    """
    p = Path(path)
    if not p.is_dir():
        raise EvalError(f"{p} is not a directory")
    state: dict[str, Any] = {}
    if (p / CHECKPOINTS_DIR / LATEST_FILE).is_file():
        try:
            checkpoint = RunDir(p).latest_checkpoint()
        except RunDirError as e:
            raise EvalError(str(e)) from None
        policy_dir = checkpoint / CHECKPOINT_POLICY_DIR
        state = _read_state(checkpoint)
    elif (p / CHECKPOINT_STATE_FILE).is_file() and _is_policy(p / CHECKPOINT_POLICY_DIR):
        policy_dir = p / CHECKPOINT_POLICY_DIR
        state = _read_state(p)
    elif _is_policy(p / CHECKPOINT_POLICY_DIR):
        policy_dir = p / CHECKPOINT_POLICY_DIR
    elif _is_policy(p):
        policy_dir = p
    else:
        raise EvalError(
            f"{p} is not a run directory (with {CHECKPOINTS_DIR}/{LATEST_FILE}), a checkpoint "
            f"directory or a saved policy (with {CONDITIONING_FILE})"
        )
    if not _is_policy(policy_dir):
        raise EvalError(f"{policy_dir} holds no saved policy")
    run_dir = None
    for candidate in [policy_dir, *list(policy_dir.parents)[:3]]:
        if (candidate / CONFIG_FILE).is_file():
            run_dir = candidate
            break
    return EvalSource(
        policy_dir=policy_dir,
        run_dir=run_dir,
        config_path=run_dir / CONFIG_FILE if run_dir else None,
        iteration=state.get("iteration"),
        policy_version=state.get("version"),
    )


def _read_state(checkpoint: Path) -> dict[str, Any]:
    try:
        return json.loads((checkpoint / CHECKPOINT_STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def buffer_rewards(run_dir: Path | None) -> np.ndarray:
    """Achieved rewards of every sample persisted in ``run_dir/buffer``, in id order.

    A run with a single reward gives float64 ``[N]`` (the shards' ``achieved_reward`` column).
    A run with ``M`` objectives (``conditioning.objectives``), whose shards fill the
    ``achieved_rewards`` list column, gives float64 ``[N, M]``: one row per sample, the
    objectives in the config's order (reward units); a sample without a full vector of ``M``
    finite values (``M`` the longest vector) is left out. A scalar result never holds the
    first objective of a vector run: check ``.ndim`` (or the run's config) to tell them apart.

    Returns:
        ``[N]`` or ``[N, M]`` as above; an empty ``[0]`` without a run directory, a buffer
        folder or a persisted sample.

    Raises:
        BufferCorruptError: the shards do not cover the persisted ids.
    """
    if run_dir is None or not (Path(run_dir) / BUFFER_DIR).is_dir():
        return np.zeros(0)
    table = read_persisted(Path(run_dir) / BUFFER_DIR)
    if table.num_rows == 0:
        return np.zeros(0)
    if "achieved_rewards" in table.column_names:
        vectors = _full_vectors(table.column("achieved_rewards"))
        if vectors is not None:
            return vectors
    return np.asarray(table.column("achieved_reward").to_numpy(), dtype=np.float64)


def _full_vectors(column: pa.ChunkedArray) -> np.ndarray | None:
    """The rows of a list column (``achieved_rewards``) holding ``M`` finite values, ``M`` its
    longest row, as float64 ``[n, M]``; ``None`` when no row holds a value."""
    array = column.combine_chunks()
    if len(array) == 0 or array.null_count == len(array):
        return None
    lengths = pc.list_value_length(array).fill_null(0).to_numpy(zero_copy_only=False)
    width = int(lengths.max())
    if width == 0:
        return None
    full = array.filter(pa.array(lengths == width))
    flat = pc.list_flatten(full).to_numpy(zero_copy_only=False)  # null values: NaN
    rows = np.asarray(flat, dtype=np.float64).reshape(len(full), width)
    return rows[np.isfinite(rows).all(axis=1)]

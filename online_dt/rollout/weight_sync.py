"""Weight sync from the learner to the samplers: one interface, backends chosen by config.

The learner *publishes* a new policy version and gets back a small :class:`WeightUpdate`
message; every sampler applies it with ``load_weights(update)``. Two backends:

* ``checkpoint`` (CPU and GPU): the learner writes the policy as a Hugging Face directory
  (model, tokenizer, conditioning head) to ``<root>/v<version>``, written to a temporary name and
  renamed, and the update carries that path. vLLM reloads it in place with
  ``collective_rpc("reload_policy", ...)`` (:mod:`online_dt.rollout.vllm_worker`); the HF
  sampler loads it with ``from_pretrained``.
* ``nccl`` (GPU clusters): vLLM's native weight-transfer engine broadcasts tensors from the
  learner's GPU to the engines' GPUs; see :mod:`online_dt.rollout.weight_sync_nccl`. The
  conditioning head and normaliser (a few KB) still travel as a small checkpoint directory.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from online_dt.util.atomic import atomic_write_dir

if TYPE_CHECKING:
    from online_dt.policy.policy import RewardConditionedPolicy


@dataclass(frozen=True)
class WeightUpdate:
    """What a sampler needs to move to a new policy version.

    Attributes:
        version: the new policy version (increases by one per learner publication).
        backend: ``checkpoint`` or ``nccl``.
        path: directory of the published checkpoint (``checkpoint``), or of the conditioning
            files only (``nccl``).
    """

    version: int
    backend: Literal["checkpoint", "nccl"]
    path: str | None = None


class WeightPublisher(Protocol):
    """Learner side of weight sync."""

    def publish(self, policy: RewardConditionedPolicy, version: int) -> WeightUpdate:
        """Make ``policy``'s current weights available as ``version``; return the message the
        samplers apply."""
        ...


def version_dir_name(version: int) -> str:
    """Directory name of a published version (``v000042``), sortable by version."""
    return f"v{version:06d}"


def newest_published(update: WeightUpdate) -> WeightUpdate:
    """The newest version published in ``update``'s directory (``update`` itself for NCCL).

    A sampler that Ray restarts after a crash is re-created with the update it was first
    given, possibly pruned since and certainly old; it starts from the newest published
    version instead, which is the one the learner last sent (and is re-sent it anyway before
    its chunk is re-issued).

    Raises:
        FileNotFoundError: no published version is left next to ``update.path``.
    """
    if update.backend != "checkpoint" or update.path is None:
        return update
    root = Path(update.path).parent
    versions = sorted(p for p in root.glob("v[0-9]*") if p.is_dir())
    if not versions:
        raise FileNotFoundError(f"no published policy version under {root}")
    newest = versions[-1]
    return WeightUpdate(version=int(newest.name[1:]), backend="checkpoint", path=str(newest))


class CheckpointPublisher:
    """Publishes each version as a checkpoint directory under ``root``.

    Args:
        root: directory holding ``v000001``, ``v000002``, ... (created if missing).
        keep: how many recent versions to keep on disk (>= 1); older ones are deleted after a
            newer one is complete. Keep at least 2 when samplers may still be reading the
            previous version while the next is written (asynchronous mode).
    """

    def __init__(self, root: str | Path, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError("keep must be >= 1")
        self.root = Path(root)
        self.keep = keep

    def publish(self, policy: RewardConditionedPolicy, version: int) -> WeightUpdate:
        """Write the policy to ``root/v<version>`` atomically and prune old versions.

        Raises:
            OSError: the directory cannot be written; no partial version directory is left.
        """
        path = self.root / version_dir_name(version)
        atomic_write_dir(path, policy.save_pretrained)
        versions = sorted(p for p in self.root.glob("v[0-9]*") if p.is_dir())
        for old in versions[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return WeightUpdate(version=version, backend="checkpoint", path=str(path))

    def discard_after(self, version: int) -> None:
        """Delete published versions newer than ``version``: an interrupted run may have
        published some after its last checkpoint, and a resumed one must not serve them."""
        for p in self.root.glob("v[0-9]*"):
            if p.is_dir() and p.name[1:].isdigit() and int(p.name[1:]) > version:
                shutil.rmtree(p, ignore_errors=True)

"""Weight sync from the learner to the samplers: one interface, backends chosen by config.

The learner *publishes* a new policy version and gets back a :class:`WeightUpdate` message;
every sampler applies it with ``load_weights(update)``. Three backends:

* ``checkpoint`` (CPU and GPU): the learner writes the policy as a Hugging Face directory
  (model, tokenizer, conditioning head) to ``<root>/v<version>``, written to a temporary name and
  renamed, and the update carries that path. vLLM reloads it in place with
  ``collective_rpc("reload_policy", ...)`` (:mod:`online_dt.rollout.vllm_worker`); the HF
  sampler reads it into its policy in place (:mod:`online_dt.policy.reload`).
* ``nccl`` (GPU clusters): vLLM's native weight-transfer engine broadcasts tensors from the
  learner's GPU to the engines' GPUs; see :mod:`online_dt.rollout.weight_sync_nccl`. The
  conditioning head and normaliser (a few KB) still travel as a small checkpoint directory.
* ``ray`` (no shared storage): the learner captures the policy's whole state in memory, a
  :class:`PolicyState` (the model's state dict as CPU tensors plus the conditioning state that
  :meth:`RewardConditioner.save` would write), and the update carries it: the object itself in
  process (``online-dt run --local``), an ``ObjectRef`` to it in Ray's object store between
  Ray actors (``actors.workers``: the learner actor puts it there with ``ray.put``, each
  sampler actor fetches it with ``ray.get``). Samplers copy the tensors into their model in
  place; no file is written or read. Samplers of this backend are built from a
  :class:`PolicySkeleton` (config and tokenizer, no weights) and get every version, the first
  included, through ``load_weights``.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from online_dt.util.atomic import atomic_write_dir

if TYPE_CHECKING:
    import torch

    from online_dt.config import SamplerConfig
    from online_dt.policy.policy import RewardConditionedPolicy


@dataclass(frozen=True)
class WeightUpdate:
    """What a sampler needs to move to a new policy version.

    Attributes:
        version: the new policy version (increases by one per learner publication).
        backend: ``checkpoint``, ``nccl`` or ``ray``.
        path: directory of the published checkpoint (``checkpoint``), or of the conditioning
            files only (``nccl``); ``None`` for ``ray``.
        state: ``ray`` only: the published :class:`PolicyState`. In process the object itself;
            between Ray actors an ``ObjectRef`` to it, which ``actors.workers.SamplerActor``
            resolves before its sampler sees the update (a sampler given an unresolved
            reference raises ``TypeError``). Left out of equality and ``repr``.
    """

    version: int
    backend: Literal["checkpoint", "nccl", "ray"]
    path: str | None = None
    state: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class PolicyState:
    """A policy version's whole state in memory: what ``save_pretrained`` writes, less the
    tokenizer and config (:class:`PolicySkeleton` holds those; they do not change in a run).

    Picklable, so it can go into Ray's object store as it is.

    Attributes:
        model: the model's state-dict tensors on the CPU, by their Hugging Face names, in
            state-dict order, each stored once: a name whose tensor is another's (a tied
            ``lm_head.weight``) is in ``tied`` instead, as ``save_pretrained`` leaves tied
            copies out of a checkpoint.
        tied: name -> the name in ``model`` holding the same tensor.
        conditioning: :meth:`RewardConditioner.to_state` (``meta``: conditioning.json's
            content; ``head``: the scalar head's tensors or ``None``).
        input_embeddings: the name in ``model`` of the input-embedding matrix ``[V, H]``.
    """

    model: dict[str, torch.Tensor]
    tied: dict[str, str]
    conditioning: dict[str, Any]
    input_embeddings: str

    @classmethod
    def capture(cls, policy: RewardConditionedPolicy, *, copy: bool = True) -> PolicyState:
        """The current state of ``policy``.

        Args:
            policy: the learner's policy (any device; tensors are moved to the CPU).
            copy: copy the tensors (default). ``False`` shares the tensors of a policy on the
                CPU: only for a caller that serialises the state at once (``ray.put``), since
                training would change shared tensors under it.
        """
        model = policy.model
        tensors: dict[str, torch.Tensor] = {}
        tied: dict[str, str] = {}
        seen: dict[tuple[Any, ...], str] = {}
        for name, tensor in model.state_dict().items():
            key = (
                tensor.device,
                tensor.untyped_storage().data_ptr(),
                tensor.storage_offset(),
                tuple(tensor.shape),
                tensor.stride(),
                tensor.dtype,
            )
            if tensor.numel() and key in seen:
                tied[name] = seen[key]
                continue
            seen[key] = name
            tensor = tensor.detach()
            tensors[name] = tensor.to("cpu", copy=True) if copy else tensor.cpu()
        embedding = model.get_input_embeddings().weight
        name = next(n for n, p in model.named_parameters(remove_duplicate=False) if p is embedding)
        return cls(
            model=tensors,
            tied=tied,
            conditioning=policy.conditioner.to_state(),
            input_embeddings=tied.get(name, name),
        )

    def save_pretrained(self, path: str | Path, policy: RewardConditionedPolicy) -> None:
        """Write this state as ``policy.save_pretrained`` writes a policy directory: the
        model's weights from this state (tied copies left out, as ``save_pretrained`` leaves
        them), ``policy``'s model config and tokenizer (they do not change in a run), and the
        conditioning captured with the state. The learner's background checkpoints write a
        state captured before training changed the policy.

        Raises:
            OSError: the directory cannot be written.
        """
        from online_dt.policy.conditioner_state import save_state

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        policy.model.save_pretrained(path, state_dict=self.model_state_dict())
        policy.tokenizer.save_pretrained(path)
        save_state(self.conditioning, path)

    def weights(self) -> list[tuple[str, torch.Tensor]]:
        """``(name, tensor)`` pairs of the model, tied copies left out: what a checkpoint's
        safetensors files hold, the input of vLLM's ``model.load_weights``."""
        return list(self.model.items())

    def model_state_dict(self) -> dict[str, torch.Tensor]:
        """Every state-dict name, tied ones included (for ``model.load_state_dict``)."""
        return {**self.model, **{name: self.model[src] for name, src in self.tied.items()}}

    def input_embedding_matrix(self) -> torch.Tensor:
        """The input-embedding matrix ``[V, H]`` (the vLLM sampler's ``prompt_embeds`` table)."""
        return self.model[self.input_embeddings]

    @property
    def nbytes(self) -> int:
        """Bytes of the model's tensors (each stored tensor once)."""
        return sum(t.numel() * t.element_size() for t in self.model.values())


@dataclass(frozen=True)
class PolicySkeleton:
    """What a sampler needs besides weights: the model's config, the tokenizer and the
    conditioning. A ``ray`` weight-sync sampler is built from it with random weights and
    refuses to sample until ``load_weights`` gives it a :class:`PolicyState`.

    Small (no weights; the tokenizer is the largest part), picklable: Ray passes it by value
    to each sampler actor's constructor, so a restarted actor rebuilds from it without any
    file or object-store entry.

    Attributes:
        model_config: the model's ``transformers`` config (vocabulary with the reward tokens).
        tokenizer: the policy's tokenizer (reward tokens added in token mode).
        conditioning: :meth:`RewardConditioner.to_state` at capture time.
    """

    model_config: Any
    tokenizer: Any
    conditioning: dict[str, Any]

    @classmethod
    def of(cls, policy: RewardConditionedPolicy) -> PolicySkeleton:
        """The skeleton of ``policy`` (config and tokenizer copied)."""
        return cls(
            model_config=copy.deepcopy(policy.model.config),
            tokenizer=copy.deepcopy(policy.tokenizer),
            conditioning=policy.conditioner.to_state(),
        )

    def build_policy(
        self, *, device: str = "cpu", attn_implementation: str = "sdpa"
    ) -> RewardConditionedPolicy:
        """A policy of this shape with randomly initialised float32 weights (in eval mode),
        for a sampler that loads a :class:`PolicyState` into it before it samples."""
        import torch
        from transformers import AutoModelForCausalLM

        from online_dt.policy.conditioner import RewardConditioner
        from online_dt.policy.policy import RewardConditionedPolicy
        from online_dt.util.devices import resolve_device

        model = AutoModelForCausalLM.from_config(
            copy.deepcopy(self.model_config),
            attn_implementation=attn_implementation,
            dtype=torch.float32,
        )
        policy = RewardConditionedPolicy(
            model, copy.deepcopy(self.tokenizer), RewardConditioner.from_state(self.conditioning)
        )
        return policy.to(resolve_device(device)).eval()

    def write_engine_files(self, path: str | Path) -> None:
        """Write ``config.json`` and the tokenizer's files (no weights) to ``path``: the
        model directory a vLLM engine is started from with ``load_format="dummy"``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model_config.save_pretrained(path)
        self.tokenizer.save_pretrained(path)


class WeightPublisher(Protocol):
    """Learner side of weight sync."""

    def publish(self, policy: RewardConditionedPolicy, version: int) -> WeightUpdate:
        """Make ``policy``'s current weights available as ``version``; return the message the
        samplers apply."""
        ...


def version_dir_name(version: int) -> str:
    """Directory name of a published version (``v000042``), sortable by version."""
    return f"v{version:06d}"


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


class MemoryPublisher:
    """Publishes each version in memory (``sampler.weight_sync: ray``): the update carries a
    :class:`PolicyState`; nothing is written to disk.

    Args:
        put: turns the captured state into what the update carries. ``None`` (in process,
            ``online-dt run --local``): the state itself, its tensors copied from the policy.
            ``actors.workers.LearnerActor`` passes ``ray.put``, so the update carries an
            ``ObjectRef``; then the tensors of a CPU policy are not copied first, because
            ``ray.put`` serialises them before it returns (a ``put`` must do the same).
    """

    def __init__(self, put: Callable[[PolicyState], Any] | None = None) -> None:
        self.put = put

    def publish(self, policy: RewardConditionedPolicy, version: int) -> WeightUpdate:
        """Capture ``policy``'s state as ``version``."""
        state = PolicyState.capture(policy, copy=self.put is None)
        carried = state if self.put is None else self.put(state)
        return WeightUpdate(version=version, backend="ray", state=carried)

    def discard_after(self, version: int) -> None:
        """Nothing to delete: no version is kept anywhere but in the updates themselves."""


def make_publisher(cfg: SamplerConfig, root: str | Path) -> CheckpointPublisher | MemoryPublisher:
    """The learner's publisher for ``cfg.weight_sync``: :class:`MemoryPublisher` for ``ray``,
    else :class:`CheckpointPublisher` under ``root`` keeping ``cfg.keep_versions``."""
    if cfg.weight_sync == "ray":
        return MemoryPublisher()
    return CheckpointPublisher(root, keep=cfg.keep_versions)

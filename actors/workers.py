"""The Ray actors: thin wrappers that build core objects inside the actor process.

No algorithm lives here; each class only constructs pieces of :mod:`online_dt` where Ray
placed it. The controller turns them into actors with ``ray.remote(...).options(...)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from actors.log_files import log_to_file
from online_dt.config import OnlineRunConfig
from online_dt.rollout.sampler import NO_WEIGHTS, NoWeightsError, Sampler, SamplingParams
from online_dt.rollout.weight_sync import MemoryPublisher, PolicySkeleton, WeightUpdate
from online_dt.samples import Rollout
from online_dt.training.learner import Learner
from online_dt.util.malloc import retain_freed_memory


class SamplerActor:
    """A sampler replica (vLLM, or the HF reference when vLLM is absent).

    Args:
        cfg: the run config.
        start: what to build the sampler from.

            - ``None`` (checkpoint weight sync): the actor imports its libraries and waits
              for its first :meth:`load_weights`, which builds the sampler from that published
              version. The controller starts it beside the learner and sends it the learner's
              first version; until then, and after Ray restarted it, :meth:`generate` raises
              :class:`~online_dt.rollout.sampler.NoWeightsError`, which the sampler group
              answers by sending the latest version again.
            - With ``sampler.weight_sync: ray``, the policy's :class:`PolicySkeleton`: the
              sampler starts without weights and gets them from :meth:`load_weights` (the
              controller sends the first version right after start-up, and re-sends the
              latest to an actor Ray restarted, which is re-created from this same skeleton:
              Ray passes it by value, so no file or object-store entry must outlive the
              first start).
        log_file: where its output goes (see :func:`log_to_file`).
        base_path: the run's base model, for ``sampler.base_logprobs`` (see
            :func:`online_dt.rollout.factory.make_sampler`).
    """

    def __init__(
        self,
        cfg: OnlineRunConfig,
        start: PolicySkeleton | None,
        log_file: str | None = None,
        base_path: str | None = None,
    ) -> None:
        log_to_file(log_file)
        if cfg.resources.retain_freed_memory:
            retain_freed_memory()
        from transformers.utils import logging as hf_logging

        # a sampler that loads a version with from_pretrained (vLLM's engine start, the HF
        # sampler where a version's files are not the model's state dict) shows a "Loading
        # weights" bar each time, which would flood the sampler's log (the learner does the same)
        hf_logging.disable_progress_bar()
        if cfg.resources.sampler_threads is not None:
            import torch

            torch.set_num_threads(cfg.resources.sampler_threads)
        from online_dt.rollout.factory import make_sampler_from_skeleton

        self.cfg, self.base_path = cfg, base_path
        self.sampler: Sampler | None = None
        if start is None:
            # what building the HF sampler imports (about 2 s on a CPU core), imported now,
            # while the learner still starts
            from transformers import AutoModelForCausalLM  # noqa: F401

            return
        self.sampler = make_sampler_from_skeleton(cfg, start, base_path)

    def _build(self, update: WeightUpdate) -> None:
        from online_dt.rollout.factory import make_sampler

        if update.path is None:
            raise ValueError(
                f"a sampler started without weights needs a checkpoint update to build from, "
                f"not a {update.backend!r} one"
            )
        self.sampler = make_sampler(self.cfg, update.path, update.version, self.base_path)

    def generate(
        self, prompts: Sequence[str], targets: Sequence[float], params: SamplingParams
    ) -> list[Rollout]:
        """See :meth:`online_dt.rollout.sampler.Sampler.generate`.

        Raises:
            NoWeightsError: the actor was started without weights and :meth:`load_weights`
                has not run since.
        """
        if self.sampler is None:
            raise NoWeightsError(
                "the sampler actor has no weights yet: it started without them and "
                "load_weights has not run since"
            )
        return self.sampler.generate(prompts, targets, params)

    def load_weights(self, update: WeightUpdate) -> None:
        """See :meth:`online_dt.rollout.sampler.Sampler.load_weights`; an actor started
        without weights builds its sampler from the (checkpoint) update. A ``ray`` update
        carries an ``ObjectRef`` (Ray resolves references only at the top level of a call's
        arguments, not inside the update): it is fetched from the object store here
        (``ray.get``) and the sampler gets the :class:`PolicyState` itself."""
        if self.sampler is None:
            self._build(update)
            return
        if update.backend == "ray":
            import ray

            if isinstance(update.state, ray.ObjectRef):
                update = replace(update, state=ray.get(update.state))
        self.sampler.load_weights(update)

    def policy_version(self) -> int:
        """The version of the weights the sampler holds (``NO_WEIGHTS``, -1, before any)."""
        return NO_WEIGHTS if self.sampler is None else self.sampler.policy_version

    def pid(self) -> int:
        """The actor's process id (operators and fault-injection tests kill it by pid)."""
        return os.getpid()


class LearnerActor(Learner):
    """The :class:`online_dt.training.learner.Learner` itself, as an actor; its output goes
    to ``log_file`` (see :func:`log_to_file`).

    With ``sampler.weight_sync: ray`` its publisher puts each version's
    :class:`~online_dt.rollout.weight_sync.PolicyState` into Ray's object store
    (``ray.put``, owned by this actor), so each update it returns carries an
    ``ObjectRef``, which the controller passes on to the sampler actors.
    """

    def __init__(
        self,
        cfg: OnlineRunConfig,
        base_path: str,
        run_dir: str,
        checkpoint: Any,
        log_file: str | None = None,
        start_over: bool = False,
    ) -> None:
        log_to_file(log_file)
        if cfg.resources.retain_freed_memory:
            retain_freed_memory()
        super().__init__(cfg, base_path, run_dir, checkpoint, start_over)
        if cfg.sampler.weight_sync == "ray":
            import ray

            self.publisher = MemoryPublisher(put=ray.put)

    def sampler_skeleton(self) -> PolicySkeleton:
        """The policy's :class:`PolicySkeleton` (config, tokenizer, conditioning; no
        weights), to build ``ray`` weight-sync samplers from."""
        return PolicySkeleton.of(self.policy)

    def pid(self) -> int:
        """The actor's process id (the controller pings it; fault-injection tests kill it)."""
        return os.getpid()

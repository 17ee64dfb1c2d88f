"""A low-rank adapter whose update each row of a batch scales by its own gate.

Every linear layer of the model's body (the output embedding excepted, unless
``conditioning.lora_output_layer``) gets a LoRA update
``x A B`` (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv
2106.09685), multiplied row by row by a gate ``g`` (``[B]``) and added to the layer's output:
``y = x W + g * (x A B)``. ``B`` starts at zero, so the untrained adapter changes nothing. Two
options use it, one at a time, and :func:`gate_values` says which gate each gives a row:

- ``conditioning.best_command_lora_rank``: ``g`` is 1 on the rows that ask for the best
  command (a target above ``conditioning.reward_max``) and 0 elsewhere. The trainer trains the
  adapter, and nothing else, on the best command's rows, and the rest of the policy, never the
  adapter, on the replay buffer's rows
  (:class:`~online_dt.training.trainer.ConditionedTrainer`): what the best command learns by
  reward-ranked fine-tuning then moves its own parameters instead of the body every reward
  target shares (docs/method.md, round 20).
- ``conditioning.reward_lora_rank``: ``g`` is the row's normalised target reward (the scalar
  head's input; 0 at the normaliser's centre, -1 and 1 one scale below and above it), so the
  adapter is a direction in weight space along which the reward moves every layer, the scaled
  LoRA of Concept Sliders (Gandikota et al., 2023, "Concept Sliders: LoRA Adaptors for
  Precise Control in Diffusion Models", arXiv 2311.12092), here trained by next-token
  prediction on the relabelled replay buffer together with the rest of the policy
  (docs/method.md, round 22).

The output layer, when adapted, may also run on the labelled positions alone
(:class:`~online_dt.policy.labelled_logits.LabelledLogits`), ``[N, H]`` rows of hidden states
picked from ``[B, T]``: :meth:`GatedLoRA.positions` gives each of them its row's gate.

The gate is set before a forward pass (:meth:`RewardConditionedPolicy.embed
<online_dt.policy.policy.RewardConditionedPolicy.embed>` sets it whenever it fills the slots)
and holds for the decoding steps after it, so one batch in flight at a time: guided
generation, which runs a second conditioned batch beside the first, is refused with the
adapter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from online_dt.config import ConditioningConfig

STATE_PREFIX = "lora."
"""Keys of the adapter's tensors in the conditioner's state (``head.safetensors``):
``lora.<layer name>.a`` (``[in, rank]``) and ``lora.<layer name>.b`` (``[rank, out]``)."""


def adapted_layers(
    model: nn.Module, suffixes: Sequence[str] | None = None, output_layer: bool = False
) -> list[tuple[str, nn.Module, int, int]]:
    """``(name, module, in_features, out_features)`` of every ``nn.Linear`` and transformers
    ``Conv1D`` (GPT-2's projections, weight ``[in, out]``) in ``model``, the output embedding
    (LM head) excepted unless ``output_layer`` (``conditioning.lora_output_layer``), in
    ``named_modules`` order; with ``suffixes`` (``conditioning.lora_layers``), only those whose
    dotted name ends with one of them (``mlp.c_fc`` matches ``transformer.h.0.mlp.c_fc``, not
    ``transformer.h.0.mlp.xc_fc``), and the output layer if ``output_layer``."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    wanted = None if suffixes is None else [s.strip(".").split(".") for s in suffixes]
    layers = []
    for name, module in model.named_modules():
        if module is head and not output_layer:
            continue
        parts = name.split(".")
        picked = wanted is None or any(parts[-len(w) :] == w for w in wanted)
        if not picked and module is not head:
            continue
        if isinstance(module, nn.Linear):
            layers.append((name, module, module.in_features, module.out_features))
        elif type(module).__name__ == "Conv1D":
            n_in, n_out = module.weight.shape
            layers.append((name, module, int(n_in), int(n_out)))
    return layers


def _key(name: str) -> str:
    return name.replace(".", "__")  # ParameterDict keys cannot hold dots


class GatedLoRA(nn.Module):
    """LoRA factors for each adapted layer of one model, and the per-row gate that scales them.

    Args:
        shapes: layer name -> ``(in_features, out_features)``; the factors are kept in the
            names' sorted order, so a fresh adapter and one loaded from its state list their
            parameters (and an optimizer's state follows them) in the same order.
        rank: the factors' inner size ``r`` (``conditioning.best_command_lora_rank`` or
            ``conditioning.reward_lora_rank``).
        generator: seeds ``A`` (``N(0, 1 / in_features)``); ``None`` leaves ``A`` at zero,
            for a state to be loaded into (:meth:`from_state`).

    Attributes:
        gate: ``[B]`` float scales of the rows in flight (:func:`gate_values`), or ``None``
            when every one is 0 (the layers then skip the adapter).

    Raises:
        ValueError: ``rank < 1`` or no layers.
    """

    def __init__(
        self,
        shapes: dict[str, tuple[int, int]],
        rank: int,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if rank < 1 or not shapes:
            raise ValueError(f"a LoRA needs rank >= 1 and layers, got rank {rank}, {len(shapes)}")
        self.rank = rank
        self.names = sorted(shapes)  # one order for fresh and loaded: the optimizer's state
        self.a = nn.ParameterDict()
        self.b = nn.ParameterDict()
        for name in self.names:
            n_in, n_out = shapes[name]
            a = torch.zeros(n_in, rank)
            if generator is not None:
                a = torch.randn(n_in, rank, generator=generator) / n_in**0.5
            self.a[_key(name)] = nn.Parameter(a)
            self.b[_key(name)] = nn.Parameter(torch.zeros(rank, n_out))
        self.gate: torch.Tensor | None = None
        self._gate_is_one = False
        """Every row's gate is 1 (the best command's micro-batch): no scaling needed."""
        self._rows: torch.Tensor | None = None
        """``[N]`` row of each flattened position inside :meth:`positions`."""
        self._handles: list[Any] = []

    @classmethod
    def fresh(
        cls,
        model: nn.Module,
        rank: int,
        generator: torch.Generator,
        layers: Sequence[str] | None = None,
        output_layer: bool = False,
    ) -> GatedLoRA:
        """A new adapter over ``model``'s :func:`adapted_layers` (``B = 0``: no effect yet),
        only those ending with one of ``layers`` when given (``conditioning.lora_layers``), the
        output layer too with ``output_layer`` (``conditioning.lora_output_layer``).

        Raises:
            ValueError: ``layers`` matches no linear layer of ``model``.
        """
        found = adapted_layers(model, layers, output_layer)
        if not adapted_layers(model, layers):  # the output layer alone is not what was asked
            raise ValueError(
                f"conditioning.lora_layers {list(layers or [])} matches no linear layer of the "
                "model (e.g. GPT-2: mlp.c_fc, mlp.c_proj, attn.c_attn, attn.c_proj)"
            )
        return cls({name: (n_in, n_out) for name, _, n_in, n_out in found}, rank, generator)

    def attach(
        self, model: nn.Module, suffixes: Sequence[str] | None = None, output_layer: bool = False
    ) -> None:
        """Register a forward hook on each adapted layer of ``model`` that adds ``gate * (x A
        B)`` to its output. Attaching again first removes the previous hooks. A deep copy of
        ``model`` (the learner's frozen base model) copies the hooks, which do nothing there.

        Args:
            model: the policy's causal LM.
            suffixes: ``conditioning.lora_layers``: the layers the adapter must cover (all of
                :func:`adapted_layers` when ``None``).
            output_layer: ``conditioning.lora_output_layer``: the output layer as well.

        Raises:
            ValueError: the adapter's layers are not the ones ``suffixes`` and
                ``output_layer`` pick in ``model`` (names or sizes), e.g. a checkpoint's
                adapter under another ``lora_layers`` or ``lora_output_layer``.
        """
        found = adapted_layers(model, suffixes, output_layer)
        layers = {name: (module, i, o) for name, module, i, o in found}
        if sorted(layers) != sorted(self.names):
            raise ValueError(
                f"the LoRA's {len(self.names)} layers are not the {len(layers)} that "
                f"conditioning.lora_layers {suffixes} (lora_output_layer: {output_layer}) picks "
                "in this model"
            )
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for name in self.names:
            module, n_in, n_out = layers[name]
            a, b = self.a[_key(name)], self.b[_key(name)]
            if tuple(a.shape) != (n_in, self.rank) or tuple(b.shape) != (self.rank, n_out):
                raise ValueError(f"the LoRA's {name} is {list(a.shape)} x {list(b.shape)}")
            self._handles.append(module.register_forward_hook(self._hook(module, a, b)))

    def _hook(self, layer: nn.Module, a: nn.Parameter, b: nn.Parameter) -> Any:
        def add_update(module: nn.Module, inputs: tuple[Any, ...], out: torch.Tensor) -> Any:
            gate = self.gate
            if gate is None or module is not layer:  # a deep copy (the base model) keeps hooks
                return out
            x = inputs[0]
            if self._rows is not None and x.shape[0] == self._rows.shape[0]:
                gate = gate[self._rows]  # positions picked from the rows (positions())
            if x.shape[0] != gate.shape[0]:
                raise RuntimeError(
                    f"the LoRA's gate holds {gate.shape[0]} rows, the batch {x.shape[0]}"
                )
            # out + gate * (x A B) as one addmm, the gate applied to the rank-r factor x A
            xa = x.to(a.dtype) @ a  # [..., r]
            if not self._gate_is_one:
                xa = xa * gate.view((-1,) + (1,) * (xa.dim() - 1))
            flat = torch.addmm(out.reshape(-1, out.shape[-1]).to(xa.dtype), xa.flatten(0, -2), b)
            return flat.view(out.shape).to(out.dtype)

        return add_update

    @contextlib.contextmanager
    def positions(self, where: torch.Tensor) -> Iterator[None]:
        """Inside the block, a layer given ``[N, ...]`` inputs, the hidden states at the True
        entries of ``where`` (``BoolTensor[B, T]``, row-major; ``N = where.sum()``), scales
        each by the gate of the row it came from: the output layer run on the labelled
        positions alone (:class:`~online_dt.policy.labelled_logits.LabelledLogits`)."""
        self._rows = where.nonzero()[:, 0]
        try:
            yield
        finally:
            self._rows = None

    def clear_gate(self) -> None:
        """No row uses the adapter until the next :meth:`set_gate`."""
        self.gate = None
        self._gate_is_one = False

    def set_gate(self, gate: torch.Tensor) -> None:
        """Scale the adapter's update by ``gate`` (``[B]``, bool or float; 0 or False: no
        update in that row) in every forward pass until the next call."""
        factor = self.a[_key(self.names[0])]
        self.gate = gate.to(factor.device, factor.dtype) if bool(gate.any()) else None
        self._gate_is_one = self.gate is not None and bool((self.gate == 1).all())

    def state(self) -> dict[str, torch.Tensor]:
        """The factors as float32 CPU copies under :data:`STATE_PREFIX` keys."""
        out = {}
        for name in self.names:
            for part, table in (("a", self.a), ("b", self.b)):
                value = table[_key(name)].detach()
                out[f"{STATE_PREFIX}{name}.{part}"] = value.to("cpu", torch.float32, copy=True)
        return out

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], rank: int) -> GatedLoRA:
        """An adapter holding ``tensors`` (:meth:`state`'s keys, prefix included).

        Raises:
            ValueError: a layer lacks ``a`` or ``b``, or the factors are not ``rank`` wide.
        """
        names = sorted({k[len(STATE_PREFIX) :].rsplit(".", 1)[0] for k in tensors})
        shapes = {}
        for name in names:
            a = tensors.get(f"{STATE_PREFIX}{name}.a")
            b = tensors.get(f"{STATE_PREFIX}{name}.b")
            if a is None or b is None or a.shape[1] != rank or b.shape[0] != rank:
                raise ValueError(f"the conditioning state's LoRA of {name} is not rank {rank}")
            shapes[name] = (int(a.shape[0]), int(b.shape[1]))
        lora = cls(shapes, rank)
        lora.copy_from(tensors)
        return lora

    def copy_from(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy :meth:`state`'s tensors into this adapter's factors (which keep their device
        and dtype).

        Raises:
            ValueError: the layers or shapes differ (nothing changed).
        """
        pairs = []
        for name in self.names:
            for part, table in (("a", self.a), ("b", self.b)):
                value = tensors.get(f"{STATE_PREFIX}{name}.{part}")
                mine = table[_key(name)]
                if value is None or value.shape != mine.shape:
                    raise ValueError(f"the conditioning state's LoRA does not fit at {name}")
                pairs.append((mine, value))
        if len(pairs) != len(tensors):
            raise ValueError("the conditioning state's LoRA has layers this one lacks")
        with torch.no_grad():
            for mine, value in pairs:
                mine.copy_(value)


def gate_values(
    config: ConditioningConfig,
    rewards: torch.Tensor,
    normalize: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """The adapter's gate ``[B]`` for a batch's conditioning rewards.

    Args:
        config: which option the adapter serves (``reward_lora_rank`` or
            ``best_command_lora_rank``).
        rewards: ``[B]`` targets or labels, reward units.
        normalize: the conditioner's normaliser (reward units to the head's input).

    Returns:
        With ``reward_lora_rank``, ``normalize(rewards)`` (float); with the best command's
        adapter, ``rewards > reward_max`` (bool).
    """
    if config.reward_lora_rank is not None:
        return normalize(rewards.float())
    return rewards > config.reward_max

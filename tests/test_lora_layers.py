"""``conditioning.lora_layers``: the policy's adapter covers only the linear layers whose names
end with the given suffixes; every other layer is left as the base model's, the choice is
checked when the policy is built, and it travels with the policy's files."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from online_dt.config import ConditioningConfig, OnlineRunConfig
from online_dt.policy.gated_lora import adapted_layers
from online_dt.policy.logprobs import base_model_inputs
from online_dt.policy.policy import RewardConditionedPolicy
from tests.test_gated_lora import PROMPT, logits_at, perturb
from tests.test_loop import base, make_cfg  # noqa: F401  (base is a fixture)
from tests.test_reward_lora import with_reward_lora


def with_layers(cfg: OnlineRunConfig, layers: list[str] | None) -> OnlineRunConfig:
    data = with_reward_lora(cfg).model_dump()
    data["conditioning"]["lora_layers"] = layers
    return OnlineRunConfig.model_validate(data)


def test_lora_layers_needs_an_adapter_and_at_least_one_suffix():
    with pytest.raises(ValidationError, match="lora_layers needs reward_lora_rank"):
        ConditioningConfig(lora_layers=["mlp.c_fc"])
    with pytest.raises(ValidationError, match="lora_layers"):
        ConditioningConfig(reward_lora_rank=4, lora_layers=[])
    assert ConditioningConfig(reward_lora_rank=4, lora_layers=["mlp.c_fc"]).lora_layers == [
        "mlp.c_fc"
    ]


def test_suffixes_match_whole_name_components(tmp_path, base):  # noqa: F811
    model = RewardConditionedPolicy.fresh(make_cfg(tmp_path, base), base).model
    every = [name for name, *_ in adapted_layers(model)]
    blocks = len(model.transformer.h)
    fc = [name for name, *_ in adapted_layers(model, ["mlp.c_fc"])]
    assert fc == [n for n in every if n.endswith(".mlp.c_fc")] and len(fc) == blocks
    assert [name for name, *_ in adapted_layers(model, ["c_fc"])] == fc
    assert [name for name, *_ in adapted_layers(model, ["h.0.mlp.c_fc"])] == fc[:1]
    assert adapted_layers(model, ["_fc"]) == []  # a suffix of a component is not a match
    two = [name for name, *_ in adapted_layers(model, ["mlp.c_fc", "attn.c_attn"])]
    assert len(two) == 2 * blocks and two == [n for n in every if n in two]  # model order


def test_only_the_listed_layers_get_the_update(tmp_path, base):  # noqa: F811
    cfg = with_layers(make_cfg(tmp_path, base), ["mlp.c_fc"])
    policy = RewardConditionedPolicy.fresh(cfg, base).eval()
    assert all(n.endswith("mlp.c_fc") for n in policy.conditioner.lora.names)
    untrained = logits_at(policy, [-0.5, 1.0])
    perturb(policy)
    assert not torch.allclose(logits_at(policy, [-0.5, 1.0]), untrained, atol=1e-3)
    outputs: dict[str, list[torch.Tensor]] = {}
    handles = [
        module.register_forward_hook(
            lambda _m, _i, out, name=name: outputs.setdefault(name, []).append(out.detach())
        )
        for name, module, *_ in adapted_layers(policy.model)
    ]
    inputs = base_model_inputs(policy.layout([PROMPT], [0.0], ["good fun"]))
    try:
        for gate in (0.0, 1.0):  # the same input, the adapter off and on
            policy.conditioner.lora.set_gate(torch.tensor([gate]))
            with torch.no_grad():
                policy.model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
        policy.conditioner.lora.clear_gate()
    # block 0's attention comes before its first adapted layer: unchanged; its MLP input
    # projection adds the update
    for name in ("transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj"):
        torch.testing.assert_close(outputs[name][0], outputs[name][1])
    fc = outputs["transformer.h.0.mlp.c_fc"]
    assert float((fc[1] - fc[0]).abs().max()) > 1e-3


def test_a_list_that_matches_nothing_is_refused_naming_the_field(tmp_path, base):  # noqa: F811
    cfg = with_layers(make_cfg(tmp_path, base), ["mlp.up_proj"])
    with pytest.raises(ValueError, match=r"conditioning\.lora_layers \['mlp\.up_proj'\]"):
        RewardConditionedPolicy.fresh(cfg, base)


def test_the_layers_travel_with_the_policy_and_a_mismatch_is_refused(tmp_path, base):  # noqa: F811
    cfg = with_layers(make_cfg(tmp_path, base), ["mlp.c_fc"])
    policy = RewardConditionedPolicy.fresh(cfg, base).eval()
    perturb(policy)
    expected = logits_at(policy, [-0.5, 1.0])
    policy.save_pretrained(tmp_path / "p")
    loaded = RewardConditionedPolicy.from_pretrained(tmp_path / "p").eval()
    assert loaded.conditioner.config.lora_layers == ["mlp.c_fc"]
    assert loaded.conditioner.lora.names == policy.conditioner.lora.names
    torch.testing.assert_close(logits_at(loaded, [-0.5, 1.0]), expected)
    every = RewardConditionedPolicy.fresh(with_layers(make_cfg(tmp_path, base), None), base)
    with pytest.raises(ValueError, match="LoRA"):
        every.conditioner.load_state(policy.conditioner.to_state())
    with pytest.raises(ValueError, match=r"conditioning\.lora_layers"):
        policy.conditioner.lora.attach(every.model)  # all layers picked, four adapted

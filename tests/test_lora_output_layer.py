"""``conditioning.lora_output_layer``: the gated LoRA adapts the output layer (LM head) too,
row by row, in the full forward, on the labelled positions alone, through generation, in
training and in the policy's files."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from online_dt.config import ConditioningConfig, OnlineRunConfig, TrainingConfig
from online_dt.policy.gated_lora import adapted_layers
from online_dt.policy.labelled_logits import LabelledLogits, labelled_positions
from online_dt.policy.policy import RewardConditionedPolicy
from online_dt.samples import Sample
from online_dt.training.trainer import ConditionedTrainer
from tests.test_gated_lora import (
    PROMPT,
    assert_sampled_logprobs_are_teacher_forced,
    logits_at,
    perturb,
    with_lora,
)
from tests.test_loop import base, make_cfg  # noqa: F401  (base is a fixture)


def with_head(cfg: OnlineRunConfig) -> OnlineRunConfig:
    data = with_lora(cfg).model_dump()
    data["conditioning"]["lora_output_layer"] = True
    return OnlineRunConfig.model_validate(data)


def test_the_output_layer_needs_an_adapter():
    with pytest.raises(ValidationError, match="lora_output_layer needs reward_lora_rank"):
        ConditioningConfig(lora_output_layer=True)
    assert ConditioningConfig(reward_lora_rank=2, lora_output_layer=True).lora_coverage == (
        None,
        True,
    )


def test_the_output_layer_is_adapted_for_the_best_commands_rows_only(tmp_path, base):  # noqa: F811
    policy = RewardConditionedPolicy.fresh(with_head(make_cfg(tmp_path, base)), base).eval()
    head = policy.model.get_output_embeddings()
    layers = adapted_layers(policy.model, output_layer=True)
    assert [m for _, m, _, _ in layers].count(head) == 1
    assert len(layers) == len(adapted_layers(policy.model)) + 1
    assert sorted(n for n, *_ in layers) == policy.conditioner.lora.names
    # with lora_layers, the output layer besides the picked ones
    picked = adapted_layers(policy.model, ["mlp.c_fc"], output_layer=True)
    assert [m for _, m, _, _ in picked][-1] is head and len(picked) == 1 + len(
        adapted_layers(policy.model, ["mlp.c_fc"])
    )
    rewards = [0.5, 2.0]
    untrained = logits_at(policy, rewards)
    name = next(n for n, m, _, _ in layers if m is head)
    with torch.no_grad():  # only the output layer's factor: the body's output is unchanged
        policy.conditioner.lora.b[name.replace(".", "__")].normal_(0.0, 0.5)
    moved = logits_at(policy, rewards)
    torch.testing.assert_close(moved[0], untrained[0])
    assert not torch.allclose(moved[1], untrained[1], atol=1e-3)


def test_lora_layers_that_match_nothing_are_refused_with_the_output_layer(tmp_path, base):  # noqa: F811
    data = with_head(make_cfg(tmp_path, base)).model_dump()
    data["conditioning"]["lora_layers"] = ["mlp.no_such_layer"]
    with pytest.raises(ValueError, match="matches no linear layer"):
        RewardConditionedPolicy.fresh(OnlineRunConfig.model_validate(data), base)


def test_labelled_logits_give_each_position_its_rows_gate(tmp_path, base):  # noqa: F811
    """The output layer on the labelled positions alone gives the full forward's logits there
    for a batch mixing the best command's rows with reward targets' (gates 1 and 0); without the
    rows' map the gate cannot be applied: the hook says so."""
    policy = RewardConditionedPolicy.fresh(with_head(make_cfg(tmp_path, base)), base).eval()
    perturb(policy)
    rewards = [2.0, 0.0, 2.0, -0.5]
    completions = ["good fun", "so bad it hurt", "great", "fine I guess and more"]
    batch = policy.layout([PROMPT] * 4, rewards, completions)
    target = torch.tensor(rewards)
    where = labelled_positions(batch.labels)
    inputs = policy.model_inputs(batch, target)  # sets the rows' gates
    split = LabelledLogits(policy.model, split=True, lora=policy.conditioner.lora)
    full = LabelledLogits(policy.model, split=False)
    assert split.split and not full.split
    with torch.no_grad():
        expected = full(inputs, where)
        torch.testing.assert_close(split(inputs, where), expected)
        # the output layer given positions without their rows' map cannot apply a row's gate
        head = policy.model.get_output_embeddings()
        with pytest.raises(RuntimeError, match="gate holds 4 rows"):
            head(torch.zeros(int(where.sum()), head.in_features))
        # nor can the split's check while a gate is set: it keeps the full forward, same values
        unsplit = LabelledLogits(policy.model, split=True)
        assert not unsplit.split
        torch.testing.assert_close(unsplit(inputs, where), expected)


def test_the_best_commands_rows_train_the_output_layers_factors(tmp_path, base):  # noqa: F811
    policy = RewardConditionedPolicy.fresh(with_head(make_cfg(tmp_path, base)), base)
    trainer = ConditionedTrainer(policy, TrainingConfig(batch_size=4, lr=1e-2, warmup_steps=0))
    assert trainer.policy_logits.split  # the labelled positions only, the default
    head = policy.model.get_output_embeddings()
    name = next(n for n, m, _, _ in adapted_layers(policy.model, output_layer=True) if m is head)
    b = policy.conditioner.lora.b[name.replace(".", "__")]
    before = b.detach().clone()
    buffer_rows = [Sample(prompt=PROMPT, completion="fine", achieved_reward=0.5)] * 2
    trainer.step(buffer_rows)
    assert torch.equal(b, before)
    trainer.step([Sample(prompt=PROMPT, completion="great great", achieved_reward=2.0)] * 2)
    assert not torch.equal(b, before)


def test_generation_and_the_policys_files_keep_the_output_layers_update(tmp_path, base):  # noqa: F811
    cfg = with_head(make_cfg(tmp_path, base))
    policy = RewardConditionedPolicy.fresh(cfg, base).eval()
    perturb(policy)
    rollouts = policy.generate([PROMPT] * 2, [2.0, 0.0], max_new_tokens=6, seed=3)
    assert_sampled_logprobs_are_teacher_forced(policy, rollouts)
    expected = logits_at(policy, [0.0, 2.0])
    policy.save_pretrained(tmp_path / "p")
    loaded = RewardConditionedPolicy.from_pretrained(tmp_path / "p").eval()
    torch.testing.assert_close(logits_at(loaded, [0.0, 2.0]), expected)
    without = RewardConditionedPolicy.fresh(with_lora(make_cfg(tmp_path, base)), base)
    with pytest.raises(ValueError, match="LoRA"):
        without.conditioner.load_state(policy.conditioner.to_state())

"""The reward-scaled LoRA (``conditioning.reward_lora_rank``): its gate is the normalised
reward of each row, it trains on every row with the rest of the policy, and it travels with the
policy's state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from online_dt.config import ConditioningConfig, OnlineRunConfig, TrainingConfig
from online_dt.policy.gated_lora import adapted_layers, gate_values
from online_dt.policy.logprobs import base_model_inputs
from online_dt.policy.policy import RewardConditionedPolicy
from online_dt.samples import Sample
from online_dt.training.trainer import ConditionedTrainer
from tests.test_gated_lora import PROMPT, logits_at, perturb
from tests.test_loop import base, make_cfg, run_local  # noqa: F401  (base is a fixture)


def with_reward_lora(cfg: OnlineRunConfig, rank: int = 4, scale: float = 0.5) -> OnlineRunConfig:
    data = cfg.model_dump()
    data["conditioning"]["reward_lora_rank"] = rank
    data["conditioning"]["normalization"] = {"kind": "affine", "center": 0.0, "scale": scale}
    return OnlineRunConfig.model_validate(data)


def test_the_reward_lora_needs_scalar_mode_one_adapter_and_the_hf_sampler(tmp_path, base):  # noqa: F811
    with pytest.raises(ValidationError, match="reward_lora_rank needs mode: scalar"):
        ConditioningConfig(mode="token", reward_lora_rank=4)
    with pytest.raises(ValidationError, match="reward_lora_rank needs mode: scalar"):
        ConditioningConfig(
            reward_lora_rank=4,
            objectives=[{"name": "a", "low": -1, "high": 1}, {"name": "b", "low": 0, "high": 1}],
        )
    with pytest.raises(ValidationError, match="cannot both be set"):
        ConditioningConfig(best_command=True, best_command_lora_rank=4, reward_lora_rank=4)
    with pytest.raises(ValidationError, match="reward_lora_rank"):
        ConditioningConfig(reward_lora_rank=0)
    assert ConditioningConfig(reward_lora_rank=8).lora_rank == 8
    assert ConditioningConfig(reward_lora_rank=8).lora_option == "reward_lora_rank"
    assert ConditioningConfig().lora_rank is None and ConditioningConfig().lora_option is None
    data = with_reward_lora(make_cfg(tmp_path, base)).model_dump()
    data["sampler"]["backend"] = "vllm"
    with pytest.raises(ValidationError, match=r"reward_lora_rank needs sampler\.backend: hf"):
        OnlineRunConfig.model_validate(data)
    with pytest.raises(ValidationError, match="greater than 0"):
        TrainingConfig(reward_lora_lr_multiplier=0.0)


def test_the_gate_is_the_normalised_reward(tmp_path, base):  # noqa: F811
    cfg = with_reward_lora(make_cfg(tmp_path, base), scale=0.5)
    policy = RewardConditionedPolicy.fresh(cfg, base)
    rewards = torch.tensor([-0.5, 0.0, 1.0])
    gate = gate_values(cfg.conditioning, rewards, policy.conditioner.normalize)
    torch.testing.assert_close(gate, torch.tensor([-1.0, 0.0, 2.0]))
    batch = policy.layout([PROMPT] * 3, rewards.tolist(), ["good fun"] * 3)
    policy.embed(batch.input_ids, rewards)
    torch.testing.assert_close(policy.conditioner.lora.gate, torch.tensor([-1.0, 0.0, 2.0]))
    best = with_reward_lora(make_cfg(tmp_path, base)).conditioning.model_copy(
        update={"reward_lora_rank": None, "best_command": True, "best_command_lora_rank": 4}
    )
    flags = gate_values(best, torch.tensor([0.5, 2.0]), policy.conditioner.normalize)
    assert flags.tolist() == [False, True]  # the best command's adapter: on above reward_max


def test_each_rows_update_is_its_gate_times_the_adapters(tmp_path, base):  # noqa: F811
    cfg = with_reward_lora(make_cfg(tmp_path, base))
    policy = RewardConditionedPolicy.fresh(cfg, base).eval()
    assert len(policy.conditioner.lora.names) == len(adapted_layers(policy.model))
    untrained = logits_at(policy, [-0.5, 0.0, 1.0])
    perturb(policy)
    trained = logits_at(policy, [-0.5, 0.0, 1.0])
    torch.testing.assert_close(trained[1], untrained[1])  # the centre: gate 0, no update
    assert not torch.allclose(trained[0], untrained[0], atol=1e-3)
    assert not torch.allclose(trained[2], untrained[2], atol=1e-3)
    # the first adapted layer's output: x W + g (x A B), linear in the gate
    first = policy.model.transformer.h[0].attn.c_attn
    seen: list[torch.Tensor] = []
    handle = first.register_forward_hook(lambda _m, _i, out: seen.append(out.detach().clone()))
    inputs = base_model_inputs(policy.layout([PROMPT], [0.0], ["good fun"]))
    try:
        for g in (0.0, 1.0, -2.0):
            policy.conditioner.lora.set_gate(torch.tensor([g]))
            with torch.no_grad():
                policy.model(**inputs)
    finally:
        handle.remove()
        policy.conditioner.lora.clear_gate()
    update = seen[1] - seen[0]
    assert float(update.abs().max()) > 1e-3
    torch.testing.assert_close(seen[2] - seen[0], -2.0 * update, atol=1e-5, rtol=1e-4)


def test_every_row_trains_the_reward_lora_with_the_rest(tmp_path, base):  # noqa: F811
    cfg = with_reward_lora(make_cfg(tmp_path, base))
    policy = RewardConditionedPolicy.fresh(cfg, base)
    training = TrainingConfig(batch_size=4, lr=1e-2, warmup_steps=0, reward_lora_lr_multiplier=3)
    trainer = ConditionedTrainer(policy, training)
    lora_ids = {id(p) for p in policy.conditioner.lora.parameters()}
    groups = [g for g in trainer.optimizer.param_groups if {id(p) for p in g["params"]} == lora_ids]
    assert len(groups) == 1 and groups[0]["lr"] == pytest.approx(3e-2)
    factors_b = {f"conditioner.lora.{n}" for n, _ in policy.conditioner.lora.named_parameters()}
    factors_b = {n for n in factors_b if ".b." in n}

    def step(rewards):
        before = {n: p.detach().clone() for n, p in policy.named_parameters()}
        trainer.step([Sample(prompt=PROMPT, completion="fine", achieved_reward=r) for r in rewards])
        now = dict(policy.named_parameters())
        return {n for n, value in before.items() if not torch.equal(value, now[n])}

    changed = step([0.0, 0.0])  # gate 0: the adapter gets no gradient, the body does
    assert changed and not changed & factors_b
    changed = step([-0.5, 0.5])
    assert factors_b <= changed
    assert changed - factors_b  # the body and the head train in the same step
    assert policy.conditioner.lora.gate is None  # cleared after the step


def test_the_reward_lora_travels_with_the_policy_and_a_run(tmp_path, base):  # noqa: F811
    cfg = with_reward_lora(make_cfg(tmp_path, base))
    policy = RewardConditionedPolicy.fresh(cfg, base).eval()
    perturb(policy)
    expected = logits_at(policy, [-0.5, 1.0])
    policy.save_pretrained(tmp_path / "p")
    loaded = RewardConditionedPolicy.from_pretrained(tmp_path / "p").eval()
    assert loaded.conditioner.config.reward_lora_rank == 4
    torch.testing.assert_close(logits_at(loaded, [-0.5, 1.0]), expected)
    plain = RewardConditionedPolicy.fresh(make_cfg(tmp_path, base), base)
    with pytest.raises(ValueError, match="LoRA"):
        plain.conditioner.load_state(policy.conditioner.to_state())

    from online_dt.eval.run import run_eval
    from online_dt.eval.source import EvalError
    from online_dt.launch.rundir import CHECKPOINT_POLICY_DIR

    data = with_reward_lora(make_cfg(tmp_path / "run", base, iterations=2)).model_dump()
    data["reward_model"] = {  # the tiny model's text earns VADER 0, which gates the LoRA off
        "kind": "custom",
        "class_path": "tests.custom_reward_example:LengthReward",
        "kwargs": {"scale": 0.1},
    }
    metrics, plan = run_local(OnlineRunConfig.model_validate(data))
    assert any(m["achieved_mean"] != 0 for m in metrics)
    last = plan.run.checkpoint_path(len(metrics) - 1) / CHECKPOINT_POLICY_DIR
    lora = RewardConditionedPolicy.from_pretrained(last).conditioner.lora
    assert any(torch.count_nonzero(b) for b in lora.b.values())
    out = tmp_path / "eval"
    report = run_eval(plan.run.path, targets=[-0.5, 0.5], samples_per_target=4, out_dir=out)
    assert all(np.isfinite(r["kl_to_base"]) for r in report["rows"])
    with pytest.raises(EvalError, match=r"conditioning\.reward_lora_rank"):
        run_eval(plan.run.path, samples_per_target=4, out_dir=out, guidance_weight=1.0)

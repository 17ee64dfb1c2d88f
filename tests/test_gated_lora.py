"""The best command's LoRA (``conditioning.best_command_lora_rank``): it changes nothing until
trained, applies only to the rows that ask for the best command (in training and through every
decoding step), only those rows train it and they train nothing else, and it travels with the
policy's files and state."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from online_dt.config import ConditioningConfig, OnlineRunConfig, TrainingConfig
from online_dt.policy.gated_lora import GatedLoRA, adapted_layers
from online_dt.policy.logprobs import base_model_inputs
from online_dt.policy.policy import RewardConditionedPolicy
from online_dt.rollout.factory import make_sampler_backend_name, needs_hf_sampler
from online_dt.samples import Sample
from online_dt.training.trainer import ConditionedTrainer
from tests.test_best_command import with_best
from tests.test_loop import base, make_cfg, run_local  # noqa: F401  (base is a fixture)

PROMPT = "the film was"


def with_lora(cfg: OnlineRunConfig, rank: int = 4, **online) -> OnlineRunConfig:
    data = with_best(cfg, **online).model_dump()
    data["conditioning"]["best_command_lora_rank"] = rank
    return OnlineRunConfig.model_validate(data)


def logits_at(policy: RewardConditionedPolicy, rewards: list[float]) -> torch.Tensor:
    """``[B, T, V]`` logits of one prompt and completion under each reward."""
    n = len(rewards)
    batch = policy.layout([PROMPT] * n, rewards, ["good fun"] * n)
    with torch.no_grad():
        return policy(batch, torch.tensor(rewards)).logits


def perturb(policy: RewardConditionedPolicy) -> None:
    with torch.no_grad():
        for b in policy.conditioner.lora.b.values():
            b.normal_(0.0, 0.5)


def assert_sampled_logprobs_are_teacher_forced(policy: RewardConditionedPolicy, rollouts) -> None:
    """Each rollout's sampled log-probs equal the policy's teacher-forced ones at its target:
    the gate held through every decoding step."""
    for r in rollouts:
        batch = policy.layout_ids([PROMPT], [float(r.target)], [r.token_ids])
        with torch.no_grad():
            logits = policy(batch, torch.tensor([float(r.target)])).logits[0].float()
        labels = batch.labels[0]
        where = (labels[1:] != -100).nonzero().flatten()
        logp = logits[where].log_softmax(-1).gather(1, labels[1:][where][:, None]).flatten()
        torch.testing.assert_close(logp, torch.tensor(r.logprobs), atol=1e-4, rtol=1e-4)


def test_the_lora_needs_the_best_command_and_a_rank_vllm_takes(tmp_path, base):  # noqa: F811
    with pytest.raises(ValidationError, match="best_command_lora_rank needs best_command"):
        ConditioningConfig(best_command_lora_rank=4)
    with pytest.raises(ValidationError, match="best_command_lora_rank"):
        ConditioningConfig(best_command=True, best_command_lora_rank=0)
    data = with_lora(make_cfg(tmp_path, base)).model_dump()
    data["sampler"]["backend"] = "vllm"
    data["conditioning"]["best_command_lora_rank"] = 16  # vLLM's engine applies it
    assert OnlineRunConfig.model_validate(data).sampler.backend == "vllm"
    data["conditioning"]["best_command_lora_rank"] = 4  # not one of vLLM's ranks
    with pytest.raises(ValidationError, match=r"vLLM's engine takes LoRA ranks"):
        OnlineRunConfig.model_validate(data)
    auto = {**data, "sampler": {"backend": "auto"}}
    assert needs_hf_sampler(OnlineRunConfig.model_validate(auto))  # auto picks HF for it
    auto["conditioning"]["best_command_lora_rank"] = 16
    assert not needs_hf_sampler(OnlineRunConfig.model_validate(auto))
    assert make_sampler_backend_name("auto", "cpu", needs_hf=True) == "hf"
    assert make_sampler_backend_name("auto", "cuda", needs_hf=True) == "hf"  # not vLLM on a GPU
    with pytest.raises(ValueError, match="cannot run"):
        make_sampler_backend_name("vllm", needs_hf=True)


def test_the_lora_starts_at_zero_and_moves_only_the_best_commands_rows(tmp_path, base):  # noqa: F811
    cfg = with_lora(make_cfg(tmp_path, base))
    policy = RewardConditionedPolicy.fresh(cfg, base).eval()
    layers = adapted_layers(policy.model)
    assert len(layers) == len(policy.conditioner.lora.names) == 4 * len(policy.model.transformer.h)
    assert all(m is not policy.model.get_output_embeddings() for _, m, _, _ in layers)
    rewards = [-0.5, 1.0, 2.0, 7.0]
    untrained = logits_at(policy, rewards)
    torch.testing.assert_close(untrained[2], untrained[1])  # the reward_max slot, no update
    perturb(policy)
    trained = logits_at(policy, rewards)
    torch.testing.assert_close(trained[:2], untrained[:2])  # reward targets: unchanged
    assert not torch.allclose(trained[2], untrained[2], atol=1e-3)  # the best command moves
    torch.testing.assert_close(trained[3], trained[2])  # every value above reward_max
    torch.testing.assert_close(logits_at(policy, [2.0])[0], trained[2])  # alone or in a batch
    torch.testing.assert_close(logits_at(policy, [1.0])[0], untrained[1])
    # a deep copy of the model (the learner's frozen base model) keeps the hooks, not the LoRA
    base_copy = copy.deepcopy(policy.model)
    inputs = base_model_inputs(policy.layout([PROMPT], [2.0], ["good fun"]))
    lora = policy.conditioner.lora
    outputs = {}
    for gate in (False, True):
        lora.set_gate(torch.tensor([gate]))
        with torch.no_grad():
            outputs[gate] = (base_copy(**inputs).logits, policy.model(**inputs).logits)
    torch.testing.assert_close(outputs[True][0], outputs[False][0])
    torch.testing.assert_close(outputs[False][1], outputs[False][0])
    assert not torch.allclose(outputs[True][1], outputs[False][1], atol=1e-3)


def test_generation_keeps_the_gate_through_every_decoding_step(tmp_path, base):  # noqa: F811
    cfg = with_lora(make_cfg(tmp_path, base))
    policy = RewardConditionedPolicy.fresh(cfg, base).eval()
    perturb(policy)
    rollouts = policy.generate([PROMPT] * 4, [0.0, 2.0, 0.0, 2.0], max_new_tokens=6, seed=3)
    assert_sampled_logprobs_are_teacher_forced(policy, rollouts)
    with pytest.raises(ValueError, match="guided generation is not available"):
        policy.generate([PROMPT], [2.0], guidance_weight=1.0, guidance_reference=0.0)


def test_the_best_commands_rows_train_the_lora_and_nothing_else(tmp_path, base):  # noqa: F811
    cfg = with_lora(make_cfg(tmp_path, base))
    policy = RewardConditionedPolicy.fresh(cfg, base)
    trainer = ConditionedTrainer(policy, TrainingConfig(batch_size=4, lr=1e-2, warmup_steps=0))
    lora = dict(policy.conditioner.lora.named_parameters())
    rest = {n: p for n, p in policy.named_parameters() if not n.startswith("conditioner.lora.")}
    assert len(rest) + len(lora) == len(list(policy.parameters()))

    def snapshot():
        return {n: p.detach().clone() for n, p in policy.named_parameters()}

    def moved(before):
        now = dict(policy.named_parameters())
        return {n for n, value in before.items() if not torch.equal(value, now[n])}

    buffer_rows = [Sample(prompt=PROMPT, completion="fine", achieved_reward=r) for r in (-0.5, 0.5)]
    best_rows = [Sample(prompt=PROMPT, completion="great great", achieved_reward=2.0)] * 2
    before = snapshot()
    trainer.step(buffer_rows)
    changed = moved(before)
    assert changed and not changed & {f"conditioner.lora.{n}" for n in lora}
    before = snapshot()
    trainer.step(best_rows)
    changed = moved(before)
    factors_b = {f"conditioner.lora.{n}" for n in lora if n.startswith("b.")}
    assert factors_b and factors_b <= changed
    assert not changed & {n for n in rest}  # the body and the head stay where they were
    before = snapshot()
    trainer.step(buffer_rows + best_rows)  # both kinds in one step: each trains its own part
    changed = moved(before)
    assert changed & set(rest) and changed & {f"conditioner.lora.{n}" for n in lora}
    assert all(p.requires_grad for p in policy.parameters())


def test_the_hook_adds_each_rows_gate_times_the_low_rank_update():
    """``y = x W + g * (x A B)`` row by row, for mixed gates, every gate 1 (the best command's
    micro-batch) and a cleared gate, on a three-dimensional input as the model's layers get."""
    layer = torch.nn.Sequential(torch.nn.Linear(6, 5))
    lora = GatedLoRA({"0": (6, 5)}, 3, torch.Generator().manual_seed(0))
    lora.attach(layer)
    with torch.no_grad():
        lora.b["0"].normal_(0.0, 1.0)
    x = torch.randn(4, 2, 6)
    plain = layer(x).detach()  # no gate set yet: the layer alone
    update = (x @ lora.a["0"]) @ lora.b["0"]
    with torch.no_grad():
        for gate in ([0.0, 0.5, 1.0, -2.0], [1.0] * 4, [True, False, True, False]):
            lora.set_gate(torch.tensor(gate))
            want = plain + torch.tensor(gate, dtype=torch.float32).view(-1, 1, 1) * update
            torch.testing.assert_close(layer(x), want)
        lora.clear_gate()
        torch.testing.assert_close(layer(x), plain)


def test_a_fresh_and_a_loaded_lora_list_their_factors_in_one_order():
    """The optimizer's state follows the parameters' order: a resumed run's loaded LoRA must
    list them as the fresh one did (with 12 layers, model order and name order differ)."""
    shapes = {f"h.{i}.mlp.c_fc": (4, 6 + i) for i in (0, 1, 2, 10, 11)}
    fresh = GatedLoRA(shapes, 2, torch.Generator().manual_seed(0))
    loaded = GatedLoRA.from_state(fresh.state(), 2)
    order = [(n, tuple(p.shape)) for n, p in fresh.named_parameters()]
    assert order == [(n, tuple(p.shape)) for n, p in loaded.named_parameters()]
    assert fresh.names == sorted(shapes)


def test_the_kl_metric_leaves_the_best_commands_asks_out(tmp_path, base):  # noqa: F811
    from online_dt.training.learner import Learner

    learner = Learner(with_lora(make_cfg(tmp_path, base)), str(base), tmp_path / "run")
    perturb(learner.policy)
    targets = [0.0, 0.0, 2.0, 2.0]
    rollouts = learner.policy.generate([PROMPT] * 4, targets, max_new_tokens=6, seed=1)
    assert learner.kl_estimate(rollouts) == pytest.approx(learner.kl_estimate(rollouts[:2]))
    assert learner.kl_estimate(rollouts[2:]) is None


def test_the_lora_travels_with_the_policy(tmp_path, base):  # noqa: F811
    cfg = with_lora(make_cfg(tmp_path, base))
    policy = RewardConditionedPolicy.fresh(cfg, base).eval()
    perturb(policy)
    expected = logits_at(policy, [0.0, 2.0])
    policy.save_pretrained(tmp_path / "p")
    loaded = RewardConditionedPolicy.from_pretrained(tmp_path / "p").eval()
    torch.testing.assert_close(logits_at(loaded, [0.0, 2.0]), expected)
    fresh = RewardConditionedPolicy.fresh(cfg, base).eval()  # in place, as a sampler's reload
    fresh.conditioner.load_state(policy.conditioner.to_state())
    fresh.model.load_state_dict(policy.model.state_dict())
    torch.testing.assert_close(logits_at(fresh, [0.0, 2.0]), expected)
    plain = RewardConditionedPolicy.fresh(with_best(make_cfg(tmp_path, base)), base)
    with pytest.raises(ValueError, match="LoRA"):
        plain.conditioner.load_state(policy.conditioner.to_state())
    with pytest.raises(ValueError, match="LoRA"):
        fresh.conditioner.load_state(plain.conditioner.to_state())


def test_a_local_run_trains_the_lora_and_resumes_as_the_uninterrupted_one(tmp_path, base):  # noqa: F811
    from online_dt.launch.rundir import CHECKPOINT_POLICY_DIR

    full, plan = run_local(with_lora(make_cfg(tmp_path / "full", base)))
    last = plan.run.checkpoint_path(len(full) - 1) / CHECKPOINT_POLICY_DIR
    lora = RewardConditionedPolicy.from_pretrained(last).conditioner.lora
    assert any(torch.count_nonzero(b) for b in lora.b.values())
    from online_dt.eval.run import run_eval
    from online_dt.eval.source import EvalError

    out = tmp_path / "eval"
    report = run_eval(plan.run.path, targets=[0.0, 2.0], samples_per_target=4, out_dir=out)
    assert [r["target"] for r in report["rows"]] == [0.0, 2.0]
    assert all(np.isfinite(r["kl_to_base"]) for r in report["rows"])  # the base is LoRA-free
    with pytest.raises(EvalError, match="--guidance is not available"):
        run_eval(plan.run.path, samples_per_target=4, out_dir=out, guidance_weight=1.0)
    _first, plan = run_local(with_lora(make_cfg(tmp_path / "cut", base, iterations=2)))
    _rest, plan = run_local(None, resume=plan.run.path, overrides={"online": {"iterations": 4}})
    resumed = plan.run.read_metrics()
    assert [m["target"] for m in resumed] == pytest.approx([m["target"] for m in full])
    assert [m["best_achieved_mean"] for m in resumed] == pytest.approx(
        [m["best_achieved_mean"] for m in full]
    )

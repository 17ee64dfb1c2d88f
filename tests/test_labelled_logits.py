"""The output layer at the labelled positions only: the same logits, loss and gradients as the
full forward, and the full forward for a model whose logits are more than its output layer."""

from __future__ import annotations

import copy

import pytest
import torch

from online_dt.config import ConditioningConfig, TrainingConfig
from online_dt.policy.labelled_logits import (
    LabelledLogits,
    labelled_positions,
    labelled_targets,
    split_output_layer,
)
from online_dt.policy.policy import RewardConditionedPolicy
from online_dt.samples import Sample
from online_dt.training.trainer import ConditionedTrainer, collate
from tests.tiny import build_tiny_model

RECORDS = [
    Sample("the movie was", " wonderful and great", 1.0),
    Sample("the food was", " terrible and slow", -1.0),
    Sample("honestly the game is", " fun", 0.5),
]


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model_dir(request, tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp(request.param), request.param)


def policy_for(base_dir, mode="scalar"):
    cfg = ConditioningConfig(mode=mode, bin_method="fixed")
    return RewardConditionedPolicy.from_base(base_dir, cfg, attn_implementation="eager")


def test_positions_and_targets():
    labels = torch.tensor([[-100, -100, 5, 6, -100], [-100, 7, -100, -100, -100]])
    assert labelled_positions(labels).tolist() == [
        [False, True, True, False, False],
        [True, False, False, False, False],
    ]
    assert labelled_targets(labels).tolist() == [5, 6, 7]


@pytest.mark.parametrize("mode", ["scalar", "token"])
def test_split_gives_the_full_forwards_logits_and_gradients(model_dir, mode):
    policy = policy_for(model_dir, mode).eval()  # no dropout: both ways see the same network
    batch, rewards = collate(policy, RECORDS)
    where = labelled_positions(batch.labels)
    split = LabelledLogits(policy.model)
    assert split.split
    fast = split(policy.model_inputs(batch, rewards), where)
    full = policy(batch, rewards).logits[where]
    assert fast.shape == full.shape == (int(where.sum()), policy.model.config.vocab_size)
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5)
    grads = []
    for logits in (fast, full):
        policy.zero_grad()
        torch.nn.functional.cross_entropy(logits, labelled_targets(batch.labels)).backward()
        grads.append([p.grad.clone() for p in policy.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 0
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def _gemma2(softcapping):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    cfg = Gemma2Config(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        final_logit_softcapping=softcapping,
        attn_implementation="eager",
    )
    return Gemma2ForCausalLM(cfg)


def test_logit_softcapping_keeps_the_full_forward():
    """Gemma 2 applies ``30 tanh(x / 30)`` after its output layer: the check must see it even
    where the random model's logits are small, and without it the split is taken."""
    capped = _gemma2(30.0)
    assert split_output_layer(capped) is None
    assert split_output_layer(_gemma2(None)) is not None
    labels = torch.tensor([[-100, -100, 5, 6], [-100, 7, 8, -100]])
    inputs = {"input_ids": torch.tensor([[1, 2, 5, 6], [3, 7, 8, 0]])}
    where = labelled_positions(labels)
    logits = LabelledLogits(capped)
    assert not logits.split
    with torch.no_grad():
        torch.testing.assert_close(logits(inputs, where), capped(**inputs).logits[where])
    assert capped.training  # the check's eval mode is undone


@pytest.mark.parametrize("coefs", [(0.0, 0.0), (0.5, 0.1)], ids=["plain", "kl+entropy"])
def test_trainer_steps_are_the_same_either_way(model_dir, coefs):
    from transformers import AutoModelForCausalLM

    kl_coef, entropy_coef = coefs
    base = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()
    start = policy_for(model_dir)
    runs = []
    for split in (True, False):
        policy = copy.deepcopy(start)
        cfg = TrainingConfig(lr=3e-3, batch_size=3, length_buckets=2, logits_at_labelled_only=split)
        trainer = ConditionedTrainer(
            policy, cfg, base_model=base, kl_coef=kl_coef, entropy_coef=entropy_coef
        )
        assert trainer.policy_logits.split is split
        assert trainer.base_logits is not None and trainer.base_logits.split is split
        torch.manual_seed(0)  # the same dropout masks both ways
        metrics = [trainer.step(RECORDS) for _ in range(3)]
        runs.append((metrics, [p.detach().clone() for p in policy.parameters()]))
    (fast, fast_params), (full, full_params) = runs
    for a, b in zip(fast, full, strict=True):
        assert a.tokens == b.tokens
        for key in ("loss", "kl", "entropy", "grad_norm"):
            assert getattr(a, key) == pytest.approx(getattr(b, key), rel=1e-4, abs=1e-6)
    if kl_coef:
        assert all(m.kl > 0 and m.entropy > 0 for m in fast)
    for a, b in zip(fast_params, full_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)  # Adam: lr 3e-3 a step


def test_first_step_loss_is_the_full_forwards(model_dir):
    """An independent reference: the loss of the whole [B, T, V] logits."""
    from online_dt.training.losses import next_token_loss

    policy = policy_for(model_dir)
    trainer = ConditionedTrainer(policy, TrainingConfig(batch_size=3, length_buckets=1))
    assert trainer.policy_logits.split and trainer.base_logits is None
    batch, rewards = collate(policy, RECORDS)
    policy.train()
    torch.manual_seed(0)
    with torch.no_grad():
        expected, count = next_token_loss(policy(batch, rewards).logits, batch.labels)
    torch.manual_seed(0)
    metrics = trainer.step(RECORDS)
    assert metrics.tokens == count
    assert metrics.loss == pytest.approx(float(expected), rel=1e-5)


def test_no_labelled_position(model_dir):
    policy = policy_for(model_dir)
    batch, rewards = collate(policy, RECORDS)
    where = torch.zeros_like(batch.labels, dtype=torch.bool)
    logits = LabelledLogits(policy.model)(policy.model_inputs(batch, rewards), where)
    assert logits.shape == (0, policy.model.config.vocab_size)
    logits.sum().backward()  # an empty graph still runs


def test_a_failing_body_keeps_the_full_forward(model_dir, monkeypatch):
    policy = policy_for(model_dir)
    policy.model.train()

    def refuse(*args, **kwargs):
        raise TypeError("this body takes no inputs_embeds")

    monkeypatch.setattr(policy.model.base_model, "forward", refuse)
    assert split_output_layer(policy.model) is None
    assert all(m.training for m in policy.model.modules())  # each mode restored


def test_base_logprobs_refuse_another_models_logits(model_dir):
    from online_dt.policy.logprobs import completion_base_logprobs

    policy = policy_for(model_dir)
    other = policy_for(model_dir)
    with pytest.raises(ValueError, match="base_model's"):
        completion_base_logprobs(policy, policy.model, [], logits=LabelledLogits(other.model))

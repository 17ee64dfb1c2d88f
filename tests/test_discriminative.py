"""``training.discriminative_coef``: GeDi's discriminative loss of the conditioned policy."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from online_dt.config import ConditioningConfig, TrainingConfig
from online_dt.policy.labelled_logits import labelled_positions, labelled_targets
from online_dt.policy.logprobs import completion_logprobs
from online_dt.policy.policy import RewardConditionedPolicy
from online_dt.samples import Sample
from online_dt.training.discriminative import contrast_rows, discriminative_loss
from online_dt.training.trainer import ConditionedTrainer, collate
from tests.test_training import without_dropout
from tests.tiny import build_tiny_model


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("gpt2"), "gpt2")


def policy_for(base_dir):
    cfg = ConditioningConfig(mode="scalar")
    policy = RewardConditionedPolicy.from_base(base_dir, cfg, attn_implementation="eager")
    return without_dropout(policy)


def test_contrast_rows_pairs_distant_rewards_up_to_the_fraction():
    rewards = torch.tensor([-0.9, -0.8, -0.1, 0.0, 0.1, 0.8, 0.9, 0.95])
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        rows, contrast = contrast_rows(rewards, 0.5, 0.25, g)
        assert len(rows) <= 2 and len(rows) == len(contrast)
        assert torch.all((rewards[rows] - contrast).abs() >= 0.5)
        assert set(contrast.tolist()) <= set(rewards.tolist()), "contrasts are other rows' labels"
    g = torch.Generator().manual_seed(0)
    rows, _ = contrast_rows(rewards, 0.5, 1.0, g)
    assert len(rows) > 2, "the whole batch may be contrasted"
    rows, contrast = contrast_rows(torch.full((6,), 0.3), 0.5, 1.0, g)
    assert len(rows) == 0 and len(contrast) == 0, "nothing to contrast"
    with pytest.raises(ValueError, match="one reward per row"):
        contrast_rows(torch.zeros(4, 2), 0.5, 1.0, g)


def test_the_loss_is_the_two_way_classifiers_nll_of_the_true_label(gpt2_dir):
    """Against an independent computation: each contrasted row's completion log-probability
    under its label and under its contrast (teacher forced by ``completion_logprobs``),
    ``softplus(contrast - label)`` summed and divided by the batch's labelled tokens."""
    policy = policy_for(gpt2_dir).eval()
    samples = [
        Sample("the movie was", " wonderful and great", 0.9),
        Sample("the food was", " terrible and slow", -0.9),
        Sample("honestly the game is", " fun", 0.5),
        Sample("i", " hated it", -0.6),
    ]
    batch, rewards = collate(policy, samples)
    where = labelled_positions(batch.labels)
    with torch.no_grad():
        trainer = ConditionedTrainer(policy, TrainingConfig())
        inputs = policy.model_inputs(batch, rewards)
        logits = trainer.policy_logits(inputs, where)
        token_logp = -F.cross_entropy(logits, labelled_targets(batch.labels), reduction="none")

        def score(part, labels, at):
            return trainer.policy_logits(policy.model_inputs(part, labels), at)

        got = discriminative_loss(
            score,
            batch,
            rewards,
            token_logp,
            where,
            min_gap=0.5,
            fraction=1.0,
            generator=torch.Generator().manual_seed(3),
        )
    rows, contrast = contrast_rows(rewards, 0.5, 1.0, torch.Generator().manual_seed(3))
    assert len(rows) >= 2
    ids = [policy.encode([s.completion])[0] + [policy.eos_token_id] for s in samples]
    picked = rows.tolist()
    prompts = [samples[i].prompt for i in picked]
    own = completion_logprobs(
        policy, prompts, [samples[i].achieved_reward for i in picked], [ids[i] for i in picked]
    )
    other = completion_logprobs(policy, prompts, contrast.tolist(), [ids[i] for i in picked])
    expected = sum(
        math.log1p(math.exp(sum(b) - sum(a))) for a, b in zip(own, other, strict=True)
    ) / int(where.sum())
    assert float(got) == pytest.approx(expected, rel=1e-4)


def test_no_contrast_gives_zero_in_the_graph(gpt2_dir):
    policy = policy_for(gpt2_dir)
    samples = [Sample("the movie was", " fine", 0.2), Sample("the food was", " ok", 0.3)]
    batch, rewards = collate(policy, samples)
    where = labelled_positions(batch.labels)
    trainer = ConditionedTrainer(policy, TrainingConfig())
    logits = trainer.policy_logits(policy.model_inputs(batch, rewards), where)
    token_logp = -F.cross_entropy(logits, labelled_targets(batch.labels), reduction="none")
    loss = discriminative_loss(
        lambda *a: pytest.fail("no contrast pass without a contrasted row"),
        batch,
        rewards,
        token_logp,
        where,
        min_gap=0.5,
        fraction=1.0,
        generator=torch.Generator(),
    )
    assert float(loss.detach()) == 0.0 and loss.requires_grad


def margin(policy, records):
    """Mean over the records of log p(y | own reward) - log p(y | the other record's)."""
    ids = [policy.encode([r.completion])[0] + [policy.eos_token_id] for r in records]
    prompts = [r.prompt for r in records]
    own = completion_logprobs(policy, prompts, [r.achieved_reward for r in records], ids)
    swapped = [records[1].achieved_reward, records[0].achieved_reward]
    other = completion_logprobs(policy, prompts, swapped, ids)
    return sum(sum(a) - sum(b) for a, b in zip(own, other, strict=True)) / len(records)


def test_it_makes_the_label_explain_the_completion_more(gpt2_dir):
    """On a toy task where one prompt's completion depends on the reward alone, the same
    steps with the discriminative loss separate the two labels' log-probabilities of each
    completion by more than the next-token loss alone does."""
    records = [Sample("the movie was", " great", 0.9), Sample("the movie was", " awful", -0.9)]
    margins = {}
    for coef in (0.0, 2.0):
        torch.manual_seed(0)
        policy = policy_for(gpt2_dir)
        cfg = TrainingConfig(lr=1e-3, batch_size=2, seed=0, discriminative_coef=coef)
        trainer = ConditionedTrainer(policy, cfg)
        for _ in range(8):
            trainer.step(records)
        margins[coef] = margin(policy.eval(), records)
    assert margins[2.0] > margins[0.0] + 0.5, margins


def test_the_contrast_stream_is_checkpointed(gpt2_dir):
    policy = policy_for(gpt2_dir)
    records = [Sample("the movie was", " great", 0.9), Sample("the movie was", " awful", -0.9)]
    trainer = ConditionedTrainer(policy, TrainingConfig(batch_size=2, discriminative_coef=1.0))
    trainer.step(records)
    state = trainer.state_dict()
    other = ConditionedTrainer(policy, TrainingConfig(batch_size=2, seed=7))
    other.load_state_dict(state)
    assert torch.equal(other._contrast_rng.get_state(), trainer._contrast_rng.get_state())
    del state["contrast_rng"]  # a checkpoint from before the option
    other.load_state_dict(state)


def test_a_config_with_several_rewards_is_refused():
    from pathlib import Path

    from online_dt.config import OnlineRunConfig, load_config

    path = Path(__file__).resolve().parents[1] / "configs/multi_objective.yaml"
    with pytest.raises(ValueError, match=r"training\.discriminative_coef needs one reward"):
        load_config(path, OnlineRunConfig, {"training": {"discriminative_coef": 1.0}})


def test_the_best_commands_rows_are_not_contrasted(gpt2_dir):
    """The best command's micro-batch trains its LoRA alone: its rows share one label, and the
    trainer never asks the discriminative loss about them."""
    cfg = ConditioningConfig(mode="scalar", best_command=True, best_command_lora_rank=2)
    policy = without_dropout(
        RewardConditionedPolicy.from_base(gpt2_dir, cfg, attn_implementation="eager")
    )
    trainer = ConditionedTrainer(policy, TrainingConfig(batch_size=4, discriminative_coef=1.0))
    calls = []
    original = trainer._discriminative

    def spy(batch, rewards, logits, where):
        calls.append(rewards.tolist())
        return original(batch, rewards, logits, where)

    trainer._discriminative = spy
    best = cfg.best_target
    trainer.step(
        [
            Sample("the movie was", " great", 0.9),
            Sample("the movie was", " awful", -0.9),
            Sample("the food was", " superb", best),
            Sample("the food was", " lovely", best),
        ]
    )
    assert len(calls) == 1 and sorted(calls[0]) == pytest.approx([-0.9, 0.9]), calls


def test_it_trains_beside_the_reward_scaled_lora(gpt2_dir):
    """The contrast pass sets the LoRA's per-row gate for its own rows; the next-token loss's
    backward pass still uses the gate of its forward pass (no in-place change between)."""
    cfg = ConditioningConfig(mode="scalar", reward_lora_rank=2)
    policy = without_dropout(
        RewardConditionedPolicy.from_base(gpt2_dir, cfg, attn_implementation="eager")
    )
    trainer = ConditionedTrainer(policy, TrainingConfig(batch_size=2, discriminative_coef=1.0))
    records = [Sample("the movie was", " great", 0.9), Sample("the movie was", " awful", -0.9)]
    first = trainer.step(records)
    assert math.isfinite(first.loss) and first.grad_norm > 0

"""Training step: loss masking, parameter updates, warm-up, and a tiny conditioning task."""

from __future__ import annotations

import pytest
import torch

from online_dt.config import ConditioningConfig, TrainingConfig
from online_dt.policy.layout import IGNORE_INDEX
from online_dt.policy.policy import RewardConditionedPolicy
from online_dt.samples import Sample
from online_dt.training.losses import mean_entropy, next_token_loss
from online_dt.training.trainer import ConditionedTrainer, collate
from tests.tiny import build_tiny_model


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("gpt2"), "gpt2")


def policy_for(base_dir, mode="scalar", **kw):
    cfg = ConditioningConfig(mode=mode, bin_method="fixed", **kw)
    return RewardConditionedPolicy.from_base(base_dir, cfg, attn_implementation="eager")


RECORDS = [
    Sample("the movie was", " wonderful and great", 1.0),
    Sample("the food was", " terrible and slow", -1.0),
    Sample("honestly the game is", " fun", 0.5),
]


def test_collate_masks_prompt_and_padding(gpt2_dir):
    policy = policy_for(gpt2_dir)
    batch, rewards = collate(policy, RECORDS)
    assert rewards.tolist() == [1.0, -1.0, 0.5]
    for i, r in enumerate(RECORDS):
        completion = policy.encode([r.completion])[0] + [policy.eos_token_id]
        labelled = batch.labels[i][batch.labels[i] != IGNORE_INDEX].tolist()
        assert labelled == completion
    batch_p, _ = collate(policy, RECORDS, include_prompt_loss=True)
    assert (batch_p.labels != IGNORE_INDEX).sum() > (batch.labels != IGNORE_INDEX).sum()


def test_completions_cut_at_the_length_limit_get_no_eos_label(gpt2_dir):
    """A completion whose sampled length reached ``sampling.max_new_tokens`` was cut by the
    sampler: it did not end there, so it gets no EOS label. One that ended before the limit
    (its EOS counted in ``completion_tokens``), or a text without its sampled length, gets EOS,
    and without a limit every completion does."""
    policy = policy_for(gpt2_dir)
    limit, eos = 4, policy.eos_token_id
    rows = [
        Sample("the movie was", " wonderful and great", 1.0, completion_tokens=limit),
        Sample("the food was", " terrible", -1.0, completion_tokens=2),
        Sample("honestly the game is", " fun", 0.5),
    ]
    batch, _ = collate(policy, rows, max_new_tokens=limit)
    for i, r in enumerate(rows):
        labelled = batch.labels[i][batch.labels[i] != IGNORE_INDEX].tolist()
        ids = policy.encode([r.completion])[0]
        assert labelled == (ids if i == 0 else [*ids, eos]), i
    unlimited, _ = collate(policy, rows)
    assert int((unlimited.labels == eos).sum()) == 3
    trainer = ConditionedTrainer(
        policy, TrainingConfig(batch_size=3, length_buckets=1), max_new_tokens=limit
    )
    plain = ConditionedTrainer(policy_for(gpt2_dir), TrainingConfig(batch_size=3, length_buckets=1))
    assert trainer.step(rows).tokens == plain.step(rows).tokens - 1


def test_next_token_loss_matches_reference():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    x = IGNORE_INDEX
    labels = torch.tensor([[x, x, 3, 4, 5], [x, 1, 2, x, x]])
    loss, count = next_token_loss(logits, labels)
    assert count == 5
    picks = [(0, 1, 3), (0, 2, 4), (0, 3, 5), (1, 0, 1), (1, 1, 2)]
    manual = -sum(logits[b, t].log_softmax(-1)[y] for b, t, y in picks) / 5
    assert loss.item() == pytest.approx(manual.item(), rel=1e-5)


@pytest.mark.parametrize("mode", ["scalar", "token"])
def test_step_updates_every_parameter_and_lowers_loss(gpt2_dir, mode):
    policy = policy_for(gpt2_dir, mode)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    trainer = ConditionedTrainer(policy, TrainingConfig(lr=3e-3, batch_size=3, seed=0))
    first = trainer.step(RECORDS)
    for _ in range(20):
        last = trainer.step(RECORDS)
    assert torch.isfinite(torch.tensor(first.loss)) and first.tokens > 0
    assert last.loss < first.loss * 0.7
    unchanged = [n for n, p in policy.named_parameters() if torch.equal(p, before[n])]
    # every parameter moves except embedding rows of tokens that never appear: check tensors
    assert unchanged == []
    if mode == "scalar":
        assert not torch.equal(policy.conditioner.head.weight, before["conditioner.head.weight"])


def test_warmup_ramps_learning_rate(gpt2_dir):
    policy = policy_for(gpt2_dir)
    trainer = ConditionedTrainer(policy, TrainingConfig(lr=1e-3, warmup_steps=4, batch_size=3))
    lrs = [trainer.step(RECORDS).lr for _ in range(6)]
    assert lrs[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert lrs[4:] == pytest.approx([1e-3, 1e-3])
    head_lr = trainer.optimizer.param_groups[1]["lr"]
    assert head_lr == pytest.approx(1e-3 * TrainingConfig().head_lr_multiplier)


def test_trainer_state_round_trip(gpt2_dir):
    policy = policy_for(gpt2_dir)
    trainer = ConditionedTrainer(policy, TrainingConfig(batch_size=2, seed=5))
    trainer.fit(RECORDS, 3, progress=False)
    state = trainer.state_dict()
    other = ConditionedTrainer(policy, TrainingConfig(batch_size=2, seed=99))
    other.load_state_dict(state)
    assert other.step_count == 3
    assert next(other.batches(RECORDS)) == next(trainer.batches(RECORDS))


def test_fit_rejects_no_samples(gpt2_dir):
    trainer = ConditionedTrainer(policy_for(gpt2_dir), TrainingConfig())
    with pytest.raises(ValueError, match="no training samples"):
        trainer.fit([], 1, progress=False)


@pytest.mark.parametrize("mode", ["scalar", "token"])
def test_conditioning_is_learned_on_a_toy_task(gpt2_dir, mode):
    """The same prompt must be completed differently depending on the reward alone."""
    policy = policy_for(gpt2_dir, mode, num_reward_tokens=2)
    records = [Sample("the movie was", " great", 1.0), Sample("the movie was", " awful", -1.0)]
    trainer = ConditionedTrainer(policy, TrainingConfig(lr=3e-3, batch_size=2, seed=0))
    trainer.fit(records * 2, 60, progress=False)
    out = policy.generate(["the movie was"] * 2, [1.0, -1.0], max_new_tokens=4, temperature=0.0)
    assert [g.completion for g in out] == [" great", " awful"]


def test_kl_penalty_is_zero_at_start_and_pulls_towards_base(gpt2_dir):
    from transformers import AutoModelForCausalLM

    from online_dt.policy.logprobs import base_model_logits
    from online_dt.training.kl import kl_to_base

    policy = policy_for(gpt2_dir)
    base = AutoModelForCausalLM.from_pretrained(gpt2_dir, attn_implementation="eager").eval()
    batch, rewards = collate(policy, RECORDS)
    with torch.no_grad():
        logits = policy(batch, rewards).logits
    base_logits = base_model_logits(base, batch)
    # untrained, the policy is the base model plus one reward slot in front: a small KL; a
    # scrambled base distribution gives a larger one
    start = kl_to_base(logits, base_logits, batch.labels).item()
    assert 0 <= start < 0.5
    assert kl_to_base(logits, base_logits.roll(1, dims=-1), batch.labels).item() > start

    def final_kl(coef):
        p = policy_for(gpt2_dir)
        trainer = ConditionedTrainer(
            p, TrainingConfig(lr=3e-3, batch_size=3), base_model=base, kl_coef=coef
        )
        for _ in range(15):
            metrics = trainer.step(RECORDS)
        with torch.no_grad():
            return kl_to_base(p(batch, rewards).logits, base_logits, batch.labels).item(), metrics

    free, _ = final_kl(0.0)
    held, metrics = final_kl(5.0)
    assert metrics.kl > 0
    assert held < free
    with pytest.raises(ValueError, match="base model"):
        ConditionedTrainer(policy, TrainingConfig(), kl_coef=1.0)


def test_mean_entropy_counts_labelled_positions_only():
    """Uniform logits have entropy log V; a one-hot position has 0; unlabelled ones don't count."""
    vocab = 8
    logits = torch.zeros(1, 4, vocab)
    logits[0, 2, 3] = 1e4  # position 2 is certain: entropy 0
    labels = torch.tensor([[IGNORE_INDEX, 5, 6, IGNORE_INDEX]])  # positions 0 and 1 predict
    assert mean_entropy(logits, labels).item() == pytest.approx(torch.log(torch.tensor(8.0)).item())
    labels = torch.tensor([[IGNORE_INDEX, 5, 6, 7]])  # positions 0, 1 (uniform) and 2 (certain)
    expected = 2 * torch.log(torch.tensor(8.0)).item() / 3
    assert mean_entropy(logits, labels).item() == pytest.approx(expected, rel=1e-5)
    none = torch.full((1, 4), IGNORE_INDEX)
    assert mean_entropy(logits, none).item() == 0.0


def test_entropy_bonus_keeps_the_policy_broader(gpt2_dir):
    """Training on a few fixed completions sharpens the policy; the entropy bonus (Quark's)
    keeps its per-token entropy higher, and the step reports it."""
    batch, rewards = collate(policy_for(gpt2_dir), RECORDS)

    def final_entropy(coef):
        torch.manual_seed(0)
        p = policy_for(gpt2_dir)
        trainer = ConditionedTrainer(
            p, TrainingConfig(lr=3e-3, batch_size=3, seed=0), entropy_coef=coef
        )
        for _ in range(15):
            metrics = trainer.step(RECORDS)
        with torch.no_grad():
            return mean_entropy(p(batch, rewards).logits, batch.labels).item(), metrics

    sharp, plain = final_entropy(0.0)
    broad, bonus = final_entropy(1.0)
    assert plain.entropy == 0.0
    assert bonus.entropy > 0
    assert broad > sharp + 0.1
    with pytest.raises(ValueError, match="entropy_coef"):
        ConditionedTrainer(policy_for(gpt2_dir), TrainingConfig(), entropy_coef=-0.1)


LENGTHS = [
    Sample("the movie was", " wonderful and great and fun to watch twice", 1.0),
    Sample("i", " bad", -1.0),
    Sample("honestly the game is", " fun", 0.5),
    Sample("this hotel is awful, dirty", " and the staff were rude to us all week", -0.8),
    Sample("the food", " was fine", 0.1),
]


def without_dropout(policy):
    """The tiny model has dropout 0.1 (the embedded model none): micro-batches would draw
    other dropout masks than the one batch, so it is switched off to compare gradients."""
    for module in policy.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return policy


@pytest.mark.parametrize("kl_coef", [0.0, 0.5])
def test_length_buckets_give_the_one_batch_gradient_with_less_padding(gpt2_dir, kl_coef):
    """``training.length_buckets``: micro-batches sorted by length, each padded to its own
    longest row, accumulate the gradient of the one padded batch (its loss, KL term and
    token count too). Gradients are compared, not the weights after the step: Adam's first
    step is about ``lr * sign(g)``, which turns float noise in near-zero entries into steps."""
    from transformers import AutoModelForCausalLM

    base = None
    if kl_coef:
        base = AutoModelForCausalLM.from_pretrained(gpt2_dir, attn_implementation="eager").eval()
    after, metrics = {}, {}
    for buckets in (1, 2, 3):
        policy = without_dropout(policy_for(gpt2_dir))
        cfg = TrainingConfig(lr=1e-3, batch_size=5, length_buckets=buckets, grad_clip=None)
        trainer = ConditionedTrainer(policy, cfg, base_model=base, kl_coef=kl_coef)
        parts = trainer.length_buckets(LENGTHS)
        assert sorted(id(s) for part in parts for s in part) == sorted(map(id, LENGTHS))
        assert len(parts) == buckets
        if buckets > 1:  # shortest first; the padded columns shrink
            widths = [collate(policy, part)[0].input_ids.shape[1] for part in parts]
            assert widths == sorted(widths) and sum(widths) < buckets * widths[-1]
        metrics[buckets] = trainer.step(LENGTHS)
        after[buckets] = {n: p.grad.clone() for n, p in policy.named_parameters()}
    assert metrics[1].tokens == metrics[2].tokens == metrics[3].tokens
    for k in (2, 3):
        assert metrics[k].loss == pytest.approx(metrics[1].loss, rel=1e-5)
        assert metrics[k].kl == pytest.approx(metrics[1].kl, rel=1e-4, abs=1e-7)
        assert metrics[k].grad_norm == pytest.approx(metrics[1].grad_norm, rel=1e-4)
        for name, value in after[1].items():
            assert torch.allclose(after[k][name], value, rtol=1e-4, atol=1e-7), name
    # the test can tell: part of the batch alone has another gradient
    policy = without_dropout(policy_for(gpt2_dir))
    trainer = ConditionedTrainer(policy, TrainingConfig(lr=1e-3, batch_size=2, grad_clip=None))
    trainer.step(LENGTHS[:2])
    part = {n: p.grad for n, p in policy.named_parameters()}
    assert any(not torch.allclose(part[n], after[1][n], rtol=1e-4, atol=1e-7) for n in part)


def test_learner_threads_sets_torchs_threads(gpt2_dir, tmp_path):
    """``resources.learner_threads`` is applied when the learner starts; unset, torch's own
    setting is left alone."""
    from online_dt.config import OnlineRunConfig
    from online_dt.launch.rundir import RunDir
    from online_dt.training.learner import Learner

    def cfg(threads):
        return OnlineRunConfig.model_validate(
            {
                "model": {"name_or_path": str(gpt2_dir), "device": "cpu"},
                "sampler": {"backend": "hf"},
                "resources": {"learner_threads": threads},
                "online": {"run_dir": str(tmp_path / "run"), "kl_samples": 0},
            }
        )

    RunDir(tmp_path / "run").path.mkdir(parents=True)
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    try:
        Learner(cfg(None), str(gpt2_dir), tmp_path / "run")
        assert torch.get_num_threads() == before
        Learner(cfg(wanted), str(gpt2_dir), tmp_path / "run")
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)


def test_kl_per_completion_keeps_the_rollouts_order_when_it_sorts_them(gpt2_dir):
    """The k1 terms come back in the rollouts' order although the forward passes take them
    sorted by length: batched (sorted, padded) equals one rollout per forward pass."""
    from online_dt.training.kl import kl_per_completion

    policy = policy_for(gpt2_dir).eval()
    base = policy_for(gpt2_dir).model.eval()
    prompts = ["a much longer prompt than the others here", "hi", "the movie was", "ok"] * 3
    rollouts = policy.generate(prompts, [0.5] * len(prompts), max_new_tokens=9, seed=3)
    assert len({len(r.prompt) for r in rollouts}) > 1  # lengths differ: sorting reorders
    batched = kl_per_completion(policy, base, rollouts, batch_size=5)
    single = [kl_per_completion(policy, base, [r], batch_size=1)[0] for r in rollouts]
    assert batched == pytest.approx(single, abs=1e-4)


def test_trainer_uses_fused_adamw_with_the_default_update(gpt2_dir):
    """The fused kernel (transformers' default optimizer) makes the same updates as torch's
    default AdamW, up to float rounding, over several steps with weight decay."""
    steps = 3
    results = []
    for fused in (True, False):
        torch.manual_seed(0)
        policy = policy_for(gpt2_dir)
        cfg = TrainingConfig(lr=1e-2, weight_decay=0.1, warmup_steps=0)
        trainer = ConditionedTrainer(policy, cfg)
        assert trainer.optimizer.defaults["fused"] is True  # on CPU, through adamw()
        if not fused:  # the same optimizer with torch's default implementation
            groups = [
                {"params": g["params"], "lr": g["lr"]} for g in trainer.optimizer.param_groups
            ]
            trainer.optimizer = torch.optim.AdamW(
                groups, betas=cfg.betas, weight_decay=cfg.weight_decay
            )
            assert not any(g["fused"] for g in trainer.optimizer.param_groups)
            trainer.scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lambda s: 1.0)
        for _ in range(steps):
            trainer.step(RECORDS)
        results.append({n: p.detach().clone() for n, p in policy.named_parameters()})
    fused_params, default_params = results
    torch.manual_seed(0)
    initial = {n: p.detach() for n, p in policy_for(gpt2_dir).named_parameters()}
    assert fused_params.keys() == default_params.keys() == initial.keys()
    for name, value in fused_params.items():
        # Adam's steps are about lr in size wherever a gradient is not ~0, so rounding in
        # g / sqrt(v) moves a parameter by a small fraction of lr, not of its value
        torch.testing.assert_close(value, default_params[name], rtol=0, atol=1e-2 * cfg.lr)
        step = (default_params[name] - initial[name]).abs().mean()
        assert step > 1e-2 * cfg.lr, name  # every parameter moved, so the check has teeth

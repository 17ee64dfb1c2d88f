"""The offline warm start over more prompts than one iteration's, at a learning rate of its own
(``online.warm_start_prompts``, ``online.warm_start_lr``; docs/method.md, round 23)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from online_dt.config import OnlineConfig, TrainingConfig
from online_dt.policy.policy import RewardConditionedPolicy
from online_dt.replay.export import export_dataset
from online_dt.samples import Sample
from online_dt.training.trainer import ConditionedTrainer
from tests.test_loop import PROMPTS, base, make_cfg, run_local  # noqa: F401  (base is a fixture)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"warm_start_prompts": 8}, "online.warm_start_prompts is set but"),
        ({"warm_start_lr": 1e-3}, "online.warm_start_lr is set but"),
        ({"warm_start_samples_per_prompt": 2, "warm_start_lr": 1e-3}, "warm_start_steps is 0"),
        ({"warm_start_samples_per_prompt": 2, "warm_start_prompts": 0}, "warm_start_prompts"),
        ({"warm_start_samples_per_prompt": 2, "warm_start_steps": 1, "warm_start_lr": 0}, "lr"),
    ],
)
def test_the_options_without_a_warm_start_are_refused(fields, message):
    with pytest.raises(ValidationError, match=message):
        OnlineConfig(**fields)


def test_warm_start_calls():
    assert OnlineConfig().warm_start_calls == 0
    assert OnlineConfig(warm_start_samples_per_prompt=3).warm_start_calls == 64 * 3
    on = OnlineConfig(warm_start_samples_per_prompt=3, warm_start_prompts=500)
    assert on.warm_start_calls == 500 * 3


def rates(trainer: ConditionedTrainer) -> list[float]:
    return [group["lr"] for group in trainer.optimizer.param_groups]


def test_learning_rate_scales_every_group_under_the_warmup_and_restores(tmp_path, base):  # noqa: F811
    policy = RewardConditionedPolicy.fresh(make_cfg(tmp_path, base), base)
    cfg = TrainingConfig(batch_size=2, lr=1e-3, warmup_steps=4, head_lr_multiplier=10)
    trainer = ConditionedTrainer(policy, cfg)
    rows = [Sample(prompt=PROMPTS[0], completion=" fine", achieved_reward=r) for r in (0.1, 0.9)]
    assert rates(trainer) == pytest.approx([1e-3 / 4, 1e-2 / 4])  # warmup step 0 of 4
    with trainer.learning_rate(3e-3):
        assert rates(trainer) == pytest.approx([3e-3 / 4, 3e-2 / 4])
        seen = [trainer.step(rows).lr for _ in range(5)]
        assert rates(trainer) == pytest.approx([3e-3, 3e-2])  # warmed up
    assert seen == pytest.approx([3e-3 * k / 4 for k in (1, 2, 3, 4, 4)])
    assert rates(trainer) == pytest.approx([1e-3, 1e-2])
    assert trainer.step(rows).lr == pytest.approx(1e-3)
    with trainer.learning_rate(None):
        assert rates(trainer) == pytest.approx([1e-3, 1e-2])
    with pytest.raises(ValueError, match="must be positive"), trainer.learning_rate(0.0):
        pass
    with pytest.raises(RuntimeError), trainer.learning_rate(5e-3):
        raise RuntimeError("a failed step")
    assert rates(trainer) == pytest.approx([1e-3, 1e-2])  # restored on the way out


def test_the_warm_start_samples_its_prompts_and_trains_at_its_rate(tmp_path, base, monkeypatch):  # noqa: F811
    """Six prompts (the four cycled once and two again), two samples each, and the warm start's
    steps at ``warm_start_lr`` while the iterations train at ``training.lr``."""
    from online_dt.training import learner as learner_module

    seen: list[tuple[int, float | None]] = []
    train = learner_module.Learner.train

    def recording(self, steps, lr=None):
        seen.append((steps, lr))
        before = self.trainer.optimizer.param_groups[0]["lr"]
        out = train(self, steps, lr)
        assert self.trainer.optimizer.param_groups[0]["lr"] == pytest.approx(before)
        return out

    monkeypatch.setattr(learner_module.Learner, "train", recording)
    cfg = make_cfg(
        tmp_path,
        base,
        iterations=1,
        warm_start_samples_per_prompt=2,
        warm_start_prompts=6,
        warm_start_steps=3,
        warm_start_lr=5e-3,
    )
    _, plan = run_local(cfg)
    data = export_dataset(plan.run.buffer_dir)
    warm = [p for p, i in zip(data["prompt"], data["iteration"], strict=True) if i == -1]
    assert sorted(warm) == sorted((PROMPTS + PROMPTS[:2]) * 2)
    assert seen == [(3, 5e-3), (2, None)]


def test_a_rate_of_its_own_moves_the_policy_further(tmp_path, base):  # noqa: F811
    """The same steps at a larger rate change the weights more (the option is not ignored)."""
    moved = []
    for lr in (None, 1e-2):
        torch.manual_seed(0)
        policy = RewardConditionedPolicy.fresh(make_cfg(tmp_path, base), base)
        start = [p.detach().clone() for p in policy.model.parameters()]
        trainer = ConditionedTrainer(policy, TrainingConfig(batch_size=2, lr=1e-4, warmup_steps=0))
        rows = [Sample(prompt=PROMPTS[1], completion=" good", achieved_reward=0.5)] * 2
        with trainer.learning_rate(lr):
            for _ in range(3):
                trainer.step(rows)
        now = [p.detach() for p in policy.model.parameters()]
        moved.append(sum(float((p - q).abs().sum()) for p, q in zip(now, start, strict=True)))
    assert moved[1] > 5 * moved[0]


def test_the_warm_start_trains_in_calls_to_the_weights_of_one_call(tmp_path, base, monkeypatch):  # noqa: F811
    """Five warm-start steps in calls of two give the weights of one call of five (same batches,
    rates and warmup), and the warm start's record is written and shown in the summary."""
    from safetensors.torch import load_file

    from online_dt.loop import loop as loop_module
    from online_dt.loop.console import run_summary
    from online_dt.training import learner as learner_module

    calls: list[int] = []
    train = learner_module.Learner.train

    def recording(self, steps, lr=None):
        calls.append(steps)
        return train(self, steps, lr)

    monkeypatch.setattr(learner_module.Learner, "train", recording)
    weights, records = [], []
    for per_call in (2, 100):
        monkeypatch.setattr(loop_module, "WARM_START_STEPS_PER_CALL", per_call)
        cfg = make_cfg(
            tmp_path / str(per_call),
            base,
            iterations=1,
            warm_start_samples_per_prompt=2,
            warm_start_steps=5,
            warm_start_lr=5e-3,
        )
        _, plan = run_local(cfg)
        policy = plan.run.latest_checkpoint() / "policy"
        weights.append(
            {
                **load_file(policy / "model.safetensors"),
                **load_file(policy / "reward_conditioning" / "head.safetensors"),
            }
        )
        records.append(plan.run.read_warm_start())
    assert calls == [2, 2, 1, 2, 5, 2]  # the warm start's calls, then the iteration's 2 steps
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name
    first, second = records
    assert first is not None and second is not None
    assert (first["samples"], first["prompts"], first["steps"]) == (8, 4, 5)
    assert first["loss"] == pytest.approx(second["loss"], rel=1e-6)
    assert 0 < first["training_s"] <= first["wall_s"]
    assert "warm start       " in run_summary(
        plan.run.read_metrics(), plan.run.path, None, None, warm_start=second
    )


def test_a_run_stopped_after_the_warm_start_resumes_without_repeating_it(
    tmp_path,
    base,  # noqa: F811
    monkeypatch,
):
    """The warm start checkpoints (after iteration -1): a run stopped in its first iteration
    resumes after the warm start, which it does not run again, to the targets and buffer of an
    uninterrupted run."""
    from online_dt.training import learner as learner_module

    warm = {"warm_start_samples_per_prompt": 2, "warm_start_steps": 3, "warm_start_lr": 5e-3}
    full, _ = run_local(make_cfg(tmp_path / "full", base, iterations=2, **warm))

    calls: list[int] = []
    append, train = learner_module.Learner.append, learner_module.Learner.train

    def failing(self, rollouts, rewards, iteration, *args, **kwargs):
        if iteration == 0:
            raise RuntimeError("stopped in iteration 0")
        return append(self, rollouts, rewards, iteration, *args, **kwargs)

    def recording(self, steps, lr=None):
        calls.append(steps)
        return train(self, steps, lr)

    monkeypatch.setattr(learner_module.Learner, "train", recording)
    monkeypatch.setattr(learner_module.Learner, "append", failing)
    with pytest.raises(RuntimeError, match="stopped in iteration 0"):
        run_local(make_cfg(tmp_path / "cut", base, iterations=2, **warm))
    cut = tmp_path / "cut" / "run"
    assert (cut / "checkpoints" / "iter--00001").is_dir() and not (cut / "metrics.jsonl").exists()
    assert calls == [3]

    monkeypatch.setattr(learner_module.Learner, "append", append)
    _, plan = run_local(None, resume=cut)
    assert calls == [3, 2, 2]  # the two iterations only
    resumed = plan.run.read_metrics()
    assert [m["iteration"] for m in resumed] == [0, 1]
    assert [m["target"] for m in resumed] == pytest.approx([m["target"] for m in full])
    data = export_dataset(plan.run.buffer_dir)
    assert data["iteration"].count(-1) == 8  # the warm start's samples, once
    assert len(data) == full[-1]["buffer_size"] == resumed[-1]["buffer_size"]

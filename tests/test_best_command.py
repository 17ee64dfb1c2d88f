"""The best command (``conditioning.best_command``): its head input, its asks, its training rows,
its metrics, and the checks of its config and of the rewards it needs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from online_dt.config import ConditioningConfig, OnlineRunConfig, ScheduleConfig
from online_dt.loop.records import rollout_metrics
from online_dt.loop.schedule import sample_targets
from online_dt.loop.workers import CheckedRewardModel
from online_dt.policy.layout import IGNORE_INDEX
from online_dt.policy.policy import RewardConditionedPolicy
from online_dt.rewards import RewardModelError
from online_dt.samples import Rollout, Sample
from online_dt.training.best_rows import BestRows, best_of_prompts
from online_dt.training.trainer import ConditionedTrainer
from tests.test_loop import base, make_cfg, run_local  # noqa: F401  (base is a fixture)


def with_best(cfg: OnlineRunConfig, **online) -> OnlineRunConfig:
    data = cfg.model_dump()
    data["conditioning"]["best_command"] = True
    data["schedule"]["best_fraction"] = 0.5
    data["schedule"]["max_target"] = 1.0
    data["online"].update(online)
    return OnlineRunConfig.model_validate(data)


def sample(prompt: str, achieved: float, target: float, **kw) -> Sample:
    return Sample(
        prompt=prompt, completion="c", achieved_reward=achieved, target_reward=target, **kw
    )


def record_steps(monkeypatch) -> list[list[Sample]]:
    """Every training step's rows, in order, from now on (``ConditionedTrainer.step`` still
    runs)."""
    batches: list[list[Sample]] = []
    step = ConditionedTrainer.step

    def spy(self, batch):
        batches.append(list(batch))
        return step(self, batch)

    monkeypatch.setattr(ConditionedTrainer, "step", spy)
    return batches


# -- config ----------------------------------------------------------------------------------


def test_best_command_needs_scalar_mode_and_one_reward():
    assert ConditioningConfig(best_command=True).head_inputs == 2
    assert ConditioningConfig(best_command=True, reward_max=0.5).best_target == 1.5
    with pytest.raises(ValidationError, match="best_command needs mode: scalar"):
        ConditioningConfig(best_command=True, mode="token")
    with pytest.raises(ValidationError, match="and one reward"):
        ConditioningConfig(best_command=True, objectives=[{"name": "a", "low": 0, "high": 1}])


def test_best_command_and_its_asks_come_together(tmp_path, base):  # noqa: F811
    cfg = make_cfg(tmp_path, base).model_dump()
    cfg["schedule"]["best_fraction"] = 0.25
    with pytest.raises(ValidationError, match=r"schedule.best_fraction: 0.25 asks for the best"):
        OnlineRunConfig.model_validate(cfg)
    cfg["schedule"]["best_fraction"] = 0.0
    cfg["conditioning"]["best_command"] = True
    with pytest.raises(ValidationError, match=r"needs schedule.best_fraction > 0 and online.best"):
        OnlineRunConfig.model_validate(cfg)
    with pytest.raises(ValidationError, match="best_fraction"):
        ScheduleConfig(best_fraction=1.0)  # the schedule's targets keep some prompts
    cfg["schedule"]["best_fraction"] = 0.5
    # a schedule target above reward_max would ask for the best command
    with pytest.raises(ValidationError, match=r"needs schedule.max_target <= conditioning"):
        OnlineRunConfig.model_validate(cfg)
    cfg["schedule"]["max_target"] = 1.0
    OnlineRunConfig.model_validate(cfg)
    cfg["schedule"]["start"] = 1.5  # clamped by max_target, except where the warm start asks
    OnlineRunConfig.model_validate(cfg)
    cfg["online"]["warm_start_samples_per_prompt"] = 1
    with pytest.raises(ValidationError, match=r"with a warm start needs schedule.start <="):
        OnlineRunConfig.model_validate(cfg)
    cfg["schedule"]["start"] = 0.0
    OnlineRunConfig.model_validate(cfg)
    for fraction in (0.1, 0.9):  # 4 prompts: 0 and 4 best asks
        cfg["schedule"]["best_fraction"] = fraction
        with pytest.raises(ValidationError, match="the best command needs 1 to 3 of them"):
            OnlineRunConfig.model_validate(cfg)


def test_the_offline_demo_refuses_the_best_command():
    from online_dt.config import OfflineRunConfig

    with pytest.raises(ValidationError, match="best_command is trained by the online loop"):
        OfflineRunConfig.model_validate({"conditioning": {"best_command": True}})


# -- the head --------------------------------------------------------------------------------


def test_the_best_command_is_one_more_head_input_that_starts_at_reward_max(tmp_path, base):  # noqa: F811
    cfg = with_best(make_cfg(tmp_path, base))
    policy = RewardConditionedPolicy.fresh(cfg, base)
    head = policy.conditioner.head
    assert head.weight.shape[1] == 2
    assert torch.count_nonzero(head.weight[:, 1]) == 0  # untrained: the reward_max slot

    def slots(rewards):
        embeds = torch.zeros(len(rewards), 2, head.weight.shape[0])
        return policy.conditioner.fill_slot(embeds, torch.tensor(rewards))[:, 0]

    untrained = slots([1.0, 2.0, 7.0])
    torch.testing.assert_close(untrained[1], untrained[0])
    with torch.no_grad():
        head.weight[:, 1] = torch.randn(head.weight.shape[0])
    trained = slots([-0.5, 1.0, 2.0, 7.0])
    torch.testing.assert_close(trained[:2], slots([-0.5, 1.0]))
    torch.testing.assert_close(trained[1], untrained[0])  # a reward target ignores the column
    assert not torch.allclose(trained[2], trained[1])  # the best command reads it
    torch.testing.assert_close(trained[3], trained[2])  # every value above reward_max is it
    # without the command the same head's first column gives the same reward slots
    plain = make_cfg(tmp_path, base)
    other = RewardConditionedPolicy.fresh(plain, base)
    with torch.no_grad():
        other.conditioner.head.weight.copy_(head.weight[:, :1])
        other.conditioner.head.bias.copy_(head.bias)
    embeds = torch.zeros(2, 2, head.weight.shape[0])
    torch.testing.assert_close(
        other.conditioner.fill_slot(embeds, torch.tensor([-0.5, 1.0]))[:, 0], trained[:2]
    )


# -- the asks ----------------------------------------------------------------------------------


def test_a_share_of_the_prompts_asks_for_the_best_command():
    cfg = ScheduleConfig(spread=0.1, max_target=1.0, best_fraction=0.25)
    plain = ScheduleConfig(spread=0.1, max_target=1.0)
    targets = sample_targets(cfg, 0.5, 64, 3, best_target=2.0)
    assert sum(t == 2.0 for t in targets) == 16
    others = sample_targets(plain, 0.5, 64, 3)
    assert [t for t in targets if t != 2.0] == [
        o for t, o in zip(targets, others, strict=True) if t != 2.0
    ]
    assert all(0.4 <= t <= 0.6 for t in targets if t != 2.0)
    constant = sample_targets(ScheduleConfig(best_fraction=0.5), 0.3, 10, 3, best_target=2.0)
    assert sorted(constant) == [0.3] * 5 + [2.0] * 5
    with pytest.raises(ValueError, match="needs best_target"):
        sample_targets(cfg, 0.5, 4, 3)


# -- the rows ----------------------------------------------------------------------------------


def test_the_best_sample_of_each_prompt_that_asked_for_the_best_command_is_kept():
    samples = [
        sample("a", 0.2, 2.0),
        sample("a", 0.9, 2.0),
        sample("b", 0.95, 0.9),  # asked for a reward target: not a best ask
        sample("b", 0.1, 2.0),
        sample("a", 0.5, 2.0),
        sample("c", 0.3, 2.0),
        sample("c", 0.3, 2.0, iteration=7),  # a tie keeps the first
    ]
    kept = best_of_prompts(samples, reward_max=1.0)
    assert [(s.prompt, s.achieved_reward) for s in kept] == [("a", 0.9), ("b", 0.1), ("c", 0.3)]
    assert kept[2].iteration is None


def test_best_kl_coef_ranks_by_reward_less_the_kl_to_the_base():
    near = sample("a", 0.85, 2.0, log_importance_weight=-10.0)
    far = sample("a", 0.9, 2.0, log_importance_weight=-100.0)
    lost = sample("b", 0.99, 2.0)  # no weight: the base gives its completion probability 0
    kept_b = sample("b", 0.1, 2.0, log_importance_weight=-1.0)
    samples = [far, near, lost, kept_b]
    # the reward alone: 0.9 and 0.99
    assert best_of_prompts(samples, reward_max=1.0) == [far, lost]
    # 0.9 - 1e-3 * 100 = 0.8 < 0.85 - 1e-3 * 10 = 0.84; an unweighted sample ranks last
    assert best_of_prompts(samples, reward_max=1.0, kl_coef=1e-3) == [near, kept_b]
    # a small coefficient only breaks near-ties: 0.9 - 1e-4 * 100 = 0.89 > 0.849
    assert best_of_prompts(samples, reward_max=1.0, kl_coef=1e-4)[0] is far


def test_best_full_length_ranks_samples_that_reached_the_limit_first():
    short = sample("a", 0.99, 2.0, completion_tokens=5)
    full = sample("a", 0.9, 2.0, completion_tokens=8)
    fuller = sample("a", 0.8, 2.0, completion_tokens=8)
    only_short = sample("b", 0.5, 2.0, completion_tokens=3)
    shorter = sample("b", 0.4, 2.0, completion_tokens=2)
    samples = [short, fuller, full, only_short, shorter]
    assert best_of_prompts(samples, reward_max=1.0) == [short, only_short]
    # a: the best of the full-length samples; b: none reached 8 tokens, the best by reward
    assert best_of_prompts(samples, reward_max=1.0, full_length=8) == [full, only_short]
    assert best_of_prompts(samples, reward_max=1.0, full_length=9) == [short, only_short]
    # within the full-length ones the KL-regularised reward decides
    full_far = dataclasses.replace(full, log_importance_weight=-2000.0)
    fuller_near = dataclasses.replace(fuller, log_importance_weight=-1.0)
    both = [short, full_far, fuller_near]
    assert best_of_prompts(both, 1.0, kl_coef=1e-4, full_length=8) == [fuller_near]


def test_best_full_length_needs_the_best_command(tmp_path, base):  # noqa: F811
    with pytest.raises(ValidationError, match=r"online\.best_full_length ranks the best"):
        make_cfg(tmp_path, base, best_full_length=True)
    data = with_best(make_cfg(tmp_path, base)).model_dump()
    data["online"]["best_full_length"] = True
    assert OnlineRunConfig.model_validate(data).online.best_full_length


def test_best_kl_coef_needs_the_best_command_and_importance_weights(tmp_path, base):  # noqa: F811
    with pytest.raises(ValidationError, match=r"online.best_kl_coef: 0.001 ranks the best"):
        make_cfg(tmp_path, base, best_kl_coef=1e-3)
    data = with_best(make_cfg(tmp_path, base)).model_dump()
    data["online"]["best_kl_coef"] = 1e-3
    with pytest.raises(ValidationError, match=r"buffer.importance_weighting: true"):
        OnlineRunConfig.model_validate(data)
    data["buffer"]["importance_weighting"] = True
    assert OnlineRunConfig.model_validate(data).online.best_kl_coef == 1e-3


def test_the_learner_ranks_the_best_samples_by_the_kl_regularised_reward(
    tmp_path,
    base,  # noqa: F811
    monkeypatch,
):
    data = with_best(make_cfg(tmp_path, base), best_rows=2).model_dump()
    data["online"].update(best_kl_coef=10.0, samples_per_prompt=4)
    data["buffer"]["importance_weighting"] = True
    cfg = OnlineRunConfig.model_validate(data)
    batches = record_steps(monkeypatch)
    _, plan = run_local(cfg)
    from online_dt.replay.export import export_dataset

    buffer = export_dataset(plan.run.buffer_dir).to_pandas()
    differs = 0
    for it in range(4):
        steps = batches[it * 2 : it * 2 + 2]
        rows = {s.sample_id for b in steps for s in b[cfg.training.batch_size :]}
        asked = buffer[(buffer.iteration == it) & (buffer.target_reward > 1.0)]
        score = asked.achieved_reward + 10.0 * asked.log_importance_weight
        best = asked.loc[score.groupby(asked.prompt).idxmax()]
        assert rows == set(best.sample_id)  # both prompts' best, dealt over the two steps
        by_reward = asked.loc[asked.groupby("prompt").achieved_reward.idxmax()]
        differs += set(by_reward.sample_id) != rows
    assert differs  # the coefficient changed which samples were kept


def test_best_rows_are_dealt_out_evenly_and_relabelled():
    rows = BestRows(4, seed=0)
    assert rows.take() == []
    best = [
        sample(p, r, 2.0) for p, r in zip("abcdef", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], strict=True)
    ]
    rows.update(best, label=2.0, iteration=3)
    assert rows.achieved == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    taken = [s for _ in range(3) for s in rows.take()]  # 12 rows: each of the 6 twice
    assert all(s.achieved_reward == 2.0 for s in taken)
    counts = {p: sum(s.prompt == p for s in taken) for p in "abcdef"}
    assert counts == dict.fromkeys("abcdef", 2)
    # the order depends on the iteration only: a resumed run, whose rows were updated fewer
    # times, deals as the uninterrupted one
    ran = BestRows(4, seed=0)
    for it in range(3):
        ran.update(best[:2], label=2.0, iteration=it)
    ran.update(best, label=2.0, iteration=3)
    resumed = BestRows(4, seed=0)
    resumed.update(best, label=2.0, iteration=3)
    assert [s.prompt for s in resumed.take()] == [s.prompt for s in ran.take()]
    assert [s.prompt for s in resumed.take()] == [s.prompt for s in taken[4:8]]
    rows.update([], label=2.0, iteration=4)
    assert rows.take() == []
    assert BestRows(0, seed=0).take() == []
    with pytest.raises(ValueError, match=r"rows must be >= 0"):
        BestRows(-1, seed=0)


def test_each_training_step_adds_the_newest_best_samples(tmp_path, base, monkeypatch):  # noqa: F811
    cfg = with_best(make_cfg(tmp_path, base), best_rows=3)
    batches = record_steps(monkeypatch)
    history, plan = run_local(cfg)
    per_step = cfg.training.batch_size + 3
    assert [len(b) for b in batches] == [per_step] * (4 * cfg.online.train_steps_per_iteration)
    from online_dt.replay.export import export_dataset

    data = export_dataset(plan.run.buffer_dir).to_pandas()
    for it in range(4):
        rows = [s for b in batches[it * 2 : it * 2 + 2] for s in b[cfg.training.batch_size :]]
        assert all(s.achieved_reward == cfg.conditioning.best_target for s in rows)
        asked = data[(data.iteration == it) & (data.target_reward > 1.0)]
        assert len(asked) == 2 * cfg.online.samples_per_prompt  # half of 4 prompts, 2 each
        best = asked.loc[asked.groupby("prompt").achieved_reward.idxmax()]
        assert {s.sample_id for s in rows} == set(best.sample_id)
        # the metrics describe the schedule's asks and the best asks apart
        m = history[it]
        assert m["best_asks"] == len(asked)
        assert m["best_achieved_mean"] == pytest.approx(asked.achieved_reward.mean())
        others = data[(data.iteration == it) & (data.target_reward <= 1.0)]
        assert m["achieved_mean"] == pytest.approx(others.achieved_reward.mean())


def test_best_asks_can_stay_out_of_the_buffer(tmp_path, base, monkeypatch):  # noqa: F811
    with pytest.raises(ValidationError, match="best_asks_in_buffer: false"):
        make_cfg(tmp_path, base, best_asks_in_buffer=False)
    cfg = with_best(make_cfg(tmp_path, base), best_rows=3, best_asks_in_buffer=False)
    batches = record_steps(monkeypatch)
    history, plan = run_local(cfg)
    from online_dt.replay.export import export_dataset

    data = export_dataset(plan.run.buffer_dir).to_pandas()
    assert len(data) == 4 * 2 * cfg.online.samples_per_prompt  # the schedule's asks only
    assert (data.target_reward <= 1.0).all()
    assert [m["buffer_size"] for m in history] == [4, 8, 12, 16]
    assert all(m["best_asks"] == 4 for m in history)  # the metrics still describe them
    for b in batches:
        rows = b[cfg.training.batch_size :]
        assert len(rows) == 3 and all(s.achieved_reward == 2.0 for s in rows)
        assert all(s.target_reward > 1.0 and s.sample_id is None for s in rows)


def test_rollout_metrics_keep_the_best_asks_apart():
    rollouts = [
        Rollout(prompt="p", completion="x", token_ids=[1, 2], logprobs=[-1.0, -1.0], target=t)
        for t in (0.5, 0.5, 2.0, 2.0)
    ]
    m = rollout_metrics(0, 0.5, rollouts, [0.4, 0.6, 0.9, 0.7], 0, best_above=1.0)
    assert m["achieved_mean"] == pytest.approx(0.5)
    assert m["calibration_error"] == pytest.approx(0.0)
    assert (m["best_asks"], m["best_achieved_mean"], m["best_achieved_max"]) == (
        2,
        pytest.approx(0.8),
        0.9,
    )
    plain = rollout_metrics(0, 0.5, rollouts, [0.4, 0.6, 0.9, 0.7], 0)
    assert plain["achieved_mean"] == pytest.approx(0.65) and "best_asks" not in plain
    only = rollout_metrics(0, 0.5, rollouts[2:], [0.9, 0.7], 0, best_above=1.0)
    assert "achieved_mean" not in only and "calibration_error" not in only
    assert only["best_achieved_mean"] == pytest.approx(0.8) and "distinct_2" in only


# -- the rewards ---------------------------------------------------------------------------------


class Scores:
    def __init__(self, scores):
        self.scores = scores

    def score(self, prompts, completions):
        return list(self.scores)


def test_a_score_above_reward_max_is_refused_with_the_best_command(tmp_path, base):  # noqa: F811
    prompts, completions = ["p", "q", "r"], ["a", "b", "c"]
    checked = CheckedRewardModel.for_run(
        Scores([0.5, 1.5, 1.0]), with_best(make_cfg(tmp_path, base))
    )
    with pytest.raises(RewardModelError, match=r"above conditioning.reward_max") as err:
        checked.score(prompts, completions)
    assert (err.value.reason, err.value.indices, err.value.samples) == (
        "above_reward_max",
        [1],
        [("q", "b")],
    )
    plain = CheckedRewardModel.for_run(Scores([0.5, 1.5, 1.0]), make_cfg(tmp_path, base))
    assert plain.score(prompts, completions) == [0.5, 1.5, 1.0]
    assert np.isclose(
        CheckedRewardModel.for_run(Scores([1.0]), with_best(make_cfg(tmp_path, base))).score(
            ["p"], ["a"]
        )[0],
        1.0,
    )


def test_eval_of_a_best_command_run_has_the_best_commands_row(tmp_path, base):  # noqa: F811
    """Default targets: the buffer's p10/p50/p90 and the best command, none marked as an
    extrapolation (no best + margin row: above reward_max every target is the best command)."""
    from online_dt.eval.run import run_eval
    from online_dt.replay.export import export_dataset

    _, plan = run_local(with_best(make_cfg(tmp_path, base)))
    out = tmp_path / "eval"
    report = run_eval(
        plan.run.path, samples_per_target=4, out_dir=out, with_kl=False, reference_samples=0
    )
    rewards = export_dataset(plan.run.buffer_dir)["achieved_reward"]
    expected = sorted({*(float(q) for q in np.quantile(rewards, [0.1, 0.5, 0.9])), 2.0})
    assert [r["target"] for r in report["rows"]] == pytest.approx(expected)
    assert not any(r["extrapolation"] for r in report["rows"])
    from online_dt.eval.source import EvalError

    given = run_eval(
        plan.run.path,
        targets=[0.5],
        samples_per_target=4,
        out_dir=out,
        with_kl=False,
        reference_samples=0,
    )
    assert [r["target"] for r in given["rows"]] == [0.5]  # no extrapolation row is added
    # recalibrated: the best command's target is asked for as it is
    recal = run_eval(
        plan.run.path,
        samples_per_target=4,
        out_dir=out,
        with_kl=False,
        reference_samples=0,
        recalibration_samples=2,
        recalibration_grid=[-0.5, 0.0, 0.5],
    )
    reward_max = plan.cfg.conditioning.reward_max
    assert recal["recalibration"]["conditioning"] == [-0.5, 0.0, 0.5]
    assert recal["recalibration"]["calls"] == 2 * 3
    best_row = recal["rows"][-1]
    assert best_row["target"] == 2.0 and best_row["asked"] == [[2.0, 4]]
    assert recal["recalibration"]["bracket"][-1] is None
    assert all(c <= reward_max for r in recal["rows"][:-1] for c, _ in r["asked"])
    with pytest.raises(EvalError, match="asks for the run's best command"):
        run_eval(
            plan.run.path,
            samples_per_target=4,
            out_dir=out,
            recalibration_samples=2,
            recalibration_grid=[0.0, 1.5],
        )


def test_the_learner_labels_no_eos_after_completions_the_sampler_cut(
    tmp_path,
    base,  # noqa: F811
    monkeypatch,
):
    """Every training step of a run lays out its rows with ``sampling.max_new_tokens``: a
    sample that reached it (the sampler cut it) has no EOS label, one that ended earlier has
    one; the best command's rows too (docs/method.md, round 28)."""
    import online_dt.training.trainer as trainer_module

    cfg = with_best(make_cfg(tmp_path, base), best_rows=3)
    limit, laid_out = cfg.sampling.max_new_tokens, []
    real = trainer_module.collate

    def spy(policy, samples, include_prompt_loss=False, max_new_tokens=None):
        batch, rewards = real(policy, samples, include_prompt_loss, max_new_tokens)
        laid_out.append((policy, samples, batch, max_new_tokens))
        return batch, rewards

    monkeypatch.setattr(trainer_module, "collate", spy)
    run_local(cfg)
    assert laid_out and {given for *_, given in laid_out} == {limit}
    ends = {True: 0, False: 0}
    for policy, samples, batch, _ in laid_out:
        for i, s in enumerate(samples):
            labels = batch.labels[i][batch.labels[i] != IGNORE_INDEX].tolist()
            cut = s.completion_tokens >= limit
            assert not labels or (labels[-1] == policy.eos_token_id) != cut
            ends[cut] += 1
    assert ends[True] and ends[False]

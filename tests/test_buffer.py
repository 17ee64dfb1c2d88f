"""Replay buffer: ids, validation, eviction, sampling, persistence, crash safety, export."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from online_dt.config import ReplayBufferConfig
from online_dt.replay import shards as shards_mod
from online_dt.replay.buffer import ReplayBuffer
from online_dt.replay.export import export_dataset, export_to_disk
from online_dt.replay.schema import FIELDS, BufferCorruptError, sample_from_row, shard_name
from online_dt.samples import Sample


def cfg(**kw) -> ReplayBufferConfig:
    return ReplayBufferConfig(**kw)


def new(reward: float, i: int = 0, **kw) -> dict:
    row = {
        "prompt": f"prompt {i}",
        "completion": f"completion {i} é",
        "achieved_reward": reward,
        "target_reward": 0.5,
        "policy_version": i // 10,
        "iteration": i // 10,
        "created_at": 1_700_000_000.0 + i,
        "scored_at": 1_700_000_000.5 + i,
        "completion_tokens": i % 7,
    }
    row.update(kw)
    return row


def batch(rewards, start: int = 0) -> list[dict]:
    return [new(float(r), start + k) for k, r in enumerate(rewards)]


def shard_files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


def reference_held(rewards, capacity: int, reserved: int) -> list[int]:
    """Naive eviction: after each insertion beyond capacity, evict the oldest id that is not
    among the ``reserved`` best held (by (reward, id))."""
    held: list[int] = []
    for i in range(len(rewards)):
        held.append(i)
        if len(held) > capacity:
            best = sorted(held, key=lambda j: (rewards[j], j))[len(held) - reserved :]
            victim = min(j for j in held if j not in best)
            held.remove(victim)
    return held


# ---------------------------------------------------------------------------------------------
# ids and validation
# ---------------------------------------------------------------------------------------------


def test_ids_increase_and_fields_round_trip():
    buf = ReplayBuffer(cfg(capacity=100))
    a = buf.append(batch([0.1, 0.2, 0.3]))
    b = buf.append([Sample(**new(0.4, 3)), new(0.5, 4)])
    assert [s.sample_id for s in a + b] == [0, 1, 2, 3, 4]
    assert all(isinstance(s, Sample) for s in a + b)
    assert b[0].prompt == "prompt 3" and b[0].completion_tokens == 3
    assert buf.total_appended == 5 and len(buf) == 5 and buf.last_sample_id == 4
    assert buf.append([]) == [] and buf.total_appended == 5
    np.testing.assert_array_equal(buf.rewards(), [0.1, 0.2, 0.3, 0.4, 0.5])
    assert [f for f in FIELDS] == [
        "sample_id",
        "prompt",
        "completion",
        "achieved_reward",
        "target_reward",
        "policy_version",
        "iteration",
        "created_at",
        "scored_at",
        "completion_tokens",
        "log_importance_weight",
        "achieved_rewards",
        "target_rewards",
    ]


def test_non_finite_rejected_and_nothing_persisted(tmp_path):
    buf = ReplayBuffer(cfg(shard_size=4), tmp_path)
    buf.append(batch([0.0, 1.0]))
    before = shard_files(tmp_path)
    bad = batch([0.5, math.nan, 0.2, math.inf, -math.inf], start=2)
    with pytest.raises(ValueError) as err:
        buf.append(bad)
    msg = str(err.value)
    assert "achieved_reward" in msg and "3 of 5" in msg
    assert "#1 nan" in msg and "#3 inf" in msg and "#4 -inf" in msg and "'prompt 3'" in msg
    assert "#0" not in msg and "#2" not in msg
    assert len(buf) == 2 and buf.total_appended == 2
    assert shard_files(tmp_path) == before
    assert buf.append(batch([0.5]))[0].sample_id == 2
    assert [s.sample_id for s in ReplayBuffer.load(cfg(shard_size=4), tmp_path).held()] == [0, 1, 2]


def test_malformed_samples_rejected():
    buf = ReplayBuffer(cfg())
    with pytest.raises(TypeError, match="sample_id"):
        buf.append([{**new(0.1), "sample_id": 3}])
    with pytest.raises(TypeError, match="missing"):
        buf.append([{k: v for k, v in new(0.1).items() if k != "prompt"}])
    with pytest.raises(TypeError, match="policy_version"):
        buf.append([new(0.1, policy_version=1.5)])
    with pytest.raises(TypeError):
        buf.append(new(0.1))  # a single dict, not a sequence
    with pytest.raises(ValueError, match="target_reward"):
        buf.append([new(0.1, target_reward=math.nan)])
    assert buf.total_appended == 0
    # numpy scalars are accepted and stored as Python numbers
    (s,) = buf.append([new(np.float32(0.25), policy_version=np.int64(2))])
    assert type(s.achieved_reward) is float and s.achieved_reward == 0.25
    assert type(s.policy_version) is int


def test_constructor_refuses_existing_shards(tmp_path):
    ReplayBuffer(cfg(), tmp_path).append(batch([1.0]))
    with pytest.raises(FileExistsError):
        ReplayBuffer(cfg(), tmp_path)


def test_remove_all_leaves_a_folder_a_new_buffer_accepts(tmp_path):
    from online_dt.replay import shards

    assert shards.remove_all(tmp_path / "missing") == 0
    buf = ReplayBuffer(cfg(shard_size=2), tmp_path)
    buf.append(batch([0.1, 0.2, 0.3]))
    (tmp_path / ".shard-x.tmp").write_bytes(b"partial")
    (tmp_path / "notes.txt").write_text("not a shard")
    before = len(shards.list_shards(tmp_path))
    assert before >= 2
    assert shards.remove_all(tmp_path) == before
    assert shards.list_shards(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert len(ReplayBuffer(cfg(), tmp_path)) == 0


# ---------------------------------------------------------------------------------------------
# eviction
# ---------------------------------------------------------------------------------------------


def test_fifo_eviction_keeps_newest_and_ignores_batching():
    one = ReplayBuffer(cfg(capacity=5))
    for n, start in [(3, 0), (1, 3), (6, 4), (2, 10)]:
        one.append(batch(range(start, start + n), start))
    assert [s.sample_id for s in one.held()] == [7, 8, 9, 10, 11]
    assert len(one) == 5 and one.total_appended == 12
    np.testing.assert_array_equal(one.rewards(), [7, 8, 9, 10, 11])
    whole = ReplayBuffer(cfg(capacity=5))
    whole.append(batch(range(12)))
    assert whole.held() == one.held()


def test_keep_top_keeps_best():
    rng = np.random.default_rng(1)
    rewards = rng.normal(size=200).round(1)  # rounding makes ties
    buf = ReplayBuffer(cfg(capacity=20, keep_top_fraction=0.25))
    assert buf.reserved_top == 5
    for start in range(0, 200, 13):
        buf.append(batch(rewards[start : start + 13], start))
    held = [s.sample_id for s in buf.held()]
    assert held == reference_held(rewards.tolist(), 20, 5)
    best5 = sorted(range(200), key=lambda j: (rewards[j], j))[-5:]
    assert set(best5) <= set(held)
    assert set(range(185, 200)) <= set(held)  # the 15 newest unreserved places
    pure_fifo = ReplayBuffer(cfg(capacity=20))
    pure_fifo.append(batch(rewards))
    top5 = np.sort(rewards)[-5:]
    np.testing.assert_array_equal(np.sort(buf.rewards())[-5:], top5)
    assert np.sort(pure_fifo.rewards())[-5:].sum() < top5.sum()


# ---------------------------------------------------------------------------------------------
# sampling
# ---------------------------------------------------------------------------------------------


def draw_counts(buf: ReplayBuffer, batch_size: int, batches: int) -> np.ndarray:
    counts = np.zeros(buf.total_appended)
    for _ in range(batches):
        got = [s.sample_id for s in buf.sample_batch(batch_size)]
        assert len(got) == batch_size
        assert len(set(got)) == batch_size  # without replacement within a batch
        np.add.at(counts, got, 1)
    return counts


def test_uniform_vs_recency_statistics():
    n = 400
    uniform = ReplayBuffer(cfg(capacity=n), seed=0)
    uniform.append(batch(np.zeros(n)))
    counts = draw_counts(uniform, 40, 500)  # 20000 draws, 50 per sample expected
    assert abs(counts[: n // 2].sum() / counts.sum() - 0.5) < 0.02
    assert counts.min() > 20 and counts.max() < 85

    recency = ReplayBuffer(cfg(capacity=n, sampling="recency", recency_half_life=50), seed=0)
    recency.append(batch(np.zeros(n)))
    counts = draw_counts(recency, 40, 500)
    assert counts[-50:].sum() > 5 * counts[:200].sum()  # new ones are strongly favoured
    # half-life calibration: single draws follow the weights exactly
    single = draw_counts(recency, 1, 20000)
    newest, one_half_life_older = single[-10:].sum(), single[-60:-50].sum()
    assert newest / one_half_life_older == pytest.approx(2.0, rel=0.15)


def test_reward_balanced_gives_every_reward_bin_equal_mass():
    # 360 samples at reward 0, 40 at reward 1: uniform draws see reward 1 a tenth of the time,
    # balanced draws half of the time (two non-empty bins of equal mass)
    n = 400
    rewards = np.r_[np.zeros(360), np.ones(40)]
    buf = ReplayBuffer(cfg(capacity=n, sampling="reward_balanced", reward_bins=4), seed=0)
    buf.append(batch(rewards))
    counts = draw_counts(buf, 1, 20000)
    assert counts[360:].sum() / counts.sum() == pytest.approx(0.5, abs=0.02)
    # within a bin every sample is equally likely
    assert counts[360:].min() > 0.5 * counts[360:].mean()
    # power 0.5: bin masses 360 ** 0.5 : 40 ** 0.5 = 3 : 1
    half = ReplayBuffer(
        cfg(capacity=n, sampling="reward_balanced", reward_bins=4, balance_power=0.5), seed=0
    )
    half.append(batch(rewards))
    counts = draw_counts(half, 1, 20000)
    assert counts[360:].sum() / counts.sum() == pytest.approx(0.25, abs=0.02)
    uniform = ReplayBuffer(cfg(capacity=n), seed=0)
    uniform.append(batch(rewards))
    counts = draw_counts(uniform, 1, 20000)
    assert counts[360:].sum() / counts.sum() == pytest.approx(0.1, abs=0.02)
    # one reward everywhere: one bin, uniform
    same = ReplayBuffer(cfg(capacity=8, sampling="reward_balanced"), seed=0)
    same.append(batch(np.full(8, 0.3)))
    counts = draw_counts(same, 1, 8000)
    assert counts.min() > 800 and counts.max() < 1200
    # the weights follow the held set: after new rewards arrive, the old bin loses its share
    same.append(batch(np.full(8, 0.9), start=8))  # capacity 8: the 0.3 samples are evicted
    assert {s.achieved_reward for s in same.sample_batch(8)} == {0.9}


def test_importance_weighting_within_reward_bins():
    # two reward bins of 200 samples; in each, half the samples have weight 3x the others'.
    # Draws within a bin follow the weights (3:1); each bin keeps half the draws.
    rewards = np.r_[np.zeros(200), np.ones(200)]
    log_w = np.tile(np.r_[np.full(100, np.log(3.0)), np.zeros(100)], 2) - 7.0  # any offset
    rows = [
        row | {"log_importance_weight": float(w)}
        for row, w in zip(batch(rewards), log_w, strict=True)
    ]
    buf = ReplayBuffer(cfg(capacity=400, importance_weighting=True, reward_bins=2), seed=0)
    buf.append(rows)
    counts = draw_counts(buf, 1, 40000)
    assert counts[:200].sum() / counts.sum() == pytest.approx(0.5, abs=0.02)
    assert counts[:100].sum() / counts[100:200].sum() == pytest.approx(3.0, rel=0.1)
    assert counts[200:300].sum() / counts[300:].sum() == pytest.approx(3.0, rel=0.1)
    # truncation: one sample with a huge weight gets at most importance_clip x the bin's
    # median (then the bin is rescaled to mean 1)
    huge = [row | {"log_importance_weight": 0.0} for row in batch(np.zeros(100))]
    huge[0]["log_importance_weight"] = 50.0
    clipped = ReplayBuffer(cfg(capacity=100, importance_weighting=True, importance_clip=5.0))
    clipped.append(huge)
    counts = draw_counts(clipped, 1, 20000)
    # weights 5 for sample 0 and 1 for the 99 others: sample 0 gets 5 / 104 of the draws
    assert counts[0] / counts.sum() == pytest.approx(5 / 104, abs=0.01)
    # samples without a weight (format 1 shards, offline data) count as their bin's mean: in a
    # bin of 100 unweighted and 100 weighted 3:1 samples, the unweighted get half the draws
    rows = batch(np.zeros(200))
    for i, row in enumerate(rows[100:]):
        row["log_importance_weight"] = float(np.log(3.0)) if i < 50 else 0.0
    mixed = ReplayBuffer(cfg(capacity=200, importance_weighting=True), seed=0)
    mixed.append(rows)
    counts = draw_counts(mixed, 1, 20000)
    assert counts[:100].sum() / counts.sum() == pytest.approx(0.5, abs=0.02)
    assert counts[100:150].sum() / counts[150:].sum() == pytest.approx(3.0, rel=0.1)


def test_importance_weighting_keeps_recency_bin_masses():
    # recency weights vary inside a bin; importance weights move draws within a bin, not
    # between bins: bin 0 (older) keeps the share recency alone gives it
    rewards = np.r_[np.zeros(100), np.ones(100)]
    rows = batch(rewards)
    for i, row in enumerate(rows):
        row["log_importance_weight"] = 2.0 if i % 2 else 0.0
    kw = {"capacity": 200, "sampling": "recency", "recency_half_life": 60.0, "reward_bins": 2}
    plain = ReplayBuffer(cfg(**kw), seed=0)
    plain.append(batch(rewards))
    weighted = ReplayBuffer(cfg(**kw, importance_weighting=True), seed=0)
    weighted.append(rows)
    share = [draw_counts(b, 1, 20000)[:100].sum() / 20000 for b in (plain, weighted)]
    assert share[1] == pytest.approx(share[0], abs=0.02)
    odd = draw_counts(weighted, 1, 20000)
    assert odd[1::2].sum() > 3 * odd[0::2].sum()  # e^2 times the weight within each bin


def test_format_1_shards_read_without_importance_weights(tmp_path):
    import pyarrow.parquet as pq

    root = tmp_path / "buffer"
    buf = ReplayBuffer(cfg(shard_size=4), root)
    buf.append([row | {"log_importance_weight": -1.5} for row in batch([0.1, 0.2, 0.3, 0.4])])
    shard = next(root.glob("shard-*.parquet"))
    table = pq.read_table(shard).drop_columns(["log_importance_weight"])
    pq.write_table(table.replace_schema_metadata({b"online_dt.replay.buffer.format": b"1"}), shard)
    loaded = ReplayBuffer.load(cfg(shard_size=4), root)
    assert [s.log_importance_weight for s in loaded.sample_batch(4)] == [None] * 4
    fresh = ReplayBuffer(cfg(), tmp_path / "b2")
    fresh.append([row | {"log_importance_weight": -1.5} for row in batch([0.5])])
    assert (
        ReplayBuffer.load(cfg(), tmp_path / "b2").sample_batch(1)[0].log_importance_weight == -1.5
    )
    with pytest.raises(ValueError, match="log_importance_weight"):
        fresh.append([new(0.1) | {"log_importance_weight": float("nan")}])


def test_small_buffer_samples_with_replacement():
    buf = ReplayBuffer(cfg(sampling="recency"))
    buf.append(batch([0.1, 0.2, 0.3]))
    got = buf.sample_batch(10)
    assert len(got) == 10 and {s.sample_id for s in got} <= {0, 1, 2}
    with pytest.raises(ValueError):
        buf.sample_batch(0)
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(cfg()).sample_batch(1)


@pytest.mark.parametrize("sampling", ["uniform", "recency", "reward_balanced"])
def test_sampling_deterministic_and_state_round_trip(sampling):
    def make(seed):
        b = ReplayBuffer(cfg(capacity=50, sampling=sampling, recency_half_life=10), seed=seed)
        b.append(batch(np.arange(80.0)))
        return b

    a, b = make(7), make(7)
    seq_a = [[s.sample_id for s in a.sample_batch(8)] for _ in range(5)]
    assert seq_a == [[s.sample_id for s in b.sample_batch(8)] for _ in range(5)]
    assert seq_a != [[s.sample_id for s in make(8).sample_batch(8)] for _ in range(5)]

    state = json.loads(json.dumps(a.state_dict()))
    assert state["last_sample_id"] == 79
    expected = [[s.sample_id for s in a.sample_batch(8)] for _ in range(3)]
    c = make(123)
    c.load_state_dict(state)
    assert [[s.sample_id for s in c.sample_batch(8)] for _ in range(3)] == expected
    with pytest.raises(ValueError):
        c.load_state_dict({"format": 1})


# ---------------------------------------------------------------------------------------------
# persistence
# ---------------------------------------------------------------------------------------------


def test_reload_equals_held_set_and_continues_identically(tmp_path):
    c = cfg(capacity=16, keep_top_fraction=0.25, shard_size=5)
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=60)
    buf = ReplayBuffer(c, tmp_path, seed=3)
    start = 0
    for n in [3, 7, 1, 12, 5, 9]:
        buf.append(batch(rewards[start : start + n], start))
        start += n
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [shard_name(a, min(a + 4, 36)) for a in range(0, 37, 5)]  # id-aligned

    loaded = ReplayBuffer.load(c, tmp_path, seed=3)
    assert loaded.held() == buf.held() and len(loaded) == 16
    assert loaded.total_appended == buf.total_appended == 37
    np.testing.assert_array_equal(loaded.rewards(), buf.rewards())
    assert [s.sample_id for s in loaded.held()] == reference_held(rewards[:37].tolist(), 16, 4)
    loaded.load_state_dict(buf.state_dict())

    for b in (buf, loaded):  # both continue the same way (the open shard is picked up)
        b.append(batch(rewards[37:60], 37))
    assert loaded.held() == buf.held()
    assert loaded.sample_batch(6) == buf.sample_batch(6)
    assert sorted(p.name for p in tmp_path.iterdir())[-1] == shard_name(55, 59)
    assert export_dataset(tmp_path)["sample_id"] == list(range(60))


def test_leftover_tmp_is_ignored_and_cleaned(tmp_path):
    c = cfg(shard_size=4)
    buf = ReplayBuffer(c, tmp_path)
    buf.append(batch([0.1, 0.2, 0.3]))
    real = next(tmp_path.glob("shard-*.parquet")).read_bytes()
    # a crash mid-write leaves a half-written temporary file next to the shards
    tmp = tmp_path / f".{shard_name(0, 5)}.x1y2.tmp"
    tmp.write_bytes(real[: len(real) // 2])
    ds = export_dataset(tmp_path)
    assert ds["sample_id"] == [0, 1, 2]
    assert tmp.exists()  # readers never delete
    loaded = ReplayBuffer.load(c, tmp_path)
    assert loaded.held() == buf.held()
    assert not tmp.exists()


def test_failed_write_mid_append_changes_nothing(tmp_path, monkeypatch):
    c = cfg(shard_size=4)
    buf = ReplayBuffer(c, tmp_path)
    buf.append(batch([0.1, 0.2]))
    before = shard_files(tmp_path)
    calls = []
    real_publish = shards_mod._publish

    def failing_publish(tmp, path):
        calls.append(path.name)
        if len(calls) == 2:
            assert tmp.exists() and tmp.stat().st_size > 0  # the tmp was fully written
            raise OSError("disk full")
        real_publish(tmp, path)

    monkeypatch.setattr(shards_mod, "_publish", failing_publish)
    with pytest.raises(OSError, match="disk full"):
        buf.append(batch([0.3, 0.4, 0.5, 0.6, 0.7], start=2))  # spans 2 shards
    assert len(calls) == 2
    assert shard_files(tmp_path) == before  # first new shard removed, no tmp left
    assert len(buf) == 2 and buf.total_appended == 2

    monkeypatch.setattr(shards_mod, "_publish", real_publish)
    assert [s.sample_id for s in buf.append(batch([0.3], start=2))] == [2]
    assert ReplayBuffer.load(c, tmp_path).held() == buf.held()


def test_kill_mid_append_loses_nothing_appended(tmp_path, monkeypatch):
    """A process killed while publishing the second shard of an append: no cleanup runs, so
    the disk keeps the old open shard, the new (covering) first shard and a tmp file."""
    c = cfg(shard_size=4)
    buf = ReplayBuffer(c, tmp_path)
    appended = buf.append(batch([0.1, 0.2]))
    calls = []
    real_publish = shards_mod._publish

    class Killed(BaseException):
        pass

    def killed_publish(tmp, path):
        calls.append(path)
        if len(calls) == 2:
            raise Killed
        real_publish(tmp, path)

    monkeypatch.setattr(shards_mod, "_publish", killed_publish)
    # a dead process cleans nothing
    monkeypatch.setattr(shards_mod, "remove_file", lambda path: None)
    with pytest.raises(Killed):
        buf.append(batch([0.3, 0.4, 0.5, 0.6, 0.7], start=2))
    monkeypatch.undo()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert shard_name(0, 1) in names and shard_name(0, 3) in names
    assert any(n.endswith(".tmp") for n in names)

    ds = export_dataset(tmp_path)  # each id once, covered shard and tmp skipped
    assert ds["sample_id"] == [0, 1, 2, 3]
    loaded = ReplayBuffer.load(c, tmp_path)
    assert loaded.held()[:2] == appended  # nothing that append returned is lost
    assert [s.sample_id for s in loaded.held()] == [0, 1, 2, 3]  # a prefix of the killed append
    assert sorted(p.name for p in tmp_path.iterdir()) == [shard_name(0, 3)]
    assert loaded.append(batch([0.8], start=4))[0].sample_id == 4


def test_covered_open_shard_is_not_duplicated(tmp_path):
    c = cfg(shard_size=10)
    buf = ReplayBuffer(c, tmp_path)
    buf.append(batch([0.1, 0.2]))
    old = tmp_path / shard_name(0, 1)
    saved = old.read_bytes()
    buf.append(batch([0.3], start=2))
    assert not old.exists()
    old.write_bytes(saved)  # as if killed between the rename and the delete
    assert export_dataset(tmp_path)["sample_id"] == [0, 1, 2]
    assert len(ReplayBuffer.load(c, tmp_path)) == 3
    assert not old.exists()


def test_missing_shard_is_an_error_not_a_silent_loss(tmp_path):
    buf = ReplayBuffer(cfg(shard_size=2), tmp_path)
    buf.append(batch(range(6)))
    (tmp_path / shard_name(2, 3)).unlink()
    with pytest.raises(BufferCorruptError, match=r"2\.\.3"):
        ReplayBuffer.load(cfg(shard_size=2), tmp_path)
    (tmp_path / shard_name(2, 3)).write_bytes(b"PAR1 not really")
    with pytest.raises(BufferCorruptError, match=shard_name(2, 3)):
        export_dataset(tmp_path)


def test_upto_sample_id_and_drop_after(tmp_path):
    c = cfg(capacity=8, keep_top_fraction=0.25, shard_size=4)
    rewards = np.random.default_rng(2).normal(size=30)
    buf = ReplayBuffer(c, tmp_path)
    for start in range(0, 30, 6):
        buf.append(batch(rewards[start : start + 6], start))
    at_checkpoint = ReplayBuffer(c)  # what the run held right after id 17
    at_checkpoint.append(batch(rewards[:18]))

    view = ReplayBuffer.load(c, tmp_path, upto_sample_id=17)
    assert view.held() == at_checkpoint.held()
    assert view.total_appended == 18 and view.persisted_last_id == 29
    assert len(view.sample_batch(4)) == 4
    with pytest.raises(RuntimeError, match="drop_after"):
        view.append(batch([0.0]))
    assert len(export_dataset(tmp_path)) == 30  # nothing removed from disk

    keep = ReplayBuffer.load(c, tmp_path)  # keep: every persisted sample, once
    assert keep.held() == buf.held() and keep.total_appended == 30

    assert view.drop_after(17) == 12  # discard: 16..17 rewritten, later shards deleted
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        shard_name(0, 3),
        shard_name(4, 7),
        shard_name(8, 11),
        shard_name(12, 15),
        shard_name(16, 17),
    ]
    assert view.held() == at_checkpoint.held() and view.persisted_last_id == 17
    assert view.append(batch([9.0], start=18))[0].sample_id == 18
    at_checkpoint.append(batch([9.0], start=18))
    assert ReplayBuffer.load(c, tmp_path).held() == at_checkpoint.held()
    assert export_dataset(tmp_path)["sample_id"] == list(range(19))
    assert view.drop_after(-1) == 19 and len(view) == 0 and view.total_appended == 0
    assert len(export_dataset(tmp_path)) == 0


def test_in_memory_buffer_cannot_drop():
    buf = ReplayBuffer(cfg())
    buf.append(batch([1.0]))
    with pytest.raises(RuntimeError):
        buf.drop_after(0)


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------


def test_export_every_sample_once_with_columns(tmp_path):
    import datasets

    c = cfg(capacity=5, shard_size=4)  # most samples evicted from memory, all exported
    buf = ReplayBuffer(c, tmp_path)
    appended = []
    for start in range(0, 23, 7):
        appended += buf.append(batch(np.linspace(-1, 1, 7)[: min(7, 23 - start)], start))
    ds = export_dataset(tmp_path)
    assert isinstance(ds, datasets.Dataset)
    assert ds.column_names == list(FIELDS) and len(ds) == 23
    assert ds["sample_id"] == list(range(23))
    assert [sample_from_row(row) for row in ds] == appended
    assert ds.features["achieved_reward"].dtype == "float64"
    assert ds.features["prompt"].dtype == "string"

    out = tmp_path.parent / "export"
    export_to_disk(tmp_path, out)
    again = datasets.load_from_disk(str(out))
    assert again["sample_id"] == list(range(23)) and again.column_names == list(FIELDS)

    empty = tmp_path.parent / "empty"
    empty.mkdir()
    assert export_dataset(empty).column_names == list(FIELDS) and len(export_dataset(empty)) == 0
    shutil.rmtree(out)
    with pytest.raises(FileNotFoundError):
        export_dataset(tmp_path.parent / "nope")

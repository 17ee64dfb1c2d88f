"""distinct-n, reward summaries and crash-safe writes."""

from __future__ import annotations

import pytest

from online_dt.util.atomic import atomic_write_dir, atomic_write_json, atomic_write_text
from online_dt.util.metrics import distinct_n, reward_summary


def test_distinct_n():
    seqs = [[1, 2, 3], [1, 2, 4]]
    assert distinct_n(seqs, 1) == pytest.approx(4 / 6)
    assert distinct_n(seqs, 2) == pytest.approx(3 / 4)
    assert distinct_n([[1]], 2) == 0.0
    assert distinct_n([[5, 5, 5, 5]], 1) == pytest.approx(1 / 4)
    with pytest.raises(ValueError):
        distinct_n(seqs, 0)


def test_reward_summary():
    s = reward_summary([float(i) for i in range(11)])
    assert (s["mean"], s["median"], s["p10"], s["p90"]) == pytest.approx((5, 5, 1, 9))
    with pytest.raises(ValueError):
        reward_summary([])


def test_atomic_write_text_replaces_whole_file(tmp_path):
    path = tmp_path / "sub" / "a.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]


def test_atomic_write_dir_keeps_old_on_failure(tmp_path):
    target = tmp_path / "policy"

    def good(d):
        (d / "w.txt").write_text("v1")

    def bad(d):
        (d / "w.txt").write_text("half")
        raise RuntimeError("disk full")

    atomic_write_dir(target, good)
    with pytest.raises(RuntimeError):
        atomic_write_dir(target, bad)
    assert (target / "w.txt").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]
    atomic_write_dir(target, lambda d: (d / "w.txt").write_text("v2"))
    assert (target / "w.txt").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]

"""The guidance mixture's rewards and prior (online_dt.policy.guidance)."""

from __future__ import annotations

import pytest

from online_dt.policy.guidance import buffer_prior, even_grid


def test_buffer_prior_is_the_share_nearest_each_grid_reward():
    grid = [-1.0, 0.0, 1.0]
    # -0.9, -0.6 -> -1; -0.4, 0.2, 0.49 -> 0; 0.51, 0.95 -> 1; -0.5 is a tie -> the lower (-1)
    rewards = [-0.9, -0.6, -0.5, -0.4, 0.2, 0.49, 0.51, 0.95]
    assert buffer_prior(rewards, grid) == pytest.approx([3 / 8, 3 / 8, 2 / 8])
    # a grid reward that no reward is nearest to drops out with weight 0
    assert buffer_prior([0.9, 1.0], [-1.0, 0.0, 1.0]) == [0.0, 0.0, 1.0]
    for rewards, grid in (([], [0.0]), ([0.1], []), ([0.1], [0.5, 0.0]), ([0.1], [0.0, 0.0])):
        with pytest.raises(ValueError):
            buffer_prior(rewards, grid)


def test_even_grid_spans_the_rewards():
    assert even_grid([0.5, -1.0, 1.0, 0.2], 5) == pytest.approx([-1.0, -0.5, 0.0, 0.5, 1.0])
    assert len(even_grid([0.0, 2.0])) == 5
    with pytest.raises(ValueError):
        even_grid([], 3)
    with pytest.raises(ValueError):
        even_grid([0.0, 1.0], 1)

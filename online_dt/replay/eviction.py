"""Which samples the replay buffer holds: FIFO eviction that spares the best ones.

With ``C = capacity`` and ``K`` reserved places, the held set is always *the K best samples
ever appended* (highest reward; ties go to the newer sample) *plus the C - K most recent of
all other samples*. Operationally: after each insertion beyond capacity, the oldest sample that
is not among the K best held ones is evicted (FIFO that skips the reserved best). The rule is
applied sample by sample, so the held set does not depend on how samples were batched, and
:meth:`Evictor.rebuild` computes it in closed form for a resumed buffer.
"""

from __future__ import annotations

import heapq

import numpy as np


class Evictor:
    """Held-set bookkeeping: the ``reserved`` best (reward, id) in a min-heap, the others in a
    min-heap of ids (oldest first). Invariant: every 'rest' key is below every 'top' key.

    Args:
        capacity: most samples held (>= 1).
        reserved: places kept for the best samples (``0 <= reserved <= capacity``).
    """

    def __init__(self, capacity: int, reserved: int) -> None:
        self.capacity = capacity
        self.reserved = reserved
        self.top: list[tuple[float, int]] = []
        self.rest: list[int] = []

    def insert(self, sample_id: int, reward: float) -> int | None:
        """Add a sample (ids must increase); return the id evicted, if any."""
        if self.reserved:
            item = (reward, sample_id)
            if len(self.top) < self.reserved:
                heapq.heappush(self.top, item)
            elif item > self.top[0]:
                heapq.heappush(self.rest, heapq.heapreplace(self.top, item)[1])
            else:
                heapq.heappush(self.rest, sample_id)
        else:
            heapq.heappush(self.rest, sample_id)
        if len(self.top) + len(self.rest) > self.capacity:
            return heapq.heappop(self.rest)
        return None

    @classmethod
    def rebuild(
        cls, capacity: int, reserved: int, last_id: int, rewards: np.ndarray | None
    ) -> Evictor:
        """The state after inserting ids ``0 .. last_id`` one by one (closed form).

        The K best ever are never evicted (fewer than K samples beat them), and among the
        others FIFO keeps the most recent ``capacity - K``. ``rewards[i]`` is id i's reward;
        it may be None when ``reserved`` is 0.
        """
        ev = cls(capacity, reserved)
        n = last_id + 1
        if reserved and n > 0:
            assert rewards is not None and len(rewards) == n
            ids = np.arange(n, dtype=np.int64)
            order = np.lexsort((ids, rewards))  # ascending by (reward, id)
            top_ids = order[-reserved:]
            ev.top = [(float(rewards[i]), int(i)) for i in top_ids]
            heapq.heapify(ev.top)
            is_top = np.zeros(n, dtype=bool)
            is_top[top_ids] = True
            others = ids[~is_top]
            ev.rest = others[max(0, len(others) - (capacity - len(ev.top))) :].tolist()
        else:
            ev.rest = list(range(max(0, n - capacity), n))
        return ev

    def held_ids(self) -> np.ndarray:
        """``int64[held]``: the ids held now, sorted."""
        ids = np.array([i for _, i in self.top] + self.rest, dtype=np.int64)
        ids.sort()
        return ids

"""Incremental reading of an append-only JSON-lines file (``metrics.jsonl``, ``samples.jsonl``).

:class:`JsonlTail` parses only complete lines (ending in a newline), so a torn last line of a
concurrent append is read once it is complete; a line that is not a JSON object is skipped. A
file replaced or cut (resume rewrites the logs) is read again from the start and its
``generation`` increases. Non-finite floats (NaN, inf) become ``None``.
"""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from pathlib import Path
from typing import Any

from online_dt.launch.rundir import finite_or_none as finite


class JsonlTail:
    """Incremental reader of an append-only JSON-lines file.

    Args:
        path: the file (it may not exist yet).
        keep: hold at most this many of the newest records (``None``: all).
    """

    def __init__(self, path: Path, keep: int | None = None) -> None:
        self.path = path
        self.keep = keep
        self._records: deque[dict[str, Any]] = deque(maxlen=keep)
        self._offset = 0
        self._ident: tuple[int, int] | None = None
        self._generation = 0
        self._lock = threading.Lock()

    def _reset(self) -> None:
        if self._offset or self._records:
            self._generation += 1
        self._records = deque(maxlen=self.keep)
        self._offset = 0

    def read(self, path: Path | None) -> tuple[list[dict[str, Any]], int]:
        """The complete records read so far, after reading what was appended since the last
        call, and the file's generation (bumped whenever the file was replaced or shrank).

        Args:
            path: the checked path to read now, or ``None`` when the file is absent or refused.
        """
        with self._lock:
            if path is None:
                self._reset()
                self._ident = None
                return [], self._generation
            try:
                with open(path, "rb") as f:
                    st = os.fstat(f.fileno())
                    ident = (st.st_dev, st.st_ino)
                    if ident != self._ident or st.st_size < self._offset:
                        self._reset()
                        self._ident = ident
                    if st.st_size > self._offset:
                        f.seek(self._offset)
                        data = f.read(st.st_size - self._offset)
                        end = data.rfind(b"\n")
                        if end >= 0:
                            self._offset += end + 1
                            self._parse(data[: end + 1])
            except FileNotFoundError:
                self._reset()
                self._ident = None
            return list(self._records), self._generation

    def _parse(self, chunk: bytes) -> None:
        for line in chunk.split(b"\n"):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash, then continued by a later append
            if isinstance(record, dict):
                self._records.append(finite(record))

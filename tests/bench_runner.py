"""Run ``bench/peers.py`` as a user would, for the tests that check its output."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run_peers(args: Sequence[str], out: Path, timeout: float = 600) -> tuple[dict[str, Any], str]:
    """``python bench/peers.py ARGS --no-progress --out=OUT`` from the repository root.

    Returns:
        ``peers.json`` (parsed) and the script's stdout.

    Raises:
        AssertionError: the script exited non-zero (the message holds its output's tail).
    """
    cmd = [sys.executable, str(ROOT / "bench" / "peers.py"), *args, "--no-progress", f"--out={out}"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "peers.json").read_text()), done.stdout

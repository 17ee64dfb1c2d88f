"""Crash-safe writes into a run directory: write to a temporary name, fsync, then rename.

Readers see the old file or the new one, never a part, after a process crash; the data and
the directory entry are fsynced, so a machine crash or power loss keeps them too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` so that readers see the old file or the new one,
    never a part.

    Raises:
        OSError: the directory is not writable or the disk is full; no partial file remains.
    """
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, data: Any) -> None:
    """:func:`atomic_write_text` of ``data`` as indented JSON."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def atomic_write_dir(path: str | Path, write: Callable[[Path], None]) -> None:
    """Build a directory with ``write(tmp_dir)`` next to ``path``, then swap it into place.

    An existing directory at ``path`` is replaced only after ``write`` succeeded.

    Raises:
        Whatever ``write`` raises; the temporary directory is removed and ``path`` is untouched.
        A write failure reported by native code as a plain ``Exception`` with an
        ``(os error N)`` message (the Rust ``tokenizers`` and ``safetensors`` do this) is
        raised as the :class:`OSError` it stands for.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        write(tmp)
        fsync_tree(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        native = re.search(r"\(os error (\d+)\)", str(e))
        if native and not isinstance(e, OSError):
            code = int(native.group(1))
            raise OSError(code, os.strerror(code), str(path)) from e
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Binary twin of :func:`atomic_write_text` (e.g. a PNG): old file or new one, never a part.

    Raises:
        OSError: the directory is not writable or the disk is full; no partial file remains.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fsync_dir(path: str | Path) -> None:
    """Flush a directory's entries (renames and deletions in it) to disk; best effort where
    the filesystem does not support it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: str | Path) -> None:
    """Flush every file under ``root`` and every directory's entries to disk (what a writer
    such as ``save_pretrained`` does not do itself)."""
    for folder, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(folder)

"""Which torch device a config's ``device`` field names."""

from __future__ import annotations

import torch


def resolve_device(device: str) -> torch.device:
    """Map ``auto``/``cpu``/``cuda[:N]`` to a torch device (``auto``: CUDA when available).

    Raises:
        ValueError: a CUDA device was asked for and CUDA is not available.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)

"""Keep freed memory in the process (glibc's ``mallopt``), so that a training step or a rollout
does not page its buffers in again from the OS every time.

With glibc's defaults a block of 128 KiB or more is first served by ``mmap`` and returned with
``munmap`` when freed; the threshold then rises with the largest block freed, up to 32 MiB, and
free memory at the top of a heap above twice that is given back to the OS. A process that
allocates and frees tens of megabytes per step (activations, logits, their gradients) thus
maps fresh pages again at every step, each page a fault the kernel serves by zeroing it. On
this project's 2-core machine the default loop's learner and sampler actors took 10,000 to
38,000 minor page faults per iteration each, at about 2.6 µs per fault; keeping the memory
made an iteration on Ray 7 % shorter (docs/method.md, round 17). Source of the defaults and
the two settings: glibc's ``mallopt(3)`` (``M_MMAP_THRESHOLD``, ``M_TRIM_THRESHOLD``).
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
"""``mallopt`` parameter: free memory at a heap's top above this many bytes goes back to the OS."""

M_MMAP_THRESHOLD = -3
"""``mallopt`` parameter: blocks of at least this many bytes are served by ``mmap``."""

MMAP_THRESHOLD_BYTES = 32 << 20
"""32 MiB: the ceiling glibc's own dynamic threshold rises to on 64-bit systems."""

TRIM_THRESHOLD_BYTES = 1 << 30
"""1 GiB of free memory may stay at a heap's top before glibc gives it back."""


def glibc() -> ctypes.CDLL | None:
    """The C library this interpreter is linked with, if it is glibc (it has
    ``gnu_get_libc_version``); ``None`` elsewhere (macOS, musl, Windows)."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: AttributeError elsewhere)
    except (OSError, AttributeError, TypeError):
        return None
    return libc


def retain_freed_memory(
    mmap_threshold: int = MMAP_THRESHOLD_BYTES, trim_threshold: int = TRIM_THRESHOLD_BYTES
) -> bool:
    """Set glibc's ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` for this process, so that
    blocks below ``mmap_threshold`` bytes come from the heap and freed memory stays there
    until more than ``trim_threshold`` bytes of it sit at a heap's top.

    Setting either value also turns off glibc's dynamic adjustment of both. The cost: up to
    ``trim_threshold`` bytes of freed memory per heap stay counted in the process's resident
    size instead of going back to the OS. Blocks of ``mmap_threshold`` or more are mapped and
    unmapped as before. Affects allocations and frees made after the call.

    Args:
        mmap_threshold: bytes, 0 to 2**31 - 1.
        trim_threshold: bytes, 0 to 2**31 - 1.

    Returns:
        ``True`` if glibc accepted both settings; ``False`` where the C library is not glibc
        (macOS, musl: nothing changes) or glibc refused a value (a setting it accepted before
        the refusal stays); logged at debug.

    Raises:
        ValueError: a value is negative or above a C ``int``'s 2**31 - 1.

    Source: glibc's ``mallopt(3)``.
    """
    for name, value in (("mmap_threshold", mmap_threshold), ("trim_threshold", trim_threshold)):
        if not 0 <= value <= 2**31 - 1:
            raise ValueError(f"{name} must be between 0 and 2**31 - 1 bytes, not {value}")
    libc = glibc()
    if libc is None:
        log.debug("not glibc: freed memory is returned to the OS as the C library decides")
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success, 0 on a refused value
    accepted = mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1
    accepted = mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1 and accepted
    if not accepted:
        log.debug(
            "glibc refused mallopt(mmap_threshold=%d, trim_threshold=%d)",
            mmap_threshold,
            trim_threshold,
        )
    return accepted

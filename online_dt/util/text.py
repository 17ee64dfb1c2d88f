"""Short text for messages: a value cut to a length, the first line of an error."""

from __future__ import annotations


def shorten(text: str, limit: int = 40) -> str:
    """``repr`` of ``text`` cut to at most ``limit`` characters of content, ``…`` marking a cut.

    Args:
        text: any string.
        limit: characters kept (>= 2), the ellipsis included.
    """
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def first_line(error: BaseException) -> str:
    """The first line of an error's message (Ray appends remote tracebacks), or its type."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__

"""The ``dashboard`` section: the run's read-only web dashboard."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from pydantic import Field, field_validator

from online_dt.config.base import StrictModel

TOKEN_ENV = "ONLINE_DT_DASHBOARD_TOKEN"
"""Environment variable holding the dashboard's access token; when set and not empty it wins
over ``dashboard.token`` (and ``online-dt dashboard --token`` wins over both)."""

_TOKEN_RE = re.compile(r"[A-Za-z0-9._~+/=-]{16,512}")


def check_token(token: str) -> str:
    """``token`` unchanged if it can serve as the dashboard's access token: 16 to 512
    characters of ``A-Z a-z 0-9 . _ ~ + / = -`` (what ``secrets.token_urlsafe``, base64 and hex
    produce; safe in an ``Authorization`` header and a URL).

    Raises:
        ValueError: anything else. The message never contains the token.
    """
    if not isinstance(token, str) or _TOKEN_RE.fullmatch(token) is None:
        raise ValueError(
            "a dashboard token must be 16 to 512 characters of A-Z a-z 0-9 . _ ~ + / = - "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return token


def resolve_token(
    configured: str | None,
    explicit: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """The dashboard's token: ``explicit`` (``online-dt dashboard --token``) if given, else the
    environment variable ``ONLINE_DT_DASHBOARD_TOKEN`` if set and not empty, else
    ``configured`` (``dashboard.token``); ``None``: no authentication.

    Args:
        configured: ``dashboard.token`` of the config (already validated).
        explicit: a token given on the command line.
        environ: the environment to read (``os.environ`` by default).

    Raises:
        ValueError: the chosen token is not a valid token (see
            :func:`online_dt.config.dashboard.check_token`); the message names where it came
            from, never the token.
    """
    env = os.environ if environ is None else environ
    for token, source in (
        (explicit, "--token"),
        (env.get(TOKEN_ENV) or None, TOKEN_ENV),
        (configured, "dashboard.token"),
    ):
        if token is not None:
            try:
                return check_token(token)
            except ValueError as e:
                raise ValueError(f"{source}: {e}") from None
    return None


class DashboardConfig(StrictModel):
    """The run's read-only web dashboard (started by ``online-dt run``)."""

    enabled: bool = True
    """Start the dashboard with the run (its URL is logged at start)."""

    host: str = "127.0.0.1"
    """Bind address; ``0.0.0.0`` exposes it on every interface (e.g. behind a cluster's head).
    A host other than loopback without a token logs a warning at start."""

    port: int = Field(8470, ge=0, le=65535)
    """TCP port (0: any free port)."""

    poll_interval_s: float = Field(2.0, gt=0.0, le=3600.0)
    """How often the page asks the server for new iterations, in seconds."""

    recent_samples: int = Field(50, ge=1, le=10_000)
    """Rows in the table of recent samples."""

    token: str | None = None
    """Access token (16 to 512 characters of ``A-Z a-z 0-9 . _ ~ + / = -``). When set, every
    request (page, assets, API) needs it, as ``Authorization: Bearer <token>`` or as the login
    cookie a browser gets from ``/login`` or ``/?token=<token>``; without it, 401. The
    environment variable ``ONLINE_DT_DASHBOARD_TOKEN``, when set and not empty, wins over this
    field (and keeps the token out of the run directory's ``config.yaml``, which stores this
    field). ``None`` and no variable: no authentication."""

    @field_validator("token")
    @classmethod
    def _valid_token(cls, value: str | None) -> str | None:
        return None if value is None else check_token(value)

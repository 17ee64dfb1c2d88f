"""The ``dashboard`` section: the run's read-only web dashboard."""

from __future__ import annotations

from pydantic import Field

from online_dt.config.base import StrictModel


class DashboardConfig(StrictModel):
    """The run's read-only web dashboard (started by ``online-dt run``)."""

    enabled: bool = True
    """Start the dashboard with the run (its URL is logged at start)."""

    host: str = "127.0.0.1"
    """Bind address; ``0.0.0.0`` exposes it on every interface (e.g. behind a cluster's head)."""

    port: int = Field(8470, ge=0, le=65535)
    """TCP port (0: any free port)."""

    poll_interval_s: float = Field(2.0, gt=0.0, le=3600.0)
    """How often the page asks the server for new iterations, in seconds."""

    recent_samples: int = Field(50, ge=1, le=10_000)
    """Rows in the table of recent samples."""

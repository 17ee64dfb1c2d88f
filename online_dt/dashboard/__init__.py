"""The run dashboard: a read-only web page over a run directory that updates as iterations land.

``online-dt run`` starts it (``dashboard`` section of the config; the URL is logged), and
``online-dt dashboard RUN_DIR`` serves it for any finished or running run. See
:mod:`online_dt.dashboard.app` for the routes and :mod:`online_dt.dashboard.reader` for how the
run directory is read while the run writes it.
"""

from __future__ import annotations

from online_dt.dashboard.server import DashboardError, DashboardHandle, serve, start_for_run

__all__ = ["DashboardError", "DashboardHandle", "create_app", "serve", "start_for_run"]


def __getattr__(name: str) -> object:
    if name == "create_app":  # imports FastAPI only when the app is built
        from online_dt.dashboard.app import create_app

        return create_app
    raise AttributeError(name)

"""Serving the dashboard with uvicorn in a background thread (for a run or the CLI).

The listening socket is bound here, before uvicorn starts, so a busy port fails at once with a
clear :class:`DashboardError` (uvicorn itself would only log and exit its thread). With
``fallback=True`` a busy port is logged as a warning and any free port is used instead: the
run's dashboard then still starts, and the log line gives the URL.

A host other than loopback without a token logs a warning (anyone who reaches the address can
read the run); with a token every request needs it (:mod:`online_dt.dashboard.auth`).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from online_dt.config.dashboard import TOKEN_ENV, check_token, resolve_token

log = logging.getLogger("online_dt.dashboard")

LOOPBACK_NAMES = ["localhost", "127.0.0.1", "::1"]


class DashboardError(RuntimeError):
    """The dashboard could not bind its port or did not start."""


@dataclass
class DashboardHandle:
    """A running dashboard server.

    Attributes:
        url: ``http://host:port/`` it answers on.
        host: bind address.
        port: the bound TCP port (the actual one when 0 was asked for).
        token_required: whether requests need the dashboard's token.
    """

    url: str
    host: str
    port: int
    token_required: bool
    _server: Any
    _thread: threading.Thread

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the server to exit and wait up to ``timeout`` seconds for its thread."""
        self._server.should_exit = True
        self._thread.join(timeout)

    def wait(self) -> None:
        """Block until the server's thread ends (``stop()`` from another thread, or Ctrl-C
        here, which stops it)."""
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            self.stop()

    @property
    def alive(self) -> bool:
        """Whether the server thread is still running."""
        return self._thread.is_alive()


def _bind(host: str, port: int) -> socket.socket:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8470,
    *,
    poll_interval_s: float = 2.0,
    recent_samples: int = 50,
    fallback: bool = False,
    start_timeout_s: float = 15.0,
    token: str | None = None,
) -> DashboardHandle:
    """Serve the dashboard of ``run_dir`` from a daemon thread; returns once it answers.

    Args:
        run_dir: the run directory (read only).
        host: bind address (``127.0.0.1`` by default; ``0.0.0.0`` for every interface).
        port: TCP port; 0 picks any free port.
        poll_interval_s: the page's poll interval in seconds.
        recent_samples: rows of the recent-samples table.
        fallback: when ``port`` is busy, log a warning and bind any free port instead.
        start_timeout_s: how long to wait for uvicorn to start.
        token: the access token every request then needs (see
            :func:`~online_dt.config.dashboard.resolve_token` for where it comes from); ``None``:
            none, with a warning logged when ``host`` is not loopback.

    Raises:
        DashboardError: the address cannot be bound (busy port without ``fallback``, unknown
            host), ``token`` is not a valid token, or the server did not start in time.
    """
    import uvicorn

    from online_dt.dashboard.app import create_app

    if token is not None:
        try:
            check_token(token)
        except ValueError as e:
            raise DashboardError(str(e)) from None
    try:
        sock = _bind(host, port)
    except OSError as e:
        if not fallback or port == 0:
            raise DashboardError(f"cannot listen on {host}:{port}: {e}") from e
        log.warning(
            "dashboard port %d on %s is busy (%s); using a free port instead", port, host, e
        )
        try:
            sock = _bind(host, 0)
        except OSError as e2:
            raise DashboardError(f"cannot listen on {host}: {e2}") from e2
    bound_port = sock.getsockname()[1]
    app = create_app(
        run_dir,
        poll_interval_s=poll_interval_s,
        recent_samples=recent_samples,
        allowed_hosts=LOOPBACK_NAMES if _is_loopback(host) else None,
        token=token,
    )
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="online-dt-dashboard", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise DashboardError(f"the dashboard server on {host}:{bound_port} did not start")
        time.sleep(0.02)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound_port}/"
    if token is None and not _is_loopback(host):
        log.warning(
            "the dashboard on %s:%d has no token: anyone who can reach this address can read "
            "the run; set dashboard.token or %s, or bind 127.0.0.1 and use a tunnel",
            host,
            bound_port,
            TOKEN_ENV,
        )
    return DashboardHandle(url, host, bound_port, token is not None, server, thread)


def describe(handle: DashboardHandle) -> str:
    """``handle``'s URL, with a note when it needs the token (never the token itself)."""
    if not handle.token_required:
        return handle.url
    return f"{handle.url} (token required: log in at {handle.url}login)"


def start_for_run(run_dir: str | Path, cfg: Any) -> DashboardHandle | None:
    """Start the run's dashboard as configured (:class:`online_dt.config.DashboardConfig`; the
    token from :func:`~online_dt.config.dashboard.resolve_token`), logging its URL; ``None`` when
    disabled or when it cannot start, an invalid ``ONLINE_DT_DASHBOARD_TOKEN`` included (logged
    as a warning: the run goes on without it). A busy port falls back to a free one."""
    if not cfg.enabled:
        return None
    try:
        handle = serve(
            run_dir,
            cfg.host,
            cfg.port,
            poll_interval_s=cfg.poll_interval_s,
            recent_samples=cfg.recent_samples,
            fallback=True,
            token=resolve_token(cfg.token),
        )
    except Exception as e:  # the run must not fail because of its dashboard
        log.warning("dashboard not started: %s; the run continues without it", e)
        return None
    log.info("dashboard: %s", describe(handle))
    return handle

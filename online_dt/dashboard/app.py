"""The dashboard's FastAPI app: a page, its packaged static assets and a read-only JSON API.

Routes (all ``GET`` but the login form's ``POST``; anything else is 404 or 405):

* ``/`` the page; ``/static/<file>`` its assets, served only from an allow-list of the files
  packaged in ``online_dt/dashboard/static`` (no path from the request ever reaches the file
  system, so ``..``, encoded or not, and absolute paths are 404);
* ``/api/settings`` poll interval and table size for the page;
* ``/api/status`` iteration, policy version, buffer size, state, checkpoint, errors;
* ``/api/config`` the run's config and a summary;
* ``/api/metrics?since=I`` per-iteration records with ``iteration > I`` (``-1``: all);
* ``/api/samples?limit=N`` the newest N logged samples;
* ``/api/buffer?iteration=I&bins=B`` reward histogram of the replay buffer (now, and at I);
* ``/api/eval`` the latest ``online-dt eval`` report (``eval/calibration.json``, or
  ``eval/objectives.json`` of a run with several objectives with its grid table and summary,
  whichever was written last); ``/api/eval/plot.png`` its plot;
* ``/api/klplane`` the reward-vs-KL plane: each iteration's achieved mean reward against its KL
  to the base (nats per completion), the latest evaluation's targets, and the base model's own
  binned reference (:meth:`~online_dt.dashboard.eval_view.EvalView.kl_plane`);
* ``/api/pareto?cloud=N`` a run with several objectives: the replay buffer's empirical Pareto
  front, N of its reward vectors (evenly thinned), each iteration's target vector, the
  front's hypervolume per iteration and the latest ``objectives.json`` evaluation's achieved
  points and front (:meth:`~online_dt.dashboard.reader.RunReader.pareto`);
* ``/login`` (only with a token) the login form, and its ``POST``.

With a token (``create_app(..., token=...)``), the middleware answers every request without it,
to any path, with 401 before a route runs (or a redirect that logs a browser in): see
:mod:`online_dt.dashboard.auth`. ``/login`` is the only path open without the token; it shows
the form and nothing of the run.

No route serves an arbitrary file of the run directory: each reads one fixed name through
:class:`~online_dt.dashboard.reader.RunReader` or one of its parts, all of which read through
its :class:`~online_dt.dashboard.run_files.RunFiles`, which refuses symlinks that leave it. Query
parameters are validated (``since=abc`` or out-of-range values get 422) and every answer is
``Cache-Control: no-store``.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, JSONResponse
from starlette.requests import Request
from starlette.responses import Response

from online_dt.dashboard.auth import LOGIN_PATH, TokenAuth, login_page
from online_dt.dashboard.reader import MAX_CLOUD_POINTS, RunReader
from online_dt.dashboard.run_files import MAX_SAMPLES_KEPT

STATIC_DIR = Path(__file__).resolve().parent / "static"
"""The packaged page and its assets (``index.html``, ``app.js``, ``style.css``, ``vendor/``)."""

MAX_INT = 2**53 - 1
"""Largest iteration accepted in a query (JavaScript's largest exact integer)."""

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'none'"
)

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


def static_assets(root: Path = STATIC_DIR) -> dict[str, Path]:
    """The allow-list of servable assets: ``{relative posix path: absolute path}`` of every
    regular file under ``root`` that resolves inside it (symlinks out are left out)."""
    root = root.resolve()
    assets = {}
    for path in sorted(root.rglob("*")):
        resolved = path.resolve()
        if path.is_file() and resolved.is_relative_to(root):
            assets[path.relative_to(root).as_posix()] = resolved
    return assets


def create_app(
    run_dir: str | Path,
    *,
    poll_interval_s: float = 2.0,
    recent_samples: int = 50,
    allowed_hosts: list[str] | None = None,
    token: str | None = None,
) -> FastAPI:
    """The dashboard app over one run directory (which may not exist yet).

    Args:
        run_dir: the run directory to show.
        poll_interval_s: how often the page polls for new iterations (seconds, > 0).
        recent_samples: rows of the recent-samples table (1 .. 10000).
        allowed_hosts: if given, requests whose ``Host`` header names another host get 400
            (protects a loopback-bound server against DNS rebinding).
        token: if given, every request needs it (``Authorization: Bearer`` or the login
            cookie) and gets 401 without it; ``None``: no authentication.

    Raises:
        ValueError: ``poll_interval_s`` or ``recent_samples`` out of range, or ``token`` not a
            valid token (:func:`online_dt.config.dashboard.check_token`).
    """
    if not poll_interval_s > 0:
        raise ValueError(f"poll_interval_s must be > 0, got {poll_interval_s}")
    if not 1 <= recent_samples <= MAX_SAMPLES_KEPT:
        raise ValueError(f"recent_samples must be in 1..{MAX_SAMPLES_KEPT}, got {recent_samples}")
    auth = TokenAuth(token) if token is not None else None
    reader = RunReader(run_dir)
    assets = static_assets()
    app = FastAPI(title="online-dt dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.reader = reader
    hosts = {h.lower() for h in allowed_hosts} if allowed_hosts is not None else None

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        if hosts is not None and _host_name(request.headers.get("host", "")) not in hosts:
            response: Response = JSONResponse({"detail": "unknown host"}, status_code=400)
        elif (
            auth is not None
            and request.url.path != LOGIN_PATH
            and ("token" in request.query_params or not auth.authorized(request))
        ):  # a ?token= is always answered by challenge(), so it never stays in the address bar
            response = auth.challenge(request)
        else:
            response = await call_next(request)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers.setdefault("Content-Security-Policy", CSP)  # the login page sets its own
        return response

    def asset(name: str) -> FileResponse:
        path = assets.get(name)
        if path is None:
            raise HTTPException(status_code=404, detail="not found")
        media = _MEDIA_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
        return FileResponse(path, media_type=media or "application/octet-stream")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return asset("index.html")

    @app.get("/static/{name:path}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        return asset(name)

    @app.get("/api/settings")
    def settings() -> dict[str, Any]:
        return {
            "poll_interval_s": poll_interval_s,
            "recent_samples": recent_samples,
            "run_dir": str(reader.files.root),
            "name": reader.files.root.name,
        }

    @app.get("/api/status")
    def status() -> dict[str, Any]:
        return reader.status()

    @app.get("/api/config")
    def config() -> dict[str, Any]:
        return reader.config()

    @app.get("/api/metrics")
    def metrics(since: int = Query(-1, ge=-1, le=MAX_INT)) -> dict[str, Any]:
        return reader.files.metrics(since)

    @app.get("/api/samples")
    def samples(
        limit: int = Query(recent_samples, ge=1, le=MAX_SAMPLES_KEPT),
    ) -> dict[str, Any]:
        return reader.files.samples(limit)

    @app.get("/api/buffer")
    def buffer(
        iteration: int | None = Query(None, ge=-1, le=MAX_INT),
        bins: int = Query(30, ge=1, le=200),
    ) -> dict[str, Any]:
        return reader.buffer.buffer_histogram(iteration, bins)

    @app.get("/api/eval")
    def evaluation() -> dict[str, Any]:
        return reader.evals.evaluation()

    @app.get("/api/klplane")
    def kl_plane() -> dict[str, Any]:
        return reader.evals.kl_plane()

    @app.get("/api/pareto")
    def pareto(cloud: int = Query(1_000, ge=0, le=MAX_CLOUD_POINTS)) -> dict[str, Any]:
        return reader.pareto(cloud)

    @app.get("/api/eval/plot.png")
    def eval_plot(v: str | None = Query(None, max_length=64)) -> FileResponse:
        path = reader.evals.eval_plot()
        if path is None:
            raise HTTPException(status_code=404, detail="no evaluation plot")
        return FileResponse(path, media_type="image/png")

    if auth is not None:

        @app.get(LOGIN_PATH, include_in_schema=False)
        def login_form() -> Response:
            return login_page("Log in with the dashboard's token.")

        @app.post(LOGIN_PATH, include_in_schema=False)
        async def login(request: Request) -> Response:
            return await auth.login(request)

    return app


def _host_name(host: str) -> str:
    """The host of a ``Host`` header without its port (``[::1]:8470`` -> ``::1``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host

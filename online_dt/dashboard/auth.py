"""Token authentication of the dashboard: which token applies, and how a request proves it.

With a token, every request needs it, either as ``Authorization: Bearer <token>`` (scripts,
``curl``) or as the login cookie a browser gets from ``/login`` (a form) or from opening any
page with ``?token=<token>`` (redirected to ``/`` without it). The cookie holds neither the
token nor anything it can be read back from: its name and value are HMAC-SHA256 digests of
the token, so two dashboards with different tokens on one host keep separate cookies, and a
new token logs every browser out. Every comparison is :func:`secrets.compare_digest`.

The app (:func:`online_dt.dashboard.app.create_app`) applies :meth:`TokenAuth.authorized` in
its HTTP middleware, before any route, so a route added later is covered too.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import parse_qs

from fastapi.security.utils import get_authorization_scheme_param
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from online_dt.config.dashboard import check_token

LOGIN_PATH = "/login"
"""The login form (``GET``) and where it posts (``POST``); the one path open without a token."""

COOKIE_PREFIX = "online_dt_dashboard_"
"""Start of the login cookie's name (the rest is derived from the token)."""

MAX_LOGIN_BODY = 4096
"""Largest login form body accepted, in bytes (413 beyond)."""

LOGIN_CSP = "default-src 'none'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
"""Content-Security-Policy of the login page: no script, style or image; the form posts here."""

_LOGIN_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>online-dt dashboard: log in</title></head>
<body>
<h1>online-dt dashboard</h1>
<p>{message}</p>
<form method="post" action="/login">
<label>token <input type="password" name="token" autocomplete="current-password" required
autofocus></label>
<button type="submit">log in</button>
</form>
</body>
</html>
"""


def _digest(token: str, purpose: str) -> str:
    return hmac.new(token.encode(), f"online-dt dashboard {purpose}".encode(), "sha256").hexdigest()


def _same(given: str, expected: str) -> bool:
    return secrets.compare_digest(given.encode("utf-8", "replace"), expected.encode())


class TokenAuth:
    """Checks requests against one token (see the module's docstring).

    Args:
        token: the access token; validated with
            :func:`online_dt.config.dashboard.check_token`.

    Raises:
        ValueError: ``token`` is not a valid token.
    """

    def __init__(self, token: str) -> None:
        self._token = check_token(token)
        self.cookie_name = COOKIE_PREFIX + _digest(token, "cookie name")[:16]
        """The login cookie's name (unique to the token)."""
        self._session = _digest(token, "session")

    def matches(self, given: str) -> bool:
        """Whether ``given`` is the token (constant-time comparison)."""
        return _same(given, self._token)

    def authorized(self, request: Request) -> bool:
        """Whether the request carries ``Authorization: Bearer <token>`` or the login cookie."""
        scheme, credentials = get_authorization_scheme_param(request.headers.get("authorization"))
        if scheme.lower() == "bearer" and self.matches(credentials):
            return True
        cookie = request.cookies.get(self.cookie_name)
        return cookie is not None and _same(cookie, self._session)

    def challenge(self, request: Request) -> Response:
        """The answer to a request that is not :meth:`authorized`: a ``GET`` with the right
        ``?token=`` is redirected (303) to ``/`` with the login cookie set; anything else is 401
        (the login form for a browser asking for HTML, else JSON)."""
        given = request.query_params.get("token")
        if given is not None and request.method in ("GET", "HEAD") and self.matches(given):
            return self.login_redirect(request)
        if "text/html" in request.headers.get("accept", ""):
            message = "Wrong token." if given is not None else "This dashboard needs a token."
            return login_page(message, status_code=401)
        return JSONResponse(
            {"detail": "missing or wrong token"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="online-dt dashboard"'},
        )

    def login_redirect(self, request: Request) -> RedirectResponse:
        """A 303 redirect to ``/`` that sets the login cookie (HttpOnly, SameSite=Lax, Secure
        when the request came over HTTPS, valid until the browser closes)."""
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            self.cookie_name,
            self._session,
            path="/",
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
        return response

    async def login(self, request: Request) -> Response:
        """Handle the login form's ``POST`` (``application/x-www-form-urlencoded``, field
        ``token``): the right token is redirected like :meth:`login_redirect`, a wrong or
        missing one gets the form again with 401, a body over :data:`MAX_LOGIN_BODY` bytes 413,
        an undecodable one 400."""
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_LOGIN_BODY:
                return JSONResponse({"detail": "login form too large"}, status_code=413)
        try:
            fields = parse_qs(body.decode("utf-8"), max_num_fields=8)
        except ValueError:  # not UTF-8, or too many fields
            return JSONResponse({"detail": "malformed login form"}, status_code=400)
        given = fields.get("token", [""])[0]
        if self.matches(given):
            return self.login_redirect(request)
        return login_page("Wrong token.", status_code=401)


def login_page(message: str, status_code: int = 200) -> HTMLResponse:
    """The login form with a fixed ``message`` (never text from the request)."""
    return HTMLResponse(
        _LOGIN_PAGE.format(message=message),
        status_code=status_code,
        headers={"Content-Security-Policy": LOGIN_CSP},
    )

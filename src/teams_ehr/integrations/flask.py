"""Flask adapter: mount :data:`~teams_ehr.integrations.routes.ROUTES` on a sync host (requirement E2).

The runtime is async; a Flask worker thread reaches it through ONE long-lived anyio blocking
portal (an event loop in a background thread), never ``anyio.run`` per request: the runtime's
``httpx.AsyncClient`` and store must stay on the loop that opened them::

    bridge = FlaskTeamsEhr(TeamsEhr(settings))
    bridge.init_app(app)          # starts the portal, opens the runtime, registers routes
    ...
    bridge.close()                # optional: also done for you when the interpreter exits

The portal's thread would otherwise outlive the program (``flask routes`` or a script that builds
the app would never end): the bridge closes the runtime and stops the portal at interpreter exit
(:mod:`atexit`), or earlier when ``close()`` is called or its ``with`` block ends.

``init_app(app, url_prefix="/ehr", include={"visits", "jwks"})`` mounts a subset under a prefix,
checked like :func:`~teams_ehr.integrations.routes.mounted_routes` before anything starts. Unless
the host has its own 404 handler, ``init_app`` installs one that answers an unknown path with an
HTML page for a browser and ``{"detail": "Not Found"}`` for an API client (``not_found_page=False``
leaves 404s to Flask).

A :class:`~teams_ehr.web.WebStream` (the live roster) is streamed by pulling the async iterator
through the same portal, one chunk per call; closing the response closes the iterator.
"""

from __future__ import annotations

import atexit
import re
from collections.abc import AsyncIterator, Callable, Collection, Iterator
from contextlib import ExitStack
from typing import Any, Self

from anyio.from_thread import BlockingPortal, start_blocking_portal
from flask import Blueprint, Flask, Response, request
from werkzeug.exceptions import HTTPException

from teams_ehr.app import TeamsEhr
from teams_ehr.integrations.proxy import request_origin
from teams_ehr.integrations.routes import (
    SESSION_MAX_AGE,
    IncomingRequest,
    RouteSpec,
    browser_session,
    handle,
    mounted_routes,
    not_found,
    session_cookie_name,
)
from teams_ehr.web import WebStream

__all__ = ["FlaskTeamsEhr"]


def _not_found(_exc: HTTPException) -> Response:
    """404 negotiated on ``Accept`` (RFC 9110 §12.5.1): HTML for a browser, JSON otherwise."""
    result = not_found(request.path, request.headers.get("Accept"))
    response = Response(result.body, status=result.status, content_type=result.media_type)
    for name, value in result.headers:
        response.headers[name] = value
    return response


def _flask_path(path: str) -> str:
    return re.sub(r"\{(\w+)\}", r"<\1>", path)


class FlaskTeamsEhr:
    """Owns the blocking portal and the opened runtime for one Flask application."""

    def __init__(self, runtime: TeamsEhr) -> None:
        self.runtime = runtime
        self._stack = ExitStack()
        self._portal: BlockingPortal | None = None

    def __repr__(self) -> str:
        return "<FlaskTeamsEhr>"

    @property
    def portal(self) -> BlockingPortal:
        """The event loop that opened the runtime (started, and the runtime opened, on first
        use; a runtime that fails to open stops it again)."""
        if self._portal is None:
            portal = self._stack.enter_context(start_blocking_portal(backend="asyncio"))
            try:
                self._stack.enter_context(portal.wrap_async_context_manager(self.runtime))
            except BaseException:
                self._stack.close()
                raise
            self._portal = portal
            # Closed before the interpreter finalizes, while the portal's thread still runs.
            atexit.register(self.close)
        return self._portal

    def call(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run an async runtime function from a Flask thread and return its result."""
        return self.portal.call(func, *args)

    def init_app(
        self,
        app: Flask,
        *,
        url_prefix: str = "",
        include: Collection[str] | None = None,
        not_found_page: bool = True,
    ) -> None:
        """Open the runtime now (not on the first request) and register the ``include`` route
        groups (default: all) as the ``teams_ehr`` blueprint under ``url_prefix``, which
        ``app_base_url`` must end with (checked first: a refused mount starts nothing); with
        ``not_found_page`` and no 404 handler of the host's, install the negotiated 404."""
        mount = mounted_routes(self.runtime.settings, prefix=url_prefix, include=include)
        self.portal  # noqa: B018 - open the runtime now, not on the first request
        blueprint = Blueprint("teams_ehr", __name__, url_prefix=mount.prefix or None)
        for spec in mount.routes:
            blueprint.add_url_rule(
                _flask_path(spec.path), spec.name, self._view(spec), methods=list(spec.methods)
            )
        app.register_blueprint(blueprint)
        app.extensions["teams_ehr"] = self
        if not_found_page and not app.error_handler_spec.get(None, {}).get(404):
            app.register_error_handler(404, _not_found)

    def _view(self, spec: RouteSpec) -> Callable[..., Response]:
        def view(**path_params: str) -> Response:
            origin = request_origin(
                request.remote_addr,
                request.scheme,
                forwarded_for=request.headers.getlist("X-Forwarded-For"),
                forwarded_proto=request.headers.getlist("X-Forwarded-Proto"),
                trusted_proxies=self.runtime.settings.trusted_proxies,
            )
            secure = origin.secure
            cookie = session_cookie_name(secure=secure)
            session_id, fresh = browser_session(request.cookies.get(cookie))
            body = b""
            if spec.raw_body:
                from teams_ehr.attendance.webhook import MAX_BODY_BYTES

                body, fresh = request.stream.read(MAX_BODY_BYTES + 1), False
                params: dict[str, str] = {}
            else:
                source = request.form if request.method == "POST" else request.args
                params = dict(source.items())
            incoming = IncomingRequest(
                route=spec.name,
                path_params=path_params,
                params=params,
                session_id=session_id,
                client_key=origin.client,
                headers=dict(request.headers),
                query=dict(request.args.items()),
                body=body,
            )
            result = self.call(handle, self.runtime, incoming)
            if isinstance(result, WebStream):
                response = Response(
                    self._pull(result.chunks), status=result.status, content_type=result.media_type
                )
            else:
                response = Response(
                    result.body, status=result.status, content_type=result.media_type
                )
            for name, value in result.headers:
                response.headers[name] = value
            if fresh:
                response.set_cookie(
                    cookie,
                    session_id,
                    max_age=SESSION_MAX_AGE,
                    httponly=True,
                    secure=secure,
                    samesite="Lax",
                    path="/",
                )
            return response

        return view

    def _pull(self, chunks: AsyncIterator[bytes]) -> Iterator[bytes]:
        """A sync generator over ``chunks``; closing it (client gone) closes the iterator."""
        portal = self.portal
        try:
            while True:
                try:
                    yield portal.call(chunks.__anext__)
                except StopAsyncIteration:
                    return
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                portal.call(close)

    def close(self) -> None:
        """Close the runtime and stop the portal's event loop (idempotent; also at exit)."""
        atexit.unregister(self.close)
        self._portal = None
        self._stack.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

"""Starlette / FastAPI adapter: mount :data:`~teams_ehr.integrations.routes.ROUTES` (requirement E2).

::

    runtime = TeamsEhr(settings)
    app = FastAPI(
        lifespan=compose_lifespans(teams_ehr_lifespan(runtime), host_lifespan),
        exception_handlers={404: teams_ehr_not_found},
    )
    app.router.routes.extend(teams_ehr_routes(runtime, prefix="/ehr", include={"visits", "jwks"}))

:func:`teams_ehr_not_found` answers an unknown path with an HTML page for a browser and the
usual ``{"detail": …}`` JSON for an API client (content negotiation on ``Accept``).

Only translation happens here: request → :class:`IncomingRequest`, :class:`WebResponse` →
``Response`` (:class:`WebStream` → ``StreamingResponse``, which stops the stream when the client
disconnects), plus the session cookie (not on Graph's webhook routes). The client address and
scheme come from :func:`~teams_ehr.integrations.proxy.request_origin` (``trusted_proxies``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from teams_ehr.app import TeamsEhr
from teams_ehr.errors import UsageError
from teams_ehr.integrations.proxy import RequestOrigin, request_origin
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
from teams_ehr.web import WebResponse, WebStream, wants_html

__all__ = ["compose_lifespans", "teams_ehr_lifespan", "teams_ehr_not_found", "teams_ehr_routes"]

Lifespan = Callable[[Any], AbstractAsyncContextManager[Mapping[str, Any] | None]]


def teams_ehr_lifespan(
    runtime: TeamsEhr,
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A Starlette ``lifespan`` that opens and closes the runtime with the app."""

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        async with runtime:
            yield

    return lifespan


def compose_lifespans(*lifespans: Lifespan) -> Lifespan:
    """One Starlette ``lifespan`` running ``lifespans`` in order at start-up and in reverse
    order at shutdown, so a host lifespan given after :func:`teams_ehr_lifespan` finds the
    runtime open and is done before it closes. The state mappings they yield are merged into
    the lifespan state (``request.state``); a key yielded twice is a :class:`UsageError`."""

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Mapping[str, Any] | None]:
        async with AsyncExitStack() as stack:
            state: dict[str, Any] | None = None
            for each in lifespans:
                yielded = await stack.enter_async_context(each(app))
                if yielded is None:
                    continue
                state = {} if state is None else state
                if clash := sorted(state.keys() & yielded.keys()):
                    raise UsageError(
                        f"two lifespans yield the state key(s) {', '.join(clash)}",
                        reason="lifespan_state_conflict",
                    )
                state.update(yielded)
            yield state

    return lifespan


async def _capped_body(request: Request) -> bytes:
    """At most one byte more than the webhook accepts (it answers 413 past the limit)."""
    from teams_ehr.attendance.webhook import MAX_BODY_BYTES

    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            break
    return b"".join(chunks)[: MAX_BODY_BYTES + 1]


def _origin(runtime: TeamsEhr, request: Request) -> RequestOrigin:
    return request_origin(
        request.client.host if request.client else None,
        request.url.scheme,
        forwarded_for=request.headers.getlist("x-forwarded-for"),
        forwarded_proto=request.headers.getlist("x-forwarded-proto"),
        trusted_proxies=runtime.settings.trusted_proxies,
    )


def _endpoint(runtime: TeamsEhr, spec: RouteSpec) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        origin = _origin(runtime, request)
        secure = origin.secure
        cookie = session_cookie_name(secure=secure)
        session_id, fresh = browser_session(request.cookies.get(cookie))
        body = b""
        if spec.raw_body:
            body, fresh = await _capped_body(request), False
            params: dict[str, str] = {}
        elif request.method == "POST":
            params = await _urlencoded_form(request)
        else:
            params = dict(request.query_params)
        incoming = IncomingRequest(
            route=spec.name,
            path_params={k: str(v) for k, v in request.path_params.items()},
            params=params,
            session_id=session_id,
            client_key=origin.client,
            headers=dict(request.headers),
            query=dict(request.query_params),
            body=body,
        )
        response = _to_starlette(await handle(runtime, incoming))
        if fresh:
            response.set_cookie(
                cookie,
                session_id,
                max_age=SESSION_MAX_AGE,
                httponly=True,
                secure=secure,
                samesite="lax",
                path="/",
            )
        return response

    return endpoint


MAX_FORM_BYTES = 65_536


async def _urlencoded_form(request: Request) -> dict[str, str]:
    """The ``application/x-www-form-urlencoded`` body (all our forms), without python-multipart;
    anything else or anything larger than 64 KiB is treated as an empty form."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if media != "application/x-www-form-urlencoded" or len(body) > MAX_FORM_BYTES:
        return {}
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def _to_starlette(result: WebResponse | WebStream) -> Response:
    response: Response
    if isinstance(result, WebStream):
        response = StreamingResponse(
            result.chunks, status_code=result.status, media_type=result.media_type
        )
    else:
        response = Response(result.body, status_code=result.status, media_type=result.media_type)
    for name, value in result.headers:
        response.headers[name] = value
    return response


def teams_ehr_routes(
    runtime: TeamsEhr, *, prefix: str = "", include: Collection[str] | None = None
) -> list[Route]:
    """Starlette routes for the ``include`` groups (default: all of ``ROUTE_GROUPS``) under
    ``prefix``; ``app_base_url`` must end with the prefix (see
    :func:`~teams_ehr.integrations.routes.mounted_routes`)."""
    mount = mounted_routes(runtime.settings, prefix=prefix, include=include)
    return [
        Route(
            mount.prefix + spec.path,
            _endpoint(runtime, spec),
            methods=list(spec.methods),
            name=spec.name,
        )
        for spec in mount.routes
    ]


async def teams_ehr_not_found(request: Request, exc: Exception) -> Response:
    """A Starlette/FastAPI exception handler for 404 (``exception_handlers={404: …}``): a
    browser gets the HTML page of :func:`~teams_ehr.integrations.routes.not_found`, an API
    client ``{"detail": …}`` as before (RFC 9110 §12.5.1 proactive negotiation)."""
    accept = request.headers.get("accept")
    if wants_html(accept):
        return _to_starlette(not_found(request.url.path, accept))
    headers = getattr(exc, "headers", None)
    detail = getattr(exc, "detail", None) or "Not Found"
    return JSONResponse({"detail": detail}, status_code=404, headers=headers)

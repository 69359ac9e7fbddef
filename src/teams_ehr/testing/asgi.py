"""Serve any httpx handler as an ASGI 3 application (requirement E1).

Every fake is a function ``httpx.Request -> httpx.Response`` (the ``httpx.MockTransport`` seam);
:func:`asgi_app_from_handler` turns one into an ASGI app so the same fake can run behind uvicorn
on loopback, reached with real sockets. No web framework is needed. ``lifespan`` events are
acknowledged; websocket scopes are refused.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx

__all__ = ["ASGIApp", "Handler", "asgi_app_from_handler"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Handler = Callable[[httpx.Request], "httpx.Response | Awaitable[httpx.Response]"]

_MAX_BODY = 16 * 1024 * 1024


def _request_url(scope: Scope) -> str:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    host = headers.get("host")
    if host is None:
        server = scope.get("server") or ("127.0.0.1", 80)
        host = f"{server[0]}:{server[1]}"
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else scope.get("root_path", "") + scope["path"]
    query = scope.get("query_string", b"").decode("latin-1")
    return f"{scope.get('scheme', 'http')}://{host}{path}" + (f"?{query}" if query else "")


async def _read_body(receive: Receive) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        body += message.get("body", b"")
        if len(body) > _MAX_BODY:
            raise ValueError("request body too large")
        if not message.get("more_body", False):
            break
    return bytes(body)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def asgi_app_from_handler(handler: Handler) -> ASGIApp:
    """An ASGI app that builds an ``httpx.Request`` per HTTP request and answers with the
    handler's ``httpx.Response`` (sync or async handler)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise RuntimeError(f"unsupported ASGI scope {scope['type']!r}")
        body = await _read_body(receive)
        request = httpx.Request(
            scope["method"],
            _request_url(scope),
            headers=[(k, v) for k, v in scope["headers"]],
            content=body,
        )
        result = handler(request)
        response = await result if inspect.isawaitable(result) else result
        try:
            content = response.content
        except httpx.ResponseNotRead:
            content = await response.aread()
        headers = [
            (k.lower(), v)
            for k, v in response.headers.raw
            if k.lower() not in (b"content-length", b"transfer-encoding", b"content-encoding")
        ]
        headers.append((b"content-length", str(len(content)).encode()))
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers}
        )
        await send({"type": "http.response.body", "body": content})

    return app

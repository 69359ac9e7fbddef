"""Sans-IO protocol flows and the two drivers that run them on an httpx client.

Every protocol in teams-ehr (SMART discovery, authorization, token requests, id_token checks, the
Graph and Entra token requests, FHIR writes) is a :data:`Flow`: a generator that yields an
:class:`httpx.Request`, receives the :class:`httpx.Response` and finally returns its result. It
never opens a socket. This is httpx's own ``Auth.auth_flow`` shape
(https://www.python-httpx.org/advanced/authentication/#custom-authentication-schemes), and it
lets one flow serve sync and async callers, and tests drive it by hand.

:func:`run_sync` and :func:`run_async` are the drivers; they send each request with
:func:`send_sync` / :func:`send_async`:

* redirects are never followed, and a body is read under a size cap
  (:data:`DEFAULT_MAX_RESPONSE_BYTES`, or the request's :func:`with_max_bytes`) — past it,
  :class:`ResponseTooLargeError`;
* a network failure becomes :class:`~teams_ehr.errors.TransportError` (without the URL's query
  string) and is thrown *into* the flow at its ``yield``, so the flow decides (retry a connection
  failure, serve a stale JWKS); a flow that does not catch it lets it propagate;
* a request marked with :func:`with_delay` is sent only after that many seconds, so a flow can
  honour ``Retry-After`` without sleeping itself. ``sleep`` is a parameter of both drivers.

``run_async`` works on asyncio and trio (anyio). See docs/primitives/sansio.md.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
import httpx

from teams_ehr._redact import redact_url
from teams_ehr._types import Flow, T
from teams_ehr.errors import TransportError

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "Flow",
    "ResponseTooLargeError",
    "delay_of",
    "max_bytes_of",
    "run_async",
    "run_sync",
    "send_async",
    "send_sync",
    "with_delay",
    "with_max_bytes",
]

_DELAY = "teams_ehr_delay_seconds"
_MAX_BYTES = "teams_ehr_max_bytes"
DEFAULT_MAX_RESPONSE_BYTES = 1_048_576
"""Cap on a response body read by the drivers (1 MiB); flows may ask for less."""


class ResponseTooLargeError(TransportError):
    """A peer sent a body larger than the cap."""

    default_reason = "response_too_large"


# -- request marks ------------------------------------------------------------------------------


def with_delay(request: httpx.Request, seconds: float) -> httpx.Request:
    """Ask the driver to wait ``seconds`` before sending ``request``; returns ``request``."""
    request.extensions = {**request.extensions, _DELAY: max(0.0, seconds)}
    return request


def delay_of(request: httpx.Request) -> float:
    """The wait requested by :func:`with_delay` (0 if none)."""
    return float(request.extensions.get(_DELAY, 0.0))


def with_max_bytes(request: httpx.Request, limit: int) -> httpx.Request:
    """Mark ``request`` so the drivers refuse a response body over ``limit`` bytes."""
    request.extensions = {**request.extensions, _MAX_BYTES: limit}
    return request


def max_bytes_of(request: httpx.Request) -> int:
    """The body cap of ``request``: its :func:`with_max_bytes` mark or the default."""
    return int(request.extensions.get(_MAX_BYTES, DEFAULT_MAX_RESPONSE_BYTES))


# -- sending one request ------------------------------------------------------------------------


def _transport_error(request: httpx.Request, exc: httpx.TransportError) -> TransportError:
    return TransportError(f"{type(exc).__name__} on {request.method} {redact_url(request.url)}")


def _check_size(request: httpx.Request, size: int, limit: int) -> None:
    if size > limit:
        raise ResponseTooLargeError(f"response over {limit} bytes from {redact_url(request.url)}")


def _buffered(response: httpx.Response, body: bytes) -> httpx.Response:
    """The streamed response itself, its decoded ``body`` kept as its content (no second
    Response): ``Content-Encoding`` goes, since the body is no longer encoded (RFC 9110 §8.4);
    every other header stays as received, raw bytes included (RFC 9110 §5.5)."""
    if "content-encoding" in response.headers:
        del response.headers["content-encoding"]
    response._content = body  # what Response.read() sets; the stream is consumed and closed
    return response


def send_sync(client: httpx.Client, request: httpx.Request) -> httpx.Response:
    """Send one request: no redirects, body read under the size cap."""
    limit = max_bytes_of(request)
    try:
        response = client.send(request, follow_redirects=False, stream=True)
        try:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                _check_size(request, len(body), limit)
        finally:
            response.close()
    except httpx.TransportError as exc:
        raise _transport_error(request, exc) from exc
    return _buffered(response, bytes(body))


async def send_async(client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """Send one request: no redirects, body read under the size cap."""
    limit = max_bytes_of(request)
    try:
        response = await client.send(request, follow_redirects=False, stream=True)
        try:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                _check_size(request, len(body), limit)
        finally:
            await response.aclose()
    except httpx.TransportError as exc:
        raise _transport_error(request, exc) from exc
    return _buffered(response, bytes(body))


# -- the drivers --------------------------------------------------------------------------------


def run_sync(
    flow: Flow[T], client: httpx.Client, *, sleep: Callable[[float], None] = time.sleep
) -> T:
    """Drive ``flow`` to completion on a synchronous client and return its result."""
    try:
        request = next(flow)
        while True:
            if (delay := delay_of(request)) > 0:
                sleep(delay)
            try:
                response = send_sync(client, request)
            except TransportError as exc:
                request = flow.throw(exc)
            else:
                request = flow.send(response)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def run_async(
    flow: Flow[T],
    client: httpx.AsyncClient,
    *,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> T:
    """Drive ``flow`` to completion on an asynchronous client (asyncio or trio)."""
    try:
        request = next(flow)
        while True:
            if (delay := delay_of(request)) > 0:
                await sleep(delay)
            try:
                response = await send_async(client, request)
            except TransportError as exc:
                request = flow.throw(exc)
            else:
                request = flow.send(response)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]

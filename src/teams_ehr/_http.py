"""Drivers that run a sans-IO :data:`~teams_ehr._types.Flow` on an httpx client.

The protocol logic lives in generators that yield :class:`httpx.Request` and receive
:class:`httpx.Response` (DESIGN.md rule 3); these two drivers are the only places that do I/O for
them. Responses are read under a size cap, redirects are never followed, and network failures
become :class:`~teams_ehr.errors.TransportError` without the URL's query string. Two more rules
let flows recover without doing I/O themselves:

* a :class:`~teams_ehr.errors.TransportError` is thrown *into* the flow at its ``yield``, so the
  flow decides (retry a connection failure, serve a stale JWKS) — a flow that does not catch it
  lets it propagate as before;
* a request marked with :func:`with_delay` is sent only after that many seconds, so a flow can
  honour ``Retry-After`` without sleeping itself.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
import httpx

from teams_ehr._redact import redact_url
from teams_ehr._types import Flow, T
from teams_ehr.errors import TransportError

_DELAY = "teams_ehr_delay_seconds"
DEFAULT_MAX_RESPONSE_BYTES = 1_048_576
"""Cap on a response body read by the drivers (1 MiB); flows may ask for less."""


class ResponseTooLargeError(TransportError):
    """A peer sent a body larger than the cap."""

    default_reason = "response_too_large"


def _transport_error(request: httpx.Request, exc: httpx.TransportError) -> TransportError:
    return TransportError(f"{type(exc).__name__} on {request.method} {redact_url(request.url)}")


def _check_size(request: httpx.Request, size: int, limit: int) -> None:
    if size > limit:
        raise ResponseTooLargeError(f"response over {limit} bytes from {redact_url(request.url)}")


def _limit(request: httpx.Request) -> int:
    return int(request.extensions.get("teams_ehr_max_bytes", DEFAULT_MAX_RESPONSE_BYTES))


def send_sync(client: httpx.Client, request: httpx.Request) -> httpx.Response:
    """Send one request: no redirects, body read under the size cap."""
    limit = _limit(request)
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
    limit = _limit(request)
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


def _buffered(response: httpx.Response, body: bytes) -> httpx.Response:
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() != "content-encoding"]
    return httpx.Response(
        response.status_code, headers=headers, content=body, request=response.request
    )


def with_delay(request: httpx.Request, seconds: float) -> httpx.Request:
    """Ask the driver to wait ``seconds`` before sending ``request``."""
    request.extensions = {**request.extensions, _DELAY: max(0.0, seconds)}
    return request


def delay_of(request: httpx.Request) -> float:
    """The wait requested by :func:`with_delay` (0 if none)."""
    return float(request.extensions.get(_DELAY, 0.0))


def run_sync(
    flow: Flow[T], client: httpx.Client, *, sleep: Callable[[float], None] = time.sleep
) -> T:
    """Drive ``flow`` to completion on a synchronous client."""
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


def with_max_bytes(request: httpx.Request, limit: int) -> httpx.Request:
    """Mark ``request`` so the drivers refuse a response body over ``limit`` bytes."""
    request.extensions = {**request.extensions, "teams_ehr_max_bytes": limit}
    return request

"""Flow drivers for flows that recover from network failures or wait between attempts.

Like :func:`teams_ehr._http.run_sync` / ``run_async`` (same sending, size cap and no redirects),
with two additions the token and JWKS flows need:

* a :class:`~teams_ehr.errors.TransportError` is thrown *into* the flow at its ``yield``, so the
  flow decides (retry a connection failure, serve a stale JWKS) instead of dying;
* a request carrying the ``teams_ehr_delay_seconds`` extension (see :func:`with_delay`) is sent
  only after that many seconds, so a flow can honour ``Retry-After`` without sleeping itself.

A flow driven by the plain ``_http`` drivers still works: failures propagate, delays are skipped.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
import httpx

from teams_ehr._http import send_async, send_sync
from teams_ehr._types import Flow, T
from teams_ehr.errors import TransportError

__all__ = ["delay_of", "drive_async", "drive_sync", "with_delay"]

_DELAY = "teams_ehr_delay_seconds"


def with_delay(request: httpx.Request, seconds: float) -> httpx.Request:
    """Ask the driver to wait ``seconds`` before sending ``request``."""
    request.extensions = {**request.extensions, _DELAY: max(0.0, seconds)}
    return request


def delay_of(request: httpx.Request) -> float:
    """The wait requested by :func:`with_delay` (0 if none)."""
    return float(request.extensions.get(_DELAY, 0.0))


def drive_sync(
    flow: Flow[T], client: httpx.Client, *, sleep: Callable[[float], None] = time.sleep
) -> T:
    """Drive ``flow`` on a synchronous client, throwing transport failures into it."""
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


async def drive_async(
    flow: Flow[T],
    client: httpx.AsyncClient,
    *,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> T:
    """Drive ``flow`` on an asynchronous client, throwing transport failures into it."""
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

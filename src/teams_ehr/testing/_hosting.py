"""Run an integrator's host application in-process, for :mod:`teams_ehr.testing.harness`.

Two kinds of host, one shape (:class:`HostedApp`): an ``httpx`` transport into the app, and a
way to run a coroutine on the event loop that owns the runtime.

* ASGI (FastAPI, Starlette): the app's lifespan runs on the test's own event loop (ASGI
  lifespan protocol 2.0, https://asgi.readthedocs.io/en/latest/specs/lifespan.html), so
  ``teams_ehr_lifespan`` opens the runtime there; requests go through ``httpx.ASGITransport``.
* WSGI (Flask): :class:`~teams_ehr.integrations.flask.FlaskTeamsEhr` owns the runtime on its
  blocking portal's loop. Each request runs ``httpx.WSGITransport`` in a worker thread (the
  view blocks on the portal), and the harness reaches the runtime through the same portal.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeVar

import anyio
import anyio.to_thread
import httpx

from teams_ehr.app import TeamsEhr
from teams_ehr.errors import TeamsEhrError, UsageError

__all__ = ["HostedApp", "Interface", "hosted"]

T = TypeVar("T")
Interface = Literal["asgi", "wsgi"]
INTERFACES: tuple[Interface, ...] = ("asgi", "wsgi")
DOCS = "docs/testing.md#the-host-harness"


class HostedApp:
    """A host application running in-process."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        call: Callable[[Callable[..., Awaitable[Any]], tuple[Any, ...]], Awaitable[Any]],
    ) -> None:
        self.transport = transport
        self._call = call

    def __repr__(self) -> str:
        return "<HostedApp>"

    async def call(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Await ``func(*args)`` on the event loop that owns the runtime."""
        result: T = await self._call(func, args)
        return result


def interface_of(app: object) -> Interface:
    """Whether ``app`` is an ASGI 3 application (``async (scope, receive, send)``) or a WSGI one
    (``(environ, start_response)``, PEP 3333)."""
    if inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(type(app).__call__):
        return "asgi"
    try:
        parameters = inspect.signature(app).parameters  # type: ignore[arg-type]
    except (TypeError, ValueError):
        parameters = None
    if parameters is not None and len(parameters) == 2:
        return "wsgi"
    raise UsageError(
        f"cannot tell whether the host {type(app).__name__} is an ASGI or a WSGI application. "
        f"Known options: interface={INTERFACES[0]!r}, interface={INTERFACES[1]!r}; see {DOCS}",
        reason="harness_usage",
    )


@asynccontextmanager
async def hosted(
    app: Any, runtime: TeamsEhr, interface: Interface | None = None
) -> AsyncIterator[HostedApp]:
    """Start ``app`` (built around ``runtime``), yield it, stop it."""
    kind = interface or interface_of(app)
    if kind not in INTERFACES:
        raise UsageError(
            f"unknown interface {kind!r}. Known options: {', '.join(INTERFACES)}; see {DOCS}",
            reason="harness_usage",
        )
    if kind == "asgi":
        async with _lifespan(app):
            _check_open(runtime)
            yield HostedApp(httpx.ASGITransport(app=app), _direct)
        return
    bridge = _flask_bridge(app)
    try:  # the bridge opened its portal when the app was built: close it whatever happens
        if bridge.runtime is not runtime:
            raise UsageError(
                "the host's FlaskTeamsEhr serves another runtime than the one the harness "
                f"passed to the app factory; build it from the factory's argument. See {DOCS}",
                reason="harness_usage",
            )
        yield HostedApp(_ThreadedWSGITransport(app), _through(bridge))
    finally:
        await anyio.to_thread.run_sync(bridge.close)


async def _direct(func: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> Any:
    return await func(*args)


def _through(bridge: Any) -> Callable[[Callable[..., Awaitable[Any]], tuple[Any, ...]], Any]:
    async def call(func: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> Any:
        return await anyio.to_thread.run_sync(bridge.call, func, *args)

    return call


def _check_open(runtime: TeamsEhr) -> None:
    try:
        runtime.store  # noqa: B018 - raises ConfigurationError(reason="not_open") when closed
    except TeamsEhrError:
        raise UsageError(
            "the host did not open its TeamsEhr runtime when it started: give the app "
            f"lifespan=teams_ehr_lifespan(runtime) (teams_ehr.integrations.starlette); see {DOCS}",
            reason="harness_usage",
        ) from None


def _flask_bridge(app: Any) -> Any:
    """The :class:`~teams_ehr.integrations.flask.FlaskTeamsEhr` that ``init_app`` registered."""
    bridge = getattr(app, "extensions", {}).get("teams_ehr")
    if bridge is None or not callable(getattr(bridge, "call", None)):
        raise UsageError(
            "a WSGI host must mount teams-ehr with FlaskTeamsEhr(runtime).init_app(app) "
            f"(teams_ehr.integrations.flask): the harness reaches the runtime through it; see {DOCS}",
            reason="harness_usage",
        )
    return bridge


# -- ASGI lifespan -----------------------------------------------------------------------------


@asynccontextmanager
async def _lifespan(app: Any) -> AsyncIterator[None]:
    """Run the app's lifespan in a task: startup before the body, shutdown after it."""
    to_app, app_inbox = anyio.create_memory_object_stream[dict[str, Any]](2)
    app_outbox, from_app = anyio.create_memory_object_stream[dict[str, Any]](2)
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}

    async def run() -> None:
        async with app_inbox, app_outbox:
            await app(scope, app_inbox.receive, app_outbox.send)

    try:
        async with anyio.create_task_group() as group, to_app, from_app:
            group.start_soon(run)
            await to_app.send({"type": "lifespan.startup"})
            await _expect(from_app, "startup")
            try:
                yield
            finally:
                with anyio.CancelScope(shield=True):
                    await to_app.send({"type": "lifespan.shutdown"})
                    await _expect(from_app, "shutdown")
    except BaseExceptionGroup as errors:
        # The task group wraps whatever the body raised (a failed assertion of the test, too):
        # hand a single error back as itself.
        if len(errors.exceptions) != 1:
            raise
        error = errors.exceptions[0]
        raise error from error.__cause__


async def _expect(messages: Any, phase: str) -> None:
    try:
        message = await messages.receive()
    except anyio.EndOfStream:
        message = {"type": f"lifespan.{phase}.failed", "message": "the app left the lifespan"}
    if message["type"] != f"lifespan.{phase}.complete":
        raise UsageError(
            f"the host's lifespan {phase} failed: {message.get('message') or message['type']}",
            reason="harness_usage",
        )


# -- WSGI in a worker thread -------------------------------------------------------------------


class _ThreadedWSGITransport(httpx.AsyncBaseTransport):
    """``httpx.WSGITransport`` for an ``AsyncClient``: each request (and each chunk of a
    streamed body) runs in a worker thread, so the event loop never blocks on the app."""

    def __init__(self, app: Any) -> None:
        self._wsgi = httpx.WSGITransport(app=app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        sync = httpx.Request(request.method, request.url, headers=request.headers, content=body)
        response = await anyio.to_thread.run_sync(self._wsgi.handle_request, sync)
        stream = response.stream
        if not isinstance(stream, httpx.SyncByteStream):  # pragma: no cover - httpx's contract
            raise TypeError("WSGITransport returned a non-sync stream")
        return httpx.Response(
            response.status_code, headers=response.headers, stream=_ThreadedStream(stream)
        )


class _ThreadedStream(httpx.AsyncByteStream):
    def __init__(self, stream: httpx.SyncByteStream) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks: Iterator[bytes] = iter(self._stream)
        while True:
            chunk = await anyio.to_thread.run_sync(next, chunks, None)
            if chunk is None:
                return
            yield chunk

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self._stream.close)

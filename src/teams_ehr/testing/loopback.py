"""Run an ASGI app on ``127.0.0.1`` with real sockets, in a background thread (requirement E1).

``serve_on_loopback(app)`` binds a random free port on the loopback interface, starts uvicorn on
it in a daemon thread (its own asyncio loop, so the caller may use any sync code or any anyio
backend), yields the base URL ``http://127.0.0.1:<port>`` and stops the server cleanly on exit
(graceful shutdown, thread joined, socket closed). ``serve_on_loopback_async`` is the same for
``async with`` callers; it polls with ``anyio.sleep`` so the event loop is never blocked (and no
worker thread is needed, which keeps it working on trio).

uvicorn is an optional dependency (``teams-ehr[fastapi]``); it is imported only when a server
starts.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio

from teams_ehr.testing.asgi import ASGIApp

__all__ = ["LoopbackServer", "serve_on_loopback", "serve_on_loopback_async"]

_START_TIMEOUT = 10.0


def _uvicorn() -> Any:
    try:
        import uvicorn
    except ModuleNotFoundError:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "serving on loopback requires uvicorn: pip install 'teams-ehr[fastapi]'"
        ) from None
    return uvicorn


class LoopbackServer:
    """One uvicorn server on a pre-bound loopback socket, run in a daemon thread."""

    def __init__(self, app: ASGIApp) -> None:
        uvicorn = _uvicorn()
        # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose
        # proto says TCP, and without it every keep-alive response waits ~40 ms (Nagle +
        # delayed ACK).
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, lifespan="off", log_config=None, log_level="warning", access_log=False, ws="none"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._run, name=f"teams-ehr-loopback-{self.port}", daemon=True
        )
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # surfaced by start()/stop()
            self._error = exc

    def begin(self) -> float:
        """Start the thread; returns the deadline for :meth:`poll_started`."""
        self._thread.start()
        return time.monotonic() + _START_TIMEOUT

    def poll_started(self, deadline: float) -> bool:
        """``True`` once serving; raises if the server died or the deadline passed."""
        if self._server.started:
            return True
        if self._error is not None or not self._thread.is_alive() or time.monotonic() > deadline:
            self.stop()
            raise RuntimeError("loopback server failed to start") from self._error
        return False

    def start(self) -> None:
        deadline = self.begin()
        while not self.poll_started(deadline):
            time.sleep(0.005)

    def is_running(self) -> bool:
        return self._thread.is_alive()

    def request_stop(self) -> None:
        self._server.should_exit = True

    def finish(self) -> None:
        self._thread.join(timeout=_START_TIMEOUT)
        self._socket.close()

    def stop(self) -> None:
        self.request_stop()
        if self._thread.ident is not None:
            self.finish()
        else:
            self._socket.close()


@contextmanager
def serve_on_loopback(app: ASGIApp) -> Iterator[str]:
    """Serve ``app`` on ``127.0.0.1:<random port>``; yields the base URL."""
    server = LoopbackServer(app)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@asynccontextmanager
async def serve_on_loopback_async(app: ASGIApp) -> AsyncIterator[str]:
    """``async with`` variant of :func:`serve_on_loopback` (asyncio or trio callers)."""
    server = LoopbackServer(app)
    deadline = server.begin()
    try:
        while not server.poll_started(deadline):
            await anyio.sleep(0.005)
        yield server.url
    finally:
        server.request_stop()
        while server.is_running():
            await anyio.sleep(0.005)
        server.finish()

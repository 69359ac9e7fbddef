"""The web demo: the FastAPI example app on the embedded sandbox, one URL (requirement E3, the main job).

:func:`build_demo_app` serves, on one loopback origin:

* the FastAPI example (``examples/fastapi_app``) with its :class:`~teams_ehr.app.TeamsEhr` on the
  sandbox (SQLite in memory, every server-side request routed to the fakes in-process): provider
  launch, patient launch, callbacks, join links, JWKS — and whatever else the runtime's route table
  serves (webhook, live roster);
* the demo pages (:mod:`teams_ehr.demo.views`) and the fakes' browser pages
  (:mod:`teams_ehr.demo.sandbox_web`), behind :class:`~teams_ehr.demo.gateway.BrowserGateway`.

:class:`DemoServer` binds ``127.0.0.1:<port>`` first (the origin is part of the registered
redirect URIs), then runs uvicorn on that socket with its access log off: URLs here carry codes,
states, ``launch`` values and join tokens, which must never reach a log.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount

from teams_ehr.demo import pages
from teams_ehr.demo.attendance_bridge import attach_attendance
from teams_ehr.demo.example import load_fastapi_example
from teams_ehr.demo.gateway import BrowserGateway
from teams_ehr.demo.sandbox_web import html_response, sandbox_routes
from teams_ehr.demo.views import demo_routes
from teams_ehr.demo.world import DemoNotFoundError, DemoWorld

__all__ = ["DemoServer", "build_demo_app"]

_START_TIMEOUT = 15.0


def build_demo_app(world: DemoWorld) -> BrowserGateway:
    """The whole demo as one ASGI app for ``world`` (whose app base URL is where it is served)."""
    create_app = load_fastapi_example()
    runtime = world.sandbox.app()
    example = create_app(runtime)
    outer: BrowserGateway | None = None

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        async with example.router.lifespan_context(example):  # the example's own lifespan
            await world.seed(runtime)
            world.install_console(runtime)
            if outer is not None:
                async with attach_attendance(world, runtime, outer):
                    yield
            else:  # pragma: no cover - outer is set before any server starts
                yield

    async def not_found(request: Request, exc: Exception) -> Response:
        return html_response(pages.message("Not found", "This page does not exist."), 404)

    demo = Starlette(
        routes=[*demo_routes(world, example), *sandbox_routes(world), Mount("/", app=example)],
        lifespan=lifespan,
        exception_handlers={DemoNotFoundError: not_found},
    )
    sandbox = world.sandbox
    outer = BrowserGateway(
        demo,
        {
            sandbox.ehr.origin: "ehr",
            sandbox.entra.authority_host: "entra",
            "https://teams.microsoft.com": "teams",
        },
    )
    return outer


class DemoServer:
    """uvicorn serving :func:`build_demo_app` on a pre-bound ``127.0.0.1`` socket."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
            self._socket.listen(128)  # claim the port now: a second demo gets EADDRINUSE
        except OSError:
            self._socket.close()
            raise
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://{host}:{self.port}/"
        self.world = DemoWorld(f"http://{host}:{self.port}")
        config = uvicorn.Config(
            build_demo_app(self.world),
            lifespan="on",
            log_config=None,
            log_level="warning",
            access_log=False,  # request lines carry codes, launch values and join tokens
            ws="none",
            timeout_graceful_shutdown=2,  # open live-roster streams must not hold up Ctrl-C
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        return f"<DemoServer port={self.port}>"

    def serve(self) -> None:
        """Serve in this thread until Ctrl-C (uvicorn handles the signal and shuts down)."""
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._socket.close()

    @property
    def started(self) -> bool:
        return bool(self._server.started)

    def start(self) -> None:
        """Serve in a daemon thread (tests); returns once the server accepts connections."""

        def run() -> None:
            try:
                self._server.run(sockets=[self._socket])
            except BaseException as exc:  # surfaced below
                self._error = exc

        self._thread = threading.Thread(target=run, name="teams-ehr-demo", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                self.stop()
                raise RuntimeError("the demo server did not start") from self._error
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the demo server did not start in time")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=_START_TIMEOUT)
        self._socket.close()

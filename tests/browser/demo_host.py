"""The web demo on 127.0.0.1 for the walk, with a way into its event loop.

The same app as ``teams-ehr demo`` (:func:`teams_ehr.demo.server.build_demo_app` over a
:class:`~teams_ehr.demo.world.DemoWorld`, uvicorn with its access log off), served from a thread;
:meth:`DemoHost.call` runs a coroutine on the server's own loop, where the runtime's store lives,
so a test can set up what no page offers (a join link of a visit that is over or cancelled).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from teams_ehr.demo.server import build_demo_app
from teams_ehr.demo.world import DemoWorld

T = TypeVar("T")
_START_TIMEOUT_S = 30.0


class DemoHost:
    """uvicorn serving the demo on a pre-bound loopback socket (its origin is in the
    sandbox's registered redirect URIs, so it is bound before the world is built)."""

    def __init__(self) -> None:
        import uvicorn

        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(128)
        port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/"
        self.world = DemoWorld(f"http://127.0.0.1:{port}")
        self._loop: asyncio.AbstractEventLoop | None = None
        app = build_demo_app(self.world)

        async def capture_loop(scope: Any, receive: Any, send: Any) -> None:
            self._loop = asyncio.get_running_loop()
            await app(scope, receive, send)

        config = uvicorn.Config(
            capture_loop,
            lifespan="on",
            log_config=None,
            log_level="warning",
            access_log=False,  # request lines carry codes, launch values and join tokens
            ws="none",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="browser-walk-demo", daemon=True)
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        return f"<DemoHost {self.url}>"

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # surfaced by start()
            self._error = exc

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                self.stop()
                raise RuntimeError("the demo did not start") from self._error
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the demo did not start in time")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.ident is not None:
            self._thread.join(timeout=_START_TIMEOUT_S)
        self._socket.close()

    def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run ``make()`` on the server's event loop (started by the lifespan) and wait."""
        if self._loop is None:
            raise RuntimeError("the demo has not started")

        async def run() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(_START_TIMEOUT_S)

"""A real demo server on 127.0.0.1 per test (uvicorn in a thread)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from teams_ehr.demo.server import DemoServer


@pytest.fixture
def demo_server() -> Iterator[DemoServer]:
    server = DemoServer(port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()

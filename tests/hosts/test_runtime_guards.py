"""The runtime exists only while open, and only on the event loop that opened it (issue 10,
findings 3 and 6): a misuse raises at once with what to do, instead of hanging or failing on
``None``."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from starlette.testclient import TestClient

from hosts.drivers import flask_app, starlette_app
from teams_ehr.app import TeamsEhr
from teams_ehr.errors import ConfigurationError, TeamsEhrError, UsageError
from teams_ehr.testing.sandbox import TENANT_ID, Sandbox

ORG = "sandbox-clinic"
OPEN_ONLY = (
    "store",
    "http",
    "registry",
    "jwks",
    "discovery",
    "services",
    "attendance",
    "joinlinks",
    "visits",
    "admin",
)
_DEADLINE_S = 10.0  # a regression hangs: the thread is abandoned and the test fails


def _on_another_loop(
    call: Callable[[], Awaitable[Any]], backend: str = "asyncio"
) -> tuple[BaseException | None, float]:
    """Run ``call`` under a fresh ``anyio.run`` in a thread; its error and how long it took."""
    outcome: dict[str, Any] = {}

    def main() -> None:
        async def run() -> None:
            started = time.monotonic()
            try:
                await call()
            except BaseException as exc:
                outcome["error"] = exc
            outcome["elapsed"] = time.monotonic() - started

        anyio.run(run, backend=backend)

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    thread.join(_DEADLINE_S)
    assert not thread.is_alive(), "a call from another event loop hung"
    return outcome.get("error"), outcome["elapsed"]


@pytest.mark.parametrize("name", OPEN_ONLY)
def test_every_part_raises_not_open_before_the_runtime_opens(name: str) -> None:
    runtime = Sandbox().app()
    with pytest.raises(ConfigurationError) as caught:
        getattr(runtime, name)
    assert caught.value.reason == "not_open"
    message = str(caught.value)
    assert f"TeamsEhr.{name} exists only while the runtime is open" in message
    for way in ("async with runtime", "teams_ehr_lifespan(runtime)", "init_app(app)"):
        assert way in message
    doc = getattr(TeamsEhr, name).__doc__
    assert doc is not None
    assert "not_open" in doc


@pytest.mark.anyio
async def test_the_parts_exist_while_open_and_raise_again_once_closed() -> None:
    runtime = Sandbox().app()
    async with runtime:
        assert runtime.attendance is not None
        assert await runtime.registry.get(ORG) is None
    with pytest.raises(ConfigurationError, match=r"\(it is closed\)") as caught:
        runtime.visits  # noqa: B018
    assert caught.value.reason == "not_open"


@pytest.mark.anyio
async def test_a_runtime_opens_once_at_a_time() -> None:
    runtime = Sandbox().app()
    async with runtime:
        with pytest.raises(UsageError) as caught:
            async with runtime:
                pass  # pragma: no cover - refused
        assert caught.value.reason == "already_open"
        assert runtime.registry is not None  # the first opening is untouched


@pytest.mark.anyio
async def test_a_closed_runtime_reopens_with_a_fresh_client_and_store() -> None:
    sandbox = Sandbox()
    runtime = TeamsEhr(sandbox.settings, signers={"test": sandbox.signer})  # owns its client
    async with runtime:
        first = runtime.http
    assert first.is_closed
    async with runtime:
        assert not runtime.http.is_closed
        assert await runtime.registry.list() == []


def test_a_call_from_another_event_loop_raises_instead_of_hanging() -> None:
    sandbox = Sandbox()
    runtime = sandbox.app()
    with TestClient(starlette_app(runtime), base_url="https://app.test") as client:
        client.portal.call(sandbox.seed_organization, runtime)
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: runtime.registry.get(ORG),
            lambda: runtime.visits.patient.join("A" * 43, client_key="203.0.113.9"),
            lambda: runtime.admin.begin_signin(TENANT_ID, session_id="s" * 43),
            runtime.metrics_text,
            runtime.store.outbox_counts,
        ]
        for backend in ("asyncio", "trio"):
            for call in calls:
                error, elapsed = _on_another_loop(call, backend)
                assert isinstance(error, UsageError), error
                assert error.reason == "wrong_event_loop"
                assert "TestClient.portal.call" in str(error)
                assert elapsed < 1.0
        # the loop that opened it still serves it, and nothing was left half-done
        assert client.portal.call(runtime.registry.get, ORG) is not None
        assert client.get("/.well-known/jwks.json").status_code == 200


def test_a_method_read_on_one_loop_may_run_on_the_owners() -> None:
    """The harness pattern: take ``runtime.store.x`` anywhere, await it through the portal."""
    sandbox = Sandbox()
    runtime = sandbox.app()
    with TestClient(starlette_app(runtime), base_url="https://app.test") as client:
        client.portal.call(sandbox.seed_organization, runtime)

        async def through_the_portal() -> Any:
            get = runtime.registry.get  # read on this loop
            return await anyio.to_thread.run_sync(client.portal.call, get, ORG)

        error, _ = _on_another_loop(through_the_portal)
        assert error is None


def test_a_flask_host_refuses_a_call_from_a_foreign_loop() -> None:
    sandbox = Sandbox()
    runtime = sandbox.app()
    app = flask_app(runtime)
    bridge = app.extensions["teams_ehr"]
    try:
        bridge.call(sandbox.seed_organization, runtime)
        error, _ = _on_another_loop(lambda: runtime.registry.get(ORG))
        assert isinstance(error, TeamsEhrError)
        assert error.reason == "wrong_event_loop"
        assert "FlaskTeamsEhr.call" in str(error)
        assert bridge.call(runtime.registry.get, ORG) is not None
    finally:
        bridge.close()


def test_a_flask_runtime_that_fails_to_open_stops_its_portal(tmp_path: Any) -> None:
    from flask import Flask

    from teams_ehr.integrations.flask import FlaskTeamsEhr

    sandbox = Sandbox(store_url=f"sqlite:///{tmp_path / 'missing' / 'store.sqlite3'}")
    bridge = FlaskTeamsEhr(sandbox.app())
    threads = threading.active_count()
    with pytest.raises(TeamsEhrError):
        bridge.init_app(Flask("broken"))
    assert bridge._portal is None
    deadline = time.monotonic() + _DEADLINE_S
    while threading.active_count() > threads and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() <= threads

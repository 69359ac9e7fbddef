"""Composing the runtime's lifespan with the host's (issue 10, finding 5), and the integrator
guide's mounting example, run as written (docs/guides/integrator.md#mounting)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from teams_ehr.app import TeamsEhr
from teams_ehr.errors import ConfigurationError, UsageError
from teams_ehr.integrations.starlette import compose_lifespans, teams_ehr_lifespan
from teams_ehr.testing.sandbox import Sandbox

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "integrator.md"
ORG = "sandbox-clinic"


def _recording(
    name: str, log: list[str], state: dict[str, Any] | None = None
) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Any] | None]]:
    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[dict[str, Any] | None]:
        log.append(f"start {name}")
        try:
            yield state
        finally:
            log.append(f"stop {name}")

    return lifespan


def _serve(lifespan: Any) -> Starlette:
    async def state(request: Request) -> JSONResponse:
        return JSONResponse(dict(request.state._state))

    return Starlette(routes=[Route("/state", state)], lifespan=lifespan)


def test_lifespans_start_in_order_stop_in_reverse_and_merge_their_state() -> None:
    log: list[str] = []
    lifespan = compose_lifespans(
        _recording("a", log, {"a": 1}), _recording("b", log), _recording("c", log, {"c": 3})
    )
    with TestClient(_serve(lifespan)) as client:
        assert log == ["start a", "start b", "start c"]
        assert client.get("/state").json() == {"a": 1, "c": 3}
    assert log[3:] == ["stop c", "stop b", "stop a"]


def test_a_host_lifespan_after_the_runtimes_sees_it_open_until_it_stops() -> None:
    sandbox = Sandbox()
    runtime = sandbox.app()
    seen: list[str] = []

    @asynccontextmanager
    async def host(_app: Any) -> AsyncIterator[None]:
        await sandbox.seed_organization(runtime)
        seen.append("open at start")
        yield
        assert await runtime.registry.get(ORG) is not None
        seen.append("open at stop")

    with TestClient(_serve(compose_lifespans(teams_ehr_lifespan(runtime), host))):
        pass
    assert seen == ["open at start", "open at stop"]
    with pytest.raises(ConfigurationError):
        runtime.registry  # noqa: B018 - closed after the host's lifespan


def test_no_state_yields_none_for_servers_without_lifespan_state() -> None:
    log: list[str] = []

    async def run() -> Any:
        async with compose_lifespans(_recording("a", log), _recording("b", log))(None) as state:
            return state

    assert anyio.run(run) is None


def test_two_lifespans_yielding_one_key_are_refused_and_the_first_is_closed() -> None:
    log: list[str] = []
    lifespan = compose_lifespans(_recording("a", log, {"db": 1}), _recording("b", log, {"db": 2}))
    with pytest.raises(UsageError) as caught, TestClient(_serve(lifespan)):
        pass  # pragma: no cover - start-up fails
    assert caught.value.reason == "lifespan_state_conflict"
    assert "db" in str(caught.value)
    assert log == ["start a", "start b", "stop b", "stop a"]


def _guide_example() -> str:
    section = GUIDE.read_text(encoding="utf-8").split("## Mounting\n", 1)[1]
    return section.split("```python\n", 1)[1].split("\n```", 1)[0]


def test_the_guide_mounting_example_runs_as_written() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(_guide_example(), str(GUIDE), "exec"), namespace)
    create_app: Callable[[TeamsEhr], Any] = namespace["create_app"]
    sandbox = Sandbox(app_base_url="https://app.test/ehr")
    runtime = sandbox.app()
    with TestClient(create_app(runtime), base_url="https://app.test") as client:
        assert client.get("/status").json() == {"organizations_at_start": 0}
        assert client.get("/admin").status_code == 404  # no console on this host
        assert client.get("/ehr/admin").status_code == 404
        assert client.get("/ehr/.well-known/jwks.json").status_code == 200
        client.portal.call(sandbox.seed_organization, runtime)
        launch = {"iss": sandbox.ehr.base_url, "launch": sandbox.provider_launch("appt-g1")}
        started = client.get(f"/ehr/launch/{ORG}/test", params=launch, follow_redirects=False)
        assert started.status_code == 302
        query = parse_qs(urlsplit(started.headers["location"]).query)
        assert query["redirect_uri"] == ["https://app.test/ehr/callback"]
    with pytest.raises(ConfigurationError):
        runtime.visits  # noqa: B018 - the lifespan closed it


def test_the_guide_example_refuses_a_base_url_without_the_prefix() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(_guide_example(), str(GUIDE), "exec"), namespace)
    with pytest.raises(ConfigurationError) as caught:
        namespace["create_app"](Sandbox(app_base_url="https://app.test").app())
    assert caught.value.reason == "mount_prefix_mismatch"

"""One synchronous driver per host framework, so a single contract suite runs on both (E2)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from teams_ehr.app import TeamsEhr

T = TypeVar("T")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def location(self) -> str:
        return self.headers.get("location", "")


class HostDriver(Protocol):
    runtime: TeamsEhr

    def get(self, path: str, params: dict[str, str] | None = None) -> Reply: ...

    def run(self, func: Callable[..., Awaitable[T]], *args: Any) -> T: ...


class StarletteDriver:
    def __init__(self, client: Any, runtime: TeamsEhr) -> None:
        self._client = client
        self.runtime = runtime

    def get(self, path: str, params: dict[str, str] | None = None) -> Reply:
        response = self._client.get(path, params=params, follow_redirects=False)
        headers = {k.lower(): v for k, v in response.headers.items()}
        return Reply(response.status_code, headers, response.content)

    def run(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        return self._client.portal.call(func, *args)  # type: ignore[no-any-return]


class FlaskDriver:
    def __init__(self, client: Any, bridge: Any) -> None:
        self._client = client
        self._bridge = bridge
        self.runtime = bridge.runtime

    def get(self, path: str, params: dict[str, str] | None = None) -> Reply:
        response = self._client.get(path, query_string=params or {})
        headers = {k.lower(): v for k, v in response.headers.items()}
        return Reply(response.status_code, headers, response.get_data())

    def run(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        return self._bridge.call(func, *args)  # type: ignore[no-any-return]


@contextmanager
def starlette_host(runtime: TeamsEhr, build_app: Callable[[TeamsEhr], Any]) -> Iterator[HostDriver]:
    from starlette.testclient import TestClient

    with TestClient(build_app(runtime), base_url="https://app.test") as client:
        yield StarletteDriver(client, runtime)


@contextmanager
def flask_host(runtime: TeamsEhr, build_app: Callable[[TeamsEhr], Any]) -> Iterator[HostDriver]:
    app = build_app(runtime)
    bridge = app.extensions["teams_ehr"]
    try:
        with app.test_client() as client:
            yield FlaskDriver(client, bridge)
    finally:
        bridge.close()


def starlette_app(runtime: TeamsEhr) -> Any:
    """The plain Starlette host: every route of the library, the runtime opened by lifespan."""
    from starlette.applications import Starlette

    from teams_ehr.integrations.starlette import (
        teams_ehr_lifespan,
        teams_ehr_not_found,
        teams_ehr_routes,
    )

    return Starlette(
        routes=teams_ehr_routes(runtime),
        lifespan=teams_ehr_lifespan(runtime),
        exception_handlers={404: teams_ehr_not_found},
    )


def flask_app(runtime: TeamsEhr) -> Any:
    """The plain Flask host: every route of the library through one blocking portal."""
    from flask import Flask

    from teams_ehr.integrations.flask import FlaskTeamsEhr

    app = Flask("contract")
    FlaskTeamsEhr(runtime).init_app(app)
    return app

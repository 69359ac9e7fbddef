"""Mounting like Starlette's ``Mount``: a prefix that every generated URL carries, route groups,
and a refused mount when ``app_base_url`` cannot carry the prefix (issue 10, finding 5)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest

from hosts.contract import _post
from hosts.drivers import HostDriver, flask_host, starlette_host
from teams_ehr.app import TeamsEhr
from teams_ehr.errors import ConfigurationError, UsageError
from teams_ehr.integrations.routes import ROUTE_GROUPS, mounted_routes
from teams_ehr.testing.sandbox import APPROVER_OID, CLINICIAN_OID, TENANT_ID, Sandbox

ORG = "sandbox-clinic"
BASE = "https://app.test/ehr"
EVERY_GROUP_BUT_ADMIN = {"visits", "jwks", "webhooks", "roster"}

Host = Callable[[TeamsEhr, Callable[[TeamsEhr], Any]], AbstractContextManager[HostDriver]]


def starlette_under(prefix: str, include: set[str] | None = None) -> Callable[[TeamsEhr], Any]:
    def build(runtime: TeamsEhr) -> Any:
        from starlette.applications import Starlette

        from teams_ehr.integrations.starlette import teams_ehr_lifespan, teams_ehr_routes

        routes = teams_ehr_routes(runtime, prefix=prefix, include=include)
        return Starlette(routes=routes, lifespan=teams_ehr_lifespan(runtime))

    return build


def flask_under(prefix: str, include: set[str] | None = None) -> Callable[[TeamsEhr], Any]:
    def build(runtime: TeamsEhr) -> Any:
        from flask import Flask

        from teams_ehr.integrations.flask import FlaskTeamsEhr

        app = Flask("mounted")
        FlaskTeamsEhr(runtime).init_app(app, url_prefix=prefix, include=include)
        return app

    return build


HOSTS = [
    pytest.param(starlette_host, starlette_under, id="starlette"),
    pytest.param(flask_host, flask_under, id="flask"),
]


class _HostTransport(httpx.AsyncBaseTransport):
    """Graph's POSTs into the host under test, from a worker thread (the runtime's loop is busy
    awaiting them), with the host's status, headers and body."""

    def __init__(self, driver: HostDriver) -> None:
        self._driver = driver

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        query = dict(request.url.params)
        reply = await anyio.to_thread.run_sync(_post, self._driver, request.url.path, query, body)
        return httpx.Response(reply.status, headers=reply.headers, content=reply.body)


def _query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@pytest.fixture
def sandbox() -> Sandbox:
    return Sandbox(app_base_url=BASE)


@pytest.mark.parametrize(("host", "under"), HOSTS)
def test_a_launch_completes_through_the_prefixed_redirect_uris(
    sandbox: Sandbox, host: Host, under: Any
) -> None:
    with host(sandbox.app(), under("/ehr")) as driver:
        sandbox.connect_webhooks(httpx.AsyncClient(transport=_HostTransport(driver)))
        driver.run(sandbox.seed_organization, driver.runtime)
        sandbox.seed_appointment("appt-m1")
        launch = {"iss": sandbox.ehr.base_url, "launch": sandbox.provider_launch("appt-m1")}
        assert driver.get(f"/launch/{ORG}/test", launch).status == 404  # not at the root

        started = driver.get(f"/ehr/launch/{ORG}/test", launch)
        assert started.status == 302
        assert _query(started.location)["redirect_uri"] == f"{BASE}/callback"
        signin = driver.get("/ehr/callback", sandbox.ehr.authorize_in_browser(started.location))
        assert signin.status == 302
        assert _query(signin.location)["redirect_uri"] == f"{BASE}/microsoft/callback"
        sandbox.entra.sign_in_as(CLINICIAN_OID)
        entered = driver.get(
            "/ehr/microsoft/callback", sandbox.entra.authorize_in_browser(signin.location)
        )
        assert entered.status == 303
        assert urlsplit(entered.location).hostname == "teams.microsoft.com"

        driver.run(driver.runtime.attendance.settle_subscriptions)  # set up off the launch
        [subscription] = sandbox.graph.subscriptions.items.values()
        assert subscription.notification_url == f"{BASE}/graph/notifications"
        assert subscription.lifecycle_notification_url == f"{BASE}/graph/lifecycle"
        assert subscription.validated  # Graph's handshake reached the prefixed webhook

        portal = {"iss": sandbox.ehr.base_url, "launch": sandbox.patient_launch("appt-m1")}
        patient = driver.get(f"/ehr/patient/{ORG}/test", portal)
        assert _query(patient.location)["redirect_uri"] == f"{BASE}/callback"
        joined = driver.get("/ehr/callback", sandbox.ehr.authorize_in_browser(patient.location))
        assert joined.status == 303
        assert urlsplit(joined.location).hostname == "teams.microsoft.com"
        assert driver.get("/ehr/.well-known/jwks.json").status == 200


@pytest.mark.parametrize(("host", "under"), HOSTS)
def test_the_console_links_and_redirects_stay_under_the_prefix(
    sandbox: Sandbox, host: Host, under: Any
) -> None:
    with host(sandbox.app(), under("/ehr")) as driver:
        driver.run(sandbox.seed_organization, driver.runtime)
        begun = driver.get("/ehr/admin/signin", {"tenant": TENANT_ID})
        assert begun.status == 302
        assert _query(begun.location)["redirect_uri"] == f"{BASE}/admin/microsoft/callback"
        sandbox.entra.sign_in_as(APPROVER_OID)
        params = sandbox.entra.authorize_in_browser(begun.location)
        signed_in = driver.get("/ehr/admin/microsoft/callback", params)
        assert (signed_in.status, signed_in.location) == (303, "/ehr/admin")
        home = driver.get("/ehr/admin")
        assert home.status == 200
        assert f"href='/ehr/admin/orgs/{ORG}'".encode() in home.body
        assert b"action='/ehr/admin/signout'" in home.body
        assert b"'/admin/" not in home.body


@pytest.mark.parametrize(("host", "under"), HOSTS)
def test_a_subset_without_the_console_has_no_admin_routes(host: Host, under: Any) -> None:
    sandbox = Sandbox()
    with host(sandbox.app(), under("", EVERY_GROUP_BUT_ADMIN)) as driver:
        assert driver.get("/admin").status == 404
        assert driver.get("/admin/signin", {"tenant": TENANT_ID}).status == 404
        assert driver.get("/.well-known/jwks.json").status == 200


def test_the_starlette_routes_of_a_subset() -> None:
    from teams_ehr.integrations.starlette import teams_ehr_routes

    runtime = Sandbox(app_base_url=BASE).app()
    paths = [route.path for route in teams_ehr_routes(runtime, prefix="/ehr", include={"visits"})]
    assert paths == ["/ehr" + spec.path for spec in ROUTE_GROUPS["visits"]]
    assert not any("/admin" in path or "/graph" in path for path in paths)


def test_unknown_groups_are_refused_with_the_known_ones() -> None:
    settings = Sandbox().settings
    for include in ({"visits", "console"}, "admin", set()):
        with pytest.raises(UsageError) as caught:
            mounted_routes(settings, include=include)  # type: ignore[arg-type]
        assert caught.value.reason == "unknown_route_group"
        assert "visits, jwks, webhooks, roster, admin" in str(caught.value)


@pytest.mark.parametrize("prefix", ["ehr", "/ehr/{org_id}", "/ehr?x=1", "/ehr#top", "/e hr"])
def test_a_prefix_is_a_plain_path(prefix: str) -> None:
    with pytest.raises(UsageError) as caught:
        mounted_routes(Sandbox(app_base_url=BASE).settings, prefix=prefix)
    assert caught.value.reason == "bad_mount_prefix"


def test_a_prefix_app_base_url_does_not_end_with_is_refused() -> None:
    settings = Sandbox(app_base_url="https://app.test").settings
    with pytest.raises(ConfigurationError) as caught:
        mounted_routes(settings, prefix="/ehr")
    assert caught.value.reason == "mount_prefix_mismatch"
    assert "app_base_url" in str(caught.value)
    assert "'https://app.test/ehr'" in str(caught.value)  # the fix
    with pytest.raises(ConfigurationError):  # a segment boundary, not a suffix of characters
        mounted_routes(Sandbox(app_base_url="https://app.test/myehr").settings, prefix="/ehr")


def test_app_base_url_may_name_a_longer_public_path() -> None:
    """Behind a proxy that strips ``/clinic``, the app sees ``/ehr`` and browsers see both."""
    settings = Sandbox(app_base_url="https://app.test/clinic/ehr").settings
    assert mounted_routes(settings, prefix="/ehr/").prefix == "/ehr"


def test_the_starlette_mount_is_refused_on_a_mismatch() -> None:
    from teams_ehr.integrations.starlette import teams_ehr_routes

    with pytest.raises(ConfigurationError) as caught:
        teams_ehr_routes(Sandbox().app(), prefix="/ehr")
    assert caught.value.reason == "mount_prefix_mismatch"


def test_a_refused_flask_mount_starts_nothing() -> None:
    from flask import Flask

    from teams_ehr.integrations.flask import FlaskTeamsEhr

    runtime = Sandbox().app()
    bridge = FlaskTeamsEhr(runtime)
    with pytest.raises(ConfigurationError) as caught:
        bridge.init_app(Flask("refused"), url_prefix="/ehr")
    assert caught.value.reason == "mount_prefix_mismatch"
    assert bridge._portal is None  # no event loop thread left running
    with pytest.raises(ConfigurationError, match="only while the runtime is open"):
        runtime.store  # noqa: B018


def test_leaving_out_the_webhooks_while_attendance_is_on_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Sandbox().settings
    assert settings.attendance.enabled
    with caplog.at_level(logging.WARNING, logger="teams_ehr.integrations.routes"):
        mounted_routes(settings, include={"visits", "jwks"})
    assert "'webhooks' group" in caplog.text
    assert "https://app.test/graph/notifications" in caplog.text

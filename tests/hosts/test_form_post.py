"""A1: the launch parameters arrive as a GET query or a POST form, on both adapters."""

from __future__ import annotations

from typing import Any

import pytest

from hosts.drivers import flask_app, starlette_app
from teams_ehr.testing.sandbox import Sandbox


@pytest.mark.parametrize("host", ["starlette", "flask"])
def test_launch_by_post_form(host: str) -> None:
    sandbox = Sandbox()
    runtime = sandbox.app()
    launch = sandbox.provider_launch("appt-post")
    form = {"iss": sandbox.ehr.base_url, "launch": launch}
    if host == "starlette":
        from starlette.testclient import TestClient

        with TestClient(starlette_app(runtime), base_url="https://app.test") as client:
            client.portal.call(sandbox.seed_organization, runtime)
            response: Any = client.post(
                "/launch/sandbox-clinic/test", data=form, follow_redirects=False
            )
            status, location = response.status_code, response.headers.get("location", "")
            oversized = client.post(
                "/launch/sandbox-clinic/test", data={"iss": "x" * 70_000}, follow_redirects=False
            ).status_code
    else:
        app = flask_app(runtime)
        bridge = app.extensions["teams_ehr"]
        try:
            bridge.call(sandbox.seed_organization, runtime)
            with app.test_client() as client:
                response = client.post("/launch/sandbox-clinic/test", data=form)
                status, location = response.status_code, response.headers.get("location", "")
                oversized = client.post(
                    "/launch/sandbox-clinic/test", data={"iss": "x" * 70_000}
                ).status_code
        finally:
            bridge.close()
    assert status == 302
    assert location.startswith(sandbox.ehr.authorize_url)
    assert oversized == 400

"""Both framework adapters pass the one host contract (DESIGN.md rule 11, SPEC E2)."""

from __future__ import annotations

from typing import Any

import pytest

from hosts.contract import check_host_contract
from hosts.drivers import flask_host, starlette_host
from teams_ehr.app import TeamsEhr
from teams_ehr.testing.sandbox import Sandbox


def _starlette_app(runtime: TeamsEhr) -> Any:
    from starlette.applications import Starlette

    from teams_ehr.integrations.starlette import teams_ehr_lifespan, teams_ehr_routes

    return Starlette(routes=teams_ehr_routes(runtime), lifespan=teams_ehr_lifespan(runtime))


def _flask_app(runtime: TeamsEhr) -> Any:
    from flask import Flask

    from teams_ehr.integrations.flask import FlaskTeamsEhr

    app = Flask("contract")
    FlaskTeamsEhr(runtime).init_app(app)
    return app


@pytest.mark.parametrize(
    ("host", "build"),
    [(starlette_host, _starlette_app), (flask_host, _flask_app)],
    ids=["starlette", "flask"],
)
def test_host_contract(host: Any, build: Any) -> None:
    sandbox = Sandbox()
    with host(sandbox.app(), build) as driver:
        check_host_contract(driver, sandbox)

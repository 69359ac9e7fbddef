"""Both framework adapters pass the one host contract (DESIGN.md rule 11, SPEC E2)."""

from __future__ import annotations

from typing import Any

import pytest

from hosts.contract import check_host_contract
from hosts.drivers import flask_app, flask_host, starlette_app, starlette_host
from teams_ehr.testing.sandbox import Sandbox


@pytest.mark.parametrize(
    ("host", "build"),
    [(starlette_host, starlette_app), (flask_host, flask_app)],
    ids=["starlette", "flask"],
)
def test_host_contract(host: Any, build: Any) -> None:
    sandbox = Sandbox()
    with host(sandbox.app(), build) as driver:
        check_host_contract(driver, sandbox)

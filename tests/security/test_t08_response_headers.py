"""T08: every launch, callback and join response — success or refusal — carries
``Referrer-Policy: no-referrer`` and ``Cache-Control: no-store`` and no third-party script
(security.md T08, T20; SPEC C4; RFC 9700 §4.2; ASVS 14.3.2), through both framework adapters.

The host contract checks the happy path; here every refusal page is checked too, since an error
page reached from a URL holding ``code``/``state``/``launch`` or a join token would otherwise hand
that URL to the next site in the Referer header or leave it in a shared cache.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from hosts.drivers import Reply, flask_app, flask_host, starlette_app, starlette_host
from teams_ehr.app import TeamsEhr
from teams_ehr.testing.sandbox import Sandbox

ORG = "sandbox-clinic"


HOSTS = pytest.mark.parametrize(
    ("host", "build"),
    [(starlette_host, starlette_app), (flask_host, flask_app)],
    ids=["starlette", "flask"],
)


def _refusals(sandbox: Sandbox) -> list[tuple[str, dict[str, str]]]:
    base = sandbox.ehr.base_url
    return [
        (f"/launch/{ORG}/test", {"iss": "https://evil.test/fhir", "launch": "L-CANARY-1"}),
        (f"/launch/{ORG}/test", {"iss": base}),  # no launch
        (f"/launch/{ORG}/test", {"iss": base, "launch": "x" * 5000}),
        (f"/launch/{ORG}/staging", {"iss": base, "launch": "L-CANARY-2"}),
        ("/launch/no-such-org/test", {"iss": base, "launch": "L-CANARY-3"}),
        (f"/patient/{ORG}/test", {"iss": "https://evil.test/fhir", "launch": "L-CANARY-4"}),
        ("/callback", {}),
        ("/callback", {"state": "S-CANARY-" + "s" * 40, "code": "C-CANARY-1"}),
        ("/callback", {"error": "access_denied", "state": "S-CANARY-" + "t" * 40}),
        ("/microsoft/callback", {"state": "S-CANARY-" + "u" * 40, "code": "C-CANARY-2"}),
        ("/j/" + "J" * 43, {}),
        ("/j/short", {}),
        ("/j/" + "%00" * 3, {}),
    ]


def _assert_protected(reply: Reply, what: str) -> None:
    assert reply.headers.get("referrer-policy") == "no-referrer", what
    assert reply.headers.get("cache-control") == "no-store", what
    assert reply.headers.get("x-content-type-options") == "nosniff", what
    assert b"<script" not in reply.body.lower(), what
    for canary in (b"CANARY", b"evil.test"):
        assert canary not in reply.body, what


@HOSTS
def test_refusal_pages_keep_referrer_and_cache_headers(
    host: Callable[..., Any], build: Callable[[TeamsEhr], Any]
) -> None:
    sandbox = Sandbox()
    with host(sandbox.app(), build) as driver:
        driver.run(sandbox.seed_organization, driver.runtime)
        for path, params in _refusals(sandbox):
            reply = driver.get(path, params)
            assert 400 <= reply.status < 500, (path, reply.status)
            assert not reply.location
            _assert_protected(reply, path)


@HOSTS
def test_unapproved_organization_launch_and_join_are_protected(
    host: Callable[..., Any], build: Callable[[TeamsEhr], Any]
) -> None:
    sandbox = Sandbox()
    with host(sandbox.app(), build) as driver:
        driver.run(_seed_pending, driver.runtime, sandbox)
        launch = sandbox.provider_launch("appt-x")
        reply = driver.get(f"/launch/{ORG}/test", {"iss": sandbox.ehr.base_url, "launch": launch})
        assert reply.status == 403  # "this organization isn't approved yet"
        _assert_protected(reply, "pending org")
        assert launch.encode() not in reply.body


async def _seed_pending(runtime: TeamsEhr, sandbox: Sandbox) -> None:
    await sandbox.seed_organization(runtime, approve=False)

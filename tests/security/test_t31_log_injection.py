"""T31 log injection (security.md T31; ASVS 16.4.1): CR/LF and other control characters that an
attacker puts in any part of a browser request — path segments (org id, environment, join token,
visit id) or query values (``iss``, ``launch``, ``state``, ``code``) — never reach a log record of
the SDK, so nobody can forge a log line or a ``security_event``. (Graph display names are dropped
at parse time: tests/attendance_in.)
"""

from __future__ import annotations

import logging
from urllib.parse import quote

import pytest

from hosts.drivers import starlette_app, starlette_host
from teams_ehr.testing.sandbox import Sandbox

MARK = "FORGED-0b7e"
INJECT = f"\r\n2026-01-01 INFO teams_ehr security_event=approved {MARK}"
ENCODED = quote(INJECT, safe="")
PATHS = [
    f"/launch/evil{ENCODED}/test",
    f"/launch/sandbox-clinic/te{ENCODED}",
    f"/patient/sandbox-clinic/te{ENCODED}",
    f"/j/abc{ENCODED}",
    f"/j/{'A' * 40}%0d%0a{MARK}",
    f"/visits/o{ENCODED}/x{ENCODED}/roster",
    "/callback",
    "/microsoft/callback",
]


def test_log_injection_crlf_in_request_never_reaches_sdk_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    sandbox = Sandbox()
    params = {
        "iss": sandbox.ehr.base_url + INJECT,
        "launch": "L" + INJECT,
        "state": "s" * 43 + INJECT,
        "code": "c" + INJECT,
        "error": "access_denied" + INJECT,
        "error_description": INJECT,
    }
    with starlette_host(sandbox.app(), starlette_app) as driver:
        driver.run(sandbox.seed_organization, driver.runtime)
        for path in PATHS:
            reply = driver.get(path, params)
            assert 400 <= reply.status < 500, (path, reply.status)
            assert MARK.encode() not in reply.body
    sdk = [r for r in caplog.records if r.name.startswith("teams_ehr")]
    assert sdk, "the refusals were logged"
    for record in sdk:
        message = record.getMessage()
        assert MARK not in message, message
        assert "\r" not in message
        assert "\n" not in message

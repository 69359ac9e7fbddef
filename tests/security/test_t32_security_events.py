"""T32 security audit trail through the mounted routes (security.md T32; HIPAA §164.312(b); ASVS
16.3.1–16.3.4): each refusal writes exactly one structured ``security_event`` log record (the
record's ``security_event`` attribute, a reason code) and no canary.

Join links, Epic context links, approvals and webhooks emit them at source (their own suites
check it; the join link is re-checked here through ``/j``); the route table emits one for every
other refusal, such as launches and callbacks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from hosts.drivers import HostDriver, starlette_app, starlette_host
from leaks import assert_no_leak
from teams_ehr.testing.sandbox import Sandbox

ORG = "sandbox-clinic"


@pytest.fixture
def driver() -> Iterator[tuple[Sandbox, HostDriver]]:
    sandbox = Sandbox()
    with starlette_host(sandbox.app(), starlette_app) as host:
        host.run(sandbox.seed_organization, host.runtime)
        yield sandbox, host


def _events(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "security_event", None)]


def test_join_link_refusal_is_one_security_event(
    driver: tuple[Sandbox, HostDriver], caplog: pytest.LogCaptureFixture
) -> None:
    _, host = driver
    caplog.set_level(logging.DEBUG)
    guess = "G" * 43
    assert host.get(f"/j/{guess}").status == 404
    [event] = _events(caplog)
    assert event.security_event == "unknown"  # type: ignore[attr-defined]
    assert_no_leak(
        [guess], *(f"{r.getMessage()} {vars(r)}" for r in caplog.records if r.name != "httpx")
    )


@pytest.mark.parametrize(
    ("path", "params", "reason"),
    [
        (
            f"/launch/{ORG}/test",
            {"iss": "https://evil.test/fhir", "launch": "L"},
            "untrusted_issuer",
        ),
        ("/callback", {"state": "s" * 43, "code": "C"}, "state_invalid"),
    ],
    ids=["untrusted_issuer", "unknown_state"],
)
def test_launch_and_callback_refusals_are_one_security_event(
    driver: tuple[Sandbox, HostDriver],
    caplog: pytest.LogCaptureFixture,
    path: str,
    params: dict[str, str],
    reason: str,
) -> None:
    _, host = driver
    caplog.set_level(logging.DEBUG)
    assert host.get(path, params).status == 400
    events = _events(caplog)
    assert len(events) == 1
    assert events[0].security_event.startswith(reason.split("_")[0])  # type: ignore[attr-defined]

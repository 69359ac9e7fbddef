"""T20 patient join links through the mounted ``/j/{token}`` route (security.md T20; SPEC C4).

The join-link service has its own unit suite (tests/joinlinks); these tests pin what a browser
(or an attacker's script) sees through the Starlette host: the uniform 404 for tampered, expired
and revoked links (only the holder of a genuine token reads which), the rate limit cutting a brute force off (even for a valid token from the same
client) with a ``Retry-After`` and the protective headers, and the token's absence from every
log record the SDK writes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hosts.drivers import HostDriver, starlette_app, starlette_host
from leaks import assert_no_leak
from teams_ehr.app import TeamsEhr
from teams_ehr.testing.sandbox import PRACTITIONER, Sandbox

ORG = "sandbox-clinic"


class _Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 9, 0, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def _issue(
    sandbox: Sandbox, runtime: TeamsEhr, appointment: str, start: datetime, end: datetime
) -> str:
    await sandbox.seed_clinician(runtime)
    return await runtime.visits.meetings.prepare_visit(
        ORG,
        environment="test",
        visit_key=f"Appointment/{appointment}",
        ehr_user_id=PRACTITIONER,
        start=start,
        end=end,
    )


async def _cancel(runtime: TeamsEhr, appointment: str) -> bool:
    return await runtime.visits.meetings.cancel_visit(ORG, f"Appointment/{appointment}")


World = tuple[Sandbox, HostDriver, _Clock, str, datetime, datetime]


@pytest.fixture
def world() -> Iterator[World]:
    clock = _Clock()
    sandbox = Sandbox(clock=clock)
    with starlette_host(sandbox.app(), starlette_app) as driver:
        driver.run(sandbox.seed_organization, driver.runtime)
        start, end = sandbox.seed_appointment("appt-j1", start=clock.now + timedelta(minutes=20))
        token = driver.run(_issue, sandbox, driver.runtime, "appt-j1", start, end)
        yield sandbox, driver, clock, token, start, end


def _mutations(token: str) -> st.SearchStrategy[str]:
    flip = st.integers(0, len(token) - 1).map(
        lambda i: token[:i] + ("B" if token[i] != "B" else "C") + token[i + 1 :]
    )
    truncate = st.integers(1, len(token) - 1).map(lambda n: token[:n])
    extend = st.sampled_from("Aa0_-").map(lambda c: token + c)
    case = st.just(token.swapcase())
    return st.one_of(flip, truncate, extend, case).filter(lambda t: t != token)


def test_tampered_token_404_no_oracle(world: World) -> None:
    """Bit-flipped, truncated, extended or case-changed → the same status and body as a
    random unknown token (and as an expired or revoked one, below)."""
    _, driver, clock, token, _, _ = world
    baseline = driver.get("/j/" + "Q" * 43)
    assert baseline.status == 404

    @settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(guess=_mutations(token))
    def check(guess: str) -> None:
        clock.now += timedelta(seconds=61)  # each example in its own rate-limit minute
        reply = driver.get("/j/" + guess)
        assert (reply.status, reply.body) == (baseline.status, baseline.body)
        assert not reply.location

    check()


def test_window_and_revocation_look_like_unknown(world: World) -> None:
    _, driver, clock, token, start, end = world
    unknown = driver.get("/j/" + "Q" * 43)
    clock.now = start - timedelta(minutes=31)  # before start − 30 min
    early = driver.get(f"/j/{token}")
    clock.now = start - timedelta(minutes=29)
    assert driver.get(f"/j/{token}").status == 303
    clock.now = end + timedelta(minutes=61)  # after end + 60 min
    late = driver.get(f"/j/{token}")
    clock.now = start
    assert driver.get(f"/j/{token}").status == 303
    assert driver.run(_cancel, driver.runtime, "appt-j1")
    revoked = driver.get(f"/j/{token}")
    for reply in (early, late, revoked):  # only a real token's holder reads why (issue 13)
        assert reply.status == unknown.status
        assert token.encode() not in reply.body
        assert not reply.location


def test_rate_limit_bruteforce_through_the_route(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """1 000 random guesses from one client: cut off after the per-minute limit; the valid
    link is refused too while the client is limited; a new minute lets it through."""
    caplog.set_level(logging.DEBUG)
    _, driver, clock, token, start, _ = world
    clock.now = start.replace(second=1)
    statuses = [driver.get(f"/j/{n:043d}").status for n in range(1000)]
    allowed = statuses.index(429)
    assert allowed <= 30
    assert set(statuses[:allowed]) == {404}
    assert set(statuses[allowed:]) == {429}
    limited = driver.get(f"/j/{token}")
    assert limited.status == 429
    assert not limited.location
    assert limited.headers.get("referrer-policy") == "no-referrer"
    assert limited.headers.get("cache-control") == "no-store"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    clock.now += timedelta(minutes=1)
    assert driver.get(f"/j/{token}").status == 303
    limiter_records = [r for r in caplog.records if "rate_limited" in r.getMessage()]
    assert limiter_records
    sdk = [r.getMessage() for r in caplog.records if r.name.startswith("teams_ehr")]
    assert_no_leak([token, f"{7:043d}"], *sdk)


def test_join_token_hashed_in_logs(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """Issue, resolve, refuse and revoke: the SDK logs hash prefixes, never the token or the
    meeting's join URL."""
    caplog.set_level(logging.DEBUG)
    sandbox, driver, clock, token, start, _ = world
    clock.now = start
    join_url = next(iter(sandbox.graph.meetings.values()))["joinWebUrl"]
    assert driver.get(f"/j/{token}").status == 303
    assert driver.get(f"/j/{token[:-2]}xx").status == 404
    assert driver.run(_cancel, driver.runtime, "appt-j1")
    assert driver.get(f"/j/{token}").status == 404
    sdk = [r for r in caplog.records if r.name.startswith("teams_ehr")]
    assert any("join link" in r.getMessage() for r in sdk)
    assert_no_leak([token, token[:-2], join_url], *(f"{r.getMessage()} {vars(r)}" for r in sdk))


def test_host_access_log_of_join_path_is_redacted() -> None:
    from teams_ehr._redact import install_redaction

    install_redaction()
    logger = logging.getLogger("uvicorn.access")
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    saved = (logger.level, logger.disabled)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.disabled = False  # a uvicorn dictConfig elsewhere in the run may have disabled it
    try:
        token = "tok-CANARY-" + "x" * 32
        logger.info('%s - "%s %s HTTP/%s" %d', "203.0.113.9:5123", "GET", f"/j/{token}", "1.1", 303)
    finally:
        logger.removeHandler(handler)
        logger.level, logger.disabled = saved
    assert messages
    assert token not in messages[0]

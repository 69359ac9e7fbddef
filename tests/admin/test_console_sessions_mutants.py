"""The console's session rows at their edges, from ``nox -s mutants -- orgs/console_sessions.py``.

docs/security.md (threat T28): a session is keyed by a hash of the browser session id, lives
exactly until its expiry, survives a read, and every mutation needs its CSRF token. The row's
bytes and key are pinned as known answers: a different encoding after an upgrade would sign every
admin out, or worse, read another layout as a session.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from teams_ehr.errors import ApprovalRequiredError, StateInvalidError
from teams_ehr.orgs.console_sessions import (
    CONSOLE_ORG_ID,
    AdminSession,
    AdminSessions,
    ApprovalStep,
)
from teams_ehr.teams.identity import MicrosoftIdentity

TENANT = "0f3c8a52-1111-4c1e-9d1a-000000000a0a"
OID = "a2a2a2a2-0000-4000-8000-00000000a002"
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
EXPIRES = NOW + timedelta(hours=1)
BROWSER = "browser-1"
# sha256(b"teams-ehr/admin-session\x00" + b"browser-1"): the row key of BROWSER.
BROWSER_KEY = "3d57e3e034f1d35299f5bffefa4f90a5a2ac202851fde40d9f2487f8aaf86f17"


class _Rows:
    """A PendingAuthorizationStore in a dict with the protocol's expiry (alive while now < exp)."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, bytes, datetime]] = {}
        self.taken_at: list[datetime] = []

    async def put_pending(
        self, key: str, *, org_id: str, payload: bytes, expires_at: datetime
    ) -> None:
        assert key not in self.rows, "put over a live row"
        self.rows[key] = (org_id, payload, expires_at)

    async def take_pending(self, key: str, *, now: datetime) -> tuple[str, bytes] | None:
        self.taken_at.append(now)
        row = self.rows.pop(key, None)
        if row is None or row[2] <= now:
            return None
        return row[0], row[1]


class _Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def _session(csrf: str = "form-token", **update: object) -> AdminSession:
    identity = MicrosoftIdentity(tenant_id=TENANT, object_id=OID)
    session = AdminSession(identity=identity, csrf=SecretStr(csrf), expires_at=EXPIRES)
    return session.model_copy(update=update)


def test_the_console_owner_marker_is_no_valid_org_id() -> None:
    assert CONSOLE_ORG_ID == "~admin"


def test_session_bytes_are_sorted_compact_json_with_the_csrf_in_clear() -> None:
    expected = (
        '{"approval":null,"csrf":"form-token","expires_at":"2026-03-02T10:00:00Z",'
        f'"identity":{{"object_id":"{OID}","tenant_id":"{TENANT}"}}}}'
    ).encode()
    assert _session().to_bytes() == expected
    step = ApprovalStep(org_id="o", environment="test", reviewed_hash="h", approval_id="a")
    document = json.loads(_session(approval=step).to_bytes())
    assert document["approval"] == {
        "approval_id": "a",
        "environment": "test",
        "org_id": "o",
        "proof": None,
        "reviewed_hash": "h",
    }
    assert AdminSession.model_validate_json(_session(approval=step).to_bytes()) == _session(
        approval=step
    )
    assert b'"csrf":"\\u00e9"' in _session("é").to_bytes()  # ASCII JSON


@pytest.mark.anyio
async def test_the_row_is_keyed_by_the_hash_owned_by_the_console_and_expires_with_it() -> None:
    rows = _Rows()
    sessions = AdminSessions(rows, clock=_Clock())
    await sessions.replace(BROWSER, _session())
    assert rows.rows == {BROWSER_KEY: (CONSOLE_ORG_ID, _session().to_bytes(), EXPIRES)}
    assert repr(sessions) == "<AdminSessions>"


@pytest.mark.anyio
async def test_reading_a_session_puts_it_back_unchanged() -> None:
    rows = _Rows()
    clock = _Clock()
    sessions = AdminSessions(rows, clock=clock)
    await sessions.replace(BROWSER, _session())
    for _ in range(3):
        assert await sessions.current(BROWSER) == _session()
        assert rows.rows == {BROWSER_KEY: (CONSOLE_ORG_ID, _session().to_bytes(), EXPIRES)}
    assert await sessions.require(BROWSER) == _session()
    assert await sessions.require_form(BROWSER, "form-token") == _session()
    assert BROWSER_KEY in rows.rows
    assert set(rows.taken_at) == {NOW}  # reads pass the clock's now to the store


@pytest.mark.anyio
async def test_a_row_of_another_owner_is_no_session_and_is_not_put_back() -> None:
    rows = _Rows()
    sessions = AdminSessions(rows, clock=_Clock())
    rows.rows[BROWSER_KEY] = ("hospital-a", _session().to_bytes(), EXPIRES)
    assert await sessions.current(BROWSER) is None
    assert rows.rows == {}


@pytest.mark.anyio
async def test_replace_drops_the_previous_session_of_that_browser_only() -> None:
    rows = _Rows()
    sessions = AdminSessions(rows, clock=_Clock())
    await sessions.replace(BROWSER, _session("first"))
    await sessions.replace("browser-2", _session("other"))
    await sessions.replace(BROWSER, _session("second"))
    assert await sessions.current(BROWSER) == _session("second")
    assert await sessions.current("browser-2") == _session("other")
    await sessions.drop(BROWSER)
    assert await sessions.current(BROWSER) is None
    assert await sessions.current("browser-2") == _session("other")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("offset", "alive"),
    [(timedelta(microseconds=-1), True), (timedelta(0), False), (timedelta(microseconds=1), False)],
)
async def test_session_expiry_just_before_at_and_after(offset: timedelta, alive: bool) -> None:
    clock = _Clock()
    sessions = AdminSessions(_Rows(), clock=clock)
    await sessions.replace(BROWSER, _session())
    clock.now = EXPIRES + offset
    assert (await sessions.current(BROWSER) is not None) is alive
    if not alive:
        with pytest.raises(ApprovalRequiredError) as refused:
            await sessions.require_form(BROWSER, "form-token")
        assert refused.value.reason == "admin_not_signed_in"
        assert str(refused.value) == "sign in first"


@pytest.mark.anyio
async def test_require_without_a_session_says_sign_in_first() -> None:
    sessions = AdminSessions(_Rows(), clock=_Clock())
    with pytest.raises(ApprovalRequiredError) as refused:
        await sessions.require(BROWSER)
    assert (refused.value.reason, str(refused.value)) == ("admin_not_signed_in", "sign in first")


@pytest.mark.anyio
@pytest.mark.parametrize("csrf", [None, "", "form-toke", "form-token ", "FORM-TOKEN", "x"])
async def test_a_wrong_form_token_is_refused_with_its_reason_and_text(csrf: str | None) -> None:
    sessions = AdminSessions(_Rows(), clock=_Clock())
    await sessions.replace(BROWSER, _session())
    with pytest.raises(StateInvalidError) as refused:
        await sessions.require_form(BROWSER, csrf)
    assert refused.value.reason == "csrf"
    assert str(refused.value) == "the form token is missing or wrong"
    assert await sessions.current(BROWSER) == _session()  # a refused form keeps the session


@pytest.mark.anyio
async def test_a_non_ascii_form_token_is_compared_not_crashed() -> None:
    sessions = AdminSessions(_Rows(), clock=_Clock())
    await sessions.replace(BROWSER, _session("jeton-é"))
    assert await sessions.require_form(BROWSER, "jeton-é") == _session("jeton-é")
    with pytest.raises(StateInvalidError):
        await sessions.require_form(BROWSER, "jeton-e")

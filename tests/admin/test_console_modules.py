"""The console lives with the organizations code, below the visit flows, one job per module."""

from __future__ import annotations

import ast
import importlib.util
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

import teams_ehr.orgs
from admin.console import ADMIN_OID
from teams_ehr.errors import ApprovalRequiredError, StateInvalidError
from teams_ehr.orgs.approval_signin import ApprovalSignin, StandaloneStarter
from teams_ehr.orgs.console import (
    ADMIN_MICROSOFT_CALLBACK_PATH,
    ADMIN_PATH,
    AdminPolicy,
    AdminService,
    AdminStore,
)
from teams_ehr.orgs.console_sessions import (
    CONSOLE_ORG_ID,
    AdminSession,
    AdminSessions,
    ApprovalStep,
)
from teams_ehr.teams.identity import MicrosoftIdentity
from teams_ehr.testing.sandbox import TENANT_ID

ORGS = Path(teams_ehr.orgs.__file__).parent
CONSOLE_MODULES = ("console.py", "console_sessions.py", "approval_signin.py")
# orgs/ sits below the visit flows and the HTTP edge: docs/security.md's rules live here, the
# pages and the standalone launch above it reach the console through its public methods.
ABOVE_ORGS = ("teams_ehr.visits", "teams_ehr.app", "teams_ehr.integrations", "teams_ehr.demo")
BROWSER = "b" * 43
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_the_console_moved_into_orgs() -> None:
    assert importlib.util.find_spec("teams_ehr.admin") is None
    assert (ADMIN_PATH, ADMIN_MICROSOFT_CALLBACK_PATH) == ("/admin", "/admin/microsoft/callback")
    for name in (AdminPolicy, AdminService, AdminStore, AdminSession, AdminSessions):
        assert name.__module__.startswith("teams_ehr.orgs.console")
    for name in (ApprovalSignin, StandaloneStarter):
        assert name.__module__ == "teams_ehr.orgs.approval_signin"
    assert ApprovalStep.__module__ == "teams_ehr.orgs.console_sessions"


@pytest.mark.parametrize("module", CONSOLE_MODULES)
def test_console_modules_import_nothing_above_orgs(module: str) -> None:
    tree = ast.parse((ORGS / module).read_text(encoding="utf-8"))
    imported = [
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    ] + [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    ]
    above = [name for name in imported if name.split(".")[:2] in [a.split(".") for a in ABOVE_ORGS]]
    assert above == []
    assert "fmt: skip" not in (ORGS / module).read_text(encoding="utf-8")


class _PendingRows:
    """A PendingAuthorizationStore in a dict, recording the keys it was given."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, bytes, datetime]] = {}

    async def put_pending(
        self, key: str, *, org_id: str, payload: bytes, expires_at: datetime
    ) -> None:
        self.rows[key] = (org_id, payload, expires_at)

    async def take_pending(self, key: str, *, now: datetime) -> tuple[str, bytes] | None:
        row = self.rows.pop(key, None)
        if row is None or row[2] <= now:
            return None
        return row[0], row[1]


def _session(csrf: str = "form-token") -> AdminSession:
    identity = MicrosoftIdentity(tenant_id=TENANT_ID, object_id=ADMIN_OID)
    return AdminSession(
        identity=identity, csrf=SecretStr(csrf), expires_at=NOW + timedelta(hours=1)
    )


@pytest.mark.anyio
async def test_sessions_are_stored_under_a_hash_of_the_browser_session() -> None:
    rows = _PendingRows()
    sessions = AdminSessions(rows, clock=lambda: NOW)
    await sessions.replace(BROWSER, _session())
    [(key, (owner, payload, _))] = rows.rows.items()
    assert BROWSER not in key
    assert len(key) == 64
    assert owner == CONSOLE_ORG_ID
    assert b"form-token" in payload  # the row is encrypted by the store, not here
    assert await sessions.current(BROWSER) == _session()
    assert await sessions.current("another browser") is None
    assert repr(sessions) == "<AdminSessions>"


@pytest.mark.anyio
async def test_a_row_of_another_owner_is_no_session() -> None:
    rows = _PendingRows()
    sessions = AdminSessions(rows, clock=lambda: NOW)
    await sessions.replace(BROWSER, _session())
    [key] = rows.rows
    rows.rows[key] = ("lamna-health", *rows.rows[key][1:])
    assert await sessions.current(BROWSER) is None


@pytest.mark.anyio
async def test_mutations_need_the_session_and_its_form_token() -> None:
    sessions = AdminSessions(_PendingRows(), clock=lambda: NOW)
    with pytest.raises(ApprovalRequiredError) as missing:
        await sessions.require_form(BROWSER, "form-token")
    assert missing.value.reason == "admin_not_signed_in"
    await sessions.replace(BROWSER, _session())
    for wrong in (None, "", "other-token"):
        with pytest.raises(StateInvalidError) as refused:
            await sessions.require_form(BROWSER, wrong)
        assert refused.value.reason == "csrf"
    assert await sessions.require_form(BROWSER, "form-token") == _session()
    await sessions.drop(BROWSER)
    assert await sessions.current(BROWSER) is None


@pytest.mark.anyio
async def test_a_session_ends_at_its_expiry() -> None:
    clock = [NOW]
    sessions = AdminSessions(_PendingRows(), clock=lambda: clock[0])
    await sessions.replace(BROWSER, _session())
    clock[0] = NOW + timedelta(hours=1)
    assert await sessions.current(BROWSER) is None


def test_pending_names_only_the_approval_of_that_environment() -> None:
    step = ApprovalStep(
        org_id="lamna-health", environment="test", reviewed_hash="0" * 64, approval_id="a1"
    )
    session = _session().model_copy(update={"approval": step})
    assert ApprovalSignin.pending(session, "lamna-health", "test") == ("a1", False)
    assert ApprovalSignin.pending(session, "lamna-health", "production") is None
    assert ApprovalSignin.pending(session, "other-org", "test") is None
    assert ApprovalSignin.pending(_session(), "lamna-health", "test") is None

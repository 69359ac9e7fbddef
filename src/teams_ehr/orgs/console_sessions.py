"""The admin console's server-side sessions: who is signed in, the form token, the approval step.

After the administrator's Microsoft sign-in (OpenID Connect, :mod:`teams_ehr.teams.signin`) the
verified ``(tid, oid)`` becomes a session row among the store's encrypted pending rows, keyed by a
hash of the browser session id and expiring after
:attr:`~teams_ehr.orgs.console.AdminPolicy.session_ttl`. Every mutation must carry the session's
CSRF token (docs/security.md, threat T28). Reading a session takes the row and puts it back, so two
concurrent requests of one admin browser may see "sign in again" (acceptable for a console).
"""

from __future__ import annotations

import hashlib
import hmac
import json

from pydantic import AwareDatetime, BaseModel, ConfigDict, SecretStr

from teams_ehr._types import Clock
from teams_ehr.errors import ApprovalRequiredError, StateInvalidError
from teams_ehr.orgs.approval import ApprovalProof
from teams_ehr.orgs.models import EnvironmentName
from teams_ehr.store.protocol import PendingAuthorizationStore
from teams_ehr.teams.identity import MicrosoftIdentity

__all__ = ["CONSOLE_ORG_ID", "AdminSession", "AdminSessions", "ApprovalStep"]

CONSOLE_ORG_ID = "~admin"
"""The ``org_id`` of the console's pending rows (sessions, sign-ins): never a valid organization."""


class ApprovalStep(BaseModel):
    """The approval in progress: what the approver reviewed and, after the EHR sign-in, its proof."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    org_id: str
    environment: EnvironmentName
    reviewed_hash: str
    approval_id: str
    proof: ApprovalProof | None = None


class AdminSession(BaseModel):
    """A signed-in admin or approver: the verified identity, CSRF token, approval in progress."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    identity: MicrosoftIdentity
    csrf: SecretStr
    expires_at: AwareDatetime
    approval: ApprovalStep | None = None

    def to_bytes(self) -> bytes:
        document = self.model_dump(mode="json")
        document["csrf"] = self.csrf.get_secret_value()
        return json.dumps(document, separators=(",", ":"), sort_keys=True).encode("utf-8")


def _session_key(session_id: str) -> str:
    return hashlib.sha256(b"teams-ehr/admin-session\x00" + session_id.encode("utf-8")).hexdigest()


class AdminSessions:
    """The console's session rows in a :class:`~teams_ehr.store.protocol.PendingAuthorizationStore`."""

    def __init__(self, store: PendingAuthorizationStore, *, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def __repr__(self) -> str:
        return "<AdminSessions>"

    async def current(self, session_id: str) -> AdminSession | None:
        """The live admin session of this browser, or ``None``."""
        taken = await self._store.take_pending(_session_key(session_id), now=self._clock())
        if taken is None or taken[0] != CONSOLE_ORG_ID:
            return None
        session = AdminSession.model_validate_json(taken[1])
        await self._put(session_id, session)
        return session

    async def replace(self, session_id: str, session: AdminSession) -> None:
        """Store ``session`` as this browser's session, dropping the one it had."""
        await self.drop(session_id)
        await self._put(session_id, session)

    async def drop(self, session_id: str) -> None:
        await self._store.take_pending(_session_key(session_id), now=self._clock())

    async def require(self, session_id: str) -> AdminSession:
        """The live session, or :class:`~teams_ehr.errors.ApprovalRequiredError`."""
        session = await self.current(session_id)
        if session is None:
            raise ApprovalRequiredError("sign in first", reason="admin_not_signed_in")
        return session

    async def require_form(self, session_id: str, csrf: str | None) -> AdminSession:
        """A mutation: the live session and its CSRF token (docs/security.md, threat T28)."""
        session = await self.require(session_id)
        expected = session.csrf.get_secret_value().encode()
        if not csrf or not hmac.compare_digest(csrf.encode(), expected):
            raise StateInvalidError("the form token is missing or wrong", reason="csrf")
        return session

    async def _put(self, session_id: str, session: AdminSession) -> None:
        await self._store.put_pending(
            _session_key(session_id),
            org_id=CONSOLE_ORG_ID,
            payload=session.to_bytes(),
            expires_at=session.expires_at,
        )

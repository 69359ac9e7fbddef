"""What the visit flows keep between requests, and how they read it back.

Nothing lives in process memory between a launch and its callback: the pending authorization
(the SMART App Launch ``state``, single use), the launch session waiting for the clinician's
first Microsoft sign-in and the meeting are rows of the store, payloads encrypted at rest, so any
instance can serve any step (docs/guides/integrator.md, "One process or many"). The organization a
step acts for is read back from the registry the same way, and must still be active.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, SecretStr, ValidationError

from teams_ehr.errors import StateInvalidError, UntrustedIssuerError
from teams_ehr.orgs.models import EnvironmentName, Organization
from teams_ehr.orgs.registry import OrganizationRegistry
from teams_ehr.smart.authorize import PendingAuthorization
from teams_ehr.store.protocol import MeetingRow
from teams_ehr.teams.meetings import Meeting

__all__ = [
    "LaunchRole",
    "LaunchSession",
    "PendingLaunch",
    "active_org",
    "has_active_environment",
    "launch_session_key",
    "meeting_of",
    "open_pending",
]

LaunchRole = Literal["provider", "consult", "patient", "approval"]
"""Whom an authorization serves; the SMART ``/callback`` dispatches on it."""


class PendingLaunch(BaseModel):
    """What the store keeps for one EHR authorization (encrypted at rest as ``payload``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    role: LaunchRole
    environment: EnvironmentName
    authorization: str  # PendingAuthorization.to_bytes(), base64


class LaunchSession(BaseModel):
    """A live, validated EHR launch waiting for the clinician's first Microsoft sign-in."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    role: LaunchRole
    org_id: str
    issuer: str
    ehr_user_id: str
    visit_key: str
    start: AwareDatetime
    end: AwareDatetime
    department: str | None = None


def launch_session_key(handle: str) -> str:
    """The store key of a launch session: a hash of its handle, never the handle."""
    return hashlib.sha256(b"teams-ehr/launch-session\x00" + handle.encode()).hexdigest()


def open_pending(taken: tuple[str, bytes] | None) -> tuple[PendingLaunch, PendingAuthorization]:
    """The envelope and authorization of a taken pending row; StateInvalidError otherwise."""
    if taken is None:
        raise StateInvalidError("unknown, reused or expired state", reason="state_unknown")
    try:
        envelope = PendingLaunch.model_validate_json(taken[1])
        pending = PendingAuthorization.from_bytes(base64.b64decode(envelope.authorization))
    except (ValidationError, ValueError):
        raise StateInvalidError("state does not name an EHR authorization") from None
    if pending.org_id != taken[0]:
        raise StateInvalidError("state belongs to another organization", reason="state_org")
    return envelope, pending


def has_active_environment(org: Organization) -> bool:
    """Whether any environment of ``org`` is approved and active."""
    return any(env is not None and env.state == "active" for env in (org.test, org.production))


async def active_org(registry: OrganizationRegistry, org_id: str) -> Organization:
    """The organization, if it has an active environment; UntrustedIssuerError otherwise."""
    org = await registry.get(org_id)
    if org is None or not has_active_environment(org):
        raise UntrustedIssuerError("organization is not active")
    return org


def meeting_of(row: MeetingRow) -> Meeting:
    """The verified meeting a stored row describes (its join URL back under SecretStr)."""
    return Meeting(
        org_id=row.org_id,
        external_id=row.external_id,
        meeting_id=row.meeting_id,
        organizer_oid=row.organizer_oid,
        join_url=SecretStr(row.join_url),
        start=row.start,
        end=row.end,
        policy="stored",
    )

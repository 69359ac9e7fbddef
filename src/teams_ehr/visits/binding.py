"""The clinician's one-time Microsoft sign-in, bound to a live EHR launch session.

The first time an EHR user launches a visit, the validated launch is kept as a short-lived launch
session and the clinician signs in with Microsoft at the organization's own tenant (OpenID Connect
authorization code flow with PKCE:
https://learn.microsoft.com/entra/identity-platform/v2-protocols-oidc). The sign-in callback must
come back to the same browser and name a live launch session of the same organization; only then
is the EHR user bound to the Entra object id (:class:`teams_ehr.teams.identity.IdentityBinder`,
threat T14 in docs/security.md) and the clinician enters the meeting as organizer. Later
launches find the binding and skip the sign-in.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import timedelta

import httpx

from teams_ehr._types import Clock, utc_now
from teams_ehr.errors import IdentityBindingError, StateInvalidError
from teams_ehr.orgs.models import Organization
from teams_ehr.orgs.registry import OrganizationRegistry
from teams_ehr.smart.jwks import JwksCache
from teams_ehr.store.protocol import Store
from teams_ehr.teams.identity import IdentityBinder
from teams_ehr.teams.signin import (
    begin_microsoft_signin,
    complete_microsoft_signin_async,
    store_pending_signin,
    take_pending_signin,
)
from teams_ehr.visits.meetings import VisitMeetings
from teams_ehr.visits.records import LaunchSession, active_org, launch_session_key
from teams_ehr.visits.services import OrgServices
from teams_ehr.web import WebResponse, redirect

__all__ = ["LAUNCH_SESSION_TTL", "ClinicianBinding"]

LAUNCH_SESSION_TTL = timedelta(minutes=10)
"""How long a validated launch waits for the clinician's Microsoft sign-in."""


class ClinicianBinding:
    """Bind an EHR user to their Microsoft identity once, from a live launch session."""

    def __init__(
        self,
        *,
        store: Store,
        registry: OrganizationRegistry,
        services: OrgServices,
        meetings: VisitMeetings,
        jwks: JwksCache,
        http: httpx.AsyncClient,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._registry = registry
        self._services = services
        self._meetings = meetings
        self._jwks = jwks
        self._http = http
        self._clock = clock
        self._binder = IdentityBinder(store, clock)

    def __repr__(self) -> str:
        return "<ClinicianBinding>"

    async def organizer_of(self, org_id: str, issuer: str, ehr_user_id: str) -> str | None:
        """The Entra object id bound to the EHR user, or ``None`` before the first sign-in."""
        link = await self._binder.lookup(org_id, issuer, ehr_user_id)
        return None if link is None else link.object_id

    async def begin(
        self, org: Organization, session: LaunchSession, *, session_id: str
    ) -> WebResponse:
        """Keep the launch session under an opaque handle, then redirect to Microsoft."""
        handle = secrets.token_urlsafe(32)
        now = self._clock()
        await self._store.put_pending(
            launch_session_key(handle),
            org_id=org.org_id,
            payload=session.model_dump_json().encode("utf-8"),
            expires_at=now + LAUNCH_SESSION_TTL,
        )
        url, pending = begin_microsoft_signin(
            self._services.entra_config(org),
            purpose="clinician_binding",
            bound_launch=handle,
            session_id=session_id,
            now=now,
        )
        await store_pending_signin(self._store, pending, org_id=org.org_id)
        return redirect(url, status=302)

    async def complete_microsoft_signin(
        self, params: Mapping[str, str], *, session_id: str
    ) -> WebResponse:
        """The Microsoft redirect URI: verify, bind once, then enter the meeting."""
        now = self._clock()
        org_id, pending = await take_pending_signin(self._store, params, now=now)
        if pending.purpose != "clinician_binding" or pending.bound_launch is None:
            raise StateInvalidError("sign-in was not started for a clinician", reason="purpose")
        org = await active_org(self._registry, org_id)
        identity = await complete_microsoft_signin_async(
            self._services.entra_config(org),
            params,
            pending,
            session_id=session_id,
            jwks=self._jwks,
            client=self._http,
            now=now,
        )
        taken = await self._store.take_pending(launch_session_key(pending.bound_launch), now=now)
        if taken is None or taken[0] != org_id:
            raise IdentityBindingError(
                "binding needs a live, validated EHR launch session", reason="no_launch_session"
            )
        session = LaunchSession.model_validate_json(taken[1])
        await self._binder.bind(
            org_id,
            session.issuer,
            session.ehr_user_id,
            identity,
            organization_tenant_id=org.tenant_id,
            launch_session_valid=True,
        )
        return await self._meetings.enter_as_organizer(org, session)

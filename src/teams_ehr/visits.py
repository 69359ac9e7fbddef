"""The visit flows a host calls: provider launch and patient join (SPEC C3, C4, A10, B6).

Provider: ``/launch/{org}/{env}?iss&launch`` → :meth:`VisitService.begin_launch` (A1 admission
before any I/O, launch replay refused, discovery compared with the approval snapshot, A3) →
EHR → ``callback`` → :meth:`VisitService.complete_ehr_callback` (A4–A8, the appointment's times)
→ Microsoft sign-in the first time (B6, bound to this live launch session) → the appointment's
meeting, created-or-got with its lobby verified (B2) → ``303`` into the meeting as organizer.

Patient: a SMART patient launch from the portal (same two steps with ``role="patient"``), an Epic
context-aware link (A10), or a join link ``/j/<token>`` → the same appointment's meeting →
``303`` to the anonymous join URL. A patient never creates a meeting: before the visit is
prepared (by the clinician's launch or :meth:`VisitService.prepare_visit`) they get
:class:`~teams_ehr.errors.VisitNotReadyError`.

Every step is stateless between requests: pending authorizations, launch sessions and meetings
live in the store, so any instance can serve any step (C6). Responses are
:class:`~teams_ehr.web.WebResponse` with ``no-referrer`` and ``no-store``.
"""

from __future__ import annotations

import base64
import dataclasses
import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Literal, Protocol

import httpx
from pydantic import BaseModel, ConfigDict

from teams_ehr import metrics
from teams_ehr._http import run_async
from teams_ehr._redact import get_logger
from teams_ehr._types import Clock, utc_now
from teams_ehr.appointments import VisitSlot, appointment_slot_flow, visit_key
from teams_ehr.errors import (
    IdentityBindingError,
    LaunchParameterError,
    StateInvalidError,
    UntrustedIssuerError,
    VisitNotReadyError,
)
from teams_ehr.joinlinks import JoinLinkService
from teams_ehr.orgs.models import EnvironmentName, Organization
from teams_ehr.orgs.registry import OrganizationRegistry
from teams_ehr.smart.authorize import AuthorizationRedirect, PendingAuthorization, state_key
from teams_ehr.smart.callback import extract_state
from teams_ehr.smart.epic_context_link import ContextLinkKey, decrypt_context_link
from teams_ehr.smart.flows import AsyncSmartLaunchClient, LaunchResult
from teams_ehr.smart.jwks import JwksCache
from teams_ehr.smart.launch import admit_launch, launch_hash, parse_launch_request
from teams_ehr.store.protocol import MeetingRow, Store
from teams_ehr.teams.identity import IdentityBinder
from teams_ehr.teams.join_urls import TEAMS_HOSTS, clinician_join_url, patient_join_url
from teams_ehr.teams.lobby import PRESETS
from teams_ehr.teams.meetings import Meeting, MeetingFactory, MeetingRequest, external_id_for
from teams_ehr.teams.signin import (
    EntraAppConfig,
    begin_microsoft_signin,
    complete_microsoft_signin_async,
    store_pending_signin,
    take_pending_signin,
)
from teams_ehr.visit_records import (
    LaunchRole,
    LaunchSession,
    PendingLaunch,
    has_active_environment,
    launch_session_key,
    meeting_of,
    open_pending,
)
from teams_ehr.web import WebResponse, redirect

__all__ = [
    "ApprovalSigninHook",
    "LaunchRole",
    "MeetingReadyHook",
    "OrgServices",
    "VisitPolicy",
    "VisitService",
]

_log = get_logger(__name__)
_SESSION_TTL = timedelta(minutes=10)


class OrgServices(Protocol):
    """Per-organization collaborators; :class:`teams_ehr.app.DefaultOrgServices` builds them."""

    def smart_client(
        self, org: Organization, environment: EnvironmentName, role: LaunchRole
    ) -> AsyncSmartLaunchClient: ...

    def entra_config(self, org: Organization) -> EntraAppConfig: ...

    def meeting_factory(self, org: Organization) -> MeetingFactory: ...


class VisitPolicy(BaseModel):
    """Choices an integrator makes once (SPEC B3, B5, C3)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider_preset: str = "patient_visit"
    consult_preset: str = "clinician_consult"
    clinician_join: Literal["browser", "desktop"] = "browser"
    allowed_join_hosts: frozenset[str] = TEAMS_HOSTS
    launch_replay_window: timedelta = timedelta(hours=1)


MeetingReadyHook = Callable[[MeetingRow], Awaitable[None]]
ApprovalSigninHook = Callable[
    [Organization, EnvironmentName, LaunchResult, str], Awaitable[WebResponse]
]
"""Receives a completed approval sign-in (standalone SMART launch): org, env, result, session."""


class VisitService:
    """Provider launch and patient join over the store, registry and per-org services."""

    def __init__(
        self,
        *,
        store: Store,
        registry: OrganizationRegistry,
        services: OrgServices,
        http: httpx.AsyncClient,
        external_id_key: bytes,
        joinlinks: JoinLinkService,
        jwks: JwksCache,
        policy: VisitPolicy | None = None,
        clock: Clock = utc_now,
        on_meeting_ready: MeetingReadyHook | None = None,
        on_approval_signin: ApprovalSigninHook | None = None,
    ) -> None:
        self._store = store
        self._registry = registry
        self._services = services
        self._http = http
        self._key = external_id_key
        self.joinlinks = joinlinks
        self._jwks = jwks
        self._policy = policy or VisitPolicy()
        self._clock = clock
        self._binder = IdentityBinder(store, clock)
        self._on_meeting_ready = on_meeting_ready
        self.on_approval_signin = on_approval_signin

    def __repr__(self) -> str:
        return "<VisitService>"

    # -- provider and portal launches (A1–A8, C3) ----------------------------------------------

    async def begin_launch(
        self,
        org_id: str,
        environment: EnvironmentName,
        params: Mapping[str, str],
        *,
        session_id: str,
        role: LaunchRole = "provider",
    ) -> WebResponse:
        """``/launch``: admit ``iss`` (no I/O before), refuse a replayed ``launch``, redirect."""
        request = parse_launch_request(params)
        _, binding = await admit_launch(request, self._registry)
        if binding.org_id != org_id or binding.environment != environment:
            # security.md T27: the launch URL's organization must own the issuer.
            raise UntrustedIssuerError("issuer does not belong to this launch URL")
        org = await self._registry.get(org_id)
        if org is None:  # suspended or deleted since admission
            raise UntrustedIssuerError("organization is not active")
        now = self._clock()
        first = await self._store.remember_once(
            "launch",
            launch_hash(request.launch),
            expires_at=now + self._policy.launch_replay_window,
        )
        if not first:
            raise LaunchParameterError("launch value was already used", reason="launch_replayed")
        client = self._services.smart_client(org, environment, role)
        approved = await self._registry.approved_snapshot(org_id, environment)
        redirect_to, pending = await client.start_launch(
            binding.canonical_base,
            org_id,
            launch=request.launch,
            session_id=session_id,
            approved=approved,
        )
        return await self._authorize(org_id, environment, role, redirect_to, pending)

    async def begin_standalone(
        self, org_id: str, environment: EnvironmentName, *, session_id: str
    ) -> WebResponse:
        """A standalone SMART sign-in against the environment's configured base (SMART §1.4),
        used to prove a FHIR base URL at approval (C1). Its callback goes to
        ``on_approval_signin``; its tokens are never stored."""
        org = await self._registry.get(org_id)
        env = None if org is None else org.environment(environment)
        if org is None or env is None:
            raise UntrustedIssuerError("no such organization environment")
        client = self._services.smart_client(org, environment, "approval")
        redirect_to, pending = await client.start_launch(
            env.config.fhir_base, org_id, launch=None, session_id=session_id, approved=None
        )
        return await self._authorize(org_id, environment, "approval", redirect_to, pending)

    async def _authorize(
        self,
        org_id: str,
        environment: EnvironmentName,
        role: LaunchRole,
        redirect_to: AuthorizationRedirect,
        pending: PendingAuthorization,
    ) -> WebResponse:
        envelope = PendingLaunch(
            role=role,
            environment=environment,
            authorization=base64.b64encode(pending.to_bytes()).decode("ascii"),
        )
        await self._store.put_pending(
            state_key(pending.state.get_secret_value()),
            org_id=org_id,
            payload=envelope.model_dump_json().encode("utf-8"),
            expires_at=pending.expires_at,
        )
        _log.info("authorization started (org %s, %s, %s)", org_id, environment, role)
        if redirect_to.method == "POST":
            return WebResponse(200, redirect_to.html().encode("utf-8"), "text/html; charset=utf-8")
        return redirect(redirect_to.url, status=302)

    async def complete_ehr_callback(
        self, params: Mapping[str, str], *, session_id: str
    ) -> WebResponse:
        """The SMART redirect URI: redeem, verify, then sign in, meeting, or join (C3, C4)."""
        taken = await self._store.take_pending(state_key(extract_state(params)), now=self._clock())
        envelope, pending = open_pending(taken)
        if envelope.role == "approval":
            return await self._complete_approval(envelope, pending, params, session_id)
        org = await self._active_org(pending.org_id)
        client = self._services.smart_client(org, envelope.environment, envelope.role)
        result = await client.complete_launch(pending, params, session_id=session_id)
        context = result.context
        if envelope.role == "patient":
            return await self._patient_redirect(org.org_id, visit_key(context))
        if not context.user_id:
            raise IdentityBindingError("the EHR did not identify the user", reason="no_ehr_user")
        token = result.token.access_token.get_secret_value()
        slot = await run_async(
            appointment_slot_flow(result.issuer, context, token, now=self._clock()), self._http
        )
        session = LaunchSession(
            role=envelope.role,
            org_id=org.org_id,
            issuer=result.issuer,
            ehr_user_id=context.user_id,
            visit_key=slot.key,
            start=slot.start,
            end=slot.end,
            department=context.location or context.login_department,
        )
        link = await self._binder.lookup(org.org_id, result.issuer, context.user_id)
        if link is None:
            return await self._begin_binding(org, session, session_id)
        return await self._enter_meeting(org, session, link.object_id)

    async def _complete_approval(
        self,
        envelope: PendingLaunch,
        pending: PendingAuthorization,
        params: Mapping[str, str],
        session_id: str,
    ) -> WebResponse:
        org = await self._registry.get(pending.org_id)
        if org is None or self.on_approval_signin is None:
            raise StateInvalidError("no approval is waiting for this sign-in", reason="purpose")
        client = self._services.smart_client(org, envelope.environment, "approval")
        result = await client.complete_launch(pending, params, session_id=session_id)
        return await self.on_approval_signin(org, envelope.environment, result, session_id)

    # -- the clinician's one-time Microsoft sign-in (B6) ---------------------------------------

    async def _begin_binding(
        self, org: Organization, session: LaunchSession, session_id: str
    ) -> WebResponse:
        handle = secrets.token_urlsafe(32)
        now = self._clock()
        await self._store.put_pending(
            launch_session_key(handle),
            org_id=org.org_id,
            payload=session.model_dump_json().encode("utf-8"),
            expires_at=now + _SESSION_TTL,
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
        """The Microsoft redirect URI for clinician binding: verify, bind once, enter meeting."""
        now = self._clock()
        org_id, pending = await take_pending_signin(self._store, params, now=now)
        if pending.purpose != "clinician_binding" or pending.bound_launch is None:
            raise StateInvalidError("sign-in was not started for a clinician", reason="purpose")
        org = await self._active_org(org_id)
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
        return await self._enter_meeting(org, session, identity.object_id)

    # -- meetings (B2, B5) ---------------------------------------------------------------------

    async def _enter_meeting(
        self, org: Organization, session: LaunchSession, organizer_oid: str
    ) -> WebResponse:
        slot = VisitSlot(session.visit_key, session.start, session.end)
        preset = self._policy.consult_preset if session.role == "consult" else None
        meeting = await self._ensure(org, slot, organizer_oid, preset, session.department)
        return redirect(
            clinician_join_url(
                meeting,
                self._policy.clinician_join,
                allowed_hosts=self._policy.allowed_join_hosts,
            )
        )

    async def _ensure(
        self,
        org: Organization,
        slot: VisitSlot,
        organizer_oid: str,
        preset: str | None,
        department: str | None,
    ) -> Meeting:
        policy = PRESETS[preset or self._policy.provider_preset]
        request = MeetingRequest(
            org_id=org.org_id,
            appointment_id=slot.key,
            organizer_oid=organizer_oid,
            start=slot.start,
            end=slot.end,
            policy=policy,
        )
        try:
            meeting = await self._services.meeting_factory(org).ensure_meeting(request)
        except Exception as exc:
            metrics.record_meeting(metrics.outcome_of(exc))
            raise
        metrics.record_meeting("ok")
        row = MeetingRow(
            org_id=org.org_id,
            external_id=meeting.external_id,
            organizer_oid=meeting.organizer_oid,
            meeting_id=meeting.meeting_id,
            join_url=meeting.join_url.get_secret_value(),
            start=meeting.start,
            end=meeting.end,
            state="active",
            department=department,
        )
        await self._store.put_meeting(row)
        if self._on_meeting_ready is not None:
            await self._on_meeting_ready(row)
        _log.info("meeting ready (org %s)", org.org_id)
        return meeting

    async def prepare_visit(
        self,
        org_id: str,
        *,
        visit_key: str,
        organizer_oid: str,
        start: datetime,
        end: datetime,
        preset: str | None = None,
        department: str | None = None,
    ) -> str:
        """Create the visit's meeting ahead of time and return a patient join-link token (C4)."""
        org = await self._active_org(org_id)
        slot = VisitSlot(visit_key, start, end)
        meeting = await self._ensure(org, slot, organizer_oid, preset, department)
        return await self.joinlinks.issue(org_id, meeting.external_id, meeting.start, meeting.end)

    async def cancel_visit(self, org_id: str, visit_key: str) -> bool:
        """Cancel the meeting and revoke its join links; ``False`` if there was no meeting."""
        org = await self._active_org(org_id)
        row = await self._store.get_meeting(org_id, external_id_for(self._key, org_id, visit_key))
        if row is None:
            return False
        await self._services.meeting_factory(org).cancel(
            org_id=org_id,
            external_id=row.external_id,
            organizer_oid=row.organizer_oid,
            meeting_id=row.meeting_id,
        )
        await self.joinlinks.revoke(org_id, row.external_id)
        await self._store.put_meeting(dataclasses.replace(row, state="cancelled"))
        return True

    # -- patients (C4, A10) --------------------------------------------------------------------

    async def join(self, token: str, *, client_key: str) -> WebResponse:
        """``/j/<token>``: a valid join link → ``303`` to the meeting's anonymous join URL."""
        row = await self.joinlinks.resolve(token, client_key=client_key)
        meeting = await self._store.get_meeting(row.org_id, row.external_id)
        return self._patient_response(meeting)

    async def join_visit(self, org_id: str, key: str | None) -> WebResponse:
        """The patient's redirect for a visit named by an already verified context."""
        await self._active_org(org_id)
        return await self._patient_redirect(org_id, key)

    async def join_from_context_link(
        self,
        org_id: str,
        environment: EnvironmentName,
        encrypted: str,
        *,
        key: ContextLinkKey,
        max_age: timedelta = timedelta(minutes=5),
    ) -> WebResponse:
        """An Epic context-aware link (A10): decrypt, check freshness and first use, then the
        same appointment's meeting. The link must carry the appointment (or encounter) FHIR id
        among its context tokens so it names the same visit as the clinician's launch."""
        org = await self._active_org(org_id)
        env = org.environment(environment)
        if env is None or env.state != "active":
            raise UntrustedIssuerError("environment is not active")
        link = await decrypt_context_link(
            encrypted,
            key,
            now=self._clock(),
            max_age=max_age,
            nonces=self._store,
            link_format=env.config.context_link,
        )
        return await self._patient_redirect(org_id, visit_key(link.context))

    async def _patient_redirect(self, org_id: str, key: str | None) -> WebResponse:
        if key is None:
            raise VisitNotReadyError("the launch named no appointment")
        meeting = await self._store.get_meeting(org_id, external_id_for(self._key, org_id, key))
        return self._patient_response(meeting)

    def _patient_response(self, row: MeetingRow | None) -> WebResponse:
        if row is None or row.state != "active":
            raise VisitNotReadyError("the visit has no meeting yet")
        meeting = meeting_of(row)
        return redirect(patient_join_url(meeting, allowed_hosts=self._policy.allowed_join_hosts))

    async def _active_org(self, org_id: str) -> Organization:
        org = await self._registry.get(org_id)
        if org is None or not has_active_environment(org):
            raise UntrustedIssuerError("organization is not active")
        return org

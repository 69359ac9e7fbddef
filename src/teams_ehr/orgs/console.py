"""The admin console service: administrators' sign-in, who administers what, organization edits.

The Microsoft 365 admin signs in with Microsoft (OpenID Connect, :mod:`teams_ehr.teams.signin`
with ``purpose="approval"``, back to :data:`ADMIN_MICROSOFT_CALLBACK_PATH`), enters an
organization's FHIR base URLs and names its approver; the approver, the EHR analyst of
docs/guides/ehr-analyst.md, signs in the same way and approves
(:mod:`teams_ehr.orgs.approval_signin`); the integration records are then shown. Sessions and
their CSRF tokens: :mod:`teams_ehr.orgs.console_sessions`. docs/security.md (threat T28) pins the
rules.

Who may do what:

* **Administer** an organization (view, edit, submit, withdraw, suspend, resume, records, audit):
  an identity of the organization's tenant that is its designated approver or is listed for that
  tenant in :attr:`AdminPolicy.administrators` (the integrator's list of Microsoft 365 admins).
* **Create** an organization: a listed administrator; the organization's tenant is the signed-in
  tenant (an admin never configures another tenant).
* **Approve**: only the designated approver (the registry enforces tenant, ``oid`` and the
  self-approval policy), in the steps of :mod:`teams_ehr.orgs.approval_signin`.

Unknown and other tenants' organizations are refused alike (no existence oracle). Mutations go
to the registry's append-only audit log.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Protocol

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from teams_ehr._redact import get_logger
from teams_ehr._types import Clock, utc_now
from teams_ehr.errors import (
    ApprovalRequiredError,
    ConfigurationError,
    CrossTenantDeniedError,
    StateInvalidError,
)
from teams_ehr.orgs.approval_signin import ApprovalSignin, StandaloneStarter
from teams_ehr.orgs.console_sessions import CONSOLE_ORG_ID, AdminSession, AdminSessions
from teams_ehr.orgs.models import EnvironmentConfig, EnvironmentName, Organization
from teams_ehr.orgs.records import IntegrationRecords, integration_records
from teams_ehr.orgs.registry import OrganizationRegistry
from teams_ehr.smart.discovery import DiscoveryCache
from teams_ehr.smart.flows import LaunchResult
from teams_ehr.smart.jwks import JwksCache
from teams_ehr.store.protocol import AuditEntry, OrganizationStore, PendingAuthorizationStore
from teams_ehr.teams.identity import MicrosoftIdentity, normalize_guid
from teams_ehr.teams.signin import (
    EntraAppConfig,
    begin_microsoft_signin,
    complete_microsoft_signin_async,
    store_pending_signin,
    take_pending_signin,
)
from teams_ehr.web import WebResponse, redirect

__all__ = [
    "ADMIN_MICROSOFT_CALLBACK_PATH",
    "ADMIN_PATH",
    "AdminPolicy",
    "AdminService",
    "AdminStore",
]

ADMIN_PATH = "/admin"
ADMIN_MICROSOFT_CALLBACK_PATH = "/admin/microsoft/callback"
_log = get_logger(__name__)


class AdminPolicy(BaseModel):
    """Who administers which tenant, and how long an admin session lives."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    administrators: Mapping[str, frozenset[str]] = Field(default_factory=dict)
    session_ttl: timedelta = timedelta(hours=1)
    allow_http: bool = False  # FHIR bases over http: loopback fakes and the demo only

    @field_validator("administrators")
    @classmethod
    def _guids(cls, value: Mapping[str, frozenset[str]]) -> dict[str, frozenset[str]]:
        return {
            normalize_guid(tenant): frozenset(normalize_guid(oid) for oid in oids)
            for tenant, oids in value.items()
        }

    def is_administrator(self, identity: MicrosoftIdentity) -> bool:
        return identity.object_id in self.administrators.get(identity.tenant_id, frozenset())


class AdminStore(OrganizationStore, PendingAuthorizationStore, Protocol):
    """The storage the console needs: organizations + audit, and pending rows for sessions."""


def _not_administrator() -> ApprovalRequiredError:
    return ApprovalRequiredError("not an administrator here", reason="not_administrator")


def _new_token() -> str:
    return secrets.token_urlsafe(32)


class AdminService:
    """The console's operations; every one takes the browser ``session_id`` (see module doc)."""

    def __init__(
        self,
        *,
        store: AdminStore,
        registry: OrganizationRegistry,
        visits: StandaloneStarter,
        entra: Callable[[str], EntraAppConfig],
        jwks: JwksCache,
        discovery: DiscoveryCache,
        http: httpx.AsyncClient,
        app_base_url: str,
        policy: AdminPolicy | None = None,
        clock: Clock = utc_now,
        token_factory: Callable[[], str] = _new_token,
    ) -> None:
        self._store = store
        self.registry = registry
        self._entra = entra
        self._jwks = jwks
        self._http = http
        self.app_base_url = app_base_url.rstrip("/")
        self.policy = policy or AdminPolicy()
        self._clock = clock
        self._token = token_factory
        self._sessions = AdminSessions(store, clock=clock)
        self._approval = ApprovalSignin(
            sessions=self._sessions,
            audit=store,
            registry=registry,
            visits=visits,
            jwks=jwks,
            discovery=discovery,
            http=http,
            clock=clock,
            token_factory=token_factory,
        )

    def __repr__(self) -> str:
        return "<AdminService>"

    # -- sign-in and sessions ------------------------------------------------------------------

    async def begin_signin(self, tenant_id: str, *, session_id: str) -> WebResponse:
        """Start the Microsoft sign-in for ``tenant_id`` (a tenant with admins or organizations)."""
        try:
            tenant = normalize_guid(tenant_id)
        except ValueError:
            raise CrossTenantDeniedError("not a tenant id", reason="admin_bad_tenant") from None
        known = tenant in self.policy.administrators or bool(
            await self.registry.list(tenant_id=tenant)
        )
        if not known:
            raise CrossTenantDeniedError("no organization in this tenant", reason="admin_tenant")
        url, pending = begin_microsoft_signin(
            self._entra(tenant),
            purpose="approval",
            bound_launch=None,
            session_id=session_id,
            now=self._clock(),
            token_factory=self._token,
        )
        await store_pending_signin(self._store, pending, org_id=CONSOLE_ORG_ID)
        return redirect(url, status=302)

    async def complete_signin(self, params: Mapping[str, str], *, session_id: str) -> WebResponse:
        """``/admin/microsoft/callback``: verify, then open the admin session."""
        now = self._clock()
        marker, pending = await take_pending_signin(self._store, params, now=now)
        if marker != CONSOLE_ORG_ID or pending.purpose != "approval":
            raise StateInvalidError("sign-in was not started by the console", reason="purpose")
        identity = await complete_microsoft_signin_async(
            self._entra(pending.tenant_id),
            params,
            pending,
            session_id=session_id,
            jwks=self._jwks,
            client=self._http,
            now=now,
        )
        expires_at = now + self.policy.session_ttl
        session = AdminSession(
            identity=identity, csrf=SecretStr(self._token()), expires_at=expires_at
        )
        await self._sessions.replace(session_id, session)
        _log.info("console sign-in (tenant %s)", identity.tenant_id)
        return redirect(ADMIN_PATH)

    async def session(self, session_id: str) -> AdminSession | None:
        """The live admin session of this browser, or ``None``."""
        return await self._sessions.current(session_id)

    async def sign_out(self, session_id: str, csrf: str | None) -> None:
        await self._sessions.require_form(session_id, csrf)
        await self._sessions.drop(session_id)

    # -- reads ---------------------------------------------------------------------------------

    def may_administer(self, org: Organization, identity: MicrosoftIdentity) -> bool:
        if identity.tenant_id != org.tenant_id:
            return False
        return identity.object_id == org.approver_oid or self.policy.is_administrator(identity)

    async def _organization(self, session: AdminSession, org_id: str) -> Organization:
        org = await self.registry.get(org_id, tenant_id=session.identity.tenant_id)
        if org is None or not self.may_administer(org, session.identity):
            raise _not_administrator()
        return org

    async def organizations(self, session_id: str) -> list[Organization]:
        """The organizations of the signed-in tenant this identity administers or approves."""
        session = await self._sessions.require(session_id)
        orgs = await self.registry.list(tenant_id=session.identity.tenant_id)
        return [org for org in orgs if self.may_administer(org, session.identity)]

    async def organization(self, session_id: str, org_id: str) -> Organization:
        return await self._organization(await self._sessions.require(session_id), org_id)

    async def records(
        self, session_id: str, org_id: str, environment: EnvironmentName
    ) -> IntegrationRecords:
        """The integration records of an approved, unedited environment
        (docs/guides/ehr-analyst.md, "Integration records")."""
        org = await self._organization(await self._sessions.require(session_id), org_id)
        return integration_records(org, environment, app_base_url=self.app_base_url)

    async def audit(self, session_id: str, org_id: str) -> Sequence[AuditEntry]:
        org = await self._organization(await self._sessions.require(session_id), org_id)
        return await self.registry.audit_log(org.org_id)

    # -- configuration -------------------------------------------------------------------------

    async def create(
        self,
        session_id: str,
        csrf: str | None,
        *,
        org_id: str,
        display_name: str,
        approver_oid: str,
        environments: Mapping[EnvironmentName, EnvironmentConfig],
        allow_self_approval: bool = True,
    ) -> Organization:
        """A new organization in the signed-in tenant, its environments as drafts."""
        session = await self._sessions.require_form(session_id, csrf)
        if not self.policy.is_administrator(session.identity):
            raise _not_administrator()
        self._check_http(environments)
        org = Organization.model_validate(
            {
                "org_id": org_id,
                "display_name": display_name,
                "approver_oid": approver_oid,
                "tenant_id": session.identity.tenant_id,
                "allow_self_approval": allow_self_approval,
                **{name: {"config": config} for name, config in environments.items()},
            }
        )
        return await self.registry.create(org, actor=session.identity.object_id)

    async def update(
        self,
        session_id: str,
        csrf: str | None,
        org_id: str,
        *,
        expected_version: int,
        display_name: str | None = None,
        approver_oid: str | None = None,
        environments: Mapping[EnvironmentName, EnvironmentConfig] | None = None,
    ) -> Organization:
        """Edit; any approval-relevant change sends the environment back for approval."""
        session = await self._sessions.require_form(session_id, csrf)
        await self._organization(session, org_id)
        self._check_http(environments or {})
        return await self.registry.update(
            org_id,
            expected_version=expected_version,
            actor=session.identity.object_id,
            display_name=display_name,
            approver_oid=approver_oid,
            environments=environments,
        )

    def _check_http(self, environments: Mapping[EnvironmentName, EnvironmentConfig]) -> None:
        if not self.policy.allow_http and any(c.allow_http for c in environments.values()):
            raise ConfigurationError("http FHIR bases are not allowed", reason="admin_http")

    async def transition(
        self, session_id: str, csrf: str | None, org_id: str, env: EnvironmentName, action: str
    ) -> Organization:
        """``submit``, ``withdraw``, ``suspend`` or ``resume`` one environment."""
        session = await self._sessions.require_form(session_id, csrf)
        await self._organization(session, org_id)
        steps = {
            "submit": self.registry.submit_for_approval,
            "withdraw": self.registry.withdraw,
            "suspend": self.registry.suspend,
            "resume": self.registry.resume,
        }
        if action not in steps:
            raise ConfigurationError("unknown action", reason="admin_action")
        return await steps[action](org_id, env, actor=session.identity.object_id)

    # -- approval: the steps of teams_ehr.orgs.approval_signin ---------------------------------

    async def begin_approval(
        self,
        session_id: str,
        csrf: str | None,
        org_id: str,
        environment: EnvironmentName,
        *,
        reviewed_hash: str,
    ) -> WebResponse:
        """Step 1: the designated approver reviewed ``reviewed_hash``; sign in to the EHR."""
        session = await self._sessions.require_form(session_id, csrf)
        org = await self._organization(session, org_id)
        return await self._approval.begin(
            session_id, session, org, environment, reviewed_hash=reviewed_hash
        )

    async def on_approval_signin(
        self, org: Organization, environment: EnvironmentName, result: LaunchResult, session_id: str
    ) -> WebResponse:
        """Step 2, called back by the visit flows' standalone sign-in: keep only the proof,
        then show the approver the review page."""
        session = await self._sessions.require(session_id)
        await self._approval.prove(session_id, session, org, environment, result)
        return redirect(f"{ADMIN_PATH}/orgs/{org.org_id}/{environment}/review")

    async def approve(
        self,
        session_id: str,
        csrf: str | None,
        org_id: str,
        environment: EnvironmentName,
        *,
        approval_id: str | None,
    ) -> Organization:
        """Step 3: the approver confirms; the proof is used once (replay → refused)."""
        session = await self._sessions.require_form(session_id, csrf)
        await self._organization(session, org_id)
        return await self._approval.approve(
            session_id, session, org_id, environment, approval_id=approval_id
        )

    async def pending_approval(
        self, session_id: str, org_id: str, environment: EnvironmentName
    ) -> tuple[str, bool] | None:
        """``(approval_id, proven)`` of this session's approval of that environment, if any."""
        session = await self._sessions.require(session_id)
        return self._approval.pending(session, org_id, environment)

"""The administrator and approver console: sign-in, configure, approve, records (SPEC C1, C2).

The Microsoft connector's flow (seed/ehr-connector-en.md, "Connector setup"): the Microsoft 365
admin signs in with Microsoft and enters the FHIR base URLs and the approver; the approver (the
EHR analyst) signs in with Microsoft, then with the EHR *against that base URL* to validate it,
and approves; then the integration records are shown. Security.md T28 pins the rules.

Who may do what (this version):

* **Sign-in**: Microsoft (:mod:`teams_ehr.teams.signin`, ``purpose="approval"``) back to
  ``/admin/microsoft/callback``; the verified ``(tid, oid)`` becomes a server-side session bound
  to the browser session (encrypted pending row, absolute lifetime
  :attr:`AdminPolicy.session_ttl`) with a CSRF token. A read takes and re-puts the row, so two
  concurrent requests of one admin browser may see "sign in again" (acceptable for a console).
* **Administer** an organization (view, edit, submit, withdraw, suspend, resume, records, audit):
  an identity of the organization's tenant that is its designated approver or is listed for that
  tenant in :attr:`AdminPolicy.administrators` (the integrator's list of Microsoft 365 admins).
* **Create** an organization: a listed administrator; the organization's tenant is the signed-in
  tenant (an admin never configures another tenant).
* **Approve**: only the designated approver (the registry enforces tenant, ``oid`` and the
  self-approval policy), in two steps: ``begin_approval`` records the configuration hash the
  approver reviewed and starts a SMART standalone sign-in against the environment's exact base
  (:meth:`VisitService.begin_standalone`); the EHR callback reaches :meth:`on_approval_signin`,
  which turns the verified result into an :class:`ApprovalProof` (discovery snapshot + the
  ``id_token`` issuer, re-verified against the snapshot's JWKS) and discards the tokens; the
  approver then confirms with a CSRF-protected, single-use ``approve``.

Unknown and other tenants' organizations are refused alike (no existence oracle). Mutations go
to the registry's append-only audit log; refusals here are audited as ``approval_refused``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Protocol

import httpx
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SecretStr, field_validator

from teams_ehr._http import run_async
from teams_ehr._redact import get_logger
from teams_ehr._types import Clock, utc_now
from teams_ehr.errors import (
    ApprovalRequiredError,
    ConfigurationError,
    CrossTenantDeniedError,
    StateInvalidError,
    TokenInvalidError,
)
from teams_ehr.orgs.approval import ApprovalProof
from teams_ehr.orgs.models import EnvironmentConfig, EnvironmentName, Organization, config_hash
from teams_ehr.orgs.records import IntegrationRecords, integration_records
from teams_ehr.orgs.registry import OrganizationRegistry
from teams_ehr.smart.discovery import DiscoveryCache, DiscoverySnapshot
from teams_ehr.smart.flows import LaunchResult
from teams_ehr.smart.jwks import JwksCache
from teams_ehr.smart.jwt_verify import JwtProfile, verify_jwt_flow
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
    "AdminSession",
    "StandaloneStarter",
]

ADMIN_PATH = "/admin"
ADMIN_MICROSOFT_CALLBACK_PATH = "/admin/microsoft/callback"
_MARKER = "~admin"  # the pending rows' org_id: never a valid organization id
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


class _ApprovalStep(BaseModel):
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
    approval: _ApprovalStep | None = None

    def to_bytes(self) -> bytes:
        document = self.model_dump(mode="json")
        document["csrf"] = self.csrf.get_secret_value()
        return json.dumps(document, separators=(",", ":"), sort_keys=True).encode("utf-8")


class AdminStore(OrganizationStore, PendingAuthorizationStore, Protocol):
    """The storage the console needs: organizations + audit, and pending rows for sessions."""


class StandaloneStarter(Protocol):
    """:meth:`teams_ehr.visits.VisitService.begin_standalone`."""

    async def begin_standalone(
        self, org_id: str, environment: EnvironmentName, *, session_id: str
    ) -> WebResponse: ...


def _session_key(session_id: str) -> str:
    return hashlib.sha256(b"teams-ehr/admin-session\x00" + session_id.encode("utf-8")).hexdigest()


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
        self._visits = visits
        self._entra = entra
        self._jwks = jwks
        self._discovery = discovery
        self._http = http
        self.app_base_url = app_base_url.rstrip("/")
        self.policy = policy or AdminPolicy()
        self._clock = clock
        self._token = token_factory

    def __repr__(self) -> str:
        return "<AdminService>"

    # -- sessions ------------------------------------------------------------------------------

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
            self._entra(tenant), purpose="approval", bound_launch=None, session_id=session_id,
            now=self._clock(), token_factory=self._token,
        )  # fmt: skip
        await store_pending_signin(self._store, pending, org_id=_MARKER)
        return redirect(url, status=302)

    async def complete_signin(self, params: Mapping[str, str], *, session_id: str) -> WebResponse:
        """``/admin/microsoft/callback``: verify, then open the admin session."""
        now = self._clock()
        marker, pending = await take_pending_signin(self._store, params, now=now)
        if marker != _MARKER or pending.purpose != "approval":
            raise StateInvalidError("sign-in was not started by the console", reason="purpose")
        identity = await complete_microsoft_signin_async(
            self._entra(pending.tenant_id), params, pending, session_id=session_id,
            jwks=self._jwks, client=self._http, now=now,
        )  # fmt: skip
        await self._drop(session_id)
        expires_at = now + self.policy.session_ttl
        session = AdminSession(
            identity=identity, csrf=SecretStr(self._token()), expires_at=expires_at
        )
        await self._put(session_id, session)
        _log.info("console sign-in (tenant %s)", identity.tenant_id)
        return redirect(ADMIN_PATH)

    async def session(self, session_id: str) -> AdminSession | None:
        """The live admin session of this browser, or ``None``."""
        taken = await self._store.take_pending(_session_key(session_id), now=self._clock())
        if taken is None or taken[0] != _MARKER:
            return None
        session = AdminSession.model_validate_json(taken[1])
        await self._put(session_id, session)
        return session

    async def sign_out(self, session_id: str, csrf: str | None) -> None:
        await self._require_form(session_id, csrf)
        await self._drop(session_id)

    async def _put(self, session_id: str, session: AdminSession) -> None:
        await self._store.put_pending(
            _session_key(session_id), org_id=_MARKER, payload=session.to_bytes(),
            expires_at=session.expires_at,
        )  # fmt: skip

    async def _drop(self, session_id: str) -> None:
        await self._store.take_pending(_session_key(session_id), now=self._clock())

    async def _replace(self, session_id: str, session: AdminSession) -> None:
        await self._drop(session_id)
        await self._put(session_id, session)

    async def _require(self, session_id: str) -> AdminSession:
        session = await self.session(session_id)
        if session is None:
            raise ApprovalRequiredError("sign in first", reason="admin_not_signed_in")
        return session

    async def _require_form(self, session_id: str, csrf: str | None) -> AdminSession:
        """A mutation: the signed-in session and its CSRF token (T28)."""
        session = await self._require(session_id)
        expected = session.csrf.get_secret_value().encode()
        if not csrf or not hmac.compare_digest(csrf.encode(), expected):
            raise StateInvalidError("the form token is missing or wrong", reason="csrf")
        return session

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
        session = await self._require(session_id)
        orgs = await self.registry.list(tenant_id=session.identity.tenant_id)
        return [org for org in orgs if self.may_administer(org, session.identity)]

    async def organization(self, session_id: str, org_id: str) -> Organization:
        return await self._organization(await self._require(session_id), org_id)

    async def records(
        self, session_id: str, org_id: str, environment: EnvironmentName
    ) -> IntegrationRecords:
        """SPEC C2: the records of an approved, unedited environment."""
        org = await self._organization(await self._require(session_id), org_id)
        return integration_records(org, environment, app_base_url=self.app_base_url)

    async def audit(self, session_id: str, org_id: str) -> Sequence[AuditEntry]:
        org = await self._organization(await self._require(session_id), org_id)
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
        session = await self._require_form(session_id, csrf)
        if not self.policy.is_administrator(session.identity):
            raise _not_administrator()
        self._check_http(environments)
        org = Organization.model_validate(
            {"org_id": org_id, "display_name": display_name, "approver_oid": approver_oid,
             "tenant_id": session.identity.tenant_id, "allow_self_approval": allow_self_approval,
             **{name: {"config": config} for name, config in environments.items()}}
        )  # fmt: skip
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
        session = await self._require_form(session_id, csrf)
        await self._organization(session, org_id)
        self._check_http(environments or {})
        return await self.registry.update(
            org_id, expected_version=expected_version, actor=session.identity.object_id,
            display_name=display_name, approver_oid=approver_oid, environments=environments,
        )  # fmt: skip

    def _check_http(self, environments: Mapping[EnvironmentName, EnvironmentConfig]) -> None:
        if not self.policy.allow_http and any(c.allow_http for c in environments.values()):
            raise ConfigurationError("http FHIR bases are not allowed", reason="admin_http")

    async def transition(
        self, session_id: str, csrf: str | None, org_id: str, env: EnvironmentName, action: str
    ) -> Organization:
        """``submit``, ``withdraw``, ``suspend`` or ``resume`` one environment."""
        session = await self._require_form(session_id, csrf)
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

    # -- approval (T28) ------------------------------------------------------------------------

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
        session = await self._require_form(session_id, csrf)
        org = await self._organization(session, org_id)
        env = org.environment(environment)
        who = session.identity
        reason = None
        if env is None or env.state != "pending_approval":
            reason = "not_pending"
        elif who.object_id != org.approver_oid:
            reason = "not_designated_approver"
        elif reviewed_hash != config_hash(org, environment):
            reason = "stale_config_hash"
        if reason is not None:
            await self._refused(org_id, who.object_id, environment, reason)
            raise ApprovalRequiredError("this approval cannot start", reason=reason)
        step = _ApprovalStep(
            org_id=org_id, environment=environment, reviewed_hash=reviewed_hash,
            approval_id=self._token(),
        )  # fmt: skip
        await self._replace(session_id, session.model_copy(update={"approval": step}))
        return await self._visits.begin_standalone(org_id, environment, session_id=session_id)

    async def on_approval_signin(
        self, org: Organization, environment: EnvironmentName, result: LaunchResult, session_id: str
    ) -> WebResponse:
        """Step 2, the :class:`~teams_ehr.visits.ApprovalSigninHook`: keep only the proof."""
        session = await self._require(session_id)
        step = session.approval
        if step is None or step.org_id != org.org_id or step.environment != environment:
            await self._refused(org.org_id, session.identity.object_id, environment, "no_approval")
            raise ApprovalRequiredError("no approval is in progress", reason="no_approval")
        env = org.environment(environment)
        if env is None or result.org_id != org.org_id or result.issuer != env.config.fhir_base:
            reason = "proof_other_base"
            await self._refused(org.org_id, session.identity.object_id, environment, reason)
            raise ApprovalRequiredError("the EHR sign-in was against another base", reason=reason)
        # Only the proof is kept: the result's tokens go no further (TEC, T30).
        proof = await self._proof(env.config, result)
        updated = step.model_copy(update={"proof": proof})
        await self._replace(session_id, session.model_copy(update={"approval": updated}))
        return redirect(f"{ADMIN_PATH}/orgs/{org.org_id}/{environment}/review")

    async def _proof(self, config: EnvironmentConfig, result: LaunchResult) -> ApprovalProof:
        epic = config.client_id if config.epic_client_id is not None else None
        smart = await self._discovery.get(self._http, result.issuer, epic_client_id=epic)
        snapshot = DiscoverySnapshot.of(smart)
        return ApprovalProof(
            canonical_base=result.issuer,
            snapshot=snapshot,
            id_token_issuer=await self._id_token_issuer(config, snapshot, result),
            signed_in_at=self._clock(),
        )

    async def _id_token_issuer(
        self, config: EnvironmentConfig, snapshot: DiscoverySnapshot, result: LaunchResult
    ) -> str | None:
        """The ``iss`` of the id_token, verified again against the snapshot's issuer and JWKS
        (fixed algorithm list, keys only from the discovered ``jwks_uri``: SPEC A7)."""
        if result.token.id_token is None:
            return None
        raw = result.token.id_token.get_secret_value()
        if snapshot.issuer is None or snapshot.jwks_uri is None:
            return None  # nothing to compare with: apply_approval checks the base only
        algorithms = ("RS256", "RS384", "ES256", "ES384")
        profile = JwtProfile(
            algorithms=algorithms, issuers=(snapshot.issuer,), audience=config.client_id
        )
        try:
            flow = verify_jwt_flow(raw, profile, self._jwks, snapshot.jwks_uri, now=self._clock())
            verified = await run_async(flow, self._http)
        except TokenInvalidError:
            return None
        issuer = verified.get("iss")
        return issuer if isinstance(issuer, str) else None

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
        session = await self._require_form(session_id, csrf)
        await self._organization(session, org_id)
        step = session.approval
        await self._replace(session_id, session.model_copy(update={"approval": None}))
        given = (approval_id or "").encode()
        same = step is not None and (step.org_id, step.environment) == (org_id, environment)
        if not (step and same and hmac.compare_digest(given, step.approval_id.encode())):
            step = None
        proof, reviewed = (step.proof, step.reviewed_hash) if step else (None, "")
        return await self.registry.approve(
            org_id, environment, session.identity, proof, config_hash=reviewed
        )

    async def pending_approval(
        self, session_id: str, org_id: str, environment: EnvironmentName
    ) -> tuple[str, bool] | None:
        """``(approval_id, proven)`` of this session's approval of that environment, if any."""
        session = await self._require(session_id)
        step = session.approval
        if step is None or step.org_id != org_id or step.environment != environment:
            return None
        return step.approval_id, step.proof is not None

    async def _refused(
        self, org_id: str, actor: str, environment: EnvironmentName, reason: str
    ) -> None:
        await self._store.append_audit(
            org_id, at=self._clock(), actor=actor, action="approval_refused",
            detail={"environment": environment, "reason": reason},
        )  # fmt: skip
        _log.warning("approval refused (org %s, %s): %s", org_id, environment, reason)

"""The approver's three steps: review, a SMART sign-in against the exact base, approve.

docs/guides/ehr-analyst.md describes them from the approver's side and docs/security.md (threat T28)
pins the rules; the console (:mod:`teams_ehr.orgs.console`) checks the session and who may
administer the organization before each step.

1. :meth:`ApprovalSignin.begin`: the designated approver reviewed a configuration hash; it is
   recorded in the session and a SMART App Launch *standalone launch* starts against the
   environment's exact FHIR base (:class:`StandaloneStarter`, the visit flows' standalone
   sign-in).
2. :meth:`ApprovalSignin.prove`: the EHR callback's verified result becomes an
   :class:`~teams_ehr.orgs.approval.ApprovalProof` (the discovery snapshot and the ``id_token``
   issuer, verified again against the snapshot's ``jwks_uri`` as OpenID Connect Core 1.0
   §3.1.3.7 asks); the tokens go no further.
3. :meth:`ApprovalSignin.approve`: the proof is handed, once, to the registry and its state
   machine (:func:`~teams_ehr.orgs.approval.apply_approval`); a replayed or foreign approval id
   hands over no proof, which the state machine refuses.

Refusals here are audited as ``approval_refused``.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Protocol

import httpx

from teams_ehr._redact import get_logger
from teams_ehr._types import Clock
from teams_ehr.errors import ApprovalRequiredError, TokenInvalidError
from teams_ehr.orgs.approval import ApprovalProof
from teams_ehr.orgs.console_sessions import AdminSession, AdminSessions, ApprovalStep
from teams_ehr.orgs.models import EnvironmentConfig, EnvironmentName, Organization, config_hash
from teams_ehr.orgs.registry import OrganizationRegistry
from teams_ehr.sansio import run_async
from teams_ehr.smart.discovery import DiscoveryCache, DiscoverySnapshot
from teams_ehr.smart.flows import LaunchResult
from teams_ehr.smart.jwks import JwksCache
from teams_ehr.smart.jwt_verify import JwtProfile, verify_jwt_flow
from teams_ehr.store.protocol import OrganizationStore
from teams_ehr.web import WebResponse

__all__ = ["ApprovalSignin", "StandaloneStarter"]

_ID_TOKEN_ALGORITHMS = ("RS256", "RS384", "ES256", "ES384")
_log = get_logger(__name__)


class StandaloneStarter(Protocol):
    """Starts a SMART standalone launch of an environment, bound to the browser session."""

    async def begin_standalone(
        self, org_id: str, environment: EnvironmentName, *, session_id: str
    ) -> WebResponse: ...


class ApprovalSignin:
    """The approval steps of an authenticated, authorized console session (see module doc)."""

    def __init__(
        self,
        *,
        sessions: AdminSessions,
        audit: OrganizationStore,
        registry: OrganizationRegistry,
        visits: StandaloneStarter,
        jwks: JwksCache,
        discovery: DiscoveryCache,
        http: httpx.AsyncClient,
        clock: Clock,
        token_factory: Callable[[], str],
    ) -> None:
        self._sessions = sessions
        self._audit = audit
        self._registry = registry
        self._visits = visits
        self._jwks = jwks
        self._discovery = discovery
        self._http = http
        self._clock = clock
        self._token = token_factory

    def __repr__(self) -> str:
        return "<ApprovalSignin>"

    async def begin(
        self,
        session_id: str,
        session: AdminSession,
        org: Organization,
        environment: EnvironmentName,
        *,
        reviewed_hash: str,
    ) -> WebResponse:
        """Step 1: only the designated approver, of a pending environment, at its current hash."""
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
            await self._refused(org.org_id, who.object_id, environment, reason)
            raise ApprovalRequiredError("this approval cannot start", reason=reason)
        step = ApprovalStep(
            org_id=org.org_id,
            environment=environment,
            reviewed_hash=reviewed_hash,
            approval_id=self._token(),
        )
        await self._sessions.replace(session_id, session.model_copy(update={"approval": step}))
        return await self._visits.begin_standalone(org.org_id, environment, session_id=session_id)

    async def prove(
        self,
        session_id: str,
        session: AdminSession,
        org: Organization,
        environment: EnvironmentName,
        result: LaunchResult,
    ) -> None:
        """Step 2: keep only the proof of the EHR sign-in, and only for the approval started."""
        step = session.approval
        actor = session.identity.object_id
        if step is None or step.org_id != org.org_id or step.environment != environment:
            await self._refused(org.org_id, actor, environment, "no_approval")
            raise ApprovalRequiredError("no approval is in progress", reason="no_approval")
        env = org.environment(environment)
        if env is None or result.org_id != org.org_id or result.issuer != env.config.fhir_base:
            reason = "proof_other_base"
            await self._refused(org.org_id, actor, environment, reason)
            raise ApprovalRequiredError("the EHR sign-in was against another base", reason=reason)
        # Only the proof is kept: the result's tokens go no further (docs/security.md, threat T30).
        proof = await self._proof(env.config, result)
        updated = step.model_copy(update={"proof": proof})
        await self._sessions.replace(session_id, session.model_copy(update={"approval": updated}))

    async def approve(
        self,
        session_id: str,
        session: AdminSession,
        org_id: str,
        environment: EnvironmentName,
        *,
        approval_id: str | None,
    ) -> Organization:
        """Step 3: the approver confirms; the proof is used once (a replay is refused)."""
        step = session.approval
        await self._sessions.replace(session_id, session.model_copy(update={"approval": None}))
        given = (approval_id or "").encode()
        same = step is not None and (step.org_id, step.environment) == (org_id, environment)
        if not (step and same and hmac.compare_digest(given, step.approval_id.encode())):
            step = None
        proof, reviewed = (step.proof, step.reviewed_hash) if step else (None, "")
        return await self._registry.approve(
            org_id, environment, session.identity, proof, config_hash=reviewed
        )

    @staticmethod
    def pending(
        session: AdminSession, org_id: str, environment: EnvironmentName
    ) -> tuple[str, bool] | None:
        """``(approval_id, proven)`` of the session's approval of that environment, if any."""
        step = session.approval
        if step is None or step.org_id != org_id or step.environment != environment:
            return None
        return step.approval_id, step.proof is not None

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
        """The ``iss`` of the id_token, verified again against the snapshot's issuer and keys
        (a fixed algorithm list, keys only from the discovered ``jwks_uri``)."""
        if result.token.id_token is None:
            return None
        raw = result.token.id_token.get_secret_value()
        if snapshot.issuer is None or snapshot.jwks_uri is None:
            return None  # nothing to compare with: apply_approval checks the base only
        profile = JwtProfile(
            algorithms=_ID_TOKEN_ALGORITHMS, issuers=(snapshot.issuer,), audience=config.client_id
        )
        try:
            flow = verify_jwt_flow(raw, profile, self._jwks, snapshot.jwks_uri, now=self._clock())
            verified = await run_async(flow, self._http)
        except TokenInvalidError:
            return None
        issuer = verified.get("iss")
        return issuer if isinstance(issuer, str) else None

    async def _refused(
        self, org_id: str, actor: str, environment: EnvironmentName, reason: str
    ) -> None:
        await self._audit.append_audit(
            org_id,
            at=self._clock(),
            actor=actor,
            action="approval_refused",
            detail={"environment": environment, "reason": reason},
        )
        _log.warning("approval refused (org %s, %s): %s", org_id, environment, reason)

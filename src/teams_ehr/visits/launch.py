"""The two SMART legs every EHR launch shares, whoever it serves: authorize and redeem.

SMART App Launch's EHR launch (https://hl7.org/fhir/smart-app-launch/app-launch.html): the EHR
opens ``/launch`` (clinician) or ``/patient`` (portal) with ``iss`` and ``launch``;
:meth:`EhrLaunch.begin` admits ``iss`` as the organization's approved FHIR base before any I/O,
refuses a replayed ``launch`` value, compares discovery with the approval snapshot and sends the
browser to the authorize endpoint, leaving the pending authorization in the store under its
``state`` (:func:`send_to_authorization`, also used by the approval's standalone sign-in). At
``/callback`` :meth:`EhrLaunch.redeem` exchanges the code and verifies the ``id_token`` for the
role the authorization was started for (docs/guides/integrator.md, "What a launch does").
An ``http://`` ``iss`` is admitted only for an environment approved with ``allow_http``, and
replay is refused per (canonical issuer, ``launch``), since ``launch`` is opaque to each EHR.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

from teams_ehr._redact import get_logger
from teams_ehr._types import Clock, utc_now
from teams_ehr.errors import LaunchParameterError, UntrustedIssuerError
from teams_ehr.orgs.models import EnvironmentName, Organization
from teams_ehr.orgs.registry import OrganizationRegistry
from teams_ehr.smart.authorize import AuthorizationRedirect, PendingAuthorization, state_key
from teams_ehr.smart.flows import LaunchResult
from teams_ehr.smart.launch import admit_launch, launch_replay_key, parse_launch_request
from teams_ehr.store.protocol import IssuerBinding, Store
from teams_ehr.visits.policy import VisitPolicy
from teams_ehr.visits.records import LaunchRole, PendingLaunch, active_org
from teams_ehr.visits.services import OrgServices
from teams_ehr.web import WebResponse, redirect

__all__ = ["EhrLaunch", "send_to_authorization"]

_log = get_logger(__name__)


async def send_to_authorization(
    store: Store,
    org_id: str,
    environment: EnvironmentName,
    role: LaunchRole,
    redirect_to: AuthorizationRedirect,
    pending: PendingAuthorization,
) -> WebResponse:
    """Keep ``pending`` under its state's key, then redirect (or auto-POST) to the EHR."""
    envelope = PendingLaunch(
        role=role,
        environment=environment,
        authorization=base64.b64encode(pending.to_bytes()).decode("ascii"),
    )
    await store.put_pending(
        state_key(pending.state.get_secret_value()),
        org_id=org_id,
        payload=envelope.model_dump_json().encode("utf-8"),
        expires_at=pending.expires_at,
    )
    _log.info("authorization started (org %s, %s, %s)", org_id, environment, role)
    if redirect_to.method == "POST":
        return WebResponse(200, redirect_to.html().encode("utf-8"), "text/html; charset=utf-8")
    return redirect(redirect_to.url, status=302)


class _ReadOnce:
    """The registry as an issuer resolver that reuses the organization this launch already read
    (one organization read per request; the issuer claim itself is still read)."""

    def __init__(self, registry: OrganizationRegistry, org: Organization | None) -> None:
        self._registry = registry
        self._org = org

    async def resolve_issuer(self, canonical_base: str) -> IssuerBinding | None:
        return await self._registry.resolve_issuer(canonical_base, known=self._org)


class EhrLaunch:
    """Begin an EHR launch for one role, and redeem its callback, over the store and registry."""

    def __init__(
        self,
        *,
        store: Store,
        registry: OrganizationRegistry,
        services: OrgServices,
        policy: VisitPolicy | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._registry = registry
        self._services = services
        self._policy = policy or VisitPolicy()
        self._clock = clock

    def __repr__(self) -> str:
        return "<EhrLaunch>"

    async def begin(
        self,
        org_id: str,
        environment: EnvironmentName,
        params: Mapping[str, str],
        *,
        session_id: str,
        role: LaunchRole,
    ) -> WebResponse:
        """Admit ``iss`` (no I/O before), refuse a replayed ``launch``, redirect to the EHR.

        ``iss`` may be ``http://`` only when the launch URL's environment was approved with
        ``allow_http`` (a loopback or sandbox EHR); a ``launch`` is single use per issuer for
        the policy's ``launch_replay_window``.
        """
        org = await self._registry.get(org_id)
        env = org.environment(environment) if org is not None else None
        allow_http = env is not None and env.config.allow_http
        request = parse_launch_request(params, allow_http=allow_http)
        _, binding = await admit_launch(request, _ReadOnce(self._registry, org))
        if binding.org_id != org_id or binding.environment != environment:
            # threat T27 (docs/security.md): the launch URL's organization must own the issuer.
            raise UntrustedIssuerError("issuer does not belong to this launch URL")
        if org is None:  # deleted between the lookup and the admission
            raise UntrustedIssuerError("organization is not active")
        first = await self._store.remember_once(
            "launch",
            launch_replay_key(binding.canonical_base, request.launch),
            expires_at=self._clock() + self._policy.launch_replay_window,
        )
        if not first:
            raise LaunchParameterError("launch value was already used", reason="launch_replayed")
        client = self._services.smart_client(org, environment, role)
        approved = self._registry.approved_snapshot_of(org, environment)
        redirect_to, pending = await client.start_launch(
            binding.canonical_base,
            org_id,
            launch=request.launch,
            session_id=session_id,
            approved=approved,
        )
        return await send_to_authorization(
            self._store, org_id, environment, role, redirect_to, pending
        )

    async def redeem(
        self,
        envelope: PendingLaunch,
        pending: PendingAuthorization,
        params: Mapping[str, str],
        *,
        session_id: str,
    ) -> tuple[Organization, LaunchResult]:
        """Redeem the code of a taken authorization for its (still active) organization."""
        org = await active_org(self._registry, pending.org_id)
        client = self._services.smart_client(org, envelope.environment, envelope.role)
        result = await client.complete_launch(pending, params, session_id=session_id)
        return org, result

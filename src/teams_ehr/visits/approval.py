"""The standalone SMART sign-in an approval uses to prove an organization's FHIR base URL.

Before an environment is approved, an administrator signs in to it with a SMART App Launch
standalone launch (https://hl7.org/fhir/smart-app-launch/app-launch.html, no ``launch``
parameter) against the environment's configured base. The authorization shares the ``/callback``
URL with every EHR launch; :mod:`teams_ehr.visits.callback` hands it back here, and the code's
result goes to the :data:`ApprovalSigninHook` the admin console installs (see
docs/guides/ehr-analyst.md). Its tokens are never stored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from teams_ehr.errors import StateInvalidError, UntrustedIssuerError
from teams_ehr.orgs.models import EnvironmentName, Organization
from teams_ehr.orgs.registry import OrganizationRegistry
from teams_ehr.smart.authorize import PendingAuthorization
from teams_ehr.smart.flows import LaunchResult
from teams_ehr.store.protocol import Store
from teams_ehr.visits.launch import send_to_authorization
from teams_ehr.visits.records import PendingLaunch
from teams_ehr.visits.services import OrgServices
from teams_ehr.web import WebResponse

__all__ = ["ApprovalLaunch", "ApprovalSigninHook"]

ApprovalSigninHook = Callable[
    [Organization, EnvironmentName, LaunchResult, str], Awaitable[WebResponse]
]
"""Receives a completed approval sign-in: organization, environment, result, browser session."""


class ApprovalLaunch:
    """Start a standalone SMART sign-in for an approval; hand its result to :attr:`on_signin`.

    ``on_signin`` is set by the admin console once it exists (the console needs this object to
    start sign-ins, so it cannot be passed in first); without it a callback is refused.
    """

    def __init__(
        self,
        *,
        store: Store,
        registry: OrganizationRegistry,
        services: OrgServices,
        on_signin: ApprovalSigninHook | None = None,
    ) -> None:
        self._store = store
        self._registry = registry
        self._services = services
        self.on_signin = on_signin

    def __repr__(self) -> str:
        return "<ApprovalLaunch>"

    async def begin_standalone(
        self, org_id: str, environment: EnvironmentName, *, session_id: str
    ) -> WebResponse:
        """A standalone SMART sign-in against the environment's configured base; its callback
        goes to :attr:`on_signin` and its tokens are never stored."""
        org = await self._registry.get(org_id)
        env = None if org is None else org.environment(environment)
        if org is None or env is None:
            raise UntrustedIssuerError("no such organization environment")
        client = self._services.smart_client(org, environment, "approval")
        redirect_to, pending = await client.start_launch(
            env.config.fhir_base, org_id, launch=None, session_id=session_id, approved=None
        )
        return await send_to_authorization(
            self._store, org_id, environment, "approval", redirect_to, pending
        )

    async def complete(
        self,
        envelope: PendingLaunch,
        pending: PendingAuthorization,
        params: Mapping[str, str],
        *,
        session_id: str,
    ) -> WebResponse:
        """At ``/callback``: redeem, then hand the result to :attr:`on_signin`."""
        org = await self._registry.get(pending.org_id)
        if org is None or self.on_signin is None:
            raise StateInvalidError("no approval is waiting for this sign-in", reason="purpose")
        client = self._services.smart_client(org, envelope.environment, "approval")
        result = await client.complete_launch(pending, params, session_id=session_id)
        return await self.on_signin(org, envelope.environment, result, session_id)

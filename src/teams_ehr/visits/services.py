"""The per-organization collaborators every visit flow is given.

:class:`OrgServices` hands a flow the organization's SMART client for one environment and role
(SMART App Launch: https://hl7.org/fhir/smart-app-launch/app-launch.html), its Microsoft Entra
sign-in configuration (OpenID Connect at the organization's tenant) and its Graph meeting factory.
The runtime's :class:`teams_ehr.app.DefaultOrgServices` builds them from the settings and caches
them by the organization's configuration; a host with another shape supplies its own.
"""

from __future__ import annotations

from typing import Protocol

from teams_ehr.orgs.models import EnvironmentName, Organization
from teams_ehr.smart.flows import AsyncSmartLaunchClient
from teams_ehr.teams.meetings import MeetingFactory
from teams_ehr.teams.signin import EntraAppConfig
from teams_ehr.visits.records import LaunchRole

__all__ = ["OrgServices"]


class OrgServices(Protocol):
    """Per-organization collaborators; :class:`teams_ehr.app.DefaultOrgServices` builds them."""

    def smart_client(
        self, org: Organization, environment: EnvironmentName, role: LaunchRole
    ) -> AsyncSmartLaunchClient: ...

    def entra_config(self, org: Organization) -> EntraAppConfig: ...

    def meeting_factory(self, org: Organization) -> MeetingFactory: ...

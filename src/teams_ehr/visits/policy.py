"""The choices an integrator makes once for every visit: lobby presets, how clinicians join.

:class:`VisitPolicy` names the lobby preset of a provider visit and of a clinician consult
(:data:`teams_ehr.teams.lobby.PRESETS`, applied through Graph's ``lobbyBypassSettings``:
https://learn.microsoft.com/graph/api/resources/onlinemeeting), whether a clinician joins in the
browser or the desktop client, which Teams hosts a join URL may point to, and how long a SMART
``launch`` value is remembered, per issuer, to refuse its replay (threat T06, docs/security.md;
``settings.smart.launch_replay_window``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict

from teams_ehr.teams.join_urls import TEAMS_HOSTS

__all__ = ["VisitPolicy"]


class VisitPolicy(BaseModel):
    """Choices an integrator makes once: lobby presets, clinician join, hosts, replay window."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider_preset: str = "patient_visit"
    consult_preset: str = "clinician_consult"
    clinician_join: Literal["browser", "desktop"] = "browser"
    allowed_join_hosts: frozenset[str] = TEAMS_HOSTS
    launch_replay_window: timedelta = timedelta(hours=1)

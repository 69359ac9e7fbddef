"""Join URLs for patients and clinicians, with an allow-list of Teams hosts (requirement B5; threats T18, T20).

* Patient: the meeting's ``joinWebUrl`` as Graph returned it, opened in a browser (Teams offers
  "continue on this browser" with no app and no account, then the lobby). Where the integrator has
  a Virtual Appointments URL (``getVirtualAppointmentJoinWebUrl``, Teams Premium; host
  ``visit.teams.microsoft.com``,
  learn.microsoft.com/graph/api/virtualappointment-getvirtualappointmentjoinweburl) that is
  preferred. No undocumented hint parameters are added (Graph documents none; the URL is used
  verbatim).
* Clinician: the same ``joinWebUrl`` in the browser, or the Teams desktop app through the
  ``msteams:`` protocol handler: ``https://teams.microsoft.com/l/meetup-join/…`` →
  ``msteams:/l/meetup-join/…`` (the same path and query; Teams deep links, "deep link to join a
  meeting"). Other URL shapes (e.g. ``/meet/<id>``) fall back to the browser URL, whose page offers
  "Open Teams app" itself.

Every URL we redirect to is checked: ``https``, no userinfo, no explicit port, and a host exactly in
the allow-list. Teams for personal use (``teams.live.com``) is not allowed by default: meetings
created app-only in a work tenant never use it. Sovereign clouds are opt-in (:data:`SOVEREIGN_TEAMS_HOSTS`).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal
from urllib.parse import urlsplit

from pydantic import SecretStr

from teams_ehr.errors import LobbyPolicyViolationError
from teams_ehr.teams.meetings import Meeting

__all__ = [
    "SOVEREIGN_TEAMS_HOSTS",
    "TEAMS_HOSTS",
    "checked_join_url",
    "clinician_join_url",
    "patient_join_url",
]

TEAMS_HOSTS: frozenset[str] = frozenset({"teams.microsoft.com", "visit.teams.microsoft.com"})
"""Commercial-cloud Teams hosts allowed by default."""

SOVEREIGN_TEAMS_HOSTS: frozenset[str] = frozenset(
    {"gov.teams.microsoft.us", "dod.teams.microsoft.us", "teams.microsoftonline.cn"}
)
"""GCC High, DoD and 21Vianet Teams hosts: add them to ``allowed_hosts`` for those tenants."""

_DESKTOP_PREFIX = "/l/"


def _reveal(url: SecretStr | str) -> str:
    return url.get_secret_value() if isinstance(url, SecretStr) else url


def checked_join_url(url: SecretStr | str, *, allowed_hosts: Collection[str] = TEAMS_HOSTS) -> str:
    """``url`` if it is an https URL on an allowed Teams host, else LobbyPolicyViolationError."""
    raw = _reveal(url)
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        parts, port = None, None
    allowed = {h.lower() for h in allowed_hosts}
    if (
        parts is None
        or parts.scheme != "https"
        or parts.username is not None
        or parts.password is not None
        or port is not None
        or (parts.hostname or "") not in allowed
        or parts.netloc.lower() != (parts.hostname or "")
        or any(c in raw for c in "\r\n\t \\")
    ):
        raise LobbyPolicyViolationError(
            "join URL host is not an allowed Teams host", reason="join_host_not_allowed"
        )
    return raw


def patient_join_url(
    meeting: Meeting,
    *,
    virtual_appointment_url: SecretStr | str | None = None,
    allowed_hosts: Collection[str] = TEAMS_HOSTS,
) -> str:
    """The URL a patient is redirected to: the Virtual Appointments URL if given, else joinWebUrl."""
    if virtual_appointment_url is not None:
        return checked_join_url(virtual_appointment_url, allowed_hosts=allowed_hosts)
    return checked_join_url(meeting.join_url, allowed_hosts=allowed_hosts)


def clinician_join_url(
    meeting: Meeting,
    prefer: Literal["browser", "desktop"] = "browser",
    *,
    allowed_hosts: Collection[str] = TEAMS_HOSTS,
) -> str:
    """The organizer's URL: the web join URL, or its ``msteams:`` form for the desktop app."""
    web = checked_join_url(meeting.join_url, allowed_hosts=allowed_hosts)
    if prefer == "browser":
        return web
    parts = urlsplit(web)
    if not parts.path.startswith(_DESKTOP_PREFIX):
        return web
    query = f"?{parts.query}" if parts.query else ""
    return f"msteams:{parts.path}{query}"

"""Join URLs: allow-listed Teams hosts, patient browser join, clinician desktop deep link (SPEC B5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from teams_ehr.errors import LobbyPolicyViolationError
from teams_ehr.teams.join_urls import (
    SOVEREIGN_TEAMS_HOSTS,
    TEAMS_HOSTS,
    checked_join_url,
    clinician_join_url,
    patient_join_url,
)
from teams_ehr.teams.meetings import Meeting

JOIN = (
    "https://teams.microsoft.com/l/meetup-join/19%3ameeting_NjA2%40thread.v2/0"
    "?context=%7b%22Tid%22%3a%22t%22%7d"
)
START = datetime(2030, 1, 1, tzinfo=UTC)


def meeting(url: str = JOIN) -> Meeting:
    return Meeting(
        org_id="o",
        external_id="tehr1-x",
        meeting_id="m",
        organizer_oid="oid",
        join_url=SecretStr(url),
        start=START,
        end=START + timedelta(minutes=30),
        policy="patient_visit",
    )


def test_patient_gets_join_web_url_verbatim() -> None:
    assert patient_join_url(meeting()) == JOIN


def test_patient_prefers_virtual_appointment_url() -> None:
    va = "https://visit.teams.microsoft.com/webrtc-svc/api/route?tid=t&convId=c"
    assert patient_join_url(meeting(), virtual_appointment_url=SecretStr(va)) == va


def test_clinician_browser_and_desktop() -> None:
    assert clinician_join_url(meeting(), "browser") == JOIN
    desktop = clinician_join_url(meeting(), "desktop")
    assert desktop == "msteams:" + JOIN.removeprefix("https://teams.microsoft.com")
    short = "https://teams.microsoft.com/meet/123456?p=abc"
    assert clinician_join_url(meeting(short), "desktop") == short


@pytest.mark.parametrize(
    "url",
    [
        "http://teams.microsoft.com/l/meetup-join/x",
        "https://teams.microsoft.com.evil.example/l/meetup-join/x",
        "https://evil.example/l/meetup-join/x",
        "https://user:pw@teams.microsoft.com/l/x",
        "https://teams.microsoft.com@evil.example/l/x",
        "https://teams.microsoft.com:8443/l/x",
        "https://teams.live.com/meet/1",
        "https://gov.teams.microsoft.us/l/meetup-join/x",
        "javascript:alert(1)",
        "//teams.microsoft.com/l/x",
        "https://teams.microsoft.com/l/x\r\nSet-Cookie: a=b",
        "https://teams.microsoft.com\\@evil.example/",
        "",
    ],
)
def test_disallowed_urls_refused(url: str) -> None:
    with pytest.raises(LobbyPolicyViolationError) as caught:
        checked_join_url(url)
    assert caught.value.reason == "join_host_not_allowed"
    if url:
        assert url not in str(caught.value)
    with pytest.raises(LobbyPolicyViolationError):
        patient_join_url(meeting(url))


def test_sovereign_hosts_opt_in() -> None:
    url = "https://gov.teams.microsoft.us/l/meetup-join/19%3ameeting_x%40thread.v2/0"
    hosts = TEAMS_HOSTS | SOVEREIGN_TEAMS_HOSTS
    assert checked_join_url(url, allowed_hosts=hosts) == url
    assert clinician_join_url(meeting(url), "desktop", allowed_hosts=hosts).startswith(
        "msteams:/l/"
    )


def test_host_match_is_case_insensitive_but_exact() -> None:
    assert checked_join_url("https://Teams.Microsoft.com/l/x") == "https://Teams.Microsoft.com/l/x"

"""The simulated room and FakeEntra decide who the organizer is by identity (Teams' rule).

Only the meeting's organizer (object id, tenant) joins as organizer and may end the meeting for
everyone or admit from the lobby; FakeEntra says who a browser is signed in as, and can play a
person declining consent.
"""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from teams_ehr.errors import UsageError
from teams_ehr.testing.fake_entra import SESSION_COOKIE, FakeEntra
from teams_ehr.testing.meeting_room import MeetingRoom, RosterChange

TENANT = "7c1a6b2e-3f4d-4e5a-9b8c-0d1e2f3a4b5c"
ORGANIZER = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"
COLLEAGUE = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
OTHER_TENANT = "11111111-2222-4333-8444-555555555555"
NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


def _room(scope: str = "organizer") -> MeetingRoom:
    changes: list[RosterChange] = []
    return MeetingRoom(
        "meeting-1",
        organizer_oid=ORGANIZER,
        tenant_id=TENANT,
        lobby_settings=lambda: (scope, False),
        clock=lambda: NOW,
        notify=changes.append,
    )


def test_signed_in_organizer_joins_as_organizer_anyone_else_waits() -> None:
    room = _room()
    joined = room.join_signed_in("doc", object_id=ORGANIZER.upper(), tenant_id=TENANT)
    assert joined.identity_kind == "organizer"
    assert not joined.in_lobby
    colleague = room.join_signed_in("col", object_id=COLLEAGUE, tenant_id=TENANT)
    assert colleague.identity_kind == "tenant_user"
    assert colleague.in_lobby  # scope "organizer": only the organizer bypasses
    assert room.organizer_present("doc")
    assert not room.organizer_present("col")
    with pytest.raises(UsageError) as foreign:
        room.join_signed_in("x", object_id=ORGANIZER, tenant_id=OTHER_TENANT)
    assert foreign.value.reason == "foreign_tenant"


def test_naming_another_user_as_organizer_is_refused() -> None:
    room = _room()
    with pytest.raises(UsageError) as refused:
        room.join("impostor", identity="organizer", user_id=COLLEAGUE)
    assert refused.value.reason == "not_organizer"
    with pytest.raises(UsageError):
        room.join("impostor", identity="organizer", user_id=ORGANIZER, tenant_id=OTHER_TENANT)
    assert room.in_meeting() == []
    assert room.in_lobby() == []
    # the scripted organizer is the organizer's identity
    assert room.join("doc", identity="organizer").user_id == ORGANIZER


def test_only_the_organizer_ends_the_meeting_for_everyone_or_admits() -> None:
    room = _room(scope="everyone")  # the guest is in the meeting, not the lobby
    room.join_signed_in("doc", object_id=ORGANIZER, tenant_id=TENANT)
    room.join("guest", identity="guest")
    for who in ("guest", "nobody"):
        with pytest.raises(UsageError) as refused:
            room.end_for_everyone(who)
        assert refused.value.reason == "not_organizer"
    assert room.call_active
    room.leave("doc")
    with pytest.raises(UsageError):  # no longer in the meeting
        room.end_for_everyone("doc")

    lobby = _room()
    lobby.join("doc", identity="organizer")
    lobby.join("guest-1", identity="guest")
    lobby.join("guest-2", identity="guest")
    with pytest.raises(UsageError) as refused:
        lobby.admit("guest-2", by="guest-1")
    assert refused.value.reason == "not_organizer"
    lobby.admit("guest-2", by="doc")
    assert lobby.end_for_everyone("doc").kind == "call_ended"
    assert lobby.in_meeting() == []


def _authorize(fake: FakeEntra, *, cookie: str | None = None) -> httpx.Response:
    query = {
        "client_id": "app",
        "redirect_uri": "https://app.test/cb",
        "response_type": "code",
        "scope": "openid profile",
        "state": "s",
        "code_challenge": "x" * 43,
        "code_challenge_method": "S256",
    }
    headers = {} if cookie is None else {"Cookie": f"{SESSION_COOKIE}={cookie}"}
    url = httpx.URL(fake.authorize_endpoint, params=query)
    return fake.handler(httpx.Request("GET", url, headers=headers))


def test_fake_entra_browser_sessions_and_declined_consent() -> None:
    fake = FakeEntra(TENANT, clock=lambda: NOW)
    fake.register_app("app", redirect_uris=["https://app.test/cb"], secret="s3cret")
    assert "login_required" in _authorize(fake).headers["location"]  # nobody signed in

    session = fake.sign_in_browser(ORGANIZER, name="Dr. Real")
    user = fake.browser_user(session)
    assert user is not None
    assert (user.object_id, user.tenant_id, user.name) == (ORGANIZER, TENANT, "Dr. Real")
    assert fake.browser_user(None) is None
    assert fake.browser_user("forged") is None
    assert "code=" in _authorize(fake, cookie=session).headers["location"]
    assert "login_required" in _authorize(fake, cookie="forged").headers["location"]

    fake.deny_consent = True
    declined = httpx.URL(_authorize(fake, cookie=session).headers["location"])
    assert declined.params["error"] == "access_denied"
    assert declined.params["state"] == "s"
    fake.sign_out_browser(session)
    assert fake.browser_user(session) is None

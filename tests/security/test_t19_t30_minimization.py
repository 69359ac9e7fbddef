"""T19 and T30: minimum necessary (security.md T19, T30; HIPAA §164.502(b), §164.514(d); TEC
"the only data that is stored … is the EHR user's unique ID").

A whole provider launch with planted patient, encounter and appointment ids, then:

* the scopes requested from the EHR are the golden minimum (no ``patient/*``, no
  ``offline_access``); the backend-services write-back scopes are the golden list;
* no Graph request body carries any of the launch context; ``createOrGet`` sends only the five
  members Graph documents, with a constant subject; ``anonymizeIdentityForRoles`` (irreversible)
  is never set;
* the SQLite database file holds none of the planted identifiers in clear after the visit.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest

from teams_ehr.config import AttendanceSettings, SmartSettings
from teams_ehr.testing.sandbox import CLINICIAN_OID, PRACTITIONER, Sandbox

pytestmark = pytest.mark.anyio

ORG = "sandbox-clinic"
PATIENT = "pat-CANARY-19a"
ENCOUNTER = "enc-CANARY-19b"
CREATE_OR_GET_MEMBERS = {"startDateTime", "endDateTime", "externalId", "participants", "subject"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_requested_scopes_minimal() -> None:
    """Golden lists: a change here is a privacy review, not a refactor."""
    smart = SmartSettings()
    assert smart.provider_scopes == ("launch", "openid", "fhirUser")
    assert smart.patient_scopes == ("launch", "openid", "fhirUser", "patient/Appointment.rs")
    assert smart.approval_scopes == ("openid", "fhirUser")
    assert AttendanceSettings().backend_scopes == (
        "system/DocumentReference.c",
        "system/DocumentReference.rs",
        "system/AuditEvent.c",
        "system/AuditEvent.rs",
        "system/Encounter.rs",
        "system/Encounter.u",
    )


async def _launch(sandbox: Sandbox, app: object, appointment: str, session: str) -> str:
    visits = app.visits  # type: ignore[attr-defined]
    launch = sandbox.ehr.issue_launch(
        patient=PATIENT, encounter=ENCOUNTER, appointment=appointment, user=PRACTITIONER,
        location="dept-1", login_department="dept-1",
    )  # fmt: skip
    started = await visits.provider.begin_launch(
        ORG, "test", {"iss": sandbox.ehr.base_url, "launch": launch}, session_id=session
    )
    authorize = started.location
    params = sandbox.ehr.authorize_in_browser(
        SimpleNamespace(method="GET", url=authorize, fields=())
    )
    reply = await visits.callback.complete(params, session_id=session)
    if reply.status == 302:
        sandbox.entra.sign_in_as(CLINICIAN_OID)
        signin = sandbox.entra.authorize_in_browser(reply.location)
        reply = await visits.binding.complete_microsoft_signin(signin, session_id=session)
    assert reply.status == 303
    return str(authorize)


async def test_launch_context_never_reaches_graph_or_the_database(tmp_path: Path) -> None:
    database = tmp_path / "teams-ehr.sqlite3"
    sandbox = Sandbox(store_url=f"sqlite:///{database}")
    appointments = ("appt-CANARY-19c", "appt-CANARY-19d")
    for appointment in appointments:
        sandbox.seed_appointment(appointment)
    async with sandbox.app() as app:
        await sandbox.seed_organization(app)
        authorize = await _launch(sandbox, app, appointments[0], "session-1")
        await _launch(sandbox, app, appointments[1], "session-2")

    scope = parse_qs(urlsplit(authorize).query)["scope"][0]
    assert scope.split() == ["launch", "openid", "fhirUser"]

    calls = sandbox.graph.requests
    assert sandbox.graph.plain_create_calls == []  # R04
    creates = [c for c in calls if c.path.endswith("/onlineMeetings/createOrGet")]
    assert len(creates) == 2
    assert {c.body["subject"] for c in creates} == {creates[0].body["subject"]}  # constant
    for call in creates:
        assert set(call.body) <= CREATE_OR_GET_MEMBERS
    canaries = [PATIENT, ENCOUNTER, *appointments, "CANARY"]
    for call in calls:
        text = json.dumps(call.body) if call.body is not None else ""
        assert "anonymizeIdentityForRoles" not in text
        for canary in canaries:
            assert canary not in text, (call.method, call.path)
            assert canary not in call.path

    stored = b"".join(p.read_bytes() for p in tmp_path.glob("teams-ehr.sqlite3*"))
    assert stored, "the database file exists"
    for canary in canaries:
        assert canary.encode() not in stored, canary

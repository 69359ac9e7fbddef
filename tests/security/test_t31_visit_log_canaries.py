"""T08/T31: a whole sandbox visit with DEBUG logging on every logger leaks nothing.

security.md §2.0 asks for canaries planted as access token, id_token, code, ``state``, ``launch``,
join link, patient id and display name, checked in every log record (httpx logs the request URL
at INFO; kiota, msgraph and azure log at DEBUG). Here the canaries are the real secrets of one
visit — whatever the fakes issued, recorded at the transport — plus a planted patient id and a
planted patient display name. The visit runs through the Starlette host: provider launch, first
Microsoft sign-in, meeting, patient join link, Graph call events through the webhook, the inbox
processor, reconciliation and the outbox's FHIR write-back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.applications import Starlette

from attendance_runtime.runtime_support import (
    ORG,
    T0,
    Clock,
    Host,
    attendance_settings,
)
from leaks import assert_no_leak
from teams_ehr.integrations.starlette import teams_ehr_routes
from teams_ehr.testing.sandbox import CLINICIAN_OID, PRACTITIONER, Sandbox

pytestmark = pytest.mark.anyio

PATIENT_ID = "patient-CANARY-7f3a91"
DISPLAY_NAME = "Quintessa Canarywood-5521"
CLINICIAN_NAME = "Dr Canary Lanternfish"
SECRET_FIELDS = ("access_token", "id_token", "refresh_token", "clientState", "joinWebUrl")
THIRD_PARTY = ("httpx", "httpcore", "kiota_http", "msgraph", "msgraph_core", "azure", "starlette")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # Starlette streaming + SQLite worker threads, as the runtime suite


class Recorder:
    """Wraps the sandbox transport and keeps every secret that crossed it."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox
        self.secrets: set[str] = set()

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self._collect(await request.aread())
        response = await self._sandbox.route(request)
        self._collect(await response.aread())
        return response

    def _collect(self, body: bytes) -> None:
        try:
            data = json.loads(body) if body else None
        except ValueError:
            return
        self._walk(data)

    def _walk(self, data: Any) -> None:
        if isinstance(data, dict):
            for key, value in data.items():
                if key in SECRET_FIELDS and isinstance(value, str) and len(value) >= 8:
                    self.secrets.add(value)
                else:
                    self._walk(value)
        elif isinstance(data, list):
            for item in data:
                self._walk(item)


@asynccontextmanager
async def _host(sandbox: Sandbox, recorder: Recorder) -> AsyncIterator[Host]:
    runtime = sandbox.app(http=httpx.AsyncClient(transport=httpx.MockTransport(recorder.handle)))
    asgi = Starlette(routes=teams_ehr_routes(runtime))
    transport = httpx.ASGITransport(app=asgi)
    async with runtime, httpx.AsyncClient(transport=transport, base_url="https://app.test") as b:
        sandbox.connect_webhooks(httpx.AsyncClient(transport=transport))
        yield Host(runtime, asgi, b)


def _debug_everywhere(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    names = set(logging.root.manager.loggerDict) | set(THIRD_PARTY)
    for name in sorted(names):
        caplog.set_level(logging.DEBUG, logger=name)


async def test_whole_visit_at_debug_leaks_no_secret_or_phi(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _debug_everywhere(caplog)
    clock = Clock()
    sandbox = Sandbox(
        clock=clock,
        store_url=f"sqlite:///{tmp_path}/teams-ehr.sqlite3",
        attendance=attendance_settings(tmp_path),
    )
    recorder = Recorder(sandbox)
    planted: list[str] = [PATIENT_ID, DISPLAY_NAME, CLINICIAN_NAME]
    async with _host(sandbox, recorder) as host:
        await sandbox.seed_organization(host.runtime)
        start, end = sandbox.seed_appointment("appt-canary", start=T0, minutes=30)

        # the clinician: launch, EHR authorization, first Microsoft sign-in, meeting
        launch = sandbox.ehr.issue_launch(
            patient=PATIENT_ID, encounter="encounter-1", appointment="appt-canary",
            user=PRACTITIONER, location="dept-1", login_department="dept-1",
        )  # fmt: skip
        started = await host.browser.get(
            f"/launch/{ORG}/test", params={"iss": sandbox.ehr.base_url, "launch": launch}
        )
        assert started.status_code == 302
        authorize = started.headers["location"]
        state = parse_qs(urlsplit(authorize).query)["state"][0]
        callback = sandbox.ehr.authorize_in_browser(
            SimpleNamespace(method="GET", url=authorize, fields=())
        )
        first = await host.browser.get("/callback", params=callback)
        assert first.status_code == 302
        ms_state = parse_qs(urlsplit(first.headers["location"]).query)["state"][0]
        sandbox.entra.sign_in_as(CLINICIAN_OID)
        signin = sandbox.entra.authorize_in_browser(first.headers["location"])
        entered = await host.browser.get("/microsoft/callback", params=signin)
        assert entered.status_code == 303
        [meeting_id] = list(sandbox.graph.meetings)
        join_web_url = sandbox.graph.meetings[meeting_id]["joinWebUrl"]

        # the patient: a join link, followed twice (rejoin), and one guess
        token = await host.runtime.visits.meetings.prepare_visit(
            ORG,
            environment="test",
            visit_key="Appointment/appt-canary",
            ehr_user_id=PRACTITIONER,
            start=start,
            end=end,
        )
        for _ in range(2):
            joined = await host.browser.get(f"/j/{token}")
            assert joined.status_code == 303
        assert (await host.browser.get("/j/" + token[::-1])).status_code == 404

        # the call: Graph events through our webhook, inbox, reconciliation, FHIR write-back
        room = sandbox.graph.room(meeting_id)
        room.join("leg-doc-canary", identity="organizer", display_name=CLINICIAN_NAME)
        clock.advance(minutes=1)
        room.join("leg-pt-canary", identity="guest", display_name=DISPLAY_NAME)
        clock.advance(minutes=3)
        room.admit("leg-pt-canary")
        clock.advance(minutes=10)
        room.leave("leg-pt-canary")
        room.end_call()
        sent = await sandbox.notifier.flush()
        assert sent
        assert all(s.status == 202 for s in sent)
        await host.attendance.processor.run_once()
        clock.advance(minutes=16)
        await host.attendance.maintain()
        await host.attendance.drain()
        counts = await host.runtime.store.outbox_counts()
        assert counts["dead"] == 0
        assert counts["pending"] == 0
        session = host.browser.cookies.get("__Host-teams-ehr-session")

    assert sandbox.fhir.resources("DocumentReference"), "the visit reached the EHR"
    assert (
        sandbox.graph.plain_create_calls == []
    )  # R04: only createOrGet, never POST /onlineMeetings
    meeting_path = urlsplit(join_web_url).path
    canaries = [
        *planted,
        *recorder.secrets,
        launch,
        state,
        ms_state,
        callback["code"],
        signin["code"],
        token,
        join_web_url,
        meeting_path,
        session or "",
        "leg-pt-canary",
    ]
    assert len(recorder.secrets) >= 4  # EHR access + id token, Graph token, clientState, URL
    sdk_records = [r for r in caplog.records if not _harness_record(r)]
    assert len(sdk_records) > 20, "logging was captured"
    texts = [f"{r.name} {r.getMessage()} {r.exc_text or ''} {vars(r)!r}" for r in sdk_records]
    assert_no_leak(canaries, *texts)


def _harness_record(record: logging.LogRecord) -> bool:
    """httpx's request line of the test's own clients (the browser and FakeGraph's webhook
    POSTs), which call the app at ``https://app.test``; the SDK itself never requests it. A
    host's access log sees ``/j/<token>`` the same way: see test_t20_join_links.py."""
    args = record.args if isinstance(record.args, tuple) else ()
    return record.name == "httpx" and len(args) > 1 and str(args[1]).startswith("https://app.test/")

"""A whole visit through a real host: Sandbox fakes, SQLite (or PostgreSQL) store, the Starlette
adapter reached over ASGI, Graph's webhooks posted into the same host, and an SSE reader."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import httpx
from cryptography.hazmat.primitives import serialization
from starlette.applications import Starlette

from teams_ehr.app import TeamsEhr
from teams_ehr.attendance.notification_crypto import NotificationCertificate
from teams_ehr.config import AttendanceSettings
from teams_ehr.integrations.routes import session_cookie_name
from teams_ehr.integrations.starlette import teams_ehr_routes
from teams_ehr.store.protocol import MeetingRow
from teams_ehr.testing.sandbox import CLINICIAN_OID, Sandbox

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
ORG = "sandbox-clinic"
APPOINTMENT = "appt-rt-1"
PATIENT_NAME = "Zebulon Canaryname-4471"
_CERTIFICATE = NotificationCertificate.generate(T0 - timedelta(days=1))


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


def attendance_settings(tmp: Path, **overrides: Any) -> AttendanceSettings:
    """Certificate files shared by every instance and restart (as production must)."""
    cert, key = tmp / "notify-cert.pem", tmp / "notify-key.pem"
    cert.write_bytes(_CERTIFICATE.certificate_pem)
    key.write_bytes(
        _CERTIFICATE.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    values: dict[str, Any] = {
        "workers": False,
        "certificate_path": cert,
        "certificate_key_path": key,
    }
    values.update(overrides)
    return AttendanceSettings(**values)


@dataclass
class Host:
    """One instance: the runtime, its Starlette app and a browser-like client for it."""

    runtime: TeamsEhr
    asgi: Starlette
    browser: httpx.AsyncClient

    @property
    def attendance(self) -> Any:
        assert self.runtime.attendance is not None
        return self.runtime.attendance

    def session_cookie(self) -> str:
        name = session_cookie_name(secure=True)
        value = self.browser.cookies.get(name)
        assert value is not None
        return f"{name}={value}"


@asynccontextmanager
async def open_host(sandbox: Sandbox, *, webhooks: bool = True) -> AsyncIterator[Host]:
    runtime = sandbox.app()
    asgi = Starlette(routes=teams_ehr_routes(runtime))
    transport = httpx.ASGITransport(app=asgi)
    async with runtime, httpx.AsyncClient(transport=transport, base_url="https://app.test") as b:
        if webhooks:
            sandbox.connect_webhooks(httpx.AsyncClient(transport=transport))
        yield Host(runtime, asgi, b)


async def launch_visit(host: Host, sandbox: Sandbox, appointment: str = APPOINTMENT) -> MeetingRow:
    """The clinician's launch, first Microsoft sign-in, meeting; returns the stored meeting."""
    launch = sandbox.provider_launch(appointment)
    started = await host.browser.get(
        f"/launch/{ORG}/test", params={"iss": sandbox.ehr.base_url, "launch": launch}
    )
    assert started.status_code == 302, started.text[:200]
    redirect = SimpleNamespace(method="GET", url=started.headers["location"], fields=())
    callback = await host.browser.get(
        "/callback", params=sandbox.ehr.authorize_in_browser(redirect)
    )
    if callback.status_code == 302:  # first time: Microsoft sign-in
        sandbox.entra.sign_in_as(CLINICIAN_OID)
        signin = sandbox.entra.authorize_in_browser(callback.headers["location"])
        callback = await host.browser.get("/microsoft/callback", params=signin)
    assert callback.status_code == 303, callback.text[:200]
    [meeting_id] = list(sandbox.graph.meetings)
    row = await host.runtime.store.find_meeting_by_id(meeting_id)
    assert row is not None
    return row


def play_visit(sandbox: Sandbox, clock: Clock, meeting_id: str) -> None:
    """Organizer joins (call starts), patient waits 4 min in the lobby, 15 min visit, end."""
    room = sandbox.graph.room(meeting_id)
    room.join("leg-doc", identity="organizer", display_name="Dr Canary Clinician")
    clock.advance(minutes=1)
    room.join("leg-pt", identity="guest", display_name=PATIENT_NAME)
    clock.advance(minutes=4)
    room.admit("leg-pt")
    clock.advance(minutes=15)
    room.leave("leg-pt")
    clock.advance(minutes=1)
    room.end_call()


GROUND_TRUTH = [  # (kind, role, minutes after the organizer joined)
    ("call_started", "other", 0),
    ("connected", "provider", 0),
    ("lobby_entered", "patient", 1),
    ("connected", "patient", 5),
    ("admitted", "patient", 5),
    ("disconnected", "patient", 20),
    ("disconnected", "provider", 21),
    ("call_ended", "other", 21),
]


async def stored_facts(runtime: TeamsEhr, external_id: str, start: datetime) -> list[Any]:
    facts = await runtime.store.list_facts(ORG, external_id)
    return sorted((f.kind, f.role, int((f.at - start).total_seconds() // 60)) for f in facts)


class SseReader:
    """Reads one streamed response message by message (ASGI), then disconnects."""

    def __init__(self, receive: Any) -> None:
        self._receive = receive
        self.status = 0

    async def start(self) -> int:
        message = await self._receive.receive()
        assert message["type"] == "http.response.start"
        self.status = message["status"]
        return self.status

    async def body(self) -> bytes:
        message = await self._receive.receive()
        assert message["type"] == "http.response.body"
        return bytes(message.get("body", b""))

    async def event(self) -> tuple[str, dict[str, Any]]:
        """The next named event (skips the retry line and keep-alives)."""
        while True:
            frame = (await self.body()).decode()
            lines = dict(line.split(": ", 1) for line in frame.strip().splitlines() if ": " in line)
            if "event" in lines:
                return lines["event"], json.loads(lines["data"])


@asynccontextmanager
async def sse(asgi: Any, path: str, cookie: str) -> AsyncIterator[SseReader]:
    sender, receiver = anyio.create_memory_object_stream[dict[str, Any]](1000)
    gone = anyio.Event()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "https", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"app.test"), (b"cookie", cookie.encode())],
        "client": ("127.0.0.1", 50000), "server": ("app.test", 443),
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async with sender, receiver, anyio.create_task_group() as group:
        group.start_soon(asgi, scope, receive, sender.send)
        yield SseReader(receiver)
        gone.set()

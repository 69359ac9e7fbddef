"""Connect the simulated meeting rooms to the runtime's attendance pipeline (SPEC E3, D1–D7).

FakeGraph's subscription handshakes and :attr:`Sandbox.notifier`'s notifications (encrypted rich
notifications with validation tokens, as Graph sends them) are POSTed through a client into this
very app, so they reach the FastAPI example's webhook routes over the same stack a real Graph
would. After each room change the demo then lets the pipeline catch up at once
(:meth:`~teams_ehr.attendance.runtime.AttendanceRuntime.drain` and ``maintain``: inbox → facts →
live roster → outbox → FHIR, and the end-of-visit reconciliation with the attendance report), so
the pages show the result without waiting for the background loops (which run too).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from teams_ehr.app import TeamsEhr
from teams_ehr.demo.world import DemoWorld
from teams_ehr.integrations.routes import ROUTES

__all__ = ["attach_attendance", "has_webhook_route"]


def has_webhook_route() -> bool:
    """Whether the runtime's route table receives Graph change notifications."""
    return any(spec.name == "graph_notifications" for spec in ROUTES)


@asynccontextmanager
async def attach_attendance(world: DemoWorld, runtime: TeamsEhr, app: Any) -> AsyncIterator[bool]:
    """While open, room changes reach the runtime's webhook; yields whether attendance is on."""
    attendance = runtime.attendance
    if attendance is None or not has_webhook_route():
        yield False
        return
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=world.app_base_url) as client:
        sandbox = world.sandbox
        sandbox.connect_webhooks(client)

        async def deliver() -> None:
            await sandbox.notifier.flush()
            await attendance.drain()
            await attendance.maintain()  # reconciles visits whose call has ended
            await attendance.drain()

        world.notifier = deliver
        try:
            yield True
        finally:
            world.notifier = None

"""Connect the simulated meeting rooms to the runtime's attendance pipeline (requirements E3, D1–D7).

FakeGraph's subscription handshakes and :attr:`Sandbox.notifier`'s notifications (encrypted rich
notifications with validation tokens, as Graph sends them) are POSTed through a client into this
very app, so they reach the FastAPI example's webhook routes over the same stack a real Graph
would. After each room change the demo then lets the pipeline catch up at once
(:meth:`~teams_ehr.attendance.runtime.AttendanceRuntime.drain` and ``maintain``: inbox → facts →
live roster → outbox → FHIR, and the end-of-visit reconciliation with the attendance report), so
the pages show the result at once. The runtime's own background workers are off in the demo
(``AttendanceSettings.workers``): a pump runs the same passes every :data:`PUMP_SECONDS`, under
one lock with the per-change passes, so two passes never race over the inbox and outbox.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx

from teams_ehr.app import TeamsEhr
from teams_ehr.demo.world import DemoWorld
from teams_ehr.integrations import routes

__all__ = ["PUMP_SECONDS", "attach_attendance", "has_webhook_route"]

PUMP_SECONDS = 2.0


def has_webhook_route() -> bool:
    """Whether the runtime's route table receives Graph change notifications."""
    return any(spec.name == "graph_notifications" for spec in routes.ROUTES)


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
        lock = anyio.Lock()

        async def deliver() -> None:
            async with lock:  # one pass at a time: a page shows the state after its own change
                await sandbox.notifier.flush()
                await attendance.drain()
                await attendance.maintain()  # reconciles visits whose call has ended
                await attendance.drain()

        async def pump() -> None:  # what the runtime's background workers would do
            while True:
                await anyio.sleep(PUMP_SECONDS)
                await deliver()

        world.notifier = deliver
        async with anyio.create_task_group() as group:
            group.start_soon(pump)
            try:
                yield True
            finally:
                world.notifier = None
                group.cancel_scope.cancel()

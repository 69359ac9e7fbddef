"""Connect the simulated meeting rooms to the runtime's attendance webhook (SPEC E3, D1–D3).

When the runtime's route table serves Graph's change notifications, FakeGraph is given a webhook
client into this very app (so the subscription's validation handshake reaches it), and every room
change is POSTed by :class:`~teams_ehr.testing.graph_notifier.GraphNotifier` as Graph would: an
encrypted rich notification with validation tokens. Without such a route the rooms still work;
the pages then say that no attendance is recorded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from teams_ehr.app import TeamsEhr
from teams_ehr.demo.world import DemoWorld
from teams_ehr.integrations.routes import ROUTES
from teams_ehr.testing.graph_notifier import GraphNotifier
from teams_ehr.testing.sandbox import MICROSOFT_CLIENT_ID

__all__ = ["attach_attendance", "has_webhook_route"]


def has_webhook_route() -> bool:
    """Whether the runtime's route table receives Graph change notifications."""
    return any("notification" in spec.name for spec in ROUTES)


@asynccontextmanager
async def attach_attendance(
    world: DemoWorld, runtime: TeamsEhr, app: Any
) -> AsyncIterator[GraphNotifier | None]:
    """While open, room changes reach the runtime's webhook (when it has one)."""
    if not has_webhook_route():
        yield None
        return
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=world.app_base_url) as client:
        graph = world.sandbox.graph
        graph.subscriptions.webhook_client = client
        notifier = GraphNotifier(
            graph, world.sandbox.entra, app_id=MICROSOFT_CLIENT_ID, webhook_client=client
        )
        world.notifier = notifier.flush
        try:
            yield notifier
        finally:
            world.notifier = None
            graph.subscriptions.webhook_client = None

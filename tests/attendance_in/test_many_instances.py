"""Many instances on PostgreSQL (SPEC C6, D1, D3): the webhook on one instance, the live roster
on another, the validation handshake answered by a third."""

from __future__ import annotations

import json
from datetime import timedelta

import anyio
import pytest
from attendance_in_support import (
    EXTERNAL_ID,
    KEYER,
    ORG,
    ORGANIZER_OID,
    delta_guest,
    make_harness,
    meeting_row,
    roster_event,
    subscription_row,
)

from teams_ehr.attendance.handshake import SharedHandshakes, handle_validation
from teams_ehr.attendance.inbox_processor import InboxProcessor
from teams_ehr.attendance.roster import stream
from teams_ehr.attendance.webhook import handle_notifications
from teams_ehr.store.crypto import FieldCipher, new_encryption_key
from teams_ehr.store.postgres import PostgresStore

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


@pytest.fixture
def anyio_backend() -> str:
    """psycopg's async connections run on asyncio only."""
    return "asyncio"


async def test_webhook_on_one_instance_roster_on_another(postgres_dsn: str) -> None:
    h = await make_harness()
    cipher = FieldCipher(new_encryption_key())
    async with (
        PostgresStore(postgres_dsn, cipher=cipher, clock=h.clock, max_size=3) as webhook_instance,
        PostgresStore(postgres_dsn, cipher=cipher, clock=h.clock, max_size=3) as viewer_instance,
    ):
        await webhook_instance.put_subscription(subscription_row())
        await webhook_instance.put_meeting(meeting_row())

        async def authorize(org: str, external_id: str, viewer: str) -> bool:
            return (org, external_id, viewer) == (ORG, EXTERNAL_ID, ORGANIZER_OID)

        frames = await stream(
            viewer_instance,
            org_id=ORG,
            external_id=EXTERNAL_ID,
            viewer_oid=ORGANIZER_OID,
            authorize=authorize,
            facts=viewer_instance,
            heartbeat_seconds=30,
        )
        await frames.__anext__()
        await frames.__anext__()  # the (empty) snapshot

        at = (h.clock() - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
        result = await handle_notifications(
            h.body(h.item(roster_event(delta_guest("patient"), at=at))),
            security=h.security,
            inbox=webhook_instance,
            subscriptions=webhook_instance,
            now=h.clock(),
        )
        assert result.accepted == 1
        processor = InboxProcessor(
            inbox=webhook_instance,
            facts=webhook_instance,
            meetings=webhook_instance,
            bus=webhook_instance,
            keyer=KEYER,
            worker="instance-a",
            clock=h.clock,
        )
        assert (await processor.run_once()).events == 1
        with anyio.fail_after(60):
            frame = (await frames.__anext__()).decode()
        assert "event: attendance" in frame
        payload = json.loads(frame.split("data: ", 1)[1])
        assert (payload["role"], payload["kind"]) == ("patient", "connected")
        await frames.aclose()  # type: ignore[attr-defined]


async def test_handshake_answered_by_another_instance(postgres_dsn: str) -> None:
    h = await make_harness()
    cipher = FieldCipher(new_encryption_key())
    async with (
        PostgresStore(postgres_dsn, cipher=cipher, clock=h.clock, max_size=2) as creator,
        PostgresStore(postgres_dsn, cipher=cipher, clock=h.clock, max_size=2) as receiver,
    ):
        shared_receiver = SharedHandshakes(receiver)

        async def status() -> int:
            result = await handle_validation(
                {"validationToken": "tok"},
                handshakes=shared_receiver,
                kind="notification",
                now=h.clock(),
            )
            return result.status

        assert await status() == 404
        await SharedHandshakes(creator).open(h.clock(), frozenset({"notification"}))
        assert await status() == 200
        h.clock.advance(seconds=11)
        assert await status() == 404

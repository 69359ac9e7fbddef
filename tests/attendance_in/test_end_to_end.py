"""FakeGraph room → GraphNotifier → webhook → inbox (SQLite) → processor → events, facts, roster.

The whole input side of attendance (D1–D3, C6) against the fakes, with the real Graph client,
real encryption, validation tokens signed by FakeEntra and the SQLite store.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from attendance_in_support import (
    APP_ID,
    CANARY_NAME,
    KEYER,
    TENANT,
    Clock,
    shared_clock,
    shared_entra,
)

from leaks import assert_no_leak
from teams_ehr.attendance.events import AttendanceEvent
from teams_ehr.attendance.handshake import (
    HandshakeRegistry,
    PendingHandshakes,
    SharedHandshakes,
    handle_validation,
)
from teams_ehr.attendance.inbox_processor import InboxProcessor
from teams_ehr.attendance.notification_crypto import NotificationCertificate
from teams_ehr.attendance.roster import stream
from teams_ehr.attendance.subscriptions import SubscriptionManager
from teams_ehr.attendance.validation_tokens import GraphValidationTokenVerifier
from teams_ehr.attendance.webhook import WebhookSecurity, handle_notifications
from teams_ehr.smart.jwks import JwksCache
from teams_ehr.store.crypto import FieldCipher, new_encryption_key
from teams_ehr.store.protocol import MeetingRow
from teams_ehr.store.sqlite import SqliteStore
from teams_ehr.teams.credentials import AccessToken
from teams_ehr.teams.graph_client import GraphClient
from teams_ehr.testing.fake_entra import FakeEntra
from teams_ehr.testing.fake_graph import FakeGraph
from teams_ehr.testing.graph_notifier import GraphNotifier
from teams_ehr.testing.meeting_room import MeetingRoom

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """asyncio only: SqliteStore runs sqlite3 in anyio worker threads, which need trio ≥ 0.32
    on this anyio (the store's own contract tests cover trio where it is available); every
    in-memory test of this directory runs on both backends."""
    return "asyncio"


ORG = "org-e2e"
ORGANIZER = "0c0c0c0c-1111-2222-3333-444444444444"
CERTIFICATE = NotificationCertificate.generate(Clock().now)


class StaticToken:
    async def get_token(self, *scopes: str) -> AccessToken:
        return AccessToken("graph-token", 2_000_000_000)


@dataclass
class World:
    clock: Clock
    entra: FakeEntra
    graph: FakeGraph
    store: SqliteStore
    notifier: GraphNotifier
    manager: SubscriptionManager
    processor: InboxProcessor
    meeting: MeetingRow
    room: MeetingRoom
    sunk: list[AttendanceEvent]
    reconciled: list[tuple[str, str, str]]


@asynccontextmanager
async def world(
    shape: str = "delta", *, defer: bool = False, shared: bool = False
) -> AsyncIterator[World]:
    clock = shared_clock()
    entra = shared_entra(clock)
    async with (
        SqliteStore(":memory:", cipher=FieldCipher(new_encryption_key()), clock=clock) as store,
        httpx.AsyncClient(transport=httpx.MockTransport(entra.handler)) as entra_http,
    ):
        handshakes: HandshakeRegistry = SharedHandshakes(store) if shared else PendingHandshakes()

        async def org_tenant(org_id: str) -> str | None:
            return TENANT if org_id == ORG else None

        security = WebhookSecurity(
            token_verifier=GraphValidationTokenVerifier(
                app_id=APP_ID, jwks=JwksCache(clock=clock), client=entra_http
            ),
            decryption_keys=CERTIFICATE.keys(),
            org_tenant=org_tenant,
            keyer=KEYER,
            decrypt_before_ack=not defer,
        )

        async def app(request: httpx.Request) -> httpx.Response:
            kind = "lifecycle" if request.url.path.endswith("/lifecycle") else "notification"
            if "validationToken" in request.url.params:
                result = await handle_validation(
                    request.url.query, handshakes=handshakes, kind=kind, now=clock()
                )
            else:
                result = await handle_notifications(
                    await request.aread(),
                    security=security,
                    inbox=store,
                    subscriptions=store,
                    now=clock(),
                )
            headers = [("Content-Type", result.content_type), *result.headers]
            return httpx.Response(result.status, content=result.body, headers=headers)

        async with httpx.AsyncClient(transport=httpx.MockTransport(app)) as webhook_http:
            graph = FakeGraph(tenant_id=TENANT, clock=clock, webhook_client=webhook_http, seed=7)
            async with httpx.AsyncClient(
                transport=httpx.MockTransport(graph.handler)
            ) as graph_http:
                client = GraphClient(graph_http, StaticToken(), clock=clock)
                online = await client.create_or_get_meeting(
                    ORGANIZER,
                    external_id="ext-e2e",
                    subject="Virtual visit",
                    start=clock(),
                    end=clock() + timedelta(hours=1),
                )
                assert online.join_web_url is not None
                meeting = MeetingRow(
                    org_id=ORG,
                    external_id="ext-e2e",
                    organizer_oid=ORGANIZER,
                    meeting_id=online.id,
                    join_url=online.join_web_url.get_secret_value(),
                    start=clock(),
                    end=clock() + timedelta(hours=1),
                    state="active",
                    department="telehealth",
                )
                await store.put_meeting(meeting)
                reconciled: list[tuple[str, str, str]] = []

                async def reconcile(org: str, external_id: str, reason: str) -> None:
                    reconciled.append((org, external_id, reason))

                manager = SubscriptionManager(
                    client,
                    store,
                    handshakes,
                    notification_url="https://app.example/graph/notifications",
                    lifecycle_url="https://app.example/graph/lifecycle",
                    certificate=CERTIFICATE,
                    meetings=store,
                    clock=clock,
                    reconcile=reconcile,
                )
                sunk: list[AttendanceEvent] = []

                async def sink(events: Sequence[AttendanceEvent]) -> None:
                    sunk.extend(events)

                processor = InboxProcessor(
                    inbox=store,
                    facts=store,
                    meetings=store,
                    bus=store,
                    keyer=KEYER,
                    worker="w1",
                    sink=sink,
                    lifecycle=manager.handle_lifecycle,
                    clock=clock,
                    security=security,
                )
                notifier = GraphNotifier(
                    graph,
                    entra,
                    app_id=APP_ID,
                    webhook_client=webhook_http,
                    shape=shape,  # type: ignore[arg-type]
                )
                yield World(
                    clock,
                    entra,
                    graph,
                    store,
                    notifier,
                    manager,
                    processor,
                    meeting,
                    graph.room(online.id),
                    sunk,
                    reconciled,
                )


async def _visit(w: World) -> None:
    """Organizer joins (call starts), patient waits in the lobby, is admitted, both leave."""
    w.room.join("leg-doc", identity="organizer", display_name="Dr Canary Clinician")
    w.clock.advance(minutes=1)
    w.room.join("leg-pt", identity="guest", display_name=CANARY_NAME)
    w.clock.advance(minutes=4)
    w.room.admit("leg-pt")
    w.clock.advance(minutes=15)
    w.room.leave("leg-pt")
    w.clock.advance(minutes=1)
    w.room.end_call()


@pytest.mark.parametrize("shared", [False, True], ids=["local-handshake", "shared-handshake"])
async def test_visit_end_to_end_on_sqlite(caplog: pytest.LogCaptureFixture, shared: bool) -> None:
    caplog.set_level(logging.DEBUG)
    async with world(shared=shared) as w:
        row = await w.manager.subscribe(w.meeting)
        [fake_sub] = w.graph.subscriptions.items.values()
        assert fake_sub.validated
        assert fake_sub.include_resource_data
        assert fake_sub.client_state == row.client_state

        async def authorize(org: str, external_id: str, viewer: str) -> bool:
            return (org, external_id, viewer) == (ORG, "ext-e2e", ORGANIZER)

        frames = await stream(
            w.store,
            org_id=ORG,
            external_id="ext-e2e",
            viewer_oid=ORGANIZER,
            authorize=authorize,
            facts=w.store,
            heartbeat_seconds=5,
        )
        assert await frames.__anext__() == b"retry: 3000\n\n"
        assert b"snapshot" in await frames.__anext__()

        await _visit(w)
        sent = await w.notifier.flush()
        assert [s.status for s in sent] == [202] * len(sent)
        assert len(sent) == 7  # call start, doc in, pt lobby, admit, pt left, doc left, call end

        report = await w.processor.run_once()
        assert (report.claimed, report.completed, report.failed) == (7, 7, 0)
        kinds = [(e.kind, e.role) for e in w.sunk]
        assert kinds == [
            ("call_started", "other"),
            ("connected", "provider"),
            ("lobby_entered", "patient"),
            ("connected", "patient"),
            ("admitted", "patient"),
            ("disconnected", "patient"),
            ("disconnected", "provider"),
            ("call_ended", "other"),
        ]
        facts = await w.store.list_facts(ORG, "ext-e2e")
        assert len(facts) == 8
        assert {f.department for f in facts} == {"telehealth"}
        lobby = next(f for f in facts if f.kind == "lobby_entered")
        admitted = next(f for f in facts if f.kind == "admitted")
        assert admitted.at - lobby.at == timedelta(minutes=4)  # times are Graph's eventDateTime

        frame_kinds = []
        for _ in range(8):
            frame = (await frames.__anext__()).decode()
            data = json.loads(frame.split("data: ", 1)[1])
            frame_kinds.append((data["role"], data["kind"]))
        assert frame_kinds == [(r, k) for k, r in kinds]
        await frames.aclose()  # type: ignore[attr-defined]

        # nothing identifying anywhere: names, join URL, client state; no raw ids at rest
        dumped = [repr(f) for f in facts] + [e.model_dump_json() for e in w.sunk]
        secrets = [CANARY_NAME, "Dr Canary Clinician", w.meeting.join_url, row.client_state]
        assert_no_leak(secrets, caplog.text, dumped)
        assert_no_leak([ORGANIZER, "leg-pt", "leg-doc"], dumped)


async def test_duplicates_and_redeliveries_are_stored_once() -> None:
    async with world() as w:
        await w.manager.subscribe(w.meeting)
        w.notifier.duplicate_next(3)
        await _visit(w)
        sent = await w.notifier.flush()
        assert len(sent) == 10
        await w.notifier.redeliver_last()
        await w.notifier.redeliver_last()
        await w.processor.run_once()
        facts = await w.store.list_facts(ORG, "ext-e2e")
        assert len(facts) == 8
        assert len(w.sunk) == 8


async def test_both_payload_shapes_give_the_same_facts() -> None:
    results = []
    for shape in ("delta", "legacy"):
        async with world(shape) as w:
            await w.manager.subscribe(w.meeting)
            w.room.join("leg-doc", identity="organizer")
            w.clock.advance(minutes=2)
            w.room.join(
                "leg-colleague",
                identity="tenant_user",
                user_id="c0ffee00-0000-0000-0000-000000000001",
            )
            w.clock.advance(minutes=10)
            w.room.leave("leg-colleague")
            w.room.end_call()
            await w.notifier.flush()
            await w.processor.run_once()
            facts = await w.store.list_facts(ORG, "ext-e2e")
            results.append(sorted((f.kind, f.role, f.participant_key, f.at) for f in facts))
    assert results[0] == results[1]
    assert [k for k, *_ in results[0]].count("connected") == 2


@pytest.mark.parametrize(
    "forgery",
    [
        "bad_client_state",
        "bad_hmac",
        "wrong_tenant",
        "expired_token",
        "forged_token",
        "wrong_appid",
        "no_token",
        "unknown_certificate",
    ],
)
async def test_forged_notifications_never_become_facts(forgery: str) -> None:
    async with world() as w:
        await w.manager.subscribe(w.meeting)
        w.notifier.forge_next(forgery)  # type: ignore[arg-type]
        w.room.join("leg-doc", identity="organizer")  # call_started (forged) + connected (genuine)
        sent = await w.notifier.flush()
        assert [s.status for s in sent] == [202, 202]  # no oracle for the forger
        await w.processor.run_once()
        facts = await w.store.list_facts(ORG, "ext-e2e")
        assert [f.kind for f in facts] == ["connected"]


async def test_out_of_order_and_dropped_notifications() -> None:
    async with world() as w:
        await w.manager.subscribe(w.meeting)
        await _visit(w)
        w.notifier.reorder()
        w.notifier.drop_next()  # the call_ended is lost (reconciliation fills it later)
        await w.notifier.flush()
        await w.processor.run_once()
        kinds = sorted(f.kind for f in await w.store.list_facts(ORG, "ext-e2e"))
        assert kinds == sorted(
            [
                "call_started",
                "connected",
                "connected",
                "lobby_entered",
                "disconnected",
                "disconnected",
            ]
        )  # no 'admitted': the lobby fact arrived after the connect


async def test_subscription_removed_is_recreated_and_reconciled() -> None:
    async with world() as w:
        old = await w.manager.subscribe(w.meeting)
        sent = await w.notifier.send_lifecycle(old.subscription_id, "subscriptionRemoved")
        assert sent.status == 202
        await w.processor.run_once()
        assert (await w.store.get_subscription(old.subscription_id)).state == "removed"  # type: ignore[union-attr]
        [new_sub] = w.graph.subscriptions.items.values()
        assert new_sub.id != old.subscription_id
        assert new_sub.validated
        assert w.reconciled == [(ORG, "ext-e2e", "subscription_removed")]
        # notifications now flow through the new subscription
        w.room.join("leg-doc", identity="organizer")
        assert {s.status for s in await w.notifier.flush()} == {202}
        assert (await w.processor.run_once()).events == 2


async def test_reauthorization_renews_through_graph() -> None:
    async with world() as w:
        row = await w.manager.subscribe(w.meeting)
        w.clock.advance(days=1)
        await w.notifier.send_lifecycle(row.subscription_id, "reauthorizationRequired")
        await w.processor.run_once()
        renewed = await w.store.get_subscription(row.subscription_id)
        assert renewed is not None
        assert renewed.expires_at == w.clock() + w.manager.lifetime
        assert w.graph.subscriptions.items[row.subscription_id].expiration == renewed.expires_at


async def test_handshake_refused_when_nothing_is_pending() -> None:
    async with world() as w:
        # someone (not us) asks Graph to validate our endpoint: we do not echo
        status = await w.notifier._post(  # type: ignore[attr-defined]
            "https://app.example/graph/notifications?validationToken=abc", b""
        )
        assert status == 404


@pytest.mark.parametrize("forgery", ["bad_hmac", "unknown_certificate", "bad_client_state"])
async def test_deferred_decryption_pipeline(forgery: str) -> None:
    """security.md §3.3: cheap checks before the ack, decryption in the worker; same facts."""
    async with world(defer=True) as w:
        await w.manager.subscribe(w.meeting)
        w.notifier.forge_next(forgery)  # type: ignore[arg-type]
        await _visit(w)
        assert {s.status for s in await w.notifier.flush()} == {202}
        await w.processor.run_once()
        kinds = [e.kind for e in w.sunk]
        assert "call_started" not in kinds  # the forged first notification
        assert kinds.count("connected") == 2
        assert len(await w.store.list_facts(ORG, "ext-e2e")) == 7

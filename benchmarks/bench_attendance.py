"""Requirements P4 and P5: attendance pipeline throughput and memory.

Measures, in one run (ratios against baselines measured alongside):

1. **FHIR delivery** — facts/s the outbox worker delivers (lease → conditional create → mark)
   into :class:`FakeFhirServer` through ``httpx.MockTransport``, on the in-memory test store
   and on SQLite; baseline: a bare httpx loop POSTing the same resources (no outbox).
2. The same on **loopback** (uvicorn on 127.0.0.1, real sockets).
3. **Memory over 10,000 visits** (requirement P5) — each visit enqueues its connect/disconnect facts
   and its note into SQLite and the worker delivers them to a FHIR sink; tracemalloc (current Python
   heap) and RSS after warm-up and at the end, growth per visit.
4. **Notifications/s into the durable inbox** (requirement P4, goal ≥ 2,000/s on one core) — the
   webhook's ``handle_notifications`` with FakeEntra validation tokens and encrypted rich content,
   committing to SQLite (and PostgreSQL at 127.0.0.1:5432 if reachable), both decrypt modes.

    python benchmarks/bench_attendance.py [--facts 2000] [--visits 10000] [--notifications 3000]

Prints a markdown table and writes it to ``benchmarks/results/attendance.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
from pydantic import SecretStr

from teams_ehr.attendance.fhir_resources import FhirTarget, build_audit_event
from teams_ehr.attendance.outbox import (
    Backoff,
    OrgRoute,
    OutboxWorker,
    enqueue_attendance,
    enqueue_visit_note,
)
from teams_ehr.attendance.writers import AuditEventWriter, EpicClinicalNoteWriter, WriterStrategy
from teams_ehr.store.crypto import FieldCipher
from teams_ehr.store.protocol import AttendanceFactRow
from teams_ehr.store.sqlite import SqliteStore
from teams_ehr.testing.fake_fhir import FakeFhirServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "attendance_out"))
from attendance_out_support import MemoryStore

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
BASE = "https://ehr.example/api/FHIR/R4"
TARGET = FhirTarget(encounter="Encounter/e1", patient="Patient/p1", conference_id="c1")
TOKEN = SecretStr("bench-token")
PG_URL = os.environ.get("TEAMS_EHR_TEST_PG") or "postgresql://postgres@127.0.0.1:5432/test"
BATCH = 10


def facts_for(visit: int, org: str = "org-a") -> list[AttendanceFactRow]:
    ext = f"visit-{visit}"
    out = []
    for i, (kind, role, who, sec) in enumerate(
        (
            ("call_started", "other", "meeting", 0),
            ("connected", "provider", "dr", 5),
            ("connected", "patient", "pt", 60),
            ("disconnected", "patient", "pt", 900),
            ("disconnected", "provider", "dr", 910),
            ("call_ended", "other", "meeting", 911),
        )
    ):
        at = T0 + timedelta(seconds=sec)
        out.append(AttendanceFactRow(org, ext, f"{ext}-{i}", kind, role, who, at))
    return out


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


async def _tokens(org_id: str, *, force_refresh: bool = False) -> SecretStr:
    return TOKEN


def _worker(
    store: Any, http: httpx.AsyncClient, clock: Clock, writers: dict[str, Any]
) -> OutboxWorker:
    async def route(org_id: str, strategy: WriterStrategy) -> OrgRoute:
        return OrgRoute(writers[strategy.value], BASE)

    return OutboxWorker(
        store,
        route,
        _tokens,
        http,
        clock=clock,
        backoff=Backoff(jitter=lambda: 1.0),
        batch_size=100,
        concurrency=16,
    )


async def _drain(worker: OutboxWorker) -> None:
    while await worker.run_once():
        pass


# -- 1/2: delivery throughput -------------------------------------------------------------------


async def delivery(
    store: Any, transport: httpx.AsyncBaseTransport, facts: int, base: str = BASE
) -> float:
    clock = Clock()
    writer = AuditEventWriter(clock=clock)
    rows = [f for v in range(facts // 4 + 1) for f in facts_for(v) if f.kind.endswith("connected")]
    rows = rows[:facts]
    await enqueue_attendance(store, rows, target=TARGET, writers=[writer], now=T0)
    async with httpx.AsyncClient(transport=transport) as http:
        worker = _worker(store, http, clock, {"audit_event": writer})
        worker_route = worker.writer_for_org

        async def route(org_id: str, strategy: WriterStrategy) -> OrgRoute:
            r = await worker_route(org_id, strategy)
            return OrgRoute(r.writer, base)

        worker.writer_for_org = route
        start = time.perf_counter()
        await _drain(worker)
        elapsed = time.perf_counter() - start
    if worker.stats.delivered != len(rows):
        raise RuntimeError(f"delivered {worker.stats.delivered} of {len(rows)}")
    return len(rows) / elapsed


async def bare_httpx(transport: httpx.AsyncBaseTransport, facts: int, base: str = BASE) -> float:
    rows = [f for v in range(facts // 4 + 1) for f in facts_for(v) if f.kind.endswith("connected")]
    rows = rows[:facts]
    bodies = [build_audit_event(f, TARGET) for f in rows]
    async with httpx.AsyncClient(transport=transport) as http:
        start = time.perf_counter()
        limiter = anyio.CapacityLimiter(16)

        async def post(body: dict[str, Any], query: str) -> None:
            async with limiter:
                r = await http.post(
                    f"{base}/AuditEvent",
                    json=body,
                    headers={"If-None-Exist": query, "Authorization": "Bearer x"},
                )
                r.raise_for_status()

        async with anyio.create_task_group() as group:
            for body, identity in bodies:
                group.start_soon(post, body, identity.query())
        return len(rows) / (time.perf_counter() - start)


# -- 3: memory over many visits -----------------------------------------------------------------


def _tmpdir(tmpfs: bool) -> tempfile.TemporaryDirectory[str]:
    """A scratch directory on disk, or on tmpfs (``/dev/shm``: fsync is free there)."""
    shm = Path("/dev/shm")
    return tempfile.TemporaryDirectory(dir=shm if tmpfs and shm.is_dir() else None)


def _sink(request: httpx.Request) -> httpx.Response:
    return httpx.Response(201, json={"resourceType": "AuditEvent", "id": "1"})


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def memory(visits: int, warmup: int) -> dict[str, float]:
    clock = Clock()
    writers = {
        "audit_event": AuditEventWriter(clock=clock),
        "epic_clinical_note": EpicClinicalNoteWriter(conditional_create=True, clock=clock),
    }
    transport = httpx.MockTransport(_sink)
    with _tmpdir(tmpfs=True) as tmp:
        async with (
            SqliteStore(f"{tmp}/m.db", cipher=FieldCipher(b"k" * 32), clock=clock) as store,
            httpx.AsyncClient(transport=transport) as http,
        ):
            worker = _worker(store, http, clock, writers)
            marks: dict[str, tuple[int, int]] = {}
            start = time.perf_counter()
            for visit in range(visits):
                facts = facts_for(visit)
                await enqueue_attendance(
                    store, facts, target=TARGET, writers=[writers["audit_event"]], now=clock()
                )
                await enqueue_visit_note(store, facts, target=TARGET, now=clock())
                if (visit + 1) % BATCH == 0:  # the worker drains every few visits
                    await _drain(worker)
                if visit + 1 in (warmup, visits):
                    gc.collect()
                    marks[str(visit + 1)] = (tracemalloc.get_traced_memory()[0], _rss_kib())
            elapsed = time.perf_counter() - start
    (heap_w, rss_w), (heap_end, rss_end) = marks[str(warmup)], marks[str(visits)]
    span = visits - warmup
    return {
        "visits": visits,
        "seconds": elapsed,
        "delivered": worker.stats.delivered,
        "heap_warm_kib": heap_w / 1024,
        "heap_end_kib": heap_end / 1024,
        "heap_per_visit_b": (heap_end - heap_w) / span,
        "rss_warm_kib": rss_w,
        "rss_end_kib": rss_end,
        "rss_per_visit_b": (rss_end - rss_w) * 1024 / span,
    }


# -- 4: notifications into the inbox ------------------------------------------------------------


async def inbox_rate(store: Any, count: int, per_post: int, decrypt: bool) -> float:
    """The webhook with real validation tokens and encrypted content (requirement P4)."""
    from teams_ehr.attendance.notification_crypto import NotificationCertificate, encrypt_content
    from teams_ehr.attendance.notifications import ParticipantKeyer
    from teams_ehr.attendance.validation_tokens import GraphValidationTokenVerifier
    from teams_ehr.attendance.webhook import WebhookSecurity, handle_notifications
    from teams_ehr.smart.jwks import JwksCache
    from teams_ehr.store.protocol import SubscriptionRow
    from teams_ehr.testing.fake_entra import FakeEntra

    tenant, app_id = "11111111-2222-3333-4444-555555555555", "6a1c0f7e-0d9b-4e55-9d57-1f2e3d4c5b6a"
    now = datetime.now(UTC).replace(microsecond=0)
    entra = FakeEntra(tenant, clock=lambda: now)
    cert = NotificationCertificate.generate(now)
    await store.put_subscription(
        SubscriptionRow(
            "sub-1", "org-a", "visit-1", "client-state", now + timedelta(days=2), "active"
        )
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(entra.handler)) as client:

        async def org_tenant(org_id: str) -> str | None:
            return tenant

        security = WebhookSecurity(
            token_verifier=GraphValidationTokenVerifier(
                app_id=app_id, jwks=JwksCache(clock=lambda: now), client=client
            ),
            decryption_keys=cert.keys(),
            org_tenant=org_tenant,
            keyer=ParticipantKeyer(b"s" * 32),
            decrypt_before_ack=decrypt,
        )
        token = entra.sign_graph_validation_token(None, audience=app_id, tenant_id=tenant)
        join = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_x%40thread.v2/0"
        bodies = []
        for post in range(count // per_post):
            items = []
            for n in range(per_post):
                stamp = (
                    (now - timedelta(seconds=post * per_post + n))
                    .isoformat()
                    .replace("+00:00", "Z")
                )
                content = {
                    "@odata.type": "#microsoft.graph.callevent",
                    "id": f"n{post}-{n}",
                    "eventType": "rosterUpdated",
                    "eventDateTime": stamp,
                    "participants@delta": [
                        {
                            "info": {"identity": {"guest": {"id": f"g{n}", "displayName": "x"}}},
                            "isInLobby": False,
                            "id": f"leg{n}",
                        }
                    ],
                }
                encrypted = encrypt_content(
                    json.dumps(content).encode(),
                    encryption_certificate=cert.encryption_certificate,
                    certificate_id=cert.certificate_id,
                )
                items.append(
                    {
                        "subscriptionId": "sub-1",
                        "clientState": "client-state",
                        "changeType": "updated",
                        "tenantId": tenant,
                        "resource": f"communications/onlineMeetings(joinWebUrl='{join}')/meetingCallEvents",
                        "subscriptionExpirationDateTime": (now + timedelta(days=2)).isoformat(),
                        "resourceData": {
                            "@odata.type": "#microsoft.graph.callevent",
                            "id": f"n{post}-{n}",
                        },
                        "encryptedContent": encrypted.model_dump(by_alias=True),
                    }
                )
            bodies.append(json.dumps({"value": items, "validationTokens": [token]}).encode())
        accepted = 0
        start = time.perf_counter()
        for body in bodies:
            result = await handle_notifications(
                body, security=security, inbox=store, subscriptions=store, now=now
            )
            if result.status != 202:
                raise RuntimeError(f"webhook answered {result.status} {result.rejected}")
            accepted += result.accepted
        elapsed = time.perf_counter() - start
    if accepted != len(bodies) * per_post:
        raise RuntimeError(f"accepted {accepted}")
    return accepted / elapsed


async def _postgres() -> Any | None:
    try:
        import psycopg

        from teams_ehr.store.postgres import PostgresStore
    except ImportError:
        return None
    schema = f"bench_att_{int(time.time())}"
    try:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.Error:
        return None
    dsn = f"{PG_URL}?options=-csearch_path%3D{schema}"
    store = PostgresStore(dsn, cipher=FieldCipher(b"k" * 32))
    await store.open()
    return store, schema


def _drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


# -- main ---------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    mock = lambda: httpx.MockTransport(FakeFhirServer(BASE).handler)  # noqa: E731
    bare = await bare_httpx(mock(), args.facts)
    mem = await delivery(MemoryStore(), mock(), args.facts)
    with _tmpdir(tmpfs=False) as tmp:
        async with SqliteStore(f"{tmp}/d.db", cipher=FieldCipher(b"k" * 32)) as sqlite:
            lite = await delivery(sqlite, mock(), args.facts)
    with _tmpdir(tmpfs=True) as tmp:
        async with SqliteStore(f"{tmp}/d.db", cipher=FieldCipher(b"k" * 32)) as sqlite:
            shm = await delivery(sqlite, mock(), args.facts)
    rows += [
        ("FHIR delivery, bare httpx POST loop (baseline, MockTransport)", f"{bare:,.0f} facts/s"),
        (
            "FHIR delivery, outbox worker, in-memory test store (MockTransport)",
            f"{mem:,.0f} facts/s ({mem / bare:.2f}× baseline)",
        ),
        (
            "FHIR delivery, outbox worker, SQLite on disk (fsync per mark)",
            f"{lite:,.0f} facts/s ({lite / bare:.2f}× baseline)",
        ),
        (
            "FHIR delivery, outbox worker, SQLite on tmpfs",
            f"{shm:,.0f} facts/s ({shm / bare:.2f}× baseline)",
        ),
    ]
    try:
        from teams_ehr.testing.loopback import serve_on_loopback_async
    except ImportError:
        serve_on_loopback_async = None  # type: ignore[assignment]
    if serve_on_loopback_async is not None:
        fake = FakeFhirServer("http://127.0.0.1/fhir")
        async with serve_on_loopback_async(fake.asgi_app()) as url:
            n = max(200, args.facts // 4)
            base = f"{url}/fhir"
            loop_bare = await bare_httpx(httpx.AsyncHTTPTransport(), n, base)
            fake2 = FakeFhirServer("http://127.0.0.1/fhir")
            async with serve_on_loopback_async(fake2.asgi_app()) as url2:
                with tempfile.TemporaryDirectory() as tmp:
                    async with SqliteStore(f"{tmp}/l.db", cipher=FieldCipher(b"k" * 32)) as sqlite:
                        loop_lite = await delivery(
                            sqlite, httpx.AsyncHTTPTransport(), n, f"{url2}/fhir"
                        )
        rows += [
            ("FHIR delivery on loopback, bare httpx (baseline)", f"{loop_bare:,.0f} facts/s"),
            (
                "FHIR delivery on loopback, outbox worker + SQLite",
                f"{loop_lite:,.0f} facts/s ({loop_lite / loop_bare:.2f}× baseline)",
            ),
        ]
    for tmpfs in (False, True):
        where = "tmpfs" if tmpfs else "disk"
        for decrypt in (True, False):
            mode = "decrypt before ack" if decrypt else "decrypt in worker"
            for per_post in (1, 10):
                with _tmpdir(tmpfs) as tmp:
                    async with SqliteStore(f"{tmp}/i.db", cipher=FieldCipher(b"k" * 32)) as sqlite:
                        rate = await inbox_rate(sqlite, args.notifications, per_post, decrypt)
                goal = "met" if rate >= 2000 else "NOT met"
                rows.append(
                    (
                        f"P4 notifications → SQLite inbox ({where}), {per_post}/POST, {mode}",
                        f"{rate:,.0f}/s (goal ≥ 2,000/s: {goal})",
                    )
                )
    pg = await _postgres()
    if pg is not None:
        store, schema = pg
        try:
            rate = await inbox_rate(store, args.notifications, 10, False)
            rows.append(
                (
                    "P4 notifications → PostgreSQL inbox, 10/POST, decrypt in worker",
                    f"{rate:,.0f}/s",
                )
            )
        finally:
            await store.aclose()
            _drop_schema(schema)
    tracemalloc.start()
    m = await memory(args.visits, args.warmup)
    tracemalloc.stop()
    rows += [
        (
            f"P5 {m['visits']:,} visits (6 facts + note each, SQLite on tmpfs, worker every 10 visits)",
            f"{m['seconds']:.1f} s, {m['delivered']:,} writes",
        ),
        (
            f"P5 Python heap after {args.warmup:,} / {m['visits']:,} visits",
            f"{m['heap_warm_kib']:,.0f} KiB / {m['heap_end_kib']:,.0f} KiB",
        ),
        ("P5 heap growth per visit after warm-up", f"{m['heap_per_visit_b']:.1f} B/visit"),
        (
            "P5 RSS after warm-up / at the end",
            f"{m['rss_warm_kib']:,} KiB / {m['rss_end_kib']:,} KiB ({m['rss_per_visit_b']:.1f} B/visit)",
        ),
    ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facts", type=int, default=2000)
    parser.add_argument("--visits", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--notifications", type=int, default=3000)
    args = parser.parse_args()
    rows = anyio.run(run, args)
    lines = [
        f"# P4/P5 — attendance pipeline (Python {platform.python_version()}, {platform.machine()})",
        "",
        "| measure | value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows),
        "",
    ]
    text = "\n".join(lines)
    sys.stdout.write(text)
    out = Path(__file__).parent / "results" / "attendance.md"
    out.write_text(text)


if __name__ == "__main__":
    main()

"""Requirements P4 and P5: attendance pipeline throughput and memory.

Measures, in one run (ratios against baselines measured alongside):

1. **FHIR delivery** — facts/s the outbox worker delivers (lease → conditional create → mark)
   into :class:`FakeFhirServer` through ``httpx.MockTransport``, on the in-memory test store
   and on SQLite; baseline: a bare httpx loop POSTing the same resources (no outbox).
2. The same on **loopback** (uvicorn on 127.0.0.1, real sockets).
3. **Memory over 10,000 visits** (requirement P5) — each visit enqueues its connect/disconnect facts
   and its note into SQLite and the worker delivers them to a FHIR sink; tracemalloc (current Python
   heap) and RSS after warm-up and at the end, growth per visit.
4. **Notifications over HTTP through the host** (requirement P4: one notification per POST,
   decrypted before the 202, ≥ 0.8 × the floor rate) — a host process (the Starlette app of
   ``teams_ehr_routes`` under uvicorn on loopback, SQLite on disk, background workers off) and
   this process as the client, POSTing Graph-shaped bodies (encrypted rich content, a fresh
   FakeEntra validation token per POST, built by the host process before it serves: the worst
   case, since the verifier skips the signature check for a token it verified before).
   Reported per core: notifications ÷ the host process's CPU seconds (``/proc/<pid>/stat``)
   during the POSTs. The floor (``bench_floor.notification_floor``, same run): RSA-OAEP unwrap +
   HMAC-SHA256 + AES-CBC of one ``encryptedContent`` plus one durable SQLite append. Batched
   mode (10 per POST) is reported, and the same uvicorn answering 202 from a bare route shows
   the HTTP stack's own share.

    python benchmarks/bench_attendance.py [--facts 2000] [--visits 10000] [--notifications 3000]

Prints a markdown table and writes it to ``benchmarks/results/attendance.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
from bench_floor import notification_floor

_CRYPTO = "RSA-OAEP unwrap + HMAC-SHA256 + AES-CBC (one encryptedContent)"
_APPEND = "durable append (one SQLite row, synchronous=FULL)"

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
BASE = "https://ehr.example/api/FHIR/R4"
TARGET = FhirTarget(encounter="Encounter/e1", patient="Patient/p1", conference_id="c1")
TOKEN = SecretStr("bench-token")
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


# -- 4: notifications over HTTP through the host ------------------------------------------------

JOIN = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_bench%40thread.v2/0"


def _notification(now: datetime, number: int, cert: Any) -> dict[str, Any]:
    from teams_ehr.attendance.notification_crypto import encrypt_content

    content = {
        "@odata.type": "#microsoft.graph.callevent",
        "id": f"n{number}",
        "eventType": "rosterUpdated",
        "eventDateTime": (now - timedelta(seconds=number)).isoformat().replace("+00:00", "Z"),
        "participants@delta": [
            {
                "info": {"identity": {"guest": {"id": f"g{number}", "displayName": "x"}}},
                "isInLobby": False,
                "id": f"leg{number}",
            }
        ],
    }
    encrypted = encrypt_content(
        json.dumps(content).encode(),
        encryption_certificate=cert.encryption_certificate,
        certificate_id=cert.certificate_id,
    )
    return {
        "subscriptionId": "sub-1",
        "clientState": "client-state",
        "changeType": "updated",
        "tenantId": TENANT,
        "resource": f"communications/onlineMeetings(joinWebUrl='{JOIN}')/meetingCallEvents",
        "subscriptionExpirationDateTime": (now + timedelta(days=2)).isoformat(),
        "resourceData": {"@odata.type": "#microsoft.graph.callevent", "id": f"n{number}"},
        "encryptedContent": encrypted.model_dump(by_alias=True),
    }


TENANT = "7c1a6b2e-3f4d-4e5a-9b8c-0d1e2f3a4b5c"  # the sandbox's tenant


def serve_webhook(directory: str, posts: int, per_post: int) -> None:
    """The measured host process: the Starlette app of ``teams_ehr_routes`` under uvicorn on
    loopback, a SQLite store on disk, decrypt before the 202, background workers off. Before
    serving it writes ``posts`` request bodies (each with a fresh validation token signed by
    FakeEntra) to ``bodies.jsonl`` and its port to ``port``."""
    import socket

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from teams_ehr.config import AttendanceSettings
    from teams_ehr.integrations.starlette import (
        compose_lifespans,
        teams_ehr_lifespan,
        teams_ehr_routes,
    )
    from teams_ehr.store.protocol import SubscriptionRow
    from teams_ehr.testing.sandbox import MICROSOFT_CLIENT_ID, Sandbox

    here = Path(directory)
    sandbox = Sandbox(
        store_url=f"sqlite:///{here / 'host.sqlite3'}",
        attendance=AttendanceSettings(workers=False, decrypt_before_ack=True),
    )
    runtime = sandbox.app()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))

    @asynccontextmanager
    async def prepare(_app: Any) -> AsyncIterator[None]:
        await sandbox.seed_organization(runtime, org_id="org-a")
        now = datetime.now(UTC).replace(microsecond=0)
        row = SubscriptionRow(
            "sub-1", "org-a", "visit-1", "client-state", now + timedelta(days=2), "active"
        )
        await runtime.store.put_subscription(row)
        attendance = runtime.attendance
        assert attendance is not None
        with (here / "bodies.jsonl.part").open("w") as out:
            for post in range(posts):
                items = [
                    _notification(now, post * per_post + n, attendance.certificate)
                    for n in range(per_post)
                ]
                token = sandbox.entra.sign_graph_validation_token(
                    audience=MICROSOFT_CLIENT_ID, tenant_id=TENANT
                )
                out.write(json.dumps({"value": items, "validationTokens": [token]}) + "\n")
        (here / "bodies.jsonl.part").replace(here / "bodies.jsonl")
        (here / "port").write_text(str(sock.getsockname()[1]))
        yield

    async def bare(request: Request) -> Response:
        await request.body()
        return Response(status_code=202)

    app = Starlette(
        routes=[*teams_ehr_routes(runtime), Route("/bare", bare, methods=["POST"])],
        lifespan=compose_lifespans(teams_ehr_lifespan(runtime), prepare),
    )
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (``/proc/<pid>/stat``, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _post_all(
    client: httpx.AsyncClient, path: str, bodies: list[bytes], concurrency: int
) -> None:
    limiter = anyio.CapacityLimiter(concurrency)
    headers = {"Content-Type": "application/json"}

    async def post(body: bytes) -> None:
        async with limiter:
            response = await client.post(path, content=body, headers=headers)
        if response.status_code != 202:
            raise RuntimeError(f"the host answered {response.status_code}")

    async with anyio.create_task_group() as group:
        for body in bodies:
            group.start_soon(post, body)


def over_http(count: int, per_post: int, concurrency: int) -> dict[str, float]:
    """Notifications POSTed to the host process over loopback; its CPU from ``/proc``."""
    posts = max(1, count // per_post)
    warmup = max(2, posts // 10)
    with tempfile.TemporaryDirectory(prefix="teams-ehr-p4-") as directory:
        here = Path(directory)
        command = [
            sys.executable,
            __file__,
            "--serve-webhook",
            directory,
            "--serve-posts",
            str(posts + warmup),
            "--serve-per-post",
            str(per_post),
        ]
        server = subprocess.Popen(command)
        try:
            deadline = time.monotonic() + 300
            while not (here / "port").exists():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the host process did not start")
                time.sleep(0.05)
            url = f"http://127.0.0.1:{(here / 'port').read_text()}"
            bodies = [line.encode() for line in (here / "bodies.jsonl").read_text().splitlines()]

            async def drive() -> dict[str, float]:
                limits = httpx.Limits(max_connections=concurrency)
                async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits) as client:
                    await _post_all(client, "/graph/notifications", bodies[:warmup], concurrency)
                    await _post_all(client, "/bare", bodies[:warmup], concurrency)
                    measured = bodies[warmup:]
                    cpu, wall = _process_cpu(server.pid), time.perf_counter()
                    await _post_all(client, "/graph/notifications", measured, concurrency)
                    wall, cpu = time.perf_counter() - wall, _process_cpu(server.pid) - cpu
                    bare_cpu = _process_cpu(server.pid)
                    await _post_all(client, "/bare", measured, concurrency)
                    bare_cpu = _process_cpu(server.pid) - bare_cpu
                notifications = len(measured) * per_post
                return {
                    "notifications": notifications,
                    "posts": len(measured),
                    "cpu_ms": cpu / notifications * 1000,
                    "per_core": notifications / cpu if cpu else float("inf"),
                    "wall_rate": notifications / wall,
                    "bare_cpu_ms_per_post": bare_cpu / len(measured) * 1000,
                }

            return anyio.run(drive)
        finally:
            server.terminate()
            server.wait(timeout=30)


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
    floor = notification_floor(repeat=100 if args.notifications >= 200 else 10)
    floor_ms = floor.total
    rows.append(
        (
            "P4 floor per notification (RSA-OAEP unwrap + HMAC + AES-CBC, durable SQLite append)",
            f"{floor_ms:.3f} ms CPU ({floor.parts[_CRYPTO]:.3f} + {floor.parts[_APPEND]:.3f}) "
            f"= {1000 / floor_ms:,.0f}/s per core",
        )
    )
    for per_post in (1, 10):
        m4 = await anyio.to_thread.run_sync(
            over_http, args.notifications, per_post, args.concurrency
        )
        ratio = floor_ms / m4["cpu_ms"]
        if per_post == 1:
            verdict = f"target ≥ 0.8× floor: {'met' if ratio >= 0.8 else 'NOT met'}"
        else:
            verdict = "batched, reported"
        rows.append(
            (
                f"P4 notifications over HTTP → host (uvicorn + Starlette, SQLite on disk), "
                f"{per_post}/POST, decrypt before 202, a fresh validation token per POST",
                f"{m4['per_core']:,.0f}/s per core ({m4['cpu_ms']:.3f} ms host CPU each; "
                f"{ratio:.2f}× the floor rate; {verdict}); wall {m4['wall_rate']:,.0f}/s "
                f"with {args.concurrency} in flight",
            )
        )
        if per_post == 1:
            rows.append(
                (
                    "P4 same uvicorn + Starlette, a bare route answering 202 (HTTP stack alone)",
                    f"{m4['bare_cpu_ms_per_post']:.3f} ms host CPU per POST",
                )
            )
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
    parser.add_argument("--concurrency", type=int, default=8, help="POSTs in flight (P4)")
    parser.add_argument("--serve-webhook", help=argparse.SUPPRESS)
    parser.add_argument("--serve-posts", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-per-post", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_webhook:
        serve_webhook(args.serve_webhook, args.serve_posts, args.serve_per_post)
        return
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

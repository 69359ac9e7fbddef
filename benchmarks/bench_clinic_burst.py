"""Requirement P3: clinic-opening burst — N concurrent provider launches in one process.

Each launch is the whole provider path of requirement C3 against the sandbox fakes, through a real
:class:`~teams_ehr.app.TeamsEhr` and a real store: ``begin_launch`` (requirement A1 admission,
replay guard, discovery, authorization request) → FakeEhr's authorize (the browser) →
``complete_ehr_callback`` (token with ``private_key_jwt``, JWKS + ``id_token`` verification, the
Appointment read from the FHIR store, identity lookup, ``createOrGet`` + lobby PATCH + read-back on
FakeGraph) → ``303`` into the Teams meeting. Every launch is a distinct practitioner (pre-bound to a
distinct Microsoft identity, so no Microsoft sign-in) and a distinct appointment, so every launch
creates its own meeting.

Variants (a fresh world, store and cold caches for each):

* transport ``in-process``: every request goes through the sandbox router (``httpx.MockTransport``);
* transport ``loopback``: FakeEhr (with its FHIR store) served by uvicorn on 127.0.0.1 over real
  sockets, and the browser step is a real GET reading the 302 (Entra and Graph stay in-process);
* store SQLite (a file in a temporary directory) and PostgreSQL (``--pg-url``, a fresh schema
  per run; skipped with a note when the server is unreachable).

For each: the burst (all launches started at once in one task group), then the baseline — the
same kind of launches run one after another in a fresh world. Reported: all succeeded, p50/p99
latency per launch, launches/s, the ratio burst/sequential throughput, and how often discovery
(``.well-known/smart-configuration``) and the JWKS were fetched during the burst (goal: once per
issuer, thanks to the single-flight caches). Writes ``benchmarks/results/clinic_burst.md``.

    python benchmarks/bench_clinic_burst.py [--launches 1000] [--sequential 200] [--stores ...] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qsl, urlsplit

import anyio
import httpx

from teams_ehr.app import TeamsEhr
from teams_ehr.store.protocol import IdentityLink
from teams_ehr.testing.loopback import serve_on_loopback_async
from teams_ehr.testing.sandbox import TENANT_ID, Sandbox

ORG = "sandbox-clinic"
PG_URL = os.environ.get("TEAMS_EHR_TEST_PG") or "postgresql://postgres@127.0.0.1:5432/test"
Browser = Callable[[str], Awaitable[dict[str, str]]]


class EhrOverLoopback(httpx.AsyncBaseTransport):
    """Sends the EHR's ``https`` origin to its loopback server over real sockets, like a TLS
    terminator in front of it (``Host`` kept, ``X-Forwarded-Proto: https``, which uvicorn trusts
    from 127.0.0.1); every other host goes through the sandbox router (or nowhere)."""

    def __init__(self, ehr_host: str, port: int, others: httpx.AsyncBaseTransport | None) -> None:
        self._sockets = httpx.AsyncHTTPTransport()
        self._ehr_host, self._port, self._others = ehr_host, port, others

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host != self._ehr_host:
            if self._others is None:
                raise httpx.ConnectError("the browser only talks to the EHR", request=request)
            return await self._others.handle_async_request(request)
        headers = httpx.Headers(request.headers)
        headers["Host"] = request.url.netloc.decode("ascii")
        headers["X-Forwarded-Proto"] = request.url.scheme
        url = request.url.copy_with(scheme="http", host="127.0.0.1", port=self._port)
        forwarded = httpx.Request(request.method, url, headers=headers, stream=request.stream)
        return await self._sockets.handle_async_request(forwarded)

    async def aclose(self) -> None:
        await self._sockets.aclose()


@dataclass
class Run:
    label: str
    launches: int
    seconds: float
    cpu_seconds: float
    latencies: list[float]
    discovery_fetches: int
    jwks_fetches: int
    meetings: int

    @property
    def per_second(self) -> float:
        return self.launches / self.seconds

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


@asynccontextmanager
async def postgres_schema(base: str) -> AsyncIterator[str]:
    import psycopg

    schema = f"teams_ehr_p3_{secrets.token_hex(6)}"
    async with await psycopg.AsyncConnection.connect(base, autocommit=True) as conn:
        await conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{base}?options=-csearch_path%3D{schema}"
    finally:
        async with await psycopg.AsyncConnection.connect(base, autocommit=True) as conn:
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")


@asynccontextmanager
async def store_url(kind: str, pg_base: str) -> AsyncIterator[str]:
    if kind == "postgres":
        async with postgres_schema(pg_base) as url:
            yield url
        return
    parent = "/dev/shm" if kind == "sqlite-tmpfs" else None
    with tempfile.TemporaryDirectory(prefix="teams-ehr-p3-", dir=parent) as directory:
        yield f"sqlite:///{Path(directory) / 'burst.sqlite3'}"


@asynccontextmanager
async def world(transport: str, url: str) -> AsyncIterator[tuple[Sandbox, TeamsEhr, Browser]]:
    """A fresh sandbox, app and browser for one run."""
    if transport == "in-process":
        sandbox = Sandbox(store_url=url)

        async def in_process_browser(location: str) -> dict[str, str]:
            redirect = SimpleNamespace(method="GET", url=location, fields=())
            return sandbox.ehr.authorize_in_browser(redirect)

        async with sandbox.app() as app:
            yield sandbox, app, in_process_browser
        return
    sandbox = Sandbox(store_url=url)
    ehr_host = httpx.URL(sandbox.ehr.base_url).host
    async with serve_on_loopback_async(sandbox.ehr.asgi_app()) as origin:
        port = httpx.URL(origin).port or 80
        http = httpx.AsyncClient(transport=EhrOverLoopback(ehr_host, port, sandbox.transport()))
        browser_client = httpx.AsyncClient(transport=EhrOverLoopback(ehr_host, port, None))

        async def loopback_browser(location: str) -> dict[str, str]:
            response = await browser_client.get(location)
            if response.status_code != 302:
                raise RuntimeError(f"authorize answered {response.status_code}")
            return dict(parse_qsl(urlsplit(response.headers["location"]).query))

        async with http, browser_client, sandbox.app(http=http) as app:
            yield sandbox, app, loopback_browser


async def prepare(sandbox: Sandbox, app: TeamsEhr, count: int) -> None:
    """The organization, ``count`` appointments and ``count`` pre-bound practitioners."""
    await sandbox.seed_organization(app, org_id=ORG)
    now = sandbox.clock()
    for index in range(count):
        sandbox.seed_appointment(f"appt-{index}")
        await app.store.bind_identity(
            IdentityLink(
                org_id=ORG,
                ehr_issuer=sandbox.ehr.base_url,
                ehr_user_id=f"practitioner-{index}",
                tenant_id=TENANT_ID,
                object_id=str(uuid.UUID(int=index + 1, version=4)),
                linked_at=now,
            )
        )


async def one_launch(sandbox: Sandbox, app: TeamsEhr, browser: Browser, index: int) -> float:
    start = time.perf_counter()
    launch = sandbox.provider_launch(f"appt-{index}", user=f"practitioner-{index}")
    session = f"browser-{index}"
    params = {"iss": sandbox.ehr.base_url, "launch": launch}
    started = await app.visits.provider.begin_launch(ORG, "test", params, session_id=session)
    if started.location is None:
        raise RuntimeError("begin_launch did not redirect to the EHR")
    callback = await browser(started.location)
    done = await app.visits.callback.complete(callback, session_id=session)
    if done.status != 303 or not (done.location or "").startswith("https://teams.microsoft.com/"):
        raise RuntimeError(f"launch {index} did not end in the meeting: {done.status}")
    return time.perf_counter() - start


async def measure(transport: str, store: str, count: int, concurrent: bool, pg: str) -> Run:
    async with store_url(store, pg) as url, world(transport, url) as (sandbox, app, browser):
        await prepare(sandbox, app, count)
        discovery_before = len(sandbox.ehr.calls("smart-configuration"))
        jwks_before = len(sandbox.ehr.calls("jwks"))
        latencies: list[float] = []

        async def run(index: int) -> None:
            latencies.append(await one_launch(sandbox, app, browser, index))

        start, cpu = time.perf_counter(), time.process_time()
        if concurrent:
            async with anyio.create_task_group() as group:
                for index in range(count):
                    group.start_soon(run, index)
        else:
            for index in range(count):
                await run(index)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        if len(latencies) != count:
            raise RuntimeError(f"{count - len(latencies)} launches did not finish")
        mode = "burst" if concurrent else "sequential"
        return Run(
            label=f"{transport}, {store}, {mode}",
            launches=count,
            seconds=seconds,
            cpu_seconds=cpu_seconds,
            latencies=latencies,
            discovery_fetches=len(sandbox.ehr.calls("smart-configuration")) - discovery_before,
            jwks_fetches=len(sandbox.ehr.calls("jwks")) - jwks_before,
            meetings=len(sandbox.graph.meetings),
        )


async def postgres_available(base: str) -> bool:
    try:
        import psycopg

        async with await psycopg.AsyncConnection.connect(base, connect_timeout=3):
            return True
    except Exception:  # any failure means "not available here"
        return False


def table(pairs: list[tuple[Run, Run]]) -> list[str]:
    lines = [
        "| variant | launches | all succeeded | p50 ms | p99 ms | launches/s | baseline "
        "(sequential) launches/s | ratio | CPU ms / launch | discovery fetches | JWKS fetches |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for burst, sequential in pairs:
        ok = burst.meetings == burst.launches and len(burst.latencies) == burst.launches
        lines.append(
            f"| {burst.label} | {burst.launches} | {'yes' if ok else 'NO'} "
            f"| {burst.quantile(0.5):.0f} | {burst.quantile(0.99):.0f} "
            f"| {burst.per_second:.0f} | {sequential.per_second:.0f} "
            f"(p50 {sequential.quantile(0.5):.1f} ms) "
            f"| {burst.per_second / sequential.per_second:.2f} "
            f"| {burst.cpu_seconds / burst.launches * 1000:.1f} "
            f"| {burst.discovery_fetches} | {burst.jwks_fetches} |"
        )
    return lines


async def main_async(args: argparse.Namespace) -> str:
    stores = list(args.stores)
    notes: list[str] = []
    if "sqlite-tmpfs" in stores and not Path("/dev/shm").is_dir():
        stores.remove("sqlite-tmpfs")
        notes.append("- no /dev/shm here: SQLite on tmpfs not measured.")
    if "postgres" in stores and not await postgres_available(args.pg_url):
        stores.remove("postgres")
        notes.append(f"- PostgreSQL at {args.pg_url.split('@')[-1]} unreachable: not measured.")
    pairs: list[tuple[Run, Run]] = []
    for transport in args.transports:
        for store in stores:
            burst = await measure(transport, store, args.launches, True, args.pg_url)
            sequential = await measure(transport, store, args.sequential, False, args.pg_url)
            pairs.append((burst, sequential))
            print(
                f"{burst.label}: {burst.per_second:.0f}/s, sequential {sequential.per_second:.0f}/s"
            )
    once = all(b.discovery_fetches == 1 and b.jwks_fetches == 1 for b, _ in pairs)
    succeeded = all(b.meetings == b.launches for b, _ in pairs)
    best = max(pairs, key=lambda pair: pair[0].per_second)[0]
    try:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        load = "n/a"
    lines = [
        f"# P3 — clinic-opening burst ({args.launches} concurrent provider launches, one process; "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs)",
        "",
        *table(pairs),
        "",
        f"- goal P3 (all succeed; discovery and JWKS fetched once per issuer): "
        f"**{'met' if once and succeeded else 'NOT met'}** — one issuer: the counts are the "
        "fetches during each burst (the single-flight caches fill once; the approval's own "
        "discovery at seeding is not counted).",
        f"- best burst throughput: {best.per_second:.0f} launches/s ({best.label}).",
        f"- ratio = burst launches/s ÷ sequential launches/s ({args.sequential} launches, fresh "
        "world), both in this run. One process, one event loop: the burst overlaps I/O waits "
        "(store, loopback sockets) but not CPU (RSA/EC signatures, JSON, the fakes).",
        "- each launch: begin_launch, authorize (browser), complete_ehr_callback (token, JWKS, "
        "id_token, Appointment read, identity lookup, Graph createOrGet + lobby PATCH + GET), "
        "303 to the meeting; Entra and Graph are in-process fakes in every variant.",
        f"- load average at the end: {load}.",
        *notes,
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launches", type=int, default=1000)
    parser.add_argument("--sequential", type=int, default=200)
    parser.add_argument(
        "--transports", nargs="+", default=["in-process", "loopback"],
        choices=["in-process", "loopback"],
    )  # fmt: skip
    parser.add_argument(
        "--stores", nargs="+", default=["sqlite", "sqlite-tmpfs", "postgres"],
        choices=["sqlite", "sqlite-tmpfs", "postgres"],
    )  # fmt: skip
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.launches, args.sequential = 8, 4
    text = anyio.run(main_async, args, backend="asyncio")  # psycopg async needs asyncio
    print(text)
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / "clinic_burst.md").write_text(text)


if __name__ == "__main__":
    main()

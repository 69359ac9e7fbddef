"""Requirement P3: clinic-opening burst — N concurrent provider launches in one host process.

Each launch is the whole provider path of requirement C3 against the sandbox fakes, through a real
:class:`~teams_ehr.app.TeamsEhr` and a real store: ``begin_launch`` (admission, replay guard,
discovery, authorization request) → FakeEhr's authorize (the browser) → the callback (token with
an RS384 ``private_key_jwt`` client assertion, as Epic requires; JWKS + ``id_token``
verification; the Appointment read; identity lookup; Graph ``createOrGet`` + lobby PATCH +
read-back) → ``303`` into the Teams meeting, and then the visit's attendance subscription (Graph
validates it through the app's webhook within its 10 s window). Every launch is a distinct
practitioner (pre-bound to a distinct Microsoft identity) and a distinct appointment.

Counted per variant: launches, meetings, visits with a validated subscription, and failures —
a launch that raised or did not end in the meeting, and a meeting without a subscription once
the burst has settled (``--settle`` seconds at most). "all succeeded" only when
meetings = subscriptions = launches and failures = 0.

CPU per launch is the host process's CPU (``time.process_time``) from the first launch until the
last subscription. Two ways to serve the fakes (``--transports``): ``peers`` runs them in their
own process (``python -m teams_ehr.testing.peers``) over loopback sockets, the host serving
Graph's handshakes on its own uvicorn; ``in-process`` runs them in the measured process, so
their CPU is measured and subtracted: every synchronous step of a fake (the transport handlers,
FakeGraph's handshake client, the browser step) is timed, minus the host code it calls back into
(the webhook). Both numbers are shown. The ratio compares the host's CPU per launch with the floor of the same
run (``bench_floor.py``: one RS384 signature, one RS256 verification, six loopback HTTP
exchanges, the launch's minimal store transactions). The in-process transport has no sockets, so
its host cost is below what a deployment pays, while the floor includes real sockets.

Stores: SQLite (a file in a temporary directory) and PostgreSQL (``--pg-url``, a fresh schema
per run; skipped with a note when unreachable). Writes ``benchmarks/results/clinic_burst.md``.

    python benchmarks/bench_clinic_burst.py [--launches 1000] [--stores sqlite postgres] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import anyio
import httpx
from bench_floor import Floor, launch_floor

from teams_ehr.app import TeamsEhr
from teams_ehr.attendance.subscriptions import meeting_call_events_resource
from teams_ehr.keys import LocalSigner
from teams_ehr.store.protocol import IdentityLink
from teams_ehr.testing.sandbox import TENANT_ID, Sandbox

ORG = "sandbox-clinic"
EHR_ISSUER = "https://ehr.test/interconnect/api/FHIR/R4"  # Sandbox's and the peers' FakeEhr
PG_URL = os.environ.get("TEAMS_EHR_TEST_PG") or "postgresql://postgres@127.0.0.1:5432/test"
TARGET_RATE = {"sqlite": 150.0, "postgres": 100.0}
TARGET_FLOOR_RATIO = 1.5
T = TypeVar("T")


# -- CPU of the fakes, measured in the host process -----------------------------------------------


class Ledger:
    """CPU seconds spent in fake code: each synchronous step of a fake is timed, minus the time
    of host code it calls into (nested steps are charged to their own kind)."""

    def __init__(self) -> None:
        self.fake = 0.0
        self._children: list[float] = []

    def _enter(self) -> float:
        self._children.append(0.0)
        return time.process_time()

    def _leave(self, started: float, fake: bool) -> None:
        elapsed = time.process_time() - started
        own = elapsed - self._children.pop()
        if fake:
            self.fake += own
        if self._children:
            self._children[-1] += elapsed

    def call(self, fake: bool, function: Callable[..., T], *args: Any) -> T:
        started = self._enter()
        try:
            return function(*args)
        finally:
            self._leave(started, fake)

    async def run(self, fake: bool, coroutine: Coroutine[Any, Any, T]) -> T:
        return await _Stepped(self, fake, coroutine)


class _Stepped:
    """Awaits ``coroutine`` one step at a time, timing each step on the ledger."""

    def __init__(self, ledger: Ledger, fake: bool, coroutine: Coroutine[Any, Any, Any]) -> None:
        self._ledger, self._fake, self._coroutine = ledger, fake, coroutine

    def __await__(self) -> Generator[Any, Any, Any]:
        value: Any = None
        error: BaseException | None = None
        while True:
            started = self._ledger._enter()
            try:
                if error is not None:
                    yielded = self._coroutine.throw(error)
                else:
                    yielded = self._coroutine.send(value)
            except StopIteration as stop:
                return stop.value
            finally:
                self._ledger._leave(started, self._fake)
            try:
                value, error = (yield yielded), None
            except BaseException as exc:  # cancellation: thrown into the coroutine
                value, error = None, exc


class HostSide(httpx.AsyncBaseTransport):
    """Wraps the transport FakeGraph's handshake reaches the app through: host code."""

    def __init__(self, inner: httpx.AsyncBaseTransport, ledger: Ledger) -> None:
        self._inner, self._ledger = inner, ledger

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._ledger.run(False, self._inner.handle_async_request(request))


def measured_sandbox(url: str, ledger: Ledger) -> Sandbox:
    """A sandbox signing RS384 (as Epic) whose fakes' CPU goes to ``ledger``."""
    sandbox = Sandbox(store_url=url, signer=LocalSigner.generate("RS384"))
    smart = sandbox.settings.smart.model_copy(update={"signing_alg": "RS384"})
    sandbox.settings = sandbox.settings.model_copy(update={"smart": smart})
    route = sandbox.route

    async def timed_route(request: httpx.Request) -> httpx.Response:
        return await ledger.run(True, route(request))

    sandbox.route = timed_route  # type: ignore[method-assign]
    return sandbox


def wire_webhook(sandbox: Sandbox, ledger: Ledger) -> None:
    """After ``sandbox.app()``: the handshake's calls into the app are host CPU."""
    client = sandbox.graph.subscriptions.webhook_client
    if client is None:
        raise RuntimeError("the sandbox connected no webhook client")
    transport = HostSide(client._transport, ledger)
    sandbox.graph.subscriptions.webhook_client = httpx.AsyncClient(transport=transport)


# -- one run ----------------------------------------------------------------------------------------


@dataclass
class Run:
    transport: str
    store: str
    launches: int
    seconds: float = 0.0
    settle_seconds: float = 0.0
    cpu_seconds: float = 0.0
    fake_cpu_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    meetings: int = 0
    subscribed: int = 0
    discovery_fetches: int = 0
    jwks_fetches: int = 0
    floor: Floor | None = None

    @property
    def unsubscribed(self) -> int:
        return self.meetings - self.subscribed

    @property
    def failed(self) -> int:
        return sum(self.failures.values()) + self.unsubscribed

    @property
    def all_succeeded(self) -> bool:
        return self.meetings == self.subscribed == self.launches and self.failed == 0

    @property
    def per_second(self) -> float:
        return self.launches / self.seconds if self.seconds else 0.0

    def cpu_ms(self, host_only: bool) -> float:
        cpu = self.cpu_seconds - (self.fake_cpu_seconds if host_only else 0.0)
        return cpu / self.launches * 1000

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies) or [0.0]
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
    with tempfile.TemporaryDirectory(prefix="teams-ehr-p3-") as directory:
        yield f"sqlite:///{Path(directory) / 'burst.sqlite3'}"


async def prepare(sandbox: Sandbox, app: TeamsEhr, count: int) -> None:
    """The organization (approved) and ``count`` practitioners pre-bound to Microsoft identities."""
    await sandbox.seed_organization(app, org_id=ORG)
    now = sandbox.clock()
    for index in range(count):
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


Browser = Callable[[str], Awaitable[dict[str, str]]]


async def one_launch(world: World, launch: str, index: int) -> float:
    start = time.perf_counter()
    session = f"browser-{index}"
    params = {"iss": EHR_ISSUER, "launch": launch}
    app = world.app
    started = await app.visits.provider.begin_launch(ORG, "test", params, session_id=session)
    if started.location is None:
        raise RuntimeError("begin_launch did not redirect to the EHR")
    callback = await world.browser(started.location)
    done = await app.visits.callback.complete(callback, session_id=session)
    if done.status != 303 or not (done.location or "").startswith("https://teams.microsoft.com/"):
        raise RuntimeError(f"launch ended with {done.status}, not in the meeting")
    return time.perf_counter() - start


@dataclass
class World:
    """One run's app, browser and counters, whichever transport serves the fakes."""

    app: TeamsEhr
    browser: Browser
    launch_values: Callable[[int], Awaitable[list[str]]]
    counts: Callable[[], Awaitable[tuple[int, int]]]  # meetings, subscribed meetings
    fetches: Callable[[], tuple[int, int]]  # discovery, JWKS


def subscribed(meetings: list[str], subscriptions: list[tuple[str, bool]]) -> int:
    """How many meetings (join URLs) have a validated subscription (resource, validated)."""
    resources = {unquote(resource.lstrip("/")) for resource, ok in subscriptions if ok}
    return sum(1 for join in meetings if unquote(meeting_call_events_resource(join)) in resources)


@asynccontextmanager
async def in_process_world(url: str, count: int, ledger: Ledger) -> AsyncIterator[World]:
    sandbox = measured_sandbox(url, ledger)

    async def browser(location: str) -> dict[str, str]:
        redirect = SimpleNamespace(method="GET", url=location, fields=())
        return ledger.call(True, sandbox.ehr.authorize_in_browser, redirect)

    async def launch_values(total: int) -> list[str]:
        return [
            sandbox.provider_launch(f"appt-{i}", user=f"practitioner-{i}") for i in range(total)
        ]

    def count_now() -> tuple[int, int]:
        joins = [m["joinWebUrl"] for m in sandbox.graph.meetings.values()]
        subs = [
            (s.resource, s.validated and s.include_resource_data)
            for s in sandbox.graph.subscriptions.items.values()
        ]
        return len(joins), subscribed(joins, subs)

    async def counts() -> tuple[int, int]:  # the benchmark's own work: charged to the fakes
        return ledger.call(True, count_now)

    async with sandbox.app() as app:
        wire_webhook(sandbox, ledger)
        await prepare(sandbox, app, count)
        for index in range(count):
            sandbox.seed_appointment(f"appt-{index}")
        before = (len(sandbox.ehr.calls("smart-configuration")), len(sandbox.ehr.calls("jwks")))

        def fetches() -> tuple[int, int]:
            return (
                len(sandbox.ehr.calls("smart-configuration")) - before[0],
                len(sandbox.ehr.calls("jwks")) - before[1],
            )

        yield World(app, browser, launch_values, counts, fetches)


class Counting(httpx.AsyncBaseTransport):
    """Counts the runtime's discovery and JWKS fetches on their way to the peers."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner
        self.discovery = self.jwks = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.discovery += path.endswith("/.well-known/smart-configuration")
        self.jwks += "jwks" in path
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@asynccontextmanager
async def peers_process() -> AsyncIterator[dict[str, Any]]:
    """``python -m teams_ehr.testing.peers`` in its own process; yields its ports file."""
    from teams_ehr.testing.peers import read_ports_file

    with tempfile.TemporaryDirectory(prefix="teams-ehr-peers-") as directory:
        ports_file = Path(directory) / "peers.json"
        command = [sys.executable, "-m", "teams_ehr.testing.peers", "--ports-file", str(ports_file)]
        proc = subprocess.Popen(command)
        try:
            yield await anyio.to_thread.run_sync(read_ports_file, ports_file)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@asynccontextmanager
async def host_server(app: TeamsEhr) -> AsyncIterator[str]:
    """The app's routes under uvicorn on loopback, in this event loop (Graph's handshakes)."""
    import uvicorn
    from starlette.applications import Starlette

    from teams_ehr.integrations.starlette import teams_ehr_routes

    # IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that name it
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        Starlette(routes=teams_ehr_routes(app)),
        lifespan="off",
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as group:
        group.start_soon(server.serve, [sock])
        while not server.started:
            await anyio.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True


@asynccontextmanager
async def peers_world(url: str, count: int, ledger: Ledger) -> AsyncIterator[World]:
    """The fakes in their own process (real sockets); only the browser step and the counting
    requests run here, and they are charged to the fakes."""
    from teams_ehr.testing.peers import EHR_BASE, PeersTransport

    async with peers_process() as ports:
        sandbox = Sandbox(store_url=url, signer=LocalSigner.generate("RS384"), ehr_base=EHR_BASE)
        smart = sandbox.settings.smart.model_copy(update={"signing_alg": "RS384"})
        sandbox.settings = sandbox.settings.model_copy(update={"smart": smart})
        counting = Counting(PeersTransport(ports["url"]))
        http = httpx.AsyncClient(transport=counting, timeout=60.0)
        control = httpx.AsyncClient(base_url=ports["url"], timeout=120.0)
        browser_client = httpx.AsyncClient(transport=PeersTransport(ports["url"]))

        async def post(path: str, body: dict[str, Any]) -> Any:
            response = await control.post(f"/_peers/{path}", json=body)
            response.raise_for_status()
            return response.json()

        async def browser(location: str) -> dict[str, str]:
            async def get() -> dict[str, str]:
                response = await browser_client.get(location)
                if response.status_code != 302:
                    raise RuntimeError(f"authorize answered {response.status_code}")
                return dict(parse_qsl(urlsplit(response.headers["location"]).query))

            return await ledger.run(True, get())

        async def launch_values(total: int) -> list[str]:
            items = [
                {"appointment": f"appt-{i}", "user": f"practitioner-{i}"} for i in range(total)
            ]
            return list((await post("launches", {"launches": items}))["launches"])

        async def counts() -> tuple[int, int]:  # the benchmark's own work: charged to the fakes
            async def inspect() -> tuple[int, int]:
                seen = (await control.get("/_peers/inspect")).json()
                joins = [m["join_url"] for m in seen["meetings"]]
                subs = [(s["resource"], bool(s["validated"])) for s in seen["subscriptions"]]
                return len(joins), subscribed(joins, subs)

            return await ledger.run(True, inspect())

        async with (
            http,
            control,
            browser_client,
            sandbox.app(http=http) as app,
            host_server(app) as origin,
        ):
            secret = sandbox.settings.microsoft.client_secret
            await post(
                "setup",
                {
                    "app_base_url": sandbox.app_base_url,
                    "smart_jwks": {"keys": [sandbox.signer.public_jwk()]},
                    "microsoft_secret": secret.get_secret_value() if secret else "",
                    "webhook_targets": [origin],
                },
            )
            await prepare(sandbox, app, count)
            await post("appointments", {"ids": [f"appt-{i}" for i in range(count)]})
            before = (counting.discovery, counting.jwks)

            def fetches() -> tuple[int, int]:
                return counting.discovery - before[0], counting.jwks - before[1]

            yield World(app, browser, launch_values, counts, fetches)


async def measure(transport: str, store: str, count: int, args: argparse.Namespace) -> Run:
    ledger = Ledger()
    result = Run(transport=transport, store=store, launches=count)
    world_for = in_process_world if transport == "in-process" else peers_world
    async with store_url(store, args.pg_url) as url, world_for(url, count, ledger) as world:
        launches = await world.launch_values(count)

        async def run(index: int) -> None:
            try:
                with anyio.fail_after(args.launch_timeout):
                    latency = await one_launch(world, launches[index], index)
                result.latencies.append(latency)
            except Exception as exc:  # counted, by kind: the burst goes on
                result.failures[type(exc).__name__] += 1

        ledger.fake = 0.0
        start, cpu = time.perf_counter(), time.process_time()
        async with anyio.create_task_group() as group:
            for index in range(count):
                group.start_soon(run, index)
        result.seconds = time.perf_counter() - start
        deadline = time.monotonic() + args.settle
        meetings, subscribed_now = await world.counts()
        while subscribed_now < meetings and time.monotonic() < deadline:
            await anyio.sleep(0.5)
            meetings, subscribed_now = await world.counts()
        result.settle_seconds = time.perf_counter() - start
        result.cpu_seconds = time.process_time() - cpu
        result.fake_cpu_seconds = ledger.fake
        result.meetings, result.subscribed = meetings, subscribed_now
        result.discovery_fetches, result.jwks_fetches = world.fetches()
    return result


async def postgres_available(base: str) -> bool:
    try:
        import psycopg

        async with await psycopg.AsyncConnection.connect(base, connect_timeout=3):
            return True
    except Exception:  # any failure means "not available here"
        return False


# -- the report -------------------------------------------------------------------------------------


def table(runs: list[Run]) -> list[str]:
    lines = [
        "| fakes | store | launches | meetings | subscriptions | failures | all succeeded | launches/s "
        "| p50 ms | p99 ms | s until last subscription | CPU ms / launch (process) "
        "| of which fakes | host CPU ms / launch | floor ms | host / floor "
        "| discovery fetches | JWKS fetches |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        floor = r.floor.total if r.floor else float("nan")
        lines.append(
            f"| {r.transport} | {r.store} | {r.launches} | {r.meetings} | {r.subscribed} | {r.failed} "
            f"| {'yes' if r.all_succeeded else 'NO'} | {r.per_second:.0f} "
            f"| {r.quantile(0.5):.0f} | {r.quantile(0.99):.0f} | {r.settle_seconds:.1f} "
            f"| {r.cpu_ms(False):.1f} | {r.fake_cpu_seconds / r.launches * 1000:.1f} "
            f"| {r.cpu_ms(True):.1f} | {floor:.2f} | {r.cpu_ms(True) / floor:.2f} "
            f"| {r.discovery_fetches} | {r.jwks_fetches} |"
        )
    return lines


def verdicts(runs: list[Run]) -> list[str]:
    lines = []
    for r in runs:
        floor = r.floor.total if r.floor else float("nan")
        checks = [
            (
                "meetings / subscriptions / failures",
                f"{r.meetings} / {r.subscribed} / {r.failed}",
                f"{r.launches} / {r.launches} / 0",
                r.all_succeeded,
            ),
            (
                "launches/s",
                f"{r.per_second:.0f}",
                f"≥ {TARGET_RATE[r.store]:.0f}",
                r.per_second >= TARGET_RATE[r.store],
            ),
            (
                "host CPU per launch / floor",
                f"{r.cpu_ms(True) / floor:.2f}",
                f"≤ {TARGET_FLOOR_RATIO}",
                r.cpu_ms(True) / floor <= TARGET_FLOOR_RATIO,
            ),
            (
                "discovery / JWKS fetches",
                f"{r.discovery_fetches} / {r.jwks_fetches}",
                "1 / 1",
                r.discovery_fetches == 1 and r.jwks_fetches == 1,
            ),
        ]
        for name, value, target, ok in checks:
            lines.append(
                f"| {r.transport} | {r.store} | {name} | {value} | {target} "
                f"| {'met' if ok else 'NOT met'} |"
            )
    return lines


async def main_async(args: argparse.Namespace) -> str:
    stores = list(args.stores)
    notes: list[str] = []
    if "postgres" in stores and not await postgres_available(args.pg_url):
        stores.remove("postgres")
        notes.append(f"- PostgreSQL at {args.pg_url.split('@')[-1]} unreachable: not measured.")
    transports = list(args.transports)
    if "peers" in transports and importlib.util.find_spec("teams_ehr.testing.peers") is None:
        transports.remove("peers")
        notes.append("- teams_ehr.testing.peers is not installed here: fakes in-process only.")
    floors = await launch_floor(stores, args.floor_repeat, 5, args.pg_url)
    runs: list[Run] = []
    for transport in transports:
        for store in stores:
            run = await measure(transport, store, args.launches, args)
            run.floor = floors.get(store)
            runs.append(run)
            print(
                f"{transport}, {store}: {run.per_second:.0f}/s, meetings {run.meetings}, subscriptions "
                f"{run.subscribed}, failures {run.failed} {dict(run.failures)}",
                flush=True,
            )
    try:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        load = "n/a"
    failure_kinds = "; ".join(
        f"{r.transport}, {r.store}: {', '.join(f'{k} ×{v}' for k, v in r.failures.items())}"
        for r in runs
        if r.failures
    )
    lines = [
        f"# P3 — clinic-opening burst ({args.launches} concurrent provider launches, one host "
        f"process; Python {platform.python_version()}, {os.cpu_count()} CPUs)",
        "",
        *table(runs),
        "",
        "| fakes | store | target | measured | goal | result |",
        "|---|---|---|---|---|---|",
        *verdicts(runs),
        "",
        "- failures = launches that raised or did not end in the meeting "
        f"({failure_kinds or 'none'}) + meetings without a validated subscription after the "
        f"burst settled (at most {args.settle:.0f} s).",
        "- launches/s = launches ÷ wall time until the last launch answered; CPU is the whole "
        "host process (`time.process_time`) until the last subscription (or the settle "
        "deadline), fakes' CPU subtracted in 'host CPU'.",
        "- fakes `peers`: FakeEhr + FHIR, FakeEntra and FakeGraph in their own process "
        "(`python -m teams_ehr.testing.peers`), reached over loopback sockets; the host serves "
        "Graph's validation handshakes on its own uvicorn, in the measured process. Only the "
        "browser step and the benchmark's counting (requests and matching) run in the host process; "
        "they are charged to 'of which fakes'. This is the honest variant.",
        "- fakes `in-process`: the same fakes in the measured process through "
        "`httpx.MockTransport` (no sockets); their CPU is timed step by step (minus the host "
        "code they call back into) and subtracted. The floor includes six real loopback "
        "exchanges, so 'host / floor' there flatters the host by its missing socket work.",
        "- the client assertion is RS384 (Epic) with a 3072-bit key (`LocalSigner.generate`).",
        f"- load average at the end: {load}.",
        *notes,
        "",
        "Floor of one provider launch, measured in this run (bench_floor.py):",
        "",
    ]
    for store, floor in floors.items():
        lines += [
            f"| floor, {store} | count | CPU ms each | CPU ms |",
            "|---|---|---|---|",
            *floor.rows(),
            f"| **total** | | | **{floor.total:.3f}** |",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launches", type=int, default=1000)
    parser.add_argument(
        "--stores", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"]
    )
    parser.add_argument(
        "--transports", nargs="+", default=["peers", "in-process"], choices=["peers", "in-process"]
    )
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument(
        "--settle", type=float, default=60.0, help="seconds to wait for subscriptions"
    )
    parser.add_argument("--launch-timeout", type=float, default=600.0)
    parser.add_argument("--floor-repeat", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.launches, args.floor_repeat, args.settle = 8, 10, 20.0
    text = anyio.run(main_async, args, backend="asyncio")  # psycopg async needs asyncio
    print(text)
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / "clinic_burst.md").write_text(text)


if __name__ == "__main__":
    main()

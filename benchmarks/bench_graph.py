"""Graph client benchmark (requirements B1/B2, design rule 8): lean GraphClient vs msgraph-sdk vs raw httpx.

Plain script: ``python benchmarks/bench_graph.py [--calls N] [--burst N]``. It starts FakeGraph in a
separate process on 127.0.0.1 (so client CPU is measured alone), then reports, in one run:

* first-call cost: a fresh interpreter that imports the client and makes one createOrGet
  (median of 3 subprocesses, wall time);
* per-call client CPU: ``time.process_time`` around each of N sequential createOrGet calls per
  client, the clients interleaved call by call (not in blocks: load changes over a run);
* a burst of concurrent ``ensure_meeting`` (createOrGet + PATCH + GET + verify) calls: distinct
  appointments must give that many meetings, and the same number of calls for one appointment one.

Prints a markdown table and writes ``benchmarks/results/graph.md``. Only loopback traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

START = datetime(2030, 5, 1, 15, 0, tzinfo=UTC)
ORGANIZER = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
BODY = {
    "externalId": "tehr1-bench",
    "subject": "Virtual visit",
    "startDateTime": "2030-05-01T15:00:00Z",
    "endDateTime": "2030-05-01T15:30:00Z",
}
RESULTS = Path(__file__).parent / "results" / "graph.md"


# -- the server process --------------------------------------------------------------------------


def serve(port: int) -> None:
    import uvicorn

    from teams_ehr.testing.fake_graph import FakeGraph

    fake = FakeGraph(tenant_id="bench-tenant")
    uvicorn.run(fake.asgi_app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off")


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/v1.0/ping", timeout=1.0)
            return proc, url
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("FakeGraph server did not start")


# -- clients -------------------------------------------------------------------------------------


class StaticToken:
    async def get_token(self, *scopes: str) -> Any:
        from teams_ehr.teams.credentials import AccessToken

        return AccessToken("bench-token", 2_000_000_000)


def lean_client(url: str, http: httpx.AsyncClient) -> Any:
    from teams_ehr.teams.graph_client import GraphClient

    return GraphClient(http, StaticToken(), base_url=url)


def msgraph_client(url: str, http: httpx.AsyncClient) -> Any:
    from kiota_abstractions.authentication import (
        AccessTokenProvider,
        AllowedHostsValidator,
        BaseBearerTokenAuthenticationProvider,
    )
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph.graph_request_adapter import options
    from msgraph_core import GraphClientFactory

    class Provider(AccessTokenProvider):  # type: ignore[misc]
        async def get_authorization_token(self, uri: str, extra: Any = None) -> str:
            return "bench-token"

        def get_allowed_hosts_validator(self) -> Any:
            return AllowedHostsValidator(["127.0.0.1"])

    wrapped = GraphClientFactory.create_with_default_middleware(client=http, options=options)
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(Provider()), client=wrapped)
    adapter.base_url = f"{url}/v1.0"
    return GraphServiceClient(request_adapter=adapter)


async def call_lean(client: Any) -> None:
    await client.create_or_get_meeting(
        ORGANIZER,
        external_id=BODY["externalId"],
        subject="Virtual visit",
        start=START,
        end=START + timedelta(minutes=30),
    )


async def call_msgraph(client: Any) -> None:
    from msgraph.generated.users.item.online_meetings.create_or_get.create_or_get_post_request_body import (
        CreateOrGetPostRequestBody,
    )

    body = CreateOrGetPostRequestBody(
        external_id=BODY["externalId"],
        subject="Virtual visit",
        start_date_time=START,
        end_date_time=START + timedelta(minutes=30),
    )
    await client.users.by_user_id(ORGANIZER).online_meetings.create_or_get.post(body)


async def call_raw(url: str, http: httpx.AsyncClient) -> None:
    response = await http.post(
        f"{url}/v1.0/users/{ORGANIZER}/onlineMeetings/createOrGet",
        json=BODY,
        headers={"Authorization": "Bearer bench-token"},
    )
    response.raise_for_status()
    response.json()


async def one_call(variant: str, url: str) -> None:
    async with httpx.AsyncClient(timeout=30.0) as http:
        if variant == "lean":
            await call_lean(lean_client(url, http))
        elif variant == "msgraph":
            await call_msgraph(msgraph_client(url, http))
        else:
            await call_raw(url, http)


def first_call(variant: str, url: str, runs: int = 3) -> float:
    here = str(Path(__file__).parent)
    code = (
        f"import asyncio, sys; sys.path.insert(0, {here!r});"
        f"import bench_graph; asyncio.run(bench_graph.one_call({variant!r}, {url!r}))"
    )
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-W", "ignore", "-c", code], check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def per_call_cpu(variants: list[str], url: str, calls: int) -> dict[str, float]:
    """Client CPU per createOrGet, the variants interleaved call by call (the order rotating
    every iteration), so a change in machine load hits them alike; ms per call by variant."""
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    clients = [httpx.AsyncClient(timeout=30.0, limits=limits) for _ in variants]
    calls_by_variant: dict[str, Any] = {}
    for variant, http in zip(variants, clients, strict=True):
        if variant == "lean":
            lean = lean_client(url, http)
            calls_by_variant[variant] = lambda lean=lean: call_lean(lean)
        elif variant == "msgraph":
            sdk = msgraph_client(url, http)
            calls_by_variant[variant] = lambda sdk=sdk: call_msgraph(sdk)
        else:
            calls_by_variant[variant] = lambda http=http: call_raw(url, http)
    spent = dict.fromkeys(variants, 0.0)
    try:
        for _ in range(20):  # warm-up (msgraph's first call imports ~1,300 modules)
            for variant in variants:
                await calls_by_variant[variant]()
        for index in range(calls):
            shift = index % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                started = time.process_time()
                await calls_by_variant[variant]()
                spent[variant] += time.process_time() - started
    finally:
        for http in clients:
            await http.aclose()
    return {variant: seconds / calls * 1000 for variant, seconds in spent.items()}


async def raw_ensure(
    url: str, http: httpx.AsyncClient, gate: asyncio.Semaphore, external_id: str
) -> str:
    """The same three HTTP exchanges as ensure_meeting, hand-written with httpx (baseline), with
    the same bound on requests in flight as GraphClient (one semaphore slot per request)."""
    from teams_ehr.teams.lobby import PRESETS

    headers = {"Authorization": "Bearer bench-token", "Prefer": "include-unknown-enum-members"}
    base = f"{url}/v1.0/users/{ORGANIZER}/onlineMeetings"
    async with gate:
        created = await http.post(
            f"{base}/createOrGet", json=BODY | {"externalId": external_id}, headers=headers
        )
    meeting_id = created.json()["id"]
    item = f"{base}/{quote(meeting_id, safe='')}"
    async with gate:
        patched = await http.patch(item, json=PRESETS["patient_visit"].to_patch(), headers=headers)
    patched.raise_for_status()
    async with gate:
        current = (await http.get(item, headers=headers)).json()
    if current["lobbyBypassSettings"]["scope"] != "organizer":
        raise RuntimeError("lobby not applied")
    return str(current["id"])


async def raw_burst(url: str, size: int) -> float:
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(timeout=60.0, limits=limits) as http:
        gate = asyncio.Semaphore(32)  # GraphClient's default max_concurrent_requests
        started = time.perf_counter()
        run = os.urandom(8).hex()  # new meetings every run, like the factory's fresh key
        ids = await asyncio.gather(
            *(raw_ensure(url, http, gate, f"raw-{run}-{i}") for i in range(size))
        )
        wall = time.perf_counter() - started
    if len(set(ids)) != size:
        raise RuntimeError("raw burst lost meetings")
    return wall


async def burst(url: str, size: int) -> dict[str, float]:
    from teams_ehr.teams.lobby import PRESETS
    from teams_ehr.teams.meetings import GraphMeetingFactory, MeetingRequest

    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(timeout=60.0, limits=limits) as http:
        factory = GraphMeetingFactory(lean_client(url, http), external_id_key=os.urandom(32))

        def request(appointment: str) -> MeetingRequest:
            return MeetingRequest(
                org_id="bench-org",
                appointment_id=appointment,
                organizer_oid=ORGANIZER,
                start=START,
                end=START + timedelta(minutes=30),
                policy=PRESETS["patient_visit"],
            )

        started = time.perf_counter()
        distinct = await asyncio.gather(
            *(factory.ensure_meeting(request(f"appt-{i}")) for i in range(size))
        )
        wall_distinct = time.perf_counter() - started
        started = time.perf_counter()
        same = await asyncio.gather(*(factory.ensure_meeting(request("one")) for _ in range(size)))
        wall_same = time.perf_counter() - started
    return {
        "wall_distinct": wall_distinct,
        "wall_same": wall_same,
        "meetings_distinct": len({m.meeting_id for m in distinct}),
        "meetings_same": len({m.meeting_id for m in same}),
    }


async def in_process_burst(size: int) -> tuple[float, float]:
    """The same burst against FakeGraph's MockTransport handler: client + fake CPU, no sockets."""
    from teams_ehr.teams.lobby import PRESETS
    from teams_ehr.teams.meetings import GraphMeetingFactory, MeetingRequest
    from teams_ehr.testing.fake_graph import FakeGraph

    fake = FakeGraph(tenant_id="bench-tenant")
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as http:
        client = lean_client("https://graph.microsoft.com", http)
        factory = GraphMeetingFactory(client, external_id_key=os.urandom(32))
        requests = [
            MeetingRequest(
                org_id="bench-org",
                appointment_id=f"appt-{i}",
                organizer_oid=ORGANIZER,
                start=START,
                end=START + timedelta(minutes=30),
                policy=PRESETS["patient_visit"],
            )
            for i in range(size)
        ]
        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(factory.ensure_meeting(r) for r in requests))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if len(fake.meetings) != size:
        raise RuntimeError("in-process burst lost meetings")
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", type=int)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--burst", type=int, default=1000)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    import warnings

    warnings.simplefilter("ignore", DeprecationWarning)  # msgraph's own deprecations
    proc, url = start_server()
    try:
        variants = ["raw", "lean", "msgraph"]
        first = {v: first_call(v, url) for v in variants}
        cpu = asyncio.run(per_call_cpu(variants, url, args.calls))
        # Alternate raw and GraphClient bursts twice and keep each one's best: on a shared
        # machine the load changes during the run, and order must not decide the ratio.
        runs = []
        raw_walls = []
        for _ in range(2):
            raw_walls.append(asyncio.run(raw_burst(url, args.burst)))
            runs.append(asyncio.run(burst(url, args.burst)))
        raw_wall = min(raw_walls)
        b = {
            "wall_distinct": min(r["wall_distinct"] for r in runs),
            "wall_same": min(r["wall_same"] for r in runs),
            "meetings_distinct": min(r["meetings_distinct"] for r in runs),
            "meetings_same": max(r["meetings_same"] for r in runs),
        }
        local_wall, local_cpu = asyncio.run(in_process_burst(args.burst))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    names = {"raw": "raw httpx", "lean": "teams_ehr GraphClient", "msgraph": "msgraph-sdk 1.x"}
    lines = [
        "# Graph client benchmark (bench_graph.py)",
        "",
        f"FakeGraph in its own process on 127.0.0.1 (uvicorn, one worker: the loopback bursts are "
        f"bound by it); {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}; Python "
        f"{sys.version.split()[0]}; {args.calls} sequential createOrGet calls per client, "
        "the clients interleaved call by call (rotating order).",
        "",
        "| client | first call (import + 1 createOrGet, wall ms) | per-call client CPU (ms) "
        "| CPU vs raw httpx | CPU vs GraphClient |",
        "|---|---|---|---|---|",
    ]
    for v in variants:
        lines.append(
            f"| {names[v]} | {first[v] * 1000:.0f} | {cpu[v]:.2f} | "
            f"{cpu[v] / cpu['raw']:.2f}× | {cpu[v] / cpu['lean']:.2f}× |"
        )
    n = args.burst
    lines += [
        "",
        f"First call: msgraph-sdk / GraphClient = {first['msgraph'] / first['lean']:.2f}×.",
        "",
        f"| burst of {n} concurrent ensure_meeting (createOrGet+PATCH+GET+verify), best of 2 alternating runs | wall s "
        "| calls/s | meetings |",
        "|---|---|---|---|",
        f"| {n} distinct appointments | {b['wall_distinct']:.2f} | "
        f"{n / b['wall_distinct']:.0f} | {b['meetings_distinct']:.0f} |",
        f"| {n} calls, one appointment | {b['wall_same']:.2f} | "
        f"{n / b['wall_same']:.0f} | {b['meetings_same']:.0f} |",
        f"| baseline: raw httpx, same 3 exchanges, {n} distinct | {raw_wall:.2f} | "
        f"{n / raw_wall:.0f} | {n} |",
        f"| in-process (MockTransport, no sockets), {n} distinct | {local_wall:.2f} | "
        f"{n / local_wall:.0f} | {n} |",
        "",
        f"In-process burst CPU (client + FakeGraph): {local_cpu:.2f} s, "
        f"{local_cpu / n * 1000:.2f} ms per ensure_meeting.",
        "",
        f"Burst wall time, GraphMeetingFactory / raw httpx (distinct appointments) = "
        f"{b['wall_distinct'] / raw_wall:.2f}×.",
        "",
    ]
    table = "\n".join(lines)
    print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(table, encoding="utf-8")
    if b["meetings_distinct"] != n or b["meetings_same"] != 1:
        raise SystemExit("burst invariant violated")


if __name__ == "__main__":
    main()

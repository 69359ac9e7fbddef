"""The package's fakes in a process of their own, for process tests and benchmarks (requirement E1).

Run::

    python -m teams_ehr.testing.peers --ports-file peers.json

One uvicorn server (:mod:`teams_ehr.testing.loopback`) on a free ``127.0.0.1`` port serves, by
``Host`` header, FakeEhr with its FakeFhirServer (:data:`EHR_BASE`), FakeEntra
(``login.microsoftonline.com``) and FakeGraph (``graph.microsoft.com``, subscriptions with
Graph's validation handshake and :class:`~teams_ehr.testing.graph_notifier.GraphNotifier`'s change
notifications, learn.microsoft.com/graph/change-notifications-delivery-webhooks). A runtime reaches them with :class:`PeersTransport` (real sockets to the port, the
original ``Host`` kept and ``X-Forwarded-Proto`` set, as behind a TLS terminator). Once serving,
the process writes ``{"url", "port", "pid", ...constants}`` to the ports file (atomically) and
runs until SIGTERM or SIGINT.

Control endpoints (JSON, under ``/_peers/``, whatever the ``Host``):

* ``POST /_peers/setup`` ``{"app_base_url", "smart_jwks", "microsoft_secret",
  "webhook_targets"}``: registers the SMART client (redirect ``<app_base_url>/callback``) and the
  Entra app; Graph's webhook POSTs to ``app_base_url`` go to ``webhook_targets`` round-robin,
  the next one on a connection error, as a load balancer in front of several hosts would.
* ``POST /_peers/appointments`` ``{"ids": [...], "minutes": 30}``: booked Appointments.
* ``POST /_peers/launches`` ``{"launches": [{"appointment", "user", "encounter", "patient"}]}``
  → ``{"launches": [value, ...]}``: EHR launches (a provider's unless ``patient`` is set).
* ``POST /_peers/visits`` ``{"join_url"}``: the organizer joins, the patient waits in the lobby
  and is admitted, leaves, the call ends; each change is POSTed to the webhook (Graph retries
  until a 2xx or 60 s). ``409`` while the meeting has no validated subscription.
* ``GET /_peers/inspect``: meetings, subscriptions, FHIR resources written, per meeting.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import anyio
import httpx

from teams_ehr._types import utc_now
from teams_ehr.app import MICROSOFT_CALLBACK_PATH
from teams_ehr.attendance.subscriptions import meeting_call_events_resource
from teams_ehr.errors import UsageError
from teams_ehr.orgs.console import ADMIN_MICROSOFT_CALLBACK_PATH
from teams_ehr.testing.asgi import asgi_app_from_handler
from teams_ehr.testing.fake_ehr import FakeEhr
from teams_ehr.testing.fake_entra import FakeEntra
from teams_ehr.testing.fake_fhir import FakeFhirServer
from teams_ehr.testing.fake_graph import FakeGraph
from teams_ehr.testing.graph_notifier import GraphNotifier
from teams_ehr.testing.loopback import LoopbackServer
from teams_ehr.testing.sandbox import MICROSOFT_CLIENT_ID, SMART_CLIENT_ID, TENANT_ID

__all__ = ["EHR_BASE", "Peers", "PeersTransport", "main", "read_ports_file"]

EHR_BASE = "https://ehr.test/interconnect/api/FHIR/R4"
GRAPH_BASE = "https://graph.microsoft.com"
CONTROL = "/_peers/"
_DELIVERY_DEADLINE_S = 60.0
LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=50, keepalive_expiry=1.0)
"""Idle connections are dropped after 1 s, well before uvicorn closes them (5 s): reusing one
the server is closing at that very moment fails with a connection reset."""  # Graph retries a failed delivery (here: for this long)


def _json(status: int, data: Any) -> httpx.Response:
    return httpx.Response(status, json=data)


class _Balancer(httpx.AsyncBaseTransport):
    """Graph's outbound webhook calls: ``app_base_url`` → one of the targets, round-robin; a
    connection error moves on to the next target (a host being restarted)."""

    def __init__(self) -> None:
        self._sockets = httpx.AsyncHTTPTransport(limits=LIMITS)
        self.origin: str | None = None
        self.targets: list[httpx.URL] = []
        self._turn = itertools.count()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        origin = f"{request.url.scheme}://{request.url.netloc.decode('ascii')}"
        if origin != self.origin or not self.targets:
            return await self._sockets.handle_async_request(request)
        body = await request.aread()
        error: httpx.TransportError = httpx.ConnectError("no webhook target", request=request)
        start = next(self._turn)
        for step in range(len(self.targets)):
            target = self.targets[(start + step) % len(self.targets)]
            url = request.url.copy_with(scheme=target.scheme, host=target.host, port=target.port)
            forwarded = httpx.Request(request.method, url, headers=request.headers, content=body)
            try:
                response = await self._sockets.handle_async_request(forwarded)
                await response.aread()
                return response
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                error = exc
        raise error

    async def aclose(self) -> None:
        await self._sockets.aclose()


class Peers:
    """FakeEhr + FakeFhirServer, FakeEntra and FakeGraph (+ notifier) behind one handler."""

    def __init__(self) -> None:
        self.fhir = FakeFhirServer(EHR_BASE, clock=utc_now, token_check=self._fhir_token_ok)
        self.ehr = FakeEhr(EHR_BASE, clock=utc_now, fhir_handler=self.fhir.handler)
        self.entra = FakeEntra(TENANT_ID, clock=utc_now)
        self.balancer = _Balancer()
        webhooks = httpx.AsyncClient(transport=self.balancer, timeout=20.0)
        self.graph = FakeGraph(
            tenant_id=TENANT_ID,
            clock=utc_now,
            base_url=GRAPH_BASE,
            token_checker=self._tenant,
            webhook_client=webhooks,
        )
        self._webhooks = webhooks
        self.notifier = GraphNotifier(
            self.graph, self.entra, app_id=MICROSOFT_CLIENT_ID, webhook_client=self._deliver
        )
        self.statuses: dict[int, int] = {}
        self.created: dict[str, int] = {}  # subscriptions created, per resource
        self._routes: dict[str, Callable[[httpx.Request], httpx.Response]] = {
            httpx.URL(EHR_BASE).host: self.ehr.handler,
            httpx.URL(self.entra.authority_host).host: self.entra.handler,
        }
        self._graph_host = httpx.URL(GRAPH_BASE).host

    def constants(self) -> dict[str, str]:
        return {
            "ehr_base": EHR_BASE,
            "oidc_issuer": self.ehr.oidc_issuer,
            "authority_host": self.entra.authority_host,
            "graph_base_url": GRAPH_BASE,
            "tenant_id": TENANT_ID,
            "microsoft_client_id": MICROSOFT_CLIENT_ID,
            "smart_client_id": SMART_CLIENT_ID,
        }

    def _fhir_token_ok(self, token: str) -> bool:
        return self.ehr.token_info(token) is not None

    def _tenant(self, token: str) -> str | None:
        claims = self.entra.validate_access_token(token)
        return None if claims is None else str(claims.get("tid"))

    async def _deliver(self, url: str, body: bytes) -> int:
        """One notification POST, retried (as Graph does) until a 2xx or 4xx, or the deadline."""
        deadline = time.monotonic() + _DELIVERY_DEADLINE_S
        status = 0
        while time.monotonic() < deadline:
            try:
                response = await self._webhooks.post(
                    url, content=body, headers={"Content-Type": "application/json"}
                )
                status = response.status_code
            except httpx.TransportError:
                status = 0
            if 200 <= status < 500:
                break
            await anyio.sleep(0.25)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        return status

    def _count_subscription(self, request: httpx.Request, response: httpx.Response) -> None:
        """Remember every subscription Graph created (the host deletes it when the visit ends)."""
        if not request.url.path.endswith("/subscriptions"):
            return
        resource = unquote(str(json.loads(response.content).get("resource", "")).lstrip("/"))
        self.created[resource] = self.created.get(resource, 0) + 1

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith(CONTROL):
            return await self._control(request)
        if request.url.host == self._graph_host:
            response = await self.graph.handler(request)
            if request.method == "POST" and response.status_code == 201:
                self._count_subscription(request, response)
            return response
        handler = self._routes.get(request.url.host)
        if handler is None:
            return _json(421, {"error": "no fake serves this host"})
        return handler(request)

    # -- control --------------------------------------------------------------------------------

    async def _control(self, request: httpx.Request) -> httpx.Response:
        name = request.url.path.removeprefix(CONTROL)
        if request.method == "GET" and name == "inspect":
            return _json(200, self.inspect())
        body = json.loads(request.content or b"{}")
        if request.method != "POST":
            return _json(405, {"error": "POST"})
        if name == "setup":
            return self._setup(body)
        if name == "appointments":
            for appointment in body["ids"]:
                self._seed_appointment(appointment, int(body.get("minutes", 30)))
            return _json(200, {"seeded": len(body["ids"])})
        if name == "launches":
            return _json(200, {"launches": [self._launch(item) for item in body["launches"]]})
        if name == "visits":
            return await self._play(str(body["join_url"]))
        return _json(404, {"error": "unknown control endpoint"})

    def _setup(self, body: dict[str, Any]) -> httpx.Response:
        base = str(body["app_base_url"]).rstrip("/")
        self.ehr.register_client(
            SMART_CLIENT_ID, redirect_uris=[base + "/callback"], jwks=body["smart_jwks"]
        )
        self.entra.register_app(
            MICROSOFT_CLIENT_ID,
            redirect_uris=[base + MICROSOFT_CALLBACK_PATH, base + ADMIN_MICROSOFT_CALLBACK_PATH],
            secret=str(body["microsoft_secret"]),
        )
        self.balancer.origin = base
        self.balancer.targets = [httpx.URL(t) for t in body.get("webhook_targets", [])]
        return _json(200, {"ok": True})

    def _seed_appointment(self, appointment: str, minutes: int) -> None:
        begin = (utc_now() + timedelta(minutes=5)).replace(microsecond=0)
        self.fhir.seed(
            {
                "resourceType": "Appointment",
                "id": appointment,
                "status": "booked",
                "start": begin.isoformat(),
                "end": (begin + timedelta(minutes=minutes)).isoformat(),
                "participant": [{"status": "accepted"}],
            }
        )

    def _launch(self, item: dict[str, Any]) -> str:
        encounter = item.get("encounter", "encounter-1")
        if item.get("patient"):
            patient = str(item["patient"])
            return self.ehr.issue_launch(
                patient=patient, appointment=item["appointment"], encounter=encounter, user=patient
            )
        return self.ehr.issue_launch(
            appointment=item["appointment"],
            encounter=encounter,
            user=item["user"],
            location="dept-1",
            login_department="dept-1",
        )

    def _meeting_for(self, join_url: str) -> str | None:
        for meeting_id, meeting in self.graph.meetings.items():
            if meeting.get("joinWebUrl") == join_url:
                return meeting_id
        return None

    def _subscriptions_by_resource(self) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {}
        for sub in self.graph.subscriptions.items.values():
            found.setdefault(unquote(sub.resource.lstrip("/")), []).append(sub)
        return found

    async def _play(self, join_url: str) -> httpx.Response:
        meeting_id = self._meeting_for(join_url)
        if meeting_id is None:
            return _json(404, {"error": "no such meeting"})
        meeting = self.graph.meetings[meeting_id]
        resource = unquote(meeting_call_events_resource(meeting["joinWebUrl"]))
        subs = self._subscriptions_by_resource().get(resource, [])
        if not any(s.validated and s.include_resource_data for s in subs):
            return _json(409, {"error": "the meeting has no validated subscription yet"})
        room = self.graph.room(meeting_id)
        room.join("leg-doc", identity="organizer", display_name="Dr Peer Clinician")
        room.join("leg-pt", identity="guest", display_name="Peer Patient")
        room.admit("leg-pt")
        room.leave("leg-pt")
        room.end_call()
        sent = await self.notifier.flush()
        return _json(200, {"statuses": [s.status for s in sent]})

    def inspect(self) -> dict[str, Any]:
        """What the peers saw: meetings, subscriptions, FHIR resources written, per meeting."""
        by_resource = self._subscriptions_by_resource()
        meetings = []
        for meeting_id, meeting in self.graph.meetings.items():
            resource = unquote(meeting_call_events_resource(meeting["joinWebUrl"]))
            subs = by_resource.get(resource, [])
            meetings.append(
                {
                    "id": meeting_id,
                    "join_url": meeting["joinWebUrl"],
                    "external_id": meeting.get("externalId"),
                    "subscriptions_created": self.created.get(resource, 0),
                    "subscriptions_now": len(subs),
                }
            )
        written = {
            kind: self.fhir.resources(kind)
            for kind in ("AuditEvent", "DocumentReference", "Encounter")
        }
        return {
            "meetings": meetings,
            "plain_create_calls": len(self.graph.plain_create_calls),
            "subscriptions": [
                {"id": s.id, "resource": s.resource, "validated": s.validated}
                for s in self.graph.subscriptions.items.values()
            ],
            "notification_statuses": {str(k): v for k, v in self.statuses.items()},
            "fhir": written,
        }


class PeersTransport(httpx.AsyncBaseTransport):
    """Every request to the peers process over real sockets: ``https://ehr.test/...`` becomes
    ``http://127.0.0.1:<port>/...`` with ``Host: ehr.test`` and ``X-Forwarded-Proto: https``
    (uvicorn trusts it from 127.0.0.1), so the fakes see the URL the runtime asked for."""

    def __init__(self, url: str) -> None:
        target = httpx.URL(url)
        self._host, self._port = target.host, target.port
        self._sockets = httpx.AsyncHTTPTransport(limits=LIMITS)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        headers = httpx.Headers(request.headers)
        headers["Host"] = request.url.netloc.decode("ascii")
        headers["X-Forwarded-Proto"] = request.url.scheme
        url = request.url.copy_with(scheme="http", host=self._host, port=self._port)
        forwarded = httpx.Request(request.method, url, headers=headers, stream=request.stream)
        return await self._sockets.handle_async_request(forwarded)

    async def aclose(self) -> None:
        await self._sockets.aclose()


def read_ports_file(path: Path, *, timeout: float = 60.0) -> dict[str, Any]:
    """Wait for the ports file of a starting peers process and return its content."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return data
        time.sleep(0.05)
    raise UsageError(
        f"the peers process wrote no ports file in {timeout} s (see its output)",
        reason="fake_setup",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m teams_ehr.testing.peers")
    parser.add_argument("--ports-file", type=Path, required=True)
    args = parser.parse_args(argv)
    peers = Peers()
    server = LoopbackServer(asgi_app_from_handler(peers.handle))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    ports = {"url": server.url, "port": server.port, "pid": os.getpid(), **peers.constants()}
    partial = args.ports_file.with_name(args.ports_file.name + f".{secrets.token_hex(4)}")
    partial.write_text(json.dumps(ports), encoding="utf-8")
    partial.replace(args.ports_file)
    try:
        while not stop.wait(0.5):
            if not server.is_running():
                break
    finally:
        server.stop()


if __name__ == "__main__":  # pragma: no cover - the command line
    main()

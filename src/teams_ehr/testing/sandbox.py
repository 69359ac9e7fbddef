"""A whole offline world: FakeEhr (+ FakeFhirServer), FakeEntra and FakeGraph behind one router.

The demo, the example apps' tests, the benchmarks and integrators' tests use it the same way::

    sandbox = Sandbox()
    async with sandbox.app() as app:                 # a TeamsEhr wired to the fakes
        org = await sandbox.seed_organization(app)   # created, submitted and approved
        launch = sandbox.provider_launch()           # the EHR's "Begin virtual visit"
        await sandbox.seed_clinician(app)            # as after the one-time Microsoft sign-in

Every HTTP request of the app goes through :meth:`Sandbox.transport`, which routes by host to
the fake that owns it and refuses anything else, so nothing can leave the machine.

Attendance (requirements D1–D3): FakeGraph performs the subscription validation handshake and
:attr:`Sandbox.notifier` (a :class:`~teams_ehr.testing.graph_notifier.GraphNotifier`) posts the
room's roster changes as encrypted rich notifications, both through one webhook client. By
default :meth:`Sandbox.app` points it at the app's framework-free route table; a host test calls
:meth:`Sandbox.connect_webhooks` with a client for its own ASGI/WSGI app instead.
"""

from __future__ import annotations

import importlib.util
import secrets
from datetime import datetime, timedelta
from typing import Any

import httpx
from pydantic import SecretStr

from teams_ehr._types import Clock, utc_now
from teams_ehr.app import MICROSOFT_CALLBACK_PATH, TeamsEhr
from teams_ehr.config import (
    AttendanceSettings,
    MicrosoftSettings,
    SmartSettings,
    TeamsEhrSettings,
)
from teams_ehr.keys import LocalSigner, Signer
from teams_ehr.orgs.approval import ApprovalProof
from teams_ehr.orgs.console import ADMIN_MICROSOFT_CALLBACK_PATH
from teams_ehr.orgs.models import Environment, EnvironmentConfig, Organization, config_hash
from teams_ehr.sansio import run_async
from teams_ehr.smart.discovery import DiscoverySnapshot, discovery_flow
from teams_ehr.store.protocol import IdentityLink
from teams_ehr.teams.identity import IdentityBinder, MicrosoftIdentity
from teams_ehr.testing.fake_ehr import FakeEhr
from teams_ehr.testing.fake_entra import FakeEntra
from teams_ehr.testing.fake_fhir import FakeFhirServer
from teams_ehr.testing.fake_graph import FakeGraph
from teams_ehr.testing.graph_notifier import GraphNotifier

__all__ = ["Sandbox", "SandboxRoutingError"]

TENANT_ID = "7c1a6b2e-3f4d-4e5a-9b8c-0d1e2f3a4b5c"
APPROVER_OID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
CLINICIAN_OID = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"
MICROSOFT_CLIENT_ID = "3f2e1d0c-b9a8-4765-8432-10fedcba9876"
SMART_CLIENT_ID = "teams-ehr-sandbox"
PRACTITIONER = "practitioner-1"


class SandboxRoutingError(httpx.TransportError):
    """A request to a host no fake owns: the sandbox never lets traffic leave the process."""


def _b64key() -> SecretStr:
    import base64

    return SecretStr(base64.b64encode(secrets.token_bytes(32)).decode("ascii"))


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


class Sandbox:
    """The fakes, their registrations, settings for a :class:`TeamsEhr`, and seed helpers."""

    def __init__(
        self,
        *,
        clock: Clock = utc_now,
        app_base_url: str = "https://app.test",
        ehr_base: str = "https://ehr.test/interconnect/api/FHIR/R4",
        store_url: str = "sqlite://:memory:",
        graph_base_url: str = "https://graph.microsoft.com",
        signer: Signer | None = None,
        attendance: AttendanceSettings | None = None,
    ) -> None:
        self.clock = clock
        self.app_base_url = app_base_url.rstrip("/")
        # Validate what is written as FHIR R4 whenever fhir.resources is installed (tests).
        validate = _installed("fhir.resources")
        self.fhir = FakeFhirServer(
            ehr_base, clock=clock, token_check=self._fhir_token_ok, validate=validate
        )
        self.ehr = FakeEhr(ehr_base, clock=clock, fhir_handler=self.fhir.handler)
        self.entra = FakeEntra(TENANT_ID, clock=clock)
        self.graph = FakeGraph(
            tenant_id=TENANT_ID, clock=clock, base_url=graph_base_url, token_checker=self._tenant
        )
        self.signer = signer or LocalSigner.generate("ES384")
        secret = secrets.token_urlsafe(24)
        self.settings = TeamsEhrSettings(
            app_base_url=self.app_base_url,
            store_url=store_url,
            encryption_key=_b64key(),
            external_id_key=_b64key(),
            smart=SmartSettings(signing_alg="ES384"),
            microsoft=MicrosoftSettings(
                client_id=MICROSOFT_CLIENT_ID,
                client_secret=SecretStr(secret),
                authority_host=self.entra.authority_host,
                graph_base_url=graph_base_url,
            ),
            attendance=attendance or AttendanceSettings(),
        )
        self.notifier = GraphNotifier(
            self.graph, self.entra, app_id=MICROSOFT_CLIENT_ID, webhook_client=self._post_webhook
        )
        self._webhook_client: httpx.AsyncClient | None = None
        self._webhook_host = False
        self.redirect_uri = self.app_base_url + "/callback"
        self.ehr.register_client(
            SMART_CLIENT_ID,
            redirect_uris=[self.redirect_uri],
            jwks={"keys": [self.signer.public_jwk()]},
        )
        self.entra.register_app(
            MICROSOFT_CLIENT_ID,
            redirect_uris=[
                self.app_base_url + MICROSOFT_CALLBACK_PATH,
                self.app_base_url + ADMIN_MICROSOFT_CALLBACK_PATH,
            ],
            secret=secret,
        )
        self._routes = {
            httpx.URL(ehr_base).host: self.ehr.handler,
            httpx.URL(self.entra.authority_host).host: self.entra.handler,
        }
        self._graph_host = httpx.URL(graph_base_url).host

    def __repr__(self) -> str:
        return f"<Sandbox ehr={self.ehr.base_url!r}>"

    # -- wiring ---------------------------------------------------------------------------------

    def _fhir_token_ok(self, token: str) -> bool:
        return self.ehr.token_info(token) is not None

    def _tenant(self, token: str) -> str | None:
        claims = self.entra.validate_access_token(token)
        return None if claims is None else str(claims.get("tid"))

    async def route(self, request: httpx.Request) -> httpx.Response:
        """The transport handler: by host to the fake that owns it."""
        if request.url.host == self._graph_host:
            return await self.graph.handler(request)
        handler = self._routes.get(request.url.host)
        if handler is None:
            raise SandboxRoutingError(f"no fake serves {request.url.host!r}", request=request)
        await request.aread()
        return handler(request)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.route)

    def http_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.transport())

    def app(self, **kwargs: Any) -> TeamsEhr:
        """A :class:`TeamsEhr` on these settings whose HTTP goes to the fakes; Graph's webhooks
        reach it through its route table unless :meth:`connect_webhooks` names a host."""
        kwargs.setdefault("http", self.http_client())
        app = TeamsEhr(self.settings, signers={"test": self.signer}, clock=self.clock, **kwargs)
        if not self._webhook_host:  # the newest app serves the webhooks (restarts in tests)
            self._connect(httpx.AsyncClient(transport=_RouteTableTransport(app)))
        return app

    def connect_webhooks(self, client: httpx.AsyncClient) -> None:
        """Send FakeGraph's handshakes and the notifier's POSTs through ``client`` (whose
        transport serves the app, e.g. ``httpx.ASGITransport(app=host)``)."""
        self._webhook_host = True
        self._connect(client)

    def _connect(self, client: httpx.AsyncClient) -> None:
        self._webhook_client = client
        self.graph.subscriptions.webhook_client = client

    async def _post_webhook(self, url: str, body: bytes) -> int:
        if self._webhook_client is None:
            raise SandboxRoutingError("no webhook client connected")
        headers = {"Content-Type": "application/json"}
        response = await self._webhook_client.post(url, content=body, headers=headers)
        return response.status_code

    # -- seeding --------------------------------------------------------------------------------

    def environment_config(self) -> EnvironmentConfig:
        return EnvironmentConfig(
            fhir_base=self.ehr.base_url,
            client_id=SMART_CLIENT_ID,
            epic_client_id=SMART_CLIENT_ID,
            redirect_uri=self.redirect_uri,
            jwks_url=self.app_base_url + "/.well-known/jwks.json",
        )

    async def seed_organization(
        self,
        app: TeamsEhr,
        *,
        org_id: str = "sandbox-clinic",
        approve: bool = True,
        writer: str = "epic_clinical_note",
    ) -> Organization:
        """Create the organization with a test environment on FakeEhr; approve it (as the
        designated approver, with a real discovery snapshot) unless ``approve=False``."""
        org = Organization(
            org_id=org_id,
            display_name="Sandbox Clinic",
            tenant_id=TENANT_ID,
            approver_oid=APPROVER_OID,
            test=Environment(config=self._with_writer(self.environment_config(), writer)),
        )
        org = await app.registry.create(org, actor=APPROVER_OID)
        if not approve:
            return org
        org = await app.registry.submit_for_approval(org_id, "test", actor=APPROVER_OID)
        smart = await run_async(discovery_flow(self.ehr.base_url), app.http)
        proof = ApprovalProof(
            canonical_base=self.ehr.base_url,
            snapshot=DiscoverySnapshot.of(smart),
            id_token_issuer=self.ehr.oidc_issuer,
            signed_in_at=self.clock(),
        )
        return await app.registry.approve(
            org_id,
            "test",
            MicrosoftIdentity(tenant_id=TENANT_ID, object_id=APPROVER_OID),
            proof,
            config_hash=config_hash(org, "test"),
        )

    async def seed_clinician(
        self,
        app: TeamsEhr,
        *,
        org_id: str = "sandbox-clinic",
        user: str = PRACTITIONER,
        object_id: str = CLINICIAN_OID,
    ) -> IdentityLink:
        """What the clinician's one-time Microsoft sign-in leaves behind, without a launch: the
        EHR user ``user`` (of FakeEhr) bound to the Entra object id ``object_id``. Meetings the
        host prepares for ``user`` (``runtime.visits.meetings.prepare_visit``) are organized by
        that identity. Seeding the same binding again returns it."""
        binder = IdentityBinder(app.store, self.clock)
        issuer = self.environment_config().fhir_base
        existing = await binder.lookup(org_id, issuer, user)
        if existing is not None and existing.object_id == object_id.lower():
            return existing
        return await binder.bind(
            org_id,
            issuer,
            user,
            MicrosoftIdentity(tenant_id=TENANT_ID, object_id=object_id),
            organization_tenant_id=TENANT_ID,
            launch_session_valid=True,  # seeding: stands in for the sign-in's launch session
        )

    @staticmethod
    def _with_writer(config: EnvironmentConfig, writer: str) -> EnvironmentConfig:
        if writer == config.writer:
            return config
        return EnvironmentConfig.model_validate({**config.model_dump(), "writer": writer})

    def seed_appointment(
        self, appointment_id: str, *, start: datetime | None = None, minutes: int = 30
    ) -> tuple[datetime, datetime]:
        """An Appointment in the FHIR store (only its times are ever read)."""
        begin = (start or self.clock() + timedelta(minutes=5)).replace(microsecond=0)
        end = begin + timedelta(minutes=minutes)
        self.fhir.seed(
            {
                "resourceType": "Appointment",
                "id": appointment_id,
                "status": "booked",
                "start": begin.isoformat(),
                "end": end.isoformat(),
                "participant": [{"status": "accepted"}],
            }
        )
        return begin, end

    def provider_launch(
        self, appointment_id: str, *, user: str = PRACTITIONER, encounter: str = "encounter-1"
    ) -> str:
        """The EHR's *Begin virtual visit*: a ``launch`` value for this appointment."""
        return self.ehr.issue_launch(
            appointment=appointment_id,
            encounter=encounter,
            user=user,
            location="dept-1",
            login_department="dept-1",
        )

    def patient_launch(
        self, appointment_id: str, *, patient: str = "patient-1", encounter: str = "encounter-1"
    ) -> str:
        """The patient portal's *Join video visit*: a ``launch`` value for this appointment, for
        the app's patient launch URL (``/patient/{org_id}/{environment}``)."""
        return self.ehr.issue_launch(
            patient=patient, appointment=appointment_id, encounter=encounter, user=patient
        )


class _RouteTableTransport(httpx.AsyncBaseTransport):
    """Serves requests with the app's framework-free route table (no web framework)."""

    def __init__(self, app: TeamsEhr) -> None:
        self._app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        from teams_ehr.integrations.routes import IncomingRequest, handle
        from teams_ehr.web import WebStream

        names = {
            "/graph/notifications": "graph_notifications",
            "/graph/lifecycle": "graph_lifecycle",
        }
        route = names.get(request.url.path)
        if route is None:
            return httpx.Response(404)
        incoming = IncomingRequest(
            route=route,
            path_params={},
            params={},
            session_id="graph",
            client_key="graph",
            query=dict(request.url.params),
            body=await request.aread(),
        )
        result = await handle(self._app, incoming)
        if isinstance(result, WebStream):  # pragma: no cover - webhook routes never stream
            return httpx.Response(500)
        headers = [("Content-Type", result.media_type), *result.headers]
        return httpx.Response(result.status, content=result.body, headers=headers)

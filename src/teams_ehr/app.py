"""Assemble the primitives into one runtime a host mounts (SPEC C3–C6, E2).

:class:`TeamsEhr` owns the store, the organization registry, the shared caches (discovery, JWKS),
the visit service and the HTTP client; :class:`DefaultOrgServices` builds each organization's SMART
client, Entra sign-in configuration and Graph meeting factory on demand and caches them by the
organization's configuration hash, so an edited organization never reuses stale collaborators.
Everything that talks HTTP uses the one injected :class:`httpx.AsyncClient`; tests and the demo
inject a client whose transport routes to the fakes. With ``settings.attendance.enabled`` the
runtime also assembles the attendance pipeline (:mod:`teams_ehr.attendance.runtime`, SPEC D1–D7)
and, with ``workers``, runs its background loops until the runtime closes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import httpx

from teams_ehr import metrics
from teams_ehr._types import Clock, utc_now
from teams_ehr.admin import ADMIN_MICROSOFT_CALLBACK_PATH as ADMIN_CALLBACK
from teams_ehr.admin import AdminPolicy, AdminService
from teams_ehr.attendance.fhir_resources import FhirTarget
from teams_ehr.attendance.notification_crypto import NotificationCertificate
from teams_ehr.attendance.runtime import AttendanceRuntime
from teams_ehr.attendance.visit_state import LaunchCapture, VisitKeyCapture
from teams_ehr.config import SmartSettings, TeamsEhrSettings
from teams_ehr.errors import ApprovalRequiredError, ConfigurationError
from teams_ehr.joinlinks import JoinLinkService
from teams_ehr.keys import LocalSigner, Signer
from teams_ehr.orgs.models import EnvironmentName, Organization, config_hash
from teams_ehr.orgs.registry import OrganizationRegistry
from teams_ehr.smart.authorize import SmartClientConfig
from teams_ehr.smart.client_auth import PrivateKeyJwt
from teams_ehr.smart.discovery import DiscoveryCache
from teams_ehr.smart.flows import AsyncSmartLaunchClient
from teams_ehr.smart.jwks import JwksCache
from teams_ehr.store.factory import open_store
from teams_ehr.store.protocol import MeetingRow, Store
from teams_ehr.teams.credentials import ClientCredentialsProvider
from teams_ehr.teams.graph_client import GraphClient
from teams_ehr.teams.join_urls import TEAMS_HOSTS
from teams_ehr.teams.meetings import GraphMeetingFactory, MeetingFactory
from teams_ehr.teams.signin import EntraAppConfig
from teams_ehr.visits import LaunchRole, MeetingReadyHook, VisitPolicy, VisitService

__all__ = ["DefaultOrgServices", "TeamsEhr", "load_signers"]

MICROSOFT_CALLBACK_PATH = "/microsoft/callback"


def load_signers(settings: TeamsEhrSettings) -> dict[EnvironmentName, Signer]:
    """Our SMART signing keys per environment, read from the configured PEM files."""
    signers: dict[EnvironmentName, Signer] = {}
    paths: dict[EnvironmentName, Path | None] = {
        "test": settings.smart.test_key_path,
        "production": settings.smart.production_key_path,
    }
    for env, path in paths.items():
        if path is not None:
            try:
                pem = path.read_bytes()
            except OSError as exc:
                raise ConfigurationError(f"cannot read {env} key: {exc.strerror}") from None
            signers[env] = LocalSigner.from_pem(pem, settings.smart.signing_alg)
    return signers


def _scopes_for(smart: SmartSettings, role: LaunchRole) -> tuple[str, ...]:
    if role == "patient":
        return smart.patient_scopes
    if role == "approval":  # standalone sign-in that only proves the base URL (C1)
        return smart.approval_scopes
    return smart.provider_scopes


class DefaultOrgServices:
    """Per-organization SMART clients, Entra configs and meeting factories, cached by config."""

    def __init__(
        self,
        settings: TeamsEhrSettings,
        *,
        http: httpx.AsyncClient,
        signers: Mapping[EnvironmentName, Signer],
        jwks: JwksCache,
        discovery: DiscoveryCache,
        clock: Clock = utc_now,
        launch_stash: Callable[[str, FhirTarget], Awaitable[None]] | None = None,
    ) -> None:
        self._settings = settings
        self._http = http
        self._launch_stash = launch_stash
        self._signers = signers
        self._jwks = jwks
        self._discovery = discovery
        self._clock = clock
        self._external_id_key = settings.external_id_key_bytes()
        self._smart: dict[tuple[str, str, str, str], AsyncSmartLaunchClient] = {}
        self._factories: dict[str, MeetingFactory] = {}
        self._graphs: dict[str, GraphClient] = {}

    def __repr__(self) -> str:
        return "<DefaultOrgServices>"

    def smart_client(
        self, org: Organization, environment: EnvironmentName, role: LaunchRole
    ) -> AsyncSmartLaunchClient:
        env = org.environment(environment)
        if env is None:
            raise ApprovalRequiredError("the organization has no such environment")
        key = (org.org_id, environment, role, config_hash(org, environment))
        client = self._smart.get(key)
        if client is None:
            signer = self._signers.get(environment)
            if signer is None:
                raise ConfigurationError(f"no SMART signing key for {environment}")
            smart = self._settings.smart
            config = SmartClientConfig(
                client_id=env.config.client_id,
                redirect_uri=env.config.redirect_uri,
                scopes=_scopes_for(smart, role),
                use_post=smart.use_post,
                epic_client_id_header=env.config.epic_client_id is not None,
                allow_http=env.config.allow_http,
            )
            auth = PrivateKeyJwt(env.config.client_id, signer)
            options: dict[str, Any] = {
                "jwks": self._jwks,
                "discovery": self._discovery,
                "clock": self._clock,
            }
            if self._launch_stash is not None and role != "patient":
                client = LaunchCapture(
                    self._http, config, auth, stash=self._launch_stash, **options
                )
            else:
                client = AsyncSmartLaunchClient(self._http, config, auth, **options)
            self._smart[key] = client
        return client

    def entra_config(self, org: Organization) -> EntraAppConfig:
        return self.entra_config_for(org.tenant_id)

    def entra_config_for(
        self, tenant_id: str, callback_path: str = MICROSOFT_CALLBACK_PATH
    ) -> EntraAppConfig:
        """Microsoft sign-in at the tenant's own authority, back to ``callback_path``."""
        microsoft = self._settings.microsoft
        return EntraAppConfig(
            tenant_id=tenant_id,
            client_id=microsoft.client_id,
            redirect_uri=self._settings.app_base_url + callback_path,
            client_secret=microsoft.client_secret,
            authority_host=microsoft.authority_host,
        )

    def graph_client(self, tenant_id: str) -> GraphClient:
        """App-only Graph for one organization tenant."""
        graph = self._graphs.get(tenant_id)
        if graph is None:
            microsoft = self._settings.microsoft
            credentials = ClientCredentialsProvider(
                tenant_id,
                microsoft.client_id,
                http=self._http,
                certificate=microsoft.certificate(),
                client_secret=None if microsoft.certificate() else microsoft.client_secret,
                authority_host=microsoft.authority_host,
                clock=self._clock,
            )
            graph = GraphClient(
                self._http, credentials, base_url=microsoft.graph_base_url, clock=self._clock
            )
            self._graphs[tenant_id] = graph
        return graph

    def meeting_factory(self, org: Organization) -> MeetingFactory:
        factory = self._factories.get(org.tenant_id)
        if factory is None:
            graph = self.graph_client(org.tenant_id)
            factory = GraphMeetingFactory(graph, external_id_key=self._external_id_key)
            if self._launch_stash is not None:
                factory = VisitKeyCapture(factory)
            self._factories[org.tenant_id] = factory
        return factory


class TeamsEhr:
    """The assembled runtime: ``async with TeamsEhr(settings, ...) as app: app.visits...``."""

    def __init__(
        self,
        settings: TeamsEhrSettings,
        *,
        http: httpx.AsyncClient | None = None,
        signers: Mapping[EnvironmentName, Signer] | None = None,
        store: Store | None = None,
        clock: Clock = utc_now,
        on_meeting_ready: MeetingReadyHook | None = None,
        notification_certificate: NotificationCertificate | None = None,
    ) -> None:
        self.settings = settings
        self._certificate = notification_certificate
        self.attendance: AttendanceRuntime | None = None
        self.clock = clock
        if http is not None and None in http.timeout.as_dict().values():
            # security.md R23: every peer call must end; a stuck EHR must not hold a worker.
            raise ConfigurationError("the injected httpx client needs finite timeouts")
        self._http = http
        self._signers = dict(signers) if signers is not None else load_signers(settings)
        self._store = store
        self._on_meeting_ready = on_meeting_ready
        self._stack = AsyncExitStack()

    def __repr__(self) -> str:
        return "<TeamsEhr>"

    async def __aenter__(self) -> Self:
        settings = self.settings
        stack = self._stack
        if self._http is None:
            self._http = await stack.enter_async_context(httpx.AsyncClient(timeout=20.0))
        if self._store is None:
            opened = open_store(
                settings.store_url, encryption_key=settings.encryption_key_bytes(), clock=self.clock
            )
            self._store = await stack.enter_async_context(opened)
        await self.store.migrate()
        self.registry = OrganizationRegistry(self.store, self.clock)
        self.jwks = JwksCache(clock=self.clock, allow_http=settings.allow_http)
        self.discovery = DiscoveryCache(clock=self.clock, allow_http=settings.allow_http)
        enabled = settings.attendance.enabled
        self.services = DefaultOrgServices(
            settings, http=self._http, signers=self._signers, jwks=self.jwks,
            discovery=self.discovery, clock=self.clock,
            launch_stash=self._stash_launch if enabled else None,
        )  # fmt: skip
        if enabled:
            self.attendance = AttendanceRuntime(
                settings, store=self.store, registry=self.registry, http=self._http,
                graph_for_tenant=self.services.graph_client, signers=self._signers,
                clock=self.clock, certificate=self._certificate,
            )  # fmt: skip
        self.joinlinks = JoinLinkService(self.store, self.store, clock=self.clock)
        hosts = TEAMS_HOSTS | settings.microsoft.extra_join_hosts
        self.visits = VisitService(
            store=self.store, registry=self.registry, services=self.services, http=self._http,
            external_id_key=settings.external_id_key_bytes(), joinlinks=self.joinlinks,
            jwks=self.jwks, policy=VisitPolicy(allowed_join_hosts=hosts), clock=self.clock,
            on_meeting_ready=self._meeting_ready,
        )  # fmt: skip
        self.admin = AdminService(
            store=self.store, registry=self.registry, visits=self.visits,
            entra=partial(self.services.entra_config_for, callback_path=ADMIN_CALLBACK),
            jwks=self.jwks, discovery=self.discovery, http=self._http,
            app_base_url=settings.app_base_url, clock=self.clock,
            policy=AdminPolicy(
                administrators=settings.admin.administrators,
                session_ttl=settings.admin.session_ttl, allow_http=settings.allow_http,
            ),
        )  # fmt: skip
        self.visits.on_approval_signin = self.admin.on_approval_signin
        if self.attendance is not None and settings.attendance.workers:
            group = await stack.enter_async_context(anyio.create_task_group())
            stop = anyio.Event()
            stack.callback(stop.set)
            group.start_soon(self.attendance.run, stop)
        return self

    async def _stash_launch(self, session_id: str, target: FhirTarget) -> None:
        if self.attendance is not None:
            await self.attendance.stash_launch_target(session_id, target)

    async def _meeting_ready(self, row: MeetingRow) -> None:
        if self._on_meeting_ready is not None:
            await self._on_meeting_ready(row)
        if self.attendance is not None:
            await self.attendance.on_meeting_ready(row)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    @property
    def store(self) -> Store:
        if self._store is None:
            raise ConfigurationError("use TeamsEhr inside 'async with'", reason="not_open")
        return self._store

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            raise ConfigurationError("use TeamsEhr inside 'async with'", reason="not_open")
        return self._http

    async def metrics_text(self) -> str:
        """The counters of :mod:`teams_ehr.metrics` plus the outbox depth, in the Prometheus
        text format (SPEC E6). Serve it on an operator-only route, never publicly."""
        return await metrics.exposition(self.store)

    def public_jwks(self) -> dict[str, list[dict[str, str]]]:
        """Our public JWK Set (every environment's key), for the JWKS URL (A9)."""
        return {"keys": [s.public_jwk() for s in self._signers.values()]}

"""Assemble the primitives into one runtime a host mounts (docs/guides/integrator.md).

:class:`TeamsEhr` owns the store, the organization registry, the shared caches (discovery, JWKS),
the HTTP client and the visit flows, built once per runtime as :class:`VisitFlows`
(``runtime.visits``); :class:`DefaultOrgServices` builds each organization's SMART client, Entra
sign-in configuration and Graph meeting factory on demand and caches them by the organization's
configuration hash, so an edited organization never reuses stale collaborators. Everything that
talks HTTP uses the one injected :class:`httpx.AsyncClient`; tests and the demo inject a client
whose transport routes to the fakes. With ``settings.attendance.enabled`` the runtime also
assembles the attendance pipeline (:mod:`teams_ehr.attendance.runtime`, docs/guides/attendance.md)
and, with ``workers``, runs its background loops until the runtime closes.

Its parts exist only while it is open (``not_open`` otherwise), and they belong to the event
loop that opened it: the store they share refuses calls from any other loop
(``wrong_event_loop``), because awaiting another loop's connections would hang.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, cast

import httpx

from teams_ehr._types import Clock, utc_now
from teams_ehr.errors import ApprovalRequiredError, ConfigurationError, UsageError

if TYPE_CHECKING:
    # Only for annotations: a host loads these modules when it builds or opens the runtime,
    # not when it imports this one (benchmarks/bench_import.py measures the import).
    from teams_ehr.attendance.fhir_resources import FhirTarget
    from teams_ehr.attendance.notification_crypto import NotificationCertificate
    from teams_ehr.attendance.runtime import AttendanceRuntime
    from teams_ehr.config import SmartSettings, TeamsEhrSettings
    from teams_ehr.keys import Signer
    from teams_ehr.orgs.console import AdminService
    from teams_ehr.orgs.models import EnvironmentName, Organization
    from teams_ehr.orgs.registry import OrganizationRegistry
    from teams_ehr.smart.discovery import DiscoveryCache
    from teams_ehr.smart.flows import AsyncSmartLaunchClient
    from teams_ehr.smart.jwks import JwksCache
    from teams_ehr.store.protocol import MeetingRow, Store
    from teams_ehr.teams.graph_client import GraphClient
    from teams_ehr.teams.meetings import MeetingFactory
    from teams_ehr.teams.signin import EntraAppConfig
    from teams_ehr.visits.approval import ApprovalLaunch
    from teams_ehr.visits.binding import ClinicianBinding
    from teams_ehr.visits.callback import EhrCallback
    from teams_ehr.visits.joinlinks import JoinLinkService
    from teams_ehr.visits.meetings import MeetingReadyHook, VisitMeetings
    from teams_ehr.visits.patient import PatientJoin
    from teams_ehr.visits.provider import ProviderLaunch
    from teams_ehr.visits.records import LaunchRole

__all__ = ["DefaultOrgServices", "TeamsEhr", "VisitFlows", "load_signers"]

MICROSOFT_CALLBACK_PATH = "/microsoft/callback"


class MicrosoftStandIn(Protocol):
    """What the runtime needs of the Microsoft sandbox (``settings.microsoft_sandbox``,
    :mod:`teams_ehr.microsoft_sandbox`): a transport serving Microsoft's hosts, the sandbox
    tenant's administrators, and the open runtime for Graph's webhooks."""

    def transport(self, network: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport: ...

    def administrators(
        self, configured: Mapping[str, frozenset[str]]
    ) -> dict[str, frozenset[str]]: ...

    def attach(self, runtime: TeamsEhr) -> None: ...


def _microsoft_sandbox(settings: TeamsEhrSettings, clock: Clock) -> MicrosoftStandIn:
    """The Microsoft sandbox, loaded by module name (as an entry point would be): it serves the
    package's fakes, which the core never imports (docs/guides/ehr-analyst.md)."""
    module = importlib.import_module("teams_ehr.microsoft_sandbox")
    return cast(MicrosoftStandIn, module.MicrosoftSandbox(settings, clock=clock))


def load_signers(settings: TeamsEhrSettings) -> dict[EnvironmentName, Signer]:
    """Our SMART signing keys per environment, read from the configured PEM files."""
    from teams_ehr.keys import LocalSigner

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
    if role == "approval":  # standalone sign-in that only proves the base URL
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
        from teams_ehr.orgs.models import config_hash

        key = (org.org_id, environment, role, config_hash(org, environment))
        client = self._smart.get(key)
        if client is None:
            from teams_ehr.attendance.visit_state import LaunchCapture
            from teams_ehr.smart.authorize import SmartClientConfig
            from teams_ehr.smart.client_auth import PrivateKeyJwt
            from teams_ehr.smart.flows import AsyncSmartLaunchClient

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
        """Microsoft sign-in at the tenant's own authority, back to ``callback_path``; the code is
        redeemed with the app's certificate when one is configured, else with its secret."""
        from teams_ehr.teams.credentials import CertificateCredential
        from teams_ehr.teams.signin import EntraAppConfig

        microsoft = self._settings.microsoft
        certificate = microsoft.certificate()
        if certificate is None and microsoft.client_secret is None:
            raise ConfigurationError(
                "Microsoft sign-in needs the app's credential: set microsoft.client_secret "
                "(TEAMS_EHR__MICROSOFT__CLIENT_SECRET) or microsoft.certificate_path and "
                "microsoft.private_key_path (docs/guides/microsoft-admin.md)",
                reason="microsoft_credential_missing",
            )
        return EntraAppConfig(
            tenant_id=tenant_id,
            client_id=microsoft.client_id,
            redirect_uri=self._settings.app_base_url + callback_path,
            client_secret=None if certificate else microsoft.client_secret,
            client_auth=CertificateCredential(microsoft.client_id, certificate)
            if certificate
            else None,
            authority_host=microsoft.authority_host,
        )

    def graph_client(self, tenant_id: str) -> GraphClient:
        """App-only Graph for one organization tenant."""
        graph = self._graphs.get(tenant_id)
        if graph is None:
            from teams_ehr.teams.credentials import ClientCredentialsProvider
            from teams_ehr.teams.graph_client import GraphClient

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
            from teams_ehr.attendance.visit_state import VisitKeyCapture
            from teams_ehr.teams.meetings import GraphMeetingFactory

            graph = self.graph_client(org.tenant_id)
            factory = GraphMeetingFactory(graph, external_id_key=self._external_id_key)
            if self._launch_stash is not None:
                factory = VisitKeyCapture(factory)
            self._factories[org.tenant_id] = factory
        return factory


@dataclass(frozen=True, slots=True)
class VisitFlows:
    """``runtime.visits``: the visit flows, one object per person they serve.

    ``provider`` (the clinician's launch), ``patient`` (portal launch, context-aware link, join
    link), ``binding`` (the clinician's one-time Microsoft sign-in), ``approval`` (the standalone
    SMART sign-in of an approval), ``meetings`` (prepare and cancel a visit's meeting) and
    ``callback`` (the SMART ``/callback`` that dispatches to the others).
    """

    provider: ProviderLaunch
    patient: PatientJoin
    binding: ClinicianBinding
    approval: ApprovalLaunch
    meetings: VisitMeetings
    callback: EhrCallback


_NOT_OPEN = (
    "TeamsEhr.{name} exists only while the runtime is open{state}: open it with "
    "'async with runtime:', with lifespan=teams_ehr_lifespan(runtime) (Starlette/FastAPI) or with "
    "FlaskTeamsEhr(runtime).init_app(app) (Flask); see docs/guides/integrator.md"
)
_WRONG_LOOP = (
    "this TeamsEhr runtime was opened on another event loop, which owns its store and HTTP "
    "client: awaiting them from this loop would hang. Call the runtime on the loop that opened "
    "it: from a test, TestClient.portal.call(func, ...); from Flask, FlaskTeamsEhr.call(func, "
    "...); never through a new anyio.run()/asyncio.run(). See docs/sync-async.md"
)


def _running_loop() -> object | None:
    """The event loop running in this thread (asyncio's loop or trio's token), else ``None``."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            token: object = trio.lowlevel.current_trio_token()
        except RuntimeError:
            return None
        return token
    return None


class _LoopBoundStore:
    """The store as the runtime's parts see it: calling any of its methods first checks that
    the caller runs on the event loop that opened the runtime.

    Every entry point (a visit flow, the registry, the console, the attendance pipeline) reaches
    the store before any other loop-bound resource, so one called from another loop raises
    :class:`~teams_ehr.errors.UsageError` (``wrong_event_loop``) at once instead of awaiting a
    future that loop never completes. Reading a method is not checked, only calling it: a
    caller may take ``runtime.store.get_meeting`` on one loop and hand it to the owner's portal.
    """

    __slots__ = ("_owner", "_store")

    def __init__(self, store: Store, owner: object | None) -> None:
        self._store = store
        self._owner = owner

    def __repr__(self) -> str:
        return repr(self._store)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if not callable(value):
            return value
        owner = self._owner

        def checked(*args: Any, **kwargs: Any) -> Any:
            current = _running_loop()
            if current is not None and owner is not None and current is not owner:
                raise UsageError(_WRONG_LOOP, reason="wrong_event_loop")
            return value(*args, **kwargs)

        return checked


@dataclass(slots=True)
class _OpenParts:
    """What exists only while the runtime is open (built by :meth:`TeamsEhr.__aenter__`)."""

    store: Store
    http: httpx.AsyncClient
    registry: OrganizationRegistry
    jwks: JwksCache
    discovery: DiscoveryCache
    services: DefaultOrgServices
    attendance: AttendanceRuntime | None
    joinlinks: JoinLinkService
    visits: VisitFlows
    admin: AdminService
    microsoft_sandbox: MicrosoftStandIn | None = None


class TeamsEhr:
    """The assembled runtime: ``async with TeamsEhr(settings, ...) as app: app.visits...``.

    Open it once, on the event loop that will serve it: ``async with``,
    :func:`~teams_ehr.integrations.starlette.teams_ehr_lifespan` or
    :meth:`FlaskTeamsEhr.init_app <teams_ehr.integrations.flask.FlaskTeamsEhr.init_app>`. While
    it is open it has ``.visits`` (:class:`VisitFlows`), ``.joinlinks``, ``.registry``,
    ``.admin``, ``.attendance``, ``.store``, ``.http``, ``.services``, ``.jwks`` and
    ``.discovery``; before it opens and after it closes each of them raises
    :class:`~teams_ehr.errors.ConfigurationError` (``not_open``). The runtime remembers the loop
    that opened it: its store and HTTP client belong to that loop, so a call from another loop
    raises :class:`~teams_ehr.errors.UsageError` (``wrong_event_loop``) instead of hanging
    (docs/sync-async.md).
    """

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
        self.clock = clock
        if http is not None and None in http.timeout.as_dict().values():
            # reliability case R23 (docs/security.md): every peer call ends, so a stuck EHR
            # never holds a worker.
            raise ConfigurationError("the injected httpx client needs finite timeouts")
        self._http = http
        self._signers = dict(signers) if signers is not None else load_signers(settings)
        self._store = store
        self._on_meeting_ready = on_meeting_ready
        self._stack = AsyncExitStack()
        self._parts: _OpenParts | None = None
        self._closed = False

    def __repr__(self) -> str:
        return "<TeamsEhr>"

    async def __aenter__(self) -> Self:
        if self._parts is not None:
            raise UsageError(
                "this TeamsEhr runtime is already open: open it once, with one lifespan or one "
                "FlaskTeamsEhr (compose other lifespans with compose_lifespans)",
                reason="already_open",
            )
        from teams_ehr._redact import install_redaction

        install_redaction()  # the HTTP clients we drive log URLs (docs/security.md, threat T31)
        try:
            self._parts = await self._open(self._stack, _running_loop())
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def _open(self, stack: AsyncExitStack, loop: object | None) -> _OpenParts:
        # Imported here, not at module level: a host that imports teams_ehr.app loads the flows,
        # the store, the console and the attendance pipeline only when it opens a runtime.
        import anyio

        from teams_ehr.orgs.console import ADMIN_MICROSOFT_CALLBACK_PATH, AdminPolicy, AdminService
        from teams_ehr.orgs.registry import OrganizationRegistry
        from teams_ehr.smart.discovery import DiscoveryCache
        from teams_ehr.smart.jwks import JwksCache
        from teams_ehr.store.factory import open_store
        from teams_ehr.transport import AsyncPinningTransport
        from teams_ehr.visits.joinlinks import JoinLinkService

        settings = self.settings
        sandbox = _microsoft_sandbox(settings, self.clock) if settings.microsoft_sandbox else None
        http = self._http
        if http is None:
            # threat T29: names resolved per request, internal addresses refused;
            # `localhost` only in a loopback development deployment (allow_http)
            transport: httpx.AsyncBaseTransport = AsyncPinningTransport(
                loopback_hosts=["localhost"] if settings.allow_http else []
            )
            if sandbox is not None:  # Microsoft's hosts served in-process, the EHR for real
                transport = sandbox.transport(transport)
            client = httpx.AsyncClient(timeout=20.0, transport=transport)
            http = await stack.enter_async_context(client)
        elif sandbox is not None:
            raise ConfigurationError(
                "microsoft_sandbox serves Microsoft's hosts through the runtime's own HTTP "
                "client: do not inject http= with it (docs/guides/ehr-analyst.md)",
                reason="invalid_settings",
            )
        raw_store: Store
        if self._store is None:
            opened = open_store(
                settings.store_url, encryption_key=settings.encryption_key_bytes(), clock=self.clock
            )
            raw_store = await stack.enter_async_context(opened)
        else:
            raw_store = self._store
        await raw_store.migrate()
        store = cast("Store", _LoopBoundStore(raw_store, loop))
        registry = OrganizationRegistry(store, self.clock)
        jwks = JwksCache(clock=self.clock, allow_http=settings.allow_http)
        discovery = DiscoveryCache(clock=self.clock, allow_http=settings.allow_http)
        enabled = settings.attendance.enabled
        services = DefaultOrgServices(
            settings,
            http=http,
            signers=self._signers,
            jwks=jwks,
            discovery=discovery,
            clock=self.clock,
            launch_stash=self._stash_launch if enabled else None,
        )
        attendance = None
        if enabled:
            from teams_ehr.attendance.runtime import AttendanceRuntime

            attendance = AttendanceRuntime(
                settings,
                store=store,
                registry=registry,
                http=http,
                graph_for_tenant=services.graph_client,
                signers=self._signers,
                clock=self.clock,
                certificate=self._certificate,
            )
        joinlinks = JoinLinkService(store, store, clock=self.clock)
        visits = self._visit_flows(store, registry, services, joinlinks, jwks, http)
        admin = AdminService(
            store=store,
            registry=registry,
            visits=visits.approval,
            entra=partial(services.entra_config_for, callback_path=ADMIN_MICROSOFT_CALLBACK_PATH),
            jwks=jwks,
            discovery=discovery,
            http=http,
            app_base_url=settings.app_base_url,
            clock=self.clock,
            policy=AdminPolicy(
                administrators=settings.admin.administrators
                if sandbox is None
                else sandbox.administrators(settings.admin.administrators),
                session_ttl=settings.admin.session_ttl,
                allow_http=settings.allow_http,
            ),
        )
        visits.approval.on_signin = admin.on_approval_signin
        parts = _OpenParts(
            store=store,
            http=http,
            registry=registry,
            jwks=jwks,
            discovery=discovery,
            services=services,
            attendance=attendance,
            joinlinks=joinlinks,
            visits=visits,
            admin=admin,
            microsoft_sandbox=sandbox,
        )
        if sandbox is not None:
            sandbox.attach(self)
        if attendance is not None and settings.attendance.workers:
            group = await stack.enter_async_context(anyio.create_task_group())
            stop = anyio.Event()
            stack.callback(stop.set)
            group.start_soon(attendance.run, stop)
        return parts

    def _visit_flows(
        self,
        store: Store,
        registry: OrganizationRegistry,
        services: DefaultOrgServices,
        joinlinks: JoinLinkService,
        jwks: JwksCache,
        http: httpx.AsyncClient,
    ) -> VisitFlows:
        from teams_ehr.teams.join_urls import TEAMS_HOSTS
        from teams_ehr.visits.approval import ApprovalLaunch
        from teams_ehr.visits.binding import ClinicianBinding
        from teams_ehr.visits.callback import EhrCallback
        from teams_ehr.visits.launch import EhrLaunch
        from teams_ehr.visits.meetings import VisitMeetings
        from teams_ehr.visits.patient import PatientJoin
        from teams_ehr.visits.policy import VisitPolicy
        from teams_ehr.visits.provider import ProviderLaunch

        clock = self.clock
        hosts = TEAMS_HOSTS | self.settings.microsoft.extra_join_hosts
        policy = VisitPolicy(
            allowed_join_hosts=hosts,
            launch_replay_window=self.settings.smart.launch_replay_window,
        )
        key = self.settings.external_id_key_bytes()
        launch = EhrLaunch(
            store=store, registry=registry, services=services, policy=policy, clock=clock
        )
        meetings = VisitMeetings(
            store=store,
            registry=registry,
            services=services,
            joinlinks=joinlinks,
            external_id_key=key,
            policy=policy,
            on_meeting_ready=self._meeting_ready,
        )
        binding = ClinicianBinding(
            store=store,
            registry=registry,
            services=services,
            meetings=meetings,
            jwks=jwks,
            http=http,
            clock=clock,
        )
        provider = ProviderLaunch(
            launch=launch, binding=binding, meetings=meetings, http=http, clock=clock
        )
        patient = PatientJoin(
            launch=launch,
            store=store,
            registry=registry,
            joinlinks=joinlinks,
            external_id_key=key,
            policy=policy,
            clock=clock,
        )
        approval = ApprovalLaunch(store=store, registry=registry, services=services)
        callback = EhrCallback(
            store=store, provider=provider, patient=patient, approval=approval, clock=clock
        )
        return VisitFlows(
            provider=provider,
            patient=patient,
            binding=binding,
            approval=approval,
            meetings=meetings,
            callback=callback,
        )

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
        try:
            await self._stack.aclose()
        finally:
            self._parts = None
            self._closed = True

    def _opened(self, name: str) -> _OpenParts:
        if self._parts is None:
            state = " (it is closed)" if self._closed else ""
            raise ConfigurationError(_NOT_OPEN.format(name=name, state=state), reason="not_open")
        return self._parts

    @property
    def store(self) -> Store:
        """The store (a view whose calls must come from the runtime's loop). Raises
        :class:`~teams_ehr.errors.ConfigurationError` (``not_open``) unless the runtime is open."""
        return self._opened("store").store

    @property
    def http(self) -> httpx.AsyncClient:
        """The one HTTP client every peer call uses. Raises ``ConfigurationError``
        (``not_open``) unless the runtime is open."""
        return self._opened("http").http

    @property
    def registry(self) -> OrganizationRegistry:
        """The organization registry (docs/guides/ehr-analyst.md). Raises
        ``ConfigurationError`` (``not_open``) unless the runtime is open."""
        return self._opened("registry").registry

    @property
    def jwks(self) -> JwksCache:
        """The shared JWKS cache (EHR and Entra signing keys). Raises ``ConfigurationError``
        (``not_open``) unless the runtime is open."""
        return self._opened("jwks").jwks

    @property
    def discovery(self) -> DiscoveryCache:
        """The shared SMART discovery cache. Raises ``ConfigurationError`` (``not_open``) unless
        the runtime is open."""
        return self._opened("discovery").discovery

    @property
    def services(self) -> DefaultOrgServices:
        """Per-organization SMART clients, Entra configs and Graph clients. Raises
        ``ConfigurationError`` (``not_open``) unless the runtime is open."""
        return self._opened("services").services

    @property
    def attendance(self) -> AttendanceRuntime | None:
        """The attendance pipeline (docs/guides/attendance.md), ``None`` when
        ``settings.attendance.enabled`` is off. Raises ``ConfigurationError`` (``not_open``)
        unless the runtime is open."""
        return self._opened("attendance").attendance

    @property
    def joinlinks(self) -> JoinLinkService:
        """Patient join links (``/j/<token>``). Raises ``ConfigurationError`` (``not_open``)
        unless the runtime is open."""
        return self._opened("joinlinks").joinlinks

    @property
    def visits(self) -> VisitFlows:
        """The visit flows (:class:`VisitFlows`). Raises ``ConfigurationError`` (``not_open``)
        unless the runtime is open."""
        return self._opened("visits").visits

    @property
    def microsoft_sandbox(self) -> MicrosoftStandIn | None:
        """The Microsoft sandbox (:mod:`teams_ehr.microsoft_sandbox`) when
        ``settings.microsoft_sandbox`` is on, else ``None``. Raises ``ConfigurationError``
        (``not_open``) unless the runtime is open."""
        return self._opened("microsoft_sandbox").microsoft_sandbox

    @property
    def admin(self) -> AdminService:
        """The admin console's service, built from ``settings.admin`` (replace it with
        :func:`~teams_ehr.integrations.admin_routes.install_admin`). Raises
        ``ConfigurationError`` (``not_open``) unless the runtime is open."""
        return self._opened("admin").admin

    @admin.setter
    def admin(self, service: AdminService) -> None:
        self._opened("admin").admin = service

    async def metrics_text(self) -> str:
        """The counters of :mod:`teams_ehr.metrics` plus the outbox depth, in the Prometheus
        text format (docs/guides/integrator.md, "Observability"). Serve it on an operator-only
        route, never publicly."""
        from teams_ehr import metrics

        return await metrics.exposition(self.store)

    def public_jwks(self) -> dict[str, list[dict[str, str]]]:
        """Our public JWK Set (every environment's key), for the JWKS URL (RFC 7517)."""
        return {"keys": [s.public_jwk() for s in self._signers.values()]}

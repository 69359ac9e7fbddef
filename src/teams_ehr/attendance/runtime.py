"""The assembled attendance pipeline a :class:`~teams_ehr.app.TeamsEhr` runs (requirements
D1–D7, C6).

Meeting ready (:meth:`AttendanceRuntime.on_meeting_ready`) → the visit's FHIR target is kept, the
clinician's browser session gets a roster grant (requirement D3) and the meeting is queued for its
call-event subscription (one durable row per meeting); the
:class:`~.subscriptions.SubscriptionSetupWorker` creates it off the launch's path through the
tenant's :class:`~.subscriptions.SubscriptionManager` (Graph runs the validation handshake against
our route) and retries until it succeeds or the visit is over. Webhook (:meth:`~AttendanceRuntime.webhook`) → durable inbox
(requirement D1) → :class:`~.inbox_processor.InboxProcessor` → facts, roster bus,
:class:`~.reconcile.OutboxSink` → :class:`~.outbox.OutboxWorker` with the organization's writer
(``EnvironmentConfig.writer``) and backend-services token (requirements D4, D5). Maintenance
renews subscriptions at ⅔ of their lifetime and, ``reconcile_delay`` after ``call_ended`` (or
after the scheduled end if the end was never notified), reconciles with the attendance report,
enqueues the visit note and retires the subscription (requirement D6). Per-visit state lives in
the shared store (requirement C6): the target in the encrypted pending table, grants as hashed
nonces, the subscription setup queue and the handshake windows in their own tables. Launch facts reach the hook through context variables
(:func:`visit_request_scope`, :class:`LaunchCapture`, :class:`VisitKeyCapture`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta

import anyio
import httpx
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from teams_ehr import metrics
from teams_ehr._redact import get_logger
from teams_ehr._types import Clock, utc_now
from teams_ehr.attendance.fhir_resources import FhirTarget
from teams_ehr.attendance.handshake import HandshakeKind, SharedHandshakes, handle_validation
from teams_ehr.attendance.inbox_processor import InboxProcessor
from teams_ehr.attendance.notification_crypto import NotificationCertificate
from teams_ehr.attendance.notifications import LifecycleEnvelope, ParticipantKeyer
from teams_ehr.attendance.outbox import (
    BackendTokenProvider,
    DeadLetter,
    OrgRoute,
    OutboxWorker,
    enqueue_visit_note,
)
from teams_ehr.attendance.reconcile import GraphAttendanceReportSource, OutboxSink, reconcile_visit
from teams_ehr.attendance.roster import stream
from teams_ehr.attendance.subscriptions import (
    SETUP_KEEP,
    SetupReport,
    SubscriptionManager,
    SubscriptionSetupWorker,
)
from teams_ehr.attendance.validation_tokens import GraphValidationTokenVerifier
from teams_ehr.attendance.visit_state import VisitState, current_launch
from teams_ehr.attendance.webhook import WebhookResult, WebhookSecurity, handle_notifications
from teams_ehr.attendance.writers import AttendanceWriter, WriteBackConfig, WriterStrategy
from teams_ehr.config import TeamsEhrSettings
from teams_ehr.errors import ConfigurationError, CrossTenantDeniedError, TeamsEhrError
from teams_ehr.keys import Signer
from teams_ehr.orgs.models import EnvironmentName, Organization, config_hash
from teams_ehr.orgs.registry import OrganizationRegistry
from teams_ehr.smart.client_auth import PrivateKeyJwt
from teams_ehr.smart.jwks import JwksCache
from teams_ehr.smart.tokens import BackendServicesTokenSource, BackendTokenSources
from teams_ehr.store.protocol import (
    AttendanceFactRow,
    MeetingRow,
    SetupCounts,
    Store,
    SubscriptionRow,
)
from teams_ehr.teams.graph_client import GraphClient

__all__ = [
    "LIFECYCLE_PATH",
    "NOTIFICATIONS_PATH",
    "AttendanceRuntime",
    "load_certificate",
]

_log = get_logger(__name__)
PURGE_EVERY = timedelta(hours=1)
"""How often :meth:`AttendanceRuntime.maintain` runs the retention purge (at most)."""
NOTIFICATIONS_PATH = "/graph/notifications"
LIFECYCLE_PATH = "/graph/lifecycle"


def load_certificate(settings: TeamsEhrSettings, clock: Clock) -> NotificationCertificate:
    """The configured notification certificate, or a fresh one (one development instance)."""
    files = settings.attendance.certificate_files()
    if files is None:
        _log.warning("attendance: generated a notification certificate (development only)")
        return NotificationCertificate.generate(clock())
    key = load_pem_private_key(files[1], password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigurationError("the notification key must be RSA", reason="bad_key")
    return NotificationCertificate.from_certificate(files[0], key)


def _participant_secret(settings: TeamsEhrSettings) -> bytes:
    from teams_ehr.config import decode_key

    configured = settings.attendance.participant_key
    if configured is not None:
        return decode_key(configured, name="participant_key")
    material = b"teams-ehr/participant-key"
    return hmac.new(settings.external_id_key_bytes(), material, hashlib.sha256).digest()


def _active_environment(org: Organization) -> EnvironmentName | None:
    if org.production is not None and org.production.state == "active":
        return "production"
    return "test" if org.test is not None and org.test.state == "active" else None


class AttendanceRuntime:
    """Everything attendance needs at run time, for one process (see the module docstring)."""

    def __init__(
        self,
        settings: TeamsEhrSettings,
        *,
        store: Store,
        registry: OrganizationRegistry,
        http: httpx.AsyncClient,
        graph_for_tenant: Callable[[str], GraphClient],
        signers: Mapping[EnvironmentName, Signer],
        clock: Clock = utc_now,
        certificate: NotificationCertificate | None = None,
        worker_id: str | None = None,
    ) -> None:
        self._settings = settings
        self._config = settings.attendance
        self._store = store
        self._registry = registry
        self._http = http
        self._graph_for_tenant = graph_for_tenant
        self._signers = signers
        self._clock = clock
        self.certificate = certificate or load_certificate(settings, clock)
        self.keyer = ParticipantKeyer(_participant_secret(settings))
        self.worker_id = worker_id or f"{socket.gethostname()[:32]}-{secrets.token_hex(4)}"
        self.handshakes = SharedHandshakes(store)
        self.visits = VisitState(store, clock)
        self._purged_at: datetime | None = None
        microsoft = settings.microsoft
        authority = microsoft.authority_host.rstrip("/")
        self.security = WebhookSecurity(
            token_verifier=GraphValidationTokenVerifier(
                app_id=microsoft.client_id,
                jwks=JwksCache(clock=clock, allow_http=settings.allow_http),
                client=http,
                jwks_uri=f"{authority}/common/discovery/v2.0/keys",
                authority_host=authority,
            ),
            decryption_keys=self.certificate.keys(),
            org_tenant=self._org_tenant,
            keyer=self.keyer,
            decrypt_before_ack=self._config.decrypt_before_ack,
        )
        every = WriteBackConfig(strategies=tuple(WriterStrategy))
        self.writers: dict[WriterStrategy, AttendanceWriter] = every.build_writers(clock=clock)
        self._managers: dict[str, SubscriptionManager] = {}
        self._tokens = BackendTokenSources()
        self.processor = InboxProcessor(
            inbox=store,
            facts=store,
            meetings=store,
            bus=store,
            keyer=self.keyer,
            worker=self.worker_id,
            sink=OutboxSink(
                store,
                writers_for_org=self._writers_for_org,
                target_for_visit=self.visits.target_for,
                facts=store,
                clock=clock,
                on_call_ended=self._call_ended,
            ),
            lifecycle=self._lifecycle,
            clock=clock,
            security=self.security,
        )
        self.outbox = OutboxWorker(
            store,
            self._route,
            BackendTokenProvider(self._token_source, http),
            http,
            worker_id=self.worker_id,
            clock=clock,
            max_age=self._config.outbox_max_age,
            permanent_attempts=self._config.permanent_failure_attempts,
            on_dead_letter=self._dead_letter,
        )
        self.setups = SubscriptionSetupWorker(
            store,
            create=self._create_subscription,
            discard=self._discard_subscription,
            visit_over=self._setup_over,
            abandoned=self._setup_abandoned,
            worker_id=self.worker_id,
            clock=clock,
        )
        self._workers_running = False
        self._setup_due = anyio.Event()

    def __repr__(self) -> str:
        return "<AttendanceRuntime>"

    # -- organizations --------------------------------------------------------------------------

    async def _org(self, org_id: str) -> Organization:
        org = await self._registry.get(org_id)
        if org is None:
            raise ConfigurationError("the organization is not active", reason="org_inactive")
        return org

    async def _org_tenant(self, org_id: str) -> str | None:
        org = await self._registry.get(org_id)
        return None if org is None else org.tenant_id

    async def _environment(self, org_id: str) -> tuple[Organization, EnvironmentName]:
        org = await self._org(org_id)
        name = _active_environment(org)
        if name is None:
            raise ConfigurationError(
                "the organization has no active environment", reason="org_inactive"
            )
        return org, name

    async def _writers_for_org(self, org_id: str) -> Sequence[AttendanceWriter]:
        org, name = await self._environment(org_id)
        env = org.environment(name)
        strategy = env.config.writer if env is not None else ""
        try:
            return [self.writers[WriterStrategy(strategy)]]
        except ValueError:
            raise ConfigurationError("unknown attendance writer", reason="bad_writer") from None

    async def _route(self, org_id: str, strategy: WriterStrategy) -> OrgRoute:
        org, name = await self._environment(org_id)
        env = org.environment(name)
        if env is None:  # pragma: no cover - _environment returned an active one
            raise ConfigurationError("no environment", reason="org_inactive")
        return OrgRoute(self.writers[strategy], env.config.fhir_base)

    async def _token_source(self, org_id: str) -> BackendServicesTokenSource:
        org, name = await self._environment(org_id)

        async def create() -> BackendServicesTokenSource:
            env = org.environment(name)
            snapshot = await self._registry.approved_snapshot(org_id, name)
            signer = self._signers.get(name)
            if env is None or snapshot is None or signer is None:
                raise ConfigurationError("no backend-services client", reason="no_backend_client")
            auth = PrivateKeyJwt(env.config.client_id, signer)
            return BackendServicesTokenSource(
                snapshot.token_endpoint, auth, self._config.backend_scopes, clock=self._clock
            )

        # one source per organization configuration, created once however many write-backs race
        return await self._tokens.get((org_id, config_hash(org, name)), create)

    async def _dead_letter(self, letter: DeadLetter) -> None:
        metrics.record_dead_letter(len(letter.item_ids), reason=letter.reason)
        _log.error(
            "attendance rows dead-lettered (org %s, %s, %d rows)",
            letter.org_id,
            letter.reason,
            len(letter.item_ids),
            extra={"alert": "attendance_dead_letter"},
        )

    def manager(self, tenant_id: str) -> SubscriptionManager:
        """The subscription manager of one organization tenant (app-only Graph per tenant)."""
        manager = self._managers.get(tenant_id)
        if manager is None:
            base = self._settings.app_base_url
            manager = SubscriptionManager(
                self._graph_for_tenant(tenant_id),
                self._store,
                self.handshakes,
                notification_url=base + NOTIFICATIONS_PATH,
                lifecycle_url=base + LIFECYCLE_PATH,
                certificate=self.certificate,
                meetings=self._store,
                clock=self._clock,
                reconcile=self._reconcile_now,
            )
            self._managers[tenant_id] = manager
        return manager

    async def stash_launch_target(self, session_id: str, target: FhirTarget) -> None:
        await self.visits.stash_launch_target(session_id, target)

    async def on_meeting_ready(self, row: MeetingRow) -> None:
        """Target, roster grant and (once per meeting) the call-event subscription; a failure
        is an alert, never a failed visit (reconciliation still fills attendance in)."""
        try:
            session, target, key = current_launch()
            if target is None and session is not None:
                target = await self.visits.launch_target(session)
            if target is None:
                encounter = key if key is not None and key.startswith("Encounter/") else None
                target = FhirTarget(encounter=encounter)
            await self.visits.remember_target(row, target)
            if session is not None:
                await self.visits.grant_roster(session, row, self._config.roster_grant_margin)
            if row.state == "active" and await self.setups.request(row):
                if self._workers_running:
                    self._setup_due.set()  # the setup loop takes it at once, off this launch
                else:  # no background loops in this process (tests, demo): one attempt now
                    await self.setups.run_once()
        except TeamsEhrError as exc:
            _log.error(
                "attendance setup failed (%s)", exc.reason, extra={"alert": "attendance_setup"}
            )

    async def _create_subscription(self, row: MeetingRow) -> SubscriptionRow:
        org = await self._org(row.org_id)
        return await self.manager(org.tenant_id).create(row)

    async def _discard_subscription(self, row: SubscriptionRow) -> None:
        tenant = await self._org_tenant(row.org_id)
        if tenant is not None:
            await self.manager(tenant).discard(row)

    async def _setup_over(self, row: MeetingRow, now: datetime) -> bool:
        """A visit without a subscription has no facts: it is over ``reconcile_delay`` after
        its scheduled end (as :meth:`_visit_over` decides for a silent visit)."""
        return await self._visit_over(row.org_id, row.external_id, now)

    async def _setup_abandoned(self, row: MeetingRow, reason: str) -> None:
        """A visit over without a subscription: its attendance report still fills the facts
        in and the note is written (the final reconciliation maintenance runs for the others)."""
        try:
            await self.reconcile(row.org_id, row.external_id)
        except TeamsEhrError as exc:
            _log.error(
                "reconciliation of a visit without subscription failed (%s)",
                exc.reason,
                extra={"alert": "attendance_setup_abandoned"},
            )

    async def setup_subscriptions(self) -> SetupReport:
        """One pass of the subscription setup queue (the background loop's step)."""
        return await self.setups.run_once()

    async def settle_subscriptions(self, *, timeout: float = 30.0) -> SetupCounts:
        """Work the setup queue until no setup is pending or leased, or ``timeout`` seconds
        have passed; returns the counts per state (tests, benchmarks, the CLI). Safe beside
        the background loop: setups are leased, so each is worked on once."""
        with anyio.move_on_after(timeout):
            while True:
                report = await self.setups.run_once()
                counts = await self._store.subscription_setup_counts()
                if counts["pending"] + counts["leased"] == 0:
                    return counts
                if report.leased == 0:
                    await anyio.sleep(0.01)
        return await self._store.subscription_setup_counts()

    # -- HTTP entry points ------------------------------------------------------------------------

    async def webhook(
        self, kind: HandshakeKind, query: Mapping[str, str], body: bytes
    ) -> WebhookResult:
        """A POST (or GET) on a Graph webhook route: the handshake, or notifications."""
        now = self._clock()
        if "validationToken" in query:
            return await handle_validation(query, handshakes=self.handshakes, kind=kind, now=now)
        result = await handle_notifications(
            body, security=self.security, inbox=self._store, subscriptions=self._store, now=now
        )
        metrics.record_notification("accepted", result.accepted)
        if result.status >= 500:
            metrics.record_notification("error", max(1, len(result.rejected)))
        else:
            metrics.record_notification("rejected", len(result.rejected))
            for reason in result.rejected:
                metrics.record_security_refusal(reason)
        return result

    async def roster(self, org_id: str, external_id: str, session_id: str) -> AsyncIterator[bytes]:
        """The visit's SSE roster for the clinician whose browser session was granted it."""
        meeting = await self._store.get_meeting(org_id, external_id)
        if meeting is None:
            raise CrossTenantDeniedError("no such visit", reason="roster_forbidden")

        async def authorize(org: str, external: str, viewer: str) -> bool:
            return await self.visits.may_watch(session_id, org, external, viewer)

        return await stream(
            self._store,
            org_id=org_id,
            external_id=external_id,
            viewer_oid=meeting.organizer_oid,
            authorize=authorize,
            facts=self._store,
            heartbeat_seconds=self._config.roster_heartbeat.total_seconds(),
        )

    # -- lifecycle and reconciliation (requirements D1, D6) -------------------------------------

    async def _lifecycle(self, envelope: LifecycleEnvelope) -> None:
        org = await self._org(envelope.org_id)
        await self.manager(org.tenant_id).handle_lifecycle(envelope)

    async def _reconcile_now(self, org_id: str, external_id: str, reason: str) -> None:
        """``missed`` / re-created subscription mid-visit: fill the per-fact gaps now; the note
        waits for the final reconciliation."""
        await self.reconcile(org_id, external_id, final=False)

    async def _call_ended(self, org_id: str, external_id: str, at: datetime) -> None:
        """With ``reconcile_delay`` zero (demos, or EHRs that want the note at once) the final
        reconciliation runs as soon as the end is notified; otherwise maintenance runs it."""
        if self._config.reconcile_delay <= timedelta(0):
            await self.reconcile(org_id, external_id)

    async def reconcile(self, org_id: str, external_id: str, *, final: bool = True) -> int:
        """Reconcile one visit with its attendance report; ``final`` adds the per-visit note.
        Returns how many outbox rows were new."""
        org = await self._org(org_id)
        meeting = await self._store.get_meeting(org_id, external_id)
        target = await self.visits.target_for(org_id, external_id)
        if meeting is None or target is None:
            return 0
        writers = await self._writers_for_org(org_id)
        if not final:
            writers = [w for w in writers if not w.strategy.per_visit]
        source = GraphAttendanceReportSource(
            self._graph_for_tenant(org.tenant_id),
            self._store,
            self.keyer,
            tenant_for_org=self._tenant_of,
        )
        now = self._clock()
        try:
            result = await reconcile_visit(
                org_id=org_id,
                external_id=external_id,
                source=source,
                facts=self._store,
                outbox=self._store,
                target=target,
                writers=writers,
                now=now,
                department=meeting.department,
            )
            return result.enqueued
        except TeamsEhrError as exc:  # no report (yet): the note still covers what we know
            _log.warning("attendance report unavailable (%s)", exc.reason)
            facts = await self._store.list_facts(org_id, external_id)
            new = 0
            for writer in writers:
                if writer.strategy.per_visit:
                    new += await enqueue_visit_note(
                        self._store, facts, target=target, now=now, strategy=writer.strategy
                    )
            return new

    async def _tenant_of(self, org_id: str) -> str:
        return (await self._org(org_id)).tenant_id

    async def maintain(self) -> None:
        """Queue the subscription of any live meeting left without one (a launch that died
        midway), reconcile and retire visits that are over, renew the others at ⅔ of their
        lifetime (reliability case R19) through their own tenant's manager. A failing visit never stops
        the others. At most once per :data:`PURGE_EVERY`, purge what retention allows
        (:meth:`purge`)."""
        now = self._clock()
        await self._queue_missing_setups(now)
        rows = await self._store.list_subscriptions_expiring(now + timedelta(days=365))
        for row in rows:
            tenant = await self._org_tenant(row.org_id) if row.state == "active" else None
            if tenant is None:
                continue
            try:
                await self._maintain_one(row, tenant, now)
            except TeamsEhrError as exc:
                _log.error(
                    "attendance maintenance of a visit failed (%s); will retry",
                    exc.reason,
                    extra={"alert": "attendance_maintenance"},
                )
        if self._purged_at is None or now - self._purged_at >= PURGE_EVERY:
            await self.purge(now)
            self._purged_at = now

    async def _queue_missing_setups(self, now: datetime) -> None:
        """Queue the subscription of every live meeting that has no setup and no subscription
        (its launch died between storing the meeting and queueing it)."""
        try:
            queued = await self._store.request_missing_subscription_setups(
                now=now, ended_after=now - self._config.reconcile_delay, keep_for=SETUP_KEEP
            )
        except TeamsEhrError as exc:
            _log.warning("sweep for meetings without subscription setup failed (%s)", exc.reason)
            return
        if queued:
            _log.warning(
                "attendance: %d meetings had no subscription setup; queued",
                queued,
                extra={"alert": "attendance_setup_missing"},
            )
            self._setup_due.set()

    async def purge(self, now: datetime) -> dict[str, int]:
        """Delete processed inbox rows, delivered and dead outbox rows past their retention
        (``inbox_retention``, ``delivered_retention``, ``dead_letter_retention``) and expired
        launch state and nonces (invariant I6; ``Store.purge_expired``)."""
        config = self._config
        counts = await self._store.purge_expired(
            now=now,
            inbox_keep=config.inbox_retention,
            outbox_keep=config.delivered_retention,
            dead_keep=config.dead_letter_retention,
        )
        counts = {
            **counts,
            "subscription_setups": await self._store.purge_subscription_setups(now=now),
        }
        if any(counts.values()):
            _log.info("retention purge: %s", ", ".join(f"{k}={n}" for k, n in counts.items()))
        return counts

    async def _maintain_one(self, row: SubscriptionRow, tenant: str, now: datetime) -> None:
        manager = self.manager(tenant)
        if await self._visit_over(row.org_id, row.external_id, now):
            await self.reconcile(row.org_id, row.external_id)
            await self._store.put_subscription(_removed(row))
            try:
                graph = self._graph_for_tenant(tenant)
                await graph.delete_subscription(row.subscription_id, api_version="beta")
            except TeamsEhrError as exc:
                _log.info("ended visit's subscription not deleted (%s)", exc.reason)
        elif row.expires_at <= now:
            await manager.recreate(row)
        elif row.expires_at <= now + manager.lifetime / 3:
            await manager.renew(row)

    async def _visit_over(self, org_id: str, external_id: str, now: datetime) -> bool:
        delay = self._config.reconcile_delay
        facts = await self._store.list_facts(org_id, external_id)
        ended = [f.at for f in facts if f.kind == "call_ended"]
        if ended and max(ended) + delay <= now:
            return True
        meeting = await self._store.get_meeting(org_id, external_id)
        return meeting is not None and meeting.end + delay <= now and not _in_call(facts)

    # -- background work --------------------------------------------------------------------------

    async def run(self, stop: anyio.Event) -> None:
        """Inbox processor, outbox worker, subscription setup and maintenance until ``stop``."""
        poll = self._config.poll_interval.total_seconds()
        self._workers_running = True
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(lambda: self.processor.run(stop=stop, poll_seconds=poll))
                group.start_soon(self._loop, stop, self.outbox.run_once, poll)
                group.start_soon(self._setup_loop, stop, poll)
                group.start_soon(self._loop, stop, self.maintain, self._config.renewal_interval)
        finally:
            self._workers_running = False

    async def _setup_loop(self, stop: anyio.Event, poll: float) -> None:
        """Work the setup queue; when idle, wait ``poll`` or until a launch queues a meeting."""

        async def step() -> bool:
            self._setup_due = anyio.Event()
            return (await self.setups.run_once()).leased > 0

        async def idle() -> None:
            async with anyio.create_task_group() as group:

                async def first(event: anyio.Event) -> None:
                    await event.wait()
                    group.cancel_scope.cancel()

                group.start_soon(first, stop)
                group.start_soon(first, self._setup_due)

        await self._loop(stop, step, poll, idle=idle)

    async def _loop(
        self,
        stop: anyio.Event,
        step: Callable[[], Awaitable[object]],
        every: float | timedelta,
        *,
        idle: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Run ``step`` until ``stop``; after an idle or failed step wait ``every`` (or less,
        if ``idle`` returns first). A failure (the store or an EHR being down) is logged and
        retried, never ends the loop."""
        wait = every.total_seconds() if isinstance(every, timedelta) else every
        while not stop.is_set():
            try:
                busy = bool(await step())
            except Exception as exc:
                _log.warning(
                    "attendance loop step failed (%s)", getattr(exc, "reason", type(exc).__name__)
                )
                busy = False
            if not busy:
                with anyio.move_on_after(wait):
                    await (idle or stop.wait)()

    async def drain(self, *, rounds: int = 10) -> None:
        """Work due subscription setups, process the inbox and deliver the outbox until all
        three are idle (tests, CLI, demo)."""
        for _ in range(rounds):
            setups = await self.setups.run_once()
            report = await self.processor.run_once()
            leased = await self.outbox.run_once()
            if setups.leased == 0 and report.claimed == 0 and leased == 0:
                return


def _removed(row: SubscriptionRow) -> SubscriptionRow:
    return dataclasses.replace(row, state="removed")


def _in_call(facts: Sequence[AttendanceFactRow]) -> bool:
    """Someone connected and not disconnected yet (the visit overran its slot)."""
    balance: dict[str, int] = {}
    for fact in facts:
        if fact.kind in ("connected", "disconnected"):
            step = 1 if fact.kind == "connected" else -1
            balance[fact.participant_key] = balance.get(fact.participant_key, 0) + step
    return any(v > 0 for v in balance.values()) and not any(f.kind == "call_ended" for f in facts)

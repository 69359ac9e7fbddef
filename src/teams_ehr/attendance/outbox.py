"""The durable attendance outbox: enqueue facts, deliver them to the EHR.

Facts are enqueued as minimal JSON payloads (:class:`~.writers.models.AttendanceDelivery`: keys,
kinds, roles and times, no names) keyed by ``strategy/fact_key`` (or ``strategy/note key`` for
per-visit notes), so a redelivered notification never adds a row. :class:`OutboxWorker` leases
due rows, gets the organization's backend-services token (SMART Backend Services,
https://hl7.org/fhir/smart-app-launch/backend-services.html), runs the organization's
:class:`~.writers.base.AttendanceWriter` flow and marks the row. Guarantees
(docs/security.md#delivery-invariants):

* **Effectively once** (invariant I3) — writes are idempotent (conditional create or
  search-then-create), so a crash after the FHIR 2xx and before ``mark_delivered`` re-delivers
  into "existing".
* **Outage tolerance** (invariant I4) — :class:`~teams_ehr.errors.FhirUnavailableError`,
  timeouts and transport errors reschedule with exponential backoff and jitter, never before
  ``Retry-After`` and at most ``backoff.cap`` apart. A row older than ``max_age`` (72 h) is
  dead-lettered ``expired`` once it has been tried (``attempts`` counts leases, so a row first
  leased after a long worker outage still gets one attempt). 4xx poison (400, 403, 404, 405,
  422, and 412 ``duplicate_identifier``) and misuse (``missing_target``,
  ``writer_strategy_mismatch``) are dead-lettered at once with their reason; 401 gets one fresh
  token and one retry. A token endpoint's permanent refusal (RFC 6749 §5.2 4xx:
  ``invalid_client``, ``invalid_request`` …, see :func:`oauth_failure`) is retried with backoff
  until the row has been tried ``permanent_attempts`` times (3), then dead-lettered
  ``oauth_<error>``; transient token errors (5xx, 429, ``temporarily_unavailable``) keep
  retrying until ``max_age``.
* **No silent loss** (invariant I2) — every dead letter fires ``on_dead_letter`` exactly once
  (expired rows are grouped per organization and alerted once per outage); a lost lease changes
  nothing.
* **Crash safety** (invariant I5) — named crash points (:data:`CRASH_POINTS`) let tests kill the
  worker and restart a fresh one on the same store.
"""

from __future__ import annotations

import inspect
import random
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import anyio
import httpx
from pydantic import SecretStr, ValidationError

from teams_ehr._concurrency import KeyedLocks
from teams_ehr._redact import get_logger
from teams_ehr._types import Clock, utc_now
from teams_ehr.attendance.fhir_resources import FhirTarget
from teams_ehr.attendance.reports import AttendanceFactLike
from teams_ehr.attendance.writers.base import WRITE_LOCKS, AttendanceWriter, write_lock_name
from teams_ehr.attendance.writers.models import AttendanceDelivery, WriteOutcome, WriterStrategy
from teams_ehr.errors import (
    FhirError,
    FhirUnavailableError,
    OAuthError,
    RemoteError,
    StorageError,
    UsageError,
)
from teams_ehr.sansio import run_async
from teams_ehr.store.protocol import OutboxItem, OutboxStore

__all__ = [
    "CRASH_POINTS",
    "Backoff",
    "BackendTokenProvider",
    "BackendTokenSource",
    "DeadLetter",
    "OrgRoute",
    "OrgTokenProvider",
    "OutboxWorker",
    "enqueue_attendance",
    "enqueue_visit_note",
    "oauth_failure",
]

log = get_logger(__name__)

CRASH_POINTS = ("after_lease", "after_fhir_2xx_before_mark", "after_mark")
_SYSTEM_RANDOM = random.SystemRandom()


async def enqueue_attendance(
    outbox: OutboxStore,
    events: Sequence[AttendanceFactLike],
    *,
    target: FhirTarget,
    writers: Sequence[AttendanceWriter],
    now: datetime,
) -> int:
    """Enqueue one row per (per-fact writer, accepted event); returns how many were new."""
    items = []
    for writer in writers:
        if writer.strategy.per_visit:
            continue
        for event in events:
            if not writer.accepts(str(event.kind)):
                continue
            delivery = AttendanceDelivery.of(writer.strategy, [event], target=target)
            items.append(_item(delivery, now, now))
    return await outbox.enqueue_outbox(items) if items else 0


async def enqueue_visit_note(
    outbox: OutboxStore,
    facts: Sequence[AttendanceFactLike],
    *,
    target: FhirTarget,
    now: datetime,
    not_before: datetime | None = None,
    strategy: WriterStrategy = WriterStrategy.EPIC_CLINICAL_NOTE,
) -> int:
    """Enqueue the per-visit note of ``facts`` (call after ``call_ended`` / reconciliation).
    The same fact set is the same row and the same note; returns 1 if new."""
    if not facts:
        return 0
    delivery = AttendanceDelivery.of(strategy, facts, target=target)
    return await outbox.enqueue_outbox([_item(delivery, not_before or now, now)])


def _item(delivery: AttendanceDelivery, not_before: datetime, now: datetime) -> OutboxItem:
    return OutboxItem(
        org_id=delivery.org_id,
        idempotency_key=delivery.idempotency_key,
        kind=delivery.strategy.value,
        payload=delivery.to_payload(),
        not_before=not_before,
        created_at=now,
    )


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with equal jitter: ``d = min(cap, base·2^attempts)``, wait in
    ``[d/2, d]``; never before the server's ``Retry-After``."""

    base: timedelta = timedelta(seconds=5)
    cap: timedelta = timedelta(minutes=10)
    jitter: Callable[[], float] = _SYSTEM_RANDOM.random

    def next_at(self, attempts: int, now: datetime, retry_at: datetime | None = None) -> datetime:
        delay = min(self.cap, self.base * int(2 ** min(attempts, 32)))
        at = now + delay / 2 + (delay / 2) * min(max(self.jitter(), 0.0), 1.0)
        return max(at, retry_at) if retry_at is not None else at


@dataclass(frozen=True)
class OrgRoute:
    """Where an organization's rows of one strategy go."""

    writer: AttendanceWriter
    fhir_base: str


class OrgTokenProvider(Protocol):
    """The organization's backend-services access token (``force_refresh`` after a 401)."""

    def __call__(self, org_id: str, *, force_refresh: bool = False) -> Awaitable[SecretStr]: ...


class BackendTokenSource(Protocol):
    """What :class:`~teams_ehr.smart.tokens.BackendServicesTokenSource` offers."""

    async def get_token(self, client: httpx.AsyncClient) -> SecretStr: ...

    def invalidate(self) -> None: ...


class BackendTokenProvider:
    """An :class:`OrgTokenProvider` over one backend-services token source per organization
    (SMART Backend Services): cached tokens, ``invalidate`` after a 401."""

    def __init__(
        self,
        source_for_org: Callable[[str], Awaitable[BackendTokenSource]],
        client: httpx.AsyncClient,
    ) -> None:
        self._source_for_org = source_for_org
        self._client = client

    async def __call__(self, org_id: str, *, force_refresh: bool = False) -> SecretStr:
        source = await self._source_for_org(org_id)
        if force_refresh:
            source.invalidate()
        return await source.get_token(self._client)


_OAUTH_TRANSIENT = frozenset({"temporarily_unavailable", "server_error"})


def oauth_failure(exc: OAuthError) -> tuple[str, bool]:
    """The outbox reason code of a token endpoint's refusal, and whether it is permanent.

    RFC 6749 §5.2: a 4xx error response (``invalid_request``, ``invalid_client``,
    ``invalid_grant``, ``unauthorized_client``, ``invalid_scope`` …) means our request or our
    registration is wrong, so retrying cannot help until someone fixes it; 408, 429, 5xx,
    ``temporarily_unavailable`` and ``server_error`` are transient.
    """
    code = re.sub(r"[^a-z0-9_]", "_", exc.error.lower())[:48] or "error"
    status = exc.status_code
    permanent = (
        status is not None
        and 400 <= status < 500
        and status not in (408, 429)
        and exc.error not in _OAUTH_TRANSIENT
    )
    return f"oauth_{code}", permanent


@dataclass(frozen=True)
class DeadLetter:
    """The alert for dead-lettered rows: ids, organization, strategy and reason, no PHI."""

    org_id: str
    reason: str
    strategy: str
    item_ids: tuple[int, ...]


@dataclass
class WorkerStats:
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    lost_leases: int = 0


class _Crash(Protocol):
    def __call__(self, point: str) -> None: ...


@dataclass
class OutboxWorker:
    """Delivers outbox rows; any number of workers may share one store (leases)."""

    store: OutboxStore
    writer_for_org: Callable[[str, WriterStrategy], Awaitable[OrgRoute]]
    token_for_org: OrgTokenProvider
    http: httpx.AsyncClient
    worker_id: str = "worker"
    clock: Clock = utc_now
    backoff: Backoff = field(default_factory=Backoff)
    max_age: timedelta = timedelta(hours=72)
    permanent_attempts: int = 3
    on_dead_letter: Callable[[DeadLetter], Awaitable[None] | None] | None = None
    lease_for: timedelta = timedelta(minutes=2)
    batch_size: int = 50
    concurrency: int = 8
    crash_hook: _Crash | None = None
    locks: KeyedLocks = field(default_factory=lambda: WRITE_LOCKS)
    stats: WorkerStats = field(default_factory=WorkerStats, init=False)
    _expired_alerted: set[str] = field(default_factory=set, init=False, repr=False)

    def _crash_point(self, point: str) -> None:
        if self.crash_hook is not None:
            self.crash_hook(point)

    async def run(self, stop: anyio.Event, *, idle: float = 1.0) -> None:
        """Deliver until ``stop`` is set, waiting ``idle`` seconds when nothing is due."""
        while not stop.is_set():
            if await self.run_once() == 0:
                with anyio.move_on_after(idle):
                    await stop.wait()

    async def run_once(self) -> int:
        """Lease one batch and process it; returns the number of rows leased."""
        now = self.clock()
        items = await self.store.lease_outbox(
            worker=self.worker_id, limit=self.batch_size, now=now, lease_until=now + self.lease_for
        )
        if not items:
            return 0
        self._crash_point("after_lease")
        expired: dict[tuple[str, str], list[int]] = defaultdict(list)
        limiter = anyio.CapacityLimiter(max(1, self.concurrency))
        async with anyio.create_task_group() as group:
            for item in items:
                group.start_soon(self._process, item, limiter, expired)
        for (org_id, strategy), ids in expired.items():
            if org_id not in self._expired_alerted:
                self._expired_alerted.add(org_id)
                await self._alert(DeadLetter(org_id, "expired", strategy, tuple(ids)))
        return len(items)

    async def _process(
        self,
        item: OutboxItem,
        limiter: anyio.CapacityLimiter,
        expired: dict[tuple[str, str], list[int]],
    ) -> None:
        item_id = item.item_id
        if item_id is None:
            return
        now = self.clock()
        if now >= item.created_at + self.max_age and item.attempts > 1:
            if await self._mark_dead(item_id, "expired"):
                expired[(item.org_id, item.kind)].append(item_id)
            return
        try:
            delivery = AttendanceDelivery.from_payload(item.payload)
        except ValidationError:
            await self._dead_and_alert(item, "bad_payload")
            return
        async with limiter:
            try:
                await self._deliver(item, delivery)
            except FhirUnavailableError as exc:
                await self._retry(item, f"fhir_unavailable_{exc.status_code or 0}", exc.retry_at)
            except FhirError as exc:
                await self._dead_and_alert(item, exc.reason)
            except UsageError as exc:  # missing target, bad configuration: needs a human
                await self._dead_and_alert(item, exc.reason)
            except OAuthError as exc:  # the token endpoint refused or is down
                reason, permanent = oauth_failure(exc)
                if permanent and item.attempts >= self.permanent_attempts:
                    await self._dead_and_alert(item, reason)
                else:
                    await self._retry(item, reason, None)
            except RemoteError as exc:  # transport, token endpoint down
                await self._retry(item, exc.reason, None)
            except TimeoutError:
                await self._retry(item, "timeout", None)
            except StorageError as exc:
                log.warning(
                    "outbox row %s: store failed (%s); the lease will expire", item_id, exc.reason
                )
            except Exception:  # a bug must not stop the worker; the row retries, then expires
                log.exception("outbox row %s: unexpected error", item_id)
                await self._retry(item, "internal_error", None)

    async def _deliver(self, item: OutboxItem, delivery: AttendanceDelivery) -> None:
        route = await self.writer_for_org(item.org_id, delivery.strategy)
        await self._write(item, delivery, route)
        self._crash_point("after_fhir_2xx_before_mark")
        if await self.store.mark_delivered(item.item_id or 0, worker=self.worker_id):
            self.stats.delivered += 1
            self._expired_alerted.discard(item.org_id)
        else:
            self.stats.lost_leases += 1
        self._crash_point("after_mark")

    async def _write(
        self, item: OutboxItem, delivery: AttendanceDelivery, route: OrgRoute
    ) -> WriteOutcome:
        budget = self.lease_for.total_seconds() * 0.8  # give up well before the lease ends
        lock_key = route.writer.lock_key(delivery)
        async with AsyncExitStack() as stack:
            if lock_key is not None:
                await stack.enter_async_context(
                    self.locks.hold(write_lock_name(route.fhir_base, lock_key))
                )
            with anyio.fail_after(budget):
                token = await self.token_for_org(item.org_id)
                try:
                    return await self._run(route, delivery, token)
                except FhirError as exc:
                    if exc.reason != "fhir_unauthorized":
                        raise
                token = await self.token_for_org(item.org_id, force_refresh=True)
                return await self._run(route, delivery, token)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _run(
        self, route: OrgRoute, delivery: AttendanceDelivery, token: SecretStr
    ) -> WriteOutcome:
        flow = route.writer.write_flow(delivery, fhir_base=route.fhir_base, access_token=token)
        return await run_async(flow, self.http)

    async def _retry(self, item: OutboxItem, reason: str, retry_at: datetime | None) -> None:
        now = self.clock()
        at = self.backoff.next_at(max(item.attempts - 1, 0), now, retry_at)
        at = min(at, item.created_at + self.max_age)  # the row comes back to expire on time
        if await self.store.mark_retry(
            item.item_id or 0, worker=self.worker_id, not_before=at, reason=reason
        ):
            self.stats.retried += 1
        else:
            self.stats.lost_leases += 1

    async def _mark_dead(self, item_id: int, reason: str) -> bool:
        if await self.store.mark_dead(item_id, worker=self.worker_id, reason=reason):
            self.stats.dead += 1
            log.warning("outbox row %s dead-lettered: %s", item_id, reason)
            return True
        self.stats.lost_leases += 1
        return False

    async def _dead_and_alert(self, item: OutboxItem, reason: str) -> None:
        if await self._mark_dead(item.item_id or 0, reason):
            await self._alert(DeadLetter(item.org_id, reason, item.kind, (item.item_id or 0,)))

    async def _alert(self, letter: DeadLetter) -> None:
        if self.on_dead_letter is None:
            return
        try:
            result = self.on_dead_letter(letter)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("dead-letter alert failed for %d rows", len(letter.item_ids))

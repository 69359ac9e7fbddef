"""Per-visit attendance state shared by every instance, and the launch facts it comes from
(requirements D3, D4, C6).

What the attendance runtime must know about a visit besides its meeting row:

* its **FHIR target** (``Encounter``/``Patient`` references from the SMART launch context): kept
  in the pending table, which the store encrypts at rest, for the meeting's time plus three
  days; read by taking and putting back (a concurrent reader retries);
* the **roster grants** (requirement D3: "per organization, meeting and clinician"): a nonce
  keyed by a hash of (browser session, organization, meeting, organizer), valid until the
  meeting ends plus a margin; checked with a probe that only ever leaves an already-expired
  row behind;
* whether the meeting is **subscribed** already (a nonce, so a repeat launch does not ask Graph
  again).

The launch facts reach the meeting-ready hook through context variables, because the visit flow
hands the hook only the stored :class:`~teams_ehr.store.protocol.MeetingRow`: the route layer
names the browser session (:func:`visit_request_scope`), :class:`LaunchCapture` the launch's
encounter and patient (and stashes them for the first Microsoft sign-in hop, which is another
request), :class:`VisitKeyCapture` the visit key of the meeting being ensured.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import Any

import anyio

from teams_ehr._types import Clock
from teams_ehr.attendance.fhir_resources import FhirTarget
from teams_ehr.smart.flows import AsyncSmartLaunchClient, LaunchResult
from teams_ehr.store.protocol import MeetingRow, Store
from teams_ehr.teams.meetings import Meeting, MeetingFactory, MeetingRequest

__all__ = [
    "LaunchCapture",
    "VisitKeyCapture",
    "VisitState",
    "current_launch",
    "visit_request_scope",
]

_GRANTS = "roster_grant"
_TARGET_TTL = timedelta(days=3)
_LAUNCH_TTL = timedelta(minutes=10)
_CACHE_FOR = timedelta(minutes=5)
_CACHE_SIZE = 4096

_session: ContextVar[str | None] = ContextVar("teams_ehr_visit_session", default=None)
_launch_target: ContextVar[FhirTarget | None] = ContextVar("teams_ehr_launch", default=None)
_visit_key: ContextVar[str | None] = ContextVar("teams_ehr_visit_key", default=None)


@contextmanager
def visit_request_scope(session_id: str) -> Iterator[None]:
    """Name the browser session of the request being served (the route layer sets it)."""
    token = _session.set(session_id)
    try:
        yield
    finally:
        _session.reset(token)


def current_launch() -> tuple[str | None, FhirTarget | None, str | None]:
    """``(browser session, launch target, visit key)`` of the request being served."""
    return _session.get(), _launch_target.get(), _visit_key.get()


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


class LaunchCapture(AsyncSmartLaunchClient):
    """A provider launch client that keeps the launch's encounter and patient (the visit's FHIR
    target) for the meeting that follows, across the first Microsoft sign-in too."""

    def __init__(
        self, *args: Any, stash: Callable[[str, FhirTarget], Awaitable[None]], **kw: Any
    ) -> None:
        super().__init__(*args, **kw)
        self._stash = stash

    async def complete_launch(self, pending: Any, params: Any, *, session_id: str) -> LaunchResult:
        result = await super().complete_launch(pending, params, session_id=session_id)
        context = result.context
        target = FhirTarget(
            encounter=f"Encounter/{context.encounter}" if context.encounter else None,
            patient=f"Patient/{context.patient}" if context.patient else None,
        )
        _launch_target.set(target)
        await self._stash(session_id, target)
        return result


class VisitKeyCapture:
    """A :class:`MeetingFactory` that notes the visit key (``Encounter/…`` or
    ``Appointment/…``) of the meeting it ensures, for the meeting-ready hook."""

    def __init__(self, inner: MeetingFactory) -> None:
        self._inner = inner

    async def ensure_meeting(self, request: MeetingRequest) -> Meeting:
        _visit_key.set(request.appointment_id)
        return await self._inner.ensure_meeting(request)

    async def reschedule(self, request: MeetingRequest) -> Meeting:
        return await self._inner.reschedule(request)

    async def cancel(self, **kwargs: Any) -> Any:
        return await self._inner.cancel(**kwargs)


class VisitState:
    """Targets, grants and subscription marks of visits, in the shared store."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._targets: dict[tuple[str, str], tuple[FhirTarget, datetime]] = {}

    def _cache(self, org_id: str, external_id: str, target: FhirTarget) -> None:
        """A bounded, short-lived copy (another instance may still add the encounter)."""
        key = (org_id, external_id)
        self._targets.pop(key, None)
        if len(self._targets) >= _CACHE_SIZE:
            del self._targets[next(iter(self._targets))]
        self._targets[key] = (target, self._clock() + _CACHE_FOR)

    async def _has_nonce(self, namespace: str, key: str) -> bool:
        """Whether a live nonce exists; the probe leaves only an already-expired row behind."""
        probe = self._clock() - timedelta(seconds=1)
        return not await self._store.remember_once(namespace, key, expires_at=probe)

    # -- targets ----------------------------------------------------------------------------------

    async def stash_launch_target(self, session_id: str, target: FhirTarget) -> None:
        """Keep a provider launch's target for the sign-in hop (10 min, like the session)."""
        key = _digest("teams-ehr/launch-target", session_id)
        now = self._clock()
        payload = target.model_dump_json().encode()
        await self._store.replace_pending(
            key, org_id="-", payload=payload, expires_at=now + _LAUNCH_TTL, now=now
        )

    async def launch_target(self, session_id: str) -> FhirTarget | None:
        taken = await self._store.take_pending(
            _digest("teams-ehr/launch-target", session_id), now=self._clock()
        )
        return FhirTarget.model_validate_json(taken[1]) if taken else None

    async def remember_target(self, row: MeetingRow, target: FhirTarget) -> None:
        """Keep the visit's target; a target without encounter never replaces a known one."""
        key = _digest("teams-ehr/visit-target", row.org_id, row.external_id)
        now = self._clock()
        stored = await self._store.replace_pending(
            key,
            org_id=row.org_id,
            payload=target.model_dump_json().encode(),
            expires_at=max(row.end, now) + _TARGET_TTL,
            now=now,
            keep_live=not target.encounter,
        )
        self._cache(row.org_id, row.external_id, FhirTarget.model_validate_json(stored))

    async def target_for(self, org_id: str, external_id: str) -> FhirTarget | None:
        """The visit's FHIR target, or ``None`` for a visit this runtime never prepared."""
        cached = self._targets.get((org_id, external_id))
        if cached is not None and cached[1] > self._clock():
            return cached[0]
        key = _digest("teams-ehr/visit-target", org_id, external_id)
        for _ in range(50):
            now = self._clock()
            taken = await self._store.take_pending(key, now=now)
            if taken is not None:
                meeting = await self._store.get_meeting(org_id, external_id)
                end = max(meeting.end if meeting is not None else now, now)
                await self._store.put_pending(
                    key, org_id=org_id, payload=taken[1], expires_at=end + _TARGET_TTL
                )
                target = FhirTarget.model_validate_json(taken[1])
                self._cache(org_id, external_id, target)
                return target
            if await self._store.get_meeting(org_id, external_id) is None:
                return None
            await anyio.sleep(0.01)  # another reader holds it between take and put
        return None

    # -- roster grants (requirement D3) ---------------------------------------------------------

    @staticmethod
    def _grant_key(session_id: str, org_id: str, external_id: str, oid: str) -> str:
        return _digest("teams-ehr/roster-grant", session_id, org_id, external_id, oid)

    async def grant_roster(self, session_id: str, row: MeetingRow, margin: timedelta) -> None:
        key = self._grant_key(session_id, row.org_id, row.external_id, row.organizer_oid)
        await self._store.remember_once(_GRANTS, key, expires_at=row.end + margin)

    async def may_watch(self, session_id: str, org_id: str, external_id: str, oid: str) -> bool:
        """The session was granted this visit for this organizer, and the meeting is live."""
        meeting = await self._store.get_meeting(org_id, external_id)
        if meeting is None or meeting.state != "active" or meeting.organizer_oid != oid:
            return False
        return await self._has_nonce(_GRANTS, self._grant_key(session_id, org_id, external_id, oid))

"""The FHIR attendance writer: one interface, strategies chosen per organization (SPEC D4).

Every strategy is a sans-IO :data:`~teams_ehr._types.Flow` (DESIGN.md rule 3) run by the outbox
worker with the organization's backend-services token (smart-epic.md §2.6):

* :class:`EpicClinicalNoteWriter` — one ``DocumentReference`` clinical note per visit
  (Epic ``DocumentReference.Create (Clinical Notes)``, smart-epic.md §2.9).
* :class:`AuditEventWriter` — one ``AuditEvent`` per connect/disconnect (generic FHIR).
* :class:`EncounterParticipantWriter` — ``Encounter`` participant periods and status, read →
  merge → ``PUT`` with ``If-Match`` where the server allows update (generic FHIR).
* ``EpicTelehealthStatusWriter`` (:mod:`.epic_telehealth`) — Epic ``SetExternalConnectionStatus``.

A retry never duplicates (security.md §3.2 I3): creates use FHIR conditional create,
``If-None-Exist: identifier=system|value`` (201 created, 200 existing, 412 several matches →
``duplicate_identifier``; https://hl7.org/fhir/R4/http.html#ccreate). Where the server lacks it,
the flow searches first and creates only on no match; the worker runs that under a
per-identifier :class:`KeyedLocks` lock, and the outbox lease keeps other workers off the row.

Responses map to errors (security.md §3.2 I4): 2xx delivered; 408, 409, 429 and 5xx →
:class:`~teams_ehr.errors.FhirUnavailableError` with ``retry_at`` from ``Retry-After``; 401 →
``FhirError(reason="fhir_unauthorized")`` (the worker refreshes the token once); other 4xx →
poison ``FhirError`` with the OperationOutcome issue codes. Messages name the resource type and
status only: no ids, tokens or content.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, Literal, Protocol, runtime_checkable

import anyio
import httpx
from pydantic import AwareDatetime, BaseModel, ConfigDict, SecretStr

from teams_ehr._http import with_max_bytes
from teams_ehr._types import Clock, Flow, JsonObject, utc_now
from teams_ehr.attendance.fhir_resources import (
    AuditEventOptions,
    EncounterOptions,
    FhirTarget,
    NoteOptions,
    ResourceIdentity,
    build_audit_event,
    build_visit_note,
    merge_encounter,
    visit_note_key,
)
from teams_ehr.attendance.reports import AttendanceFactLike
from teams_ehr.errors import ConfigurationError, FhirError, FhirUnavailableError

__all__ = [
    "AttendanceDelivery",
    "AttendanceWriter",
    "AuditEventWriter",
    "DeliveredFact",
    "EncounterParticipantWriter",
    "EpicClinicalNoteWriter",
    "KeyedLocks",
    "WriteOutcome",
    "WriterStrategy",
    "create_once_flow",
    "fhir_error_for",
]

FHIR_JSON = "application/fhir+json"
MAX_FHIR_BODY = 1_048_576
MAX_RETRY_AFTER = timedelta(hours=1)
_RETRYABLE_4XX = frozenset({408, 409, 429})
_POISON_REASONS = {400: "fhir_bad_request", 403: "fhir_forbidden", 404: "fhir_not_found"}


class WriterStrategy(StrEnum):
    """How an organization's attendance reaches its EHR (chosen per organization)."""

    EPIC_CLINICAL_NOTE = "epic_clinical_note"
    AUDIT_EVENT = "audit_event"
    ENCOUNTER_PARTICIPANT = "encounter_participant"
    EPIC_TELEHEALTH_STATUS = "epic_telehealth_status"

    @property
    def per_visit(self) -> bool:
        """``True`` when one write covers a whole visit (the note), else one write per fact."""
        return self is WriterStrategy.EPIC_CLINICAL_NOTE


# Payload values are unique per fact: caching them in pydantic-core's string cache only fills it.
_MODEL = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True, cache_strings="keys")


class DeliveredFact(BaseModel):
    """The minimal fact carried in an outbox payload (security.md §3.2 I6)."""

    model_config = _MODEL
    org_id: str
    external_id: str
    fact_key: str
    kind: str
    role: str
    participant_key: str
    at: AwareDatetime

    @classmethod
    def of(cls, fact: AttendanceFactLike) -> DeliveredFact:
        return cls(
            org_id=fact.org_id,
            external_id=fact.external_id,
            fact_key=fact.fact_key,
            kind=str(fact.kind),
            role=str(fact.role),
            participant_key=fact.participant_key,
            at=fact.at,
        )


class AttendanceDelivery(BaseModel):
    """One unit of write-back: one fact, or (per-visit strategies) a visit's facts."""

    model_config = _MODEL
    strategy: WriterStrategy
    org_id: str
    external_id: str
    target: FhirTarget
    facts: tuple[DeliveredFact, ...]

    @property
    def idempotency_key(self) -> str:
        """Outbox dedupe key: ``strategy/fact_key`` (per fact) or ``strategy/note key``."""
        if self.strategy.per_visit:
            return f"{self.strategy.value}/{visit_note_key(self.facts)}"
        return f"{self.strategy.value}/{self.facts[0].fact_key}"

    def to_payload(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_payload(cls, payload: bytes) -> AttendanceDelivery:
        return cls.model_validate_json(payload)

    def __repr__(self) -> str:  # the target and keys are PHI-adjacent: keep them out of reprs
        return f"<AttendanceDelivery {self.strategy.value} facts={len(self.facts)}>"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """What a write did: ``created``/``existing``/``updated``/``unchanged``/``sent``/``skipped``."""

    status: Literal["created", "existing", "updated", "unchanged", "sent", "skipped"]
    resource_type: str | None = None
    resource_id: str | None = field(default=None, repr=False)


@runtime_checkable
class AttendanceWriter(Protocol):
    """A write-back strategy. ``lock_key`` names what must not be written concurrently in one
    process (search-then-create), or ``None``."""

    @property
    def strategy(self) -> WriterStrategy: ...

    def accepts(self, kind: str) -> bool: ...

    def lock_key(self, fact_batch: AttendanceDelivery) -> str | None: ...

    def write_flow(
        self, fact_batch: AttendanceDelivery, *, fhir_base: str, access_token: SecretStr
    ) -> Flow[WriteOutcome]: ...


# -- HTTP helpers -------------------------------------------------------------------------------


def fhir_request(
    method: str,
    url: str,
    access_token: SecretStr,
    *,
    body: JsonObject | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Request:
    """A FHIR JSON request with the bearer token and a response size cap."""
    all_headers = {
        "Accept": FHIR_JSON,
        "Authorization": f"Bearer {access_token.get_secret_value()}",
    }
    if body is not None:
        all_headers["Content-Type"] = FHIR_JSON
    all_headers.update(headers or {})
    content = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
    return with_max_bytes(
        httpx.Request(method, url, headers=all_headers, content=content), MAX_FHIR_BODY
    )


def retry_at_from(response: httpx.Response, now: datetime) -> datetime | None:
    """``Retry-After`` (delta-seconds or HTTP-date, RFC 9110 §10.2.3), capped at one hour."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        when = now + timedelta(seconds=max(0, int(value.strip())))
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
    return min(when, now + MAX_RETRY_AFTER)


def _issue_codes(response: httpx.Response) -> tuple[str, ...]:
    try:
        body = response.json()
    except ValueError:
        return ()
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return ()
    issues = body.get("issue") or []
    return tuple(str(i.get("code")) for i in issues if isinstance(i, dict) and i.get("code"))


def fhir_error_for(response: httpx.Response, what: str, now: datetime) -> FhirError:
    """The typed error for a non-2xx FHIR response (no URL, id or body text in the message)."""
    status = response.status_code
    message = f"FHIR {what} answered {status}"
    if status in _RETRYABLE_4XX or status >= 500:
        return FhirUnavailableError(
            message, status_code=status, retry_at=retry_at_from(response, now)
        )
    codes = _issue_codes(response)
    if status == 401:
        return FhirError(message, status_code=status, issue_codes=codes, reason="fhir_unauthorized")
    if status == 412:
        reason = "duplicate_identifier"
    else:
        reason = _POISON_REASONS.get(
            status, "fhir_unprocessable" if status == 422 else "fhir_rejected"
        )
    return FhirError(message, status_code=status, issue_codes=codes, reason=reason)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _created_id(response: httpx.Response, resource_type: str) -> str | None:
    body = _json(response)
    if isinstance(body, dict) and body.get("resourceType") == resource_type and body.get("id"):
        return str(body["id"])
    location = str(
        response.headers.get("location") or response.headers.get("content-location") or ""
    )
    if location and f"{resource_type}/" in location:
        return location.split(f"{resource_type}/", 1)[1].split("/", 1)[0]
    return None


def _str_or_none(value: object) -> str | None:
    return str(value) if value else None


def _search_hits(bundle: Any, identity: ResourceIdentity) -> tuple[list[JsonObject], str | None]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FhirError("FHIR search answered a non-Bundle", reason="fhir_bad_search")
    hits = [
        e["resource"]
        for e in bundle.get("entry") or []
        if isinstance(e, dict) and isinstance(e.get("resource"), dict)
        if identity.matches(e["resource"])
    ]
    following = next(
        (link.get("url") for link in bundle.get("link") or [] if link.get("relation") == "next"),
        None,
    )
    return hits, following


def create_once_flow(
    fhir_base: str,
    access_token: SecretStr,
    resource: JsonObject,
    identity: ResourceIdentity,
    *,
    conditional_create: bool,
    search_query: str | None = None,
    clock: Clock = utc_now,
    max_pages: int = 5,
) -> Flow[WriteOutcome]:
    """Create ``resource`` unless a resource with ``identity`` exists (never a duplicate).

    Conditional create when the server supports it; otherwise search (``search_query``, default
    the identity query; hits are re-checked client-side, ``next`` pages followed on the same
    base) and create on no match."""
    base = fhir_base.rstrip("/")
    rtype = identity.resource_type
    prefer = {"Prefer": "return=representation"}
    if conditional_create:
        headers = {**prefer, "If-None-Exist": identity.query()}
        response = yield fhir_request(
            "POST", f"{base}/{rtype}", access_token, body=resource, headers=headers
        )
        if response.status_code == 201:
            return WriteOutcome("created", rtype, _created_id(response, rtype))
        if response.status_code == 200:
            return WriteOutcome("existing", rtype, _created_id(response, rtype))
        raise fhir_error_for(response, f"create {rtype}", clock())
    url: str | None = f"{base}/{rtype}?{search_query or identity.query()}"
    found: list[JsonObject] = []
    pages = 0
    while url is not None and pages < max_pages:
        response = yield fhir_request("GET", url, access_token)
        if not response.is_success:
            raise fhir_error_for(response, f"search {rtype}", clock())
        hits, url = _search_hits(_json(response), identity)
        found.extend(hits)
        pages += 1
        if url is not None and not url.startswith(base + "/"):
            url = None  # never follow a paging link off the organization's FHIR base
    if len(found) > 1:
        raise FhirError(f"FHIR search {rtype} found several", reason="duplicate_identifier")
    if found:
        return WriteOutcome("existing", rtype, _str_or_none(found[0].get("id")))
    response = yield fhir_request(
        "POST", f"{base}/{rtype}", access_token, body=resource, headers=prefer
    )
    if response.is_success:
        return WriteOutcome("created", rtype, _created_id(response, rtype))
    raise fhir_error_for(response, f"create {rtype}", clock())


class KeyedLocks:
    """Per-key :class:`anyio.Lock` s that disappear when unused (no growth per visit, P5)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[anyio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = anyio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


# -- strategies ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpicClinicalNoteWriter:
    """One clinical note per visit (per-visit strategy). Epic offers no conditional create and
    no server de-duplication for notes (smart-epic.md §2.9), so the default is
    search-then-create, searching by ``encounter`` (and ``patient``) and matching our
    identifier client-side; ``search_by="identifier"`` for servers that index it."""

    options: NoteOptions = field(default_factory=NoteOptions)
    conditional_create: bool = False
    search_by: Literal["identifier", "encounter"] = "encounter"
    clock: Clock = utc_now
    strategy: WriterStrategy = WriterStrategy.EPIC_CLINICAL_NOTE

    def accepts(self, kind: str) -> bool:
        return True

    def lock_key(self, fact_batch: AttendanceDelivery) -> str | None:
        return f"note/{fact_batch.org_id}/{fact_batch.external_id}"

    def write_flow(
        self, fact_batch: AttendanceDelivery, *, fhir_base: str, access_token: SecretStr
    ) -> Flow[WriteOutcome]:
        target = fact_batch.target
        if not target.encounter:
            raise ConfigurationError("a clinical note needs an encounter", reason="missing_target")
        resource, identity = build_visit_note(fact_batch.facts, target, self.options)
        query = None
        if self.search_by == "encounter":
            query = f"encounter={target.encounter}"
            if target.patient:
                query += f"&patient={target.patient}"
        return create_once_flow(
            fhir_base,
            access_token,
            resource,
            identity,
            conditional_create=self.conditional_create,
            search_query=query,
            clock=self.clock,
        )


@dataclass(frozen=True)
class AuditEventWriter:
    """One ``AuditEvent`` per fact of the accepted kinds (default: connect and disconnect)."""

    options: AuditEventOptions = field(default_factory=AuditEventOptions)
    conditional_create: bool = True
    kinds: frozenset[str] = frozenset({"connected", "disconnected"})
    clock: Clock = utc_now
    strategy: WriterStrategy = WriterStrategy.AUDIT_EVENT

    def accepts(self, kind: str) -> bool:
        return kind in self.kinds

    def lock_key(self, fact_batch: AttendanceDelivery) -> str | None:
        return None if self.conditional_create else f"audit/{fact_batch.facts[0].fact_key}"

    def write_flow(
        self, fact_batch: AttendanceDelivery, *, fhir_base: str, access_token: SecretStr
    ) -> Flow[WriteOutcome]:
        fact = fact_batch.facts[0]
        if not self.accepts(fact.kind):
            return _skipped()
        resource, identity = build_audit_event(fact, fact_batch.target, self.options)
        return create_once_flow(
            fhir_base,
            access_token,
            resource,
            identity,
            conditional_create=self.conditional_create,
            clock=self.clock,
        )


def _skipped() -> Flow[WriteOutcome]:
    return WriteOutcome("skipped")
    yield  # pragma: no cover - makes this function a generator


@dataclass(frozen=True)
class EncounterParticipantWriter:
    """Merge facts into the visit's ``Encounter`` (read, merge, ``PUT`` with ``If-Match``).

    Only where the server allows update (not Epic: smart-epic.md §2.9). A 412 version conflict
    re-reads and merges again, up to ``max_conflicts`` times, then retries later."""

    options: EncounterOptions = field(default_factory=EncounterOptions)
    max_conflicts: int = 3
    clock: Clock = utc_now
    strategy: WriterStrategy = WriterStrategy.ENCOUNTER_PARTICIPANT

    def accepts(self, kind: str) -> bool:
        return kind in ("connected", "disconnected", "call_started", "call_ended")

    def lock_key(self, fact_batch: AttendanceDelivery) -> str | None:
        return f"encounter/{fact_batch.org_id}/{fact_batch.external_id}"

    def write_flow(
        self, fact_batch: AttendanceDelivery, *, fhir_base: str, access_token: SecretStr
    ) -> Flow[WriteOutcome]:
        reference = fact_batch.target.encounter
        if not reference or not reference.startswith("Encounter/"):
            raise ConfigurationError("an Encounter reference is needed", reason="missing_target")
        url = f"{fhir_base.rstrip('/')}/{reference}"
        for _ in range(self.max_conflicts + 1):
            response = yield fhir_request("GET", url, access_token)
            if not response.is_success:
                raise fhir_error_for(response, "read Encounter", self.clock())
            current = _json(response)
            if not isinstance(current, dict) or current.get("resourceType") != "Encounter":
                raise FhirError("FHIR read Encounter answered another type", reason="fhir_bad_read")
            merged = merge_encounter(current, fact_batch.facts, self.options)
            if merged is None:
                return WriteOutcome("unchanged", "Encounter", _str_or_none(current.get("id")))
            headers = {}
            etag = response.headers.get("etag")
            version = (current.get("meta") or {}).get("versionId")
            if etag or version:
                headers["If-Match"] = etag or f'W/"{version}"'
            put = yield fhir_request("PUT", url, access_token, body=merged, headers=headers)
            if put.is_success:
                return WriteOutcome("updated", "Encounter", _str_or_none(current.get("id")))
            if put.status_code != 412:
                raise fhir_error_for(put, "update Encounter", self.clock())
        raise FhirUnavailableError("FHIR update Encounter kept conflicting", status_code=412)

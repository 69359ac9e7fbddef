"""The write-back vocabulary: facts, deliveries, outcomes and strategies.

An :class:`AttendanceFact` is what one writer call records: a typed ``kind`` and ``role`` (the
vocabulary of :mod:`teams_ehr.attendance.events`), an opaque participant key and a UTC time; no
names, identities or join links. An :class:`AttendanceDelivery` is one unit of write-back — one
fact, or a visit's facts for the per-visit note — and is also the outbox payload. See
``docs/reference/attendance-writer.md``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal, Self, get_args

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError, model_validator

from teams_ehr.attendance.events import AttendanceKind, Role, fact_key
from teams_ehr.attendance.fhir_resources import FhirTarget, visit_note_key
from teams_ehr.attendance.reports import AttendanceFactLike
from teams_ehr.errors import UsageError

__all__ = [
    "KINDS",
    "ROLES",
    "AttendanceDelivery",
    "AttendanceFact",
    "WriteOutcome",
    "WriterStrategy",
]

KINDS: tuple[AttendanceKind, ...] = get_args(AttendanceKind)
"""Every attendance kind, in the order of a visit."""
ROLES: tuple[Role, ...] = get_args(Role)
"""Every participant role."""

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,31}")


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


def _shown(value: object) -> str:
    """A caller's kind or role for a message: shown when it is a short word, else withheld."""
    text = str(value)
    return repr(text) if _WORD.fullmatch(text) else "(withheld)"


def _bad_fact(kind: object, role: object) -> UsageError:
    if kind not in KINDS:
        problem = f"unknown attendance kind {_shown(kind)}. Known kinds: {', '.join(KINDS)}"
    elif role not in ROLES:
        problem = f"unknown participant role {_shown(role)}. Known roles: {', '.join(ROLES)}"
    else:
        problem = "an attendance fact needs string keys and a datetime"
    return UsageError(problem, reason="bad_fact")


def _aware(at: object) -> None:
    if isinstance(at, datetime) and at.tzinfo is None:
        raise UsageError("attendance times must be timezone-aware", reason="naive_datetime")


class AttendanceFact(BaseModel):
    """One attendance fact as written back: typed kind and role, opaque keys, aware UTC time.

    Build one with :meth:`create` (computes ``fact_key``) or :meth:`of` (from an
    :class:`~teams_ehr.attendance.events.AttendanceEvent` or a stored fact row); both raise
    :class:`~teams_ehr.errors.UsageError` (``bad_fact``) for an unknown kind or role."""

    model_config = _MODEL
    org_id: str
    external_id: str
    fact_key: str
    kind: AttendanceKind
    role: Role
    participant_key: str
    at: AwareDatetime

    @classmethod
    def create(
        cls,
        *,
        org_id: str,
        external_id: str,
        kind: AttendanceKind,
        role: Role,
        participant_key: str,
        at: datetime,
    ) -> Self:
        """A fact whose ``fact_key`` is derived from the others (the key retries dedupe on)."""
        _aware(at)
        if kind not in KINDS or role not in ROLES:
            raise _bad_fact(kind, role)
        try:
            return cls(
                org_id=org_id,
                external_id=external_id,
                fact_key=fact_key(org_id, external_id, participant_key, kind, at),
                kind=kind,
                role=role,
                participant_key=participant_key,
                at=at,
            )
        except (AttributeError, TypeError, ValidationError):
            raise _bad_fact(kind, role) from None

    @classmethod
    def of(cls, fact: AttendanceFactLike) -> Self:
        """The same fact, validated (any object with the fact's attributes)."""
        if isinstance(fact, cls):
            return fact
        kind, role = getattr(fact, "kind", None), getattr(fact, "role", None)
        _aware(getattr(fact, "at", None))
        try:
            return cls(
                org_id=fact.org_id,
                external_id=fact.external_id,
                fact_key=fact.fact_key,
                kind=str(kind),  # validated by the model
                role=str(role),
                participant_key=fact.participant_key,
                at=fact.at,
            )
        except (AttributeError, ValidationError):
            raise _bad_fact(kind, role) from None


class AttendanceDelivery(BaseModel):
    """One unit of write-back: one fact, or (per-visit strategies) a visit's facts.

    It is the outbox payload too (:meth:`to_payload`), so it holds the minimum: the strategy, the
    visit's keys, its FHIR target and the facts. Every fact belongs to the delivery's visit."""

    model_config = _MODEL
    strategy: WriterStrategy
    org_id: str
    external_id: str
    target: FhirTarget
    facts: tuple[AttendanceFact, ...]

    @model_validator(mode="after")
    def _one_visit(self) -> Self:
        if not self.facts:
            raise ValueError("a delivery needs at least one fact")
        if not self.strategy.per_visit and len(self.facts) != 1:
            raise ValueError("a per-fact strategy delivers exactly one fact")
        if any((f.org_id, f.external_id) != (self.org_id, self.external_id) for f in self.facts):
            raise ValueError("every fact must belong to the delivery's visit")
        return self

    @classmethod
    def of(
        cls,
        strategy: WriterStrategy,
        facts: Sequence[AttendanceFactLike],
        *,
        target: FhirTarget,
    ) -> Self:
        """The delivery of ``facts`` (all of one visit) for ``strategy``; ``UsageError``
        (``bad_fact``) when the facts are invalid, of several visits, or too many for a per-fact
        strategy."""
        checked = tuple(AttendanceFact.of(f) for f in facts)
        if not checked:
            raise UsageError("nothing to write: no attendance fact given", reason="bad_fact")
        if not strategy.per_visit and len(checked) != 1:
            raise UsageError(
                f"the {strategy.value} writer writes one fact per call (got {len(checked)})",
                reason="bad_fact",
            )
        first = checked[0]
        if any((f.org_id, f.external_id) != (first.org_id, first.external_id) for f in checked):
            raise UsageError("the facts of one write must be of one visit", reason="bad_fact")
        return cls(
            strategy=strategy,
            org_id=first.org_id,
            external_id=first.external_id,
            target=target,
            facts=checked,
        )

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
    """What a write did.

    ``created`` / ``existing`` (a retry found the resource), ``updated`` / ``unchanged`` (the
    Encounter), ``sent`` (the Epic telehealth status), or ``skipped``: the fact's kind is one the
    strategy does not record (see each writer's ``accepts``), and no request was sent."""

    status: Literal["created", "existing", "updated", "unchanged", "sent", "skipped"]
    resource_type: str | None = None
    resource_id: str | None = field(default=None, repr=False)

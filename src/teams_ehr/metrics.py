"""Counters and gauges for operators (requirement E6), dependency-free, Prometheus text format 0.0.4.

A :class:`MetricsRegistry` holds :class:`Counter` and :class:`Gauge` families. Every label has a
:class:`LabelRule`: either a fixed set of values (anything else is counted as ``"other"``) or a
pattern with a cap on distinct values (past the cap, new values become ``"other"``). Labels are
therefore always low-cardinality: stage, outcome, reason codes, outbox states, organization ids.
User, patient and practitioner identifiers, tokens and join links are never labels: the label
*names* ``user``, ``patient``, ``subject``, ``token``… are refused outright (design rule 5).

:func:`snapshot` returns a plain ``dict``; :func:`render_prometheus` renders the exposition format
(https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format, version 0.0.4:
``# HELP`` / ``# TYPE`` lines, label values escaped ``\\``, ``"`` and newline).

The standard metrics live in the module-level :data:`DEFAULT` registry and are fed by the small
``record_*`` functions and :func:`observe_launch`, which the visit service and the attendance
workers call at the points named in their docstrings.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from teams_ehr.errors import RemoteError, SecurityError
from teams_ehr.store.protocol import OutboxState

__all__ = [
    "DEFAULT",
    "PROMETHEUS_CONTENT_TYPE",
    "Counter",
    "Gauge",
    "exposition",
    "LabelRule",
    "MetricsRegistry",
    "StandardMetrics",
    "observe_launch",
    "outcome_of",
    "record_dead_letter",
    "record_launch",
    "record_meeting",
    "record_notification",
    "record_security_refusal",
    "record_subscription_setup",
    "refresh_outbox_depth",
    "refresh_setup_depth",
    "render_prometheus",
    "snapshot",
]

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER = "other"
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_ORG_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_FORBIDDEN_LABELS = frozenset(
    {
        "user",
        "user_id",
        "patient",
        "patient_id",
        "practitioner",
        "subject",
        "sub",
        "oid",
        "object_id",
        "email",
        "token",
        "join_url",
        "launch",
        "encounter",
        "appointment",
    }
)

Labels = tuple[str, ...]


@dataclass(frozen=True)
class LabelRule:
    """Which values one label may take: a fixed set, or a pattern with a distinct-value cap."""

    allowed: frozenset[str] | None = None
    pattern: re.Pattern[str] = _CODE
    max_values: int = 64

    @classmethod
    def one_of(cls, *values: str) -> LabelRule:
        return cls(allowed=frozenset(values))

    @classmethod
    def code(cls, max_values: int = 64) -> LabelRule:
        """snake_case codes such as error ``reason`` values."""
        return cls(pattern=_CODE, max_values=max_values)

    @classmethod
    def org_id(cls, max_values: int = 1000) -> LabelRule:
        return cls(pattern=_ORG_ID, max_values=max_values)


class _Family:
    kind: Literal["counter", "gauge"]

    def __init__(self, name: str, help_text: str, labels: Mapping[str, LabelRule]) -> None:
        if not _METRIC_NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in labels:
            if not _LABEL_NAME.match(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r}")
            if label.lower() in _FORBIDDEN_LABELS:
                raise ValueError(f"label {label!r} would carry an identifier")
        self.name = name
        self.help = help_text
        self.label_names: tuple[str, ...] = tuple(labels)
        self._rules = dict(labels)
        self._seen: dict[str, set[str]] = {label: set() for label in labels}
        self._values: dict[Labels, float] = {}
        self._lock = threading.Lock()
        if not labels:
            self._values[()] = 0.0

    def _key(self, labels: Mapping[str, str]) -> Labels:
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}")
        return tuple(self._bounded(name, labels[name]) for name in self.label_names)

    def _bounded(self, name: str, value: str) -> str:
        """Call with the lock held or not: ``_seen`` only grows, bounded by ``max_values``."""
        rule = self._rules[name]
        if rule.allowed is not None:
            return value if value in rule.allowed else OTHER
        if not isinstance(value, str) or not rule.pattern.match(value):
            return OTHER
        seen = self._seen[name]
        if value in seen:
            return value
        if len(seen) >= rule.max_values:
            return OTHER
        seen.add(value)
        return value

    def samples(self) -> list[tuple[dict[str, str], float]]:
        with self._lock:
            items = sorted(self._values.items())
        return [(dict(zip(self.label_names, key, strict=True)), value) for key, value in items]

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)


class Counter(_Family):
    """A monotonically increasing count (the name should end in ``_total``)."""

    kind = "counter"

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0 or math.isnan(amount):
            raise ValueError("a counter only goes up")
        with self._lock:
            key = self._key(labels)
            self._values[key] = self._values.get(key, 0.0) + amount


GaugeCallback = Callable[[], Mapping[Labels, float]]


class Gauge(_Family):
    """A value that goes up and down: set directly, or read from ``callback`` at collection."""

    kind = "gauge"

    def __init__(
        self,
        name: str,
        help_text: str,
        labels: Mapping[str, LabelRule],
        callback: GaugeCallback | None = None,
    ) -> None:
        super().__init__(name, help_text, labels)
        self.callback = callback

    def set(self, value: float, **labels: str) -> None:
        with self._lock:
            self._values[self._key(labels)] = float(value)

    def samples(self) -> list[tuple[dict[str, str], float]]:
        if self.callback is not None:
            for key, value in self.callback().items():
                self.set(value, **dict(zip(self.label_names, key, strict=True)))
        return super().samples()


class MetricsRegistry:
    """Metric families by name; renders them all."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}
        self._lock = threading.Lock()

    def _add(self, family: _Family) -> None:
        with self._lock:
            if family.name in self._families:
                raise ValueError(f"metric {family.name} is already registered")
            self._families[family.name] = family

    def counter(self, name: str, help_text: str, **labels: LabelRule) -> Counter:
        family = Counter(name, help_text, labels)
        self._add(family)
        return family

    def gauge(
        self,
        name: str,
        help_text: str,
        *,
        callback: GaugeCallback | None = None,
        **labels: LabelRule,
    ) -> Gauge:
        family = Gauge(name, help_text, labels, callback)
        self._add(family)
        return family

    def families(self) -> Sequence[_Family]:
        with self._lock:
            return [self._families[name] for name in sorted(self._families)]

    def snapshot(self) -> dict[str, dict[str, object]]:
        """``{name: {"type", "help", "samples": [{"labels": {...}, "value": float}]}}``."""
        return {
            family.name: {
                "type": family.kind,
                "help": family.help,
                "samples": [
                    {"labels": labels, "value": value} for labels, value in family.samples()
                ],
            }
            for family in self.families()
        }

    def render_prometheus(self) -> str:
        lines: list[str] = []
        for family in self.families():
            lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
            lines.append(f"# TYPE {family.name} {family.kind}")
            for labels, value in family.samples():
                rendered = ",".join(f'{k}="{_escape_value(v)}"' for k, v in labels.items())
                selector = f"{{{rendered}}}" if rendered else ""
                lines.append(f"{family.name}{selector} {_number(value)}")
        return "\n".join(lines) + "\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value.is_integer() else repr(value)


# -- the standard metrics ------------------------------------------------------------------------

LAUNCH_STAGES = ("begin", "ehr_callback", "microsoft_signin", "patient_join")
OUTCOMES = ("ok", "refused", "remote_error", "error")
NOTIFICATION_OUTCOMES = ("accepted", "duplicate", "rejected", "error")
OUTBOX_STATES: tuple[OutboxState, ...] = ("pending", "leased", "delivered", "dead")
SETUP_OUTCOMES = ("done", "retry", "abandoned")
SETUP_STATES = ("pending", "leased", "done", "abandoned", "retrying")


@dataclass(frozen=True)
class StandardMetrics:
    """The families every teams-ehr process exposes, registered in ``registry``."""

    registry: MetricsRegistry = field(default_factory=MetricsRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        outcome = LabelRule.one_of(*OUTCOMES)
        fields = {
            "launches": r.counter(
                "teams_ehr_launches_total",
                "Provider and patient launch steps by stage and outcome.",
                stage=LabelRule.one_of(*LAUNCH_STAGES),
                outcome=outcome,
            ),
            "meetings": r.counter(
                "teams_ehr_meetings_total", "Meetings created or got, by outcome.", outcome=outcome
            ),
            "security_refusals": r.counter(
                "teams_ehr_security_refusals_total",
                "Requests refused to protect the user, by reason code.",
                reason=LabelRule.code(),
            ),
            "outbox_depth": r.gauge(
                "teams_ehr_outbox_depth",
                "FHIR write-back outbox items by state (read from the store).",
                state=LabelRule.one_of(*OUTBOX_STATES),
            ),
            "dead_letters": r.counter(
                "teams_ehr_dead_letters_total", "Outbox items moved to the dead-letter state."
            ),
            "dead_letter_reasons": r.counter(
                "teams_ehr_dead_letter_reasons_total",
                "Outbox items moved to the dead-letter state, by reason code.",
                reason=LabelRule.code(),
            ),
            "notifications": r.counter(
                "teams_ehr_notifications_total",
                "Graph change notifications received, by outcome.",
                outcome=LabelRule.one_of(*NOTIFICATION_OUTCOMES),
            ),
            "subscription_setups": r.counter(
                "teams_ehr_subscription_setups_total",
                "Attendance subscription setup attempts by outcome (done, retry, abandoned).",
                outcome=LabelRule.one_of(*SETUP_OUTCOMES),
            ),
            "subscription_setup_failures": r.counter(
                "teams_ehr_subscription_setup_failures_total",
                "Subscription setups retried or abandoned, by reason code.",
                reason=LabelRule.code(),
            ),
            "subscription_setup_depth": r.gauge(
                "teams_ehr_subscription_setup_depth",
                "Attendance subscription setups by state (read from the store; retrying = "
                "pending or leased after a failure).",
                state=LabelRule.one_of(*SETUP_STATES),
            ),
        }
        for name, family in fields.items():
            object.__setattr__(self, name, family)

    launches: Counter = field(init=False)
    meetings: Counter = field(init=False)
    security_refusals: Counter = field(init=False)
    outbox_depth: Gauge = field(init=False)
    dead_letters: Counter = field(init=False)
    dead_letter_reasons: Counter = field(init=False)
    notifications: Counter = field(init=False)
    subscription_setups: Counter = field(init=False)
    subscription_setup_failures: Counter = field(init=False)
    subscription_setup_depth: Gauge = field(init=False)


DEFAULT = StandardMetrics()
"""The process-wide registry with the standard metrics (what ``/metrics`` renders)."""


def outcome_of(exc: BaseException | None) -> str:
    """``ok`` / ``refused`` (SecurityError) / ``remote_error`` (RemoteError) / ``error``."""
    if exc is None:
        return "ok"
    if isinstance(exc, SecurityError):
        return "refused"
    if isinstance(exc, RemoteError):
        return "remote_error"
    return "error"


def record_launch(stage: str, outcome: str, *, metrics: StandardMetrics = DEFAULT) -> None:
    """One launch step (``stage`` in :data:`LAUNCH_STAGES`, ``outcome`` in :data:`OUTCOMES`);
    usually through :func:`observe_launch` around the route handler of that step."""
    metrics.launches.inc(stage=stage, outcome=outcome)


def record_meeting(outcome: str, *, metrics: StandardMetrics = DEFAULT) -> None:
    """One ``ensure_meeting`` (createOrGet + lobby check): ``ok`` or :func:`outcome_of` its error."""
    metrics.meetings.inc(outcome=outcome)


def record_security_refusal(
    reason: str, count: int = 1, *, metrics: StandardMetrics = DEFAULT
) -> None:
    """A refusal with its ``reason`` code (a :class:`~teams_ehr.errors.SecurityError`'s, or a
    dropped webhook notification's); anything but a snake_case code is counted as ``other``."""
    metrics.security_refusals.inc(count, reason=reason)


def record_dead_letter(
    count: int = 1, *, reason: str | None = None, metrics: StandardMetrics = DEFAULT
) -> None:
    """Outbox rows the worker moved to ``dead`` (after a successful ``mark_dead``), also counted
    by their ``reason`` code (``oauth_invalid_client``, ``fhir_bad_request``, ``expired`` …)."""
    metrics.dead_letters.inc(count)
    if reason is not None:
        metrics.dead_letter_reasons.inc(count, reason=reason)


def record_notification(
    outcome: str, count: int = 1, *, metrics: StandardMetrics = DEFAULT
) -> None:
    """Graph notifications of one POST, by outcome (:data:`NOTIFICATION_OUTCOMES`)."""
    metrics.notifications.inc(count, outcome=outcome)


def record_subscription_setup(
    outcome: str, *, reason: str | None = None, metrics: StandardMetrics = DEFAULT
) -> None:
    """One attendance subscription setup attempt (:data:`SETUP_OUTCOMES`); a retry or an
    abandoned setup is also counted by its ``reason`` code."""
    metrics.subscription_setups.inc(outcome=outcome)
    if reason is not None:
        metrics.subscription_setup_failures.inc(reason=reason)


@contextmanager
def observe_launch(stage: str, *, metrics: StandardMetrics = DEFAULT) -> Iterator[None]:
    """Count one launch step: ``ok`` on return; on an exception its outcome (and, for a
    :class:`~teams_ehr.errors.SecurityError`, its ``reason``), then re-raise unchanged."""
    try:
        yield
    except BaseException as exc:
        if isinstance(exc, Exception):
            record_launch(stage, outcome_of(exc), metrics=metrics)
            if isinstance(exc, SecurityError):
                record_security_refusal(exc.reason, metrics=metrics)
        raise
    record_launch(stage, "ok", metrics=metrics)


class _OutboxCounts(Protocol):
    async def outbox_counts(self) -> Mapping[OutboxState, int]: ...


async def refresh_outbox_depth(store: _OutboxCounts, *, metrics: StandardMetrics = DEFAULT) -> None:
    """Read ``store.outbox_counts()`` into ``teams_ehr_outbox_depth`` (call before rendering)."""
    counts = await store.outbox_counts()
    for state in OUTBOX_STATES:
        metrics.outbox_depth.set(counts.get(state, 0), state=state)


@runtime_checkable
class _SetupCounts(Protocol):
    async def subscription_setup_counts(self) -> Mapping[str, int]: ...


async def refresh_setup_depth(store: _SetupCounts, *, metrics: StandardMetrics = DEFAULT) -> None:
    """Read ``store.subscription_setup_counts()`` into ``teams_ehr_subscription_setup_depth``
    (``exposition`` does it when its store has them)."""
    counts = await store.subscription_setup_counts()
    for state in SETUP_STATES:
        metrics.subscription_setup_depth.set(counts.get(state, 0), state=state)


async def exposition(
    store: _OutboxCounts | None = None, *, metrics: StandardMetrics = DEFAULT
) -> str:
    """What a ``/metrics`` endpoint answers (with :data:`PROMETHEUS_CONTENT_TYPE`): the outbox
    gauge refreshed from ``store`` when given, then every family rendered."""
    if store is not None:
        await refresh_outbox_depth(store, metrics=metrics)
        if isinstance(store, _SetupCounts):
            await refresh_setup_depth(store, metrics=metrics)
    return metrics.registry.render_prometheus()


def snapshot(metrics: StandardMetrics = DEFAULT) -> dict[str, dict[str, object]]:
    return metrics.registry.snapshot()


def render_prometheus(metrics: StandardMetrics = DEFAULT) -> str:
    return metrics.registry.render_prometheus()

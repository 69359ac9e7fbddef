"""Outbox retry policy edges ``nox -s mutants -- attendance/outbox.py`` left open (invariant I4,
docs/security.md#delivery-invariants).

:func:`oauth_failure` sorts a token endpoint's refusal into permanent (RFC 6749 §5.2 4xx: fix
the registration, retrying cannot help) or transient (408, 429, 5xx, ``temporarily_unavailable``,
``server_error``), with a bounded reason code; :class:`Backoff` at its exponent and jitter clamps.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from attendance_out_support import FHIR_BASE, T0, TARGET, FakeClock, MemoryStore, event
from pydantic import SecretStr

from teams_ehr.attendance.outbox import (
    Backoff,
    DeadLetter,
    OrgRoute,
    OutboxWorker,
    enqueue_attendance,
    oauth_failure,
)
from teams_ehr.attendance.writers import AuditEventWriter, WriterStrategy
from teams_ehr.errors import FhirUnavailableError, OAuthError

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "error", "permanent"),
    [
        (400, "invalid_client", True),
        (401, "invalid_client", True),
        (499, "invalid_request", True),
        (399, "invalid_client", False),
        (500, "invalid_client", False),
        (408, "invalid_request", False),
        (409, "invalid_request", True),
        (429, "invalid_request", False),
        (430, "invalid_request", True),
        (400, "temporarily_unavailable", False),
        (400, "server_error", False),
        (None, "invalid_client", False),
    ],
)
def test_permanent_only_for_4xx_refusals(status: int | None, error: str, permanent: bool) -> None:
    assert oauth_failure(OAuthError(error=error, status_code=status)) == (
        f"oauth_{error}",
        permanent,
    )


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ("Invalid-Client", "oauth_invalid_client"),
        ("bad code\r\nX: 1", "oauth_bad_code__x__1"),
        ("", "oauth_error"),
        ("e" * 60, "oauth_" + "e" * 48),
    ],
)
def test_reason_codes_are_bounded_snake_case(error: str, code: str) -> None:
    assert oauth_failure(OAuthError(error=error, status_code=400))[0] == code


def test_backoff_exponent_is_capped_at_2_to_the_32() -> None:
    huge = Backoff(base=timedelta(microseconds=1), cap=timedelta(days=10**6), jitter=lambda: 1.0)
    expected = timedelta(microseconds=2**32)
    assert huge.next_at(32, NOW) == NOW + expected
    assert huge.next_at(33, NOW) == NOW + expected


@pytest.mark.parametrize(
    ("jitter", "seconds"), [(-1.0, 2.5), (0.0, 2.5), (0.5, 3.75), (1.0, 5), (2.0, 5)]
)
def test_backoff_jitter_is_clamped_to_half_to_full_delay(jitter: float, seconds: float) -> None:
    backoff = Backoff(base=timedelta(seconds=5), jitter=lambda: jitter)
    assert backoff.next_at(0, NOW) == NOW + timedelta(seconds=seconds)


# -- the worker's retry reasons and permanent-failure edge ------------------------------------


class FailingTokens:
    """An OrgTokenProvider whose token endpoint keeps failing with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def __call__(self, org_id: str, *, force_refresh: bool = False) -> SecretStr:
        raise self.error


async def _one_row_worker(
    error: Exception, **kw: Any
) -> tuple[MemoryStore, OutboxWorker, list[DeadLetter]]:
    clock = FakeClock()
    store = MemoryStore()
    writer = AuditEventWriter(clock=clock)
    await enqueue_attendance(
        store, [event("connected")], target=TARGET, writers=[writer], now=clock()
    )
    alerts: list[DeadLetter] = []

    async def route(org_id: str, strategy: WriterStrategy) -> OrgRoute:
        return OrgRoute(writer, FHIR_BASE)

    worker = OutboxWorker(
        store,
        route,
        FailingTokens(error),
        httpx.AsyncClient(),
        clock=clock,
        backoff=Backoff(jitter=lambda: 1.0),
        on_dead_letter=alerts.append,
        **kw,
    )
    return store, worker, alerts


def _row(store: MemoryStore) -> Any:
    [row] = store.rows.values()
    return row


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (TimeoutError(), "timeout"),
        (RuntimeError("a bug"), "internal_error"),
        (FhirUnavailableError("down"), "fhir_unavailable_0"),
        (
            OAuthError(error="temporarily_unavailable", status_code=503),
            "oauth_temporarily_unavailable",
        ),
    ],
)
async def test_retry_reasons_and_first_backoff(error: Exception, reason: str) -> None:
    store, worker, alerts = await _one_row_worker(error)
    assert await worker.run_once() == 1
    row = _row(store)
    assert (row.state, row.item.last_reason) == ("pending", reason)
    assert row.item.not_before == T0 + timedelta(seconds=5)  # attempt 1: base, full jitter
    assert (worker.stats.retried, alerts) == (1, [])


@pytest.mark.anyio
async def test_a_permanent_oauth_refusal_is_dead_after_exactly_three_tries() -> None:
    store, worker, alerts = await _one_row_worker(
        OAuthError(error="invalid_client", status_code=401), permanent_attempts=3
    )
    for _ in range(2):
        await worker.run_once()
        assert (_row(store).state, _row(store).item.last_reason) == (
            "pending",
            "oauth_invalid_client",
        )
        worker.clock.advance(minutes=10)  # type: ignore[attr-defined]
    await worker.run_once()
    row = _row(store)
    assert (row.state, row.item.last_reason) == ("dead", "oauth_invalid_client")
    assert [(a.reason, a.org_id, a.item_ids) for a in alerts] == [
        ("oauth_invalid_client", row.item.org_id, (row.item.item_id,))
    ]

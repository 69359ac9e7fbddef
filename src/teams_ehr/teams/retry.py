"""Retry policy for Microsoft Graph: ``Retry-After`` first, capped backoff, overall deadline (requirement B4).

Graph throttling guidance (learn.microsoft.com/graph/throttling): on 429
wait the ``Retry-After`` seconds; with no header back off exponentially; retry 503 and 504 the same
way. ``Retry-After`` may be seconds or an HTTP-date (RFC 9110 §10.2.3); Graph has also sent odd
values like ``"30,120"`` (msgraph-sdk-python #1159), so the first number is used.

Which requests may be retried is the caller's decision (:class:`Idempotency`): createOrGet, GET,
PATCH and DELETE are idempotent; ``POST /subscriptions`` is not, so after the request may have
reached the server it is retried only on 429/503, which mean "not processed".
"""

from __future__ import annotations

import enum
import random
import re
from dataclasses import dataclass, field
from datetime import datetime

__all__ = [
    "Idempotency",
    "RetryDecision",
    "RetryPolicy",
    "parse_retry_after",
]

_FIRST_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)")


class Idempotency(enum.Enum):
    IDEMPOTENT = "idempotent"
    """Safe to resend after a timeout or any retryable status."""
    NOT_PROCESSED_ONLY = "not_processed_only"
    """Resend only on 429/503 responses (the server says it did not process the request)."""


NOT_PROCESSED_STATUSES = frozenset({429, 503})


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or ``None`` when absent or unreadable."""
    if value is None:
        return None
    if match := _FIRST_NUMBER.match(value):
        return float(match.group(1))
    from email.utils import parsedate_to_datetime  # the rare HTTP-date form (RFC 9110 §10.2.3)

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What to do after a failed attempt: wait ``delay`` seconds, or give up (``delay is None``)."""

    delay: float | None
    retry_after: float | None


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. ``max_wait`` caps one wait (a longer ``Retry-After`` gives up at once);
    ``deadline`` caps the whole call including the time requests took."""

    max_attempts: int = 5
    base_delay: float = 0.5
    max_wait: float = 30.0
    deadline: float = 60.0
    jitter: float = 0.25
    retry_statuses: frozenset[int] = frozenset({429, 503, 504})
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with ±``jitter`` for attempt ``attempt`` (1-based), capped."""
        raw = self.base_delay * (2.0 ** (attempt - 1))
        spread = 1.0 + self.jitter * (2.0 * self.rng.random() - 1.0)
        return min(self.max_wait, max(0.0, raw * spread))

    def decide(
        self,
        *,
        attempt: int,
        elapsed: float,
        retry_after: float | None,
    ) -> RetryDecision:
        """Wait or give up after attempt number ``attempt`` failed retryably."""
        if retry_after is not None and retry_after > self.max_wait:
            return RetryDecision(None, retry_after)
        delay = retry_after if retry_after is not None else self.backoff(attempt)
        if attempt >= self.max_attempts or elapsed + delay > self.deadline:
            return RetryDecision(None, retry_after if retry_after is not None else delay)
        return RetryDecision(delay, retry_after)

"""T20 / T32 edges the mutation run (``nox -s mutants -- visits/joinlinks.py``) showed unpinned.

Each test names the weakening it catches: configuration limits at, just before and just after
their edge with the exact ``reason`` and message, the rate-limit bucket (namespace, minute
boundary, hashed client key, ``Retry-After`` to the second) and the security log records, whose
content is part of the contract: reason codes, the organization, and at most an 8-character
prefix of a *hash* (docs/security.md T20, T31, T32).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from joinlink_support import FakeClock, MemoryJoinStore

from teams_ehr.errors import ConfigurationError, JoinLinkInvalidError, JoinLinkRateLimitedError
from teams_ehr.visits.joinlinks import JoinLinkService, token_hash

pytestmark = pytest.mark.anyio

START = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
END = START + timedelta(minutes=30)
CLIENT = "203.0.113.7"


def _service(store: MemoryJoinStore, clock: FakeClock, **kw: Any) -> JoinLinkService:
    return JoinLinkService(store, store, clock=clock, **kw)


def _client_hash(client: str) -> str:
    return hashlib.sha256(client.encode("utf-8", "surrogatepass")).hexdigest()


def _messages(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str | None]]:
    return [
        (r.getMessage(), getattr(r, "security_event", None))
        for r in caplog.records
        if r.name == "teams_ehr.visits.joinlinks"
    ]


# -- configuration: exact reason and message, edges -------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "reason", "message"),
    [
        ({"before": -timedelta(microseconds=1)}, "bad_window", "must not be negative"),
        ({"after": -timedelta(microseconds=1)}, "bad_window", "must not be negative"),
        ({"rate_limit": 0}, "bad_rate", "rate_limit must be at least 1 per minute"),
    ],
)
def test_bad_configuration_reason_and_message(
    kwargs: dict[str, Any], reason: str, message: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        _service(MemoryJoinStore(), FakeClock(START), **kwargs)
    assert info.value.reason == reason
    expected = "join window margins must not be negative" if reason == "bad_window" else message
    assert str(info.value) == expected


async def test_zero_margins_and_a_limit_of_one_are_valid() -> None:
    clock = FakeClock(START)
    store = MemoryJoinStore()
    svc = _service(store, clock, before=timedelta(0), after=timedelta(0), rate_limit=1)
    token = await svc.issue("org-a", "meeting-1", START, END)
    row = await svc.resolve(token, client_key=CLIENT)  # valid exactly from start (before = 0)
    assert (row.not_before, row.not_after) == (START, END)
    with pytest.raises(JoinLinkRateLimitedError):
        await svc.resolve(token, client_key=CLIENT)  # the second attempt in the minute


async def test_default_rate_limit_is_30_per_minute() -> None:
    clock = FakeClock(START.replace(second=10))
    svc = _service(MemoryJoinStore(), clock)
    assert "limit=30" in repr(svc)
    for _ in range(30):
        with pytest.raises(JoinLinkInvalidError) as info:
            await svc.resolve(secrets.token_urlsafe(32), client_key=CLIENT)
        assert type(info.value) is JoinLinkInvalidError
    with pytest.raises(JoinLinkRateLimitedError):
        await svc.resolve(secrets.token_urlsafe(32), client_key=CLIENT)


async def test_key_length_edge_256_accepted_257_refused() -> None:
    svc = _service(MemoryJoinStore(), FakeClock(START))
    await svc.issue("o" * 256, "m" * 256, START, END)
    for org, ext in (("o" * 257, "m"), ("o", "m" * 257), ("", "m"), ("o", "")):
        with pytest.raises(ConfigurationError) as info:
            await svc.issue(org, ext, START, END)
        assert info.value.reason == "bad_key"
        assert str(info.value) == "org_id and external_id must be 1–256 chars"


async def test_window_order_edge_equal_start_and_end_is_valid() -> None:
    svc = _service(MemoryJoinStore(), FakeClock(START))
    await svc.issue("org-a", "meeting-1", START, START)
    for start, end in (
        (START, START - timedelta(microseconds=1)),
        (START.replace(tzinfo=None), END),
        (START, END.replace(tzinfo=None)),
    ):
        with pytest.raises(ConfigurationError) as info:
            await svc.issue("org-a", "meeting-1", start, end)
        assert info.value.reason == "bad_window"
        assert str(info.value) == "start/end must be aware and ordered"


async def test_weak_token_factory_reason_and_message() -> None:
    store = MemoryJoinStore()
    weak = _service(store, FakeClock(START), token_factory=lambda: "A" * 42)
    with pytest.raises(ConfigurationError) as info:
        await weak.issue("org-a", "meeting-1", START, END)
    assert (info.value.reason, str(info.value)) == (
        "bad_token",
        "token factory must return 256-bit base64url",
    )
    assert store.rows == {}


# -- rate-limit bucket ------------------------------------------------------------------------


async def test_bucket_is_namespaced_hashed_and_per_whole_minute() -> None:
    clock = FakeClock(START.replace(second=17, microsecond=250_000))
    store = MemoryJoinStore()
    svc = _service(store, clock, rate_limit=2)
    await svc.issue("org-a", "meeting-1", START, END)
    with pytest.raises(JoinLinkInvalidError):
        await svc.resolve(secrets.token_urlsafe(32), client_key=CLIENT)
    clock.now = START.replace(second=18, microsecond=999_999)
    with pytest.raises(JoinLinkInvalidError):
        await svc.resolve(secrets.token_urlsafe(32), client_key=CLIENT)
    bucket = "joinlink:" + _client_hash(CLIENT)[:32]
    assert store.hits == {(bucket, START.replace(second=0, microsecond=0)): 2}


async def test_retry_after_counts_to_the_end_of_the_minute() -> None:
    clock = FakeClock(START.replace(second=59, microsecond=1))
    svc = _service(MemoryJoinStore(), clock, rate_limit=1)
    with pytest.raises(JoinLinkInvalidError):
        await svc.resolve(secrets.token_urlsafe(32), client_key=CLIENT)
    with pytest.raises(JoinLinkRateLimitedError) as info:
        await svc.resolve(secrets.token_urlsafe(32), client_key=CLIENT)
    assert info.value.retry_after == 1  # 0.999999 s left, rounded down, plus one


async def test_any_client_key_even_a_lone_surrogate_is_counted() -> None:
    store = MemoryJoinStore()
    svc = _service(store, FakeClock(START), rate_limit=1)
    with pytest.raises(JoinLinkInvalidError) as info:
        await svc.resolve(secrets.token_urlsafe(32), client_key="\ud800")
    assert info.value.reason == "unknown"
    assert list(store.hits) == [("joinlink:" + _client_hash("\ud800")[:32], START)]


# -- security log records ---------------------------------------------------------------------


async def test_security_log_records_are_exact(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="teams_ehr")
    clock = FakeClock(START - timedelta(minutes=31))
    store = MemoryJoinStore()
    # In the minute of START: resolved, revoked, unknown, then the fourth attempt is limited
    # (malformed tokens are refused before they count).
    svc = _service(store, clock, rate_limit=3)
    token = await svc.issue("org-a", "meeting-1", START, END)
    prefix = token_hash(token)[:8]
    with pytest.raises(JoinLinkInvalidError):
        await svc.resolve(token, client_key=CLIENT)  # 31 min before start: not yet valid
    clock.now = START
    await svc.resolve(token, client_key=CLIENT)
    clock.now = END + timedelta(minutes=60)
    with pytest.raises(JoinLinkInvalidError):
        await svc.resolve(token, client_key=CLIENT)  # expired
    clock.now = START
    assert await svc.revoke("org-a", "meeting-1") == 1
    with pytest.raises(JoinLinkInvalidError):
        await svc.resolve(token, client_key=CLIENT)  # revoked
    with pytest.raises(JoinLinkInvalidError):
        await svc.resolve(secrets.token_urlsafe(32), client_key=CLIENT)  # unknown
    with pytest.raises(JoinLinkInvalidError):
        await svc.resolve("short", client_key=CLIENT)  # malformed
    with pytest.raises(JoinLinkRateLimitedError):
        await svc.resolve(token, client_key=CLIENT)
    client = _client_hash(CLIENT)[:8]
    assert _messages(caplog) == [
        ("join link issued for org org-a", None),
        (f"join link refused: not_yet_valid (org org-a, hash {prefix}…)", "not_yet_valid"),
        (f"join link resolved for org org-a (hash {prefix}…)", None),
        (f"join link refused: expired (org org-a, hash {prefix}…)", "expired"),
        ("join links revoked for org org-a: 1", None),
        (f"join link refused: revoked (org org-a, hash {prefix}…)", "revoked"),
        ("join link refused: unknown", "unknown"),
        ("join link refused: malformed", "malformed"),
        (f"join link refused: rate_limited (client {client}…)", "join_link_rate_limited"),
    ]

"""C4 / security.md T20: patient join links — hashing, windows, revocation, rate limits, no oracle."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joinlink_support import FakeClock, MemoryJoinStore, dump_sqlite, sqlite_store

from leaks import assert_no_leak
from teams_ehr.errors import ConfigurationError, JoinLinkInvalidError, JoinLinkRateLimitedError
from teams_ehr.visits.joinlinks import TOKEN_LENGTH, JoinLinkService, join_path, token_hash

pytestmark = pytest.mark.anyio

START = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
END = START + timedelta(minutes=30)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START - timedelta(minutes=5))


@pytest.fixture(params=["memory", "sqlite"])
def kind(request: pytest.FixtureRequest, anyio_backend: str) -> str:
    return str(request.param)


@asynccontextmanager
async def open_store(kind: str, clock: FakeClock) -> AsyncIterator[Any]:
    # Not an async fixture: anyio's trio runner cannot host async fixtures with trio 0.22.
    if kind == "memory":
        yield MemoryJoinStore()
        return
    async with sqlite_store(clock) as real:
        yield real


def service(store: Any, clock: FakeClock, **kw: Any) -> JoinLinkService:
    return JoinLinkService(store, store, clock=clock, **kw)


async def _refusal(svc: JoinLinkService, token: str, client: str = "203.0.113.7") -> Any:
    with pytest.raises(JoinLinkInvalidError) as info:
        await svc.resolve(token, client_key=client)
    return info.value


# -- issue and resolve ----------------------------------------------------------------------------


async def test_issue_then_resolve_multi_use(kind: str, clock: FakeClock) -> None:
    async with open_store(kind, clock) as store:
        svc = service(store, clock)
        token = await svc.issue("org-a", "meeting-1", START, END)
        assert len(token) == TOKEN_LENGTH
        assert join_path(token) == f"/j/{token}"
        for _ in range(3):  # a patient can rejoin inside the window
            row = await svc.resolve(token, client_key="198.51.100.1")
            assert (row.org_id, row.external_id) == ("org-a", "meeting-1")
            assert row.token_hash == token_hash(token)
            assert (row.not_before, row.not_after) == (
                START - timedelta(minutes=30),
                END + timedelta(minutes=60),
            )


async def test_plaintext_token_is_never_stored(kind: str, clock: FakeClock) -> None:
    async with open_store(kind, clock) as store:
        svc = service(store, clock)
        tokens = [await svc.issue("org-a", f"m{i}", START, END) for i in range(5)]
        await svc.resolve(tokens[0], client_key="198.51.100.1")
        dumped = store.dump() if isinstance(store, MemoryJoinStore) else dump_sqlite(store)
        assert token_hash(tokens[0]) in dumped
        assert_no_leak(tokens, dumped)
        assert_no_leak(["198.51.100.1"], dumped)  # the client key is only stored hashed


async def test_window_edges(kind: str, clock: FakeClock) -> None:
    async with open_store(kind, clock) as store:
        svc = service(store, clock)
        token = await svc.issue("org-a", "meeting-1", START, END)
        tick = timedelta(microseconds=1)
        opens, closes = START - timedelta(minutes=30), END + timedelta(minutes=60)
        for now, reason in [
            (opens - tick, "not_yet_valid"),
            (closes, "expired"),
            (closes + timedelta(days=1), "expired"),
        ]:
            clock.now = now
            assert (await _refusal(svc, token, client=str(now))).reason == reason
        for now in (opens, closes - tick):
            clock.now = now
            assert (await svc.resolve(token, client_key=str(now))).external_id == "meeting-1"


async def test_only_a_genuine_early_link_says_when_it_opens(kind: str, clock: FakeClock) -> None:
    """The page of a not-yet-valid link can say "opens at HH:MM" (issue 13); every other refusal,
    a guessed token's included, carries no time (T20: nothing to learn without a real token)."""
    async with open_store(kind, clock) as store:
        svc = service(store, clock)
        token = await svc.issue("org-a", "meeting-1", START, END)
        opens = START - timedelta(minutes=30)
        clock.now = opens - timedelta(minutes=5)
        assert (await _refusal(svc, token)).opens_at == opens
        assert (await _refusal(svc, "x" * 43, client="198.51.100.9")).opens_at is None
        clock.now = END + timedelta(days=1)
        refusal = await _refusal(svc, token, client="198.51.100.10")
        assert (refusal.reason, refusal.opens_at) == ("expired", None)


async def test_configurable_window(kind: str, clock: FakeClock) -> None:
    async with open_store(kind, clock) as store:
        svc = service(store, clock, before=timedelta(minutes=1), after=timedelta(0))
        token = await svc.issue("org-a", "m", START, END)
        clock.now = START - timedelta(minutes=2)
        assert (await _refusal(svc, token)).reason == "not_yet_valid"
        clock.now = END
        assert (await _refusal(svc, token)).reason == "expired"


async def test_revocation(kind: str, clock: FakeClock) -> None:
    async with open_store(kind, clock) as store:
        svc = service(store, clock)
        first = await svc.issue("org-a", "meeting-1", START, END)
        second = await svc.issue("org-a", "meeting-1", START, END)
        other = await svc.issue("org-a", "meeting-2", START, END)
        same_id_other_org = await svc.issue("org-b", "meeting-1", START, END)
        assert await svc.revoke("org-a", "meeting-1") == 2
        assert await svc.revoke("org-a", "meeting-1") == 0
        for token in (first, second):
            assert (await _refusal(svc, token)).reason == "revoked"
        assert (await svc.resolve(other, client_key="c")).external_id == "meeting-2"
        assert (await svc.resolve(same_id_other_org, client_key="c")).org_id == "org-b"


# -- no oracle ------------------------------------------------------------------------------------


async def test_guessing_and_tampering_give_one_uniform_answer(kind: str, clock: FakeClock) -> None:
    async with open_store(kind, clock) as store:
        svc = service(store, clock, rate_limit=1000)
        token = await svc.issue("org-a", "meeting-1", START, END)
        flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
        revoked_token = await svc.issue("org-a", "meeting-9", START, END)
        await svc.revoke("org-a", "meeting-9")
        expired_token = await svc.issue(
            "org-a", "meeting-8", START - timedelta(days=2), END - timedelta(days=2)
        )
        candidates = [
            *(secrets.token_urlsafe(32) for _ in range(50)),
            flipped,
            token[:-1],
            token + "A",
            token.swapcase(),
            "",
            "../../etc/passwd",
            token.replace(token[0], "%"),
            revoked_token,
            expired_token,
        ]
        errors = [await _refusal(svc, c) for c in candidates]
        assert {str(e) for e in errors} == {"join link is not valid"}
        assert {e.http_status_hint for e in errors} == {404}
        assert {e.reason for e in errors} == {"malformed", "unknown", "revoked", "expired"}
        assert_no_leak([token], *errors)


async def test_malformed_tokens_never_reach_the_store(clock: FakeClock) -> None:
    store = MemoryJoinStore()
    svc = service(store, clock)
    for bad in ["", "short", "x" * 44, "a" * 42 + "!", "a" * 42 + "=", "é" * 43, "a" * 10_000]:
        assert (await _refusal(svc, bad)).reason == "malformed"
    assert store.calls == 0


URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(guess=st.one_of(st.text(max_size=60), st.text(alphabet=URLSAFE, min_size=43, max_size=43)))
async def test_random_guesses_never_resolve(guess: str) -> None:
    store = MemoryJoinStore()
    svc = service(store, FakeClock(START), rate_limit=10_000)
    await svc.issue("org-a", "meeting-1", START, END)
    with pytest.raises(JoinLinkInvalidError) as info:
        await svc.resolve(guess, client_key="c")
    assert str(info.value) == "join link is not valid"


async def test_tokens_are_unique_and_high_entropy(clock: FakeClock) -> None:
    svc = service(MemoryJoinStore(), clock)
    tokens = {await svc.issue("org-a", "m", START, END) for _ in range(10_000)}
    assert len(tokens) == 10_000
    alphabet = {ch for t in tokens for ch in t}
    assert len(alphabet) == 64  # the full base64url alphabet is in use


# -- rate limits ----------------------------------------------------------------------------------


async def test_rate_limit_per_client_per_minute(kind: str, clock: FakeClock) -> None:
    async with open_store(kind, clock) as store:
        svc = service(store, clock, rate_limit=5)
        token = await svc.issue("org-a", "meeting-1", START, END)
        clock.now = START.replace(second=20)
        for _ in range(4):
            await _refusal(svc, secrets.token_urlsafe(32), client="203.0.113.7")
        await svc.resolve(token, client_key="203.0.113.7")  # fifth attempt, still allowed
        limited = await _refusal(svc, token, client="203.0.113.7")  # even a valid token
        assert isinstance(limited, JoinLinkRateLimitedError)
        assert (limited.http_status_hint, limited.retry_after, str(limited)) == (
            429,
            41,
            "join link is not valid",
        )
        # Another client is not affected; the next minute starts afresh.
        await svc.resolve(token, client_key="198.51.100.2")
        clock.now = START.replace(minute=1)
        await svc.resolve(token, client_key="203.0.113.7")


async def test_bruteforce_is_cut_off(clock: FakeClock) -> None:
    svc = service(MemoryJoinStore(), clock, rate_limit=20)
    outcomes = [type(await _refusal(svc, secrets.token_urlsafe(32))) for _ in range(1000)]
    assert outcomes.count(JoinLinkInvalidError) == 20
    assert outcomes.count(JoinLinkRateLimitedError) == 980


# -- logs and configuration -----------------------------------------------------------------------


async def test_logs_carry_reasons_not_tokens(
    kind: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_store(kind, clock) as store:
        caplog.set_level(logging.DEBUG, logger="teams_ehr")
        svc = service(store, clock, rate_limit=3)
        token = await svc.issue("org-a", "meeting-1", START, END)
        await svc.resolve(token, client_key="203.0.113.99")
        await svc.revoke("org-a", "meeting-1")
        altered = token[:-1] + ("A" if token[-1] != "A" else "B")
        for guess in (token, altered, secrets.token_urlsafe(32)):
            await _refusal(svc, guess, client="203.0.113.99")
        events = [r.security_event for r in caplog.records if hasattr(r, "security_event")]
        assert events == ["revoked", "unknown", "join_link_rate_limited"]
        assert "refused: revoked" in caplog.text
        assert "rate_limited" in caplog.text
        assert_no_leak([token, altered, "203.0.113.99", "meeting-1"], caplog.text)


@pytest.mark.parametrize(
    "kwargs",
    [{"before": timedelta(minutes=-1)}, {"after": timedelta(seconds=-1)}, {"rate_limit": 0}],
)
def test_bad_configuration(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        JoinLinkService(MemoryJoinStore(), MemoryJoinStore(), clock=FakeClock(START), **kwargs)


async def test_bad_issue_arguments(clock: FakeClock) -> None:
    svc = service(MemoryJoinStore(), clock)
    with pytest.raises(ConfigurationError):
        await svc.issue("org-a", "m", END, START)
    with pytest.raises(ConfigurationError):
        await svc.issue("org-a", "m", START.replace(tzinfo=None), END)
    with pytest.raises(ConfigurationError):
        await svc.issue("", "m", START, END)
    weak = JoinLinkService(
        MemoryJoinStore(), MemoryJoinStore(), clock=clock, token_factory=lambda: "1234"
    )
    with pytest.raises(ConfigurationError):
        await weak.issue("org-a", "m", START, END)


def test_repr_has_no_secrets(clock: FakeClock) -> None:
    assert "JoinLinkService" in repr(service(MemoryJoinStore(), clock))

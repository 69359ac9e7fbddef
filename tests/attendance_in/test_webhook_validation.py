"""The validation handshake (D1; security.md T21)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from teams_ehr.attendance.handshake import (
    MAX_VALIDATION_TOKEN_CHARS,
    PendingHandshakes,
    handle_validation,
)

pytestmark = pytest.mark.anyio
NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
BOTH = frozenset({"notification", "lifecycle"})


async def _pending() -> PendingHandshakes:
    handshakes = PendingHandshakes()
    await handshakes.open(NOW, BOTH)  # type: ignore[arg-type]
    return handshakes


async def test_validation_echo_plaintext_exact() -> None:
    raw = "validationToken=Validation%3A%20Testing%20client%20application%20reachability%20a%2Bb"
    result = await handle_validation(raw, handshakes=await _pending(), kind="notification", now=NOW)
    assert result.status == 200
    assert result.body == b"Validation: Testing client application reachability a+b"
    assert result.content_type == "text/plain; charset=utf-8"
    assert ("X-Content-Type-Options", "nosniff") in result.headers


async def test_framework_decoded_mapping_is_not_decoded_twice() -> None:
    token = "literal %41 stays"
    result = await handle_validation(
        {"validationToken": token}, handshakes=await _pending(), kind="lifecycle", now=NOW
    )
    assert result.body == token.encode()


async def test_validation_token_xss_payload_not_html() -> None:
    payload = "<script>alert(1)</script>"
    result = await handle_validation(
        {"validationToken": payload}, handshakes=await _pending(), kind="notification", now=NOW
    )
    assert result.status == 200
    assert result.content_type.startswith("text/plain")
    assert ("X-Content-Type-Options", "nosniff") in result.headers


async def test_validation_without_pending_subscription_404() -> None:
    result = await handle_validation(
        {"validationToken": "t"}, handshakes=PendingHandshakes(), kind="notification", now=NOW
    )
    assert result.status == 404
    assert b"t" not in result.body.replace(b"not found", b"")


async def _status(handshakes: PendingHandshakes, kind: str, now: datetime) -> int:
    result = await handle_validation(
        {"validationToken": "t"},
        handshakes=handshakes,
        kind=kind,
        now=now,  # type: ignore[arg-type]
    )
    return result.status


async def test_validation_only_within_the_window() -> None:
    handshakes = await _pending()
    assert await _status(handshakes, "notification", NOW + timedelta(seconds=9)) == 200
    assert await _status(handshakes, "notification", NOW + timedelta(seconds=11)) == 404


async def test_validation_window_closed_after_creation() -> None:
    handshakes = PendingHandshakes()
    handle = await handshakes.open(NOW, frozenset({"notification"}))
    assert await _status(handshakes, "lifecycle", NOW) == 404
    assert await _status(handshakes, "notification", NOW) == 200
    await handshakes.close(handle)
    assert await _status(handshakes, "notification", NOW) == 404


@pytest.mark.parametrize(
    "query",
    [
        {"validationToken": "x" * (MAX_VALIDATION_TOKEN_CHARS + 1)},
        {},
        "validationToken=" + "y" * (MAX_VALIDATION_TOKEN_CHARS + 1),
        "&".join(f"a{i}=1" for i in range(50)),
    ],
)
async def test_validation_overlong_or_missing_400(query: object) -> None:
    result = await handle_validation(
        query, handshakes=await _pending(), kind="notification", now=NOW
    )  # type: ignore[arg-type]
    assert result.status == 400


async def test_validation_token_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    token = "secret-validation-canary"
    await handle_validation(
        {"validationToken": token}, handshakes=PendingHandshakes(), kind="notification", now=NOW
    )
    await handle_validation(
        {"validationToken": token}, handshakes=await _pending(), kind="notification", now=NOW
    )
    assert token not in caplog.text

"""Patient join links ``/j/<token>`` for text and e-mail invitations (threat T20, docs/security.md).

:class:`JoinLinkService` issues an opaque 256-bit token per meeting, stores only its SHA-256 with
the meeting and a validity window, resolves it with one uniform refusal whatever the cause, rate
limits attempts per client and revokes every link of a meeting on cancel or reschedule (OWASP
ASVS 2.4.1, 11.5.1). Logs carry reason codes and at most an 8-character prefix of the token
*hash*, never the token, and the client key only hashed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import NoReturn

from teams_ehr._redact import get_logger
from teams_ehr._types import Clock
from teams_ehr.errors import ConfigurationError, JoinLinkInvalidError, JoinLinkRateLimitedError
from teams_ehr.store.protocol import JoinLinkRow, JoinLinkStore, NonceStore

__all__ = [
    "JOIN_PATH_PREFIX",
    "TOKEN_LENGTH",
    "JoinLinkService",
    "join_path",
    "token_hash",
]

JOIN_PATH_PREFIX = "/j/"
TOKEN_LENGTH = 43  # secrets.token_urlsafe(32): 32 bytes, base64url without padding
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")
_MAX_KEY = 256
_INVALID_MESSAGE = "join link is not valid"
_RATE_WINDOW = timedelta(minutes=1)

_log = get_logger(__name__)


def token_hash(token: str) -> str:
    """SHA-256 hex of a join token: the only form that is stored or compared."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def join_path(token: str) -> str:
    """The path of a join link (``/j/<token>``); the host prefixes the app's base URL."""
    return f"{JOIN_PATH_PREFIX}{token}"


def _default_token() -> str:
    return secrets.token_urlsafe(32)


def _invalid(reason: str, opens_at: datetime | None = None) -> JoinLinkInvalidError:
    return JoinLinkInvalidError(_INVALID_MESSAGE, reason=reason, opens_at=opens_at)


class JoinLinkService:
    """Issue, resolve and revoke join links over a :class:`JoinLinkStore` (threat T20).

    Rules:

    * the token is 256 bits from the OS CSPRNG (``secrets.token_urlsafe(32)``: 43 URL-safe
      characters) and opaque: it encodes no appointment, name or date;
    * only ``SHA-256(token)`` is stored, with the organization, the meeting's external id and the
      validity window ``start − before`` … ``end + after`` (30 and 60 minutes by default). The
      window is half-open: valid from ``not_before`` inclusive until ``not_after`` exclusive;
    * links are multi-use inside the window so a patient can rejoin (the Teams lobby, where the
      clinician admits them, is the authorization control), and revocable per meeting;
    * every refusal — malformed, unknown, not yet valid, expired, revoked — raises
      :class:`~teams_ehr.errors.JoinLinkInvalidError` with the *same* message and status (404);
      only the internal ``reason`` differs, for logs and metrics;
    * attempts are rate-limited per client key (e.g. the client IP) per minute through
      :meth:`NonceStore.count_hit <teams_ehr.store.protocol.NonceStore.count_hit>`; past the limit
      :class:`~teams_ehr.errors.JoinLinkRateLimitedError` (a ``JoinLinkInvalidError`` with status
      429 and the same message: the status tells a client to slow down, never whether a token
      exists).

    The format is checked before any store call, and the lookup is by hash, so response time does
    not depend on how much of a guessed token matches.
    """

    def __init__(
        self,
        store: JoinLinkStore,
        nonces: NonceStore,
        *,
        clock: Clock,
        before: timedelta = timedelta(minutes=30),
        after: timedelta = timedelta(minutes=60),
        rate_limit: int = 30,
        token_factory: Callable[[], str] = _default_token,
    ) -> None:
        if before < timedelta(0) or after < timedelta(0):
            raise ConfigurationError(
                "join window margins must not be negative", reason="bad_window"
            )
        if rate_limit < 1:
            raise ConfigurationError("rate_limit must be at least 1 per minute", reason="bad_rate")
        self._store = store
        self._nonces = nonces
        self._clock = clock
        self._before = before
        self._after = after
        self._rate_limit = rate_limit
        self._token_factory = token_factory

    def __repr__(self) -> str:
        return f"<JoinLinkService window=-{self._before}/+{self._after} limit={self._rate_limit}>"

    async def issue(self, org_id: str, external_id: str, start: datetime, end: datetime) -> str:
        """Store a new link for the meeting and return its token (shown once, never stored)."""
        for value in (org_id, external_id):
            if not value or len(value) > _MAX_KEY:
                raise ConfigurationError(
                    "org_id and external_id must be 1–256 chars", reason="bad_key"
                )
        if start.tzinfo is None or end.tzinfo is None or end < start:
            raise ConfigurationError("start/end must be aware and ordered", reason="bad_window")
        token = self._token_factory()
        if not _TOKEN.match(token):
            raise ConfigurationError(
                "token factory must return 256-bit base64url", reason="bad_token"
            )
        await self._store.put_join_link(
            JoinLinkRow(
                token_hash=token_hash(token),
                org_id=org_id,
                external_id=external_id,
                not_before=start - self._before,
                not_after=end + self._after,
            )
        )
        _log.info("join link issued for org %s", org_id)
        return token

    async def resolve(self, token: str, *, client_key: str) -> JoinLinkRow:
        """The link's row if ``token`` is valid now; :class:`JoinLinkInvalidError` otherwise."""
        now = self._clock()
        if not isinstance(token, str) or not _TOKEN.match(token):
            self._refused("malformed", None)
        await self._check_rate(client_key, now)
        digest = token_hash(token)
        row = await self._store.get_join_link(digest)
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            self._refused("unknown", None)
        if row.revoked:
            self._refused("revoked", row)
        if now < row.not_before:
            self._refused("not_yet_valid", row)
        if now >= row.not_after:
            self._refused("expired", row)
        _log.info("join link resolved for org %s (hash %s…)", row.org_id, digest[:8])
        return row

    async def revoke(self, org_id: str, external_id: str) -> int:
        """Revoke every link of the meeting (cancel or reschedule); returns how many."""
        count = await self._store.revoke_join_links(org_id, external_id)
        _log.info("join links revoked for org %s: %d", org_id, count)
        return count

    async def _check_rate(self, client_key: str, now: datetime) -> None:
        window_start = now.replace(second=0, microsecond=0)
        key = client_key.encode("utf-8", "surrogatepass")  # any str, even a lone surrogate
        bucket = "joinlink:" + hashlib.sha256(key).hexdigest()[:32]
        hits = await self._nonces.count_hit(bucket, window_start=window_start)
        if hits > self._rate_limit:
            retry_after = int((window_start + _RATE_WINDOW - now).total_seconds()) + 1
            _log.warning(
                "join link refused: rate_limited (client %s…)",
                bucket[9:17],
                extra={"security_event": "join_link_rate_limited"},
            )
            raise JoinLinkRateLimitedError(_INVALID_MESSAGE, retry_after=retry_after)

    @staticmethod
    def _refused(reason: str, row: JoinLinkRow | None) -> NoReturn:
        if row is None:
            _log.info("join link refused: %s", reason, extra={"security_event": reason})
        else:
            _log.info(
                "join link refused: %s (org %s, hash %s…)",
                reason,
                row.org_id,
                row.token_hash[:8],
                extra={"security_event": reason},
            )
        # the holder of a genuine link that has not opened yet is told when it opens (the status
        # stays the uniform 404; a guessed token never reaches a row)
        opens_at = row.not_before if row is not None and reason == "not_yet_valid" else None
        raise _invalid(reason, opens_at)

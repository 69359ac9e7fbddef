"""A JWKS cache for verifying inbound JWTs (requirement A7, threat T12).

Rules, each from threat T12 (PyJWT's ``PyJWKClient`` refetches on every unknown ``kid``, blocks the
event loop and forgets its keys when a fetch fails, so it is not used):

* keys only from the ``jwks_uri`` the caller pinned (discovered and snapshotted), https only
  (``allow_http`` is for loopback tests), never redirected, body ≤ 64 KiB;
* TTL = ``Cache-Control: max-age`` clamped to [5 min, 24 h]; ``no-cache``/``no-store``/absent → 5 min;
* an unknown ``kid`` triggers at most one refetch per ``unknown_kid_refetch_interval`` (60 s) per
  ``jwks_uri``; concurrent callers share one fetch (single-flight);
* when the endpoint is down, the last good set is served for ``serve_stale_for`` (24 h) past its
  expiry, then verification fails closed;
* only keys with ``use`` ``sig`` (or absent), a ``kty`` (and EC curve) that fits the algorithm,
  and an ``alg`` that is absent or equal to it are candidates; several candidates are refused
  (SMART asymmetric server rules: "zero or several matches fail").

:meth:`JwksCache.key_flow` is the sans-IO core: it yields a GET only when the cache needs one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import jwt

from teams_ehr._concurrency import KeyedLocks, KeyedThreadLocks
from teams_ehr._redact import get_logger, redact_url
from teams_ehr._types import Clock, Flow, utc_now
from teams_ehr.errors import ConfigurationError, RemoteError, TokenInvalidError, TransportError
from teams_ehr.sansio import run_async, run_sync, with_max_bytes

__all__ = ["JWKS_UNAVAILABLE", "JwksCache", "kty_for_alg"]

_log = get_logger(__name__)

JWKS_UNAVAILABLE = "jwks_unavailable"
"""``reason`` of the :class:`~teams_ehr.errors.RemoteError` raised when no usable set is left."""

_KTY = {"RS": "RSA", "PS": "RSA", "ES": "EC"}
_CURVE = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


def kty_for_alg(alg: str) -> str | None:
    """The JWK ``kty`` an asymmetric JWS algorithm needs (``None``: not an allowed algorithm)."""
    if alg == "EdDSA":
        return "OKP"
    if alg[:2] in _KTY and alg[2:] in ("256", "384", "512"):
        return _KTY[alg[:2]]
    return None


@dataclass
class _KeySet:
    keys: tuple[Mapping[str, Any], ...]
    expires_at: datetime


@dataclass
class _UriState:
    key_set: _KeySet | None = None
    last_attempt: datetime | None = None
    parsed: dict[tuple[str | None, str], jwt.PyJWK] = field(default_factory=dict)


class _FetchFailedError(Exception):
    """Internal: the JWKS response was unusable (status, redirect, JSON, shape)."""


class JwksCache:
    """Per-``jwks_uri`` cache of signing keys; share one instance per process."""

    def __init__(
        self,
        *,
        clock: Clock = utc_now,
        min_ttl: timedelta = timedelta(seconds=300),
        max_ttl: timedelta = timedelta(hours=24),
        unknown_kid_refetch_interval: timedelta = timedelta(seconds=60),
        serve_stale_for: timedelta = timedelta(hours=24),
        max_bytes: int = 65_536,
        allow_http: bool = False,
    ) -> None:
        if not timedelta(0) < min_ttl <= max_ttl:
            raise ConfigurationError("need 0 < min_ttl ≤ max_ttl", reason="bad_jwks_ttl")
        self._clock = clock
        self._min_ttl, self._max_ttl = min_ttl, max_ttl
        self._refetch_interval = unknown_kid_refetch_interval
        self._serve_stale_for = serve_stale_for
        self._max_bytes = max_bytes
        self._allow_http = allow_http
        self._states: dict[str, _UriState] = {}
        self._async_locks = KeyedLocks()
        self._sync_locks = KeyedThreadLocks()

    # -- sans-IO core ---------------------------------------------------------------------------

    def key_flow(self, jwks_uri: str, kid: str | None, alg: str) -> Flow[jwt.PyJWK]:
        """The verification key for (``kid``, ``alg``); yields a GET only if the cache needs it."""
        self._check_uri(jwks_uri)
        if kty_for_alg(alg) is None:
            raise TokenInvalidError("algorithm not allowed", reason="alg_not_allowed")
        state = self._states.setdefault(jwks_uri, _UriState())
        now = self._clock()
        may_fetch = state.last_attempt is None or now - state.last_attempt >= self._refetch_interval
        if state.key_set is not None and now < state.key_set.expires_at:
            key = self._select(state, kid, alg)
            if key is not None:
                return key
            if not may_fetch:
                raise TokenInvalidError("no key with this kid", reason="unknown_kid")
        elif not may_fetch:
            return self._stale_or_fail(state, kid, alg, now, None)

        request = httpx.Request("GET", jwks_uri, headers={"Accept": "application/json"})
        failure: Exception | None = None
        try:
            response = yield with_max_bytes(request, self._max_bytes)
            now = self._clock()
            state.key_set = self._parse(response, now)
            state.parsed.clear()
        except (TransportError, _FetchFailedError) as exc:
            now, failure = self._clock(), exc
        state.last_attempt = now
        if failure is not None:
            _log.warning("JWKS fetch from %s failed: %s", redact_url(jwks_uri), failure)
            return self._stale_or_fail(state, kid, alg, now, failure)
        key = self._select(state, kid, alg)
        if key is None:
            raise TokenInvalidError("no key with this kid", reason="unknown_kid")
        return key

    # -- drivers with single-flight -------------------------------------------------------------

    async def get_key(
        self, client: httpx.AsyncClient, jwks_uri: str, kid: str | None, alg: str
    ) -> jwt.PyJWK:
        """:meth:`key_flow` on ``client``; concurrent fetches for one ``jwks_uri`` are shared."""
        probe = self.key_flow(jwks_uri, kid, alg)
        try:
            next(probe)
        except StopIteration as hit:
            return hit.value  # type: ignore[no-any-return]
        probe.close()
        async with self._async_locks.hold(
            jwks_uri
        ):  # the first caller fetches; the others re-check the cache
            return await run_async(self.key_flow(jwks_uri, kid, alg), client)

    def get_key_sync(
        self, client: httpx.Client, jwks_uri: str, kid: str | None, alg: str
    ) -> jwt.PyJWK:
        """:meth:`key_flow` on a synchronous client; threads share one fetch per ``jwks_uri``."""
        with self._sync_locks.hold(jwks_uri):
            return run_sync(self.key_flow(jwks_uri, kid, alg), client)

    # -- internals ------------------------------------------------------------------------------

    def _check_uri(self, jwks_uri: str) -> None:
        scheme = httpx.URL(jwks_uri).scheme
        if scheme != "https" and not (self._allow_http and scheme == "http"):
            raise ConfigurationError("jwks_uri must use https", reason="jwks_uri_not_https")

    def _parse(self, response: httpx.Response, now: datetime) -> _KeySet:
        if response.status_code != 200:
            raise _FetchFailedError(f"status {response.status_code}")
        try:
            document = json.loads(response.content)
        except (ValueError, RecursionError):
            raise _FetchFailedError("not JSON") from None
        keys = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(keys, list):
            raise _FetchFailedError("not a JWK Set")
        usable = tuple(
            k
            for k in keys
            if isinstance(k, dict)
            and k.get("use", "sig") == "sig"
            and isinstance(k.get("kid", ""), str)
        )
        return _KeySet(usable, now + self._ttl(response.headers.get("cache-control", "")))

    def _ttl(self, cache_control: str) -> timedelta:
        directives = {d.strip().lower() for d in cache_control.split(",")}
        if directives & {"no-cache", "no-store"}:
            return self._min_ttl
        for directive in directives:
            name, _, value = directive.partition("=")
            digits = value.strip()
            if name == "max-age" and digits.isascii() and digits.isdigit():
                # more than 9 digits is over 31 years: past any max_ttl (and past timedelta)
                seconds = self._max_ttl if len(digits) > 9 else timedelta(seconds=int(digits))
                return min(max(seconds, self._min_ttl), self._max_ttl)
        return self._min_ttl

    def _select(self, state: _UriState, kid: str | None, alg: str) -> jwt.PyJWK | None:
        cached = state.parsed.get((kid, alg))
        if cached is not None or state.key_set is None:
            return cached
        candidates = [k for k in state.key_set.keys if _fits(k, kid, alg)]
        if not candidates:
            return None
        if len(candidates) > 1:
            raise TokenInvalidError("several keys match", reason="ambiguous_key")
        try:
            key = jwt.PyJWK(dict(candidates[0]), algorithm=alg)
        except jwt.PyJWTError:
            raise TokenInvalidError("the matching key is unusable", reason="unusable_key") from None
        state.parsed[(kid, alg)] = key
        return key

    def _stale_or_fail(
        self,
        state: _UriState,
        kid: str | None,
        alg: str,
        now: datetime,
        cause: Exception | None,
    ) -> jwt.PyJWK:
        key_set = state.key_set
        if key_set is None or now >= key_set.expires_at + self._serve_stale_for:
            error = RemoteError("JWKS unavailable", reason=JWKS_UNAVAILABLE)
            raise error from cause
        key = self._select(state, kid, alg)
        if key is None:
            raise TokenInvalidError("no key with this kid", reason="unknown_kid")
        return key


def _fits(jwk: Mapping[str, Any], kid: str | None, alg: str) -> bool:
    if kid is not None and jwk.get("kid") != kid:
        return False
    if jwk.get("kty") != kty_for_alg(alg) or jwk.get("alg", alg) != alg:
        return False
    return alg not in _CURVE or jwk.get("crv") == _CURVE[alg]

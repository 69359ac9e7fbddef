"""SMART discovery: ``.well-known/smart-configuration`` with a CapabilityStatement fallback (requirement A2).

Sources: SMART App Launch 2.x conformance.md (the path is appended to the FHIR base; JSON whatever
``Accept`` says; relative URLs from legacy servers resolved against the base; the
``oauth-uris`` CapabilityStatement extension is deprecated but Epic still documents it), Epic
(fhir.epic.com/Documentation?docId=oauth2: send ``Epic-Client-ID``, ``/metadata`` needs ``Accept:
application/fhir+json``, cache the result), threat T03 (no redirects, https only, size cap,
compare with the snapshot taken at approval and refuse on mismatch) and threat T05 (PKCE ``S256`` is
required; a ``plain``-only server is refused).

Legacy servers that omit ``code_challenge_methods_supported`` (the field is REQUIRED since SMART
2.0, and absent from every ``/metadata`` fallback) are refused with
:class:`PkceUnsupportedError` unless the caller opts in with ``allow_missing_pkce_metadata=True``
— then PKCE ``S256`` is still always sent; the opt-in only skips the advertisement check.

:class:`DiscoveryCache` keeps validated configurations per (base, client id) for a TTL and
fetches each at most once at a time (single flight), so a burst of launches against one issuer
costs one request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from teams_ehr._concurrency import KeyedLocks, KeyedThreadLocks
from teams_ehr._types import Clock, Flow, utc_now
from teams_ehr.errors import (
    DiscoveryError,
    LaunchParameterError,
    MetadataMismatchError,
    PkceUnsupportedError,
)
from teams_ehr.sansio import run_async, run_sync, with_max_bytes
from teams_ehr.smart.canonical import canonical_fhir_base

__all__ = [
    "DISCOVERY_MAX_BYTES",
    "DiscoveryCache",
    "DiscoverySnapshot",
    "OpenIdConfiguration",
    "SmartConfiguration",
    "compare_snapshot",
    "discovery_flow",
    "openid_configuration_flow",
    "require_pkce_s256",
]

DISCOVERY_MAX_BYTES = 64 * 1024
METADATA_MAX_BYTES = 4 * 1024 * 1024  # Epic's CapabilityStatement is several hundred KB
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
_URL_FIELDS = (
    "authorization_endpoint",
    "token_endpoint",
    "jwks_uri",
    "registration_endpoint",
    "management_endpoint",
    "introspection_endpoint",
    "revocation_endpoint",
)
_OAUTH_URI_NAMES = {
    "authorize": "authorization_endpoint",
    "token": "token_endpoint",
    "register": "registration_endpoint",
    "manage": "management_endpoint",
    "introspect": "introspection_endpoint",
    "revoke": "revocation_endpoint",
}


class SmartConfiguration(BaseModel):
    """The server's SMART configuration (conformance.md §"Metadata"); vendor keys kept."""

    model_config = ConfigDict(frozen=True, extra="allow", hide_input_in_errors=True)

    issuer: str | None = None
    jwks_uri: str | None = None
    authorization_endpoint: str | None = None
    token_endpoint: str
    grant_types_supported: tuple[str, ...] = ()
    token_endpoint_auth_methods_supported: tuple[str, ...] = ()
    token_endpoint_auth_signing_alg_values_supported: tuple[str, ...] | None = None
    registration_endpoint: str | None = None
    scopes_supported: tuple[str, ...] = ()
    response_types_supported: tuple[str, ...] = ()
    management_endpoint: str | None = None
    introspection_endpoint: str | None = None
    revocation_endpoint: str | None = None
    capabilities: tuple[str, ...] = ()
    code_challenge_methods_supported: tuple[str, ...] | None = None
    authorization_response_iss_parameter_supported: bool = False

    def supports(self, capability: str) -> bool:
        return capability in self.capabilities


class DiscoverySnapshot(BaseModel):
    """The endpoints approved for an organization environment (threat T03)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    issuer: str | None
    authorization_endpoint: str | None
    token_endpoint: str
    jwks_uri: str | None

    @classmethod
    def of(cls, configuration: SmartConfiguration) -> DiscoverySnapshot:
        return cls(
            issuer=configuration.issuer,
            authorization_endpoint=configuration.authorization_endpoint,
            token_endpoint=configuration.token_endpoint,
            jwks_uri=configuration.jwks_uri,
        )


def compare_snapshot(
    current: SmartConfiguration | DiscoverySnapshot, approved: DiscoverySnapshot
) -> None:
    """Raise :class:`MetadataMismatchError` naming the fields that differ from the approval.

    Never updates the snapshot: a change needs a new approval (threat T03).
    """
    now = current if isinstance(current, DiscoverySnapshot) else DiscoverySnapshot.of(current)
    changed = [
        name
        for name in DiscoverySnapshot.model_fields
        if getattr(now, name) != getattr(approved, name)
    ]
    if changed:
        raise MetadataMismatchError(f"discovered metadata differs from the approval: {changed}")


def require_pkce_s256(configuration: SmartConfiguration, *, allow_missing: bool = False) -> None:
    """Refuse a server that does not advertise PKCE ``S256`` (threat T05); see the module docstring."""
    methods = configuration.code_challenge_methods_supported
    if methods is None:
        if allow_missing:
            return
        raise PkceUnsupportedError(
            "server does not advertise code_challenge_methods_supported", reason="pkce_unadvertised"
        )
    if "S256" not in methods:
        raise PkceUnsupportedError("server does not offer PKCE S256")


def _check_url(value: str, *, base: str, allow_http: bool, name: str) -> str:
    try:
        url = urljoin(base + "/", value)
        parts = urlsplit(url)
    except ValueError:  # urllib refuses it outright, e.g. "https://[x" (an unclosed IPv6 host)
        raise DiscoveryError(
            f"{name} is not a usable absolute URL", reason="bad_endpoint"
        ) from None
    if parts.scheme != "https" and not (allow_http and parts.scheme == "http"):
        raise DiscoveryError(f"{name} is not an https URL", reason="insecure_endpoint")
    if not parts.hostname or parts.username or parts.password or parts.fragment:
        raise DiscoveryError(f"{name} is not a usable absolute URL", reason="bad_endpoint")
    try:  # the host rules of the FHIR base: no IP literal, localhost or numeric host (threat T29)
        canonical_fhir_base(f"{parts.scheme}://{parts.netloc}", allow_http=allow_http)
    except LaunchParameterError:
        raise DiscoveryError(f"{name} is on an internal host", reason="internal_endpoint") from None
    return url


def _has_scheme(url: str) -> bool:
    try:
        return urlsplit(url).scheme != ""
    except ValueError:
        return False


def _normalize(raw: dict[str, Any], *, base: str, allow_http: bool) -> SmartConfiguration:
    data = dict(raw)
    for name in _URL_FIELDS:
        value = data.get(name)
        if value == "":  # absent, not a reference to the FHIR base itself (RFC 3986 §5.2)
            data[name] = None
        elif value is not None:
            if not isinstance(value, str):
                raise DiscoveryError(f"{name} is not a string", reason="bad_endpoint")
            data[name] = _check_url(value, base=base, allow_http=allow_http, name=name)
    issuer = data.get("issuer")
    if issuer is not None and (not isinstance(issuer, str) or not _has_scheme(issuer)):
        raise DiscoveryError("issuer is not an absolute URL", reason="bad_endpoint")
    if not data.get("token_endpoint"):
        raise DiscoveryError(
            "SMART configuration has no token_endpoint", reason="no_token_endpoint"
        )
    try:
        return SmartConfiguration.model_validate(data)
    except ValidationError:
        raise DiscoveryError(
            "SMART configuration is invalid", reason="invalid_configuration"
        ) from None


def _json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        data = json.loads(response.content)
    except (ValueError, RecursionError):
        raise DiscoveryError(f"{what} is not JSON", reason="invalid_configuration") from None
    if not isinstance(data, dict):
        raise DiscoveryError(f"{what} is not a JSON object", reason="invalid_configuration")
    return data


def _check_status(response: httpx.Response, what: str) -> None:
    if response.is_redirect or 300 <= response.status_code < 400:
        raise DiscoveryError(
            f"{what} answered with a redirect (not followed)",
            reason="discovery_redirect",
            status_code=response.status_code,
        )
    if response.status_code != 200:
        raise DiscoveryError(
            f"{what} answered {response.status_code}",
            reason="discovery_status",
            status_code=response.status_code,
        )


def _items(value: Any) -> list[Any]:
    """A JSON array as a list; anything else (a peer's mistake) as no items."""
    return value if isinstance(value, list) else []


def _oauth_uris(capability: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for rest in _items(capability.get("rest")):
        security = rest.get("security") if isinstance(rest, dict) else None
        if not isinstance(security, dict):
            continue
        for extension in _items(security.get("extension")):
            if not isinstance(extension, dict) or extension.get("url") != OAUTH_URIS:
                continue
            for inner in _items(extension.get("extension")):
                if not isinstance(inner, dict):
                    continue
                name = _OAUTH_URI_NAMES.get(str(inner.get("url")))
                if name and isinstance(inner.get("valueUri"), str):
                    found[name] = inner["valueUri"]
    return found


def discovery_flow(
    fhir_base: str,
    *,
    epic_client_id: str | None = None,
    allow_http: bool = False,
    require_pkce: bool = True,
    allow_missing_pkce_metadata: bool = False,
) -> Flow[SmartConfiguration]:
    """Fetch and validate the SMART configuration of ``fhir_base`` (sans-IO)."""
    base = canonical_fhir_base(fhir_base, allow_http=allow_http)
    headers = {"Accept": "application/json"}
    if epic_client_id:
        headers["Epic-Client-ID"] = epic_client_id
    request = httpx.Request("GET", base + "/.well-known/smart-configuration", headers=headers)
    response = yield with_max_bytes(request, DISCOVERY_MAX_BYTES)
    if response.status_code in (404, 410):
        headers["Accept"] = "application/fhir+json"
        request = httpx.Request("GET", base + "/metadata", headers=headers)
        response = yield with_max_bytes(request, METADATA_MAX_BYTES)
        _check_status(response, "CapabilityStatement")
        raw: dict[str, Any] = _oauth_uris(_json_object(response, "CapabilityStatement"))
        if not raw:
            raise DiscoveryError("no SMART endpoints advertised", reason="no_smart_endpoints")
    else:
        _check_status(response, "smart-configuration")
        raw = _json_object(response, "smart-configuration")
    configuration = _normalize(raw, base=base, allow_http=allow_http)
    if require_pkce:
        require_pkce_s256(configuration, allow_missing=allow_missing_pkce_metadata)
    return configuration


class OpenIdConfiguration(BaseModel):
    """The OpenID Provider metadata we use (OIDC Discovery 1.0 §3); vendor keys kept."""

    model_config = ConfigDict(frozen=True, extra="allow", hide_input_in_errors=True)

    issuer: str
    jwks_uri: str
    id_token_signing_alg_values_supported: tuple[str, ...] = ()


def openid_configuration_flow(
    base: str, *, epic_client_id: str | None = None, allow_http: bool = False
) -> Flow[OpenIdConfiguration]:
    """``GET {base}/.well-known/openid-configuration``: the OIDC issuer and its ``jwks_uri``.

    SMART app-launch §"fhirUser": used when the SMART configuration omits ``issuer`` or
    ``jwks_uri``; Epic serves it under the R4 base since Aug 2021
    (fhir.epic.com/Documentation?docId=oauth2). Epic's OIDC issuer differs from the FHIR base, so
    the issuer is taken from here, never guessed.
    """
    root = canonical_fhir_base(base, allow_http=allow_http)
    headers = {"Accept": "application/json"}
    if epic_client_id:
        headers["Epic-Client-ID"] = epic_client_id
    request = httpx.Request("GET", root + "/.well-known/openid-configuration", headers=headers)
    response = yield with_max_bytes(request, DISCOVERY_MAX_BYTES)
    _check_status(response, "openid-configuration")
    raw = _json_object(response, "openid-configuration")
    jwks_uri = raw.get("jwks_uri")
    if not isinstance(jwks_uri, str):
        raise DiscoveryError("openid-configuration has no jwks_uri", reason="no_jwks_uri")
    raw["jwks_uri"] = _check_url(jwks_uri, base=root, allow_http=allow_http, name="jwks_uri")
    try:
        return OpenIdConfiguration.model_validate(raw)
    except ValidationError:
        raise DiscoveryError("openid-configuration is invalid", reason="invalid_openid") from None


@dataclass(frozen=True, slots=True)
class _Entry:
    configuration: SmartConfiguration
    fetched_at: datetime


class DiscoveryCache:
    """Validated configurations per (canonical base, Epic client id), for ``ttl``.

    ``get`` (async, anyio) and ``get_sync`` (threads) each fetch a missing or stale entry once
    while concurrent callers wait for it (single flight); failures are not cached.
    """

    def __init__(
        self,
        *,
        ttl: timedelta = timedelta(hours=1),
        clock: Clock = utc_now,
        allow_http: bool = False,
        allow_missing_pkce_metadata: bool = False,
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._allow_http = allow_http
        self._allow_missing_pkce = allow_missing_pkce_metadata
        self._entries: dict[tuple[str, str | None], _Entry] = {}
        self._async_locks = KeyedLocks()
        self._thread_locks = KeyedThreadLocks()

    def _fresh(self, key: tuple[str, str | None]) -> SmartConfiguration | None:
        entry = self._entries.get(key)
        if entry is not None and self._clock() - entry.fetched_at < self._ttl:
            return entry.configuration
        return None

    def _flow(self, base: str, epic_client_id: str | None) -> Flow[SmartConfiguration]:
        return discovery_flow(
            base,
            epic_client_id=epic_client_id,
            allow_http=self._allow_http,
            allow_missing_pkce_metadata=self._allow_missing_pkce,
        )

    def _store(self, key: tuple[str, str | None], configuration: SmartConfiguration) -> None:
        self._entries[key] = _Entry(configuration, self._clock())

    def _key(self, base: str, epic_client_id: str | None) -> tuple[str, str | None]:
        return canonical_fhir_base(base, allow_http=self._allow_http), epic_client_id

    async def get(
        self, client: httpx.AsyncClient, base: str, *, epic_client_id: str | None = None
    ) -> SmartConfiguration:
        key = self._key(base, epic_client_id)
        cached = self._fresh(key)
        if cached is not None:
            return cached
        async with self._async_locks.hold(key):
            cached = self._fresh(key)
            if cached is None:
                cached = await run_async(self._flow(key[0], epic_client_id), client)
                self._store(key, cached)
            return cached

    def get_sync(
        self, client: httpx.Client, base: str, *, epic_client_id: str | None = None
    ) -> SmartConfiguration:
        key = self._key(base, epic_client_id)
        cached = self._fresh(key)
        if cached is not None:
            return cached
        with self._thread_locks.hold(key):
            cached = self._fresh(key)
            if cached is None:
                cached = run_sync(self._flow(key[0], epic_client_id), client)
                self._store(key, cached)
            return cached

    def invalidate(self, base: str, *, epic_client_id: str | None = None) -> None:
        self._entries.pop(self._key(base, epic_client_id), None)

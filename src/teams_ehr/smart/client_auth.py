"""Client authentication at the token endpoint (requirement A5, threats T09/T10).

* :class:`PrivateKeyJwt`: SMART client-confidential-asymmetric (RFC 7523 §2.2 and §3). Header
  ``alg``, ``kid``, ``typ: JWT`` (+ optional ``jku``, which SHALL equal the registered JWKS URL);
  claims ``iss = sub = client_id``, ``aud`` = the token endpoint, ``exp`` ≤ 5 minutes ahead (240 s
  by default, so 60 s of clock drift still passes the server's cap), ``iat`` and a string ``jti``
  (Epic: ≤ 151 characters, never reused).
* :class:`ClientSecretBasic`: SMART client-confidential-symmetric, HTTP Basic with both parts
  form-urlencoded first (RFC 6749 §2.3.1; Epic: "URL-encoded").
* :class:`PublicClient`: no authentication, ``client_id`` in the body (SMART app-launch §token).

:meth:`ClientAuthentication.token_request_auth` is called once per HTTP attempt, so every request
*and every retry* carries a fresh assertion.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol
from urllib.parse import quote_plus

from pydantic import SecretStr

from teams_ehr.errors import ConfigurationError
from teams_ehr.keys import Signer, sign_jws

__all__ = [
    "CLIENT_ASSERTION_TYPE",
    "ClientAuthentication",
    "ClientSecretBasic",
    "PrivateKeyJwt",
    "PublicClient",
    "choose_signing_alg",
]

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME_SECONDS = 300  # SMART: exp "no more than five minutes in the future"
MAX_JTI_LENGTH = 151  # Epic
_NBF_SKEW = timedelta(seconds=30)  # Threat T10: nbf, when sent, is now − 30 s


def _new_jti() -> str:
    return secrets.token_urlsafe(32)


class ClientAuthentication(Protocol):
    """How a client proves itself to a token endpoint."""

    @property
    def client_id(self) -> str: ...

    def token_request_auth(
        self, token_endpoint: str, *, now: datetime
    ) -> tuple[dict[str, str], dict[str, str]]:
        """(form fields, headers) to add to one token request attempt."""
        ...


class PrivateKeyJwt:
    """``private_key_jwt``: a fresh signed assertion per attempt (SMART asymmetric, RFC 7523)."""

    __slots__ = ("_client_id", "_include_nbf", "_jku", "_jti_factory", "_lifetime", "_signer")

    def __init__(
        self,
        client_id: str,
        signer: Signer,
        *,
        lifetime_seconds: int = 240,
        jku: str | None = None,
        jti_factory: Callable[[], str] = _new_jti,
        include_nbf: bool = False,
    ) -> None:
        if not client_id:
            raise ConfigurationError("client_id is required", reason="missing_client_id")
        if not 1 <= lifetime_seconds <= MAX_ASSERTION_LIFETIME_SECONDS:
            raise ConfigurationError(
                "assertion lifetime must be 1–300 seconds", reason="bad_assertion_lifetime"
            )
        self._client_id = client_id
        self._signer = signer
        self._lifetime = timedelta(seconds=lifetime_seconds)
        self._jku = jku
        self._jti_factory = jti_factory
        self._include_nbf = include_nbf

    @property
    def client_id(self) -> str:
        return self._client_id

    @property
    def signer(self) -> Signer:
        return self._signer

    def assertion(self, token_endpoint: str, *, now: datetime) -> str:
        """A signed client assertion for one request to ``token_endpoint``."""
        if now.tzinfo is None:
            raise ConfigurationError("now must be an aware datetime", reason="naive_datetime")
        jti = self._jti_factory()
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH:
            raise ConfigurationError("jti must be a 1–151 character string", reason="bad_jti")
        expires = now + self._lifetime
        claims: dict[str, str | int] = {
            "iss": self._client_id,
            "sub": self._client_id,
            "aud": token_endpoint,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": jti,
        }
        if self._include_nbf:
            earliest = expires - timedelta(seconds=MAX_ASSERTION_LIFETIME_SECONDS)
            claims["nbf"] = int(max(now - _NBF_SKEW, earliest).timestamp())
        header = {"typ": "JWT"}
        if self._jku is not None:
            header["jku"] = self._jku
        return sign_jws(self._signer, header, claims)

    def token_request_auth(
        self, token_endpoint: str, *, now: datetime
    ) -> tuple[dict[str, str], dict[str, str]]:
        form = {
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": self.assertion(token_endpoint, now=now),
        }
        return form, {}

    def __repr__(self) -> str:
        return f"<PrivateKeyJwt client_id={self._client_id!r} kid={self._signer.kid}>"


class ClientSecretBasic:
    """``client_secret_basic``: HTTP Basic with form-urlencoded id and secret (RFC 6749 §2.3.1)."""

    __slots__ = ("_client_id", "_client_secret")

    def __init__(self, client_id: str, client_secret: SecretStr) -> None:
        if not client_id or not client_secret.get_secret_value():
            raise ConfigurationError("client id and secret are required", reason="missing_secret")
        self._client_id = client_id
        self._client_secret = client_secret

    @property
    def client_id(self) -> str:
        return self._client_id

    def token_request_auth(
        self, token_endpoint: str, *, now: datetime
    ) -> tuple[dict[str, str], dict[str, str]]:
        user = quote_plus(self._client_id, safe="")
        password = quote_plus(self._client_secret.get_secret_value(), safe="")
        credentials = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        return {}, {"Authorization": f"Basic {credentials}"}

    def __repr__(self) -> str:
        return f"<ClientSecretBasic client_id={self._client_id!r}>"


class PublicClient:
    """A public client: no secret; ``client_id`` goes in the body (SMART app-launch)."""

    __slots__ = ("_client_id",)

    def __init__(self, client_id: str) -> None:
        if not client_id:
            raise ConfigurationError("client_id is required", reason="missing_client_id")
        self._client_id = client_id

    @property
    def client_id(self) -> str:
        return self._client_id

    def token_request_auth(
        self, token_endpoint: str, *, now: datetime
    ) -> tuple[dict[str, str], dict[str, str]]:
        return {"client_id": self._client_id}, {}

    def __repr__(self) -> str:
        return f"<PublicClient client_id={self._client_id!r}>"


def choose_signing_alg(server_algs: Sequence[str] | None, signer_alg: str) -> str:
    """Check the signer's alg against ``token_endpoint_auth_signing_alg_values_supported``.

    ``None`` means the server did not say, so the signer's alg is used; an empty intersection is a
    configuration error (threat T09 ``test_no_common_alg_refused``).
    """
    if server_algs is None or signer_alg in server_algs:
        return signer_alg
    raise ConfigurationError(
        f"the token endpoint does not accept {signer_alg}", reason="no_common_signing_alg"
    )

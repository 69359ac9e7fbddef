"""Property: any change to a security claim of a valid Entra id_token is refused (T11)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from entra_helpers import CLIENT_ID, CLINICIAN_OID, T0, TENANT, FakeClock
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from teams_ehr.errors import CrossTenantDeniedError, TokenInvalidError
from teams_ehr.sansio import run_sync
from teams_ehr.smart.jwks import JwksCache
from teams_ehr.teams.signin import EntraAppConfig, verify_id_token_flow
from teams_ehr.testing.fake_entra import FakeEntra

NONCE = "nonce-123"
NOW = int(T0.timestamp())
VALID: dict[str, Any] = {
    "iss": f"https://login.microsoftonline.com/{TENANT}/v2.0",
    "aud": CLIENT_ID,
    "tid": TENANT,
    "oid": CLINICIAN_OID,
    "sub": "pairwise-subject",
    "nonce": NONCE,
    "iat": NOW,
    "nbf": NOW,
    "exp": NOW + 3600,
    "ver": "2.0",
}
CONFIG = EntraAppConfig(
    tenant_id=TENANT,
    client_id=CLIENT_ID,
    redirect_uri="https://app.example.org/cb",
    client_secret=SecretStr("s"),
)
FAKE = FakeEntra(TENANT, clock=FakeClock())
JWKS = JwksCache(clock=FakeClock())

values = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.integers(min_value=0, max_value=2**33),
    st.sampled_from(
        [
            "https://login.microsoftonline.com/common/v2.0",
            f"https://sts.windows.net/{TENANT}/",
            "99999999-8888-7777-6666-555555555555",
            [CLIENT_ID, "other"],
        ]
    ),
)


def _is_guid(value: object) -> bool:
    try:
        return str(uuid.UUID(str(value))) == value
    except ValueError:
        return False


def _verify(claims: dict[str, Any]) -> object:
    flow = verify_id_token_flow(
        CONFIG, FAKE.sign_jwt(claims), nonce=SecretStr(NONCE), jwks=JWKS, now=T0
    )
    with httpx.Client(transport=httpx.MockTransport(FAKE.handler)) as client:
        return run_sync(flow, client)


def test_valid_token_verifies() -> None:
    assert _verify(VALID) is not None


@settings(max_examples=60)
@given(
    name=st.sampled_from(["iss", "aud", "tid", "oid", "nonce", "exp", "iat", "sub"]),
    value=values,
)
def test_claim_mutations_never_verify(name: str, value: Any) -> None:
    mutated = dict(VALID)
    if value is None:
        del mutated[name]
    else:
        mutated[name] = value
    if mutated == VALID:
        return
    if isinstance(value, int) and (
        (name == "iat" and value <= NOW + 60) or (name == "exp" and value > NOW - 60)
    ):
        return  # still within the 60 s leeway: a valid token
    if (name == "sub" and isinstance(value, str) and value) or (name == "oid" and _is_guid(value)):
        return  # another subject or user is a different, still valid sign-in
    with pytest.raises((TokenInvalidError, CrossTenantDeniedError)):
        _verify(mutated)

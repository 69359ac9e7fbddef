"""T23 ``validationTokens`` edges that ``nox -s mutants -- attendance/validation_tokens.py``
left open.

Graph docs, *Set up change notifications that include resource data*, "How to validate": the
issuer, audience, app id (``appid`` in v1.0, ``azp`` in v2.0) and tenant, each changed alone,
are refused with the rule's own reason; the compact form is read strictly (RFC 7515 §2, §7.1)
before anything is verified; the verified-token cache answers only the identical, unexpired token
for an allowed tenant, and evicts the least recently used.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from attendance_in_support import APP_ID, OTHER_TENANT, TENANT, Clock

from teams_ehr.attendance import validation_tokens
from teams_ehr.attendance.validation_tokens import (
    COMMON_JWKS_URI,
    GRAPH_CHANGE_TRACKING_APP_ID,
    GraphValidationTokenVerifier,
)
from teams_ehr.errors import TokenInvalidError
from teams_ehr.smart.jwks import JwksCache
from teams_ehr.testing.fake_entra import FakeEntra

pytestmark = pytest.mark.anyio
TENANTS = frozenset({TENANT})
_CLOCK = Clock()
_ENTRA = FakeEntra(TENANT, clock=_CLOCK)


@pytest.fixture
def entra() -> FakeEntra:
    _CLOCK.now = Clock().now
    _ENTRA.requests.clear()
    return _ENTRA


def _verifier(entra: FakeEntra, **kw: Any) -> GraphValidationTokenVerifier:
    client = httpx.AsyncClient(transport=httpx.MockTransport(entra.handler))
    return GraphValidationTokenVerifier(
        app_id=APP_ID, jwks=JwksCache(clock=_CLOCK), client=client, **kw
    )


def _token(entra: FakeEntra, claims: dict[str, Any] | None = None, **kw: Any) -> str:
    return entra.sign_graph_validation_token(claims, audience=APP_ID, **kw)


async def _refusal(
    verifier: GraphValidationTokenVerifier, token: str, tenants: frozenset[str] = TENANTS
) -> tuple[str, str]:
    with pytest.raises(TokenInvalidError) as caught:
        await verifier(token, tenant_ids=tenants, now=_CLOCK())
    return caught.value.reason, str(caught.value)


def _seg(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unsigned(header: object, claims: object, signature: str = "c2ln") -> str:
    return f"{_seg(json.dumps(header).encode())}.{_seg(json.dumps(claims).encode())}.{signature}"


# -- accepted shapes ------------------------------------------------------------------------------


async def test_v1_and_v2_tokens_accepted_with_their_own_profile(entra: FakeEntra) -> None:
    verifier = _verifier(entra)
    assert await verifier(_token(entra), tenant_ids=TENANTS, now=_CLOCK()) == TENANT
    v2 = _token(entra, version="2.0")
    assert await verifier(v2, tenant_ids=TENANTS, now=_CLOCK()) == TENANT
    assert GRAPH_CHANGE_TRACKING_APP_ID == "0bf30f3b-4a52-48df-9a82-234910c4a086"
    assert COMMON_JWKS_URI == "https://login.microsoftonline.com/common/discovery/v2.0/keys"
    assert [str(r.url) for r in entra.requests] == [COMMON_JWKS_URI]


async def test_jwks_uri_and_authority_host_are_used(entra: FakeEntra) -> None:
    verifier = _verifier(
        entra, jwks_uri=entra.jwks_uri, authority_host="https://login.microsoftonline.com//"
    )
    v2 = _token(entra, version="2.0")
    assert await verifier(v2, tenant_ids=TENANTS, now=_CLOCK()) == TENANT
    assert [str(r.url) for r in entra.requests] == [entra.jwks_uri]
    other_host = _verifier(entra, authority_host="https://login.example.org")
    assert await _refusal(other_host, _token(entra, version="2.0")) == (
        "wrong_issuer",
        "JWT rejected: wrong_issuer",
    )
    # the v1.0 issuer is fixed whatever the authority host
    assert await other_host(_token(entra), tenant_ids=TENANTS, now=_CLOCK()) == TENANT


def test_repr_names_only_the_app() -> None:
    verifier = GraphValidationTokenVerifier(
        app_id="app-1", jwks=JwksCache(), client=httpx.AsyncClient()
    )
    assert repr(verifier) == "GraphValidationTokenVerifier(app_id='app-1')"


# -- each claim changed alone ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "claims", "reason"),
    [
        ("1.0", {"aud": "someone-elses-app"}, "wrong_audience"),
        ("1.0", {"appid": "00000000-1111-2222-3333-444444444444"}, "claim_mismatch"),
        ("1.0", {"appid": None}, "missing_claim"),
        ("1.0", {"iss": f"https://sts.windows.net/{OTHER_TENANT}/"}, "wrong_issuer"),
        ("1.0", {"iss": f"https://login.microsoftonline.com/{TENANT}/v2.0"}, "wrong_issuer"),
        ("2.0", {"aud": "someone-elses-app"}, "wrong_audience"),
        ("2.0", {"azp": "00000000-1111-2222-3333-444444444444"}, "claim_mismatch"),
        ("2.0", {"azp": None, "appid": GRAPH_CHANGE_TRACKING_APP_ID}, "missing_claim"),
        ("2.0", {"iss": f"https://sts.windows.net/{TENANT}/"}, "wrong_issuer"),
    ],
)
async def test_each_claim_changed_alone_is_refused(
    entra: FakeEntra, version: str, claims: dict[str, Any], reason: str
) -> None:
    token = _token(entra, claims, version=version)
    assert await _refusal(_verifier(entra), token) == (reason, f"JWT rejected: {reason}")


async def test_ver_other_than_2_0_demands_the_v1_profile(entra: FakeEntra) -> None:
    # a v2.0-shaped token that claims another version is held to the v1.0 issuer and appid
    token = _token(entra, {"ver": "2"}, version="2.0")
    assert (await _refusal(_verifier(entra), token))[0] == "wrong_issuer"


async def test_tenant_must_be_allowed_and_canonical(entra: FakeEntra) -> None:
    verifier = _verifier(entra)
    token = _token(entra)
    assert await _refusal(verifier, token, frozenset({OTHER_TENANT})) == (
        "wrong_tenant",
        "validation token for another tenant",
    )
    for tid in (None, 7, ["x"]):
        assert await _refusal(verifier, _token(entra, {"tid": tid})) == (
            "wrong_tenant",
            "validation token for another tenant",
        )
    upper = _token(entra, {"tid": "ABCDEF00-2222-3333-4444-555555555555"})
    assert await _refusal(verifier, upper, frozenset({"abcdef00-2222-3333-4444-555555555555"})) == (
        "wrong_tenant",
        "validation token tenant not canonical",
    )


# -- the compact form, read strictly before verification ------------------------------------------


async def test_non_ascii_token_malformed(entra: FakeEntra) -> None:
    token = _token(entra) + "é"
    assert await _refusal(_verifier(entra), token) == ("malformed", "validation token malformed")


@pytest.mark.parametrize(
    "token",
    [
        "a.b",
        "a.b.c.d",
        _unsigned(["not", "an", "object"], {"tid": TENANT}),
        _unsigned({"alg": "RS256", "b64": False}, {"tid": TENANT}),
        _unsigned({"alg": "RS256"}, ["claims"]),
        _unsigned({"alg": "RS256"}, {"tid": TENANT}, signature="c2ln="),  # '=' mid-quantum
        _unsigned({"alg": "RS256"}, {"tid": TENANT}, signature="c2lnA"),  # 4n+1 characters
        _unsigned({"alg": "RS256"}, {"tid": TENANT}, signature="c2lnQQ==="),
        _unsigned({"alg": "RS256"}, {"tid": TENANT}, signature="c2ln===="),
        _unsigned({"alg": "RS256"}, {"tid": TENANT}, signature="c2l+"),  # not base64url
        _unsigned({"alg": "RS256"}, {"tid": TENANT}, signature="c2l/"),
        _unsigned({"alg": "RS256"}, {"tid": TENANT}, signature="QR"),  # non-zero spare bits
        _unsigned({"alg": "RS256"}, {"tid": TENANT}, signature="QUF"),  # ("QUE" is canonical)
        f"{_seg(b'{')}.{_seg(b'{}')}.c2ln",  # header not JSON
        f"{_seg(b'{}')}.{_seg(b'[' * 100_000)}.c2ln",  # too deep to parse
    ],
)
async def test_malformed_compact_forms(entra: FakeEntra, token: str) -> None:
    # tenant_ids empty: a token read as well-formed would be refused as wrong_tenant instead
    assert await _refusal(_verifier(entra), token, frozenset()) == (
        "malformed",
        "validation token malformed",
    )


@pytest.mark.parametrize(
    "signature",
    ["c2lnQQ==", "c2lnQUE=", "c2lnQUE", "c2lnQQ", "", "-_-_"],
)
async def test_well_formed_segments_reach_the_tenant_check(
    entra: FakeEntra, signature: str
) -> None:
    token = _unsigned({"alg": "RS256", "b64": True}, {"tid": TENANT}, signature=signature)
    assert (await _refusal(_verifier(entra), token, frozenset()))[0] == "wrong_tenant"


# -- the verified-token cache ---------------------------------------------------------------------


class _Counting:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = validation_tokens.verify_jwt

        async def counted(*args: Any, **kw: Any) -> dict[str, Any]:
            self.calls += 1
            return await real(*args, **kw)

        monkeypatch.setattr(validation_tokens, "verify_jwt", counted)


async def test_cache_answers_until_exp_exactly(
    entra: FakeEntra, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = _Counting(monkeypatch)
    verifier = _verifier(entra)
    token = _token(entra)
    start = _CLOCK()
    assert await verifier(token, tenant_ids=TENANTS, now=start) == TENANT
    exp = start + timedelta(hours=1)
    assert await verifier(token, tenant_ids=TENANTS, now=exp - timedelta(microseconds=1)) == TENANT
    assert counting.calls == 1
    # at exp the token is verified again (and, within the 60 s leeway, still accepted)
    assert await verifier(token, tenant_ids=TENANTS, now=exp) == TENANT
    assert counting.calls == 2


async def test_cache_answers_only_for_an_allowed_tenant(
    entra: FakeEntra, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = _Counting(monkeypatch)
    verifier = _verifier(entra)
    token = _token(entra)
    assert await verifier(token, tenant_ids=TENANTS, now=_CLOCK()) == TENANT
    assert await _refusal(verifier, token, frozenset({OTHER_TENANT})) == (
        "wrong_tenant",
        "validation token for another tenant",
    )
    assert counting.calls == 1


async def test_cache_evicts_the_least_recently_used(
    entra: FakeEntra, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = _Counting(monkeypatch)
    verifier = _verifier(entra, cache_size=2)
    a, b, c = (_token(entra, {"uti": uti}) for uti in ("a", "b", "c"))
    now = _CLOCK()
    for token in (a, b, a, c):  # a is used again before c arrives: b is the one evicted
        await verifier(token, tenant_ids=TENANTS, now=now)
    assert counting.calls == 3
    await verifier(a, tenant_ids=TENANTS, now=now)
    await verifier(c, tenant_ids=TENANTS, now=now)
    assert counting.calls == 3
    await verifier(b, tenant_ids=TENANTS, now=now)
    assert counting.calls == 4


async def test_cache_of_one_keeps_the_last_token(
    entra: FakeEntra, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = _Counting(monkeypatch)
    verifier = _verifier(entra, cache_size=1)
    a, b = (_token(entra, {"uti": uti}) for uti in ("a", "b"))
    now = _CLOCK()
    for token in (a, b, b):
        await verifier(token, tenant_ids=TENANTS, now=now)
    assert counting.calls == 2
    await verifier(a, tenant_ids=TENANTS, now=now)
    assert counting.calls == 3


async def test_default_cache_holds_1024_tokens(
    entra: FakeEntra, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = _verifier(entra)
    now = _CLOCK()
    first = _token(entra, {"uti": "first"})
    await verifier(first, tenant_ids=TENANTS, now=now)
    # fill the cache directly (signing 1,024 tokens would dominate the test's time)
    for i in range(1023):
        verifier._verified[f"d{i}"] = (TENANT, now.timestamp() + 3600)
    counting = _Counting(monkeypatch)
    await verifier(_token(entra, {"uti": "last"}), tenant_ids=TENANTS, now=now)
    assert counting.calls == 1
    await verifier(first, tenant_ids=TENANTS, now=now)
    assert counting.calls == 2  # evicted by the 1,025th

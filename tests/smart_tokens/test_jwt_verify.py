"""Inbound JWT verification: the T11 attack matrix and a mutation property (SPEC A7)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import timedelta
from functools import cache
from typing import Any

import anyio
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smart_tokens_fakes import T0, JwksEndpoint

from teams_ehr.errors import ConfigurationError, TokenInvalidError
from teams_ehr.keys import LocalSigner, b64url, sign_jws
from teams_ehr.smart.jwks import JwksCache
from teams_ehr.smart.jwt_verify import JwtProfile, verify_jwt, verify_jwt_flow, verify_jwt_sync

EPIC_JWKS = "https://ehr.test/oauth2/jwks"
GRAPH_JWKS = "https://login.test/common/discovery/keys"
EPIC_ISS = "https://ehr.test/oauth2"
GRAPH_ISS = "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/"
GRAPH_APPID = "0bf30f3b-4a52-48df-9a82-234910c4a086"
CLIENT_ID = "client-abc"

EPIC = JwtProfile(algorithms=("RS256",), issuers=(EPIC_ISS,), audience=CLIENT_ID)
GRAPH = JwtProfile(
    algorithms=("RS256",),
    issuers=(GRAPH_ISS,),
    audience="app-123",
    expected_claims={"appid": GRAPH_APPID},
)


@cache
def key(name: str) -> LocalSigner:
    return LocalSigner.generate("RS256")


def epic_claims(**overrides: Any) -> dict[str, Any]:
    now = int(T0.timestamp())
    claims = {"iss": EPIC_ISS, "aud": CLIENT_ID, "sub": "prac-1", "iat": now, "exp": now + 300}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def graph_claims(**overrides: Any) -> dict[str, Any]:
    claims = epic_claims(iss=GRAPH_ISS, aud="app-123", appid=GRAPH_APPID)
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    head = b64url(json.dumps(header).encode())
    body = b64url(json.dumps(claims).encode())
    return f"{head}.{body}.{b64url(signature)}"


def hs256(secret: bytes, claims: dict[str, Any]) -> str:
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key("epic").kid}).encode())
    body = b64url(json.dumps(claims).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(mac)}"


def with_header(token: str, **changes: Any) -> str:
    """Re-sign ``token``'s claims with the legitimate key, after changing the header."""
    head, body, _ = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=="))
    header.update(changes)
    signing_input = f"{b64url(json.dumps(header).encode())}.{body}".encode()
    return f"{signing_input.decode()}.{b64url(key('epic').sign(signing_input))}"


def pem_secret() -> bytes:
    public = serialization.load_pem_private_key(key("epic").private_pem(), None).public_key()
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def endpoints() -> Callable[[httpx.Request], httpx.Response]:
    epic = JwksEndpoint([key("epic").public_jwk()], url=EPIC_JWKS)
    graph = JwksEndpoint([key("graph").public_jwk()], url=GRAPH_JWKS)

    def route(request: httpx.Request) -> httpx.Response:
        return epic(request) if str(request.url) == EPIC_JWKS else graph(request)

    return route


def verify(token: str, profile: JwtProfile = EPIC, jwks_uri: str = EPIC_JWKS) -> dict[str, Any]:
    with httpx.Client(transport=httpx.MockTransport(endpoints())) as client:
        return verify_jwt_sync(token, profile, JwksCache(), jwks_uri, client, now=T0)


def test_valid_epic_token_accepted() -> None:
    claims = verify(sign_jws(key("epic"), {"typ": "JWT"}, epic_claims()))
    assert claims["sub"] == "prac-1"
    graph = sign_jws(key("graph"), {}, graph_claims())
    assert verify(graph, GRAPH, GRAPH_JWKS)["appid"] == GRAPH_APPID


ATTACKS: list[tuple[str, Callable[[], str], JwtProfile, str, str]] = [
    (
        "alg_none",
        lambda: unsigned({"alg": "none"}, epic_claims()),
        EPIC,
        EPIC_JWKS,
        "alg_not_allowed",
    ),
    (
        "hs256_with_public_pem",
        lambda: hs256(pem_secret(), epic_claims()),
        EPIC,
        EPIC_JWKS,
        "alg_not_allowed",
    ),
    (
        "hs256_with_jwk_json",
        lambda: hs256(json.dumps(key("epic").public_jwk()).encode(), epic_claims()),
        EPIC,
        EPIC_JWKS,
        "alg_not_allowed",
    ),
    (
        "rs256_claiming_rs512",
        lambda: with_header(sign_jws(key("epic"), {}, epic_claims()), alg="RS512"),
        EPIC,
        EPIC_JWKS,
        "alg_not_allowed",
    ),
    (
        "kid_path_traversal",
        lambda: with_header(sign_jws(key("epic"), {}, epic_claims()), kid="../../etc/passwd"),
        EPIC,
        EPIC_JWKS,
        "unknown_kid",
    ),
    (
        "kid_sql_injection",
        lambda: with_header(sign_jws(key("epic"), {}, epic_claims()), kid="' OR 1=1--"),
        EPIC,
        EPIC_JWKS,
        "unknown_kid",
    ),
    (
        "jku_to_attacker",
        lambda: with_header(sign_jws(key("evil"), {}, epic_claims()), jku="https://evil.test/jwks"),
        EPIC,
        EPIC_JWKS,
        "unknown_kid",
    ),
    (
        "x5u_to_attacker",
        lambda: with_header(
            sign_jws(key("evil"), {}, epic_claims()), x5u="https://evil.test/cert.pem"
        ),
        EPIC,
        EPIC_JWKS,
        "unknown_kid",
    ),
    (
        "embedded_jwk",
        lambda: unsigned(
            {"alg": "RS256", "kid": key("epic").kid, "jwk": key("evil").public_jwk()},
            epic_claims(),
            b"\x00" * 384,
        ),
        EPIC,
        EPIC_JWKS,
        "bad_signature",
    ),
    (
        "unknown_crit",
        lambda: with_header(
            sign_jws(key("epic"), {}, epic_claims()), crit=["exp-ext"], **{"exp-ext": 1}
        ),
        EPIC,
        EPIC_JWKS,
        "crit_unsupported",
    ),
    (
        "missing_exp",
        lambda: sign_jws(key("epic"), {}, epic_claims(exp=None)),
        EPIC,
        EPIC_JWKS,
        "missing_claim",
    ),
    (
        "iss_prefix",
        lambda: sign_jws(key("graph"), {}, graph_claims(iss="https://sts.windows.net/")),
        GRAPH,
        GRAPH_JWKS,
        "wrong_issuer",
    ),
    (
        "aud_list_without_us",
        lambda: sign_jws(key("epic"), {}, epic_claims(aud=["other", "another"])),
        EPIC,
        EPIC_JWKS,
        "wrong_audience",
    ),
    (
        "cross_jwt_epic_as_graph",
        lambda: sign_jws(key("epic"), {}, epic_claims()),
        GRAPH,
        GRAPH_JWKS,
        "unknown_kid",
    ),
    (
        "graph_wrong_appid",
        lambda: sign_jws(
            key("graph"), {}, graph_claims(appid="11111111-2222-3333-4444-555555555555")
        ),
        GRAPH,
        GRAPH_JWKS,
        "claim_mismatch",
    ),
    (
        "expired",
        lambda: sign_jws(key("epic"), {}, epic_claims(exp=int(T0.timestamp()) - 61)),
        EPIC,
        EPIC_JWKS,
        "expired",
    ),
]


@pytest.mark.parametrize(
    ("make", "profile", "jwks_uri", "reason"),
    [pytest.param(*case[1:], id=case[0]) for case in ATTACKS],
)
def test_attack_matrix(
    make: Callable[[], str], profile: JwtProfile, jwks_uri: str, reason: str
) -> None:
    token = make()
    with pytest.raises(TokenInvalidError) as info:
        verify(token, profile, jwks_uri)
    assert info.value.reason == reason
    assert token not in str(info.value)
    assert token not in repr(info.value)
    assert info.value.__cause__ is None


@pytest.mark.parametrize("kid", ["../../etc/passwd", "' OR 1=1--", "/dev/null", "x" * 2000])
def test_hostile_kid_is_only_a_lookup(kid: str) -> None:
    token = with_header(sign_jws(key("epic"), {}, epic_claims()), kid=kid)
    seen: list[str] = []
    route = endpoints()

    def spy(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return route(request)

    with (
        httpx.Client(transport=httpx.MockTransport(spy)) as client,
        pytest.raises(TokenInvalidError) as info,
    ):
        verify_jwt_sync(token, EPIC, JwksCache(), EPIC_JWKS, client, now=T0)
    assert info.value.reason == "unknown_kid"
    assert seen == [EPIC_JWKS]


def test_a_profile_allowing_rs512_still_binds_alg_to_the_key() -> None:
    both = JwtProfile(algorithms=("RS256", "RS512"), issuers=(EPIC_ISS,), audience=CLIENT_ID)
    token = with_header(sign_jws(key("epic"), {}, epic_claims()), alg="RS512")
    with pytest.raises(TokenInvalidError) as info:
        verify(token, both)
    assert info.value.reason == "unknown_kid"  # the published key says alg RS256


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"iat": None}, "missing_claim"),
        ({"iss": None}, "missing_claim"),
        ({"aud": "someone-else"}, "wrong_audience"),
        ({"iss": EPIC_ISS + "/"}, "wrong_issuer"),
        ({"exp": "tomorrow"}, "malformed"),
        ({"nbf": int(T0.timestamp()) + 61}, "not_yet_valid"),
        ({"iat": int(T0.timestamp()) + 61}, "issued_in_future"),
    ],
)
def test_claim_rules(overrides: dict[str, Any], reason: str) -> None:
    with pytest.raises(TokenInvalidError) as info:
        verify(sign_jws(key("epic"), {}, epic_claims(**overrides)))
    assert info.value.reason == reason


def test_leeway_is_honoured_and_capped() -> None:
    now = int(T0.timestamp())
    assert verify(sign_jws(key("epic"), {}, epic_claims(exp=now - 59, nbf=now + 59)))
    with pytest.raises(ConfigurationError):
        JwtProfile(algorithms=("RS256",), issuers=(EPIC_ISS,), audience="a", leeway_seconds=3600)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"algorithms": ("HS256",)},
        {"algorithms": ("none",)},
        {"algorithms": ()},
        {"issuers": ()},
        {"issuers": ("",)},
        {"required": ("exp",)},
    ],
)
def test_unsafe_profiles_refused(kwargs: dict[str, Any]) -> None:
    base: dict[str, Any] = {"algorithms": ("RS256",), "issuers": (EPIC_ISS,), "audience": "a"}
    with pytest.raises(ConfigurationError):
        JwtProfile(**(base | kwargs))


def test_profiles_are_immutable_and_hashable() -> None:
    assert hash(GRAPH) == hash(GRAPH)
    with pytest.raises(TypeError):
        GRAPH.expected_claims["appid"] = "other"  # type: ignore[index]


def test_typ_checked_when_profiled() -> None:
    typed = JwtProfile(algorithms=("RS256",), issuers=(EPIC_ISS,), audience=CLIENT_ID, typ="JWT")
    assert verify(sign_jws(key("epic"), {"typ": "application/jwt"}, epic_claims()), typed)
    with pytest.raises(TokenInvalidError) as info:
        verify(sign_jws(key("epic"), {"typ": "at+jwt"}, epic_claims()), typed)
    assert info.value.reason == "wrong_typ"


@pytest.mark.parametrize("token", ["", "a.b", "a.b.c", "x" * 20_000, "e30.e30.e30.e30"])
def test_malformed_tokens(token: str) -> None:
    with pytest.raises(TokenInvalidError) as info:
        verify(token)
    assert info.value.reason in {"malformed", "alg_not_allowed"}


def test_flow_yields_only_the_pinned_jwks_uri() -> None:
    token = with_header(sign_jws(key("epic"), {}, epic_claims()), jku="https://evil.test/k")
    flow = verify_jwt_flow(token, EPIC, JwksCache(), EPIC_JWKS, now=T0)
    request = next(flow)
    assert str(request.url) == EPIC_JWKS
    with pytest.raises(StopIteration) as done:
        flow.send(endpoints()(request))
    assert done.value.value["sub"] == "prac-1"


@pytest.mark.anyio
async def test_async_verify_shares_one_jwks_fetch() -> None:
    epic = JwksEndpoint([key("epic").public_jwk()], url=EPIC_JWKS)

    async def slow(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0)
        return epic(request)

    jwks = JwksCache()
    token = sign_jws(key("epic"), {}, epic_claims())
    subs: list[str] = []

    async def one(client: httpx.AsyncClient) -> None:
        claims = await verify_jwt(token, EPIC, jwks, EPIC_JWKS, client, now=T0)
        subs.append(claims["sub"])

    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(slow)) as client,
        anyio.create_task_group() as tg,
    ):
        for _ in range(100):
            tg.start_soon(one, client)
    assert subs == ["prac-1"] * 100
    assert epic.gets == 1


VALID = sign_jws(key("epic"), {"typ": "JWT"}, epic_claims())
JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    part=st.sampled_from([0, 1]),
    name=st.sampled_from(["alg", "kid", "typ", "iss", "aud", "exp", "iat", "sub", "jku", "zz"]),
    value=JSON_VALUES,
    delete=st.booleans(),
)
def test_mutations_never_validate_unless_noop(
    part: int, name: str, value: object, delete: bool
) -> None:
    segments = VALID.split(".")
    document = json.loads(base64.urlsafe_b64decode(segments[part] + "=="))
    if delete:
        document.pop(name, None)
    else:
        document[name] = value
    segments[part] = b64url(json.dumps(document).encode())
    mutated = ".".join(segments)
    if mutated == VALID:
        assert verify(mutated)
        return
    with pytest.raises(TokenInvalidError):
        verify(mutated)


def test_no_time_travel_in_expired_case() -> None:
    later = T0 + timedelta(seconds=361)
    with (
        httpx.Client(transport=httpx.MockTransport(endpoints())) as client,
        pytest.raises(TokenInvalidError) as info,
    ):
        verify_jwt_sync(VALID, EPIC, JwksCache(), EPIC_JWKS, client, now=later)
    assert info.value.reason == "expired"

"""A1 / T01 / T06: launch parsing, caps, issuer admission before any I/O, launch hashing."""

from __future__ import annotations

import pytest

from teams_ehr.errors import ConfigurationError, LaunchParameterError, UntrustedIssuerError
from teams_ehr.smart.launch import (
    LaunchRequest,
    StaticIssuerResolver,
    admit_launch,
    launch_hash,
    parse_launch_request,
)
from teams_ehr.store.protocol import IssuerBinding

BASE = "https://ehr.example.org/fhir/r4"
BINDING = IssuerBinding(canonical_base=BASE, org_id="org-1", environment="production")
LAUNCH = "LAUNCH-CANARY-7f3a"


def test_parse_get_query_and_canonicalize() -> None:
    request = parse_launch_request(
        {"iss": "https://EHR.example.org:443/fhir/r4/", "launch": LAUNCH}
    )
    assert request == LaunchRequest(iss=BASE, launch=LAUNCH)
    assert LAUNCH not in repr(request)
    assert LAUNCH not in str(request)


def test_launch_param_forwarded_exact() -> None:
    odd = "eyJhbGciOi.J9-_~!$'()*+,;=:@/?.x"
    assert parse_launch_request({"iss": BASE, "launch": odd}).launch == odd


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"launch": LAUNCH}, "missing_iss"),
        ({"iss": BASE}, "missing_launch"),
        ({"iss": "", "launch": LAUNCH}, "missing_iss"),
        ({"iss": BASE, "launch": "x" * 2049}, "bad_launch"),
        ({"iss": BASE, "launch": "abc\ndef"}, "bad_launch"),
        ({"iss": BASE, "launch": "abc def"}, "bad_launch"),
        ({"iss": BASE, "launch": "abc\x00"}, "bad_launch"),
        ({"iss": BASE, "launch": "caf\u00e9"}, "bad_launch"),
        ({"iss": "https://e.org/" + "a" * 2048, "launch": LAUNCH}, "bad_iss"),
        ({"iss": "https://ehr.example.org/fhir?x", "launch": LAUNCH}, "bad_fhir_base"),
    ],
)
def test_launch_param_oversized_or_control_chars(params: dict[str, str], reason: str) -> None:
    with pytest.raises(LaunchParameterError) as info:
        parse_launch_request(params)
    assert info.value.reason == reason
    assert info.value.http_status_hint == 400
    assert LAUNCH not in str(info.value)


@pytest.mark.anyio
async def test_admit_known_issuer() -> None:
    request = parse_launch_request({"iss": BASE + "/", "launch": LAUNCH})
    admitted, binding = await admit_launch(request, StaticIssuerResolver.of(BINDING))
    assert admitted is request
    assert binding == BINDING


@pytest.mark.anyio
async def test_unknown_issuer_refused() -> None:
    request = parse_launch_request({"iss": "https://evil.test/fhir", "launch": LAUNCH})
    with pytest.raises(UntrustedIssuerError):
        await admit_launch(request, StaticIssuerResolver.of(BINDING))


class _PrefixResolver:
    """A broken resolver that matches by prefix: admit_launch must still refuse."""

    async def resolve_issuer(self, canonical_base: str) -> IssuerBinding | None:
        return BINDING if canonical_base.startswith(BASE) else None


@pytest.mark.anyio
async def test_admission_is_exact_even_with_a_lax_resolver() -> None:
    request = parse_launch_request({"iss": BASE + "/evil", "launch": LAUNCH})
    with pytest.raises(UntrustedIssuerError):
        await admit_launch(request, _PrefixResolver())


def test_static_resolver_requires_canonical_keys() -> None:
    with pytest.raises(ConfigurationError):
        StaticIssuerResolver({BASE + "/": BINDING})
    with pytest.raises(ConfigurationError):
        StaticIssuerResolver({"https://other.test/fhir": BINDING})


def test_launch_hash_is_stable_and_hides_the_value() -> None:
    assert launch_hash(LAUNCH) == launch_hash(LAUNCH)
    assert launch_hash(LAUNCH) != launch_hash(LAUNCH + "x")
    assert LAUNCH not in launch_hash(LAUNCH)
    assert len(launch_hash(LAUNCH)) == 64

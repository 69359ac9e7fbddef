"""Exact behaviour of the inbound EHR launch (smart/launch.py, requirement A1, threats T01/T06).

SMART App Launch 2.x "EHR launch": ``iss`` and ``launch`` arrive as query or form values. Each
test pins one rule at its edge with the exact ``reason`` and the message a user reads.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import pytest

from teams_ehr.errors import ConfigurationError, LaunchParameterError, UntrustedIssuerError
from teams_ehr.smart.canonical import MAX_URL_LENGTH
from teams_ehr.smart.launch import (
    MAX_LAUNCH_LENGTH,
    LaunchRequest,
    StaticIssuerResolver,
    admit_launch,
    launch_hash,
    parse_launch_request,
)
from teams_ehr.store.protocol import IssuerBinding

BASE = "https://ehr.example.org/fhir/r4"
HTTP_BASE = "http://127.0.0.1:8080/fhir"
BINDING = IssuerBinding(canonical_base=BASE, org_id="org-1", environment="production")
LOGGER = "teams_ehr.smart.launch"


def _refused(params: Any, **kwargs: Any) -> LaunchParameterError:
    with pytest.raises(LaunchParameterError) as info:
        parse_launch_request(params, **kwargs)
    return info.value


@pytest.mark.parametrize("name", ["iss", "launch"])
@pytest.mark.parametrize("value", [None, ""])
def test_missing_parameter_reason_and_message(name: str, value: str | None) -> None:
    params: dict[str, Any] = {"iss": BASE, "launch": "L"}
    if value is None:
        del params[name]
    else:
        params[name] = value
    error = _refused(params)
    assert error.reason == f"missing_{name}"
    assert str(error) == f"launch parameter {name!r} is missing"


def test_launch_length_edges() -> None:
    assert MAX_LAUNCH_LENGTH == 2048
    at_limit = "l" * MAX_LAUNCH_LENGTH
    assert parse_launch_request({"iss": BASE, "launch": at_limit}).launch == at_limit
    error = _refused({"iss": BASE, "launch": at_limit + "l"})
    assert error.reason == "bad_launch"
    assert str(error) == "launch parameter 'launch' is too long"


def test_iss_length_edges() -> None:
    prefix = "https://e.org/"
    at_limit = prefix + "a" * (MAX_URL_LENGTH - len(prefix))
    assert len(at_limit) == MAX_URL_LENGTH == 2048
    assert parse_launch_request({"iss": at_limit, "launch": "L"}).iss == at_limit
    error = _refused({"iss": at_limit + "a", "launch": "L"})
    assert error.reason == "bad_iss"
    assert str(error) == "launch parameter 'iss' is too long"


@pytest.mark.parametrize("name", ["iss", "launch"])
def test_non_string_value_refused(name: str) -> None:
    params: dict[str, Any] = {"iss": BASE, "launch": "L", name: ["x"]}
    error = _refused(params)
    assert error.reason == f"bad_{name}"


@pytest.mark.parametrize("launch", ["\x21", "\x7e", "a~!", "A" * 10])
def test_launch_printable_edges_accepted(launch: str) -> None:
    assert parse_launch_request({"iss": BASE, "launch": launch}).launch == launch


@pytest.mark.parametrize("launch", ["\x20", "\x7f", "ab\x7f", "\x7fab", "a\tb", "ü"])
def test_launch_forbidden_characters(launch: str) -> None:
    error = _refused({"iss": BASE, "launch": launch})
    assert error.reason == "bad_launch"
    assert str(error) == "launch parameter 'launch' has forbidden characters"


def test_allow_http_is_passed_to_canonicalization() -> None:
    assert _refused({"iss": HTTP_BASE, "launch": "L"}).reason == "bad_fhir_base"
    request = parse_launch_request({"iss": HTTP_BASE, "launch": "L"}, allow_http=True)
    assert request == LaunchRequest(iss=HTTP_BASE, launch="L")


def test_launch_hash_is_sha256_of_utf8() -> None:
    assert launch_hash("é-launch") == hashlib.sha256("é-launch".encode()).hexdigest()


def test_static_resolver_messages() -> None:
    with pytest.raises(ConfigurationError) as info:
        StaticIssuerResolver({BASE + "/": BINDING})
    assert str(info.value) == "issuer key is not a canonical FHIR base URL"
    with pytest.raises(ConfigurationError) as info:
        StaticIssuerResolver({"https://other.test/fhir": BINDING})
    assert str(info.value) == "issuer key differs from its binding's canonical_base"


@pytest.mark.anyio
async def test_static_resolver_allow_http() -> None:
    binding = IssuerBinding(canonical_base=HTTP_BASE, org_id="o", environment="test")
    with pytest.raises(LaunchParameterError):
        StaticIssuerResolver({HTTP_BASE: binding})
    with pytest.raises(LaunchParameterError):
        StaticIssuerResolver.of(binding)
    resolver = StaticIssuerResolver.of(binding, allow_http=True)
    assert await resolver.resolve_issuer(HTTP_BASE) == binding
    direct = StaticIssuerResolver({HTTP_BASE: binding}, allow_http=True)
    assert await direct.resolve_issuer(HTTP_BASE) == binding
    assert await direct.resolve_issuer(BASE) is None


@pytest.mark.anyio
async def test_static_resolver_keys_by_binding_base() -> None:
    other = IssuerBinding(canonical_base="https://b.test/fhir", org_id="o2", environment="test")
    resolver = StaticIssuerResolver.of(BINDING, other)
    assert await resolver.resolve_issuer(BASE) == BINDING
    assert await resolver.resolve_issuer("https://b.test/fhir") == other
    assert await resolver.resolve_issuer("https://c.test/fhir") is None


class _WrongBindingResolver:
    async def resolve_issuer(self, canonical_base: str) -> IssuerBinding | None:
        return BINDING


@pytest.mark.anyio
async def test_admission_refusal_message_and_log(caplog: pytest.LogCaptureFixture) -> None:
    request = parse_launch_request({"iss": "https://evil.test/fhir", "launch": "L"})
    for resolver in (StaticIssuerResolver.of(BINDING), _WrongBindingResolver()):
        caplog.clear()
        with (
            caplog.at_level(logging.INFO, logger=LOGGER),
            pytest.raises(UntrustedIssuerError) as info,
        ):
            await admit_launch(request, resolver)
        assert info.value.reason == "untrusted_issuer"
        assert str(info.value) == "the launch issuer is not an approved FHIR base"
        records = [r for r in caplog.records if r.name == LOGGER]
        assert [(r.levelno, r.getMessage()) for r in records] == [
            (logging.INFO, "launch refused: issuer is not approved")
        ]


@pytest.mark.anyio
async def test_admission_returns_the_request_and_binding() -> None:
    request = parse_launch_request({"iss": BASE, "launch": "L"})
    admitted, binding = await admit_launch(request, _WrongBindingResolver())
    assert admitted is request
    assert binding is BINDING

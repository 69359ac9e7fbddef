"""security.md T02/T29: each canonicalization rule refuses for its own reason, at its exact edge.

tests/smart_launch checks that hostile bases are refused *somehow*; a weakened rule whose input is
then refused by a later rule went unseen there (mutation testing, docs/security.md). Here every
refusal names its rule, and every numeric limit is tested at, just before and just after its edge.
"""

from __future__ import annotations

import pytest

from teams_ehr.errors import LaunchParameterError
from teams_ehr.smart.canonical import MAX_URL_LENGTH, canonical_fhir_base

BASE = "https://ehr.example.org"

REFUSED = [
    # (url, allow_http, the rule that must refuse it)
    ("", False, "empty"),
    (BASE + "/fhir ", False, "whitespace or control character"),
    (BASE + "/fh ir", False, "whitespace or control character"),
    (BASE + "/fhir\x01", False, "whitespace or control character"),
    (BASE + "/fhir\x1f", False, "whitespace or control character"),
    (BASE + "/fhir\x7f", False, "whitespace or control character"),
    (BASE + "/fhir\x9f", False, "whitespace or control character"),
    (BASE + "/fhir\\", False, "backslash or percent-encoding"),
    (BASE + "/%2e%2e/fhir", False, "backslash or percent-encoding"),
    ("ehr.example.org/fhir", False, "not an absolute URL"),
    ("ftp://ehr.example.org/fhir", False, "scheme not allowed"),
    ("http://ehr.example.org/fhir", False, "scheme not allowed"),
    (BASE + "/fhir?", False, "query or fragment"),
    (BASE + "/fhir#", False, "query or fragment"),
    (BASE + "/fhir\u00a1", False, "non-ASCII path"),
    ("https:///fhir", False, "no host"),
    ("https://user@ehr.example.org/fhir", False, "userinfo"),
    ("https://ehr.example.org./fhir", False, "trailing dot in host"),
    ("https://a.1/fhir", False, "IP literal host"),
    ("https://a.b.1/fhir", False, "IP literal host"),
    ("https://0x7f000001/fhir", False, "IP literal host"),
    ("https://10.0.0.1/fhir", False, "IP literal host"),
    ("https://127.0.0.1/fhir", False, "IP literal host"),
    ("https://[::1]/fhir", False, "IP literal host"),
    ("http://10.0.0.1/fhir", True, "IP literal host"),
    ("https://999.1.1.1/fhir", False, "invalid IP literal"),
    ("https://[zz]/fhir", False, "invalid IP literal"),
    ("https://[::1/fhir", False, "invalid IP literal"),
    ("http://[::1]]/fhir", True, "invalid authority"),
    ("http://[::1]x/fhir", True, "invalid authority"),
    ("https://-bad-.example/fhir", False, "host is not a valid IDNA name"),
    ("https://localhost/fhir", False, "internal host"),
    ("https://x.localhost/fhir", False, "internal host"),
    (BASE + ":0/fhir", False, "invalid port"),
    (BASE + ":65536/fhir", False, "invalid port"),
    (BASE + ":443:443/fhir", False, "invalid port"),
    (BASE + ":x/fhir", False, "invalid port"),
    (BASE + "/fhir<", False, "forbidden character in path"),
    (BASE + "//fhir", False, "empty or dot segment in path"),
    (BASE + "/./fhir", False, "empty or dot segment in path"),
    (BASE + "/fhir/..", False, "empty or dot segment in path"),
]


@pytest.mark.parametrize(("url", "allow_http", "rule"), REFUSED)
def test_each_rule_refuses_for_its_own_reason(url: str, allow_http: bool, rule: str) -> None:
    with pytest.raises(LaunchParameterError) as caught:
        canonical_fhir_base(url, allow_http=allow_http)
    assert str(caught.value) == f"FHIR base URL refused: {rule}"
    assert caught.value.reason == "bad_fhir_base"


def test_a_non_string_is_refused_by_name() -> None:
    with pytest.raises(LaunchParameterError, match=r"^FHIR base URL refused: not a string$"):
        canonical_fhir_base(b"https://ehr.example.org/fhir")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "allow_http", "canonical"),
    [
        (BASE + ":1/fhir", False, BASE + ":1/fhir"),
        (BASE + ":65535/fhir", False, BASE + ":65535/fhir"),
        (BASE + ":443/fhir", False, BASE + "/fhir"),
        (BASE + ":80/fhir", False, BASE + ":80/fhir"),
        ("http://ehr.example.org:80/fhir", True, "http://ehr.example.org/fhir"),
        ("http://ehr.example.org:443/fhir", True, "http://ehr.example.org:443/fhir"),
        (BASE + "/fhir~", False, BASE + "/fhir~"),
        ("https://EHR.example.org/FHIR/X", False, "https://ehr.example.org/FHIR/X"),
        ("http://127.0.0.1:8080/fhir", True, "http://127.0.0.1:8080/fhir"),
        ("http://[::1]/fhir", True, "http://[::1]/fhir"),
        ("http://[::1]:8080/fhir", True, "http://[::1]:8080/fhir"),
        ("http://[0:0:0:0:0:0:0:1]:8080/fhir", True, "http://[::1]:8080/fhir"),
        ("http://localhost:8080/fhir", True, "http://localhost:8080/fhir"),
        ("https://xn--hr-ucb.example.org/fhir", False, "https://xn--hr-ucb.example.org/fhir"),
        ("https://ehr.example.org", False, "https://ehr.example.org"),
        ("https://ehr.example.org/", False, "https://ehr.example.org"),
    ],
)
def test_accepted_at_the_edges(url: str, allow_http: bool, canonical: str) -> None:
    assert canonical_fhir_base(url, allow_http=allow_http) == canonical


def test_length_limit_exactly_at_just_under_and_just_over() -> None:
    def of_length(length: int) -> str:
        return BASE + "/" + "a" * (length - len(BASE) - 1)

    assert canonical_fhir_base(of_length(MAX_URL_LENGTH - 1)) == of_length(MAX_URL_LENGTH - 1)
    assert canonical_fhir_base(of_length(MAX_URL_LENGTH)) == of_length(MAX_URL_LENGTH)
    with pytest.raises(LaunchParameterError, match=r"refused: too long$"):
        canonical_fhir_base(of_length(MAX_URL_LENGTH + 1))

"""A1 / security.md T02: one canonicalization routine, exact matching, hostile variants refused."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from teams_ehr.errors import LaunchParameterError
from teams_ehr.smart.canonical import canonical_fhir_base

APPROVED = "https://ehr.example.org/fhir"

# Benign normalizations: these must map to the approved canonical string.
BENIGN = [
    "https://ehr.example.org/fhir",
    "https://ehr.example.org/fhir/",
    "https://EHR.Example.ORG/fhir",
    "HTTPS://ehr.example.org/fhir",
    "https://ehr.example.org:443/fhir/",
]

# Hostile or different: each must be refused or map to something other than APPROVED.
HOSTILE = [
    "https://ehr.example.org@evil.test/fhir",
    "https://evil.test@ehr.example.org/fhir",
    "https://ehr.example.org.evil.test/fhir",
    "https://ehr.example.org/fhir/../admin",
    "https://ehr.example.org/fhir/./",
    "https://ehr.example.org/admin/../fhir",
    "https://EHR.example.org/FHIR",
    "https://ehr.example.org/%2e%2e/fhir",
    "https://ehr.example.org/fhir%2F",
    "https://ehr.example.org\\@evil.test/fhir",
    "https://ehr.example.org/fhir\\",
    "https://ehr.example.org/fhir\t",
    "https://ehr.example.org/fhir\r\nX-Injected: 1",
    "https://ehr.example.org/fh\nir",
    "https://ehr.example.org:444/fhir",
    "https://\u0435hr.example.org/fhir",  # Cyrillic е
    "http://ehr.example.org/fhir",
    "https://ehr.example.org/fhir?x=1",
    "https://ehr.example.org/fhir?",
    "https://ehr.example.org/fhir#frag",
    "https://ehr.example.org./fhir",
    "https://ehr.example.org//fhir",
    " https://ehr.example.org/fhir",
    "https://ehr.example.org/fhir//",
    "//ehr.example.org/fhir",
    "ehr.example.org/fhir",
]

INTERNAL = [
    "http://169.254.169.254/latest/meta-data",
    "https://169.254.169.254/latest",
    "https://10.0.0.1/fhir",
    "https://[::1]/fhir",
    "https://127.0.0.1/fhir",
    "http://localhost/fhir",
    "https://localhost/fhir",
    "https://api.localhost/fhir",
    "file:///etc/passwd",
    "gopher://ehr.example.org/fhir",
    "javascript:alert(1)",
]


@pytest.mark.parametrize("url", BENIGN)
def test_benign_normalizations_map_to_the_approved_base(url: str) -> None:
    assert canonical_fhir_base(url) == APPROVED


@pytest.mark.parametrize("url", HOSTILE)
def test_hostile_variants_never_match(url: str) -> None:
    try:
        result = canonical_fhir_base(url)
    except LaunchParameterError:
        return
    assert result != APPROVED


@pytest.mark.parametrize("url", INTERNAL)
def test_internal_hosts_and_other_schemes_refused(url: str) -> None:
    with pytest.raises(LaunchParameterError):
        canonical_fhir_base(url)


def test_homoglyph_maps_to_an_a_label() -> None:
    assert canonical_fhir_base("https://\u0435hr.example.org/fhir").startswith("https://xn--")


def test_path_case_preserved_and_host_lowered() -> None:
    assert canonical_fhir_base("https://Ehr.Test/Interconnect/api/FHIR/R4/") == (
        "https://ehr.test/Interconnect/api/FHIR/R4"
    )


def test_loopback_http_only_when_allowed() -> None:
    assert canonical_fhir_base("http://127.0.0.1:8080/fhir", allow_http=True) == (
        "http://127.0.0.1:8080/fhir"
    )
    assert canonical_fhir_base("http://[::1]:80/fhir", allow_http=True) == "http://[::1]/fhir"
    with pytest.raises(LaunchParameterError):
        canonical_fhir_base("http://127.0.0.1:8080/fhir")
    with pytest.raises(LaunchParameterError):
        canonical_fhir_base("http://10.1.2.3/fhir", allow_http=True)


def test_error_message_does_not_echo_the_url() -> None:
    with pytest.raises(LaunchParameterError) as info:
        canonical_fhir_base("https://canary-host.example@evil.test/fhir")
    assert "canary-host" not in str(info.value)
    assert "canary-host" not in repr(info.value)


def test_length_cap() -> None:
    with pytest.raises(LaunchParameterError):
        canonical_fhir_base("https://ehr.example.org/" + "a" * 2100)


MUTATORS = {
    "userinfo": lambda u: u.replace("https://", "https://ehr.example.org@"),
    "suffix_host": lambda u: re.sub(r"(?i)\.org", ".org.evil.test", u, count=1),
    "dot_segment": lambda u: u + "/../admin",
    "pct_dot": lambda u: u + "/%2e%2e",
    "backslash": lambda u: u.replace("/fhir", "\\fhir", 1) if "/fhir" in u else u + "\\",
    "crlf": lambda u: u + "\r\n",
    "tab": lambda u: re.sub(r"(?i)e(hr)", "e\t\\1", u, count=1),
    "port_443": lambda u: re.sub(r"(?i)\.org", ".org:443", u, count=1),
    "trailing_slash": lambda u: u + "/",
    "upper_host": lambda u: u.replace("ehr.example", "EHR.EXAMPLE"),
    "homoglyph": lambda u: re.sub(r"(?i)e(hr)", "\u0435\\1", u, count=1),
    "http_downgrade": lambda u: u.replace("https", "http"),
    "path_case": lambda u: u.replace("/fhir", "/FHIR"),
}
BENIGN_MUTATORS = {"port_443", "trailing_slash", "upper_host"}


@given(st.lists(st.sampled_from(sorted(MUTATORS)), min_size=1, max_size=3))
def test_mutations_rejected_or_benign(names: list[str]) -> None:
    url = APPROVED
    for name in names:
        url = MUTATORS[name](url)
    try:
        result = canonical_fhir_base(url)
    except LaunchParameterError:
        return
    if set(names) <= BENIGN_MUTATORS:
        assert result == APPROVED
    else:
        assert result != APPROVED


_host_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_segment = st.from_regex(r"[A-Za-z0-9_~-]{1,8}", fullmatch=True)


@given(
    st.lists(_host_label, min_size=1, max_size=3),
    st.sampled_from(["", ":443", ":8443", ":1"]),
    st.lists(_segment, max_size=4),
    st.booleans(),
    st.booleans(),
)
def test_idempotent(
    labels: list[str], port: str, segments: list[str], slash: bool, upper: bool
) -> None:
    host = ".".join([*labels, "org"])
    url = f"https://{host.upper() if upper else host}{port}" + "".join("/" + s for s in segments)
    url += "/" if slash else ""
    try:
        once = canonical_fhir_base(url)
    except LaunchParameterError:
        return
    assert canonical_fhir_base(once) == once


@given(st.text(max_size=80))
def test_arbitrary_text_is_refused_or_idempotent(text: str) -> None:
    try:
        once = canonical_fhir_base("https://ehr.example.org/" + text)
    except LaunchParameterError:
        return
    assert canonical_fhir_base(once) == once

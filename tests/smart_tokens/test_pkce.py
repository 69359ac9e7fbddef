"""PKCE S256 (RFC 7636)."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from teams_ehr.errors import UsageError
from teams_ehr.smart.pkce import code_challenge_s256, new_code_verifier

UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"


def test_rfc7636_appendix_b_vector() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert code_challenge_s256(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_new_verifier_shape_and_entropy() -> None:
    verifiers = {new_code_verifier() for _ in range(200)}
    assert len(verifiers) == 200
    for v in verifiers:
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", v)  # 32 bytes = 256 bits


@given(st.text(alphabet=UNRESERVED, min_size=43, max_size=128))
def test_challenge_is_b64url_sha256(verifier: str) -> None:
    challenge = code_challenge_s256(verifier)
    expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    assert challenge == expected.decode().rstrip("=")
    assert len(challenge) == 43
    assert "=" not in challenge


@pytest.mark.parametrize("verifier", ["short", "x" * 129, "a" * 42 + " ", "é" * 43])
def test_bad_verifiers_refused(verifier: str) -> None:
    with pytest.raises(UsageError):
        code_challenge_s256(verifier)

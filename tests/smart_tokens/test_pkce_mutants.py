"""PKCE edges (smart/pkce.py; RFC 7636 §4.1 verifier length and alphabet, §4.2 S256)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from teams_ehr.errors import UsageError
from teams_ehr.smart.pkce import code_challenge_s256, new_code_verifier


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


@pytest.mark.parametrize("verifier", ["a" * 43, "Z" * 128, "-._~" * 11, "09" * 30])
def test_length_and_alphabet_edges_accepted(verifier: str) -> None:
    assert code_challenge_s256(verifier) == _s256(verifier)


@pytest.mark.parametrize("verifier", ["a" * 42, "a" * 129, "a" * 42 + "+", "a" * 42 + "/", ""])
def test_edges_refused_with_reason_and_message(verifier: str) -> None:
    with pytest.raises(UsageError) as info:
        code_challenge_s256(verifier)
    assert info.value.reason == "bad_verifier"
    assert str(info.value) == "code verifier must be 43–128 unreserved characters"


def test_new_verifier_is_43_characters_every_time() -> None:
    for _ in range(50):
        verifier = new_code_verifier()
        assert len(verifier) == 43
        assert code_challenge_s256(verifier) == _s256(verifier)

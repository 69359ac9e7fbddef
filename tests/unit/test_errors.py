"""The one error hierarchy: local vs remote, stable reasons, safe reprs (DESIGN.md rule 5)."""

from __future__ import annotations

import inspect

import pytest

from teams_ehr import errors

ALL = [
    obj
    for _, obj in inspect.getmembers(errors, inspect.isclass)
    if issubclass(obj, errors.TeamsEhrError)
]


def test_every_error_is_named_and_rooted() -> None:
    assert len(ALL) >= 20
    for cls in ALL:
        assert cls.__name__.endswith("Error")
        assert cls.__name__ in errors.__all__
        assert issubclass(cls, errors.TeamsEhrError)


def test_reasons_are_unique_and_snake_case() -> None:
    reasons = [cls.default_reason for cls in ALL]
    assert len(reasons) == len(set(reasons))
    assert all(r.replace("_", "").isalpha() and r.islower() for r in reasons)


def test_local_and_remote_branches_are_disjoint() -> None:
    assert not issubclass(errors.UsageError, errors.RemoteError)
    assert issubclass(errors.GraphThrottledError, errors.GraphError)
    assert issubclass(errors.MetadataMismatchError, errors.DiscoveryError)
    assert errors.JoinLinkInvalidError.http_status_hint == 404


def test_repr_shows_code_not_message() -> None:
    exc = errors.OAuthError("boom", error="invalid_grant", description="code=SECRET123")
    assert "SECRET123" not in repr(exc)
    assert "SECRET123" not in str(exc)
    assert repr(exc) == "<OAuthError error='invalid_grant'>"
    with pytest.raises(errors.RemoteError):
        raise exc


def test_reason_override() -> None:
    exc = errors.TokenInvalidError("bad", reason="alg_not_allowed")
    assert exc.reason == "alg_not_allowed"
    assert "alg_not_allowed" in repr(exc)

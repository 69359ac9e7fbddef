"""Checks that a deprecated name still works and warns, as the deprecation policy promises
(docs/stability.md): one test per deprecated name, kept until the release that removes it.

Works with or without pytest: failures raise :class:`AssertionError` with the reason.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Callable
from typing import TypeVar

from teams_ehr._deprecation import release_tuple
from teams_ehr._version import UNKNOWN, __version__

_R = TypeVar("_R")
_VERSION = re.compile(r"^(\d+)(?:\.(\d+))?(?:\.(\d+))?")


def assert_deprecated(
    use: Callable[[], _R],
    *,
    name: str,
    removed_in: str,
    instead: str | None = None,
    current_version: str = __version__,
) -> _R:
    """Run ``use`` (a call or attribute read of a deprecated name) and return its result, so the
    test can check the name still works.

    Fails unless ``use`` emitted exactly one :class:`DeprecationWarning` that names ``name``,
    the release ``removed_in`` and, when given, ``instead``, attributed to the file that called
    this function (the deprecation's ``stacklevel`` points at the user's line). Fails as well once
    ``current_version`` has reached ``removed_in``: the name is due for removal, and so is this
    test.
    """
    caller = sys._getframe(1).f_code.co_filename
    if current_version != UNKNOWN and _release(current_version) >= release_tuple(removed_in):
        raise AssertionError(
            f"{name} was to be removed in {removed_in} and this is {current_version}: remove "
            "it, its test, and say so in CHANGELOG.md under Removed (docs/stability.md)"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = use()
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    if len(deprecations) != 1:
        found = [f"{w.category.__name__}: {w.message}" for w in caught] or ["no warning"]
        raise AssertionError(
            f"using {name} emitted {len(deprecations)} DeprecationWarnings, expected exactly "
            f"one; caught: {'; '.join(found)}"
        )
    warning = deprecations[0]
    text = str(warning.message)
    expected = [name, f"removed in {removed_in}", *([instead] if instead else [])]
    if missing := [part for part in expected if part not in text]:
        raise AssertionError(f"the warning {text!r} does not mention {', '.join(missing)}")
    if warning.filename != caller:
        raise AssertionError(
            f"the warning for {name} points at {warning.filename}:{warning.lineno}, not at the "
            f"line that used it in {caller}: fix the deprecation's stacklevel"
        )
    return result


def _release(version: str) -> tuple[int, int, int]:
    """The release part of an installed version (PEP 440): ``0.3.0rc1``, ``0.3.dev2`` and
    ``0.3.0+local`` are all ``(0, 3, 0)``: a pre-release of the removing release must not have
    the name either."""
    match = _VERSION.match(version)
    if match is None:
        raise AssertionError(f"{version!r} is not a PEP 440 version")
    major, minor, patch = match.groups()
    return int(major), int(minor or 0), int(patch or 0)

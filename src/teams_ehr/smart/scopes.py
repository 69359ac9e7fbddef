"""SMART scopes, v1 and v2 syntax (SMART App Launch 2.x scopes-and-launch-context.md; requirement A3).

Grammar of a resource scope: ``(patient|user|system)/(Type|*).<permissions>[?query]`` where the
permissions are either v2 letters — a non-empty subset of ``cruds`` *in that order* — or a v1
suffix ``read`` (= ``rs``), ``write`` (= ``cud``) or ``*`` (= ``cruds``). Other scopes:
``openid``, ``fhirUser``, ``profile``, ``offline_access``, ``online_access``, ``launch``,
``launch/<lowercase type>[?role=<uri>]``, and custom scopes (a full URI or a ``__`` prefix).

Requested scopes are validated strictly (:func:`validate_scopes`); granted scopes are parsed
tolerantly (:func:`parse_granted_scopes`) because Epic returns bare API names
(``Patient.read``) and case variants (``user/Binary.Read``)
(fhir.epic.com/Documentation?docId=oauth2).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, cast

from teams_ehr.errors import ConfigurationError

__all__ = [
    "ResourceScope",
    "format_scopes",
    "parse_granted_scopes",
    "parse_resource_scope",
    "scopes_allow",
    "validate_scopes",
]

Context = Literal["patient", "user", "system"]

_V1_SUFFIXES = {"read": "rs", "write": "cud", "*": "cruds"}
_ORDER = "cruds"
_RESOURCE = re.compile(
    r"^(patient|user|system)/([A-Z][A-Za-z]{0,63}|\*)\.([A-Za-z*]{1,5})(\?[\x21-\x7e]{1,1024})?$"
)
_LAUNCH = re.compile(r"^launch(/[a-z][a-z]{0,63}(\?role=[\x21-\x7e]{1,512})?)?$")
_STANDARD = frozenset({"openid", "fhirUser", "profile", "offline_access", "online_access"})
_CUSTOM = re.compile(r"^(__[\x21-\x7e]{1,256}|https?://[\x21-\x7e]{1,1024})$")


@dataclass(frozen=True, slots=True)
class ResourceScope:
    """One parsed resource scope; ``permissions`` is in v2 letters whatever syntax was used."""

    context: Context
    resource_type: str
    permissions: frozenset[str]
    version: Literal[1, 2]
    query: str | None = None

    def allows(self, resource_type: str, permission: str) -> bool:
        """Whether this scope grants ``permission`` (one of ``c r u d s``) on ``resource_type``."""
        return permission in self.permissions and self.resource_type in ("*", resource_type)


def _permissions(suffix: str) -> tuple[frozenset[str], Literal[1, 2]] | None:
    if suffix in _V1_SUFFIXES:
        return frozenset(_V1_SUFFIXES[suffix]), 1
    positions = [_ORDER.find(letter) for letter in suffix]
    if not suffix or -1 in positions or positions != sorted(set(positions)):
        return None
    return frozenset(suffix), 2


def parse_resource_scope(scope: str) -> ResourceScope | None:
    """Parse a resource scope strictly; ``None`` when ``scope`` is not one."""
    match = _RESOURCE.match(scope)
    if match is None:
        return None
    context, resource_type, suffix, query = match.groups()
    parsed = _permissions(suffix)
    if parsed is None:
        return None
    permissions, version = parsed
    return ResourceScope(
        cast(Context, context), resource_type, permissions, version, query[1:] if query else None
    )


def _is_valid(scope: str) -> bool:
    return (
        scope in _STANDARD
        or _LAUNCH.match(scope) is not None
        or _CUSTOM.match(scope) is not None
        or parse_resource_scope(scope) is not None
    )


def validate_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Check requested scopes and return them de-duplicated, in order.

    Raises :class:`ConfigurationError` naming the position of the first malformed scope.
    """
    result: list[str] = []
    for index, scope in enumerate(scopes):
        if not isinstance(scope, str) or not _is_valid(scope):
            raise ConfigurationError(f"scope #{index} is not a valid SMART scope")
        if scope not in result:
            result.append(scope)
    if not result:
        raise ConfigurationError("at least one scope is required")
    return tuple(result)


def format_scopes(scopes: Iterable[str]) -> str:
    """The space-separated ``scope`` parameter value."""
    return " ".join(scopes)


def parse_granted_scopes(scope: str | None) -> frozenset[str]:
    """The granted ``scope`` string as a set of tokens, kept verbatim (unknown ones included)."""
    return frozenset(scope.split()) if scope else frozenset()


def _tolerant(scope: str) -> ResourceScope | None:
    parsed = parse_resource_scope(scope)
    if parsed is not None:
        return parsed
    # Epic: bare API names ("Patient.read") and case variants ("user/Binary.Read").
    bare = re.match(r"^(?:(patient|user|system)/)?([A-Z][A-Za-z]*|\*)\.([A-Za-z*]+)$", scope)
    if bare is None:
        return None
    context, resource_type, suffix = bare.groups()
    lowered = suffix.lower()
    permissions = _permissions(lowered)
    if permissions is None:
        return None
    return ResourceScope(
        cast(Context, context or "user"), resource_type, permissions[0], permissions[1]
    )


def scopes_allow(granted: Iterable[str], resource_type: str, permission: str) -> bool:
    """Whether any granted scope allows ``permission`` on ``resource_type`` (any context)."""
    for scope in granted:
        parsed = _tolerant(scope)
        if parsed is not None and parsed.allows(resource_type, permission):
            return True
    return False

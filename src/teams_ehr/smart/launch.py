"""The inbound EHR launch: parse ``iss``/``launch`` and admit only approved issuers (requirement A1).

SMART App Launch 2.x §"EHR launch" (app-launch.md): the EHR opens the app's launch URL with ``iss``
(the FHIR base) and ``launch`` (an opaque handle echoed back at ``/authorize``), by GET query or
POST form. Threat T01: an ``iss`` that is not the canonical base of an approved, active
organization environment is refused *before any network I/O*. Threat T06: ``launch`` is capped at 2
KB of printable ASCII, passed through verbatim, never logged, and only its hash is remembered:
replay is refused per (canonical issuer, ``launch``) (:func:`launch_replay_key`), because
``launch`` is only unique within the EHR that issued it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from teams_ehr._redact import get_logger
from teams_ehr.errors import ConfigurationError, LaunchParameterError, UntrustedIssuerError
from teams_ehr.smart.canonical import MAX_URL_LENGTH, canonical_fhir_base
from teams_ehr.store.protocol import IssuerBinding

__all__ = [
    "MAX_LAUNCH_LENGTH",
    "IssuerResolver",
    "LaunchRequest",
    "StaticIssuerResolver",
    "admit_launch",
    "launch_hash",
    "launch_replay_key",
    "parse_launch_request",
]

MAX_LAUNCH_LENGTH = 2048
_PRINTABLE_ASCII = re.compile(r"^[\x21-\x7e]+$")

_log = get_logger(__name__)


class LaunchRequest(BaseModel):
    """A parsed EHR launch. ``iss`` is already canonical; ``launch`` stays out of ``repr``."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    iss: str
    launch: str = Field(repr=False)


def _single(params: Mapping[str, str], name: str, limit: int) -> str:
    value = params.get(name)
    if value is None or value == "":
        raise LaunchParameterError(
            f"launch parameter {name!r} is missing", reason="missing_" + name
        )
    if not isinstance(value, str) or len(value) > limit:
        raise LaunchParameterError(f"launch parameter {name!r} is too long", reason="bad_" + name)
    return value


def parse_launch_request(params: Mapping[str, str], *, allow_http: bool = False) -> LaunchRequest:
    """Read ``iss`` and ``launch`` from a GET query or POST form (both are plain mappings).

    Raises :class:`LaunchParameterError` for a missing, oversized or malformed value; ``iss`` is
    canonicalized with :func:`~teams_ehr.smart.canonical.canonical_fhir_base`.
    """
    iss = _single(params, "iss", MAX_URL_LENGTH)
    launch = _single(params, "launch", MAX_LAUNCH_LENGTH)
    if not _PRINTABLE_ASCII.match(launch):
        raise LaunchParameterError(
            "launch parameter 'launch' has forbidden characters", reason="bad_launch"
        )
    return LaunchRequest(iss=canonical_fhir_base(iss, allow_http=allow_http), launch=launch)


def launch_hash(launch: str) -> str:
    """SHA-256 hex of a ``launch`` value: the only form that is stored (replay guard, threat T06)."""
    return hashlib.sha256(launch.encode("utf-8")).hexdigest()


def launch_replay_key(issuer: str, launch: str) -> str:
    """SHA-256 hex of (canonical ``issuer``, ``launch``): the replay guard's key (threat T06).

    SMART App Launch makes ``launch`` an opaque value of the EHR that issued it, so two EHRs (or
    an organization's test and production environments) may issue the same value: only the pair
    is single use. A canonical FHIR base never contains NUL, so the joined form is unambiguous.
    """
    return hashlib.sha256(f"{issuer}\x00{launch}".encode()).hexdigest()


class IssuerResolver(Protocol):
    """Maps a canonical FHIR base to the approved, active organization environment, or ``None``.

    ``teams_ehr.store.protocol.OrganizationStore`` satisfies it; implementations must match the
    canonical string exactly and return ``None`` for pending or suspended organizations.
    """

    async def resolve_issuer(self, canonical_base: str) -> IssuerBinding | None: ...


class StaticIssuerResolver:
    """An in-memory :class:`IssuerResolver` over a fixed mapping (tests, single-tenant hosts).

    Keys must already be canonical and equal their binding's ``canonical_base``.
    """

    def __init__(self, mapping: Mapping[str, IssuerBinding], *, allow_http: bool = False) -> None:
        for key, binding in mapping.items():
            if canonical_fhir_base(key, allow_http=allow_http) != key:
                raise ConfigurationError("issuer key is not a canonical FHIR base URL")
            if binding.canonical_base != key:
                raise ConfigurationError("issuer key differs from its binding's canonical_base")
        self._mapping = dict(mapping)

    @classmethod
    def of(cls, *bindings: IssuerBinding, allow_http: bool = False) -> StaticIssuerResolver:
        """Build from bindings, keyed by their own ``canonical_base``."""
        return cls({b.canonical_base: b for b in bindings}, allow_http=allow_http)

    async def resolve_issuer(self, canonical_base: str) -> IssuerBinding | None:
        return self._mapping.get(canonical_base)


async def admit_launch(
    request: LaunchRequest, resolver: IssuerResolver
) -> tuple[LaunchRequest, IssuerBinding]:
    """Admit a launch whose ``iss`` is approved; :class:`UntrustedIssuerError` otherwise.

    No HTTP request is made here: discovery happens only after this returns (threat T01).
    """
    binding = await resolver.resolve_issuer(request.iss)
    if binding is None or binding.canonical_base != request.iss:
        _log.info("launch refused: issuer is not approved")
        raise UntrustedIssuerError("the launch issuer is not an approved FHIR base")
    return request, binding

"""Organization configuration: environments, approval state, configuration hash (requirement C1).

An :class:`Organization` is one Microsoft 365 tenant's healthcare organization with up to two
:class:`Environment` s (``test`` and ``production``, Epic's non-production and production
client IDs and keys, fhir.epic.com/Documentation?docId=oauth2). Each environment holds the
admin-entered
:class:`EnvironmentConfig` and its approval state (``draft`` → ``pending_approval`` →
``active``, ``suspended``), changed only by :mod:`teams_ehr.orgs.approval`.

:func:`config_hash` is SHA-256 over a canonical JSON of everything that decides where launches
go and who may approve (threat T28: "approval is bound to a hash of the config snapshot"):
the organization id, tenant, approver, self-approval policy, environment name and every
:class:`EnvironmentConfig` field. An approval records the hash; any edit changes it, so an
environment edited since its approval never resolves as a launch issuer. The display name is
cosmetic and outside the hash.

The FHIR base is stored in the one canonical form of :func:`~teams_ehr.smart.canonical.
canonical_fhir_base` (threat T02), the same routine launch uses.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from teams_ehr.errors import ConfigurationError, LaunchParameterError
from teams_ehr.smart.canonical import canonical_fhir_base
from teams_ehr.smart.discovery import DiscoverySnapshot
from teams_ehr.smart.epic_context_link import DEFAULT_LINK_FORMAT, ContextLinkFormat
from teams_ehr.store.protocol import OrganizationRow
from teams_ehr.teams.identity import normalize_guid

__all__ = [
    "ENVIRONMENT_NAMES",
    "ApprovalState",
    "EnvironmentConfig",
    "EnvironmentName",
    "Environment",
    "Organization",
    "config_hash",
]

EnvironmentName = Literal["test", "production"]
ApprovalState = Literal["draft", "pending_approval", "active", "suspended"]
ENVIRONMENT_NAMES: tuple[EnvironmentName, ...] = ("test", "production")

# built at import: a deferred model shows `(**data)` as its signature to inspect and IDEs
_CONFIG = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)
_ORG_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
_CLIENT_ID = re.compile(r"^[\x21-\x7e]{1,256}$")
_WRITER = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# An FDI context token: ``name=value`` where value is Epic's %MNEMONIC% text (may hold spaces,
# e.g. ``departmentId=%PERFDEPID;;; ; ;;NONE;%``), never '&' or control characters.
_CONTEXT_TOKEN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}=[\x20-\x25\x27-\x7e]{1,200}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_app_url(value: str, *, allow_http: bool, name: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https" and not (allow_http and parts.scheme == "http"):
        raise ValueError(f"{name} must be an https URL")
    if not parts.hostname or parts.username or parts.password or parts.fragment:
        raise ValueError(f"{name} must be an absolute URL without userinfo or fragment")
    if _CONTROL.search(value) or " " in value or len(value) > 2048:
        raise ValueError(f"{name} has forbidden characters")
    return value


class EnvironmentConfig(BaseModel):
    """What the Microsoft 365 admin configures for one environment (the Teams EHR connector's "configuration")."""

    model_config = _CONFIG

    fhir_base: str
    client_id: str
    redirect_uri: str
    jwks_url: str
    epic_client_id: str | None = None
    writer: str = "epic_clinical_note"
    context_tokens: tuple[str, ...] = ("sessionId=%CSN%",)
    # Requirement A10 format agreed with the Epic TS
    context_link: ContextLinkFormat = DEFAULT_LINK_FORMAT
    allow_http: bool = False  # loopback fakes and the demo only; part of the hash

    @model_validator(mode="before")
    @classmethod
    def _canonical_base(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("fhir_base"), str):
            try:
                base = canonical_fhir_base(
                    data["fhir_base"], allow_http=bool(data.get("allow_http", False))
                )
            except LaunchParameterError as exc:
                raise ValueError(f"fhir_base refused: {exc.reason}") from None
            data = {**data, "fhir_base": base}
        return data

    @field_validator("client_id", "epic_client_id")
    @classmethod
    def _client_id(cls, value: str | None) -> str | None:
        if value is not None and not _CLIENT_ID.match(value):
            raise ValueError("client IDs are 1–256 printable ASCII characters")
        return value

    @field_validator("writer")
    @classmethod
    def _writer(cls, value: str) -> str:
        if not _WRITER.match(value):
            raise ValueError("writer must be a snake_case strategy name")
        return value

    @field_validator("context_tokens")
    @classmethod
    def _tokens(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        names = [token.split("=", 1)[0].lower() for token in value]
        if len(value) > 32 or len(set(names)) != len(names):
            raise ValueError("context tokens must be at most 32, with distinct names")
        for token in value:
            if not _CONTEXT_TOKEN.match(token):
                raise ValueError("a context token must look like name=%MNEMONIC%")
        return value

    @model_validator(mode="after")
    def _urls(self) -> Self:
        _check_app_url(self.redirect_uri, allow_http=self.allow_http, name="redirect_uri")
        _check_app_url(self.jwks_url, allow_http=self.allow_http, name="jwks_url")
        return self


class Environment(BaseModel):
    """One environment's configuration and approval record.

    Invariant: the approval fields are set exactly when ``state == "active"``.
    """

    model_config = _CONFIG

    config: EnvironmentConfig
    state: ApprovalState = "draft"
    edited_by: str | None = None
    approved_config_hash: str | None = None
    approved_snapshot: DiscoverySnapshot | None = None
    approved_by: str | None = None
    approved_at: datetime | None = None

    @model_validator(mode="after")
    def _approval_iff_active(self) -> Self:
        approval = (
            self.approved_config_hash,
            self.approved_snapshot,
            self.approved_by,
            self.approved_at,
        )
        expected = self.state == "active"
        if any((value is not None) != expected for value in approval):
            raise ValueError("approval fields are set exactly when the environment is active")
        if self.approved_at is not None and self.approved_at.tzinfo is None:
            raise ValueError("approved_at must be timezone-aware")
        return self


class Organization(BaseModel):
    """A healthcare organization in one Entra tenant, with its designated approver (requirement C1)."""

    model_config = _CONFIG

    org_id: str
    display_name: str = Field(min_length=1, max_length=200)
    tenant_id: str
    approver_oid: str
    # The Teams EHR connector allows admin == approver; the EHR sign-in stays
    allow_self_approval: bool = True
    test: Environment | None = None
    production: Environment | None = None
    version: int = Field(default=0, exclude=True)  # the store row version, not stored

    @field_validator("org_id")
    @classmethod
    def _org_id(cls, value: str) -> str:
        if not _ORG_ID.match(value):
            raise ValueError("org_id must be 1–64 lower-case letters, digits and inner hyphens")
        return value

    @field_validator("display_name")
    @classmethod
    def _display_name(cls, value: str) -> str:
        if _CONTROL.search(value) or not value.strip():
            raise ValueError("display_name must be printable text")
        return value

    @field_validator("tenant_id", "approver_oid")
    @classmethod
    def _guid(cls, value: str) -> str:
        return normalize_guid(value)

    @model_validator(mode="after")
    def _distinct_environments(self) -> Self:
        if self.test is not None and self.production is not None:
            test, production = self.test.config, self.production.config
            if test.fhir_base == production.fhir_base:
                raise ValueError("test and production need different FHIR base URLs")
            if test.jwks_url == production.jwks_url:
                raise ValueError("test and production need different keys (JWKS URLs)")
        return self

    def environment(self, name: EnvironmentName) -> Environment | None:
        if name == "test":
            return self.test
        if name == "production":
            return self.production
        raise ConfigurationError(
            "environment must be 'test' or 'production'", reason="bad_environment"
        )

    def document(self) -> dict[str, Any]:
        """The JSON document stored by :class:`~teams_ehr.store.protocol.OrganizationStore`."""
        return self.model_dump(mode="json")

    @classmethod
    def from_row(cls, row: OrganizationRow) -> Organization:
        return cls.model_validate({**row.document, "version": row.version})

    def __repr_args__(self) -> Any:
        yield "org_id", self.org_id
        yield "version", self.version
        for name in ENVIRONMENT_NAMES:
            env = self.environment(name)
            yield name, None if env is None else env.state


def config_hash(org: Organization, name: EnvironmentName) -> str:
    """SHA-256 hex of the approval-relevant configuration of one environment (see module doc)."""
    env = org.environment(name)
    if env is None:
        raise ConfigurationError("the environment is not configured", reason="unknown_environment")
    material = {
        "v": 1,
        "org_id": org.org_id,
        "tenant_id": org.tenant_id,
        "approver_oid": org.approver_oid,
        "allow_self_approval": org.allow_self_approval,
        "environment": name,
        "config": env.config.model_dump(mode="json"),
    }
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(b"teams-ehr/org-config\x00" + text.encode("ascii")).hexdigest()

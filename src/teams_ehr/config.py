"""Frozen, typed configuration of a teams-ehr deployment (DESIGN.md: config at the edge).

:class:`TeamsEhrSettings` is what a host needs besides its organizations (which live in the
store and are managed by admins): where the app is reachable, the store, our SMART signing keys
per environment, and the Microsoft app registration. :func:`load_settings` reads one TOML file
and/or ``TEAMS_EHR__SECTION__KEY`` environment variables; nothing else reads the environment.
:class:`AttendanceSettings` configures the attendance pipeline (SPEC D1–D7); its defaults keep
a single development instance (and the sandbox) working without any file.
"""

from __future__ import annotations

import base64
import binascii
import os
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from teams_ehr.errors import ConfigurationError

__all__ = [
    "AdminSettings",
    "AttendanceSettings",
    "MicrosoftSettings",
    "SmartSettings",
    "TeamsEhrSettings",
    "load_settings",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


def decode_key(secret: SecretStr, *, name: str, minimum: int = 32) -> bytes:
    """A base64 (standard or URL-safe) key of at least ``minimum`` bytes."""
    raw = secret.get_secret_value().strip()
    try:
        key = base64.urlsafe_b64decode(raw.replace("+", "-").replace("/", "_") + "==")
    except (binascii.Error, ValueError):
        raise ConfigurationError(f"{name} is not base64", reason="bad_key") from None
    if len(key) < minimum:
        raise ConfigurationError(f"{name} needs at least {minimum} bytes", reason="weak_key")
    return key


class SmartSettings(BaseModel):
    """Our SMART client keys (one per environment: Epic refuses shared test/prod keys)."""

    model_config = _FROZEN

    signing_alg: Literal["RS384", "ES384"] = "RS384"
    test_key_path: Path | None = None
    production_key_path: Path | None = None
    provider_scopes: tuple[str, ...] = ("launch", "openid", "fhirUser")
    patient_scopes: tuple[str, ...] = ("launch", "openid", "fhirUser", "patient/Appointment.rs")
    approval_scopes: tuple[str, ...] = ("openid", "fhirUser")
    use_post: bool = False


class MicrosoftSettings(BaseModel):
    """The multi-tenant Entra app: Microsoft sign-in and app-only Graph (per org's tenant)."""

    model_config = _FROZEN

    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None
    certificate_path: Path | None = None
    private_key_path: Path | None = None
    authority_host: str = "https://login.microsoftonline.com"
    graph_base_url: str = "https://graph.microsoft.com"
    extra_join_hosts: frozenset[str] = frozenset()

    def certificate(self) -> tuple[bytes, bytes] | None:
        if self.certificate_path is None or self.private_key_path is None:
            return None
        return self.private_key_path.read_bytes(), self.certificate_path.read_bytes()


class AttendanceSettings(BaseModel):
    """The attendance pipeline (SPEC D1–D7). Without certificate paths a notification
    certificate is generated at start: fine for one development instance, but every instance
    (and every restart) must share one certificate in production. Without ``participant_key``
    the participant-key secret is derived from ``external_id_key``."""

    model_config = _FROZEN

    enabled: bool = True
    workers: bool = True  # run the inbox, outbox and maintenance loops in this process
    certificate_path: Path | None = None
    certificate_key_path: Path | None = None
    participant_key: SecretStr | None = None
    backend_scopes: tuple[str, ...] = (
        "system/DocumentReference.c",
        "system/DocumentReference.rs",
        "system/AuditEvent.c",
        "system/AuditEvent.rs",
        "system/Encounter.rs",
        "system/Encounter.u",
    )
    decrypt_before_ack: bool = True
    renewal_interval: timedelta = Field(default=timedelta(minutes=5), gt=timedelta(0))
    poll_interval: timedelta = Field(default=timedelta(seconds=1), gt=timedelta(0))
    reconcile_delay: timedelta = timedelta(minutes=15)  # security.md §3.3: meeting end + 15 min
    outbox_max_age: timedelta = timedelta(hours=72)
    # Retention (security.md §3.2 I1, I6), applied by the hourly purge of the maintenance loop.
    # A processed inbox row is the dedupe record of a notification: Graph redelivers for up to
    # 4 h, so it is kept at least that long (default 24 h, 6x the redelivery window).
    inbox_retention: timedelta = Field(default=timedelta(hours=24), ge=timedelta(hours=4))
    # I6: delivered outbox rows are gone <= 24 h after delivery (the purge runs hourly).
    delivered_retention: timedelta = Field(
        default=timedelta(hours=23), gt=timedelta(0), le=timedelta(hours=23)
    )
    # I6: dead letters are purged at T_retain after they were dead-lettered.
    dead_letter_retention: timedelta = Field(default=timedelta(hours=72), gt=timedelta(0))
    roster_heartbeat: timedelta = Field(default=timedelta(seconds=15), gt=timedelta(0))
    roster_grant_margin: timedelta = timedelta(hours=2)

    def certificate_files(self) -> tuple[bytes, bytes] | None:
        """``(certificate PEM, private key PEM)``, or ``None`` to generate one at start."""
        if self.certificate_path is None and self.certificate_key_path is None:
            return None
        if self.certificate_path is None or self.certificate_key_path is None:
            raise ConfigurationError("set both attendance certificate paths", reason="bad_key")
        try:
            return self.certificate_path.read_bytes(), self.certificate_key_path.read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"cannot read certificate: {exc.strerror}") from None


class AdminSettings(BaseModel):
    """The admin console (SPEC C1): who may create and edit organizations, per Entra tenant.

    The designated approver of an organization may always administer it; listed administrators
    of its tenant may too, and only they may create organizations."""

    model_config = _FROZEN

    administrators: dict[str, frozenset[str]] = {}
    session_ttl: timedelta = timedelta(hours=1)


class TeamsEhrSettings(BaseModel):
    """Everything a host configures once; organizations are managed at run time."""

    model_config = _FROZEN

    app_base_url: str
    store_url: str = "sqlite:///teams-ehr.sqlite3"
    encryption_key: SecretStr
    external_id_key: SecretStr
    smart: SmartSettings = SmartSettings()
    microsoft: MicrosoftSettings
    attendance: AttendanceSettings = AttendanceSettings()
    admin: AdminSettings = AdminSettings()
    allow_http: bool = False  # loopback development and tests only

    @field_validator("app_base_url")
    @classmethod
    def _base(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("app_base_url must be an absolute http(s) URL")
        return value.rstrip("/")

    def encryption_key_bytes(self) -> bytes:
        return decode_key(self.encryption_key, name="encryption_key")

    def external_id_key_bytes(self) -> bytes:
        return decode_key(self.external_id_key, name="external_id_key")


def _env_tree(environ: Mapping[str, str], prefix: str) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(prefix):
            continue
        path = [part.lower() for part in name[len(prefix) :].split("__") if part]
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        if path:
            node[path[-1]] = value
    return tree


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    prefix: str = "TEAMS_EHR__",
) -> TeamsEhrSettings:
    """Settings from a TOML file, overridden by ``TEAMS_EHR__SECTION__KEY`` variables."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"cannot read settings file {path}: {exc}") from None
    data = _merge(data, _env_tree(os.environ if environ is None else environ, prefix))
    try:
        return TeamsEhrSettings.model_validate(data)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})
        raise ConfigurationError(f"invalid settings: {', '.join(fields)}") from None

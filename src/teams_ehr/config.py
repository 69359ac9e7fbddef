"""Frozen, typed configuration of a teams-ehr deployment (docs/guides/integrator.md#settings).

:class:`TeamsEhrSettings` is what a host needs besides its organizations (which live in the
store and are managed by admins): where the app is reachable, the store, our SMART signing keys
per environment, and the Microsoft app registration. :class:`AttendanceSettings` configures the
attendance pipeline (docs/guides/attendance.md); its defaults keep a single development instance
(and the sandbox) working without any file.

Settings are checked when they are built, however they are built (keyword arguments,
``model_validate``, ``model_validate_json`` or :func:`load_settings`): URLs, base64 keys and
key files. Anything wrong raises one :class:`~teams_ehr.errors.ConfigurationError` (reason
``invalid_settings``) that lists every bad field with its fix and never a secret's value;
pydantic's ``ValidationError`` never reaches the caller. Secret fields are ``SecretStr``: plain
strings are accepted and wrapped. :func:`load_settings` reads one TOML file and/or
``TEAMS_EHR__SECTION__KEY`` environment variables; nothing else reads the environment.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import timedelta
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import SplitResult, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from teams_ehr.errors import ConfigurationError

__all__ = [
    "AdminSettings",
    "AttendanceSettings",
    "MicrosoftSettings",
    "SmartSettings",
    "TeamsEhrSettings",
    "load_settings",
]

_REASON = "invalid_settings"
_KEY_BYTES = 32
_NEW_KEY = 'python -c "import os,base64;print(base64.b64encode(os.urandom(32)).decode())"'
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
_ZERO = timedelta(0)


# -- checks shared by the settings models ---------------------------------------------------------


def _base64_bytes(text: str) -> bytes | None:
    """Standard or URL-safe base64, padding optional, surrounding whitespace ignored."""
    text = text.strip()
    if not _BASE64.fullmatch(text):
        return None
    body = text.rstrip("=")
    if len(body) % 4 == 1:
        return None
    body = body.replace("+", "-").replace("/", "_")
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        return None


def _check_key(secret: SecretStr, *, exact: bool) -> SecretStr:
    """A base64 key of exactly (or at least) 32 bytes; the message never shows the value."""
    size = f"{'' if exact else 'at least '}{_KEY_BYTES} bytes"
    key = _base64_bytes(secret.get_secret_value())
    if key is None:
        raise ValueError(f"not base64: give {size} of random data in base64 ({_NEW_KEY})")
    if len(key) < _KEY_BYTES or (exact and len(key) != _KEY_BYTES):
        raise ValueError(f"must decode to {size}: generate one with {_NEW_KEY}")
    return secret


def decode_key(secret: SecretStr, *, name: str, minimum: int = _KEY_BYTES) -> bytes:
    """A base64 (standard or URL-safe) key of at least ``minimum`` bytes."""
    key = _base64_bytes(secret.get_secret_value())
    if key is None:
        raise ConfigurationError(f"{name} is not base64", reason="bad_key")
    if len(key) < minimum:
        raise ConfigurationError(f"{name} needs at least {minimum} bytes", reason="weak_key")
    return key


def _url_parts(value: str) -> SplitResult | None:
    """``value`` split, or ``None`` if it has a bad port or IPv6 literal."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    return None if port == 0 else parts


def _http_url(value: str, *, example: str) -> str:
    """An absolute ``http(s)://host[:port][/path]`` URL (no query, fragment or user info)."""
    fix = f"must be an absolute http(s) URL, e.g. {example}"
    parts = _url_parts(value)
    if parts is None or parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(fix)
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"must have no user info: {fix}")
    if parts.query or parts.fragment or value.endswith(("?", "#")):
        raise ValueError(f"must have no query or fragment: {fix}")
    return value


def _readable_file(path: Path | None, *, fix: str) -> Path | None:
    if path is None:
        return None
    try:
        readable = path.is_file() and os.access(path, os.R_OK)
    except (OSError, ValueError):  # too long, NUL bytes, unencodable
        readable = False
    if not readable:
        raise ValueError(f"no readable file at {str(path)!r}: {fix}")
    return path


def _both_or_neither(first: Path | None, second: Path | None, names: str) -> None:
    if (first is None) != (second is None):
        raise ValueError(f"set both {names}, or neither")


# -- turning pydantic's errors into one ConfigurationError ---------------------------------------


def _model_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The settings model that owns the field at ``loc`` (``None`` past a non-model field)."""
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _fix(error: ErrorDetails, model: type[BaseModel]) -> str:
    kind = error["type"]
    if kind == "missing":
        return "required: add it"
    if kind == "extra_forbidden":
        owner = _model_at(model, error["loc"][:-1])
        known = f" (known: {', '.join(owner.model_fields)})" if owner is not None else ""
        return f"unknown setting: remove it or fix its spelling{known}"
    if kind == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    return error["msg"]


def _settings_error(exc: ValidationError, model: type[BaseModel]) -> ConfigurationError:
    """One error naming each bad field with its fix; pydantic never echoes input
    (``hide_input_in_errors``), and our own checks never put a value in their message."""
    lines: dict[str, None] = {}
    fields: dict[str, None] = {}
    for error in exc.errors(include_url=False, include_context=True, include_input=False):
        name = ".".join(str(part) for part in error["loc"]) or model.__name__
        fields[name] = None
        lines[f"  {name}: {_fix(error, model)}"] = None
    message = "\n".join([f"invalid settings: {', '.join(sorted(fields))}", *lines])
    return ConfigurationError(message, reason=_REASON)


_VALIDATING: ContextVar[bool] = ContextVar("teams_ehr_settings_validating", default=False)


class _Settings(BaseModel):
    """A settings section: frozen, no unknown keys, and invalid input is a ConfigurationError.

    The outermost section being validated turns pydantic's errors (its own and its nested
    sections', with their full locations) into one :class:`ConfigurationError`."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    @model_validator(mode="wrap")
    @classmethod
    def _one_error(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        if _VALIDATING.get():
            return handler(data)
        token = _VALIDATING.set(True)
        try:
            return handler(data)
        except ValidationError as exc:
            raise _settings_error(exc, cls) from None
        finally:
            _VALIDATING.reset(token)

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **options: Any) -> Self:
        try:  # JSON syntax errors are raised before any validator runs
            return super().model_validate_json(json_data, **options)
        except ValidationError as exc:
            raise _settings_error(exc, cls) from None


# -- the settings ---------------------------------------------------------------------------------


class SmartSettings(_Settings):
    """Our SMART client keys (one per environment: Epic refuses shared test/prod keys)."""

    signing_alg: Literal["RS384", "ES384"] = "RS384"
    test_key_path: Path | None = None
    production_key_path: Path | None = None
    provider_scopes: tuple[str, ...] = ("launch", "openid", "fhirUser")
    patient_scopes: tuple[str, ...] = ("launch", "openid", "fhirUser", "patient/Appointment.rs")
    approval_scopes: tuple[str, ...] = ("openid", "fhirUser")
    use_post: bool = False
    # how long a SMART `launch` value stays single use per issuer (threat T06, docs/security.md)
    launch_replay_window: timedelta = Field(
        default=timedelta(hours=1), gt=_ZERO, le=timedelta(days=1)
    )

    @field_validator("test_key_path", "production_key_path")
    @classmethod
    def _key_file(cls, value: Path | None) -> Path | None:
        return _readable_file(value, fix="write one with `teams-ehr keys new --out PATH`")


class MicrosoftSettings(_Settings):
    """The multi-tenant Entra app: Microsoft sign-in and app-only Graph (per org's tenant).

    ``authority_host`` is an Entra authority host of the public or a sovereign cloud, without a
    path: the organization's tenant is appended to it (Microsoft identity platform, "Authority")."""

    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None
    certificate_path: Path | None = None
    private_key_path: Path | None = None
    authority_host: str = "https://login.microsoftonline.com"
    graph_base_url: str = "https://graph.microsoft.com"
    extra_join_hosts: frozenset[str] = frozenset()

    @field_validator("authority_host")
    @classmethod
    def _authority(cls, value: str) -> str:
        from teams_ehr.teams.signin import DEFAULT_AUTHORITY_HOSTS

        known = ", ".join(f"https://{host}" for host in sorted(DEFAULT_AUTHORITY_HOSTS))
        fix = f"must be an Entra authority, an https URL with no path: one of {known}"
        parts = _url_parts(value)
        if parts is None or parts.scheme != "https":
            raise ValueError(fix)
        if parts.hostname not in DEFAULT_AUTHORITY_HOSTS or parts.username is not None:
            raise ValueError(fix)
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(fix)
        return value.rstrip("/")

    @field_validator("graph_base_url")
    @classmethod
    def _graph(cls, value: str) -> str:
        return _http_url(value, example="https://graph.microsoft.com")

    @field_validator("certificate_path", "private_key_path")
    @classmethod
    def _pem_file(cls, value: Path | None) -> Path | None:
        return _readable_file(value, fix="the app registration's certificate and key (PEM)")

    @model_validator(mode="after")
    def _pair(self) -> Self:
        pair = "certificate_path and private_key_path"
        _both_or_neither(self.certificate_path, self.private_key_path, pair)
        return self

    def certificate(self) -> tuple[bytes, bytes] | None:
        if self.certificate_path is None or self.private_key_path is None:
            return None
        return self.private_key_path.read_bytes(), self.certificate_path.read_bytes()


class AttendanceSettings(_Settings):
    """The attendance pipeline (docs/guides/attendance.md). Without certificate paths a
    notification certificate is generated at start: fine for one development instance, but every
    instance (and every restart) must share one certificate in production. Without
    ``participant_key`` the participant-key secret is derived from ``external_id_key``."""

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
    renewal_interval: timedelta = Field(default=timedelta(minutes=5), gt=_ZERO)
    poll_interval: timedelta = Field(default=timedelta(seconds=1), gt=_ZERO)
    # Reconciliation from the attendance report runs this long after the meeting ends.
    reconcile_delay: timedelta = Field(default=timedelta(minutes=15), ge=_ZERO)
    outbox_max_age: timedelta = Field(default=timedelta(hours=72), gt=_ZERO)
    # A write-back the EHR's token endpoint refuses for good (RFC 6749 §5.2 4xx, e.g.
    # invalid_client) is dead-lettered after this many attempts; transient errors keep retrying.
    permanent_failure_attempts: int = Field(default=3, ge=1, le=50)
    # Retention (docs/guides/attendance.md#retention), applied by the hourly purge of the
    # maintenance loop. A processed inbox row is the dedupe record of a notification: Graph
    # redelivers for up to 4 h, so it is kept at least that long (default 24 h, 6x the window).
    inbox_retention: timedelta = Field(default=timedelta(hours=24), ge=timedelta(hours=4))
    # Delivered outbox rows are gone <= 24 h after delivery (the purge runs hourly).
    delivered_retention: timedelta = Field(
        default=timedelta(hours=23), gt=_ZERO, le=timedelta(hours=23)
    )
    # Dead letters are purged at this age after they were dead-lettered.
    dead_letter_retention: timedelta = Field(default=timedelta(hours=72), gt=_ZERO)
    roster_heartbeat: timedelta = Field(default=timedelta(seconds=15), gt=_ZERO)
    roster_grant_margin: timedelta = Field(default=timedelta(hours=2), ge=_ZERO)

    @field_validator("certificate_path", "certificate_key_path")
    @classmethod
    def _pem_file(cls, value: Path | None) -> Path | None:
        return _readable_file(value, fix="the notification certificate and its key (PEM)")

    @field_validator("participant_key")
    @classmethod
    def _participant_key(cls, value: SecretStr | None) -> SecretStr | None:
        return None if value is None else _check_key(value, exact=False)

    @model_validator(mode="after")
    def _pair(self) -> Self:
        pair = "certificate_path and certificate_key_path"
        _both_or_neither(self.certificate_path, self.certificate_key_path, pair)
        return self

    def certificate_files(self) -> tuple[bytes, bytes] | None:
        """``(certificate PEM, private key PEM)``, or ``None`` to generate one at start."""
        if self.certificate_path is None or self.certificate_key_path is None:
            return None  # both or neither: checked at construction
        try:
            return self.certificate_path.read_bytes(), self.certificate_key_path.read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"cannot read certificate: {exc.strerror}") from None


class AdminSettings(_Settings):
    """The admin console (docs/guides/ehr-analyst.md): who may create and edit organizations,
    per Entra tenant.

    The designated approver of an organization may always administer it; listed administrators
    of its tenant may too, and only they may create organizations."""

    administrators: dict[str, frozenset[str]] = {}
    session_ttl: timedelta = Field(default=timedelta(hours=1), gt=_ZERO)


class TeamsEhrSettings(_Settings):
    """Everything a host configures once; organizations are managed at run time.

    ``encryption_key`` (AES-256-GCM for secrets at rest) is exactly 32 bytes in base64;
    ``external_id_key`` (the meeting ``externalId`` HMAC, RFC 2104 §3) at least 32."""

    app_base_url: str
    store_url: str = "sqlite:///teams-ehr.sqlite3"
    encryption_key: SecretStr
    external_id_key: SecretStr
    smart: SmartSettings = SmartSettings()
    microsoft: MicrosoftSettings
    attendance: AttendanceSettings = AttendanceSettings()
    admin: AdminSettings = AdminSettings()
    allow_http: bool = False  # loopback development and tests only
    # Microsoft sandbox mode (docs/guides/ehr-analyst.md): the host itself plays Microsoft's side
    # (FakeEntra, FakeGraph, simulated Teams pages), for a loopback app_base_url only unless the
    # explicit development flag microsoft_sandbox_off_loopback is set too.
    microsoft_sandbox_off_loopback: bool = False
    microsoft_sandbox: bool = False
    # reverse proxies (addresses or networks) whose X-Forwarded-For / X-Forwarded-Proto are
    # believed: docs/guides/integrator.md, "Behind a reverse proxy"
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()

    @field_validator("app_base_url")
    @classmethod
    def _base(cls, value: str) -> str:
        return _http_url(value, example="https://visits.example.org").rstrip("/")

    @field_validator("microsoft_sandbox")
    @classmethod
    def _sandbox_on_loopback(cls, value: bool, info: ValidationInfo) -> bool:
        base = info.data.get("app_base_url")
        if not value or info.data.get("microsoft_sandbox_off_loopback") or base is None:
            return value
        host = urlsplit(base).hostname or ""
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(
                "the Microsoft sandbox serves fake Microsoft sign-in and Teams pages, so it runs "
                "only on a loopback app_base_url (http://127.0.0.1:<port> or http://localhost:"
                "<port>): change app_base_url, turn microsoft_sandbox off, or set the development "
                "flag microsoft_sandbox_off_loopback = true on a machine no one else can reach"
            )
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple | set | frozenset):
            return value
        networks = []
        for each in value:
            try:
                networks.append(ipaddress.ip_network(str(each).strip(), strict=True))
            except ValueError:
                raise ValueError(
                    f"{str(each)[:64]!r} is not an IP address or network: list the addresses "
                    'your reverse proxies connect from, e.g. ["127.0.0.1", "10.0.0.0/8"]'
                ) from None
        return tuple(networks)

    @field_validator("store_url")
    @classmethod
    def _store(cls, value: str) -> str:
        if value.startswith("sqlite://"):
            from teams_ehr.store.factory import sqlite_path

            try:
                sqlite_path(value)
            except ConfigurationError as exc:
                raise ValueError(str(exc)) from None
        elif not value.startswith(("postgresql://", "postgres://")):
            raise ValueError(
                "use sqlite:///relative.db, sqlite:////absolute.db, sqlite://:memory: "
                "or postgresql://user@host/database"
            )
        return value

    @field_validator("encryption_key")
    @classmethod
    def _encryption_key(cls, value: SecretStr) -> SecretStr:
        return _check_key(value, exact=True)

    @field_validator("external_id_key")
    @classmethod
    def _external_id_key(cls, value: SecretStr) -> SecretStr:
        return _check_key(value, exact=False)

    def encryption_key_bytes(self) -> bytes:
        return decode_key(self.encryption_key, name="encryption_key")

    def external_id_key_bytes(self) -> bytes:
        return decode_key(self.external_id_key, name="external_id_key")


# -- loading from a TOML file and the environment ------------------------------------------------


def _is_path_field(annotation: Any) -> bool:
    return annotation is Path or Path in getattr(annotation, "__args__", ())


def _anchored(data: Mapping[str, Any], model: type[BaseModel], folder: Path) -> dict[str, Any]:
    """``data`` from a file in ``folder``, with its relative paths made absolute against it."""
    resolved = dict(data)
    for name, field in model.model_fields.items():
        value = resolved.get(name)
        nested = _model_at(model, (name,))
        if nested is not None and isinstance(value, Mapping):
            resolved[name] = _anchored(value, nested, folder)
        elif isinstance(value, str) and _is_path_field(field.annotation):
            resolved[name] = str(folder / value)
        elif name == "store_url" and isinstance(value, str) and value.startswith("sqlite:///"):
            rest = value.removeprefix("sqlite:///")
            if rest and rest != ":memory:" and not Path(rest).is_absolute():
                resolved[name] = f"sqlite:///{folder / rest}"
    return resolved


def _env_tree(environ: Mapping[str, str], prefix: str) -> dict[str, Any]:
    paths: dict[tuple[str, ...], tuple[str, str]] = {}
    for name, value in environ.items():
        if name.startswith(prefix):
            path = tuple(part.lower() for part in name[len(prefix) :].split("__") if part)
            if path:
                paths[path] = (name, value)
    clashes = sorted(
        f"{paths[short][0]} and {name}"
        for path, (name, _) in paths.items()
        for short in (path[:end] for end in range(1, len(path)))
        if short in paths
    )
    if clashes:
        raise ConfigurationError(
            "invalid settings: a section cannot also be a value; unset one of "
            + ", ".join(clashes),
            reason=_REASON,
        )
    tree: dict[str, Any] = {}
    for path, (_, value) in paths.items():
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
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


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib  # only load_settings with a file reads TOML

    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        problem = exc.strerror or type(exc).__name__
    except UnicodeDecodeError:
        problem = "not UTF-8 text"
    except tomllib.TOMLDecodeError as exc:
        problem = f"not valid TOML: {exc}"
    raise ConfigurationError(f"cannot read settings file {str(path)!r}: {problem}", reason=_REASON)


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    prefix: str = "TEAMS_EHR__",
) -> TeamsEhrSettings:
    """Settings from a TOML file, overridden by ``TEAMS_EHR__SECTION__KEY`` variables.

    Relative paths written in the file (key and certificate files, a ``sqlite:///`` store)
    are relative to the file's folder; those from the environment, and the default store, to
    the working directory. Raises :class:`~teams_ehr.errors.ConfigurationError`
    (``invalid_settings``) naming every bad field."""
    data: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        data = _anchored(_read_toml(file), TeamsEhrSettings, file.absolute().parent)
    data = _merge(data, _env_tree(os.environ if environ is None else environ, prefix))
    return TeamsEhrSettings.model_validate(data)

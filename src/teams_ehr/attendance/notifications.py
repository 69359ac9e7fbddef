"""Graph change-notification payloads and meeting call events, parsed without names
(requirements D1, D2).

Wire models follow Graph's ``changeNotificationCollection`` / ``changeNotification`` /
``changeNotificationEncryptedContent`` resources (v1.0 and beta reference) and the lifecycle
notifications of *Reduce missing subscriptions and change notifications*. They are frozen,
``extra="allow"`` and hide input in errors; ``clientState`` is a ``SecretStr`` and the ``resource``
(which embeds the meeting's join URL) is kept out of ``repr``.

Meeting call events (*Get change notifications for Microsoft Teams meeting call updates*, beta)
come in two shapes, both accepted by :func:`parse_call_event`:

* current: ``eventType`` ``callStarted``/``callEnded``/``rosterUpdated``, ``participants@delta[]``
  with ``info.identity.{user|guest|…}``, ``isInLobby`` and ``removedState`` when a participant left;
* older: ``Microsoft.Communication.CallStarted|CallEnded|CallRosterUpdate`` with
  ``activeParticipants@joined|@delta`` and ``activeParticipants@exited|@left|@remove`` entries
  carrying ``identity.{User|…}`` (capitalised keys).

Display names are never read: identities become a keyed hash (:class:`ParticipantKeyer`), an
identity kind and a tenant id (threat T26).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SecretStr, ValidationError

from teams_ehr.errors import ConfigurationError, WebhookRejectedError

__all__ = [
    "CALL_EVENT_TYPES",
    "CallEventEnvelope",
    "ChangeNotification",
    "ChangeNotificationCollection",
    "EncryptedContent",
    "InboxEnvelope",
    "LifecycleEnvelope",
    "ParticipantChange",
    "ParticipantKeyer",
    "ResourceData",
    "join_url_fingerprint",
    "resource_fingerprint",
    "SealedCallEventEnvelope",
    "parse_call_event",
    "parse_inbox_envelope",
]

_WIRE = ConfigDict(frozen=True, extra="allow", populate_by_name=True, hide_input_in_errors=True)
_OURS = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class EncryptedContent(BaseModel):
    """``changeNotificationEncryptedContent``."""

    model_config = _WIRE
    data: str = Field(repr=False)
    data_key: str = Field(alias="dataKey", repr=False)
    data_signature: str = Field(alias="dataSignature", repr=False)
    encryption_certificate_id: str = Field(alias="encryptionCertificateId", max_length=128)
    encryption_certificate_thumbprint: str | None = Field(
        default=None, alias="encryptionCertificateThumbprint"
    )


class ResourceData(BaseModel):
    model_config = _WIRE
    odata_type: str | None = Field(default=None, alias="@odata.type")
    odata_id: str | None = Field(default=None, alias="@odata.id", repr=False)
    id: str | None = Field(default=None, repr=False)


class ChangeNotification(BaseModel):
    """One item of ``value[]``: a resource change or, with ``lifecycleEvent``, a lifecycle event."""

    model_config = _WIRE
    id: str | None = Field(default=None, max_length=256)
    subscription_id: str = Field(alias="subscriptionId", min_length=1, max_length=128)
    client_state: SecretStr | None = Field(default=None, alias="clientState")
    change_type: str | None = Field(default=None, alias="changeType", max_length=64)
    resource: str | None = Field(default=None, repr=False, max_length=4096)
    resource_data: ResourceData | None = Field(default=None, alias="resourceData", repr=False)
    encrypted_content: EncryptedContent | None = Field(default=None, alias="encryptedContent")
    tenant_id: str | None = Field(default=None, alias="tenantId", max_length=64)
    organization_id: str | None = Field(default=None, alias="organizationId", max_length=64)
    subscription_expiration_date_time: AwareDatetime | None = Field(
        default=None, alias="subscriptionExpirationDateTime"
    )
    lifecycle_event: str | None = Field(default=None, alias="lifecycleEvent", max_length=64)

    @property
    def effective_tenant(self) -> str | None:
        return self.tenant_id or self.organization_id


class ChangeNotificationCollection(BaseModel):
    """``changeNotificationCollection``: ``value[]`` plus the rich notifications' JWTs."""

    model_config = _WIRE
    value: list[ChangeNotification] = Field(max_length=1000)
    validation_tokens: list[str] = Field(
        default_factory=list, alias="validationTokens", repr=False, max_length=100
    )


# -- identities, hashed --------------------------------------------------------------------------


@dataclass(frozen=True)
class ParticipantKeyer:
    """Keyed hash of a Graph identity id, scoped to an organization (never the raw id)."""

    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) < 16:
            raise ConfigurationError("participant key secret must be at least 16 bytes")

    def __repr__(self) -> str:
        return "ParticipantKeyer(secret=***)"

    def key(self, org_id: str, identity_id: str) -> str:
        # surrogatepass: a JSON "\ud800" escape decodes to a lone surrogate, still an id to hash
        message = f"{org_id}\x1f{identity_id.strip().lower()}".encode("utf-8", "surrogatepass")
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()[:32]


CALL_EVENT_TYPES: Mapping[str, str] = {
    "callstarted": "callStarted",
    "microsoft.communication.callstarted": "callStarted",
    "callended": "callEnded",
    "microsoft.communication.callended": "callEnded",
    "rosterupdated": "rosterUpdated",
    "microsoft.communication.callrosterupdate": "rosterUpdated",
}
"""Both doc revisions' ``eventType`` spellings, normalised; unknown values are kept verbatim."""

# Identity kinds of communicationsIdentitySet (beta), in preference order; lower-cased.
_IDENTITY_KINDS = (
    "user",
    "guest",
    "acsuser",
    "azurecommunicationservicesuser",
    "spooluser",
    "phone",
    "applicationinstance",
    "application",
    "device",
    "encrypted",
    "onpremises",
    "acsapplicationinstance",
)
_ANONYMOUS_PROVIDERS = frozenset({"none", "anonymous"})
_JOINED_KEYS = ("activeparticipants@joined", "activeparticipants@delta")
_LEFT_KEYS = ("activeparticipants@exited", "activeparticipants@left", "activeparticipants@remove")


class ParticipantChange(BaseModel):
    """One roster change with no name: hashed identity, identity kind, tenant, lobby/removed."""

    model_config = _OURS
    participant_key: str
    identity_kind: str
    tenant_id: str | None = None
    in_lobby: bool = False
    removed: bool = False


def _lower_keys(obj: object) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in obj.items()} if isinstance(obj, Mapping) else {}


def _participant(
    raw: object, *, org_id: str, keyer: ParticipantKeyer, left: bool
) -> ParticipantChange:
    entry = _lower_keys(raw)
    identity_set = _lower_keys(
        _lower_keys(entry.get("info")).get("identity") or entry.get("identity")
    )
    kind, identity = "unknown", {}
    for candidate in _IDENTITY_KINDS:
        if isinstance(identity_set.get(candidate), Mapping):
            kind, identity = candidate, _lower_keys(identity_set[candidate])
            break
    else:
        for name, value in identity_set.items():  # an identity kind newer than this table
            if isinstance(value, Mapping) and not name.startswith("@"):
                kind, identity = name, _lower_keys(value)
                break
    if kind == "user" and str(identity.get("identityprovider", "")).lower() in _ANONYMOUS_PROVIDERS:
        kind = "guest"
    identity_id = identity.get("id") or entry.get("id")
    if not isinstance(identity_id, str) or not identity_id or len(identity_id) > 512:
        raise WebhookRejectedError("participant without an id", reason="malformed_call_event")
    tenant = identity.get("tenantid")
    removed = left or isinstance(entry.get("removedstate"), Mapping)
    return ParticipantChange(
        participant_key=keyer.key(org_id, identity_id),
        identity_kind=kind,
        tenant_id=tenant.lower() if isinstance(tenant, str) and len(tenant) <= 64 else None,
        in_lobby=entry.get("isinlobby") is True,
        removed=removed,
    )


class CallEventEnvelope(BaseModel):
    """What the inbox stores for one meeting call event (no names, no join URL, no raw ids)."""

    model_config = _OURS
    type: Literal["call_event"] = "call_event"
    subscription_id: str
    org_id: str
    external_id: str
    tenant_id: str
    event_type: str
    at: AwareDatetime
    changes: tuple[ParticipantChange, ...] = ()
    resource_fingerprint: str | None = None


class LifecycleEnvelope(BaseModel):
    """What the inbox stores for a lifecycle notification."""

    model_config = _OURS
    type: Literal["lifecycle"] = "lifecycle"
    subscription_id: str
    org_id: str
    external_id: str
    lifecycle_event: str
    received_at: AwareDatetime


class SealedCallEventEnvelope(BaseModel):
    """A call event stored still encrypted (Graph's own encryption, inside the store's), when
    the webhook defers decryption to the worker (``WebhookSecurity.decrypt_before_ack=False``)."""

    model_config = _OURS
    type: Literal["sealed_call_event"] = "sealed_call_event"
    subscription_id: str
    org_id: str
    external_id: str
    tenant_id: str
    encrypted: EncryptedContent
    received_at: AwareDatetime
    resource_fingerprint: str | None = None


InboxEnvelope = CallEventEnvelope | LifecycleEnvelope | SealedCallEventEnvelope


class _EnvelopeDoc(BaseModel):
    model_config = _OURS
    envelope: CallEventEnvelope | LifecycleEnvelope | SealedCallEventEnvelope = Field(
        discriminator="type"
    )


_JOIN_URL_IN_RESOURCE = re.compile(
    r"joinweburl(?:='|\s*(?:eq|\+eq\+)\s*\+?')([^']*)'", re.IGNORECASE
)


def join_url_fingerprint(join_url: str) -> str:
    """SHA-256 of a join URL with every level of percent-encoding removed: the same meeting
    whether the URL is written plain, encoded once, or twice (as inside a subscription
    resource)."""
    value = join_url.strip()
    for _ in range(4):
        decoded = unquote(value)
        if decoded == value:
            break
        value = decoded
    return hashlib.sha256(value.encode()).hexdigest()


def resource_fingerprint(resource: str | None) -> str | None:
    """:func:`join_url_fingerprint` of the join URL named in a notification's ``resource``
    (``onlineMeetings(joinWebUrl='…')`` or the older ``$filter=JoinWebUrl eq '…'``)."""
    match = _JOIN_URL_IN_RESOURCE.search(resource or "")
    return join_url_fingerprint(match.group(1)) if match else None


def parse_inbox_envelope(payload: bytes) -> InboxEnvelope:
    """Decode an inbox payload written by the webhook; ``ValueError`` if it is not one."""
    try:
        return _EnvelopeDoc.model_validate_json(b'{"envelope":' + payload + b"}").envelope
    except ValidationError as exc:
        raise ValueError("not an inbox envelope") from exc


def parse_call_event(
    document: Mapping[str, Any], *, org_id: str, keyer: ParticipantKeyer
) -> tuple[str, datetime, tuple[ParticipantChange, ...]]:
    """``(event_type, eventDateTime in UTC, changes)`` of a decrypted meeting call event.

    ``event_type`` is normalised through :data:`CALL_EVENT_TYPES` (unknown values are kept as
    sent). Raises :class:`WebhookRejectedError` (``malformed_call_event``) on a bad shape.
    """
    doc = _lower_keys(document)
    raw_type = doc.get("eventtype")
    raw_time = doc.get("eventdatetime")
    if not isinstance(raw_type, str) or not isinstance(raw_time, str) or len(raw_type) > 128:
        raise WebhookRejectedError("call event without type or time", reason="malformed_call_event")
    try:
        at = datetime.fromisoformat(_trim_fraction(raw_time))
        utc = at.astimezone(UTC) if at.tzinfo is not None else None
    except (ValueError, OverflowError):  # e.g. 0001-01-01T00:00+05:00 is before year 1 in UTC
        raise WebhookRejectedError(
            "call event time invalid", reason="malformed_call_event"
        ) from None
    if utc is None:
        raise WebhookRejectedError("call event time is not UTC", reason="malformed_call_event")
    event_type = CALL_EVENT_TYPES.get(raw_type.lower(), raw_type)
    changes: list[ParticipantChange] = []
    for field_name, left in (
        [("participants@delta", False)]
        + [(k, False) for k in _JOINED_KEYS]
        + [(k, True) for k in _LEFT_KEYS]
    ):
        entries = doc.get(field_name)
        if entries is None:
            continue
        if not isinstance(entries, list) or len(entries) > 1000:
            raise WebhookRejectedError("participant list invalid", reason="malformed_call_event")
        changes.extend(_participant(e, org_id=org_id, keyer=keyer, left=left) for e in entries)
    return event_type, utc, tuple(changes)


def _trim_fraction(value: str) -> str:
    """Graph sends 7 fractional digits (``.0553203Z``); Python before 3.11 parsing wants ≤ 6."""
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    if "." not in text:
        return text
    head, rest = text.split(".", 1)
    digits = len(rest) - len(rest.lstrip("0123456789"))
    if digits == 0:
        return f"{head}{rest}"
    return f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"

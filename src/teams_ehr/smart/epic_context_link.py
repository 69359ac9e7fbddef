"""Epic context-aware linking: the AES-CBC encrypted visit context of telehealth links (requirement A10).

What is confirmed (the vendor pages cited below):

* Epic telehealth ("Context-Aware Linking", CAL) puts the visit context in an encrypted query
  string built from FDI "context tokens" such as ``sessionId=%CSN%`` (Microsoft's connector
  docs) — Vidyo shows decrypted examples like ``SessionID=…&ConferenceID=…&Timestamp=<unix s>``
  (vidyo.com …/Automatic-link-expiration-ad-hoc-rooms.htm);
* the cipher is AES-CBC with a key shared with Epic: AES-256-CBC recommended from Epic Aug 2019,
  AES-128-CBC from Aug 2018 (docs.pexip.com/admin/telehealth_configuration.htm);
* the ciphertext travels base64-encoded, then URL-encoded (Hyland OnBase "Constructing the Query
  String": ``?arg=pcPEM+1P05…%2F64aN…%3D``); Hyland also says an AES-256 key is entered as a
  32-byte base64 value and an AES-128 key as "a SHA1 hash of a plain-text value", and that Epic's
  ``epicTimestamp`` is ``yyyyMMddHHmmss`` UTC.

What is **not** confirmed publicly: how Epic handles the IV. So it is explicit configuration,
:data:`IvMode`, chosen per organization with the Epic technical specialist:

* ``"prefixed"`` (default, and what :func:`encrypt_context_link` emits): the first 16 decoded
  bytes are the IV, the rest the ciphertext;
* ``"zero"``: an all-zero IV and the whole payload is ciphertext (a fixed IV, as some CBC
  integrations use).

Likewise :meth:`ContextLinkKey.from_sha1_passphrase` truncating SHA-1 to 16 bytes is our reading
of Hyland's sentence, not an Epic statement.

Security notes. CBC has no integrity: a modified ciphertext decrypts to garbage blocks (or, with a
prefixed IV, a chosen first block). We therefore refuse anything that is not strict UTF-8 without
control characters, parses as a strict query string, and carries well-formed identifiers and a
fresh timestamp; the patient still lands in the Teams lobby, where the clinician admits them (the
lobby is the authorization control, threat T20). Every failure raises
:class:`~teams_ehr.errors.ContextLinkError` with a specific ``reason``; integrations must answer
all of them with one generic body, or the reasons become a padding oracle. Replays are refused
through :class:`~teams_ehr.store.protocol.NonceStore` keyed by a keyed hash of the plaintext, so no
patient data is derivable from what is stored. Messages never contain decrypted values.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qsl, unquote, urlencode

from pydantic import BaseModel, ConfigDict, Field

from teams_ehr._redact import get_logger
from teams_ehr.errors import ConfigurationError, ContextLinkError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers import Cipher, modes
from teams_ehr.smart.context import LaunchContext
from teams_ehr.store.protocol import NonceStore

__all__ = [
    "DEFAULT_LINK_FORMAT",
    "REPLAY_NAMESPACE",
    "ContextLinkFormat",
    "ContextLinkKey",
    "EpicContextLink",
    "IvMode",
    "decrypt_context_link",
    "encrypt_context_link",
]

IvMode = Literal["prefixed", "zero"]
REPLAY_NAMESPACE = "epic_context_link"

_BLOCK = 16
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_FHIR_ID = re.compile(r"^[A-Za-z0-9.-]{1,64}$")  # FHIR R4 §2.24.0.1 "id" datatype
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# Lower-cased wire names → our field. Names and birth dates (FirstName, LastName…) are dropped.
_FIELDS = {
    "sessionid": "session_id",
    "conferenceid": "conference_id",
    "departmentid": "department_id",
    "department": "department_id",
    "patient": "patient",
    "fhirpatient": "patient",
    "encounter": "encounter",
    "fhirencounter": "encounter",
    "appointment": "appointment",
    "fhirappointment": "appointment",
    "timestamp": "timestamp",
    "epictimestamp": "timestamp",
}
_FHIR_FIELDS = frozenset({"patient", "encounter", "appointment"})

_log = get_logger(__name__)


def _refuse(reason: str) -> ContextLinkError:
    return ContextLinkError(f"context link refused: {reason.replace('_', ' ')}", reason=reason)


class ContextLinkKey:
    """The AES key shared with Epic: 16 bytes (AES-128-CBC) or 32 bytes (AES-256-CBC).

    The key bytes never appear in ``repr``/``str``.
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) not in (16, 32):
            raise ConfigurationError(
                "context link key must be 16 or 32 bytes", reason="bad_context_link_key"
            )
        self._key = key

    @classmethod
    def from_base64(cls, text: str) -> ContextLinkKey:
        """A key entered as base64 (Hyland: AES-256 keys are "a 32-byte Base64-encoded value")."""
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigurationError(
                "context link key is not valid base64", reason="bad_context_link_key"
            ) from None
        return cls(raw)

    @classmethod
    def from_sha1_passphrase(cls, passphrase: str) -> ContextLinkKey:
        """AES-128 key = the first 16 bytes of SHA-1(passphrase) (⚠ inferred, see module doc)."""
        if not passphrase:
            raise ConfigurationError("empty passphrase", reason="bad_context_link_key")
        digest = hashlib.sha1(passphrase.encode("utf-8")).digest()  # noqa: S324 (Epic interop)
        return cls(digest[:16])

    @property
    def bits(self) -> int:
        return len(self._key) * 8

    def _cipher(self, iv: bytes) -> Cipher[modes.CBC]:
        # imported on first use: a host without Epic context links never loads the AES primitives
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        return Cipher(algorithms.AES(self._key), modes.CBC(iv))

    def _replay_key(self, plaintext: bytes) -> str:
        return hmac.new(
            self._key, b"teams-ehr/context-link/replay\x00" + plaintext, "sha256"
        ).hexdigest()

    def __repr__(self) -> str:
        return f"<ContextLinkKey AES-{self.bits}-CBC>"

    __str__ = __repr__


class ContextLinkFormat(BaseModel):
    """How an organization's Epic build formats its links (agree it with the Epic TS).

    ``require_timestamp=False`` accepts links without a timestamp; they cannot be refused as
    stale, and a replay is refused only for ``max_age`` after first use. Keep it ``True``
    whenever the FDI record can carry a timestamp token.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    iv_mode: IvMode = "prefixed"
    require_timestamp: bool = True
    max_skew: timedelta = Field(default=timedelta(seconds=60), ge=timedelta(0))
    max_encoded_length: int = Field(default=8192, ge=64, le=65536)


DEFAULT_LINK_FORMAT = ContextLinkFormat()


class EpicContextLink(BaseModel):
    """A decrypted, fresh, first-use context link. Identifiers stay out of ``repr``."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    session_id: str = Field(repr=False)
    conference_id: str | None = Field(default=None, repr=False)
    department_id: str | None = Field(default=None, repr=False)
    issued_at: datetime | None = None
    context: LaunchContext


# -- decoding --------------------------------------------------------------------------------


def _decode_base64(encoded: str, limit: int) -> bytes:
    text = encoded.strip()
    if not text:
        raise _refuse("empty")
    if len(text) > limit:
        raise _refuse("too_long")
    if "%" in text:  # still URL-encoded once (hosts that pass the raw query value)
        text = unquote(text)
    text = text.replace(" ", "+")  # a form decoder turned '+' into ' '
    urlsafe, standard = ("-" in text or "_" in text), ("+" in text or "/" in text)
    if urlsafe and standard:
        raise _refuse("bad_base64")
    if urlsafe:
        text = text.replace("-", "+").replace("_", "/")
    text = text.rstrip("=")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _refuse("bad_base64") from None


def _decrypt(raw: bytes, key: ContextLinkKey, iv_mode: IvMode) -> bytes:
    if iv_mode == "prefixed":
        iv, body = raw[:_BLOCK], raw[_BLOCK:]
    else:
        iv, body = bytes(_BLOCK), raw
    if len(iv) != _BLOCK or not body or len(body) % _BLOCK:
        raise _refuse("bad_ciphertext_length")
    decryptor = key._cipher(iv).decryptor()
    padded = decryptor.update(body) + decryptor.finalize()
    from cryptography.hazmat.primitives import padding

    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise _refuse("bad_padding") from None


def _parse_timestamp(value: str) -> datetime:
    if not value.isascii() or not value.isdigit():
        raise _refuse("bad_timestamp")
    try:
        if len(value) == 14:  # yyyyMMddHHmmss, UTC (Hyland "epicTimestamp")
            return datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
        if 9 <= len(value) <= 11:  # Unix seconds (Vidyo "Timestamp")
            return datetime.fromtimestamp(int(value), tz=UTC)
    except (ValueError, OverflowError, OSError):
        pass
    raise _refuse("bad_timestamp")


def _parse_fields(plaintext: bytes) -> dict[str, str]:
    try:
        text = plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse("not_utf8") from None
    if _CONTROL.search(text):
        raise _refuse("bad_format")
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True, max_num_fields=64)
    except ValueError:
        raise _refuse("bad_format") from None
    fields: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in pairs:
        lowered = name.lower()
        if lowered in seen:
            raise _refuse("duplicate_field")
        seen.add(lowered)
        target = _FIELDS.get(lowered)
        if target is None or value == "":
            continue
        if target in fields:  # two aliases of one field (department + departmentId)
            raise _refuse("duplicate_field")
        pattern = _FHIR_ID if target in _FHIR_FIELDS else _ID
        if target != "timestamp" and not pattern.match(value):
            raise _refuse(f"bad_{target}")
        fields[target] = value
    return fields


def _check_fresh(
    issued_at: datetime | None, now: datetime, max_age: timedelta, link_format: ContextLinkFormat
) -> None:
    if issued_at is None:
        if link_format.require_timestamp:
            raise _refuse("missing_timestamp")
        return
    if issued_at > now + link_format.max_skew:
        raise _refuse("future_link")
    if now - issued_at > max_age:
        raise _refuse("stale_link")


async def decrypt_context_link(
    encrypted: str,
    key: ContextLinkKey,
    *,
    now: datetime,
    max_age: timedelta,
    nonces: NonceStore,
    link_format: ContextLinkFormat = DEFAULT_LINK_FORMAT,
) -> EpicContextLink:
    """Decrypt, parse and check one link; :class:`ContextLinkError` with a ``reason`` otherwise.

    Order: base64 → AES-CBC → PKCS#7 → UTF-8 → query string → identifiers → freshness
    (``max_age`` back, ``link_format.max_skew`` forward) → first use (``nonces``). Only a link
    that passes everything is remembered, so garbage cannot fill the nonce store. Each refusal
    logs one ``security_event`` record carrying the reason code only.
    """
    if now.tzinfo is None or max_age <= timedelta(0):
        raise ConfigurationError("now must be aware and max_age positive", reason="bad_clock")
    try:
        return await _decrypt_checked(encrypted, key, now, max_age, nonces, link_format)
    except ContextLinkError as exc:
        _log.info("context link refused: %s", exc.reason, extra={"security_event": exc.reason})
        raise


async def _decrypt_checked(
    encrypted: str,
    key: ContextLinkKey,
    now: datetime,
    max_age: timedelta,
    nonces: NonceStore,
    link_format: ContextLinkFormat,
) -> EpicContextLink:
    raw = _decode_base64(encrypted, link_format.max_encoded_length)
    plaintext = _decrypt(raw, key, link_format.iv_mode)
    fields = _parse_fields(plaintext)
    session_id = fields.get("session_id")
    if session_id is None:
        raise _refuse("missing_session_id")
    stamp = fields.get("timestamp")
    issued_at = _parse_timestamp(stamp) if stamp is not None else None
    _check_fresh(issued_at, now, max_age, link_format)
    expires_at = (issued_at or now) + max_age + link_format.max_skew
    if not await nonces.remember_once(
        REPLAY_NAMESPACE, key._replay_key(plaintext), expires_at=expires_at
    ):
        raise _refuse("replayed")
    extras = {
        wire: fields[name]
        for wire, name in (
            ("sessionId", "session_id"),
            ("conferenceId", "conference_id"),
            ("departmentId", "department_id"),
        )
        if name in fields
    }
    context = LaunchContext.model_validate(
        {name: fields[name] for name in _FHIR_FIELDS if name in fields} | extras
    )
    return EpicContextLink(
        session_id=session_id,
        conference_id=fields.get("conference_id"),
        department_id=fields.get("department_id"),
        issued_at=issued_at,
        context=context,
    )


def encrypt_context_link(
    params: Mapping[str, str] | str,
    key: ContextLinkKey,
    *,
    iv: bytes | None = None,
    iv_mode: IvMode = "prefixed",
    urlsafe: bool = False,
) -> str:
    """What Epic does with an FDI record's context tokens: for tests, FakeEhr and the demo.

    ``params`` is a mapping (URL-encoded here) or a ready query string. With ``"prefixed"`` a
    fresh random IV is used unless ``iv`` is given; ``"zero"`` takes no ``iv``.
    """
    query = params if isinstance(params, str) else urlencode(dict(params))
    if iv_mode == "zero":
        if iv is not None:
            raise ConfigurationError("iv_mode 'zero' takes no iv", reason="bad_iv")
        used_iv, prefix = bytes(_BLOCK), b""
    else:
        used_iv = secrets.token_bytes(_BLOCK) if iv is None else iv
        if len(used_iv) != _BLOCK:
            raise ConfigurationError("iv must be 16 bytes", reason="bad_iv")
        prefix = used_iv
    from cryptography.hazmat.primitives import padding

    padder = padding.PKCS7(128).padder()
    padded = padder.update(query.encode("utf-8")) + padder.finalize()
    encryptor = key._cipher(used_iv).encryptor()
    payload = prefix + encryptor.update(padded) + encryptor.finalize()
    if urlsafe:
        return base64.urlsafe_b64encode(payload).decode("ascii").rstrip("=")
    return base64.b64encode(payload).decode("ascii")

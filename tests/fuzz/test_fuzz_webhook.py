"""Totality of the Graph webhook parsers: change-notification bodies, validation requests and
decrypted rich-notification content (Graph docs, "Set up change notifications that include
resource data"; docs/guides/attendance.md). Bodies are accepted (202) or refused (4xx/503):
never a stray exception that a host turns into a 500."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from fuzz_support import (
    JSON_VALUES,
    NOW,
    PLAIN_TEXT,
    TEXT,
    assert_total,
    form_params,
    json_bodies,
    shaped,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from teams_ehr.attendance.handshake import PendingHandshakes, handle_validation
from teams_ehr.attendance.notification_crypto import (
    NotificationCertificate,
    decrypt_encrypted_content,
    encrypt_content,
)
from teams_ehr.attendance.notifications import (
    EncryptedContent,
    ParticipantKeyer,
    parse_call_event,
)
from teams_ehr.attendance.webhook import (
    WebhookResult,
    WebhookSecurity,
    handle_notifications,
    open_call_event,
)
from teams_ehr.errors import TokenInvalidError
from teams_ehr.store.protocol import InboxItem, SubscriptionRow

TENANT = "11111111-2222-3333-4444-555555555555"
SUBSCRIPTION = SubscriptionRow(
    "sub-1", "org-a", "ext-1", "client-state", NOW + timedelta(days=1), "active"
)
KEYER = ParticipantKeyer(b"k" * 32)
CERT = NotificationCertificate.generate(NOW)


async def _verify_token(token: str, *, tenant_ids: frozenset[str], now: Any) -> str:
    if token != "good":
        raise TokenInvalidError("bad", reason="malformed")
    return TENANT


async def _org_tenant(org_id: str) -> str | None:
    return TENANT if org_id == "org-a" else None


def _security(decrypt_before_ack: bool = True) -> WebhookSecurity:
    return WebhookSecurity(
        token_verifier=_verify_token,
        decryption_keys=CERT.keys(),
        org_tenant=_org_tenant,
        keyer=KEYER,
        decrypt_before_ack=decrypt_before_ack,
    )


class _Stores:
    """One active subscription; an inbox that keeps what it is given."""

    def __init__(self) -> None:
        self.items: list[InboxItem] = []

    async def get_subscription(self, subscription_id: str) -> SubscriptionRow | None:
        return SUBSCRIPTION if subscription_id == SUBSCRIPTION.subscription_id else None

    async def append_inbox(self, items: Any) -> int:
        self.items.extend(items)
        return len(items)


CALL_EVENT_KEYS = [
    "eventType",
    "eventDateTime",
    "participants@delta",
    "activeParticipants@joined",
    "activeParticipants@left",
    "activeParticipants@delta",
    "activeParticipants@exited",
    "activeParticipants@remove",
]
TIMES = st.one_of(
    TEXT,
    st.sampled_from(
        [
            NOW.isoformat(),
            "0001-01-01T00:00:00+05:00",
            "9999-12-31T23:59:59-05:00",
            "2030-05-01T15:00:00.0553203Z",
            "2030-05-01T15:00:00",
            "2030-05-01T15:00:00.Z",
        ]
    ),
)
PARTICIPANT = st.one_of(
    JSON_VALUES,
    st.builds(
        lambda kind, identity, extra: {"info": {"identity": {kind: identity}}, **extra},
        st.sampled_from(["user", "guest", "phone", "newKind", "@odata.type"]) | PLAIN_TEXT,
        shaped(["id", "tenantId", "identityProvider", "displayName"]),
        shaped(["isInLobby", "removedState", "id"]),
    ),
)
CALL_EVENTS = st.builds(
    lambda base, lists: {**base, **lists},
    shaped(
        ["eventType", "eventDateTime"],
        st.one_of(TIMES, st.sampled_from(["callStarted", "rosterUpdated"]), JSON_VALUES),
    ),
    shaped(CALL_EVENT_KEYS[2:], st.one_of(st.lists(PARTICIPANT, max_size=3), JSON_VALUES)),
)


@given(CALL_EVENTS)
@example({"eventType": "callStarted", "eventDateTime": "0001-01-01T00:00:00+05:00"})
@example(
    {
        "eventType": "rosterUpdated",
        "eventDateTime": NOW.isoformat(),
        "participants@delta": [{"info": {"identity": {"user": {"id": "\ud800"}}}}],
    }
)
def test_call_events_are_total(document: dict[str, Any]) -> None:
    assert_total(parse_call_event, document, org_id="org-a", keyer=KEYER)


def _sealed(plaintext: bytes) -> EncryptedContent:
    return encrypt_content(
        plaintext,
        encryption_certificate=CERT.encryption_certificate,
        certificate_id=CERT.certificate_id,
    )


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(json_bodies(CALL_EVENTS))
@example(b"[" * 100_000)
def test_decrypted_call_events_are_total(plaintext: bytes) -> None:
    encrypted = _sealed(plaintext)
    assert_total(
        open_call_event,
        encrypted,
        subscription=SUBSCRIPTION,
        tenant_id=TENANT,
        security=_security(),
        received_at=NOW,
    )


ENCRYPTED = shaped(
    [
        "data",
        "dataKey",
        "dataSignature",
        "encryptionCertificateId",
        "encryptionCertificateThumbprint",
    ],
    st.one_of(
        st.just(CERT.certificate_id), st.sampled_from(["", "AAAA", "AA==", "====", "a" * 9]), TEXT
    ),
)


@given(ENCRYPTED)
def test_encrypted_content_is_total(document: dict[str, Any]) -> None:
    def decrypt() -> bytes:
        return decrypt_encrypted_content(EncryptedContent.model_validate(document), CERT.keys())

    try:
        EncryptedContent.model_validate(document)
    except ValueError:  # the collection model refuses it first: handle_notifications answers 400
        return
    assert_total(decrypt)


NOTIFICATION = shaped(
    [
        "id",
        "subscriptionId",
        "clientState",
        "changeType",
        "resource",
        "resourceData",
        "encryptedContent",
        "tenantId",
        "organizationId",
        "subscriptionExpirationDateTime",
        "lifecycleEvent",
    ],
    st.one_of(
        st.sampled_from(
            ["sub-1", "client-state", TENANT, "reauthorizationRequired", NOW.isoformat()]
        ),
        ENCRYPTED,
        JSON_VALUES,
    ),
)
RICH_ITEM = st.builds(
    lambda plaintext, extra: {
        "subscriptionId": "sub-1",
        "clientState": "client-state",
        "tenantId": TENANT,
        "changeType": "updated",
        "resource": "communications/onlineMeetings(joinWebUrl='x')/meetingCallEvents",
        "encryptedContent": _sealed(plaintext).model_dump(by_alias=True),
        **extra,
    },
    json_bodies(CALL_EVENTS),
    shaped(["lifecycleEvent", "resource", "changeType", "id"], st.one_of(TEXT, JSON_VALUES)),
)
COLLECTION = st.builds(
    lambda value, tokens, extra: {"value": value, "validationTokens": tokens, **extra},
    st.lists(st.one_of(NOTIFICATION, RICH_ITEM), max_size=3) | JSON_VALUES,
    st.lists(st.sampled_from(["good", "bad", "\ud800"]) | TEXT, max_size=2) | JSON_VALUES,
    shaped(["@odata.context"]),
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(json_bodies(COLLECTION), st.booleans())
def test_notification_bodies_are_total(body: bytes, decrypt_before_ack: bool) -> None:
    stores = _Stores()
    result = assert_total(
        handle_notifications,
        body,
        security=_security(decrypt_before_ack),
        inbox=stores,
        subscriptions=stores,
        now=NOW,
    )
    assert isinstance(result, WebhookResult)
    assert result.status in (202, 400, 413)
    for item in stores.items:
        json.loads(item.payload)  # what reached the inbox is a well-formed envelope


@given(
    st.one_of(
        form_params(["validationToken"]),
        TEXT,
        st.binary(max_size=60),
    ),
    st.booleans(),
)
@example({"validationToken": "\ud800"}, True)
def test_validation_requests_are_total(query: Any, pending: bool) -> None:
    async def validate() -> WebhookResult:
        handshakes = PendingHandshakes()
        if pending:
            await handshakes.open(NOW, frozenset({"notification"}))
        return await handle_validation(query, handshakes=handshakes, kind="notification", now=NOW)

    result = assert_total(validate)
    assert isinstance(result, WebhookResult)
    assert result.status in (200, 400, 404)

"""T22–T24, T34 webhook edges that ``nox -s mutants -- attendance/webhook.py`` left open.

Caps at, just below and just above their edge (body bytes, JSON depth in lists and objects,
subscription grace, event-time plausibility), every answer's exact status, body and reasons, the
``security_event`` records, tenant case folding on both sides, the batch-wide token verdict, the
dedupe keys (a different fact is never swallowed, a redelivery is) and the deferred-decryption
envelope.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import datetime, timedelta
from typing import Any

import pytest
from attendance_in_support import (
    CLIENT_STATE,
    EXTERNAL_ID,
    JOIN_URL,
    ORG,
    SUBSCRIPTION_ID,
    TENANT,
    Harness,
    delta_guest,
    make_harness,
    roster_event,
    subscription_row,
)

from teams_ehr.attendance.notifications import (
    CallEventEnvelope,
    LifecycleEnvelope,
    SealedCallEventEnvelope,
    parse_inbox_envelope,
)
from teams_ehr.attendance.webhook import (
    MAX_BODY_BYTES,
    WebhookResult,
    handle_notifications,
    open_call_event,
    unseal,
)
from teams_ehr.errors import RemoteError, TokenInvalidError, WebhookRejectedError

pytestmark = pytest.mark.anyio
US = timedelta(microseconds=1)


async def _post(h: Harness, body: bytes, **security: Any) -> WebhookResult:
    sec = dataclasses.replace(h.security, **security) if security else h.security
    return await handle_notifications(
        body, security=sec, inbox=h.store, subscriptions=h.store, now=h.clock()
    )


def _graph_time(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _events(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str | None]]:
    return [
        (r.getMessage(), getattr(r, "security_event", None))
        for r in caplog.records
        if r.name == "teams_ehr.attendance.webhook"
    ]


def _answer(result: WebhookResult) -> tuple[int, bytes, int, tuple[str, ...]]:
    return (result.status, result.body, result.accepted, result.rejected)


# -- body and depth caps ----------------------------------------------------------------------


async def test_body_of_exactly_the_cap_is_read_one_byte_more_is_not() -> None:
    h = await make_harness()
    document = b'{"value": []}'
    exact = document + b" " * (MAX_BODY_BYTES - len(document))
    assert _answer(await _post(h, exact)) == (202, b"", 0, ())
    assert _answer(await _post(h, exact + b" ")) == (413, b"too large", 0, ("body_too_large",))


def _nested(kind: str, levels: int) -> Any:
    node: Any = 1
    for _ in range(levels):
        node = [node] if kind == "list" else {"a": node}
    return node


@pytest.mark.parametrize("kind", ["list", "dict"])
async def test_json_depth_32_is_read_33_is_not(kind: str) -> None:
    h = await make_harness()
    # The collection object is level 1, so 31 more levels make 32.
    ok = json.dumps({"value": [], "x": _nested(kind, 31)}).encode()
    deep = json.dumps({"value": [], "x": _nested(kind, 32)}).encode()
    assert _answer(await _post(h, ok)) == (202, b"", 0, ())
    assert _answer(await _post(h, deep)) == (400, b"bad request", 0, ("json_too_deep",))


@pytest.mark.parametrize(
    "body", [b"not json", b"[" * 100_000, b'{"value": [{"no": "subscription"}]}', b"[]"]
)
async def test_malformed_bodies_are_exact_400s(body: bytes) -> None:
    h = await make_harness()
    assert _answer(await _post(h, body)) == (400, b"bad request", 0, ("malformed_body",))


# -- subscription state and grace ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("grace", "late", "reason"),
    [
        (timedelta(minutes=5), timedelta(0), None),
        (timedelta(minutes=5), US, "subscription_inactive"),
        (timedelta(0), timedelta(0), None),
        (timedelta(0), US, "subscription_inactive"),
    ],
)
async def test_subscription_grace_edge(
    grace: timedelta, late: timedelta, reason: str | None
) -> None:
    h = await make_harness()
    expires = subscription_row().expires_at
    h.clock.now = expires + grace + late
    item = h.item(roster_event(delta_guest("g1"), at=_graph_time(h.clock.now)))
    result = await _post(h, h.body(item), subscription_grace=grace)
    assert result.rejected == (() if reason is None else (reason,))
    assert result.accepted == (1 if reason is None else 0)


async def test_rejections_are_security_events(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="teams_ehr")
    h = await make_harness()
    good = h.item(roster_event(delta_guest("g1")))
    forged = h.item(roster_event(delta_guest("g2")), clientState="nope")
    unknown = h.item(roster_event(delta_guest("g3")), subscriptionId="sub-x")
    result = await _post(h, h.body(forged, good, unknown))
    assert _answer(result) == (
        202,
        b"",
        1,
        ("client_state_mismatch", "unknown_subscription"),
    )
    assert _events(caplog) == [
        ("webhook notification dropped: client_state_mismatch (1)", "client_state_mismatch"),
        ("webhook notification dropped: unknown_subscription (1)", "unknown_subscription"),
    ]


async def test_missing_client_state_is_a_mismatch() -> None:
    h = await make_harness()
    item = h.item(roster_event(delta_guest("g1")))
    del item["clientState"]
    assert (await _post(h, h.body(item))).rejected == ("client_state_mismatch",)


# -- tenants and validation tokens ----------------------------------------------------------------


class RecordingVerifier:
    """A ValidationTokenVerifier that answers from a table (tenant or error) and records calls."""

    def __init__(self, answers: dict[str, str | Exception]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, frozenset[str]]] = []

    async def __call__(self, token: str, *, tenant_ids: frozenset[str], now: datetime) -> str:
        self.calls.append((token, tenant_ids))
        answer = self.answers[token]
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_tenants_compare_case_insensitively_on_both_sides() -> None:
    h = await make_harness()
    verifier = RecordingVerifier({"tok": TENANT.upper()})
    item = h.item(roster_event(delta_guest("g1")), tenantId=TENANT.upper())
    result = await _post(h, h.body(item, tokens=["tok"]), token_verifier=verifier)
    assert _answer(result) == (202, b"", 1, ())
    assert verifier.calls == [("tok", frozenset({TENANT}))]
    [stored] = h.store.inbox.values()
    envelope = parse_inbox_envelope(stored.payload)
    assert isinstance(envelope, CallEventEnvelope)
    assert envelope.tenant_id == TENANT


async def test_org_tenant_in_upper_case_still_matches() -> None:
    h = await make_harness()

    async def upper(org_id: str) -> str | None:
        return TENANT.upper() if org_id == ORG else None

    result = await _post(h, h.body(h.item(roster_event(delta_guest("g1")))), org_tenant=upper)
    assert result.accepted == 1


async def test_one_bad_token_rejects_every_item_of_the_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="teams_ehr")
    h = await make_harness()
    verifier = RecordingVerifier(
        {"good": TENANT, "bad": TokenInvalidError("expired", reason="expired")}
    )
    items = [h.item(roster_event(delta_guest(g))) for g in ("g1", "g2")]
    result = await _post(h, h.body(*items, tokens=["good", "bad"]), token_verifier=verifier)
    assert _answer(result) == (
        202,
        b"",
        0,
        ("validation_token_expired", "validation_token_expired"),
    )
    assert h.store.append_calls == 0
    assert _events(caplog) == [
        ("webhook notification dropped: validation_token_expired (2)", "validation_token_expired")
    ]


async def test_keys_unavailable_is_an_exact_503(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="teams_ehr")
    h = await make_harness()
    verifier = RecordingVerifier({"tok": RemoteError("jwks down")})
    result = await _post(
        h, h.body(h.item(roster_event(delta_guest("g1"))), tokens=["tok"]), token_verifier=verifier
    )
    assert _answer(result) == (503, b"unavailable", 0, ("keys_unavailable",))
    assert _events(caplog) == [
        ("webhook: validation keys unavailable; asking Graph to redeliver", None)
    ]


async def test_nothing_to_store_means_no_token_check() -> None:
    h = await make_harness()
    verifier = RecordingVerifier({})
    forged = h.item(roster_event(delta_guest("g1")), clientState="nope")
    result = await _post(h, h.body(forged, tokens=["tok"]), token_verifier=verifier)
    assert result.rejected == ("client_state_mismatch",)
    assert verifier.calls == []


async def test_inbox_failure_is_an_exact_503(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="teams_ehr")
    h = await make_harness()
    h.store.fail_inbox = True
    result = await _post(h, h.body(h.item(roster_event(delta_guest("g1")))))
    assert _answer(result) == (503, b"unavailable", 0, ("inbox_unavailable",))
    assert _events(caplog) == [
        ("webhook: inbox commit failed; answering 503 so Graph redelivers", None)
    ]


async def test_lookups_are_made_once_per_delivery() -> None:
    h = await make_harness()
    calls: list[str] = []
    lookups: list[str] = []

    async def org_tenant(org_id: str) -> str | None:
        calls.append(org_id)
        return TENANT

    original = h.store.get_subscription

    async def get_subscription(subscription_id: str) -> Any:
        lookups.append(subscription_id)
        return await original(subscription_id)

    h.store.get_subscription = get_subscription  # type: ignore[method-assign]
    items = [h.item(roster_event(delta_guest(g))) for g in ("g1", "g2", "g3")]
    result = await _post(h, h.body(*items), org_tenant=org_tenant)
    assert result.accepted == 3
    assert (calls, lookups) == ([ORG], [SUBSCRIPTION_ID])


# -- event time plausibility ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shift", "reason"),
    [
        (timedelta(minutes=5), None),
        (timedelta(minutes=5) + US, "event_in_future"),
        (-timedelta(hours=4, minutes=15), None),
        (-timedelta(hours=4, minutes=15) - US, "event_stale"),
    ],
)
async def test_event_time_edges(shift: timedelta, reason: str | None) -> None:
    h = await make_harness()
    at = _graph_time(h.clock() + shift)
    result = await _post(h, h.body(h.item(roster_event(delta_guest("g1"), at=at))))
    assert result.rejected == (() if reason is None else (reason,))


# -- dedupe keys ----------------------------------------------------------------------------------


def _lifecycle(event: str = "missed", **overrides: Any) -> dict[str, Any]:
    item = {
        "subscriptionId": SUBSCRIPTION_ID,
        "subscriptionExpirationDateTime": "2026-03-04T15:00:00Z",
        "tenantId": TENANT,
        "clientState": CLIENT_STATE,
        "lifecycleEvent": event,
    }
    item.update(overrides)
    return {k: v for k, v in item.items() if v is not None}


@pytest.mark.parametrize(
    "other",
    [
        {"lifecycleEvent": "reauthorizationRequired"},
        {"subscriptionExpirationDateTime": "2026-03-05T15:00:00Z"},
        {"subscriptionExpirationDateTime": None},
        {"id": "n-2"},
    ],
)
async def test_lifecycle_dedupe_tells_each_field_apart(other: dict[str, Any]) -> None:
    h = await make_harness()
    for item in (_lifecycle(id="n-1"), _lifecycle(id="n-1"), _lifecycle(**{"id": "n-1", **other})):
        assert (await _post(h, json.dumps({"value": [item]}).encode())).accepted == 1
    assert len(h.store.inbox) == 2
    envelope = parse_inbox_envelope(next(iter(h.store.inbox.values())).payload)
    assert isinstance(envelope, LifecycleEnvelope)
    assert (envelope.subscription_id, envelope.org_id, envelope.external_id) == (
        SUBSCRIPTION_ID,
        ORG,
        EXTERNAL_ID,
    )
    assert envelope.received_at == h.clock()


@pytest.mark.parametrize("deferred", [False, True], ids=["decrypt", "deferred"])
@pytest.mark.parametrize("field", ["changeType", "resource"])
async def test_rich_dedupe_tells_change_type_and_resource_apart(deferred: bool, field: str) -> None:
    h = await make_harness()
    content = roster_event(delta_guest("g1"))
    changed = {"changeType": "created", "resource": "communications/onlineMeetings/other"}[field]
    flags = {"decrypt_before_ack": not deferred}
    await _post(h, h.body(h.item(content)), **flags)
    await _post(h, h.body(h.item(content)), **flags)  # the same fact again
    await _post(h, h.body(h.item(content, **{field: changed})), **flags)
    expected = 3 if deferred else 2  # sealed content is re-encrypted on each delivery
    assert len(h.store.inbox) == expected


async def test_deferred_redelivery_of_the_same_ciphertext_is_one_row() -> None:
    h = await make_harness()
    body = h.body(h.item(roster_event(delta_guest("g1"))))
    for _ in range(2):
        assert (await _post(h, body, decrypt_before_ack=False)).accepted == 1
    [stored] = h.store.inbox.values()
    sealed = parse_inbox_envelope(stored.payload)
    assert isinstance(sealed, SealedCallEventEnvelope)
    assert (sealed.subscription_id, sealed.org_id, sealed.external_id, sealed.tenant_id) == (
        SUBSCRIPTION_ID,
        ORG,
        EXTERNAL_ID,
        TENANT,
    )
    assert sealed.received_at == h.clock()
    opened = unseal(sealed, h.security)
    assert (opened.subscription_id, opened.org_id, opened.external_id, opened.tenant_id) == (
        SUBSCRIPTION_ID,
        ORG,
        EXTERNAL_ID,
        TENANT,
    )
    assert opened.resource_fingerprint == sealed.resource_fingerprint
    assert opened.resource_fingerprint is not None


# -- open_call_event --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plaintext", "message"), [(b"not json", "not JSON"), (b"[1, 2]", "not an object")]
)
async def test_undecodable_call_event_is_refused(plaintext: bytes, message: str) -> None:
    from teams_ehr.attendance.notification_crypto import encrypt_content

    h = await make_harness()
    encrypted = encrypt_content(
        plaintext,
        encryption_certificate=h.certificate.encryption_certificate,
        certificate_id=h.certificate.certificate_id,
    )
    with pytest.raises(WebhookRejectedError) as info:
        open_call_event(
            encrypted,
            subscription=subscription_row(),
            tenant_id=TENANT,
            security=h.security,
            received_at=h.clock(),
        )
    assert (info.value.reason, str(info.value)) == ("malformed_call_event", message)


# -- second pass: what the first run of this file still let through -------------------------------

MIXED_TENANT = "AbCdEf01-2345-4bCd-8eF0-123456789aBc"


async def test_tenant_with_letters_folds_case_everywhere() -> None:
    h = await make_harness()
    lower = MIXED_TENANT.lower()

    async def org_tenant(org_id: str) -> str | None:
        return MIXED_TENANT.upper()

    verifier = RecordingVerifier({"tok": MIXED_TENANT})
    item = h.item(roster_event(delta_guest("g1")), tenantId=MIXED_TENANT)
    result = await _post(
        h, h.body(item, tokens=["tok"]), token_verifier=verifier, org_tenant=org_tenant
    )
    assert _answer(result) == (202, b"", 1, ())
    assert verifier.calls == [("tok", frozenset({lower}))]
    [stored] = h.store.inbox.values()
    envelope = parse_inbox_envelope(stored.payload)
    assert isinstance(envelope, CallEventEnvelope)
    assert envelope.tenant_id == lower


@pytest.mark.parametrize("missing", ["org", "item"])
async def test_an_unknown_tenant_on_either_side_is_cross_tenant(missing: str) -> None:
    h = await make_harness()

    async def no_tenant(org_id: str) -> str | None:
        return None

    item = h.item(roster_event(delta_guest("g1")))
    if missing == "item":
        del item["tenantId"]
    extra: dict[str, Any] = {"org_tenant": no_tenant} if missing == "org" else {}
    result = await _post(h, h.body(item), **extra)
    assert _answer(result) == (202, b"", 0, ("cross_tenant",))


async def test_lifecycle_events_of_two_subscriptions_are_two_rows() -> None:
    h = await make_harness()
    await h.store.put_subscription(subscription_row(subscription_id="sub-0002"))
    for sub in (SUBSCRIPTION_ID, "sub-0002"):
        body = json.dumps({"value": [_lifecycle(subscriptionId=sub)]}).encode()
        assert (await _post(h, body)).accepted == 1
    assert len(h.store.inbox) == 2


OLD_STYLE_RESOURCE = f"communications/onlineMeetings/?$filter=JoinWebUrl eq '{JOIN_URL}'"


@pytest.mark.parametrize(
    "change",
    [
        {"changeType": "created"},
        {"subscriptionId": "sub-0002"},
        {"resource": OLD_STYLE_RESOURCE},
    ],
    ids=["change-type", "subscription", "resource"],
)
async def test_deferred_dedupe_key_covers_each_part(change: dict[str, Any]) -> None:
    h = await make_harness()
    await h.store.put_subscription(subscription_row(subscription_id="sub-0002"))
    item = h.item(roster_event(delta_guest("g1")))  # one ciphertext, delivered twice
    for sent in (item, item, {**item, **change}):
        assert (await _post(h, h.body(sent), decrypt_before_ack=False)).accepted == 1
    assert len(h.store.inbox) == 2


async def test_decrypted_dedupe_key_covers_the_resource_text() -> None:
    h = await make_harness()
    content = roster_event(delta_guest("g1"))
    first = h.item(content)
    second = h.item(content, resource=OLD_STYLE_RESOURCE)  # same join URL, other spelling
    for sent in (first, second):
        assert (await _post(h, h.body(sent))).accepted == 1
    envelopes = [parse_inbox_envelope(i.payload) for i in h.store.inbox.values()]
    assert len(envelopes) == 2
    fingerprints = {e.resource_fingerprint for e in envelopes if isinstance(e, CallEventEnvelope)}
    assert len(fingerprints) == 1


@pytest.mark.parametrize(
    ("shift", "reason", "message"),
    [
        (timedelta(minutes=6), "event_in_future", "event time in the future"),
        (-timedelta(hours=5), "event_stale", "event time too old"),
    ],
)
async def test_implausible_time_errors_are_exact(
    shift: timedelta, reason: str, message: str
) -> None:
    h = await make_harness()
    sealed_body = h.body(h.item(roster_event(delta_guest("g1"), at=_graph_time(h.clock() + shift))))
    await _post(h, sealed_body, decrypt_before_ack=False)
    [stored] = h.store.inbox.values()
    sealed = parse_inbox_envelope(stored.payload)
    assert isinstance(sealed, SealedCallEventEnvelope)
    with pytest.raises(WebhookRejectedError) as info:
        unseal(sealed, h.security)
    assert (info.value.reason, str(info.value)) == (reason, message)

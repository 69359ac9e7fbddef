"""Change notifications in (D1; security.md T22–T24, T26, T34, R06, R07)."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import httpx
import pytest
from attendance_in_support import (
    CANARY_NAME,
    CLIENT_STATE,
    JOIN_URL,
    KEYER,
    ORG,
    OTHER_TENANT,
    SUBSCRIPTION_ID,
    TENANT,
    Harness,
    delta_guest,
    delta_user,
    make_harness,
    roster_event,
    subscription_row,
)

from leaks import assert_no_leak
from teams_ehr.attendance import notification_crypto
from teams_ehr.attendance.notifications import CallEventEnvelope, parse_inbox_envelope
from teams_ehr.attendance.webhook import MAX_BODY_BYTES, WebhookResult, handle_notifications

pytestmark = pytest.mark.anyio


async def _post(h: Harness, body: bytes) -> WebhookResult:
    return await handle_notifications(
        body, security=h.security, inbox=h.store, subscriptions=h.store, now=h.clock()
    )


def _stored(h: Harness) -> list[CallEventEnvelope]:
    envelopes = [parse_inbox_envelope(i.payload) for i in h.store.inbox.values()]
    return [e for e in envelopes if isinstance(e, CallEventEnvelope)]


async def test_valid_notification_committed_before_202() -> None:
    h = await make_harness()
    result = await _post(h, h.body(h.item(roster_event(delta_guest("g1", lobby=True)))))
    assert (result.status, result.accepted, result.rejected) == (202, 1, ())
    [envelope] = _stored(h)
    assert envelope.org_id == ORG
    assert envelope.tenant_id == TENANT
    assert envelope.event_type == "rosterUpdated"
    assert envelope.changes[0].participant_key == KEYER.key(ORG, "g1")
    assert envelope.changes[0].in_lobby


async def test_client_state_mismatch_dropped_and_alerted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    h = await make_harness()
    forged = "forged-client-state-canary"
    result = await _post(h, h.body(h.item(roster_event(delta_guest("g1")), clientState=forged)))
    assert result.status == 202
    assert result.rejected == ("client_state_mismatch",)
    assert h.store.inbox == {}
    events = [r for r in caplog.records if getattr(r, "security_event", None)]
    assert [r.security_event for r in events] == ["client_state_mismatch"]  # type: ignore[attr-defined]
    assert_no_leak([forged, CLIENT_STATE], caplog.text)


async def test_missing_client_state_dropped() -> None:
    h = await make_harness()
    item = h.item(roster_event(delta_guest("g1")))
    del item["clientState"]
    result = await _post(h, h.body(item))
    assert result.rejected == ("client_state_mismatch",)
    assert h.store.inbox == {}


async def test_client_state_compare_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """T22: the clientState verdict is :func:`hmac.compare_digest`'s (constant time), not ``==``.

    Behaviour, not a spy: when compare_digest calls a wrong value equal, that item passes the
    clientState check; when it calls the right value different, the item is dropped.
    """
    import hmac

    from teams_ehr.attendance import webhook

    real, stored, wrong = hmac.compare_digest, CLIENT_STATE.encode(), b"not-the-client-state"

    def wrong_is_equal(a: bytes, b: bytes) -> bool:
        return True if (a, b) == (wrong, stored) else real(a, b)

    def right_is_different(a: bytes, b: bytes) -> bool:
        return False if (a, b) == (stored, stored) else real(a, b)

    h = await make_harness()
    monkeypatch.setattr(webhook.hmac, "compare_digest", wrong_is_equal)
    forged = h.item(roster_event(delta_guest("g1")), clientState=wrong.decode())
    assert "client_state_mismatch" not in (await _post(h, h.body(forged))).rejected
    monkeypatch.setattr(webhook.hmac, "compare_digest", right_is_different)
    genuine = h.item(roster_event(delta_guest("g2")))
    assert (await _post(h, h.body(genuine))).rejected == ("client_state_mismatch",)


async def test_client_state_per_subscription() -> None:
    h = await make_harness()
    await h.store.put_subscription(
        subscription_row(subscription_id="sub-b", client_state="b-secret")
    )
    # subscription A's secret presented on B's id
    result = await _post(h, h.body(h.item(roster_event(delta_guest("g1")), subscriptionId="sub-b")))
    assert result.rejected == ("client_state_mismatch",)
    assert h.store.inbox == {}


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (None, "unknown_subscription"),
        (subscription_row(state="removed"), "subscription_inactive"),
        (subscription_row(state="pending"), "subscription_inactive"),
    ],
)
async def test_unknown_or_inactive_subscription_dropped(row: Any, reason: str) -> None:
    h = await make_harness()
    h.store.subscriptions.clear()
    if row is not None:
        await h.store.put_subscription(row)
    result = await _post(h, h.body(h.item(roster_event(delta_guest("g1")))))
    assert result.rejected == (reason,)
    assert h.store.inbox == {}


async def test_expired_subscription_replay_dropped() -> None:
    h = await make_harness()
    h.clock.advance(days=3)
    result = await _post(h, h.body(h.item(roster_event(delta_guest("g1")))))
    assert result.rejected == ("subscription_inactive",)
    assert h.store.inbox == {}


async def test_tenant_mismatch_dropped() -> None:
    h = await make_harness()
    item = h.item(roster_event(delta_guest("g1")), tenantId=OTHER_TENANT)
    result = await _post(h, h.body(item, tokens=[h.token(tenant_id=OTHER_TENANT)]))
    assert result.status == 202
    assert h.store.inbox == {}
    assert "cross_tenant" in result.rejected[0]


async def test_subscription_of_another_org_cannot_be_used_cross_tenant() -> None:
    h = await make_harness()
    await h.store.put_subscription(
        subscription_row(subscription_id="sub-b", org_id="org-b", client_state="b")
    )
    item = h.item(roster_event(delta_guest("g1")), subscriptionId="sub-b", clientState="b")
    result = await _post(h, h.body(item))  # item says TENANT, org-b lives in OTHER_TENANT
    assert result.rejected == ("cross_tenant",)
    assert h.store.inbox == {}


@pytest.mark.parametrize(
    ("token_overrides", "reason"),
    [
        ({"appid": "00000000-1111-2222-3333-444444444444"}, "validation_token_claim_mismatch"),
        ({"appid": None}, "validation_token_missing_claim"),
        ({"aud": "someone-elses-app"}, "validation_token_wrong_audience"),
        ({"iss": "https://sts.windows.net/evil/"}, "validation_token_wrong_issuer"),
        (
            {"exp": 1_000_000_000, "iat": 999_990_000, "nbf": 999_990_000},
            "validation_token_expired",
        ),
        ({"tenant_id": OTHER_TENANT}, "validation_token_wrong_tenant"),
    ],
)
async def test_bad_validation_tokens_store_nothing(
    token_overrides: dict[str, Any], reason: str
) -> None:
    h = await make_harness()
    result = await _post(
        h, h.body(h.item(roster_event(delta_guest("g1"))), tokens=[h.token(**token_overrides)])
    )
    assert result.status == 202
    assert result.rejected == (reason,)
    assert h.store.inbox == {}
    assert h.store.append_calls == 0


async def test_forged_signature_token_stores_nothing() -> None:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    h = await make_harness()
    genuine = h.token()
    claims = jwt.decode(genuine, options={"verify_signature": False})
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(
        claims,
        attacker,
        algorithm="RS256",
        headers={"kid": jwt.get_unverified_header(genuine)["kid"]},
    )
    result = await _post(h, h.body(h.item(roster_event(delta_guest("g1"))), tokens=[forged]))
    assert result.rejected == ("validation_token_bad_signature",)
    assert h.store.inbox == {}


async def test_each_validation_token_checked_whole_batch_quarantined() -> None:
    h = await make_harness()
    await h.store.put_subscription(
        subscription_row(subscription_id="sub-b", org_id="org-b", client_state="b")
    )
    items = [
        h.item(roster_event(delta_guest("g1"))),
        h.item(
            roster_event(delta_guest("g2")),
            subscriptionId="sub-b",
            clientState="b",
            tenantId=OTHER_TENANT,
        ),
    ]
    bad = h.token(tenant_id=OTHER_TENANT, appid="not-graph")
    result = await _post(h, h.body(*items, tokens=[h.token(), bad]))
    assert result.status == 202
    assert h.store.inbox == {}
    # with both tokens genuine, both items are stored, one per organization
    result = await _post(h, h.body(*items, tokens=[h.token(), h.token(tenant_id=OTHER_TENANT)]))
    assert result.accepted == 2
    assert sorted(i.org_id for i in h.store.inbox.values()) == [ORG, "org-b"]


async def test_v2_validation_token_accepted() -> None:
    h = await make_harness()
    token = h.entra.sign_graph_validation_token(
        audience=__import__("attendance_in_support").APP_ID, tenant_id=TENANT, version="2.0"
    )
    result = await _post(h, h.body(h.item(roster_event(delta_guest("g1"))), tokens=[token]))
    assert result.accepted == 1


async def test_rich_item_needs_a_token_for_its_tenant() -> None:
    h = await make_harness()
    result = await _post(h, h.body(h.item(roster_event(delta_guest("g1"))), tokens=[]))
    assert result.rejected == ("validation_token_missing",)
    assert h.store.inbox == {}


async def test_basic_notification_without_encrypted_content_dropped() -> None:
    h = await make_harness()
    item = h.item(roster_event(delta_guest("g1")))
    del item["encryptedContent"]
    result = await _post(h, h.body(item))
    assert result.rejected == ("not_rich",)
    assert h.store.inbox == {}


async def test_hmac_tamper_rejected_before_decryption(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    monkeypatch.setattr(
        notification_crypto, "_aes_cbc_decrypt", lambda k, d: calls.append(d) or b""
    )
    h = await make_harness()
    item = h.item(roster_event(delta_guest("g1")))
    data = item["encryptedContent"]["data"]
    item["encryptedContent"]["data"] = ("B" if data[5] == "A" else "A").join([data[:5], data[6:]])
    result = await _post(h, h.body(item))
    assert result.rejected == ("bad_signature",)
    assert calls == []
    assert h.store.inbox == {}


async def test_unknown_certificate_dropped() -> None:
    h = await make_harness()
    item = h.item(roster_event(delta_guest("g1")))
    item["encryptedContent"]["encryptionCertificateId"] = "not-ours"
    result = await _post(h, h.body(item))
    assert result.rejected == ("unknown_certificate",)
    assert h.store.inbox == {}


async def test_duplicate_delivery_single_row() -> None:
    h = await make_harness()
    content = roster_event(delta_guest("g1"), delta_user("u1"))
    for _ in range(5):  # Graph redelivers, each time re-encrypted
        assert (await _post(h, h.body(h.item(content)))).status == 202
    assert len(h.store.inbox) == 1


async def test_inbox_failure_answers_503_and_acknowledges_nothing() -> None:
    h = await make_harness()
    h.store.fail_inbox = True
    body = h.body(h.item(roster_event(delta_guest("g1"))))
    result = await _post(h, body)
    assert result.status == 503
    assert h.store.inbox == {}
    h.store.fail_inbox = False  # Graph redelivers the same body
    assert (await _post(h, body)).status == 202
    assert len(h.store.inbox) == 1


async def test_keys_unavailable_answers_503() -> None:
    h = await make_harness(fresh_entra=True)
    h.entra.fail_next("jwks", 503, times=10)
    result = await _post(h, h.body(h.item(roster_event(delta_guest("g1")))))
    assert result.status == 503
    assert h.store.inbox == {}


async def test_body_cap_and_json_depth_cap() -> None:
    h = await make_harness()
    assert (await _post(h, b"{" + b" " * MAX_BODY_BYTES + b"}")).status == 413
    assert (await _post(h, b'{"value": ' + b"[" * 100 + b"]" * 100 + b"}")).status == 400
    assert (await _post(h, b"not json")).status == 400
    assert (await _post(h, b'{"value": [{"no": "subscription"}]}')).status == 400
    assert (await _post(h, b"[]")).status == 400
    assert h.store.inbox == {}


@pytest.mark.parametrize(
    ("shift", "reason"),
    [(timedelta(minutes=10), "event_in_future"), (-timedelta(hours=5), "event_stale")],
)
async def test_implausible_event_times_dropped(shift: timedelta, reason: str) -> None:
    h = await make_harness()
    at = (h.clock() + shift).isoformat().replace("+00:00", "Z")
    result = await _post(h, h.body(h.item(roster_event(delta_guest("g1"), at=at))))
    assert result.rejected == (reason,)
    assert h.store.inbox == {}


async def test_malformed_decrypted_content_dropped() -> None:
    h = await make_harness()
    result = await _post(h, h.body(h.item({"eventType": "rosterUpdated"})))
    assert result.rejected == ("malformed_call_event",)
    assert h.store.inbox == {}


async def test_good_items_kept_when_a_neighbour_is_forged() -> None:
    h = await make_harness()
    good = h.item(roster_event(delta_guest("g1")))
    forged = h.item(roster_event(delta_guest("g2")), clientState="nope")
    result = await _post(h, h.body(good, forged))
    assert (result.accepted, result.rejected) == (1, ("client_state_mismatch",))


@pytest.mark.parametrize("event", ["reauthorizationRequired", "subscriptionRemoved", "missed"])
async def test_lifecycle_notifications_go_to_the_inbox(event: str) -> None:
    h = await make_harness()
    item = {
        "subscriptionId": SUBSCRIPTION_ID,
        "subscriptionExpirationDateTime": "2026-03-04T15:00:00Z",
        "tenantId": TENANT,
        "clientState": CLIENT_STATE,
        "lifecycleEvent": event,
    }
    body = json.dumps({"value": [item]}).encode()
    assert (await _post(h, body)).accepted == 1
    assert (await _post(h, body)).accepted == 1  # redelivery: deduped by the store
    [stored] = h.store.inbox.values()
    envelope = parse_inbox_envelope(stored.payload)
    assert envelope.type == "lifecycle"
    assert envelope.lifecycle_event == event
    # a lifecycle event with a wrong clientState is dropped like any other
    forged = json.dumps({"value": [{**item, "clientState": "x"}]}).encode()
    assert (await _post(h, forged)).rejected == ("client_state_mismatch",)


async def test_display_name_and_join_url_never_stored_or_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    h = await make_harness()
    results = [
        await _post(h, h.body(h.item(roster_event(delta_guest("g1"), delta_user("u1"))))),
        await _post(h, h.body(h.item(roster_event(delta_guest("g1")), clientState="bad"))),
        await _post(h, h.body(h.item({"eventType": CANARY_NAME}))),
    ]
    stored = [i.payload.decode() for i in h.store.inbox.values()]
    assert stored
    assert_no_leak(
        [CANARY_NAME, JOIN_URL, "SECRETJOINCANARY", CLIENT_STATE], caplog.text, stored, results
    )


async def test_webhook_over_http_glue() -> None:
    """The functions plug into any framework: here an httpx handler stands in for one."""
    h = await make_harness()

    async def app(request: httpx.Request) -> httpx.Response:
        result = await _post(h, await request.aread())
        return httpx.Response(
            result.status,
            content=result.body,
            headers=[("Content-Type", result.content_type), *result.headers],
        )

    async with httpx.AsyncClient(transport=httpx.MockTransport(app)) as client:
        response = await client.post(
            "https://app.example/graph/notifications",
            content=h.body(h.item(roster_event(delta_guest("g1")))),
        )
    assert response.status_code == 202
    assert len(h.store.inbox) == 1


async def test_validation_token_cache_hits_only_identical_unexpired_tokens() -> None:
    h = await make_harness()
    token = h.token()
    body = h.body(h.item(roster_event(delta_guest("g1"))), tokens=[token])
    assert (await _post(h, body)).accepted == 1
    jwks_fetches = len(h.entra.requests)
    body2 = h.body(h.item(roster_event(delta_guest("g2"))), tokens=[token])
    assert (await _post(h, body2)).accepted == 1
    assert len(h.entra.requests) == jwks_fetches  # no second fetch, no second verification
    # a tampered copy of the cached token is verified (and fails)
    head, payload, sig = token.split(".")
    tampered = f"{head}.{payload}.{sig[:-4]}AAAA"
    body3 = h.body(h.item(roster_event(delta_guest("g3"))), tokens=[tampered])
    assert (await _post(h, body3)).rejected == ("validation_token_bad_signature",)
    # past its exp the cached token is verified again, and refused
    h.clock.advance(hours=2)
    at = (h.clock() - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    await h.store.put_subscription(subscription_row(expires_at=h.clock() + timedelta(days=1)))
    body4 = h.body(h.item(roster_event(delta_guest("g4"), at=at)), tokens=[token])
    assert (await _post(h, body4)).rejected == ("validation_token_expired",)


async def test_deferred_decryption_stores_sealed_items_and_the_worker_drops_forgeries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import dataclasses

    from teams_ehr.attendance.inbox_processor import InboxProcessor

    h = await make_harness()
    h.security = dataclasses.replace(h.security, decrypt_before_ack=False)
    at = (h.clock() - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    good = h.item(roster_event(delta_guest("g1"), at=at))
    tampered = h.item(roster_event(delta_guest("g2"), at=at))
    data = tampered["encryptedContent"]["data"]
    tampered["encryptedContent"]["data"] = ("B" if data[5] == "A" else "A").join(
        [data[:5], data[6:]]
    )
    assert (await _post(h, h.body(good))).accepted == 1
    assert (await _post(h, h.body(tampered))).accepted == 1  # the HMAC waits for the worker
    assert (
        await _post(h, h.body(h.item(roster_event(delta_guest("g3")), clientState="x")))
    ).accepted == 0
    stored = [i.payload for i in h.store.inbox.values()]
    assert all(b'"sealed_call_event"' in p for p in stored)
    assert_no_leak([CANARY_NAME], stored)  # still encrypted inside the (encrypted) store row
    processor = InboxProcessor(
        inbox=h.store,
        facts=h.store,
        meetings=h.store,
        bus=h.store,
        keyer=KEYER,
        worker="w",
        clock=h.clock,
        security=h.security,
    )
    report = await processor.run_once()
    assert (report.completed, report.events) == (2, 1)
    [fact] = h.store.facts.values()
    assert fact.participant_key == KEYER.key(ORG, "g1")
    events = [getattr(r, "security_event", None) for r in caplog.records]
    assert [e for e in events if e] == ["client_state_mismatch", "bad_signature"]
    # without the security settings the worker cannot open sealed items: they stay queued
    await _post(h, h.body(h.item(roster_event(delta_guest("g5"), at=at))))
    bare = InboxProcessor(
        inbox=h.store,
        facts=h.store,
        meetings=h.store,
        bus=h.store,
        keyer=KEYER,
        worker="w2",
        clock=h.clock,
    )
    assert (await bare.run_once()).failed == 1

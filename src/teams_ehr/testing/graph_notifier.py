"""GraphNotifier: FakeGraph's meeting-room changes as real Graph webhook POSTs (requirements E1, D1).

It observes :meth:`FakeGraph.on_roster_change` and, on :meth:`GraphNotifier.flush`, POSTs each
change to the ``notificationUrl`` of the subscription whose resource names that meeting, shaped
as Graph does (*Get change notifications for Microsoft Teams meeting call updates*, beta):
a ``changeNotificationCollection`` with ``clientState``, ``tenantId``, ``resourceData``,
``encryptedContent`` (RSA-OAEP-SHA1 key wrap, HMAC-SHA256 signature, AES-CBC; encrypted for the
subscription's own ``encryptionCertificate``) and ``validationTokens`` signed by
:class:`~teams_ehr.testing.fake_entra.FakeEntra`.

Payload shapes: ``"delta"`` (``callStarted``/``callEnded``/``rosterUpdated`` with
``participants@delta``, ``isInLobby``, ``removedState``) or ``"legacy"``
(``Microsoft.Communication.*`` with ``activeParticipants@joined``/``@exited``; lobby changes do
not exist in that shape and are not sent). Delivery faults for tests: :meth:`duplicate_next`,
:meth:`drop_next`, :meth:`reorder`, :meth:`redeliver_last`, and :meth:`forge_next` (bad
``clientState``, bad HMAC, wrong tenant, expired / forged / wrong-appid / missing token).
Display names are included, as Graph includes them: the webhook must drop them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import unquote

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from teams_ehr.attendance.notification_crypto import encrypt_content
from teams_ehr.attendance.subscriptions import meeting_call_events_resource
from teams_ehr.errors import UsageError
from teams_ehr.testing.fake_entra import FakeEntra
from teams_ehr.testing.fake_graph import FakeGraph
from teams_ehr.testing.fake_graph_subscriptions import FakeSubscription
from teams_ehr.testing.meeting_room import RosterChange

__all__ = ["Forgery", "GraphNotifier", "PayloadShape", "SentNotification"]

PayloadShape = Literal["delta", "legacy"]
Forgery = Literal[
    "bad_client_state",
    "bad_hmac",
    "wrong_tenant",
    "expired_token",
    "forged_token",
    "wrong_appid",
    "no_token",
    "unknown_certificate",
]
Poster = Callable[[str, bytes], Awaitable[int]]


@dataclass(frozen=True)
class SentNotification:
    url: str
    body: bytes
    status: int


def _iso(moment: Any) -> str:
    return str(moment.isoformat().replace("+00:00", "Z"))


class GraphNotifier:
    """Turns room changes into webhook POSTs; call :meth:`flush` to deliver what is queued."""

    def __init__(
        self,
        fake_graph: FakeGraph,
        fake_entra: FakeEntra,
        *,
        app_id: str,
        webhook_client: httpx.AsyncClient | Poster,
        shape: PayloadShape = "delta",
    ) -> None:
        self._graph = fake_graph
        self._entra = fake_entra
        self._app_id = app_id
        self._post = webhook_client if callable(webhook_client) else self._poster(webhook_client)
        self.shape: PayloadShape = shape
        self._queue: list[RosterChange] = []
        self._duplicates = 0
        self._drops = 0
        self._forgeries: list[Forgery] = []
        self.sent: list[SentNotification] = []
        fake_graph.on_roster_change(self._queue.append)

    @staticmethod
    def _poster(client: httpx.AsyncClient) -> Poster:
        async def post(url: str, body: bytes) -> int:
            headers = {"Content-Type": "application/json"}
            response = await client.post(url, content=body, headers=headers)
            return response.status_code

        return post

    # -- fault scripting -------------------------------------------------------------------------

    def duplicate_next(self, times: int = 1) -> None:
        """Send each of the next ``times`` notifications twice (identical bytes)."""
        self._duplicates += times

    def drop_next(self, times: int = 1) -> None:
        """Lose the next ``times`` notifications (for reconciliation tests)."""
        self._drops += times

    def reorder(self) -> None:
        """Reverse the order of what is queued now (out-of-order delivery, reliability case R22)."""
        self._queue.reverse()

    def forge_next(self, forgery: Forgery) -> None:
        """Tamper with the next notification as an attacker would."""
        self._forgeries.append(forgery)

    @property
    def pending(self) -> int:
        return len(self._queue)

    # -- delivery ---------------------------------------------------------------------------------

    async def flush(self) -> list[SentNotification]:
        """POST every queued change (one notification per POST); returns what was sent."""
        sent: list[SentNotification] = []
        queue, self._queue[:] = list(self._queue), []
        for change in queue:
            content = self._content(change)
            subscription = self._subscription_for(change.meeting_id)
            if content is None or subscription is None:
                continue
            if self._drops:
                self._drops -= 1
                continue
            forgery = self._forgeries.pop(0) if self._forgeries else None
            body = self.collection(subscription, content, forgery=forgery)
            copies = 2 if self._duplicates else 1
            self._duplicates = max(0, self._duplicates - 1)
            for _ in range(copies):
                sent.append(await self._send(subscription.notification_url, body))
        return sent

    async def redeliver_last(self) -> SentNotification:
        """POST the last body again (Graph retries when it got no 2xx in time)."""
        if not self.sent:
            raise UsageError("nothing was sent yet", reason="fake_setup")
        last = self.sent[-1]
        return await self._send(last.url, last.body)

    async def send_lifecycle(self, subscription_id: str, event: str) -> SentNotification:
        """POST a lifecycle notification (``reauthorizationRequired``, ``subscriptionRemoved``,
        ``missed``) to the subscription's ``lifecycleNotificationUrl``."""
        sub = self._graph.subscriptions.items.get(subscription_id)
        if sub is None or sub.lifecycle_notification_url is None:
            raise UsageError("unknown subscription or no lifecycle URL", reason="fake_setup")
        item = {
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": _iso(sub.expiration),
            "tenantId": sub.tenant_id,
            "clientState": sub.client_state,
            "lifecycleEvent": event,
        }
        body = json.dumps({"value": [item]}).encode()
        return await self._send(sub.lifecycle_notification_url, body)

    async def _send(self, url: str, body: bytes) -> SentNotification:
        record = SentNotification(url, body, await self._post(url, body))
        self.sent.append(record)
        return record

    def _subscription_for(self, meeting_id: str) -> FakeSubscription | None:
        meeting = self._graph.meetings.get(meeting_id)
        if meeting is None:
            return None
        wanted = unquote(meeting_call_events_resource(meeting["joinWebUrl"]))
        for sub in self._graph.subscriptions.items.values():
            if unquote(sub.resource.lstrip("/")) == wanted and sub.include_resource_data:
                return sub
        return None

    # -- payloads ---------------------------------------------------------------------------------

    def collection(
        self, sub: FakeSubscription, content: dict[str, Any], *, forgery: Forgery | None = None
    ) -> bytes:
        """The POST body for one decrypted call event ``content`` under ``sub``."""
        if sub.encryption_certificate is None or sub.encryption_certificate_id is None:
            raise UsageError("subscription has no encryption certificate", reason="fake_setup")
        plaintext = json.dumps(content).encode()
        cert_id = (
            "not-our-cert" if forgery == "unknown_certificate" else sub.encryption_certificate_id
        )
        encrypted = encrypt_content(
            plaintext,
            encryption_certificate=sub.encryption_certificate,
            certificate_id=cert_id,
        ).model_dump(by_alias=True)
        if forgery == "bad_hmac":
            data = bytearray(encrypted["data"].encode())
            data[10] = ord("A") if data[10] != ord("A") else ord("B")
            encrypted["data"] = data.decode()
        tenant = (
            "00000000-0000-0000-0000-00000000beef" if forgery == "wrong_tenant" else sub.tenant_id
        )
        item = {
            "subscriptionId": sub.id,
            "clientState": "forged-client-state"
            if forgery == "bad_client_state"
            else sub.client_state,
            "changeType": "updated",
            "tenantId": tenant,
            "organizationId": tenant,
            "resource": sub.resource,
            "subscriptionExpirationDateTime": _iso(sub.expiration),
            "resourceData": {
                "@odata.id": sub.resource,
                "@odata.type": "#microsoft.graph.callevent",
                "id": content["id"],
            },
            "encryptedContent": encrypted,
        }
        tokens = [] if forgery == "no_token" else [self._validation_token(tenant, forgery)]
        return json.dumps({"value": [item], "validationTokens": tokens}).encode()

    def _validation_token(self, tenant: str, forgery: Forgery | None) -> str:
        if forgery == "expired_token":
            now = self._graph.clock()
            stamps = {"iat": now - timedelta(hours=3), "nbf": now - timedelta(hours=3)}
            claims = {k: int(v.timestamp()) for k, v in stamps.items()}
            claims["exp"] = int((now - timedelta(hours=2)).timestamp())
            return self._entra.sign_graph_validation_token(
                claims, audience=self._app_id, tenant_id=tenant
            )
        if forgery == "wrong_appid":
            return self._entra.sign_graph_validation_token(
                {"appid": str(uuid.uuid4())}, audience=self._app_id, tenant_id=tenant
            )
        token = self._entra.sign_graph_validation_token(audience=self._app_id, tenant_id=tenant)
        if forgery == "forged_token":
            claims = jwt.decode(token, options={"verify_signature": False})
            header = jwt.get_unverified_header(token)
            attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            return jwt.encode(
                claims, attacker, algorithm="RS256", headers={"kid": header.get("kid")}
            )
        return token

    def _content(self, change: RosterChange) -> dict[str, Any] | None:
        meeting = self._graph.meetings.get(change.meeting_id)
        if meeting is None:
            return None
        resource = meeting_call_events_resource(meeting["joinWebUrl"])
        legacy = self.shape == "legacy"
        base: dict[str, Any] = {
            "@odata.type": "#Microsoft.Graph.onlineMeeting"
            if legacy
            else "#microsoft.graph.callevent",
            "@odata.id": resource,
            "id": str(uuid.uuid4()),
            "eventDateTime": _iso(change.at),
        }
        if change.kind in ("call_started", "call_ended"):
            name = "CallStarted" if change.kind == "call_started" else "CallEnded"
            base["eventType"] = (
                f"Microsoft.Communication.{name}" if legacy else name[0].lower() + name[1:]
            )
            return base
        if legacy:
            if change.in_lobby and not change.removed:
                return None  # the older shape had no lobby
            base["eventType"] = "Microsoft.Communication.CallRosterUpdate"
            key = "activeParticipants@exited" if change.removed else "activeParticipants@joined"
            base[key] = [{"id": change.participant_id, "identity": _legacy_identity(change)}]
            return base
        entry: dict[str, Any] = {
            "info": {"identity": _identity(change)},
            "isInLobby": change.in_lobby and not change.removed,
            "id": change.participant_id,
        }
        if change.removed:
            entry["removedState"] = {"reason": "Participant has left the meeting call."}
        base["eventType"] = "rosterUpdated"
        base["participants@delta"] = [entry]
        return base


def _identity(change: RosterChange) -> dict[str, Any]:
    name = change.display_name
    if change.identity_kind in ("organizer", "tenant_user"):
        return {"user": {"id": change.user_id, "displayName": name, "tenantId": change.tenant_id}}
    if change.identity_kind == "phone":
        return {"phone": {"id": change.participant_id, "displayName": name}}
    return {"guest": {"id": change.participant_id, "displayName": name}}


def _legacy_identity(change: RosterChange) -> dict[str, Any]:
    name = change.display_name
    if change.identity_kind in ("organizer", "tenant_user"):
        return {"User": {"Id": change.user_id, "DisplayName": name, "TenantId": change.tenant_id}}
    if change.identity_kind == "phone":
        return {"Phone": {"Id": change.participant_id, "DisplayName": name}}
    return {"Guest": {"Id": change.participant_id, "DisplayName": name}}

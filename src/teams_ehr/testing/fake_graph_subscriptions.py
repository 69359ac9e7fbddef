"""Change-notification subscriptions of :class:`~teams_ehr.testing.fake_graph.FakeGraph` (requirements E1, D1).

``POST /subscriptions`` performs Graph's validation handshake
(learn.microsoft.com/graph/change-notifications-delivery-webhooks, validation request): it POSTs
``notificationUrl?validationToken=<token>`` (and the ``lifecycleNotificationUrl`` too, when given)
through the injected ``webhook_client`` and requires ``200``, ``Content-Type: text/plain`` and the
token echoed byte-exact within 10 seconds; otherwise it answers 400 and stores nothing. Other
documented rules enforced: ``lifecycleNotificationUrl`` is required when the expiration is more than
1 hour away (Teams resources); at most 3 days for online meeting call events (4230 minutes
otherwise); ``clientState`` at most 255 characters; one subscription per app (here: per tenant) per
resource (409). With ``webhook_client=None`` the handshake is skipped (``validated`` stays False),
for tests that do not exercise webhooks.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx

from teams_ehr._types import Clock

__all__ = ["FakeSubscription", "SubscriptionService"]

HANDSHAKE_TIMEOUT = 10.0
_MAX_MEETING_EVENTS = timedelta(days=3)
_MAX_OTHER = timedelta(minutes=4230)
_LIFECYCLE_REQUIRED_AFTER = timedelta(hours=1)


@dataclass
class FakeSubscription:
    """A stored subscription. ``client_state`` is what notifications must carry."""

    id: str
    tenant_id: str
    resource: str
    change_type: str
    notification_url: str
    lifecycle_notification_url: str | None
    expiration: datetime
    client_state: str | None
    include_resource_data: bool
    encryption_certificate: str | None
    encryption_certificate_id: str | None
    validated: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "resource": self.resource,
            "changeType": self.change_type,
            "notificationUrl": self.notification_url,
            "lifecycleNotificationUrl": self.lifecycle_notification_url,
            "expirationDateTime": self.expiration.isoformat().replace("+00:00", "Z"),
            "clientState": self.client_state,
            "includeResourceData": self.include_resource_data,
            "encryptionCertificateId": self.encryption_certificate_id,
            "latestSupportedTlsVersion": "v1_2",
        }


def _error(status: int, code: str, message: str) -> httpx.Response:
    request_id = str(uuid.uuid4())
    body = {"error": {"code": code, "message": message, "innerError": {"request-id": request_id}}}
    return httpx.Response(status, json=body, headers={"request-id": request_id})


def _url_ok(url: Any) -> bool:
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    return parts.scheme == "https" or (parts.scheme == "http" and loopback)


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


class SubscriptionService:
    """The /subscriptions collection of the fake. ``items`` maps id → :class:`FakeSubscription`."""

    def __init__(self, *, clock: Clock, webhook_client: httpx.AsyncClient | None) -> None:
        self._clock = clock
        self.webhook_client = webhook_client
        self.items: dict[str, FakeSubscription] = {}
        self.validation_tokens: list[str] = []
        self.handshake_timeout = HANDSHAKE_TIMEOUT

    def _max_lifetime(self, resource: str) -> timedelta:
        return _MAX_MEETING_EVENTS if "meetingCallEvents" in resource else _MAX_OTHER

    async def handle(
        self, request: httpx.Request, tenant: str, subscription_id: str | None, body: Any
    ) -> httpx.Response:
        if subscription_id is None and request.method == "POST":
            return await self._create(tenant, body)
        sub = self.items.get(subscription_id or "")
        if sub is None or sub.tenant_id != tenant:
            return _error(404, "ResourceNotFound", "Subscription not found.")
        if request.method == "DELETE":
            del self.items[sub.id]
            return httpx.Response(204)
        if request.method == "PATCH":
            expiration = _time(body.get("expirationDateTime") if isinstance(body, dict) else None)
            problem = self._expiration_problem(expiration, sub.resource)
            if problem or expiration is None:
                return _error(400, "ExtensionError", problem or "Invalid expiration.")
            sub.expiration = expiration
            return httpx.Response(200, json=sub.to_json())
        if request.method == "GET":
            return httpx.Response(200, json=sub.to_json())
        return _error(405, "MethodNotAllowed", "Method not allowed.")

    def _expiration_problem(self, expiration: datetime | None, resource: str) -> str | None:
        now = self._clock()
        if expiration is None or expiration <= now:
            return "expirationDateTime must be in the future."
        if expiration - now > self._max_lifetime(resource):
            return "expirationDateTime exceeds the maximum for this resource."
        return None

    async def _create(self, tenant: str, body: Any) -> httpx.Response:
        if not isinstance(body, dict):
            return _error(400, "BadRequest", "Invalid body.")
        resource, change_type = body.get("resource"), body.get("changeType")
        notification_url = body.get("notificationUrl")
        lifecycle_url = body.get("lifecycleNotificationUrl")
        client_state = body.get("clientState")
        expiration = _time(body.get("expirationDateTime"))
        if not isinstance(resource, str) or not isinstance(change_type, str):
            return _error(400, "BadRequest", "resource and changeType are required.")
        if not _url_ok(notification_url) or (
            lifecycle_url is not None and not _url_ok(lifecycle_url)
        ):
            return _error(400, "BadRequest", "Notification URLs must be https.")
        if client_state is not None and (
            not isinstance(client_state, str) or len(client_state) > 255
        ):
            return _error(400, "BadRequest", "clientState is limited to 255 characters.")
        problem = self._expiration_problem(expiration, resource)
        if problem or expiration is None:
            return _error(400, "ExtensionError", problem or "Invalid expiration.")
        if expiration - self._clock() > _LIFECYCLE_REQUIRED_AFTER and lifecycle_url is None:
            return _error(400, "BadRequest", "lifecycleNotificationUrl is required.")
        if body.get("includeResourceData") and not (
            body.get("encryptionCertificate") and body.get("encryptionCertificateId")
        ):
            return _error(400, "BadRequest", "Rich notifications need an encryption certificate.")
        if any(s.tenant_id == tenant and s.resource == resource for s in self.items.values()):
            return _error(409, "Conflict", "A subscription for this resource already exists.")
        validated = False
        if self.webhook_client is not None:
            for url in (notification_url, lifecycle_url):
                if url is not None and not await self._handshake(str(url)):
                    return _error(
                        400,
                        "ValidationError",
                        "Subscription validation request failed. Notification endpoint must "
                        "respond with 200 OK to validation request.",
                    )
            validated = True
        sub = FakeSubscription(
            id=str(uuid.uuid4()),
            tenant_id=tenant,
            resource=resource,
            change_type=change_type,
            notification_url=str(notification_url),
            lifecycle_notification_url=lifecycle_url,
            expiration=expiration,
            client_state=client_state,
            include_resource_data=bool(body.get("includeResourceData")),
            encryption_certificate=body.get("encryptionCertificate"),
            encryption_certificate_id=body.get("encryptionCertificateId"),
            validated=validated,
        )
        self.items[sub.id] = sub
        return httpx.Response(201, json=sub.to_json())

    async def _handshake(self, url: str) -> bool:
        """POST ``url?validationToken=…`` and check the plain-text echo (10 s limit)."""
        client = self.webhook_client
        if client is None:  # pragma: no cover - guarded by the caller
            return False
        token = f"Validation: Testing client application reachability {uuid.uuid4()}"
        self.validation_tokens.append(token)
        target = httpx.URL(url).copy_merge_params({"validationToken": token})
        try:
            with anyio.fail_after(self.handshake_timeout):
                response = await client.post(
                    target, headers={"Content-Type": "text/plain; charset=utf-8"}
                )
        except (TimeoutError, httpx.HTTPError):
            return False
        content_type = response.headers.get("Content-Type", "")
        return (
            response.status_code == 200
            and content_type.split(";")[0].strip().lower() == "text/plain"
            and response.content == token.encode()
        )

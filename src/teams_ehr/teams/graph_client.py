"""A small Microsoft Graph client for the calls teams-ehr needs (requirements B1, B2, B4; design rule 8).

Calls (Graph v1.0 unless noted; learn.microsoft.com/graph/api/resources/onlinemeeting):

* ``POST /users/{oid}/onlineMeetings/createOrGet`` (onlinemeeting-createorget): idempotent by
  (tenant, organizer, externalId), so it is retried. The plain ``POST /users/{oid}/onlineMeetings``
  is never called: it creates a new meeting on every retry (reliability case R04).
* ``GET``/``PATCH``/``DELETE /users/{oid}/onlineMeetings/{id}`` with
  ``Prefer: include-unknown-enum-members`` so evolvable enum members (``invited``…) read back as
  themselves instead of ``unknownFutureValue`` (lobbybypasssettings).
* ``GET …/attendanceReports`` and ``…/attendanceReports/{id}/attendanceRecords``, following
  ``@odata.nextLink`` only to the Graph host itself.
* ``POST``/``PATCH``/``DELETE /subscriptions`` (change notifications; ``api_version="beta"`` for
  meetingCallEvents). ``POST /subscriptions`` is not idempotent.

Errors: Graph's ``{"error": {"code", "message", "innerError": {"request-id"}}}`` becomes
:class:`~teams_ehr.errors.GraphError` with status, code and request id. Graph's own message is
never copied (it can echo URLs and user ids); a missing application access policy gets its own
reason and the fix (:mod:`teams_ehr.teams.graph_errors`).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import anyio
import httpx
from pydantic import BaseModel, SecretStr, ValidationError

from teams_ehr._redact import get_logger
from teams_ehr._types import Clock, utc_now
from teams_ehr.errors import GraphError, TransportError, UsageError
from teams_ehr.sansio import send_async
from teams_ehr.teams.graph_errors import (
    APPLICATION_ACCESS_POLICY_DOCS,
    graph_error,
    graph_error_from_response,
)
from teams_ehr.teams.models import AttendanceRecord, AttendanceReport, OnlineMeeting, Subscription
from teams_ehr.teams.retry import (
    NOT_PROCESSED_STATUSES,
    Idempotency,
    RetryPolicy,
    parse_retry_after,
)

if TYPE_CHECKING:
    from teams_ehr.teams.credentials import AccessTokenProvider

__all__ = [
    "APPLICATION_ACCESS_POLICY_DOCS",
    "GraphClient",
    "PREFER_UNKNOWN_ENUMS",
    "graph_error",
    "graph_error_from_response",
    "graph_time",
]

log = get_logger(__name__)
M = TypeVar("M", bound=BaseModel)

PREFER_UNKNOWN_ENUMS = "include-unknown-enum-members"
_MAX_PAGES = 200


def graph_time(value: datetime) -> str:
    """ISO 8601 UTC with ``Z``; naive datetimes are a usage error."""
    if value.tzinfo is None:
        raise UsageError("Graph times must be timezone-aware", reason="naive_datetime")
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _seg(value: str) -> str:
    if not value or len(value) > 1024:
        raise UsageError("Graph id must be 1..1024 characters", reason="bad_graph_id")
    return quote(value, safe="")


class GraphClient:
    """Async Graph client on an injected :class:`httpx.AsyncClient` (works on asyncio and trio)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        credentials: AccessTokenProvider,
        *,
        base_url: str = "https://graph.microsoft.com",
        api_version: str = "v1.0",
        retry: RetryPolicy | None = None,
        clock: Clock = utc_now,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        scope: str | None = None,
        max_concurrent_requests: int = 32,
    ) -> None:
        self._http = http
        # Bounds requests in flight: a burst queues here instead of inside httpcore's pool,
        # whose bookkeeping is quadratic in the number of waiting requests.
        self._in_flight = anyio.Semaphore(max_concurrent_requests)
        self._credentials = credentials
        self.base_url = base_url.rstrip("/")
        self._origin = httpx.URL(self.base_url)
        self.api_version = api_version
        self.retry = retry or RetryPolicy()
        self._clock = clock
        self._sleep = sleep
        self.scope = scope or f"{self.base_url}/.default"

    def __repr__(self) -> str:
        return f"<GraphClient base_url={self.base_url!r}>"

    # -- online meetings -------------------------------------------------------------------------

    async def create_or_get_meeting(
        self, organizer_oid: str, *, external_id: str, subject: str, start: datetime, end: datetime
    ) -> OnlineMeeting:
        body = {
            "externalId": external_id,
            "subject": subject,
            "startDateTime": graph_time(start),
            "endDateTime": graph_time(end),
        }
        path = f"/users/{_seg(organizer_oid)}/onlineMeetings/createOrGet"
        response = await self._send(
            "POST", path, "POST onlineMeetings/createOrGet", json=body, prefer=True
        )
        return self._parse(OnlineMeeting, response, "createOrGet")

    async def patch_meeting(
        self, organizer_oid: str, meeting_id: str, patch: Mapping[str, Any]
    ) -> OnlineMeeting:
        path = f"/users/{_seg(organizer_oid)}/onlineMeetings/{_seg(meeting_id)}"
        response = await self._send(
            "PATCH", path, "PATCH onlineMeetings/{id}", json=dict(patch), prefer=True
        )
        return self._parse(OnlineMeeting, response, "PATCH onlineMeeting")

    async def get_meeting(self, organizer_oid: str, meeting_id: str) -> OnlineMeeting:
        path = f"/users/{_seg(organizer_oid)}/onlineMeetings/{_seg(meeting_id)}"
        response = await self._send("GET", path, "GET onlineMeetings/{id}", prefer=True)
        return self._parse(OnlineMeeting, response, "GET onlineMeeting")

    async def delete_meeting(self, organizer_oid: str, meeting_id: str) -> bool:
        """Delete the meeting (its join URL stops working). ``False`` if it was already gone."""
        path = f"/users/{_seg(organizer_oid)}/onlineMeetings/{_seg(meeting_id)}"
        try:
            await self._send("DELETE", path, "DELETE onlineMeetings/{id}")
        except GraphError as exc:
            if exc.status_code == 404:
                return False
            raise
        return True

    async def get_virtual_appointment_join_url(
        self, organizer_oid: str, meeting_id: str
    ) -> SecretStr:
        """The Virtual Appointments browser join URL (Teams Premium;
        learn.microsoft.com/graph/api/virtualappointment-getvirtualappointmentjoinweburl). Its
        app-only permission is documented inconsistently: verify in the tenant, fall back to
        joinWebUrl."""
        path = (
            f"/users/{_seg(organizer_oid)}/onlineMeetings/{_seg(meeting_id)}"
            "/getVirtualAppointmentJoinWebUrl"
        )
        response = await self._send("GET", path, "GET getVirtualAppointmentJoinWebUrl")
        try:
            value: Any = response.json().get("value")
        except (ValueError, AttributeError, RecursionError):
            value = None
        if not isinstance(value, str) or not value:
            raise GraphError(
                "Graph getVirtualAppointmentJoinWebUrl: no value", reason="graph_response_invalid"
            )
        return SecretStr(value)

    async def list_attendance_reports(
        self, organizer_oid: str, meeting_id: str
    ) -> list[AttendanceReport]:
        path = f"/users/{_seg(organizer_oid)}/onlineMeetings/{_seg(meeting_id)}/attendanceReports"
        return await self._list(AttendanceReport, path, "GET attendanceReports")

    async def list_attendance_records(
        self, organizer_oid: str, meeting_id: str, report_id: str
    ) -> list[AttendanceRecord]:
        path = (
            f"/users/{_seg(organizer_oid)}/onlineMeetings/{_seg(meeting_id)}"
            f"/attendanceReports/{_seg(report_id)}/attendanceRecords"
        )
        return await self._list(AttendanceRecord, path, "GET attendanceRecords")

    # -- subscriptions ---------------------------------------------------------------------------

    async def create_subscription(
        self,
        *,
        resource: SecretStr | str,
        change_type: str,
        notification_url: str,
        expiration: datetime,
        client_state: SecretStr,
        lifecycle_notification_url: str | None = None,
        include_resource_data: bool = False,
        encryption_certificate: str | None = None,
        encryption_certificate_id: str | None = None,
        api_version: str | None = None,
    ) -> Subscription:
        """Create a subscription. Never resent after it may have reached Graph (not idempotent)."""
        raw_resource = resource.get_secret_value() if isinstance(resource, SecretStr) else resource
        body: dict[str, Any] = {
            "changeType": change_type,
            "notificationUrl": notification_url,
            "resource": raw_resource,
            "expirationDateTime": graph_time(expiration),
            "clientState": client_state.get_secret_value(),
        }
        if lifecycle_notification_url is not None:
            body["lifecycleNotificationUrl"] = lifecycle_notification_url
        if include_resource_data:
            body["includeResourceData"] = True
            body["encryptionCertificate"] = encryption_certificate
            body["encryptionCertificateId"] = encryption_certificate_id
        response = await self._send(
            "POST",
            "/subscriptions",
            "POST subscriptions",
            json=body,
            idempotency=Idempotency.NOT_PROCESSED_ONLY,
            api_version=api_version,
        )
        return self._parse(Subscription, response, "POST subscriptions")

    async def renew_subscription(
        self, subscription_id: str, expiration: datetime, *, api_version: str | None = None
    ) -> Subscription:
        response = await self._send(
            "PATCH",
            f"/subscriptions/{_seg(subscription_id)}",
            "PATCH subscriptions/{id}",
            json={"expirationDateTime": graph_time(expiration)},
            api_version=api_version,
        )
        return self._parse(Subscription, response, "PATCH subscription")

    async def delete_subscription(
        self, subscription_id: str, *, api_version: str | None = None
    ) -> bool:
        """Delete a subscription; ``False`` if Graph no longer knew it."""
        try:
            await self._send(
                "DELETE",
                f"/subscriptions/{_seg(subscription_id)}",
                "DELETE subscriptions/{id}",
                api_version=api_version,
            )
        except GraphError as exc:
            if exc.status_code == 404:
                return False
            raise
        return True

    # -- plumbing --------------------------------------------------------------------------------

    def _parse(self, model: type[M], response: httpx.Response, what: str) -> M:
        try:
            return model.model_validate_json(response.content)
        except ValidationError:
            raise GraphError(
                f"Graph {what}: unexpected response shape",
                status_code=response.status_code,
                request_id=response.headers.get("request-id"),
                reason="graph_response_invalid",
            ) from None

    async def _list(self, model: type[M], path: str, route: str) -> list[M]:
        items: list[M] = []
        url: str | None = None
        for _ in range(_MAX_PAGES):
            response = await self._send("GET", path, route, url=url)
            try:
                body: Any = response.json()
            except (ValueError, RecursionError):
                body = None
            values = body.get("value") if isinstance(body, dict) else None
            if not isinstance(values, list):
                raise GraphError(f"Graph {route}: no value array", reason="graph_response_invalid")
            try:
                items.extend(model.model_validate(v) for v in values)
            except ValidationError:
                raise GraphError(
                    f"Graph {route}: unexpected item shape", reason="graph_response_invalid"
                ) from None
            next_link = body.get("@odata.nextLink")
            if not next_link:
                return items
            url = self._checked_next_link(str(next_link), route)
        raise GraphError(f"Graph {route}: too many pages", reason="graph_too_many_pages")

    def _checked_next_link(self, link: str, route: str) -> str:
        try:
            parsed = httpx.URL(link)
        except httpx.InvalidURL:
            parsed = None
        if parsed is None or (parsed.scheme, parsed.host, parsed.port) != (
            self._origin.scheme,
            self._origin.host,
            self._origin.port,
        ):
            raise GraphError(
                f"Graph {route}: @odata.nextLink leaves the Graph host",
                reason="graph_next_link_foreign_host",
            )
        return link

    def _url(self, path: str, api_version: str | None) -> str:
        return f"{self.base_url}/{api_version or self.api_version}{path}"

    async def _build(
        self,
        method: str,
        url: str,
        *,
        json: Any | None,
        prefer: bool,
    ) -> httpx.Request:
        token = await self._credentials.get_token(self.scope)
        headers = {
            "Authorization": f"Bearer {token.token}",
            "Accept": "application/json",
            "client-request-id": str(uuid.uuid4()),
        }
        if prefer:
            headers["Prefer"] = PREFER_UNKNOWN_ENUMS
        return self._http.build_request(method, url, json=json, headers=headers)

    async def _send(
        self,
        method: str,
        path: str,
        route: str,
        *,
        json: Any | None = None,
        prefer: bool = False,
        idempotency: Idempotency = Idempotency.IDEMPOTENT,
        api_version: str | None = None,
        url: str | None = None,
    ) -> httpx.Response:
        """Send with retries: ``Retry-After`` honoured, waits capped, overall deadline enforced."""
        target = url or self._url(path, api_version)
        started = self._clock()
        attempt = 0
        reauthorized = False
        while True:
            attempt += 1
            request = await self._build(method, target, json=json, prefer=prefer)
            try:
                async with self._in_flight:
                    response = await send_async(self._http, request)
            except TransportError:
                if idempotency is not Idempotency.IDEMPOTENT:
                    raise
                decision = self.retry.decide(
                    attempt=attempt, elapsed=self._elapsed(started), retry_after=None
                )
                if decision.delay is None:
                    raise
                log.info("Graph %s: transport failure, retry %d", route, attempt)
                await self._sleep(decision.delay)
                continue
            status = response.status_code
            retryable = status in self.retry.retry_statuses and (
                idempotency is Idempotency.IDEMPOTENT or status in NOT_PROCESSED_STATUSES
            )
            if retryable:
                retry_after = parse_retry_after(
                    response.headers.get("Retry-After"), now=self._clock()
                )
                decision = self.retry.decide(
                    attempt=attempt, elapsed=self._elapsed(started), retry_after=retry_after
                )
                if decision.delay is None:
                    raise graph_error_from_response(
                        response, route, retry_after=decision.retry_after or 0.0
                    )
                log.info("Graph %s: HTTP %d, waiting %.1fs", route, status, decision.delay)
                await self._sleep(decision.delay)
                continue
            if status == 401 and not reauthorized and hasattr(self._credentials, "invalidate"):
                reauthorized = True
                self._credentials.invalidate(self.scope)
                continue
            if status >= 400:
                raise graph_error_from_response(response, route)
            return response

    def _elapsed(self, started: datetime) -> float:
        return (self._clock() - started).total_seconds()

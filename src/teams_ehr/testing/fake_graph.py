"""FakeGraph: an in-memory Microsoft Graph for online meetings, attendance and subscriptions (requirement E1).

Usable without pytest, as an ``httpx.MockTransport`` handler (``FakeGraph.handler``, async: use it
with ``httpx.AsyncClient``) or as an ASGI app on loopback (``FakeGraph.asgi_app()``). Behaviour
follows the Graph v1.0 documentation (learn.microsoft.com/graph/api/resources/onlinemeeting and the
pages cited below):

* ``POST /users/{oid}/onlineMeetings/createOrGet`` keyed on (tenant, organizer, externalId):
  201 then 200 with the same meeting. New meetings default to ``lobbyBypassSettings.scope =
  "organization"`` and ``allowedPresenters = "everyone"``, as the real service does.
* The plain ``POST /users/{oid}/onlineMeetings`` is recorded and answered 400, so a test can prove
  it is never called (:attr:`plain_create_calls`).
* ``PATCH``/``GET``/``DELETE`` a meeting. Without ``Prefer: include-unknown-enum-members`` evolvable
  members (``invited``, ``organizationExcludingGuests``) read back as ``unknownFutureValue`` and are
  refused (400) in a PATCH.
* A bearer token is required; ``token_checker(token)`` returns the caller's tenant or ``None``.
* Scripted faults: :meth:`fail_next` (429/503/504 with ``Retry-After``, or the 403 of a missing
  application access policy), :meth:`lose_next_response` (the server acts, the client sees a
  timeout: reliability case R03), :meth:`tamper_next_readback` (the next GET returns altered
  settings: reliability case R05, threat T18).
* Subscriptions with the validation handshake (:mod:`teams_ehr.testing.fake_graph_subscriptions`) and attendance
  reports built from the simulated meeting room (:meth:`room`, :mod:`teams_ehr.testing.meeting_room`).
"""

from __future__ import annotations

import base64
import json
import random
import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

import httpx

from teams_ehr._types import Clock, utc_now
from teams_ehr.testing.fake_graph_subscriptions import SubscriptionService
from teams_ehr.testing.meeting_room import MeetingRoom, RosterChange

__all__ = ["FakeGraph", "RecordedCall"]

PREFER = "include-unknown-enum-members"
_EVOLVABLE = {"lobbyBypassSettings.scope": {"invited", "organizationExcludingGuests"}}
_ENUMS: dict[str, set[str]] = {
    "lobbyBypassSettings.scope": {
        "organizer",
        "organization",
        "organizationAndFederated",
        "everyone",
        "invited",
        "organizationExcludingGuests",
    },
    "allowedPresenters": {"everyone", "organization", "roleIsPresenter", "organizer"},
    "allowedLobbyAdmitters": {"organizerAndCoOrganizersAndPresenters", "organizerAndCoOrganizers"},
    "allowMeetingChat": {"enabled", "disabled", "limited"},
}
_BOOLS = {
    "allowRecording",
    "recordAutomatically",
    "allowTranscription",
    "allowParticipantsToChangeName",
    "isEntryExitAnnounced",
    "allowAttendeeToEnableCamera",
    "allowAttendeeToEnableMic",
    "allowTeamworkReactions",
    "allowWhiteboard",
    "allowBreakoutRooms",
    "allowPowerPointSharing",
    "allowCopyingAndSharingMeetingContent",
}
_PATCHABLE = _BOOLS | {"lobbyBypassSettings", "allowedPresenters", "allowedLobbyAdmitters"}
_PATCHABLE |= {"allowMeetingChat", "subject", "startDateTime", "endDateTime", "participants"}
_STATUS_CODES = {
    429: ("TooManyRequests", "Too many requests."),
    503: ("ServiceUnavailable", "Service unavailable."),
    504: ("GatewayTimeout", "Gateway timeout."),
    500: ("InternalServerError", "Internal server error."),
    401: ("InvalidAuthenticationToken", "Access token validation failure."),
    403: ("Forbidden", "No application access policy found for this app."),
}
_MEETINGS = re.compile(r"^/(v1\.0|beta)/users/([^/]+)/onlineMeetings(?:/([^/]+))?(/.*)?$")


@dataclass
class _Script:
    kind: str
    path_substring: str
    method: str | None
    times: int
    status: int = 0
    retry_after: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def matches(self, request: httpx.Request) -> bool:
        return (
            self.times > 0
            and self.path_substring in request.url.path
            and (self.method is None or self.method == request.method)
        )


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """One request the fake received (body parsed as JSON when possible)."""

    method: str
    path: str
    headers: httpx.Headers
    body: Any


@dataclass
class _StoredMeeting:
    tenant_id: str
    organizer_oid: str
    data: dict[str, Any]


def graph_error_response(
    status: int, code: str, message: str, request: httpx.Request, **headers: str
) -> httpx.Response:
    """Graph's error JSON with ``innerError`` request ids and the ``request-id`` header."""
    request_id = str(uuid.uuid4())
    body = {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "request-id": request_id,
                "client-request-id": request.headers.get("client-request-id", request_id),
            },
        }
    }
    return httpx.Response(status, json=body, headers={"request-id": request_id, **headers})


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


class FakeGraph:
    """The fake service. State is public for assertions: :attr:`meetings`, :attr:`requests`."""

    def __init__(
        self,
        *,
        tenant_id: str,
        clock: Clock = utc_now,
        base_url: str = "https://graph.microsoft.com",
        token_checker: Callable[[str], str | None] | None = None,
        webhook_client: httpx.AsyncClient | None = None,
        page_size: int = 50,
        seed: int | None = None,
    ) -> None:
        self.tenant_id = tenant_id
        self.clock = clock
        self.base_url = base_url.rstrip("/")
        self._prefix = httpx.URL(self.base_url).path.rstrip("/")
        self._token_checker = token_checker or (lambda _token: tenant_id)
        self._rng = random.Random(seed)  # noqa: S311 - fake ids, not secrets
        self.page_size = page_size
        self._stored: dict[str, _StoredMeeting] = {}
        self._by_external: dict[tuple[str, str, str], str] = {}
        self._rooms: dict[str, MeetingRoom] = {}
        self._observers: list[Callable[[RosterChange], None]] = []
        self._scripts: list[_Script] = []
        self.requests: list[RecordedCall] = []
        self.subscriptions = SubscriptionService(clock=clock, webhook_client=webhook_client)

    # -- public state and scripting ---------------------------------------------------------------

    @property
    def meetings(self) -> MutableMapping[str, dict[str, Any]]:
        """Meeting id → the stored onlineMeeting JSON (raw, as Graph holds it)."""
        return {mid: stored.data for mid, stored in self._stored.items()}

    @property
    def plain_create_calls(self) -> list[RecordedCall]:
        """Calls to the non-idempotent ``POST /users/{id}/onlineMeetings`` (should stay empty)."""
        return [
            c
            for c in self.requests
            if c.method == "POST" and re.search(r"/onlineMeetings/?$", c.path) is not None
        ]

    def fail_next(
        self,
        path_substring: str,
        status: int,
        *,
        retry_after: float | str | None = None,
        times: int = 1,
        method: str | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` before acting on them."""
        ra = None if retry_after is None else str(retry_after)
        self._scripts.append(_Script("fail", path_substring, method, times, status, ra))

    def lose_next_response(
        self, path_substring: str, *, times: int = 1, method: str | None = None
    ) -> None:
        """Act on the next matching request, then raise ``httpx.ReadTimeout`` (lost response)."""
        self._scripts.append(_Script("lose", path_substring, method, times))

    def tamper_next_readback(self, overrides: dict[str, Any], *, times: int = 1) -> None:
        """Merge ``overrides`` into the next ``times`` GET responses of a meeting."""
        self._scripts.append(
            _Script("tamper", "/onlineMeetings/", "GET", times, overrides=overrides)
        )

    def on_roster_change(self, callback: Callable[[RosterChange], None]) -> None:
        """Call ``callback`` with every :class:`RosterChange` of every room."""
        self._observers.append(callback)

    def room(self, meeting_id: str) -> MeetingRoom:
        """The simulated room of a meeting (created on first use)."""
        stored = self._stored.get(meeting_id)
        if stored is None:
            raise KeyError("unknown meeting id")
        if meeting_id not in self._rooms:

            def lobby() -> tuple[str | None, bool | None]:
                settings = stored.data.get("lobbyBypassSettings") or {}
                return settings.get("scope"), settings.get("isDialInBypassEnabled")

            self._rooms[meeting_id] = MeetingRoom(
                meeting_id,
                organizer_oid=stored.organizer_oid,
                tenant_id=stored.tenant_id,
                lobby_settings=lobby,
                clock=self.clock,
                notify=self._notify,
            )
        return self._rooms[meeting_id]

    def _notify(self, change: RosterChange) -> None:
        for callback in list(self._observers):
            callback(change)

    def _take(self, request: httpx.Request, kinds: set[str]) -> _Script | None:
        for script in self._scripts:
            if script.kind in kinds and script.matches(request):
                script.times -= 1
                return script
        return None

    # -- HTTP --------------------------------------------------------------------------------------

    async def handler(self, request: httpx.Request) -> httpx.Response:
        """The ``httpx.MockTransport`` handler (async)."""
        body_bytes = await request.aread()
        try:
            body = json.loads(body_bytes) if body_bytes else None
        except ValueError:
            body = None
        self.requests.append(RecordedCall(request.method, request.url.path, request.headers, body))
        script = self._take(request, {"fail"})
        if script is not None:
            return self._scripted_failure(request, script)
        auth = request.headers.get("Authorization", "")
        tenant = self._token_checker(auth[7:]) if auth.lower().startswith("bearer ") else None
        if tenant is None:
            code, message = _STATUS_CODES[401]
            return graph_error_response(401, code, message, request)
        response = await self._route(request, tenant, body)
        if self._take(request, {"lose"}) is not None:
            raise httpx.ReadTimeout("scripted lost response", request=request)
        return response

    def _scripted_failure(self, request: httpx.Request, script: _Script) -> httpx.Response:
        code, message = _STATUS_CODES.get(script.status, ("UnknownError", "Scripted failure."))
        headers = {} if script.retry_after is None else {"Retry-After": script.retry_after}
        return graph_error_response(script.status, code, message, request, **headers)

    async def _route(self, request: httpx.Request, tenant: str, body: Any) -> httpx.Response:
        path = request.url.raw_path.decode("ascii").split("?", 1)[0]
        if self._prefix and path.startswith(self._prefix):
            path = path[len(self._prefix) :]
        sub = re.match(r"^/(v1\.0|beta)/subscriptions(?:/([^/]+))?$", path)
        if sub is not None:
            sub_id = None if sub.group(2) is None else unquote(sub.group(2))
            return await self.subscriptions.handle(request, tenant, sub_id, body)
        match = _MEETINGS.match(path)
        if match is None:
            return graph_error_response(400, "BadRequest", "Unsupported path.", request)
        organizer = unquote(match.group(2))
        meeting_id, rest = (None if g is None else unquote(g) for g in match.group(3, 4))
        if meeting_id == "createOrGet" and rest is None and request.method == "POST":
            return self._create_or_get(request, tenant, organizer, body)
        if meeting_id is None:
            # The plain, non-idempotent create: recorded above, refused here.
            return graph_error_response(400, "BadRequest", "Use createOrGet.", request)
        stored = self._stored.get(meeting_id)
        if stored is None or (stored.tenant_id, stored.organizer_oid) != (tenant, organizer):
            return graph_error_response(404, "NotFound", "Meeting not found.", request)
        if rest is None:
            return self._meeting_item(request, meeting_id, stored, body)
        return self._attendance(request, meeting_id, rest)

    def _render(self, request: httpx.Request, data: dict[str, Any], status: int) -> httpx.Response:
        out = json.loads(json.dumps(data))
        if PREFER not in request.headers.get("Prefer", ""):
            lobby = out.get("lobbyBypassSettings") or {}
            if lobby.get("scope") in _EVOLVABLE["lobbyBypassSettings.scope"]:
                lobby["scope"] = "unknownFutureValue"
        return httpx.Response(status, json=out)

    def _new_meeting(self, tenant: str, organizer: str, body: dict[str, Any]) -> dict[str, Any]:
        token = base64.b64encode(self._rng.randbytes(27)).decode()
        thread = f"19:meeting_{token.replace('+', 'A').replace('/', 'B')}@thread.v2"
        meeting_id = base64.b64encode(f"1*{organizer}*0**{thread}".encode()).decode()
        context = f"%7b%22Tid%22%3a%22{tenant}%22%2c%22Oid%22%3a%22{organizer}%22%7d"
        join = (
            f"https://teams.microsoft.com/l/meetup-join/{thread.replace(':', '%3a').replace('@', '%40')}"
            f"/0?context={context}"
        )
        now = self.clock()
        start = _parse_time(body.get("startDateTime")) or now
        end = _parse_time(body.get("endDateTime")) or start + timedelta(hours=1)
        return {
            "id": meeting_id,
            "creationDateTime": _iso(now),
            "startDateTime": _iso(start),
            "endDateTime": _iso(end),
            "joinWebUrl": join,
            "subject": body.get("subject"),
            "externalId": body["externalId"],
            "isEntryExitAnnounced": True,
            "allowedPresenters": "everyone",
            "allowedLobbyAdmitters": "organizerAndCoOrganizersAndPresenters",
            "allowMeetingChat": "enabled",
            "allowTeamworkReactions": True,
            "allowAttendeeToEnableCamera": True,
            "allowAttendeeToEnableMic": True,
            "allowParticipantsToChangeName": False,
            "allowRecording": True,
            "recordAutomatically": False,
            "allowTranscription": True,
            "lobbyBypassSettings": {"scope": "organization", "isDialInBypassEnabled": False},
            "joinMeetingIdSettings": {
                "joinMeetingId": str(self._rng.randrange(10**11, 10**12)),
                "passcode": base64.b32encode(self._rng.randbytes(5)).decode()[:6],
                "isPasscodeRequired": True,
            },
            "joinInformation": {"content": f"data:text/html,{join}", "contentType": "html"},
            "chatInfo": {"threadId": thread, "messageId": "0", "replyChainMessageId": None},
            "participants": {
                "organizer": {
                    "identity": {"user": {"id": organizer, "tenantId": tenant}},
                    "role": "presenter",
                    "upn": None,
                },
                "attendees": [],
            },
        }

    def _create_or_get(
        self, request: httpx.Request, tenant: str, organizer: str, body: Any
    ) -> httpx.Response:
        if not isinstance(body, dict) or not isinstance(body.get("externalId"), str):
            return graph_error_response(400, "BadRequest", "externalId is required.", request)
        start, end = body.get("startDateTime"), body.get("endDateTime")
        if end is not None and (start is None or _parse_time(end) is None):
            return graph_error_response(400, "BadRequest", "Invalid start/end.", request)
        if start is not None and end is not None and _parse_time(end) <= _parse_time(start):  # type: ignore[operator]
            return graph_error_response(400, "BadRequest", "End before start.", request)
        key = (tenant, organizer, body["externalId"])
        existing = self._by_external.get(key)
        if existing is not None:
            return self._render(request, self._stored[existing].data, 200)
        data = self._new_meeting(tenant, organizer, body)
        self._stored[data["id"]] = _StoredMeeting(tenant, organizer, data)
        self._by_external[key] = data["id"]
        return self._render(request, data, 201)

    def _meeting_item(
        self, request: httpx.Request, meeting_id: str, stored: _StoredMeeting, body: Any
    ) -> httpx.Response:
        if request.method == "GET":
            data = json.loads(json.dumps(stored.data))
            tamper = self._take(request, {"tamper"})
            if tamper is not None:
                _merge(data, json.loads(json.dumps(tamper.overrides)))
            return self._render(request, data, 200)
        if request.method == "DELETE":
            del self._stored[meeting_id]
            key = (stored.tenant_id, stored.organizer_oid, stored.data["externalId"])
            self._by_external.pop(key, None)
            return httpx.Response(204)
        if request.method == "PATCH":
            if isinstance(body, dict):
                body = {k: v for k, v in body.items() if not k.startswith("@odata.")}
            problem = self._patch_problem(request, body)
            if problem is not None:
                return graph_error_response(400, "BadRequest", problem, request)
            _merge(stored.data, body)
            return self._render(request, stored.data, 200)
        return graph_error_response(405, "MethodNotAllowed", "Method not allowed.", request)

    def _patch_problem(self, request: httpx.Request, body: Any) -> str | None:
        if not isinstance(body, dict) or not body:
            return "Empty or invalid body."
        unknown = set(body) - _PATCHABLE
        if unknown:
            return "Property cannot be updated."
        if ("startDateTime" in body) != ("endDateTime" in body):
            return "Both startDateTime and endDateTime are required."
        prefer = PREFER in request.headers.get("Prefer", "")
        flat = dict(body)
        lobby = body.get("lobbyBypassSettings")
        if lobby is not None:
            if not isinstance(lobby, dict):
                return "Invalid lobbyBypassSettings."
            flat["lobbyBypassSettings.scope"] = lobby.get("scope", "organizer")
            dial = lobby.get("isDialInBypassEnabled", False)
            if not isinstance(dial, bool):
                return "Invalid isDialInBypassEnabled."
        for name, allowed in _ENUMS.items():
            if name in flat and flat[name] not in allowed:
                return "Invalid enum value."
            if name in flat and flat[name] in _EVOLVABLE.get(name, set()) and not prefer:
                return "Evolvable enum member requires Prefer: include-unknown-enum-members."
        if any(name in body and not isinstance(body[name], bool) for name in _BOOLS):
            return "Invalid boolean."
        return None

    def _attendance(self, request: httpx.Request, meeting_id: str, rest: str) -> httpx.Response:
        if rest == "/getVirtualAppointmentJoinWebUrl" and request.method == "GET":
            thread = self._stored[meeting_id].data["chatInfo"]["threadId"]
            va_url = (
                "https://visit.teams.microsoft.com/webrtc-svc/api/route"
                f"?tid={self._stored[meeting_id].tenant_id}&convId={quote(thread, safe='')}"
            )
            return httpx.Response(200, json={"value": va_url})
        room = self._rooms.get(meeting_id)
        reports = room.attendance_reports() if room is not None else []
        if rest == "/attendanceReports" and request.method == "GET":
            value = [{k: v for k, v in r.items() if k != "attendanceRecords"} for r in reports]
            return httpx.Response(200, json={"value": value})
        match = re.match(r"^/attendanceReports/([^/]+)/attendanceRecords$", rest)
        report = next((r for r in reports if match and r["id"] == match.group(1)), None)
        if report is None or request.method != "GET":
            return graph_error_response(404, "NotFound", "Report not found.", request)
        records = report["attendanceRecords"]
        skip = int(request.url.params.get("$skiptoken", "0") or 0)
        page = records[skip : skip + self.page_size]
        out: dict[str, Any] = {"value": page}
        if skip + self.page_size < len(records):
            out["@odata.nextLink"] = str(
                request.url.copy_with(params={"$skiptoken": str(skip + self.page_size)})
            )
        return httpx.Response(200, json=out)

    # -- ASGI ---------------------------------------------------------------------------------------

    def asgi_app(self) -> Callable[[Any, Any, Any], Awaitable[None]]:
        """This fake as an ASGI app (serve it on 127.0.0.1, e.g. ``testing.loopback``). A scripted
        lost response becomes a 504 there, after the fake has acted (the client cannot tell)."""
        from teams_ehr.testing.asgi import asgi_app_from_handler

        async def handle(request: httpx.Request) -> httpx.Response:
            try:
                return await self.handler(request)
            except httpx.TimeoutException:
                code, message = _STATUS_CODES[504]
                return graph_error_response(504, code, message, request)

        return asgi_app_from_handler(handle)

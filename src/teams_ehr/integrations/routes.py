"""The framework-free route table both adapters mount (DESIGN.md rule 11: adapters stay thin).

An adapter turns its framework's request into an :class:`IncomingRequest`, calls
:func:`handle`, and writes the :class:`~teams_ehr.web.WebResponse` back. All flow logic, error
mapping and session rules live here and below, once.

The browser session is an opaque random cookie (``__Host-`` prefixed on https): it binds
``state`` to the browser (SMART app-launch: state "tied to the user's current session") and
carries nothing else. Graph's webhook routes read the raw body and the query (the validation
handshake sends ``validationToken`` in the query of a POST); the roster route streams.
"""

from __future__ import annotations

import json
import secrets
from contextlib import AbstractContextManager, nullcontext

from teams_ehr._redact import get_logger
from teams_ehr.app import MICROSOFT_CALLBACK_PATH, TeamsEhr
from teams_ehr.attendance.handshake import HandshakeKind
from teams_ehr.attendance.runtime import LIFECYCLE_PATH, NOTIFICATIONS_PATH
from teams_ehr.attendance.visit_state import visit_request_scope
from teams_ehr.errors import (
    ContextLinkError,
    JoinLinkInvalidError,
    LaunchParameterError,
    SecurityError,
    TeamsEhrError,
    VisitNotReadyError,
)
from teams_ehr.integrations.admin_routes import ADMIN_ROUTES
from teams_ehr.integrations.spec import Handler, IncomingRequest, RouteSpec
from teams_ehr.metrics import observe_launch
from teams_ehr.orgs.models import EnvironmentName
from teams_ehr.visit_records import LaunchRole
from teams_ehr.web import WebResponse, WebStream, error_response

__all__ = [
    "ROUTES",
    "SESSION_MAX_AGE",
    "IncomingRequest",
    "RouteSpec",
    "browser_session",
    "handle",
    "session_cookie_name",
]

_log = get_logger(__name__)
_AUDITED_AT_SOURCE = (JoinLinkInvalidError, ContextLinkError)
# E6: the launch-path routes counted by stage and outcome (teams_ehr.metrics).
_STAGES = {
    "provider_launch": "begin",
    "patient_launch": "begin",
    "ehr_callback": "ehr_callback",
    "microsoft_callback": "microsoft_signin",
    "join": "patient_join",
}


def _observed(route: str) -> AbstractContextManager[None]:
    stage = _STAGES.get(route)
    return observe_launch(stage) if stage is not None else nullcontext()


_ENVIRONMENTS: tuple[EnvironmentName, ...] = ("test", "production")


def _environment(request: IncomingRequest) -> EnvironmentName:
    value = request.path_params.get("environment", "")
    for name in _ENVIRONMENTS:
        if value == name:
            return name
    raise LaunchParameterError("unknown environment in launch URL", reason="bad_environment")


def _launch(role: LaunchRole) -> Handler:
    """``/launch`` (clinician) and ``/patient`` (portal): the same EHR launch, another role."""

    async def handler(app: TeamsEhr, request: IncomingRequest) -> WebResponse:
        return await app.visits.begin_launch(
            request.path_params["org_id"], _environment(request), request.params,
            session_id=request.session_id, role=role,
        )  # fmt: skip

    return handler


async def _ehr_callback(app: TeamsEhr, request: IncomingRequest) -> WebResponse:
    return await app.visits.complete_ehr_callback(request.params, session_id=request.session_id)


async def _microsoft_callback(app: TeamsEhr, request: IncomingRequest) -> WebResponse:
    return await app.visits.complete_microsoft_signin(request.params, session_id=request.session_id)


async def _join(app: TeamsEhr, request: IncomingRequest) -> WebResponse:
    return await app.visits.join(request.path_params["token"], client_key=request.client_key)


async def _jwks(app: TeamsEhr, request: IncomingRequest) -> WebResponse:
    body = json.dumps(app.public_jwks()).encode("utf-8")
    headers = (("Cache-Control", "public, max-age=3600"), ("X-Content-Type-Options", "nosniff"))
    return WebResponse(200, body, "application/jwk-set+json", headers)


async def _graph(app: TeamsEhr, request: IncomingRequest, kind: HandshakeKind) -> WebResponse:
    if app.attendance is None:
        return WebResponse(404, b"not found")
    result = await app.attendance.webhook(kind, request.query, request.body)
    return WebResponse(result.status, result.body, result.content_type, result.headers)


async def _graph_notifications(app: TeamsEhr, request: IncomingRequest) -> WebResponse:
    return await _graph(app, request, "notification")


async def _graph_lifecycle(app: TeamsEhr, request: IncomingRequest) -> WebResponse:
    return await _graph(app, request, "lifecycle")


async def _roster(app: TeamsEhr, request: IncomingRequest) -> WebStream:
    if app.attendance is None:
        raise VisitNotReadyError("attendance is not enabled")
    chunks = await app.attendance.roster(
        request.path_params["org_id"], request.path_params["external_id"], request.session_id
    )
    return WebStream(chunks)


VISIT_ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec(
        "provider_launch", "/launch/{org_id}/{environment}", ("GET", "POST"), _launch("provider")
    ),
    RouteSpec(
        "patient_launch", "/patient/{org_id}/{environment}", ("GET", "POST"), _launch("patient")
    ),
    RouteSpec("ehr_callback", "/callback", ("GET",), _ehr_callback),
    RouteSpec("microsoft_callback", MICROSOFT_CALLBACK_PATH, ("GET",), _microsoft_callback),
    RouteSpec("join", "/j/{token}", ("GET",), _join),
    RouteSpec("jwks", "/.well-known/jwks.json", ("GET",), _jwks),
    RouteSpec(
        "graph_notifications", NOTIFICATIONS_PATH, ("GET", "POST"), _graph_notifications, True
    ),
    RouteSpec("graph_lifecycle", LIFECYCLE_PATH, ("GET", "POST"), _graph_lifecycle, True),
    RouteSpec("roster", "/visits/{org_id}/{external_id}/roster", ("GET",), _roster),
)
ROUTES: tuple[RouteSpec, ...] = (*VISIT_ROUTES, *ADMIN_ROUTES)
_BY_NAME = {route.name: route for route in ROUTES}


async def handle(app: TeamsEhr, request: IncomingRequest) -> WebResponse | WebStream:
    """Run the route; a :class:`TeamsEhrError` becomes its generic error page (never its text)."""
    route = _BY_NAME[request.route]
    try:
        with visit_request_scope(request.session_id), _observed(route.name):
            return await route.handler(app, request)
    except TeamsEhrError as exc:
        # One security_event per refusal (T32); join and context links write theirs at source.
        audited = isinstance(exc, SecurityError) and not isinstance(exc, _AUDITED_AT_SOURCE)
        extra = {"security_event": exc.reason} if audited else None
        _log.warning("%s refused: %s (%s)", route.name, type(exc).__name__, exc.reason, extra=extra)
        return error_response(exc)


def session_cookie_name(*, secure: bool) -> str:
    """``__Host-`` cookies must be Secure, path ``/`` and host-only (RFC 6265bis §4.1.3.2)."""
    return "__Host-teams-ehr-session" if secure else "teams-ehr-session"


def browser_session(cookie_value: str | None) -> tuple[str, bool]:
    """The session id from the cookie, or a new one; the flag says the cookie must be set."""
    if cookie_value is not None and 32 <= len(cookie_value) <= 64 and cookie_value.isascii():
        return cookie_value, False
    return secrets.token_urlsafe(32), True


SESSION_MAX_AGE = 8 * 3600

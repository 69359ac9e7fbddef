"""The framework-free route table both adapters mount (docs/reference/integrations.md).

An adapter turns its framework's request into an :class:`IncomingRequest`, calls
:func:`handle`, and writes the :class:`~teams_ehr.web.WebResponse` back. All flow logic, error
mapping and session rules live here and below, once.

The browser session is an opaque random cookie (``__Host-`` prefixed on https): it binds
``state`` to the browser (SMART app-launch: state "tied to the user's current session") and
carries nothing else. Graph's webhook routes read the raw body and the query (the validation
handshake sends ``validationToken`` in the query of a POST); the roster route streams.

:func:`mounted_routes` is what both adapters mount: a subset of :data:`ROUTE_GROUPS` under a
prefix that ``app_base_url`` must end with, since every URL the library generates starts with it.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
from collections.abc import Collection, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from teams_ehr._redact import get_logger, install_redaction
from teams_ehr.app import MICROSOFT_CALLBACK_PATH, TeamsEhr
from teams_ehr.errors import (
    ApprovalRequiredError,
    ConfigurationError,
    ContextLinkError,
    JoinLinkInvalidError,
    LaunchParameterError,
    SecurityError,
    TeamsEhrError,
    UntrustedIssuerError,
    UsageError,
    VisitNotReadyError,
)
from teams_ehr.integrations.refusals import refusal_summary
from teams_ehr.integrations.spec import Handler, IncomingRequest, RouteSpec
from teams_ehr.web import WebResponse, WebStream, error_response, not_found_response, with_banner

if TYPE_CHECKING:
    from teams_ehr.attendance.handshake import HandshakeKind
    from teams_ehr.config import TeamsEhrSettings
    from teams_ehr.orgs.models import EnvironmentName

    # Built on first use (PEP 562 ``__getattr__`` below): the webhook paths and the admin
    # console's routes live in modules a host need not load to import this one.
    VISIT_ROUTES: tuple[RouteSpec, ...]
    JWKS_ROUTES: tuple[RouteSpec, ...]
    WEBHOOK_ROUTES: tuple[RouteSpec, ...]
    ROSTER_ROUTES: tuple[RouteSpec, ...]
    ROUTE_GROUPS: Mapping[str, tuple[RouteSpec, ...]]
    ROUTES: tuple[RouteSpec, ...]

__all__ = [
    "ROUTES",
    "ROUTE_GROUPS",
    "SANDBOX_ROUTES",
    "SESSION_MAX_AGE",
    "IncomingRequest",
    "MountedRoutes",
    "RouteSpec",
    "browser_session",
    "handle",
    "mounted_routes",
    "not_found",
    "session_cookie_name",
]

_log = get_logger(__name__)
_AUDITED_AT_SOURCE = (JoinLinkInvalidError, ContextLinkError)
# requirement E6: the launch-path routes counted by stage and outcome (teams_ehr.metrics).
_STAGES = {
    "provider_launch": "begin",
    "patient_launch": "begin",
    "ehr_callback": "ehr_callback",
    "microsoft_callback": "microsoft_signin",
    "join": "patient_join",
}


def _observed(route: str) -> AbstractContextManager[None]:
    stage = _STAGES.get(route)
    if stage is None:
        return nullcontext()
    from teams_ehr.metrics import observe_launch

    return observe_launch(stage)


_ENVIRONMENTS: tuple[EnvironmentName, ...] = ("test", "production")


def _environment(request: IncomingRequest) -> EnvironmentName:
    value = request.path_params.get("environment", "")
    for name in _ENVIRONMENTS:
        if value == name:
            return name
    raise LaunchParameterError("unknown environment in launch URL", reason="bad_environment")


async def _unapproved_reason(app: TeamsEhr, request: IncomingRequest) -> str | None:
    """Why a refused launch came from the organization's own EHR (its ``iss`` is the configured
    FHIR base) while that environment is not approved, edited since, or suspended:
    ``org_not_approved`` or ``org_suspended``, so the person is told so and whom to ask. Any
    other ``iss`` keeps the generic page (threat T27: nothing about an organization is shown
    to a stranger)."""
    from teams_ehr.orgs.models import config_hash
    from teams_ehr.smart.canonical import canonical_fhir_base

    name = _environment(request)
    org = await app.registry.get(request.path_params["org_id"])
    env = org.environment(name) if org is not None else None
    if org is None or env is None:
        return None
    try:
        iss = canonical_fhir_base(request.params.get("iss", ""), allow_http=env.config.allow_http)
    except LaunchParameterError:
        return None
    if iss != env.config.fhir_base:
        return None
    if env.state == "suspended":
        return "org_suspended"
    current = env.state == "active" and env.approved_config_hash == config_hash(org, name)
    return None if current else "org_not_approved"


async def _launch(app: TeamsEhr, request: IncomingRequest, role: str) -> WebResponse:
    flow = app.visits.provider if role == "provider" else app.visits.patient
    try:
        return await flow.begin_launch(
            request.path_params["org_id"],
            _environment(request),
            request.params,
            session_id=request.session_id,
        )
    except UntrustedIssuerError:
        reason = await _unapproved_reason(app, request)
        if reason is not None:
            raise ApprovalRequiredError(
                "the organization environment is not approved and active", reason=reason
            ) from None
        raise


async def _provider_launch(app: TeamsEhr, request: IncomingRequest) -> WebResponse:
    return await _launch(app, request, "provider")


async def _patient_launch(app: TeamsEhr, request: IncomingRequest) -> WebResponse:
    return await _launch(app, request, "patient")


async def _ehr_callback(app: TeamsEhr, request: IncomingRequest) -> WebResponse:
    return await app.visits.callback.complete(request.params, session_id=request.session_id)


async def _microsoft_callback(app: TeamsEhr, request: IncomingRequest) -> WebResponse:
    return await app.visits.binding.complete_microsoft_signin(
        request.params, session_id=request.session_id
    )


async def _join(app: TeamsEhr, request: IncomingRequest) -> WebResponse:
    return await app.visits.patient.join(
        request.path_params["token"], client_key=request.client_key
    )


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


@functools.cache
def _tables() -> dict[str, Any]:
    """The route tables, built once on first use (they name the attendance webhook paths and
    the admin console's routes, which load their modules)."""
    from teams_ehr.attendance.runtime import LIFECYCLE_PATH, NOTIFICATIONS_PATH
    from teams_ehr.integrations.admin_routes import ADMIN_ROUTES

    visit_routes: tuple[RouteSpec, ...] = (
        RouteSpec(
            "provider_launch", "/launch/{org_id}/{environment}", ("GET", "POST"), _provider_launch
        ),
        RouteSpec(
            "patient_launch", "/patient/{org_id}/{environment}", ("GET", "POST"), _patient_launch
        ),
        RouteSpec("ehr_callback", "/callback", ("GET",), _ehr_callback),
        RouteSpec("microsoft_callback", MICROSOFT_CALLBACK_PATH, ("GET",), _microsoft_callback),
        RouteSpec("join", "/j/{token}", ("GET",), _join),
    )
    jwks_routes = (RouteSpec("jwks", "/.well-known/jwks.json", ("GET",), _jwks),)
    webhook_routes = (
        RouteSpec(
            "graph_notifications", NOTIFICATIONS_PATH, ("GET", "POST"), _graph_notifications, True
        ),
        RouteSpec("graph_lifecycle", LIFECYCLE_PATH, ("GET", "POST"), _graph_lifecycle, True),
    )
    roster_routes = (
        RouteSpec("roster", "/visits/{org_id}/{external_id}/roster", ("GET",), _roster),
    )
    groups: Mapping[str, tuple[RouteSpec, ...]] = MappingProxyType(
        {
            "visits": visit_routes,
            "jwks": jwks_routes,
            "webhooks": webhook_routes,
            "roster": roster_routes,
            "admin": ADMIN_ROUTES,
        }
    )
    routes = tuple(spec for group in groups.values() for spec in group)
    return {
        "VISIT_ROUTES": visit_routes,
        "JWKS_ROUTES": jwks_routes,
        "WEBHOOK_ROUTES": webhook_routes,
        "ROSTER_ROUTES": roster_routes,
        # The groups a host mounts with ``include=``: the clinician's and patient's launches
        # with both callbacks and join links; the JWKS URL; Graph's webhooks; the live roster;
        # the admin console.
        "ROUTE_GROUPS": groups,
        "ROUTES": routes,
        "_BY_NAME": {route.name: route for route in (*routes, *SANDBOX_ROUTES)},
    }


def _table(name: str) -> Any:
    """A route table as the module exposes it (so a test may replace it with setattr)."""
    value = globals().get(name)
    return _tables()[name] if value is None else value


def __getattr__(name: str) -> Any:
    """``ROUTE_GROUPS``, ``ROUTES`` and the per-group tables, built on first access (PEP 562)."""
    if name.startswith("_") or name not in _tables():
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = _tables()[name]
    globals()[name] = value
    return value


def _sandbox_page(method: Literal["GET", "POST"], path: str) -> Handler:
    """A page of the Microsoft sandbox (``settings.microsoft_sandbox``) at ``path`` below
    :data:`~teams_ehr.microsoft_sandbox.SANDBOX_PATH`; 404 when the mode is off."""

    async def page(app: TeamsEhr, request: IncomingRequest) -> WebResponse:
        from teams_ehr.microsoft_sandbox import MicrosoftSandbox

        sandbox = app.microsoft_sandbox
        if not isinstance(sandbox, MicrosoftSandbox):
            return WebResponse(404, b"not found")
        return await sandbox.serve(method, path.format(**request.path_params), request)

    return page


def _sandbox_route(name: str, method: Literal["GET", "POST"], path: str) -> RouteSpec:
    return RouteSpec(name, "/_sandbox/microsoft" + path, (method,), _sandbox_page(method, path))


_ENTRA_AUTHORIZE = "/entra/{tenant}/oauth2/v2.0/authorize"
_ROOM = "/teams/rooms/{handle}"
SANDBOX_ROUTES: tuple[RouteSpec, ...] = (
    _sandbox_route("sandbox_entra_signin", "GET", _ENTRA_AUTHORIZE),
    _sandbox_route("sandbox_entra_submit", "POST", _ENTRA_AUTHORIZE),
    _sandbox_route("sandbox_teams_join_url", "GET", "/teams/l/meetup-join/{thread}/{part}"),
    _sandbox_route("sandbox_teams_prejoin", "GET", _ROOM),
    _sandbox_route("sandbox_teams_join", "POST", _ROOM + "/join"),
    _sandbox_route("sandbox_teams_state", "GET", _ROOM + "/state.json"),
    _sandbox_route("sandbox_teams_room", "GET", _ROOM + "/p/{me}"),
    _sandbox_route("sandbox_teams_panel", "GET", _ROOM + "/p/{me}/panel"),
    _sandbox_route("sandbox_teams_act", "POST", _ROOM + "/p/{me}/{action}"),
)
"""Microsoft's browser pages in sandbox mode (:mod:`teams_ehr.microsoft_sandbox`): mounted by
:func:`mounted_routes` with any ``include`` when ``settings.microsoft_sandbox`` is on, never
otherwise."""
_PREFIX = re.compile(r"^(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*$")


@dataclass(frozen=True, slots=True)
class MountedRoutes:
    """What an adapter mounts: the normalized ``prefix`` and the selected ``routes``."""

    prefix: str
    routes: tuple[RouteSpec, ...]


def mounted_routes(
    settings: TeamsEhrSettings, *, prefix: str = "", include: Collection[str] | None = None
) -> MountedRoutes:
    """The routes of the ``include`` groups (all of :data:`ROUTE_GROUPS` by default) under
    ``prefix``, checked against the settings.

    Every URL the library generates (the SMART ``redirect_uri`` default, the Microsoft sign-in
    redirect, Graph's ``notificationUrl``, join links, the console's links and callback) is
    ``app_base_url`` + a route path, so ``app_base_url`` is where the routes are served as
    browsers, EHRs and Graph see them, prefix included. Its path must therefore end with
    ``prefix`` (it may be longer, behind a proxy that strips a path); otherwise the mount is
    refused with :class:`~teams_ehr.errors.ConfigurationError` (``mount_prefix_mismatch``)
    rather than serving redirect URIs that 404. Mounting installs log redaction
    (:func:`teams_ehr.install_redaction`) before the host's access log records any path.
    """
    install_redaction()  # the host's access log records paths: /j/<token> is a join link
    route_groups: Mapping[str, tuple[RouteSpec, ...]] = _table("ROUTE_GROUPS")
    if isinstance(include, str):
        raise UsageError(
            f"include takes a set of group names, e.g. {{{include!r}}}; known groups: "
            + ", ".join(route_groups),
            reason="unknown_route_group",
        )
    groups = tuple(route_groups) if include is None else tuple(include)
    unknown = sorted(set(groups) - route_groups.keys())
    if unknown or not groups:
        named = ", ".join(unknown) if unknown else "no group"
        raise UsageError(
            f"include names {named}; known groups: {', '.join(route_groups)}",
            reason="unknown_route_group",
        )
    clean = prefix.rstrip("/")
    if not _PREFIX.match(clean):
        raise UsageError(
            f"mount prefix {prefix!r} must be '' or a path like '/ehr' (no placeholders, query "
            "or fragment)",
            reason="bad_mount_prefix",
        )
    base = settings.app_base_url
    if clean and not urlsplit(base).path.endswith(clean):
        raise ConfigurationError(
            f"the routes are mounted under {clean!r} but app_base_url ({base}) does not end "
            f"with it, so the redirect URIs, Graph's notificationUrl and join links it builds "
            f"would miss the mount: set app_base_url (TEAMS_EHR__APP_BASE_URL) to "
            f"'{base}{clean}', or mount at the path app_base_url names",
            reason="mount_prefix_mismatch",
        )
    if settings.attendance.enabled and "webhooks" not in groups:
        from teams_ehr.attendance.runtime import NOTIFICATIONS_PATH

        _log.warning(
            "attendance is enabled but this host does not mount the 'webhooks' group: Graph's "
            "notificationUrl (%s) must reach an instance that does",
            base + NOTIFICATIONS_PATH,
        )
    routes = tuple(spec for name in route_groups if name in groups for spec in route_groups[name])
    if settings.microsoft_sandbox:
        routes += SANDBOX_ROUTES
    return MountedRoutes(clean, routes)


async def handle(app: TeamsEhr, request: IncomingRequest) -> WebResponse | WebStream:
    """Run the route; a :class:`TeamsEhrError` becomes its generic error page (never its text)."""
    from teams_ehr.attendance.visit_state import visit_request_scope

    route = _tables()["_BY_NAME"][request.route]
    result: WebResponse | WebStream
    try:
        with visit_request_scope(request.session_id), _observed(route.name):
            result = _under_mount(await route.handler(app, request), app.settings.app_base_url)
    except TeamsEhrError as exc:
        # One security_event per refusal (threat T32); join and context links log theirs at source.
        audited = isinstance(exc, SecurityError) and not isinstance(exc, _AUDITED_AT_SOURCE)
        extra = {"security_event": exc.reason} if audited else None
        _log.warning("%s refused: %s", route.name, refusal_summary(exc), extra=extra)
        result = error_response(exc)
    return _in_sandbox(app, result) if app.settings.microsoft_sandbox else result


def _in_sandbox(app: TeamsEhr, result: WebResponse | WebStream) -> WebResponse | WebStream:
    """Microsoft sandbox mode: a redirect to Microsoft's sign-in or a Teams join URL lands on
    this host's sandbox page for it, and every page carries the sandbox banner."""
    from teams_ehr.microsoft_sandbox import MicrosoftSandbox

    sandbox = app.microsoft_sandbox
    if not isinstance(result, WebResponse) or not isinstance(sandbox, MicrosoftSandbox):
        return result
    location = result.location
    mapped = None if location is None else sandbox.browser_location(location)
    if mapped is not None and mapped != location:
        headers = tuple(
            (name, mapped if name.lower() == "location" else value)
            for name, value in result.headers
        )
        result = replace(result, headers=headers)
    return with_banner(result)


def _under_mount(result: WebResponse | WebStream, app_base_url: str) -> WebResponse | WebStream:
    """A root-relative ``Location`` (the console's own pages) is relative to where the routes
    are served: the path of ``app_base_url`` goes in front of it."""
    base = urlsplit(app_base_url).path
    location = result.location if isinstance(result, WebResponse) else None
    if not base or location is None or not location.startswith("/") or location[:2] == "//":
        return result
    headers = tuple(
        (name, base + value if name.lower() == "location" else value)
        for name, value in result.headers
    )
    return replace(result, headers=headers)


def not_found(path: str, accept: str | None) -> WebResponse:
    """What both adapters answer for a path no route matches: an HTML page for a browser
    (``Accept: text/html``), JSON for an API client; under the console, a link back to it."""
    from teams_ehr.orgs.console import ADMIN_PATH

    at = path.find(ADMIN_PATH + "/")
    back = (path[:at] + ADMIN_PATH, "Go to the admin console") if at >= 0 else None
    return not_found_response(accept, back=back)


def session_cookie_name(*, secure: bool) -> str:
    """``__Host-`` cookies must be Secure, path ``/`` and host-only (RFC 6265bis §4.1.3.2)."""
    return "__Host-teams-ehr-session" if secure else "teams-ehr-session"


def browser_session(cookie_value: str | None) -> tuple[str, bool]:
    """The session id from the cookie, or a new one; the flag says the cookie must be set."""
    if cookie_value is not None and 32 <= len(cookie_value) <= 64 and cookie_value.isascii():
        return cookie_value, False
    return secrets.token_urlsafe(32), True


SESSION_MAX_AGE = 8 * 3600

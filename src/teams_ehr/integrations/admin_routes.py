"""The admin console's HTTP edge: its route table and handlers (request in, service call,
response out).

:data:`ADMIN_ROUTES` are part of :data:`~teams_ehr.integrations.routes.ROUTES`, so both adapters
mount them (docs/reference/integrations.md). Each handler reads the request, calls
:class:`~teams_ehr.orgs.console.AdminService` and returns a page of
:mod:`teams_ehr.integrations.admin_pages` or JSON; the console's rules live in the service, the
forms' validation in :mod:`teams_ehr.integrations.admin_forms`. Mutations are ``POST`` only and
carry the session's CSRF token (``csrf`` form field); a form that fails validation comes back
with status 400 and a message on every field concerned (WCAG 2.2 SC 3.3.1, 3.3.3;
docs/guides/ehr-analyst.md walks the journey). The runtime builds the console from
``settings.admin``; :func:`install_admin` replaces it with another policy (call it on every
instance: the EHR callback may reach any of them).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from pydantic import ValidationError

from teams_ehr._redact import get_logger
from teams_ehr.app import TeamsEhr
from teams_ehr.errors import (
    ConfigurationError,
    CrossTenantDeniedError,
    LaunchParameterError,
    StorageConflictError,
    TeamsEhrError,
)
from teams_ehr.integrations import admin_pages as pages
from teams_ehr.integrations.admin_forms import (
    ENV_FIELDS,
    FORM,
    INVALID,
    ORG_FIELDS,
    REQUIRED,
    REQUIRED_TENANT,
    UNKNOWN_TENANT,
    FormState,
    config_from_form,
    configuration_errors,
    field_errors,
    is_guid,
    kept,
    org_errors,
)
from teams_ehr.integrations.refusals import refusal_summary
from teams_ehr.integrations.spec import IncomingRequest, RouteSpec
from teams_ehr.orgs.console import (
    ADMIN_MICROSOFT_CALLBACK_PATH,
    ADMIN_PATH,
    AdminPolicy,
    AdminService,
)
from teams_ehr.orgs.models import ENVIRONMENT_NAMES, EnvironmentName
from teams_ehr.orgs.models import config_hash as hash_of
from teams_ehr.store.protocol import AuditEntry
from teams_ehr.web import WebResponse, error_page, error_response, redirect

__all__ = ["ADMIN_ROUTES", "admin_service", "install_admin"]

_log = get_logger(__name__)


def install_admin(app: TeamsEhr, *, policy: AdminPolicy | None = None) -> AdminService:
    """Replace the runtime's console with one under ``policy`` (the runtime builds one from
    ``settings.admin`` at start-up; call this on every instance if you override it)."""
    service = AdminService(
        store=app.store,
        registry=app.registry,
        visits=app.visits.approval,
        entra=partial(app.services.entra_config_for, callback_path=ADMIN_MICROSOFT_CALLBACK_PATH),
        jwks=app.jwks,
        discovery=app.discovery,
        http=app.http,
        app_base_url=app.settings.app_base_url,
        policy=policy,
        clock=app.clock,
    )
    app.admin = service
    app.visits.approval.on_signin = service.on_approval_signin
    return service


def admin_service(app: TeamsEhr) -> AdminService:
    """The console of an entered runtime."""
    return app.admin


def _json(document: Any, status: int = 200) -> WebResponse:
    body = json.dumps(document, sort_keys=True, default=str).encode("utf-8")
    return WebResponse(status, body, "application/json")


def _environment(request: IncomingRequest, value: str | None = None) -> EnvironmentName:
    wanted = value if value is not None else request.path_params.get("environment", "")
    for name in ENVIRONMENT_NAMES:
        if wanted == name:
            return name
    raise LaunchParameterError("unknown environment", reason="bad_environment")


def _refused_form(exc: ConfigurationError) -> dict[str, str]:
    _log.warning("admin form refused: %s", exc.reason)
    return configuration_errors(exc)


AdminHandler = Callable[[AdminService, IncomingRequest], Awaitable[WebResponse]]


def _route(handler: AdminHandler) -> Callable[[TeamsEhr, IncomingRequest], Awaitable[WebResponse]]:
    """Adapt an admin handler to a route handler with the console's error mapping: each error
    page has a way back to the console."""

    async def run(app: TeamsEhr, request: IncomingRequest) -> WebResponse:
        service = admin_service(app)
        back = (pages.console_path(service), "Back to the admin console")
        try:
            return await handler(service, request)
        except (ValidationError, ConfigurationError) as exc:
            reason = exc.reason if isinstance(exc, ConfigurationError) else "invalid form"
            _log.warning("%s refused: %s", request.route, reason)
            lines = ("The request could not be accepted. Check the values and try again.",)
            return error_page("The request could not be accepted", lines, status=400, back=back)
        except StorageConflictError as exc:
            _log.warning("%s refused: %s", request.route, exc.reason)
            conflict = (
                "Someone else saved a change to this organization first, so nothing was saved.",
                "Open the organization again to see the latest values, then repeat your change.",
            )
            return error_page("Changed by someone else", conflict, status=409, back=back)
        except TeamsEhrError as exc:
            _log.warning("%s refused: %s", request.route, refusal_summary(exc))
            return error_response(exc, back=back)

    return run


# -- sign-in ---------------------------------------------------------------------------------


async def _signin(service: AdminService, request: IncomingRequest) -> WebResponse:
    tenant = request.params.get("tenant", "").strip()
    if not is_guid(tenant):
        message = REQUIRED_TENANT if not tenant else INVALID["tenant"]
        return pages.signin_page(service, error=message, status=400)
    try:
        return await service.begin_signin(tenant, session_id=request.session_id)
    except CrossTenantDeniedError as exc:
        _log.warning("%s refused: %s", request.route, exc.reason)
        return pages.signin_page(service, error=UNKNOWN_TENANT, status=403)


async def _callback(service: AdminService, request: IncomingRequest) -> WebResponse:
    return await service.complete_signin(request.params, session_id=request.session_id)


async def _signout_page(service: AdminService, request: IncomingRequest) -> WebResponse:
    session = await service.session(request.session_id)
    if session is None:
        return pages.signin_page(service)
    return pages.signout_page(service, session)


async def _signout(service: AdminService, request: IncomingRequest) -> WebResponse:
    await service.sign_out(request.session_id, request.params.get("csrf"))
    return redirect(ADMIN_PATH)


# -- organizations ---------------------------------------------------------------------------


async def _home(
    service: AdminService, request: IncomingRequest, create: FormState | None = None
) -> WebResponse:
    session = await service.session(request.session_id)
    if session is None:
        tenant = request.params.get("tenant", "").strip()  # a colleague's sign-in link
        return pages.signin_page(service, tenant=tenant if is_guid(tenant) else "")
    orgs = await service.organizations(request.session_id)
    return pages.home_page(service, session, orgs, create)


async def _create(service: AdminService, request: IncomingRequest) -> WebResponse:
    params = request.params
    errors = {n: REQUIRED[n] for n in ORG_FIELDS if not params.get(n, "").strip()}
    errors |= org_errors(params, ORG_FIELDS)
    config, env_errors = config_from_form(params, service)
    errors.update(env_errors)
    environment = _environment(request, params.get("environment"))
    if not errors and config is not None:
        try:
            org = await service.create(
                request.session_id,
                params.get("csrf"),
                org_id=params.get("org_id", "").strip(),
                display_name=params.get("display_name", "").strip(),
                approver_oid=params.get("approver_oid", "").strip(),
                environments={environment: config},
            )
        except ValidationError as exc:
            errors = field_errors(exc, (*ORG_FIELDS, *ENV_FIELDS))
        except ConfigurationError as exc:
            errors = _refused_form(exc)
        else:
            return redirect(f"{ADMIN_PATH}/orgs/{org.org_id}")
    return await _home(service, request, FormState(kept(params, errors), errors))


async def _organization_page(
    service: AdminService,
    request: IncomingRequest,
    edit: tuple[EnvironmentName, FormState] | None = None,
) -> WebResponse:
    session = await service.session(request.session_id)
    if session is None:
        return pages.signin_page(service)
    org = await service.organization(request.session_id, request.path_params["org_id"])
    pending: dict[EnvironmentName, pages.Pending] = {}
    for name in ENVIRONMENT_NAMES:
        env = org.environment(name)
        if env is not None and env.state == "pending_approval":
            pending[name] = await service.pending_approval(request.session_id, org.org_id, name)
    return pages.organization_page(service, session, org, pending, edit)


async def _edit(service: AdminService, request: IncomingRequest) -> WebResponse:
    """Save an edit; every field sent must be valid, and a form with nothing to save is
    refused with a message (status 400, nothing changed, nothing audited)."""
    params = request.params
    try:
        version = int(params.get("expected_version", ""))
    except ValueError:
        raise LaunchParameterError("expected_version is required", reason="bad_form") from None
    org = await service.organization(request.session_id, request.path_params["org_id"])
    name = _environment(request, params.get("environment", "test"))
    errors = org_errors(params, ("display_name", "approver_oid"))
    environments = None
    if any(params.get(key, "").strip() for key in ("fhir_base", "client_id")) or (
        "fhir_base" in params and "client_id" in params
    ):
        env = org.environment(name)
        config, env_errors = config_from_form(params, service, env.config if env else None)
        errors.update(env_errors)
        if config is not None:
            environments = {name: config}
    display_name = params.get("display_name", "").strip() or None
    approver_oid = params.get("approver_oid", "").strip() or None
    if not errors and environments is None and display_name is None and approver_oid is None:
        errors[FORM] = "Nothing to save: fill in the fields you want to change."
    if not errors:
        try:
            saved = await service.update(
                request.session_id,
                params.get("csrf"),
                org.org_id,
                expected_version=version,
                display_name=display_name,
                approver_oid=approver_oid,
                environments=environments,
            )
        except ValidationError as exc:
            errors = field_errors(exc, (*ORG_FIELDS, *ENV_FIELDS))
        except ConfigurationError as exc:
            errors = _refused_form(exc)
        else:
            return redirect(f"{ADMIN_PATH}/orgs/{saved.org_id}")
    state = FormState(kept(params, errors), errors)
    return await _organization_page(service, request, (name, state))


async def _transition(service: AdminService, request: IncomingRequest) -> WebResponse:
    org_id = request.path_params["org_id"]
    await service.transition(
        request.session_id,
        request.params.get("csrf"),
        org_id,
        _environment(request),
        request.params.get("action", ""),
    )
    return redirect(f"{ADMIN_PATH}/orgs/{org_id}")


# -- approval --------------------------------------------------------------------------------


async def _review(service: AdminService, request: IncomingRequest) -> WebResponse:
    session = await service.session(request.session_id)
    if session is None:
        return pages.signin_page(service)
    org = await service.organization(request.session_id, request.path_params["org_id"])
    name = _environment(request)
    env = org.environment(name)
    if env is None:
        raise LaunchParameterError("unknown environment", reason="bad_environment")
    pending = await service.pending_approval(request.session_id, org.org_id, name)
    return pages.review_page(service, session, org, name, env, pending)


async def _begin_approval(service: AdminService, request: IncomingRequest) -> WebResponse:
    return await service.begin_approval(
        request.session_id,
        request.params.get("csrf"),
        request.path_params["org_id"],
        _environment(request),
        reviewed_hash=request.params.get("config_hash", ""),
    )


async def _approve(service: AdminService, request: IncomingRequest) -> WebResponse:
    org_id, name = request.path_params["org_id"], _environment(request)
    await service.approve(
        request.session_id,
        request.params.get("csrf"),
        org_id,
        name,
        approval_id=request.params.get("approval_id"),
    )
    return redirect(f"{ADMIN_PATH}/orgs/{org_id}/{name}/records")


# -- records and audit -----------------------------------------------------------------------


async def _records_page(service: AdminService, request: IncomingRequest) -> WebResponse:
    session = await service.session(request.session_id)
    if session is None:
        return pages.signin_page(service)
    name = _environment(request)
    org = await service.organization(request.session_id, request.path_params["org_id"])
    records = await service.records(request.session_id, org.org_id, name)
    return pages.records_page(service, session, org, name, records)


async def _records_json(service: AdminService, request: IncomingRequest) -> WebResponse:
    records = await service.records(
        request.session_id, request.path_params["org_id"], _environment(request)
    )
    return _json(records.model_dump(mode="json"))


async def _organization_json(service: AdminService, request: IncomingRequest) -> WebResponse:
    org = await service.organization(request.session_id, request.path_params["org_id"])
    document = org.document()
    document["version"] = org.version
    document["config_hashes"] = {
        name: hash_of(org, name) for name in ENVIRONMENT_NAMES if org.environment(name)
    }
    return _json(document)


async def _organizations_json(service: AdminService, request: IncomingRequest) -> WebResponse:
    orgs = await service.organizations(request.session_id)
    return _json(
        {
            "organizations": [
                {
                    "org_id": org.org_id,
                    "display_name": org.display_name,
                    "environments": {
                        name: env.state
                        for name in ENVIRONMENT_NAMES
                        if (env := org.environment(name)) is not None
                    },
                }
                for org in orgs
            ]
        }
    )


def _audit_rows(entries: Sequence[AuditEntry]) -> list[dict[str, Any]]:
    return [
        {
            "seq": entry.seq,
            "at": entry.at.isoformat(),
            "actor": entry.actor,
            "action": entry.action,
            "detail": entry.detail,
        }
        for entry in entries
    ]


async def _audit_json(service: AdminService, request: IncomingRequest) -> WebResponse:
    entries = await service.audit(request.session_id, request.path_params["org_id"])
    return _json({"entries": _audit_rows(entries)})


async def _audit_page(service: AdminService, request: IncomingRequest) -> WebResponse:
    session = await service.session(request.session_id)
    if session is None:
        return pages.signin_page(service)
    org = await service.organization(request.session_id, request.path_params["org_id"])
    entries = await service.audit(request.session_id, org.org_id)
    return pages.audit_page(service, session, org, entries)


_ORG = ADMIN_PATH + "/orgs/{org_id}"
_ENV = _ORG + "/{environment}"
_API = ADMIN_PATH + "/api/orgs/{org_id}"

ADMIN_ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("admin_home", ADMIN_PATH, ("GET",), _route(_home)),
    RouteSpec("admin_signin", ADMIN_PATH + "/signin", ("GET",), _route(_signin)),
    RouteSpec(
        "admin_microsoft_callback", ADMIN_MICROSOFT_CALLBACK_PATH, ("GET",), _route(_callback)
    ),
    RouteSpec("admin_signout_page", ADMIN_PATH + "/signout", ("GET",), _route(_signout_page)),
    RouteSpec("admin_signout", ADMIN_PATH + "/signout", ("POST",), _route(_signout)),
    RouteSpec("admin_create", ADMIN_PATH + "/orgs", ("POST",), _route(_create)),
    RouteSpec("admin_organization", _ORG, ("GET",), _route(_organization_page)),
    RouteSpec("admin_edit", _ORG + "/edit", ("POST",), _route(_edit)),
    RouteSpec("admin_audit", _ORG + "/audit", ("GET",), _route(_audit_page)),
    RouteSpec("admin_transition", _ENV + "/transition", ("POST",), _route(_transition)),
    RouteSpec("admin_review", _ENV + "/review", ("GET",), _route(_review)),
    RouteSpec("admin_begin_approval", _ENV + "/approval", ("POST",), _route(_begin_approval)),
    RouteSpec("admin_approve", _ENV + "/approve", ("POST",), _route(_approve)),
    RouteSpec("admin_records", _ENV + "/records", ("GET",), _route(_records_page)),
    RouteSpec(
        "admin_api_organizations", ADMIN_PATH + "/api/orgs", ("GET",), _route(_organizations_json)
    ),
    RouteSpec("admin_api_organization", _API, ("GET",), _route(_organization_json)),
    RouteSpec("admin_api_audit", _API + "/audit", ("GET",), _route(_audit_json)),
    RouteSpec(
        "admin_api_records", _API + "/{environment}/records", ("GET",), _route(_records_json)
    ),
)
"""The console's routes: the ``admin`` group of
:data:`~teams_ehr.integrations.routes.ROUTE_GROUPS` (names are unique)."""

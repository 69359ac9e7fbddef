"""The admin console's HTTP edge: plain escaped HTML pages and JSON endpoints.

:data:`ADMIN_ROUTES` are part of :data:`~teams_ehr.integrations.routes.ROUTES`, so both adapters
mount them (docs/reference/integrations.md). Each handler reads the request, calls
:class:`~teams_ehr.orgs.console.AdminService` and renders the result; the console's rules live
there. Mutations are ``POST`` only and carry the session's CSRF token (``csrf`` form field);
pages are built with :func:`teams_ehr.web.html_page` from escaped text only. The runtime builds
the console from ``settings.admin``; :func:`install_admin` replaces it with another policy (call
it on every instance: the EHR callback may reach any of them).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from html import escape
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from teams_ehr._redact import get_logger
from teams_ehr.app import TeamsEhr
from teams_ehr.errors import ConfigurationError, LaunchParameterError, TeamsEhrError
from teams_ehr.integrations.refusals import refusal_summary
from teams_ehr.integrations.spec import IncomingRequest, RouteSpec
from teams_ehr.orgs.console import (
    ADMIN_MICROSOFT_CALLBACK_PATH,
    ADMIN_PATH,
    AdminPolicy,
    AdminService,
)
from teams_ehr.orgs.models import ENVIRONMENT_NAMES, EnvironmentConfig, EnvironmentName
from teams_ehr.orgs.models import config_hash as hash_of
from teams_ehr.web import WebResponse, error_response, html_page, redirect

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


# -- helpers ---------------------------------------------------------------------------------


def _environment(request: IncomingRequest, value: str | None = None) -> EnvironmentName:
    wanted = value if value is not None else request.path_params.get("environment", "")
    for name in ENVIRONMENT_NAMES:
        if wanted == name:
            return name
    raise LaunchParameterError("unknown environment", reason="bad_environment")


def _json(document: Any, status: int = 200) -> WebResponse:
    body = json.dumps(document, sort_keys=True, default=str).encode("utf-8")
    return WebResponse(status, body, "application/json")


def _console(service: AdminService) -> str:
    """The console's path as the browser sees it: under the path of ``app_base_url`` (the
    mount prefix; redirects get it in :func:`~teams_ehr.integrations.routes.handle`)."""
    return urlsplit(service.app_base_url).path + ADMIN_PATH


def _form_fields(csrf: str) -> str:
    return f"<input type='hidden' name='csrf' value='{escape(csrf)}'>"


def _button(target: str, label: str, csrf: str, **hidden: str) -> str:
    fields = "".join(
        f"<input type='hidden' name='{escape(k)}' value='{escape(v)}'>" for k, v in hidden.items()
    )
    return (
        f"<form method='post' action='{escape(target)}'>{_form_fields(csrf)}{fields}"
        f"<button type='submit'>{escape(label)}</button></form>"
    )


def _config_from_form(params: Mapping[str, str], service: AdminService) -> EnvironmentConfig:
    base = service.app_base_url
    fhir_base = params.get("fhir_base", "").strip()
    tokens = tuple(t.strip() for t in params.get("context_tokens", "").splitlines() if t.strip())
    document: dict[str, Any] = {
        "fhir_base": fhir_base,
        "client_id": params.get("client_id", "").strip(),
        "redirect_uri": params.get("redirect_uri", "").strip() or base + "/callback",
        "jwks_url": params.get("jwks_url", "").strip() or base + "/.well-known/jwks.json",
        "epic_client_id": params.get("epic_client_id", "").strip() or None,
        "allow_http": service.policy.allow_http and fhir_base.startswith("http://"),
    }
    if tokens:
        document["context_tokens"] = tokens
    return EnvironmentConfig.model_validate(document)


def _invalid(exc: ValidationError) -> WebResponse:
    items = "".join(
        f"<li>{escape('.'.join(str(p) for p in error['loc']))}: {escape(error['msg'])}</li>"
        for error in exc.errors(include_input=False, include_url=False)
    )
    return html_page(f"<p>The form has errors:</p><ul>{items}</ul>", status=400)


AdminHandler = Callable[[AdminService, IncomingRequest], Awaitable[WebResponse]]


def _route(handler: AdminHandler) -> Callable[[TeamsEhr, IncomingRequest], Awaitable[WebResponse]]:
    """Adapt an admin handler to a route handler with the console's error mapping."""

    async def run(app: TeamsEhr, request: IncomingRequest) -> WebResponse:
        try:
            return await handler(admin_service(app), request)
        except ValidationError as exc:
            return _invalid(exc)
        except ConfigurationError as exc:
            _log.warning("%s refused: %s", request.route, exc.reason)
            return html_page("<p>The request could not be accepted.</p>", status=400)
        except TeamsEhrError as exc:
            _log.warning("%s refused: %s", request.route, refusal_summary(exc))
            return error_response(exc)

    return run


# -- pages -----------------------------------------------------------------------------------


def _signin_page(service: AdminService) -> WebResponse:
    return html_page(
        "<h1>EHR connector configuration</h1><p>Sign in with your Microsoft 365 account.</p>"
        f"<form method='get' action='{_console(service)}/signin'><label>Tenant ID "
        "<input name='tenant' required></label><button type='submit'>Sign in</button></form>",
        title="Sign in",
    )


def _environment_form(prefix_html: str, action: str, csrf: str, submit: str) -> str:
    fields = "".join(
        f"<label>{escape(label)} <input name='{name}'></label><br>"
        for name, label in (
            ("fhir_base", "FHIR base URL"),
            ("client_id", "Client ID"),
            ("epic_client_id", "Epic client ID (Epic-Client-ID header)"),
            ("redirect_uri", "Redirect URI (default: this app's /callback)"),
            ("jwks_url", "JWKS URL (default: this app's)"),
        )
    )
    env = "".join(f"<option value='{n}'>{n}</option>" for n in ENVIRONMENT_NAMES)
    return (
        f"<form method='post' action='{escape(action)}'>{_form_fields(csrf)}{prefix_html}"
        f"<label>Environment <select name='environment'>{env}</select></label><br>{fields}"
        "<label>Context tokens (one per line) <textarea name='context_tokens'>"
        "sessionId=%CSN%</textarea></label><br>"
        f"<button type='submit'>{escape(submit)}</button></form>"
    )


async def _home(service: AdminService, request: IncomingRequest) -> WebResponse:
    session = await service.session(request.session_id)
    if session is None:
        return _signin_page(service)
    csrf = session.csrf.get_secret_value()
    console = _console(service)
    rows = "".join(
        f"<li><a href='{console}/orgs/{escape(org.org_id)}'>{escape(org.display_name)}</a> "
        + escape(
            ", ".join(
                f"{n}: {e.state}"
                for n in ENVIRONMENT_NAMES
                if (e := org.environment(n)) is not None
            )
        )
        + "</li>"
        for org in await service.organizations(request.session_id)
    )
    create = ""
    if service.policy.is_administrator(session.identity):
        head = (
            "<label>Organization ID <input name='org_id' required></label><br>"
            "<label>Name <input name='display_name' required></label><br>"
            "<label>Approver (Entra object ID) <input name='approver_oid' required></label><br>"
        )
        create = "<h2>New organization</h2>" + _environment_form(
            head, f"{console}/orgs", csrf, "Create"
        )
    body = f"<h1>Organizations</h1><ul>{rows}</ul>{create}" + _button(
        f"{console}/signout", "Sign out", csrf
    )
    return html_page(body, title="Organizations")


async def _signin(service: AdminService, request: IncomingRequest) -> WebResponse:
    return await service.begin_signin(
        request.params.get("tenant", ""), session_id=request.session_id
    )


async def _callback(service: AdminService, request: IncomingRequest) -> WebResponse:
    return await service.complete_signin(request.params, session_id=request.session_id)


async def _signout(service: AdminService, request: IncomingRequest) -> WebResponse:
    await service.sign_out(request.session_id, request.params.get("csrf"))
    return redirect(ADMIN_PATH)


async def _create(service: AdminService, request: IncomingRequest) -> WebResponse:
    params = request.params
    org = await service.create(
        request.session_id,
        params.get("csrf"),
        org_id=params.get("org_id", ""),
        display_name=params.get("display_name", ""),
        approver_oid=params.get("approver_oid", ""),
        environments={
            _environment(request, params.get("environment")): _config_from_form(params, service)
        },
    )
    return redirect(f"{ADMIN_PATH}/orgs/{org.org_id}")


async def _edit(service: AdminService, request: IncomingRequest) -> WebResponse:
    params = request.params
    try:
        version = int(params.get("expected_version", ""))
    except ValueError:
        raise LaunchParameterError("expected_version is required", reason="bad_form") from None
    environments = None
    if params.get("fhir_base", "").strip():
        name = _environment(request, params.get("environment"))
        environments = {name: _config_from_form(params, service)}
    org = await service.update(
        request.session_id,
        params.get("csrf"),
        request.path_params["org_id"],
        expected_version=version,
        display_name=params.get("display_name") or None,
        approver_oid=params.get("approver_oid") or None,
        environments=environments,
    )
    return redirect(f"{ADMIN_PATH}/orgs/{org.org_id}")


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


async def _organization_page(service: AdminService, request: IncomingRequest) -> WebResponse:
    session = await service.session(request.session_id)
    if session is None:
        return _signin_page(service)
    org = await service.organization(request.session_id, request.path_params["org_id"])
    csrf = session.csrf.get_secret_value()
    base = f"{_console(service)}/orgs/{escape(org.org_id)}"
    parts = [
        f"<h1>{escape(org.display_name)}</h1><p>Tenant {escape(org.tenant_id)}; approver "
        f"{escape(org.approver_oid)}; version {org.version}</p>"
    ]
    for name in ENVIRONMENT_NAMES:
        env = org.environment(name)
        if env is None:
            continue
        parts.append(
            f"<h2>{name}: {escape(env.state)}</h2><p>FHIR base {escape(env.config.fhir_base)}</p>"
        )
        actions = {
            "draft": ("submit",),
            "pending_approval": ("withdraw", "suspend"),
            "active": ("suspend",),
            "suspended": ("resume",),
        }[env.state]
        for action in actions:
            parts.append(_button(f"{base}/{name}/transition", action.title(), csrf, action=action))
        if env.state == "pending_approval":
            parts.append(f"<p><a href='{base}/{name}/review'>Review and approve</a></p>")
        if env.state == "active":
            parts.append(f"<p><a href='{base}/{name}/records'>Integration records</a></p>")
    version = f"<input type='hidden' name='expected_version' value='{org.version}'>"
    parts.append("<h2>Edit</h2>" + _environment_form(version, f"{base}/edit", csrf, "Save"))
    parts.append(f"<p><a href='{base}/audit'>Audit log</a></p>")
    return html_page("".join(parts), title=org.display_name)


async def _review(service: AdminService, request: IncomingRequest) -> WebResponse:
    session = await service.session(request.session_id)
    if session is None:
        return _signin_page(service)
    org = await service.organization(request.session_id, request.path_params["org_id"])
    name = _environment(request)
    env = org.environment(name)
    if env is None:
        raise LaunchParameterError("unknown environment", reason="bad_environment")
    csrf = session.csrf.get_secret_value()
    digest = hash_of(org, name)
    action = f"{_console(service)}/orgs/{org.org_id}/{name}"
    config = env.config.model_dump(mode="json")
    rows = "".join(
        f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in config.items()
    )
    parts = [
        f"<h1>Approve {escape(org.display_name)} ({name})</h1><p>State: {escape(env.state)}</p>"
        f"<table>{rows}</table><p>Configuration hash <code>{digest}</code></p>"
    ]
    pending = await service.pending_approval(request.session_id, org.org_id, name)
    if pending is not None and pending[1]:
        parts.append("<p>EHR sign-in verified for this FHIR base URL.</p>")
        parts.append(_button(f"{action}/approve", "Approve", csrf, approval_id=pending[0]))
    elif env.state == "pending_approval":
        parts.append("<p>Sign in to the EHR to validate this FHIR base URL.</p>")
        parts.append(_button(f"{action}/approval", "Sign in to the EHR", csrf, config_hash=digest))
    return html_page("".join(parts), title="Approve")


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


async def _records_page(service: AdminService, request: IncomingRequest) -> WebResponse:
    records = await service.records(
        request.session_id, request.path_params["org_id"], _environment(request)
    )
    rows = "".join(
        f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>"
        for k, v in records.model_dump(mode="json").items()
    )
    return html_page(f"<h1>Integration records</h1><table>{rows}</table>", title="Records")


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


def _audit_rows(entries: Any) -> list[dict[str, Any]]:
    return [
        {
            "seq": e.seq,
            "at": e.at.isoformat(),
            "actor": e.actor,
            "action": e.action,
            "detail": e.detail,
        }
        for e in entries
    ]


async def _audit_json(service: AdminService, request: IncomingRequest) -> WebResponse:
    entries = await service.audit(request.session_id, request.path_params["org_id"])
    return _json({"entries": _audit_rows(entries)})


async def _audit_page(service: AdminService, request: IncomingRequest) -> WebResponse:
    entries = await service.audit(request.session_id, request.path_params["org_id"])
    rows = "".join(
        f"<tr><td>{row['seq']}</td><td>{escape(row['at'])}</td><td>{escape(row['actor'])}</td>"
        f"<td>{escape(row['action'])}</td><td>{escape(json.dumps(row['detail']))}</td></tr>"
        for row in _audit_rows(entries)
    )
    return html_page(f"<h1>Audit log</h1><table>{rows}</table>", title="Audit log")


_ORG = ADMIN_PATH + "/orgs/{org_id}"
_ENV = _ORG + "/{environment}"
_API = ADMIN_PATH + "/api/orgs/{org_id}"

ADMIN_ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("admin_home", ADMIN_PATH, ("GET",), _route(_home)),
    RouteSpec("admin_signin", ADMIN_PATH + "/signin", ("GET",), _route(_signin)),
    RouteSpec(
        "admin_microsoft_callback", ADMIN_MICROSOFT_CALLBACK_PATH, ("GET",), _route(_callback)
    ),
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

"""The admin console's pages: each one's HTML in the shared layout of :mod:`teams_ehr.theme`.

Pure rendering: the handlers of :mod:`teams_ehr.integrations.admin_routes` fetch what a page
shows from :class:`~teams_ehr.orgs.console.AdminService` and pass it in. Every page is built
from escaped text only; a form comes back with a message on every field concerned, linked from
a summary above it (WCAG 2.2 SC 3.3.1, 3.3.3); docs/guides/ehr-analyst.md walks the journey.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

from teams_ehr import theme
from teams_ehr.integrations.admin_forms import (
    ENV_FIELDS,
    LABELS,
    ORG_FIELDS,
    REQUIRED,
    FormState,
    edit_values,
)
from teams_ehr.orgs.console import ADMIN_PATH, AdminService
from teams_ehr.orgs.console_sessions import AdminSession
from teams_ehr.orgs.models import (
    ENVIRONMENT_NAMES,
    Environment,
    EnvironmentConfig,
    EnvironmentName,
    Organization,
)
from teams_ehr.orgs.models import config_hash as hash_of
from teams_ehr.orgs.records import IntegrationRecords
from teams_ehr.store.protocol import AuditEntry
from teams_ehr.theme import Markup, e
from teams_ehr.web import WebResponse, html_page

__all__ = [
    "Pending",
    "audit_page",
    "console_path",
    "home_page",
    "organization_page",
    "records_page",
    "review_page",
    "signin_page",
    "signout_page",
]

Pending = tuple[str, bool] | None
"""An environment's pending approval: its ID and whether the EHR sign-in proved the FHIR base."""

_ACTION_LABELS: Mapping[str, str] = {
    "submit": "Submit for approval",
    "withdraw": "Withdraw to draft",
    "suspend": "Suspend launches",
    "resume": "Resume launches",
}
_ACTIONS: Mapping[str, tuple[str, ...]] = {
    "draft": ("submit",),
    "pending_approval": ("withdraw", "suspend"),
    "active": ("suspend",),
    "suspended": ("resume",),
}
_JOURNEY = (
    "Configure",
    "Submit for approval",
    "Approver signs in to the EHR",
    "Approve",
    "Enter the records in the EHR",
)


# -- form parts ------------------------------------------------------------------------------


def _input(
    form_id: str, name: str, state: FormState, *, default: str = "", required: bool = False
) -> Markup:
    """A labelled field with its hint and, when invalid, its message (``aria-invalid`` and
    ``aria-describedby``, WCAG 2.2 SC 3.3.1)."""
    text, hint = LABELS[name]
    fid = f"{form_id}-{name}"
    value = state.values.get(name, default)
    described = []
    hint_html = ""
    if hint:
        hint_html = f"<span class='hint' id='{fid}-hint'>{e(hint)}</span>"
        described.append(f"{fid}-hint")
    error = state.errors.get(name)
    error_html = ""
    if error:
        error_html = (
            f"<span class='field-error' id='{fid}-error' data-testid='error-{e(name)}'>"
            f"{e(error)}</span>"
        )
        described.append(f"{fid}-error")
    attrs = f" id='{fid}' name='{name}' data-testid='field-{e(name)}'"
    if described:
        attrs += f" aria-describedby='{' '.join(described)}'"
    if error:
        attrs += " aria-invalid='true'"
    if required:
        attrs += " required"
    if name == "context_tokens":
        control = f"<textarea{attrs} rows='3'>{e(value)}</textarea>"
    else:
        control = f"<input type='text'{attrs} value='{e(value)}' autocomplete='off'>"
    return Markup(f"<label for='{fid}'>{e(text)}{hint_html}</label>{error_html}{control}")


def _error_summary(state: FormState, form_id: str) -> Markup:
    """The list of problems above a form, each linking to its field (focusable, announced)."""
    if not state.errors:
        return Markup("")
    items = "".join(
        f"<li><a href='#{form_id}-{name}'>{e(LABELS[name][0])}: {e(message)}</a></li>"
        if name in LABELS
        else f"<li>{e(message)}</li>"
        for name, message in state.errors.items()
    )
    return Markup(
        f"<div class='notice notice-error' role='alert' tabindex='-1' data-testid='form-errors'>"
        f"<h2>There is a problem</h2><ul class='plain'>{items}</ul></div>"
    )


def _hidden(name: str, value: str) -> str:
    return f"<input type='hidden' name='{e(name)}' value='{e(value)}'>"


def _button(
    target: str, label: str, csrf: str, *, test_id: str, danger: bool = False, **hidden: str
) -> Markup:
    """A ``POST`` form of one button carrying the CSRF token and ``hidden`` fields."""
    fields = "".join(_hidden(k, v) for k, v in hidden.items())
    css = " class='danger'" if danger else ""
    return Markup(
        f"<form method='post' action='{e(target)}'>{_hidden('csrf', csrf)}{fields}"
        f"<button type='submit'{css} data-testid='{e(test_id)}'>{e(label)}</button></form>"
    )


# -- layout ----------------------------------------------------------------------------------


def console_path(service: AdminService) -> str:
    """The console's path as the browser sees it: under the path of ``app_base_url`` (the
    mount prefix; redirects get it in :func:`~teams_ehr.integrations.routes.handle`)."""
    return urlsplit(service.app_base_url).path + ADMIN_PATH


def _nav(service: AdminService, org: Organization | None = None) -> list[tuple[str, ...]]:
    """Organizations, the organization, its integration records (when approved), its audit
    log, Sign out."""
    console = console_path(service)
    nav: list[tuple[str, ...]] = [(console, "Organizations")]
    if org is not None:
        base = f"{console}/orgs/{org.org_id}"
        nav.append((base, org.display_name, "organization"))
        active = next(
            (n for n in ENVIRONMENT_NAMES if (env := org.environment(n)) and env.state == "active"),
            None,
        )
        if active is not None:
            nav.append((f"{base}/{active}/records", "Integration records"))
        nav.append((f"{base}/audit", "Audit log"))
    nav.append((f"{console}/signout", "Sign out"))
    return nav


def _page(
    service: AdminService,
    title: str,
    body: str,
    *,
    org: Organization | None = None,
    current: str | None = None,
    session: AdminSession | None = None,
    status: int = 200,
    scripts: Sequence[str] = (),
) -> WebResponse:
    signed = ""
    if session is not None:
        who = session.identity
        signed = (
            f"<p class='muted' data-testid='signed-in-as'>Signed in to tenant "
            f"<code>{e(who.tenant_id)}</code> as object ID <code>{e(who.object_id)}</code></p>"
        )
    return html_page(
        f"{signed}<h1>{e(title)}</h1>{body}",
        status=status,
        title=title,
        nav=_nav(service, org) if session is not None else (),
        current=current,
        scripts=scripts,
        home=console_path(service),
    )


# -- sign-in ---------------------------------------------------------------------------------


def signin_page(
    service: AdminService, *, tenant: str = "", error: str | None = None, status: int = 200
) -> WebResponse:
    """The tenant ID form that starts the Microsoft sign-in; ``tenant`` pre-fills it."""
    state = FormState(
        values={"tenant": "" if error else tenant}, errors={"tenant": error} if error else {}
    )
    hint = (
        "Your organization's Microsoft Entra tenant ID (Directory ID), shown on the Entra "
        "admin center's Overview page. A link from a colleague fills it in for you."
    )
    error_html = (
        f"<span class='field-error' id='signin-tenant-error' data-testid='error-tenant'>"
        f"{e(error)}</span>"
        if error
        else ""
    )
    invalid = " aria-invalid='true'" if error else ""
    described = "signin-tenant-hint" + (" signin-tenant-error" if error else "")
    body = theme.section(
        None,
        "<p>Sign in with your Microsoft 365 work account to configure and approve your "
        "organization's EHR connection.</p>"
        f"{_error_summary(state, 'signin')}"
        f"<form method='get' action='{e(console_path(service))}/signin'>"
        "<label for='signin-tenant'>Tenant ID"
        f"<span class='hint' id='signin-tenant-hint'>{e(hint)}</span></label>{error_html}"
        f"<input type='text' id='signin-tenant' name='tenant' value='{e(state.values['tenant'])}'"
        f" required autocomplete='off' aria-describedby='{described}'{invalid}"
        " data-testid='field-tenant'>"
        "<p class='actions'><button type='submit' data-testid='admin-signin'>Sign in with "
        "Microsoft</button></p></form>",
        test_id="admin-signin-form",
    )
    return _page(service, "Sign in to the admin console", body, status=status)


def signout_page(service: AdminService, session: AdminSession) -> WebResponse:
    """The confirmation before signing out (a ``POST`` with the CSRF token)."""
    console = console_path(service)
    body = theme.section(
        None,
        "<p>Sign out of the admin console on this browser?</p>"
        + _button(
            f"{console}/signout",
            "Sign out",
            session.csrf.get_secret_value(),
            test_id="admin-signout",
        ),
    )
    return _page(service, "Sign out", body, session=session, current=f"{console}/signout")


# -- organizations ---------------------------------------------------------------------------


def _next_step(env: Environment) -> str:
    return {
        "draft": "Check the configuration, then submit it for approval.",
        "pending_approval": "The approver reviews it and signs in to the EHR, then approves.",
        "active": "Enter the integration records in the EHR.",
        "suspended": "Launches are refused; resume when ready.",
    }[env.state]


def _environment_form(
    form_id: str,
    action: str,
    csrf: str,
    submit: str,
    state: FormState,
    *,
    hidden: Mapping[str, str],
    org_fields: Sequence[str] = (),
    environment: EnvironmentName | None = None,
    required_org: bool = True,
) -> Markup:
    """The organization fields ``org_fields`` and one environment's configuration fields;
    ``environment`` fixed (hidden) or chosen from a list."""
    parts: list[str] = [_error_summary(state, form_id)]
    parts.append(f"<form method='post' action='{e(action)}'>{_hidden('csrf', csrf)}")
    parts += [_hidden(k, v) for k, v in hidden.items()]
    for name in org_fields:
        parts.append(_input(form_id, name, state, required=required_org))
    if environment is None:
        chosen = state.values.get("environment", "test")
        options = "".join(
            f"<option value='{n}'{' selected' if n == chosen else ''}>{e(theme.label(n))}</option>"
            for n in ENVIRONMENT_NAMES
        )
        parts.append(
            f"<label for='{form_id}-environment'>Environment</label><select "
            f"id='{form_id}-environment' name='environment' data-testid='field-environment'>"
            f"{options}</select>"
        )
    else:
        parts.append(_hidden("environment", environment))
    for name in ENV_FIELDS:
        default = "sessionId=%CSN%" if name == "context_tokens" else ""
        parts.append(_input(form_id, name, state, default=default, required=name in REQUIRED))
    parts.append(
        f"<p class='actions'><button type='submit' data-testid='{e(form_id)}-submit'>"
        f"{e(submit)}</button></p></form>"
    )
    return Markup("".join(parts))


def home_page(
    service: AdminService,
    session: AdminSession,
    orgs: Sequence[Organization],
    create: FormState | None = None,
) -> WebResponse:
    """The organizations the signed-in person administers and, for an administrator, the new
    organization form (``create``: a refused submission, status 400)."""
    csrf = session.csrf.get_secret_value()
    console = console_path(service)
    rows = []
    for org in orgs:
        link = Markup(
            f"<a href='{e(console)}/orgs/{e(org.org_id)}' "
            f"data-testid='org-{e(org.org_id)}'>{e(org.display_name)}</a>"
        )
        states = []
        for name in ENVIRONMENT_NAMES:
            env = org.environment(name)
            if env is not None:
                states.append(f"{theme.label(name)}: {theme.label(env.state)}")
        steps = [
            f"{theme.label(n)}: {_next_step(env)}"
            for n in ENVIRONMENT_NAMES
            if (env := org.environment(n)) is not None
        ]
        rows.append((link, states, steps))
    parts = [
        theme.section(
            "Your organizations",
            theme.table(
                ("Organization", "Environments", "Next step"),
                rows,
                test_id="organizations",
                empty="No organization yet. Create one below.",
            ),
        )
    ]
    if service.policy.is_administrator(session.identity):
        state = create or FormState()
        form = _environment_form(
            "create",
            f"{console}/orgs",
            csrf,
            "Create organization",
            state,
            hidden={},
            org_fields=ORG_FIELDS,
        )
        parts.append(theme.section("New organization", form, test_id="create-organization"))
    signout = _button(f"{console}/signout", "Sign out", csrf, test_id="admin-signout")
    parts.append(Markup(f"<div class='actions'>{signout}</div>"))
    status = 400 if create is not None and create.errors else 200
    return _page(
        service,
        "Organizations",
        "".join(parts),
        session=session,
        current=console,
        status=status,
    )


def _facts(org: Organization) -> Markup:
    return theme.definition_list(
        [
            ("Organization ID", org.org_id),
            ("Tenant ID", org.tenant_id),
            ("Approver (object ID)", org.approver_oid),
            ("Creator may approve", org.allow_self_approval),
            ("Version", str(org.version)),
        ],
        test_id="organization-facts",
    )


def _config_facts(config: EnvironmentConfig) -> Markup:
    data = config.model_dump()
    return theme.definition_list(
        [
            ("FHIR base URL", data["fhir_base"]),
            ("Client ID", data["client_id"]),
            ("Epic client ID", data["epic_client_id"]),
            ("Redirect URI", data["redirect_uri"]),
            ("JWKS URL", data["jwks_url"]),
            ("Context tokens", data["context_tokens"]),
            ("Write-back", theme.label(data["writer"])),
            ("Context link format", data["context_link"]),
            ("Allows http (loopback only)", data["allow_http"]),
        ],
        test_id="configuration",
    )


def _journey_index(env: Environment, proven: bool) -> int:
    if env.state == "draft":
        return 1
    if env.state == "pending_approval":
        return 3 if proven else 2
    return 4


def _environment_section(
    service: AdminService,
    org: Organization,
    name: EnvironmentName,
    env: Environment,
    csrf: str,
    pending: Pending,
) -> Markup:
    base = f"{console_path(service)}/orgs/{org.org_id}"
    parts = [
        theme.steps(
            _JOURNEY, _journey_index(env, bool(pending and pending[1])), test_id=f"journey-{name}"
        ),
        f"<p>State: <strong data-testid='state-{name}'>{e(theme.label(env.state))}</strong>. "
        f"Next: {e(_next_step(env))}</p>",
    ]
    if env.state == "suspended":
        parts.append(
            theme.notice(None, "Launches from the EHR are refused while suspended.", kind="warn")
        )
    buttons = [
        _button(
            f"{base}/{name}/transition",
            _ACTION_LABELS[action],
            csrf,
            test_id=f"{action}-{name}",
            danger=action == "suspend",
            action=action,
        )
        for action in _ACTIONS[env.state]
    ]
    if env.state == "pending_approval":
        buttons.append(
            theme.button_link(
                f"{base}/{name}/review", "Review and approve", test_id=f"review-{name}"
            )
        )
    if env.state == "active":
        buttons.append(
            theme.button_link(
                f"{base}/{name}/records", "Integration records", test_id=f"records-{name}"
            )
        )
    parts.append(f"<div class='actions'>{''.join(buttons)}</div>")
    parts.append(_config_facts(env.config))
    return theme.section(
        f"{theme.label(name)} environment", "".join(parts), test_id=f"environment-{name}"
    )


def organization_page(
    service: AdminService,
    session: AdminSession,
    org: Organization,
    pending: Mapping[EnvironmentName, Pending],
    edit: tuple[EnvironmentName, FormState] | None = None,
) -> WebResponse:
    """An organization: its facts, each environment's journey and actions, and a pre-filled
    edit form per environment (``edit``: a refused submission, status 400). ``pending`` holds
    the pending approval of each environment waiting for one."""
    csrf = session.csrf.get_secret_value()
    base = f"{console_path(service)}/orgs/{org.org_id}"
    parts = [theme.section("Organization", _facts(org), test_id="organization")]
    for name in ENVIRONMENT_NAMES:
        env = org.environment(name)
        if env is not None:
            parts.append(_environment_section(service, org, name, env, csrf, pending.get(name)))
    version = {"expected_version": str(org.version)}
    for name in ENVIRONMENT_NAMES:
        env = org.environment(name)
        state = FormState(edit_values(org, env))
        if edit is not None and edit[0] == name:
            state = FormState({**state.values, **edit[1].values}, edit[1].errors)
        heading = (
            f"Edit the {theme.label(name).lower()} environment"
            if env is not None
            else f"Add a {theme.label(name).lower()} environment"
        )
        note = (
            "<p class='muted'>Saving a change to an approved environment sends it back for "
            "approval.</p>"
            if env is not None and env.state == "active"
            else ""
        )
        form = _environment_form(
            f"edit-{name}",
            f"{base}/edit",
            csrf,
            "Save",
            state,
            hidden=version,
            org_fields=("display_name", "approver_oid"),
            environment=name,
        )
        opened = " open" if state.errors else ""
        toggle = (
            f"<details class='edit'{opened}><summary><h2>{e(heading)}</h2></summary>"
            f"{note}{form}</details>"
        )
        parts.append(theme.section(None, toggle, test_id=f"edit-{name}"))
    status = 400 if edit is not None and edit[1].errors else 200
    return _page(
        service,
        org.display_name,
        "".join(parts),
        org=org,
        session=session,
        current=base,
        status=status,
    )


# -- approval --------------------------------------------------------------------------------


def review_page(
    service: AdminService,
    session: AdminSession,
    org: Organization,
    name: EnvironmentName,
    env: Environment,
    pending: Pending,
) -> WebResponse:
    """The approver's review: where the journey stands, the next action (EHR sign-in, then
    Approve) and the configuration with its fingerprint."""
    csrf = session.csrf.get_secret_value()
    digest = hash_of(org, name)
    action = f"{console_path(service)}/orgs/{org.org_id}/{name}"
    proven = pending is not None and pending[1]
    parts = [
        theme.steps(_JOURNEY, _journey_index(env, proven), test_id="journey"),
        f"<p>State: <strong data-testid='state-{name}'>{e(theme.label(env.state))}</strong></p>",
    ]
    if pending is not None and pending[1]:
        parts.append(
            theme.notice(
                "EHR sign-in verified for this FHIR base URL.",
                "Check the configuration below once more, then approve it. Launches from the "
                "EHR work as soon as it is approved.",
                kind="ok",
                test_id="proof-verified",
            )
        )
        parts.append(
            _button(
                f"{action}/approve",
                "Approve",
                csrf,
                test_id="approve",
                approval_id=pending[0],
            )
        )
    elif env.state == "pending_approval":
        parts.append(
            "<p>Sign in to the EHR with your own EHR account: this proves the FHIR base URL "
            "belongs to your EHR. No patient data is read and no token is kept.</p>"
        )
        parts.append(
            _button(
                f"{action}/approval",
                "Sign in to the EHR",
                csrf,
                test_id="begin-approval",
                config_hash=digest,
            )
        )
    else:
        parts.append(
            theme.notice(
                None, f"Nothing to approve: {_next_step(env)}", kind="info", test_id="no-approval"
            )
        )
    parts.append(theme.section("Configuration to approve", _config_facts(env.config)))
    parts.append(
        "<p class='muted'>Configuration fingerprint (SHA-256): "
        f"<code data-testid='config-hash'>{e(digest)}</code></p>"
    )
    title = f"Approve {org.display_name} ({theme.label(name).lower()})"
    return _page(service, title, "".join(parts), org=org, session=session)


# -- records and audit -----------------------------------------------------------------------


def records_page(
    service: AdminService,
    session: AdminSession,
    org: Organization,
    name: EnvironmentName,
    records: IntegrationRecords,
) -> WebResponse:
    """The integration records to copy into the EHR, with copy buttons and the next steps."""
    copy = [
        ("provider-launch-url", "Provider launch URL", records.provider_launch_url, None),
        ("patient-launch-url", "Patient launch URL", records.patient_launch_url, None),
        (
            "context-query",
            "Context tokens (query string)",
            records.context_query,
            "Append to the launch URL in the FDI record.",
        ),
        ("client-id", "Client ID", records.client_id, None),
        ("epic-client-id", "Epic client ID", records.epic_client_id or "", None),
        ("redirect-uri", "Redirect URI", records.redirect_uri, None),
        ("jwks-url", "JWKS URL", records.jwks_url, None),
        ("fhir-base", "FHIR base URL", records.fhir_base, None),
    ]
    fields = "".join(
        theme.copy_field(f"record-{fid}", text, value, hint=hint) for fid, text, value, hint in copy
    )
    approved = theme.definition_list(
        [
            ("Approved", theme.when(records.approved_at)),
            ("Context tokens", records.context_tokens),
            ("Configuration fingerprint", records.config_hash),
        ]
    )
    signin_link = f"{service.app_base_url}{ADMIN_PATH}?{urlencode({'tenant': org.tenant_id})}"
    next_steps = (
        "<ol class='plain'>"
        "<li>In the EHR, create the launch records (for Epic: FDI records for provider and "
        "patient launch) with the launch URLs and context tokens above, and register the "
        "client ID, redirect URI and JWKS URL with the app.</li>"
        "<li>In Microsoft 365, the Teams EHR connector needs nothing more from this page.</li>"
        "<li>Start a test visit from the EHR to check the launch.</li></ol>"
        + theme.copy_field(
            "record-console-link",
            "Console sign-in link for colleagues",
            signin_link,
            hint="Opens this console with your tenant ID filled in.",
        )
    )
    body = (
        theme.steps(_JOURNEY, 4, test_id="journey")
        + theme.section("Copy these into the EHR", fields, test_id="integration-records")
        + theme.section("Approval", approved)
        + theme.section("Next steps", next_steps, test_id="next-step")
        + theme.technical_details(records.model_dump(mode="json"))
    )
    title = f"Integration records ({theme.label(name).lower()})"
    return _page(
        service,
        title,
        body,
        org=org,
        session=session,
        current=f"{console_path(service)}/orgs/{org.org_id}/{name}/records",
        scripts=(theme.COPY_SCRIPT,),
    )


def _actor(actor: str, org: Organization, session: AdminSession) -> str:
    if actor == session.identity.object_id:
        return f"You ({actor})"
    if actor == org.approver_oid:
        return f"The approver ({actor})"
    return theme.label(actor) if actor == "system" else actor


def _audit_summary(detail: Mapping[str, Any]) -> Markup:
    """The readable part of an entry's detail; everything is also in the JSON toggle."""
    facts: list[tuple[str, object]] = []
    if isinstance(detail.get("environment"), str):
        facts.append(("Environment", theme.label(detail["environment"])))
    if isinstance(detail.get("state"), str):
        facts.append(("New state", theme.label(detail["state"])))
    if isinstance(detail.get("reason"), str):
        facts.append(("Reason", theme.label(detail["reason"])))
    if isinstance(detail.get("environments"), Mapping):
        facts.append(
            (
                "Environments",
                [
                    f"{theme.label(k)}: {theme.label(v)}"
                    for k, v in detail["environments"].items()
                    if isinstance(v, str)
                ],
            )
        )
    if isinstance(detail.get("changed"), list):
        facts.append(("Changed", [theme.label(c) for c in detail["changed"]]))
    if isinstance(detail.get("fhir_base"), str):
        facts.append(("FHIR base URL", detail["fhir_base"]))
    summary = theme.definition_list(facts) if facts else Markup("")
    return Markup(
        summary
        + theme.technical_details(dict(detail), summary="Raw entry (JSON)", test_id="audit-json")
    )


def audit_page(
    service: AdminService,
    session: AdminSession,
    org: Organization,
    entries: Sequence[AuditEntry],
) -> WebResponse:
    """The organization's audit log as a table, newest first, each entry's JSON behind a toggle."""
    rows = [
        (
            Markup(f"<time datetime='{e(entry.at.isoformat())}'>{e(theme.when(entry.at))}</time>"),
            _actor(entry.actor, org, session),
            theme.label(entry.action),
            _audit_summary(entry.detail),
        )
        for entry in reversed(list(entries))
    ]
    body = theme.section(
        None,
        "<p class='muted'>Newest first. Every change and every refused approval is "
        "recorded.</p>"
        + theme.table(("When", "Who", "What", "Details"), rows, test_id="audit-log"),
    )
    return _page(
        service,
        f"Audit log: {org.display_name}",
        body,
        org=org,
        session=session,
        current=f"{console_path(service)}/orgs/{org.org_id}/audit",
    )

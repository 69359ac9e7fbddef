"""The admin console's forms: submitted fields to an :class:`EnvironmentConfig`, or a message
per field.

Blank required fields and the pydantic ``ValidationError`` of the models become our own words
for each field concerned (WCAG 2.2 SC 3.3.1, 3.3.3); an invalid value is never echoed back
(:func:`kept`). Pages render these messages (:mod:`teams_ehr.integrations.admin_pages`); the
handlers of :mod:`teams_ehr.integrations.admin_routes` call these functions
(docs/guides/ehr-analyst.md walks the journey).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from teams_ehr.errors import ConfigurationError
from teams_ehr.orgs.console import AdminService
from teams_ehr.orgs.models import Environment, EnvironmentConfig, Organization
from teams_ehr.teams.identity import normalize_guid

__all__ = [
    "ENV_FIELDS",
    "FORM",
    "INVALID",
    "LABELS",
    "ORG_FIELDS",
    "REQUIRED",
    "REQUIRED_TENANT",
    "UNKNOWN_TENANT",
    "FormState",
    "config_from_form",
    "configuration_errors",
    "edit_values",
    "field_errors",
    "is_guid",
    "kept",
    "org_errors",
]

FORM = "_form"  # the key of a message about the whole form
ORG_FIELDS = ("org_id", "display_name", "approver_oid")
ENV_FIELDS = (
    "fhir_base",
    "client_id",
    "epic_client_id",
    "redirect_uri",
    "jwks_url",
    "context_tokens",
)
LABELS: Mapping[str, tuple[str, str | None]] = {
    "org_id": ("Organization ID", "Lowercase letters, digits and hyphens, e.g. lamna-health."),
    "display_name": ("Organization name", "As clinicians and patients should see it."),
    "approver_oid": (
        "Approver's Microsoft Entra object ID",
        "The person who reviews and approves; find it in the Entra admin center, Users.",
    ),
    "environment": ("Environment", None),
    "fhir_base": ("FHIR base URL", "The EHR's FHIR R4 endpoint, starting with https://."),
    "client_id": ("Client ID", "The ID the EHR issued to this app for SMART launches."),
    "epic_client_id": (
        "Epic client ID (optional)",
        "Sent as the Epic-Client-ID header; leave empty if the EHR is not Epic.",
    ),
    "redirect_uri": ("Redirect URI (optional)", "Leave empty for this app's /callback."),
    "jwks_url": ("JWKS URL (optional)", "Leave empty for this app's own key set."),
    "context_tokens": (
        "Context tokens",
        "One per line, like sessionId=%CSN%; they become the launch URL's query.",
    ),
}
"""Each field's label and hint (``None``: no hint)."""
REQUIRED: Mapping[str, str] = {
    "org_id": "Enter an organization ID.",
    "display_name": "Enter the organization's name.",
    "approver_oid": "Enter the approver's object ID.",
    "fhir_base": "Enter the EHR's FHIR base URL.",
    "client_id": "Enter the client ID the EHR issued.",
}
"""The message of each required field left blank."""
INVALID: Mapping[str, str] = {
    "org_id": "Use 1 to 64 lowercase letters, digits and hyphens, starting and ending with "
    "a letter or digit.",
    "display_name": "Use up to 200 printable characters.",
    "approver_oid": "Enter an object ID like 11111111-2222-4333-8444-555555555555.",
    "fhir_base": "Enter an https URL of the EHR's FHIR endpoint, without user name, query or "
    "fragment.",
    "client_id": "Use 1 to 256 printable characters without spaces.",
    "epic_client_id": "Use 1 to 256 printable characters without spaces.",
    "redirect_uri": "Enter an https URL, or leave it empty.",
    "jwks_url": "Enter an https URL, or leave it empty.",
    "context_tokens": "Write each token as name=%MNEMONIC%, at most 32, each name once.",
    "tenant": "Enter the tenant ID as a GUID, like 72f988bf-86f1-41af-91ab-2d7cd011db47.",
}
"""The message of each field whose value the models refuse."""
REQUIRED_TENANT = "Enter your organization's tenant ID."
UNKNOWN_TENANT = (
    "No administrator or organization is set up for this tenant. Check the tenant ID, or ask "
    "whoever runs teams-ehr to add you as an administrator."
)

_PLACEHOLDER_BASE = "https://fhir.example/R4"  # a valid base, to validate the other fields
_PLACEHOLDER_GUID = "00000000-0000-4000-8000-000000000000"


@dataclass(frozen=True, slots=True)
class FormState:
    """A form's values (only those that passed validation) and its messages by field."""

    values: Mapping[str, str] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)


def field_errors(exc: ValidationError, names: Sequence[str]) -> dict[str, str]:
    """Field messages from a pydantic ``ValidationError``: the field from ``loc``, or named in
    a model-level message (``"fhir_base refused: …"``); our words, never the input."""
    errors: dict[str, str] = {}
    for error in exc.errors(include_input=False, include_url=False):
        loc = error.get("loc") or ()
        name = str(loc[0]) if loc else ""
        if name not in names:
            message = str(error.get("msg", ""))
            name = next((n for n in names if n in message), FORM)
        errors.setdefault(name, INVALID.get(name, "Check the values and try again."))
    return errors


def config_from_form(
    params: Mapping[str, str], service: AdminService, current: EnvironmentConfig | None = None
) -> tuple[EnvironmentConfig | None, dict[str, str]]:
    """The environment configuration of a form, or field messages (blank required fields and
    the pydantic ``ValidationError`` of :class:`EnvironmentConfig`, per field). Settings the
    form does not show (writer, context link format) are kept from ``current``."""
    base = service.app_base_url
    fhir_base = params.get("fhir_base", "").strip()
    client_id = params.get("client_id", "").strip()
    errors = {
        name: REQUIRED[name]
        for name, value in (("fhir_base", fhir_base), ("client_id", client_id))
        if not value
    }
    if errors:
        return None, errors
    tokens = tuple(t.strip() for t in params.get("context_tokens", "").splitlines() if t.strip())
    document: dict[str, Any] = {}
    if current is not None:
        document.update(current.model_dump(include={"writer", "context_link"}))
    document |= {
        "fhir_base": fhir_base,
        "client_id": client_id,
        "redirect_uri": params.get("redirect_uri", "").strip() or base + "/callback",
        "jwks_url": params.get("jwks_url", "").strip() or base + "/.well-known/jwks.json",
        "epic_client_id": params.get("epic_client_id", "").strip() or None,
        "allow_http": service.policy.allow_http and fhir_base.startswith("http://"),
    }
    if tokens:
        document["context_tokens"] = tokens
    try:
        return EnvironmentConfig.model_validate(document), {}
    except ValidationError as exc:
        errors = field_errors(exc, ENV_FIELDS)
    if "fhir_base" in errors:  # refused before the other fields were checked: check them too
        try:
            EnvironmentConfig.model_validate(
                document | {"fhir_base": _PLACEHOLDER_BASE, "allow_http": False}
            )
        except ValidationError as exc:
            for name, message in field_errors(exc, ENV_FIELDS).items():
                errors.setdefault(name, message)
    return None, errors


def configuration_errors(exc: ConfigurationError) -> dict[str, str]:
    """The messages of a configuration the console's policy refused (e.g. an http FHIR base)."""
    if exc.reason == "admin_http":
        return {"fhir_base": "This console accepts only https FHIR base URLs."}
    return {FORM: "The form could not be saved. Check the values and try again."}


def org_errors(params: Mapping[str, str], names: Sequence[str]) -> dict[str, str]:
    """Messages for the organization fields ``names`` of a form: blank, or refused by
    :class:`Organization` (validated on a stand-in environment, so every field is checked
    even when the environment's own fields are invalid)."""
    errors = {n: REQUIRED[n] for n in names if n in params and not params[n].strip()}
    stand_in = EnvironmentConfig(
        fhir_base=_PLACEHOLDER_BASE,
        client_id="stand-in",
        redirect_uri="https://app.example/callback",
        jwks_url="https://app.example/jwks",
    )
    document = {
        "org_id": "stand-in",
        "display_name": "Stand-in",
        "tenant_id": _PLACEHOLDER_GUID,
        "approver_oid": _PLACEHOLDER_GUID,
        "test": Environment(config=stand_in),
    } | {n: params[n].strip() for n in names if params.get(n, "").strip()}
    try:
        Organization.model_validate(document)
    except ValidationError as exc:
        for name, message in field_errors(exc, ORG_FIELDS).items():
            errors.setdefault(name, message)
    return errors


def kept(params: Mapping[str, str], errors: Mapping[str, str]) -> dict[str, str]:
    """The submitted values to show again: not the CSRF token, not an invalid value."""
    return {k: v for k, v in params.items() if k != "csrf" and k not in errors}


def edit_values(org: Organization, env: Environment | None) -> dict[str, str]:
    """The edit form's values pre-filled from the saved organization and environment."""
    values = {"display_name": org.display_name, "approver_oid": org.approver_oid}
    if env is not None:
        config = env.config
        values |= {
            "fhir_base": config.fhir_base,
            "client_id": config.client_id,
            "epic_client_id": config.epic_client_id or "",
            "redirect_uri": config.redirect_uri,
            "jwks_url": config.jwks_url,
            "context_tokens": "\n".join(config.context_tokens),
        }
    return values


def is_guid(value: str) -> bool:
    """Whether ``value`` is a GUID (a tenant ID)."""
    try:
        normalize_guid(value)
    except ValueError:
        return False
    return True

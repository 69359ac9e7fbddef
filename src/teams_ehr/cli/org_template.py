"""The organization JSON document of ``teams-ehr orgs create``, documented field by field.

:func:`organization_template` is what ``teams-ehr orgs template`` prints and ``teams-ehr init``
writes as ``org.json``; :data:`FIELDS` explains each field (printed with the template, and used
by :func:`explain_errors` to name the field and its fix when ``orgs create`` refuses a
document, :func:`validate_organization`). The shape is :class:`~teams_ehr.orgs.models.Organization` (docs/reference/cli.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from teams_ehr.errors import ConfigurationError, LaunchParameterError
from teams_ehr.orgs.models import Organization
from teams_ehr.smart.canonical import canonical_fhir_base

__all__ = ["FIELDS", "explain_errors", "organization_template", "validate_organization"]

EXAMPLE_FHIR_BASE = "https://ehr.example.org/api/FHIR/R4"
_ZERO_GUID = "00000000-0000-0000-0000-000000000000"
_ENV = "test.config."

FIELDS: dict[str, str] = {
    "org_id": "the organization's id in launch URLs: 1-64 lower-case letters, digits, hyphens",
    "display_name": "the name shown in the admin console",
    "tenant_id": "the organization's Microsoft Entra tenant id (a GUID)",
    "approver_oid": "the Entra object id (GUID) of the person who approves each environment",
    "allow_self_approval": "true lets the approver approve a configuration they entered",
    "test": 'the EHR test environment: {"config": {...}}; "production" has the same shape',
    _ENV + "fhir_base": "the EHR's FHIR base URL (the iss of its launches), https",
    _ENV + "client_id": "the SMART client id the EHR assigned to this app",
    _ENV + "redirect_uri": "{app_base_url}/callback, registered in the EHR as is",
    _ENV + "jwks_url": "{app_base_url}/.well-known/jwks.json, registered in the EHR",
    _ENV + "epic_client_id": "Epic only: the client id sent as Epic-Client-ID (or null)",
    _ENV + "writer": "how attendance is written back: epic_clinical_note, audit_event, "
    "encounter_participant or epic_telehealth_status (docs/guides/attendance.md)",
    _ENV + "context_tokens": "Epic only: the FDI launch context, name=%MNEMONIC% each",
    _ENV + "allow_http": "true admits http:// loopback URLs (FHIR base, this app), for tests only",
}


def organization_template(
    *,
    app_base_url: str,
    fhir_base: str = EXAMPLE_FHIR_BASE,
    client_id: str = "REPLACE-WITH-THE-EHR-CLIENT-ID",
    org_id: str = "example-clinic",
    tenant_id: str = _ZERO_GUID,
    approver_oid: str = _ZERO_GUID,
) -> dict[str, Any]:
    """A valid organization with one ``test`` environment; ``allow_http`` only when the FHIR
    base or this app is served over http (loopback development)."""
    base = app_base_url.rstrip("/")
    http = fhir_base.startswith("http://") or base.startswith("http://")
    return {
        "org_id": org_id,
        "display_name": "Example Clinic",
        "tenant_id": tenant_id,
        "approver_oid": approver_oid,
        "allow_self_approval": True,
        "test": {
            "config": {
                "fhir_base": fhir_base,
                "client_id": client_id,
                "redirect_uri": f"{base}/callback",
                "jwks_url": f"{base}/.well-known/jwks.json",
                "epic_client_id": None,
                "writer": "epic_clinical_note",
                "context_tokens": ["sessionId=%CSN%"],
                "allow_http": http,
            }
        },
    }


def _generic(path: str) -> str:
    """``production.config.x`` → ``test.config.x`` (both environments share one help text)."""
    head, _, rest = path.partition(".")
    return f"test.{rest}" if head == "production" and rest else path


def _fhir_base_problem(name: str, config: Mapping[str, Any]) -> str | None:
    """Why ``config``'s FHIR base is refused, with the fix; ``None`` if it is accepted."""
    value = config.get("fhir_base")
    if not isinstance(value, str):
        return None
    allow_http = config.get("allow_http") is True
    try:
        canonical_fhir_base(value, allow_http=allow_http)
    except LaunchParameterError as exc:
        if value.lower().startswith("http://") and not allow_http:
            fix = (
                f'an http:// FHIR base needs "allow_http": true in {name}.config '
                "(loopback EHRs for tests and sandboxes only; production EHRs use https)"
            )
        else:
            fix = f"give the EHR's FHIR base URL, e.g. {EXAMPLE_FHIR_BASE}"
        return f"{name}.config.fhir_base: {exc} ({exc.reason}): {fix}"
    return None


def explain_errors(document: Any, exc: ValidationError) -> list[str]:
    """One line per problem of ``document``: the field, what is wrong, and how to fix it."""
    lines: dict[str, None] = {}
    environments = document if isinstance(document, Mapping) else {}
    for name in ("test", "production"):
        env = environments.get(name)
        config = env.get("config") if isinstance(env, Mapping) else None
        if isinstance(config, Mapping) and (problem := _fhir_base_problem(name, config)):
            lines[problem] = None
    for error in exc.errors(include_url=False, include_input=False):
        path = ".".join(str(part) for part in error["loc"]) or "(document)"
        help_text = FIELDS.get(_generic(path))
        if error["type"] == "missing":
            fix = f"required: add it — {help_text}" if help_text else "required: add it"
        elif error["type"] == "extra_forbidden":
            fix = "unknown field: remove it or fix its spelling"
        elif "fhir_base refused" in error["msg"]:
            continue  # explained above, with the rule that refused it
        else:
            fix = error["msg"].removeprefix("Value error, ")
            fix = f"{fix} — {help_text}" if help_text else fix
        lines[f"{path}: {fix}"] = None
    return list(lines)


def validate_organization(document: Any, source: str) -> Organization:
    """``document`` as an :class:`Organization`, or one :class:`ConfigurationError`
    (``invalid_organization``) listing each bad field of ``source`` with its fix."""
    try:
        return Organization.model_validate(document)
    except ValidationError as exc:
        problems = "".join(f"\n  {line}" for line in explain_errors(document, exc))
        raise ConfigurationError(
            f"{source}: not a valid organization:{problems}\n"
            "`teams-ehr orgs template` prints a valid document with every field explained",
            reason="invalid_organization",
        ) from None

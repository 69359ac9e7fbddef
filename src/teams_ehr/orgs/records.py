"""Integration records: what the EHR analyst enters in the EHR after approval (requirement C2).

The Microsoft connector shows "integration records for patient and provider launch" once the
configuration is approved, and the Epic analyst copies them into FDI records: a launch URL plus
"context tokens" such as ``sessionId=%CSN%`` and ``departmentId=%PERFDEPID;;; ; ;;NONE;%``
(learn.microsoft.com/microsoft-365/frontline/ehr-admin-epic). For SMART the EHR also needs the
client ID (Epic: one for non-production, one for production), the redirect URI (exact match) and the
JWKS URL of this environment's keys (fhir.epic.com/Documentation?docId=oauth2).

The launch URLs carry the organization id and environment in their path: threat T27 ("the
launch URL registered in Epic carries an org-scoped opaque ID … at launch both the org ID and the
``iss`` must match"). The path templates are parameters so the host decides its routes.

Records exist only for an environment that is active *and* unedited since approval; otherwise
:class:`~teams_ehr.errors.ApprovalRequiredError`. :meth:`IntegrationRecords.model_dump` with
``mode="json"`` is the JSON the admin page renders.
"""

from __future__ import annotations

import re
from datetime import datetime
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

from teams_ehr.errors import ApprovalRequiredError, ConfigurationError
from teams_ehr.orgs.models import EnvironmentName, Organization, config_hash

__all__ = [
    "DEFAULT_PATIENT_PATH",
    "DEFAULT_PROVIDER_PATH",
    "IntegrationRecords",
    "integration_records",
]

DEFAULT_PROVIDER_PATH = "/launch/{org_id}/{environment}"
DEFAULT_PATIENT_PATH = "/patient/{org_id}/{environment}"
_TEMPLATE = re.compile(r"^/(?:[A-Za-z0-9._~/-]|\{org_id\}|\{environment\})*$")


class IntegrationRecords(BaseModel):
    """The records of one approved environment (JSON-able)."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    org_id: str
    environment: EnvironmentName
    fhir_base: str
    provider_launch_url: str
    patient_launch_url: str
    client_id: str
    epic_client_id: str | None
    redirect_uri: str
    jwks_url: str
    context_tokens: tuple[str, ...]
    context_query: str
    config_hash: str
    approved_at: datetime


def _base_url(app_base_url: str, *, allow_http: bool) -> str:
    parts = urlsplit(app_base_url)
    if parts.scheme != "https" and not (allow_http and parts.scheme == "http"):
        raise ConfigurationError("app_base_url must be https", reason="bad_app_base_url")
    if not parts.hostname or parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigurationError(
            "app_base_url must be scheme://host[:port][/path]", reason="bad_app_base_url"
        )
    return app_base_url.rstrip("/")


def _path(template: str, org_id: str, environment: str) -> str:
    if not _TEMPLATE.match(template):
        raise ConfigurationError(
            "path templates may use only {org_id} and {environment}", reason="bad_path_template"
        )
    return template.replace("{org_id}", org_id).replace("{environment}", environment)


def integration_records(
    org: Organization,
    environment: EnvironmentName,
    *,
    app_base_url: str,
    provider_path: str = DEFAULT_PROVIDER_PATH,
    patient_path: str = DEFAULT_PATIENT_PATH,
) -> IntegrationRecords:
    """The integration records of an approved environment (see the module docstring)."""
    env = org.environment(environment)
    if (
        env is None
        or env.state != "active"
        or env.approved_at is None
        or env.approved_config_hash != config_hash(org, environment)
    ):
        raise ApprovalRequiredError(
            "integration records exist only for approved environments", reason="not_approved"
        )
    config = env.config
    base = _base_url(app_base_url, allow_http=config.allow_http)
    return IntegrationRecords(
        org_id=org.org_id,
        environment=environment,
        fhir_base=config.fhir_base,
        provider_launch_url=base + _path(provider_path, org.org_id, environment),
        patient_launch_url=base + _path(patient_path, org.org_id, environment),
        client_id=config.client_id,
        epic_client_id=config.epic_client_id,
        redirect_uri=config.redirect_uri,
        jwks_url=config.jwks_url,
        context_tokens=config.context_tokens,
        context_query="&".join(config.context_tokens),
        config_hash=env.approved_config_hash,
        approved_at=env.approved_at,
    )

"""The commented ``settings.toml`` that ``teams-ehr init`` writes (docs/guides/integrator.md#settings).

One text for every deployment file we ship: ``teams-ehr init`` renders it with fresh keys, and
``examples/*/settings.example.toml`` are it rendered with :data:`PLACEHOLDERS` (a test keeps them
equal). Every setting of :class:`~teams_ehr.config.TeamsEhrSettings` appears, set or commented
out with its default, so the file is also the settings reference a deployer edits.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["PLACEHOLDER_KEY", "PLACEHOLDERS", "SettingsValues", "is_loopback_url", "render"]

ZERO_GUID = "00000000-0000-0000-0000-000000000000"
PLACEHOLDER_KEY = "REPLACE-WITH-BASE64-32-BYTES"


def is_loopback_url(url: str) -> bool:
    """``url``'s host is ``localhost`` or a loopback IP literal (RFC 6890 §2.2.2, RFC 4291)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class SettingsValues:
    """What differs between two rendered files; everything else is the documented defaults."""

    app_base_url: str
    encryption_key: str
    external_id_key: str
    microsoft_client_id: str = ZERO_GUID
    tenant_id: str | None = None
    admin_oid: str | None = None


PLACEHOLDERS = SettingsValues(
    app_base_url="http://127.0.0.1:8000",
    encryption_key=PLACEHOLDER_KEY,
    external_id_key=PLACEHOLDER_KEY,
)


def _toml(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _administrators(values: SettingsValues) -> str:
    if values.tenant_id and values.admin_oid:
        return f"administrators = {{ {_toml(values.tenant_id)} = [{_toml(values.admin_oid)}] }}"
    example = f"{_toml(ZERO_GUID)} = [{_toml(ZERO_GUID)}]"
    return f"# administrators = {{ {example} }}   # Entra tenant id = [object ids]"


def render(values: SettingsValues) -> str:
    """The settings file for ``values``: valid TOML, every setting documented."""
    http = values.app_base_url.startswith("http://")
    allow_http = "true" if http and is_loopback_url(values.app_base_url) else "false"
    return f"""\
# teams-ehr settings (teams_ehr.config.TeamsEhrSettings; docs/guides/integrator.md#settings).
# Relative paths in this file (keys, certificates, a sqlite:/// store) are relative to its folder.
# Any value can come from the environment instead, which wins over this file:
# TEAMS_EHR__SECTION__KEY, e.g. TEAMS_EHR__ENCRYPTION_KEY or TEAMS_EHR__MICROSOFT__CLIENT_SECRET.
# Lines starting with "# name =" show a setting's default; uncomment to change it.

# Where browsers and EHRs reach this app. The SMART redirect URI ({{app_base_url}}/callback), the
# launch URLs and the JWKS URL derive from it. Production: your https URL behind the proxy.
app_base_url = {_toml(values.app_base_url)}

# true admits http:// URLs (this app, FHIR bases, JWKS) for loopback development and tests only;
# keep false in production (https everywhere).
allow_http = {allow_http}

# Behind a reverse proxy: the addresses or networks it connects from, whose X-Forwarded-For and
# X-Forwarded-Proto are believed (docs/guides/integrator.md, "Behind a reverse proxy").
# trusted_proxies = ["127.0.0.1"]

# Microsoft sandbox (docs/guides/ehr-analyst.md): this app plays Microsoft's side (sign-in, Teams)
# so a real EHR sandbox can be tried before the Microsoft 365 tenant is ready. Loopback
# app_base_url only, unless the development flag below is set as well.
# microsoft_sandbox = false
# microsoft_sandbox_off_loopback = false

# SQLite for one process; postgresql://user@host/database for several instances.
store_url = "sqlite:///teams-ehr.sqlite3"

# Secrets: 32 random bytes, base64 (teams-ehr init generates them). encryption_key encrypts
# tokens at rest (AES-256-GCM); external_id_key derives the meetings' externalId (HMAC).
# Keep this file private (mode 0600), or move both to TEAMS_EHR__ENCRYPTION_KEY and
# TEAMS_EHR__EXTERNAL_ID_KEY.
encryption_key = {_toml(values.encryption_key)}
external_id_key = {_toml(values.external_id_key)}

[smart]
# Our SMART client keys, one per EHR environment (teams-ehr keys new --out PATH); the JWKS URL
# serves their public halves. Epic refuses the same key for test and production.
signing_alg = "RS384"                 # or "ES384"
test_key_path = "keys/test.pem"
# production_key_path = "keys/production.pem"
# provider_scopes = ["launch", "openid", "fhirUser"]
# patient_scopes = ["launch", "openid", "fhirUser", "patient/Appointment.rs"]
# approval_scopes = ["openid", "fhirUser"]
# use_post = false                    # true: the authorization request as a form POST
# launch_replay_window = "PT1H"       # a launch value is single use per issuer this long

[microsoft]
# The multi-tenant Entra app registration (docs/guides/microsoft-admin.md): Microsoft sign-in
# and app-only Graph in each organization's tenant.
client_id = {_toml(values.microsoft_client_id)}
# client_secret = "..."               # better: TEAMS_EHR__MICROSOFT__CLIENT_SECRET; or a certificate:
# certificate_path = "keys/graph-cert.pem"
# private_key_path = "keys/graph-key.pem"
# authority_host = "https://login.microsoftonline.com"
# graph_base_url = "https://graph.microsoft.com"
# extra_join_hosts = []               # join-link hosts besides teams.microsoft.com

[admin]
# Who may sign in to the admin console (/admin) and create organizations, per Entra tenant:
# tenant id = [object ids of administrators]. An organization's approver may always administer it.
{_administrators(values)}
# session_ttl = "PT1H"

[attendance]
# The attendance pipeline (docs/guides/attendance.md): Graph notifications in, FHIR writes out.
enabled = true
workers = true                        # run the inbox, outbox and maintenance loops here
# Without these a notification certificate is generated at each start: fine for one
# development instance; in production every instance shares one certificate.
# certificate_path = "keys/notifications-cert.pem"
# certificate_key_path = "keys/notifications-key.pem"
# participant_key = "..."             # base64, 32+ bytes; default derived from external_id_key
# backend_scopes = ["system/DocumentReference.c", "system/DocumentReference.rs", "system/AuditEvent.c", "system/AuditEvent.rs", "system/Encounter.rs", "system/Encounter.u"]
# decrypt_before_ack = true
# renewal_interval = "PT5M"
# poll_interval = "PT1S"
# reconcile_delay = "PT15M"           # reconcile from the attendance report after the meeting
# outbox_max_age = "PT72H"
# permanent_failure_attempts = 3      # a write the EHR refuses for good is dead-lettered after
# inbox_retention = "PT24H"           # at least PT4H: Graph redelivers for up to 4 h
# delivered_retention = "PT23H"
# dead_letter_retention = "PT72H"
# roster_heartbeat = "PT15S"
# roster_grant_margin = "PT2H"
"""

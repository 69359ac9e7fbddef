"""Totality of the organization parsers: an organization file (``teams-ehr orgs create --file``,
docs/guides/ehr-analyst.md) and the admin console's environment form (docs/reference/
integrations.md, the ``/admin`` routes)."""

from __future__ import annotations

import json
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from fuzz_support import JSON_VALUES, assert_total, form_params, shaped
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from teams_ehr.cli.orgs_cmd import _read_organization
from teams_ehr.integrations.admin_forms import config_from_form as _config_from_form
from teams_ehr.orgs.console import AdminPolicy
from teams_ehr.orgs.models import Organization

GUID = "11111111-2222-3333-4444-555555555555"
CONFIG = shaped(
    [
        "fhir_base",
        "client_id",
        "redirect_uri",
        "jwks_url",
        "epic_client_id",
        "writer",
        "context_tokens",
        "context_link",
        "allow_http",
    ],
    st.one_of(
        st.sampled_from(
            [
                "https://fhir.example.org/r4",
                "https://app.example.org/callback",
                "client",
                "sessionId=%CSN%",
                GUID,
            ]
        ),
        JSON_VALUES,
    ),
)
ENVIRONMENT = shaped(
    ["config", "state", "approved_at", "approved_by", "config_hash", "snapshot"],
    st.one_of(CONFIG, JSON_VALUES),
)
ORGANIZATION = shaped(
    [
        "org_id",
        "display_name",
        "tenant_id",
        "approver_oid",
        "allow_self_approval",
        "test",
        "production",
    ],
    st.one_of(st.sampled_from(["org-a", "Clinic", GUID]), ENVIRONMENT, JSON_VALUES),
)
FILE_BYTES = st.one_of(
    ORGANIZATION.map(lambda doc: json.dumps(doc).encode("utf-8", "surrogatepass")),
    st.binary(max_size=64),
    st.sampled_from([b"\xff\xfe{", b"[" * 100_000, b'{"org_id": NaN}']),
)


@given(FILE_BYTES)
@example(b"\xff\xfe{")
@example(b"[" * 100_000)
def test_organization_files_are_total(content: bytes) -> None:
    with TemporaryDirectory() as folder:
        path = Path(folder) / "org.json"
        path.write_bytes(content)
        result = assert_total(_read_organization, path)
    assert isinstance(result, Organization) or type(result).__name__ == "ConfigurationError"


class _Console:
    app_base_url = "https://app.example.org"
    policy = AdminPolicy(administrators={GUID: frozenset({GUID})})


@given(
    form_params(
        ["fhir_base", "client_id", "redirect_uri", "jwks_url", "epic_client_id", "context_tokens"]
    ),
)
def test_admin_environment_forms_are_total(params: dict[str, Any]) -> None:
    """The form parser returns a config, raises a TeamsEhrError, or raises the pydantic
    ValidationError the console route turns into a 400 page listing the fields (reported:
    integrations/admin_routes.py is not total by itself)."""

    def parse() -> Any:
        try:
            return _config_from_form(params, _Console())  # type: ignore[arg-type]
        except ValidationError:
            return None

    assert_total(parse)

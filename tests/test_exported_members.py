"""Lock the public surface: ``__all__`` is sorted, complete and every name resolves (httpx)."""

from __future__ import annotations

import subprocess
import sys

import teams_ehr
from teams_ehr import errors

EXPECTED_NON_ERRORS = {
    "AsyncSmartLaunchClient", "BackendServicesTokenSource", "ClientCredentialsProvider",
    "ClientSecretBasic", "DiscoveryCache", "EntraAppConfig", "EnvironmentConfig", "GraphClient",
    "GraphMeetingFactory", "JoinLinkService", "JwksCache", "JwtProfile", "KeyRing",
    "LaunchContext", "LaunchResult", "LobbyPolicy", "LocalSigner", "Meeting", "MeetingRequest",
    "MicrosoftIdentity", "Organization", "OrganizationRegistry", "PendingAuthorization",
    "PrivateKeyJwt", "Signer", "SmartClientConfig", "SmartConfiguration", "SmartLaunchClient",
    "Store", "TeamsEhr", "TeamsEhrSettings", "TokenResponse", "VisitPolicy", "VisitService",
    "WebResponse", "__version__", "canonical_fhir_base", "load_settings", "open_store",
    "parse_launch_request",
}  # fmt: skip


def test_all_is_sorted_and_every_name_resolves() -> None:
    names = [n for n in teams_ehr.__all__ if n != "__version__"]
    assert names == sorted(names)
    for name in teams_ehr.__all__:
        assert getattr(teams_ehr, name) is not None, name


def test_all_is_exactly_the_errors_plus_the_curated_names() -> None:
    assert set(teams_ehr.__all__) == set(errors.__all__) | EXPECTED_NON_ERRORS


def test_dir_matches_all() -> None:
    assert set(dir(teams_ehr)) - {"install_redaction"} == set(teams_ehr.__all__)


def test_unknown_attribute_is_an_attribute_error() -> None:
    code = "import teams_ehr\ntry:\n    teams_ehr.Nope\nexcept AttributeError as e:\n    print(e)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "has no attribute 'Nope'" in out.stdout

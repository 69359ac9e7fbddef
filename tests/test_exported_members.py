"""Lock the public surface: ``__all__`` is sorted, complete and every name resolves (httpx)."""

from __future__ import annotations

import subprocess
import sys

import teams_ehr
from teams_ehr import errors

EXPECTED_NON_ERRORS = {
    "AttendanceFact",
    "AuditEventWriter",
    "EncounterParticipantWriter",
    "EpicClinicalNoteWriter",
    "EpicTelehealthStatusWriter",
    "FhirTarget",
    "WriteOutcome",
    "AsyncSmartLaunchClient",
    "BackendServicesTokenSource",
    "ClientCredentialsProvider",
    "ClientSecretBasic",
    "DiscoveryCache",
    "DiscoverySnapshot",
    "EntraAppConfig",
    "EnvironmentConfig",
    "GraphClient",
    "GraphMeetingFactory",
    "JoinLinkService",
    "JwksCache",
    "JwtProfile",
    "KeyRing",
    "LaunchContext",
    "LaunchResult",
    "LobbyPolicy",
    "LocalSigner",
    "Meeting",
    "MeetingRequest",
    "MicrosoftIdentity",
    "Organization",
    "OrganizationRegistry",
    "PendingAuthorization",
    "PrivateKeyJwt",
    "RefreshCoordinator",
    "Signer",
    "SmartClientConfig",
    "SmartConfiguration",
    "SmartLaunchClient",
    "TeamsEhr",
    "TeamsEhrSettings",
    "TokenResponse",
    "VisitPolicy",
    "WebResponse",
    "__version__",
    "build_launch_context",
    "canonical_fhir_base",
    "install_redaction",
    "load_settings",
    "open_store",
    "parse_launch_request",
}


def test_all_is_sorted_and_every_name_resolves() -> None:
    names = [n for n in teams_ehr.__all__ if n != "__version__"]
    assert names == sorted(names)
    for name in teams_ehr.__all__:
        assert getattr(teams_ehr, name) is not None, name


def test_all_is_exactly_the_errors_plus_the_curated_names() -> None:
    assert set(teams_ehr.__all__) == set(errors.__all__) | EXPECTED_NON_ERRORS


def test_dir_matches_all() -> None:
    assert set(dir(teams_ehr)) == set(teams_ehr.__all__)


def test_unknown_attribute_is_an_attribute_error() -> None:
    code = "import teams_ehr\ntry:\n    teams_ehr.Nope\nexcept AttributeError as e:\n    print(e)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "has no attribute 'Nope'" in out.stdout

"""teams-ehr: virtual visits in Microsoft Teams launched from any SMART on FHIR EHR.

The curated public names are importable from here; ``__all__`` is locked by
``tests/test_exported_members.py``. Errors are imported eagerly (they are tiny); everything else
is imported on first use (PEP 562), so ``import teams_ehr`` stays light: no httpx, no web
framework, no msgraph, no pytest (requirement P1).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from teams_ehr._redact import install_redaction
from teams_ehr.errors import (
    ApprovalRequiredError,
    AuthorizationDeclinedError,
    ConfigurationError,
    ContextLinkError,
    CrossTenantDeniedError,
    DiscoveryError,
    FhirError,
    FhirUnavailableError,
    GraphError,
    GraphThrottledError,
    IdentityBindingError,
    JoinLinkInvalidError,
    JoinLinkRateLimitedError,
    LaunchParameterError,
    LobbyPolicyViolationError,
    MetadataMismatchError,
    MixUpDetectedError,
    OAuthError,
    PkceUnsupportedError,
    RemoteError,
    SecurityError,
    StateInvalidError,
    StateTransitionError,
    StorageConflictError,
    StorageError,
    TeamsEhrError,
    TokenInvalidError,
    TransportError,
    UntrustedIssuerError,
    UsageError,
    VisitNotReadyError,
    WebhookRejectedError,
)

if TYPE_CHECKING:
    from teams_ehr._version import __version__
    from teams_ehr.app import TeamsEhr
    from teams_ehr.attendance.writers import (
        AttendanceFact,
        AuditEventWriter,
        EncounterParticipantWriter,
        EpicClinicalNoteWriter,
        EpicTelehealthStatusWriter,
        FhirTarget,
        WriteOutcome,
    )
    from teams_ehr.config import TeamsEhrSettings, load_settings
    from teams_ehr.keys import KeyRing, LocalSigner, Signer
    from teams_ehr.orgs.models import EnvironmentConfig, Organization
    from teams_ehr.orgs.registry import OrganizationRegistry
    from teams_ehr.smart.authorize import PendingAuthorization, SmartClientConfig
    from teams_ehr.smart.canonical import canonical_fhir_base
    from teams_ehr.smart.client_auth import ClientSecretBasic, PrivateKeyJwt
    from teams_ehr.smart.context import LaunchContext, build_launch_context
    from teams_ehr.smart.discovery import DiscoveryCache, DiscoverySnapshot, SmartConfiguration
    from teams_ehr.smart.flows import AsyncSmartLaunchClient, LaunchResult, SmartLaunchClient
    from teams_ehr.smart.jwks import JwksCache
    from teams_ehr.smart.jwt_verify import JwtProfile
    from teams_ehr.smart.launch import parse_launch_request
    from teams_ehr.smart.tokens import (
        BackendServicesTokenSource,
        RefreshCoordinator,
        TokenResponse,
    )
    from teams_ehr.store.factory import open_store
    from teams_ehr.teams.credentials import ClientCredentialsProvider
    from teams_ehr.teams.graph_client import GraphClient
    from teams_ehr.teams.identity import MicrosoftIdentity
    from teams_ehr.teams.lobby import LobbyPolicy
    from teams_ehr.teams.meetings import GraphMeetingFactory, Meeting, MeetingRequest
    from teams_ehr.teams.signin import EntraAppConfig
    from teams_ehr.visits.joinlinks import JoinLinkService
    from teams_ehr.visits.policy import VisitPolicy
    from teams_ehr.web import WebResponse


_LAZY: dict[str, str] = {
    # read from package metadata on first use, not on import (importlib.metadata scans sys.path)
    "__version__": "teams_ehr._version",
    "AttendanceFact": "teams_ehr.attendance.writers",
    "AuditEventWriter": "teams_ehr.attendance.writers",
    "EncounterParticipantWriter": "teams_ehr.attendance.writers",
    "EpicClinicalNoteWriter": "teams_ehr.attendance.writers",
    "EpicTelehealthStatusWriter": "teams_ehr.attendance.writers",
    "FhirTarget": "teams_ehr.attendance.writers",
    "WriteOutcome": "teams_ehr.attendance.writers",
    "AsyncSmartLaunchClient": "teams_ehr.smart.flows",
    "BackendServicesTokenSource": "teams_ehr.smart.tokens",
    "ClientCredentialsProvider": "teams_ehr.teams.credentials",
    "ClientSecretBasic": "teams_ehr.smart.client_auth",
    "DiscoveryCache": "teams_ehr.smart.discovery",
    "DiscoverySnapshot": "teams_ehr.smart.discovery",
    "EntraAppConfig": "teams_ehr.teams.signin",
    "EnvironmentConfig": "teams_ehr.orgs.models",
    "GraphClient": "teams_ehr.teams.graph_client",
    "GraphMeetingFactory": "teams_ehr.teams.meetings",
    "JoinLinkService": "teams_ehr.visits.joinlinks",
    "JwksCache": "teams_ehr.smart.jwks",
    "JwtProfile": "teams_ehr.smart.jwt_verify",
    "KeyRing": "teams_ehr.keys",
    "LaunchContext": "teams_ehr.smart.context",
    "LaunchResult": "teams_ehr.smart.flows",
    "LobbyPolicy": "teams_ehr.teams.lobby",
    "LocalSigner": "teams_ehr.keys",
    "Meeting": "teams_ehr.teams.meetings",
    "MeetingRequest": "teams_ehr.teams.meetings",
    "MicrosoftIdentity": "teams_ehr.teams.identity",
    "Organization": "teams_ehr.orgs.models",
    "OrganizationRegistry": "teams_ehr.orgs.registry",
    "PendingAuthorization": "teams_ehr.smart.authorize",
    "PrivateKeyJwt": "teams_ehr.smart.client_auth",
    "RefreshCoordinator": "teams_ehr.smart.tokens",
    "Signer": "teams_ehr.keys",
    "SmartClientConfig": "teams_ehr.smart.authorize",
    "SmartConfiguration": "teams_ehr.smart.discovery",
    "SmartLaunchClient": "teams_ehr.smart.flows",
    "TeamsEhr": "teams_ehr.app",
    "TeamsEhrSettings": "teams_ehr.config",
    "TokenResponse": "teams_ehr.smart.tokens",
    "VisitPolicy": "teams_ehr.visits.policy",
    "WebResponse": "teams_ehr.web",
    "build_launch_context": "teams_ehr.smart.context",
    "canonical_fhir_base": "teams_ehr.smart.canonical",
    "load_settings": "teams_ehr.config",
    "open_store": "teams_ehr.store.factory",
    "parse_launch_request": "teams_ehr.smart.launch",
}

__all__ = [
    "ApprovalRequiredError",
    "AsyncSmartLaunchClient",
    "AttendanceFact",
    "AuditEventWriter",
    "AuthorizationDeclinedError",
    "BackendServicesTokenSource",
    "ClientCredentialsProvider",
    "ClientSecretBasic",
    "ConfigurationError",
    "ContextLinkError",
    "CrossTenantDeniedError",
    "DiscoveryCache",
    "DiscoveryError",
    "DiscoverySnapshot",
    "EncounterParticipantWriter",
    "EntraAppConfig",
    "EnvironmentConfig",
    "EpicClinicalNoteWriter",
    "EpicTelehealthStatusWriter",
    "FhirError",
    "FhirTarget",
    "FhirUnavailableError",
    "GraphClient",
    "GraphError",
    "GraphMeetingFactory",
    "GraphThrottledError",
    "IdentityBindingError",
    "JoinLinkInvalidError",
    "JoinLinkRateLimitedError",
    "JoinLinkService",
    "JwksCache",
    "JwtProfile",
    "KeyRing",
    "LaunchContext",
    "LaunchParameterError",
    "LaunchResult",
    "LobbyPolicy",
    "LobbyPolicyViolationError",
    "LocalSigner",
    "Meeting",
    "MeetingRequest",
    "MetadataMismatchError",
    "MicrosoftIdentity",
    "MixUpDetectedError",
    "OAuthError",
    "Organization",
    "OrganizationRegistry",
    "PendingAuthorization",
    "PkceUnsupportedError",
    "PrivateKeyJwt",
    "RefreshCoordinator",
    "RemoteError",
    "SecurityError",
    "Signer",
    "SmartClientConfig",
    "SmartConfiguration",
    "SmartLaunchClient",
    "StateInvalidError",
    "StateTransitionError",
    "StorageConflictError",
    "StorageError",
    "TeamsEhr",
    "TeamsEhrError",
    "TeamsEhrSettings",
    "TokenInvalidError",
    "TokenResponse",
    "TransportError",
    "UntrustedIssuerError",
    "UsageError",
    "VisitNotReadyError",
    "VisitPolicy",
    "WebResponse",
    "WebhookRejectedError",
    "WriteOutcome",
    "build_launch_context",
    "canonical_fhir_base",
    "install_redaction",
    "load_settings",
    "open_store",
    "parse_launch_request",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'teams_ehr' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

"""teams-ehr: virtual visits in Microsoft Teams launched from any SMART on FHIR EHR.

The public names are re-exported here; ``__all__`` is locked by ``tests/test_exported_members.py``.
This module imports nothing heavy: no web framework, no msgraph, no pytest (SPEC P1).
"""

from teams_ehr._redact import install_redaction
from teams_ehr._version import __version__
from teams_ehr.errors import (
    ApprovalRequiredError,
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
    LaunchParameterError,
    LobbyPolicyViolationError,
    MetadataMismatchError,
    MixUpDetectedError,
    OAuthError,
    PkceUnsupportedError,
    RemoteError,
    SecurityError,
    StateInvalidError,
    StorageConflictError,
    StorageError,
    TeamsEhrError,
    TokenInvalidError,
    TransportError,
    UntrustedIssuerError,
    UsageError,
    WebhookRejectedError,
)

install_redaction()

__all__ = [
    "ApprovalRequiredError",
    "ConfigurationError",
    "ContextLinkError",
    "CrossTenantDeniedError",
    "DiscoveryError",
    "FhirError",
    "FhirUnavailableError",
    "GraphError",
    "GraphThrottledError",
    "IdentityBindingError",
    "JoinLinkInvalidError",
    "LaunchParameterError",
    "LobbyPolicyViolationError",
    "MetadataMismatchError",
    "MixUpDetectedError",
    "OAuthError",
    "PkceUnsupportedError",
    "RemoteError",
    "SecurityError",
    "StateInvalidError",
    "StorageConflictError",
    "StorageError",
    "TeamsEhrError",
    "TokenInvalidError",
    "TransportError",
    "UntrustedIssuerError",
    "UsageError",
    "WebhookRejectedError",
    "__version__",
]

"""The one exception hierarchy of teams-ehr.

Every error the library raises is a :class:`TeamsEhrError`. Local misuse and remote misbehaviour
are separate branches (h11's rule), and every class carries a stable ``reason`` code and an
``http_status_hint`` that integrations turn into a response status::

    TeamsEhrError
    ├── UsageError                     local: the caller misused or misconfigured the library
    │   ├── ConfigurationError         invalid configuration (bad key, TTL > cap, unknown org …)
    │   └── StateTransitionError       an organization environment cannot take that step now (409)
    ├── SecurityError                  a request was refused to protect the user (input is hostile)
    │   ├── UntrustedIssuerError       `iss` is not an approved, active FHIR base (SMART §app-launch)
    │   ├── LaunchParameterError       `iss`/`launch` missing, too long or with forbidden characters
    │   ├── StateInvalidError          callback `state` missing, unknown, reused, expired, other session
    │   ├── MixUpDetectedError         callback `iss` (RFC 9207) differs from the authorization's
    │   ├── TokenInvalidError          an inbound JWT failed verification (``reason`` says which rule)
    │   ├── IdentityBindingError       Microsoft sign-in cannot bind (no launch session, re-bind …)
    │   ├── CrossTenantDeniedError     a token, notification or approver from another tenant
    │   ├── ApprovalRequiredError      the organization environment is not approved and active
    │   ├── JoinLinkInvalidError       patient join link unknown, expired or revoked (uniform 404)
    │   │   └── JoinLinkRateLimitedError  too many join-link attempts from one client (429)
    │   ├── ContextLinkError           Epic context-aware link: bad key, padding, format, stale, replay
    │   └── WebhookRejectedError       a Graph notification failed authentication or validation
    ├── RemoteError                    a peer (EHR, Microsoft Graph/Entra, FHIR server) misbehaved
    │   ├── TransportError             network failure talking to a peer (``__cause__`` is httpx's)
    │   ├── DiscoveryError             SMART configuration missing, invalid, redirected, oversized
    │   │   ├── MetadataMismatchError  discovery differs from the snapshot taken at approval
    │   │   └── PkceUnsupportedError   the server does not offer PKCE S256
    │   ├── OAuthError                 RFC 6749 §5.2 error from an authorization or token endpoint
    │   │   └── AuthorizationDeclinedError  the person declined consent (``access_denied``; 403)
    │   ├── GraphError                 Microsoft Graph refused (status, code, request id)
    │   │   ├── GraphThrottledError    429/503/504 past the caller's deadline (``retry_after``)
    │   │   └── LobbyPolicyViolationError  the meeting's lobby read-back does not match the policy
    │   └── FhirError                  a FHIR server refused a write (status, OperationOutcome codes)
    │       └── FhirUnavailableError   FHIR server down or throttled; retry at ``retry_at``
    ├── VisitNotReadyError             the visit's meeting does not exist yet (patient came early)
    └── StorageError                   the store failed (I/O, migration, integrity)
        └── StorageConflictError       a uniqueness or version rule refused the write

Messages and ``repr`` never contain tokens, secrets, join links or patient identifiers: errors
carry codes and public metadata only (design rule 5).
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

__all__ = [
    "ApprovalRequiredError",
    "AuthorizationDeclinedError",
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
    "JoinLinkRateLimitedError",
    "LaunchParameterError",
    "LobbyPolicyViolationError",
    "MetadataMismatchError",
    "MixUpDetectedError",
    "OAuthError",
    "PkceUnsupportedError",
    "RemoteError",
    "SecurityError",
    "StateInvalidError",
    "StateTransitionError",
    "StorageConflictError",
    "StorageError",
    "TeamsEhrError",
    "TokenInvalidError",
    "TransportError",
    "UntrustedIssuerError",
    "UsageError",
    "VisitNotReadyError",
    "WebhookRejectedError",
]


class TeamsEhrError(Exception):
    """Root of every error raised by teams-ehr.

    ``reason`` is a stable, machine-readable code (snake_case); ``http_status_hint`` is the status
    an integration should answer with. The message is safe to log: never put secrets in it.
    """

    default_reason: ClassVar[str] = "error"
    http_status_hint: ClassVar[int] = 500

    def __init__(self, message: str = "", *, reason: str | None = None) -> None:
        self.reason = reason or self.default_reason
        super().__init__(message or self.reason)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} reason={self.reason!r}>"


# -- local misuse -------------------------------------------------------------------------------


class UsageError(TeamsEhrError):
    """The caller used the library wrongly (wrong call order, bad argument)."""

    default_reason = "usage"
    http_status_hint = 500


class ConfigurationError(UsageError):
    """Configuration is invalid or incomplete."""

    default_reason = "configuration"


class StateTransitionError(UsageError):
    """The approval state machine has no such step from the current state (nothing changed)."""

    default_reason = "illegal_transition"
    http_status_hint = 409


# -- hostile or invalid input -------------------------------------------------------------------


class SecurityError(TeamsEhrError):
    """A request was refused to protect users; answer with a generic body."""

    default_reason = "refused"
    http_status_hint = 400


class UntrustedIssuerError(SecurityError):
    """`iss` is not the canonical FHIR base of an approved, active organization environment."""

    default_reason = "untrusted_issuer"


class LaunchParameterError(SecurityError):
    """A launch parameter is missing, too long, or has forbidden characters."""

    default_reason = "bad_launch_parameter"


class StateInvalidError(SecurityError):
    """Callback `state` is missing, unknown, reused, expired or from another session."""

    default_reason = "state_invalid"


class MixUpDetectedError(SecurityError):
    """The authorization response names another issuer than the request (RFC 9207)."""

    default_reason = "mix_up"


class TokenInvalidError(SecurityError):
    """An inbound JWT (id_token, validation token, assertion) failed verification."""

    default_reason = "token_invalid"
    http_status_hint = 401


class IdentityBindingError(SecurityError):
    """The clinician's Microsoft identity cannot be bound to the EHR user."""

    default_reason = "identity_binding"
    http_status_hint = 403


class CrossTenantDeniedError(SecurityError):
    """A token, notification or person from another tenant or organization."""

    default_reason = "cross_tenant"
    http_status_hint = 403


class ApprovalRequiredError(SecurityError):
    """The organization environment is not approved and active."""

    default_reason = "approval_required"
    http_status_hint = 403


class JoinLinkInvalidError(SecurityError):
    """A patient join link is unknown, expired, revoked or rate-limited (uniform 404).

    ``opens_at`` (aware UTC) is when a ``not_yet_valid`` link opens, so the page can say so; it
    is public metadata of the window, never in the message or ``repr``.
    """

    default_reason = "join_link_invalid"
    http_status_hint = 404

    def __init__(
        self, message: str = "", *, reason: str | None = None, opens_at: datetime | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        self.opens_at = opens_at


class JoinLinkRateLimitedError(JoinLinkInvalidError):
    """Too many join-link attempts from one client; the body stays the uniform one (threat T20).

    ``retry_after`` is in seconds. Only the status (429) differs, never the body, so it reveals
    nothing about any token.
    """

    default_reason = "join_link_rate_limited"
    http_status_hint = 429

    def __init__(self, message: str = "", *, retry_after: int = 60) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ContextLinkError(SecurityError):
    """An Epic context-aware link could not be decrypted, parsed, or is stale or replayed."""

    default_reason = "context_link_invalid"


class WebhookRejectedError(SecurityError):
    """A Graph change notification failed authentication or validation."""

    default_reason = "webhook_rejected"
    http_status_hint = 403


# -- remote misbehaviour ------------------------------------------------------------------------


class RemoteError(TeamsEhrError):
    """A remote peer failed or refused; ``status_code`` is the peer's HTTP status if any."""

    default_reason = "remote"
    http_status_hint = 502

    def __init__(
        self, message: str = "", *, reason: str | None = None, status_code: int | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        self.status_code = status_code


class TransportError(RemoteError):
    """The network failed talking to a peer (``__cause__`` holds httpx's exception), or the peer's
    name resolved to an internal address (``internal_address``, threat T29): nothing was sent."""

    default_reason = "transport"
    http_status_hint = 503


class DiscoveryError(RemoteError):
    """SMART discovery failed: missing, invalid, redirected or oversized configuration."""

    default_reason = "discovery"


class MetadataMismatchError(DiscoveryError):
    """Discovered endpoints differ from the snapshot taken at approval (threat T03)."""

    default_reason = "metadata_mismatch"


class PkceUnsupportedError(DiscoveryError):
    """The server does not advertise PKCE S256 (SMART conformance: REQUIRED)."""

    default_reason = "pkce_unsupported"


class OAuthError(RemoteError):
    """An RFC 6749 §5.2 error from an authorization or token endpoint.

    ``error`` is the server's error code; ``description`` is kept off ``str()`` because servers
    may echo request values in it.
    """

    default_reason = "oauth"

    def __init__(
        self,
        message: str = "",
        *,
        error: str = "server_error",
        description: str | None = None,
        status_code: int | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message or f"OAuth error: {error}", reason=reason, status_code=status_code)
        self.error = error
        self.description = description

    def __repr__(self) -> str:
        return f"<{type(self).__name__} error={self.error!r}>"


class AuthorizationDeclinedError(OAuthError):
    """The person declined at the authorization server: a choice, not a fault.

    The redirect back carried ``error=access_denied`` (RFC 6749 §4.1.2.1: "the resource owner
    … denied the request"), or Entra's ``consent_required``. ``reason`` is that code. The hint is
    403, not 502: nothing failed, and retrying cannot help until the person starts again and
    allows access (RFC 9110 §15.5.4: the server understood the request and refuses to fulfil
    it). :func:`teams_ehr.web.error_response` shows a "you declined" page.
    """

    default_reason = "access_denied"
    http_status_hint = 403


class GraphError(RemoteError):
    """Microsoft Graph (or Entra) refused a request."""

    default_reason = "graph"

    def __init__(
        self,
        message: str = "",
        *,
        status_code: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, reason=reason, status_code=status_code)
        self.code = code
        self.request_id = request_id

    def __repr__(self) -> str:
        return f"<{type(self).__name__} status={self.status_code} code={self.code!r}>"


class GraphThrottledError(GraphError):
    """Graph kept throttling past the caller's deadline; ``retry_after`` is in seconds."""

    default_reason = "graph_throttled"
    http_status_hint = 503

    def __init__(
        self,
        message: str = "",
        *,
        retry_after: float | None = None,
        status_code: int | None = 429,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, code=code, request_id=request_id)
        self.retry_after = retry_after


class LobbyPolicyViolationError(GraphError):
    """The meeting's settings read back from Graph do not match the lobby policy (fail closed)."""

    default_reason = "lobby_policy_violation"


class FhirError(RemoteError):
    """A FHIR server refused a request; ``issue_codes`` are OperationOutcome issue codes."""

    default_reason = "fhir"

    def __init__(
        self,
        message: str = "",
        *,
        status_code: int | None = None,
        issue_codes: tuple[str, ...] = (),
        reason: str | None = None,
    ) -> None:
        super().__init__(message, reason=reason, status_code=status_code)
        self.issue_codes = issue_codes


class FhirUnavailableError(FhirError):
    """The FHIR server is down or throttling; try again at ``retry_at`` (aware UTC) if known."""

    default_reason = "fhir_unavailable"
    http_status_hint = 503

    def __init__(
        self,
        message: str = "",
        *,
        status_code: int | None = None,
        retry_at: datetime | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.retry_at = retry_at


class StorageError(TeamsEhrError):
    """The store failed: I/O, migration or integrity."""

    default_reason = "storage"
    http_status_hint = 503


class StorageConflictError(StorageError):
    """A uniqueness or optimistic-version rule refused the write (nothing was changed)."""

    default_reason = "storage_conflict"
    http_status_hint = 409


class VisitNotReadyError(TeamsEhrError):
    """The appointment has no verified meeting yet: the patient arrived before the visit was
    prepared (by the clinician's launch or ``runtime.visits.meetings.prepare_visit``)."""

    default_reason = "visit_not_ready"
    http_status_hint = 409

"""Graph error JSON → the library's errors (requirement B4; learn.microsoft.com/graph/errors).

Graph answers ``{"error": {"code", "message", "innerError": {"request-id", "client-request-id"}}}``.
:func:`graph_error` keeps status, code and request id; Graph's own message is never copied into the
error (it can echo URLs and user ids). A 401/403 caused by a missing Teams application access policy
("No application access policy found for this app", or the older "App … is not authorized to Create
meeting on behalf of user …") gets its own reason and the fix, with the docs link.
"""

from __future__ import annotations

from typing import Any

import httpx

from teams_ehr.errors import GraphError, GraphThrottledError

__all__ = ["APPLICATION_ACCESS_POLICY_DOCS", "graph_error", "graph_error_from_response"]

APPLICATION_ACCESS_POLICY_DOCS = (
    "https://learn.microsoft.com/graph/cloud-communication-online-meeting-application-access-policy"
)
_ACCESS_POLICY_HINTS = (
    "application access policy",
    "not authorized to create meeting on behalf of user",
    "is not allowed to perform operations on the user",
)
_REASONS = {400: "graph_bad_request", 401: "graph_unauthorized", 403: "graph_forbidden"}
_REASONS |= {404: "graph_not_found", 409: "graph_conflict", 412: "graph_precondition_failed"}


def graph_error(
    status: int,
    *,
    code: str | None,
    message: str | None,
    request_id: str | None,
    route: str,
    retry_after: float | None = None,
) -> GraphError:
    """The library error for a Graph failure. ``message`` (Graph's text) only drives the reason
    for a missing application access policy; it is never copied into the error."""
    code = (code or "")[:64] or None
    if status in (429, 503, 504) and retry_after is not None:
        return GraphThrottledError(
            f"Graph {route} throttled: HTTP {status}",
            retry_after=retry_after,
            status_code=status,
            code=code,
            request_id=request_id,
        )
    lowered = (message or "").lower()
    if status in (401, 403) and any(hint in lowered for hint in _ACCESS_POLICY_HINTS):
        return GraphError(
            f"Graph {route} refused: HTTP {status} {code}. The organizer has no Teams application "
            "access policy for this app: run New-CsApplicationAccessPolicy and "
            "Grant-CsApplicationAccessPolicy (per user or -Global); changes take up to 30 minutes. "
            f"See {APPLICATION_ACCESS_POLICY_DOCS}",
            status_code=status,
            code=code,
            request_id=request_id,
            reason="graph_application_access_policy_missing",
        )
    reason = _REASONS.get(status, "graph_server_error" if status >= 500 else "graph_http_error")
    return GraphError(
        f"Graph {route} failed: HTTP {status} {code or ''}".rstrip(),
        status_code=status,
        code=code,
        request_id=request_id,
        reason=reason,
    )


def graph_error_from_response(
    response: httpx.Response, route: str, *, retry_after: float | None = None
) -> GraphError:
    """Parse Graph's error JSON (``error.code``, ``error.innerError.request-id``)."""
    code = message = request_id = None
    try:
        body: Any = response.json()
    except (ValueError, RecursionError):
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = error.get("code") if isinstance(error.get("code"), str) else None
        message = error.get("message") if isinstance(error.get("message"), str) else None
        inner = error.get("innerError") or error.get("innererror")
        if isinstance(inner, dict) and isinstance(inner.get("request-id"), str):
            request_id = inner["request-id"][:64]
    request_id = request_id or response.headers.get("request-id", "")[:64] or None
    return graph_error(
        response.status_code,
        code=code,
        message=message,
        request_id=request_id,
        route=route,
        retry_after=retry_after,
    )

"""FHIR REST helpers shared by the write-back strategies: requests, error mapping, create-once.

The interactions are those of the FHIR R4 RESTful API (https://hl7.org/fhir/R4/http.html):

* **Create once.** :func:`create_once_flow` uses conditional create — ``POST`` with
  ``If-None-Exist: identifier=system|value``: 201 created, 200 an existing match, 412 several
  matches → ``duplicate_identifier`` (https://hl7.org/fhir/R4/http.html#ccreate). Where the server
  lacks it, the flow searches first (https://hl7.org/fhir/R4/search.html; hits are re-checked
  client-side, ``next`` pages followed only on the same base) and creates on no match; callers
  serialize that per identifier (the writer's ``lock_key``).
* **Errors.** :func:`fhir_error_for`: 408, 409, 429 and 5xx →
  :class:`~teams_ehr.errors.FhirUnavailableError` with ``retry_at`` from ``Retry-After``
  (RFC 9110 §10.2.3, capped at one hour); 401 → ``FhirError(reason="fhir_unauthorized")``; other
  4xx → ``FhirError`` with the OperationOutcome issue codes
  (https://hl7.org/fhir/R4/operationoutcome.html). Messages name the interaction and status
  only: no URL, id, token or body text.

Every request carries the bearer token and a response size cap for the drivers.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from pydantic import SecretStr

from teams_ehr._types import Clock, Flow, JsonObject, utc_now
from teams_ehr.attendance.fhir_resources import ResourceIdentity
from teams_ehr.attendance.writers.models import WriteOutcome
from teams_ehr.errors import FhirError, FhirUnavailableError
from teams_ehr.sansio import with_max_bytes

__all__ = [
    "FHIR_JSON",
    "MAX_FHIR_BODY",
    "create_once_flow",
    "fhir_error_for",
    "fhir_request",
    "response_json",
    "retry_at_from",
]

FHIR_JSON = "application/fhir+json"
MAX_FHIR_BODY = 1_048_576
MAX_RETRY_AFTER = timedelta(hours=1)
_RETRYABLE_4XX = frozenset({408, 409, 429})
_POISON_REASONS = {400: "fhir_bad_request", 403: "fhir_forbidden", 404: "fhir_not_found"}


def fhir_request(
    method: str,
    url: str,
    access_token: SecretStr,
    *,
    body: JsonObject | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Request:
    """A FHIR JSON request (``application/fhir+json``) with the bearer token and a size cap."""
    all_headers = {
        "Accept": FHIR_JSON,
        "Authorization": f"Bearer {access_token.get_secret_value()}",
    }
    if body is not None:
        all_headers["Content-Type"] = FHIR_JSON
    all_headers.update(headers or {})
    content = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
    return with_max_bytes(
        httpx.Request(method, url, headers=all_headers, content=content), MAX_FHIR_BODY
    )


def retry_at_from(response: httpx.Response, now: datetime) -> datetime | None:
    """``Retry-After`` (delta-seconds or HTTP-date, RFC 9110 §10.2.3), capped at one hour."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        when = now + timedelta(seconds=max(0, int(value.strip())))
    except OverflowError:  # more seconds than a timedelta holds: past the cap anyway
        when = now + MAX_RETRY_AFTER
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
    return min(when, now + MAX_RETRY_AFTER)


def _issue_codes(response: httpx.Response) -> tuple[str, ...]:
    body = response_json(response)
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return ()
    issues = body.get("issue")
    if not isinstance(issues, list):
        return ()
    return tuple(str(i.get("code")) for i in issues if isinstance(i, dict) and i.get("code"))


def fhir_error_for(response: httpx.Response, what: str, now: datetime) -> FhirError:
    """The typed error for a non-2xx FHIR response (no URL, id or body text in the message)."""
    status = response.status_code
    message = f"FHIR {what} answered {status}"
    if status in _RETRYABLE_4XX or status >= 500:
        return FhirUnavailableError(
            message, status_code=status, retry_at=retry_at_from(response, now)
        )
    codes = _issue_codes(response)
    if status == 401:
        return FhirError(message, status_code=status, issue_codes=codes, reason="fhir_unauthorized")
    if status == 412:
        reason = "duplicate_identifier"
    else:
        reason = _POISON_REASONS.get(
            status, "fhir_unprocessable" if status == 422 else "fhir_rejected"
        )
    return FhirError(message, status_code=status, issue_codes=codes, reason=reason)


def response_json(response: httpx.Response) -> Any:
    """The response's JSON body, or ``None`` when it is not JSON."""
    try:
        return response.json()
    except (ValueError, RecursionError):
        return None


def _created_id(response: httpx.Response, resource_type: str) -> str | None:
    body = response_json(response)
    if isinstance(body, dict) and body.get("resourceType") == resource_type and body.get("id"):
        return str(body["id"])
    location = str(
        response.headers.get("location") or response.headers.get("content-location") or ""
    )
    if location and f"{resource_type}/" in location:
        return location.split(f"{resource_type}/", 1)[1].split("/", 1)[0]
    return None


def _search_hits(bundle: Any, identity: ResourceIdentity) -> tuple[list[JsonObject], str | None]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FhirError("FHIR search answered a non-Bundle", reason="fhir_bad_search")
    entries, links = bundle.get("entry"), bundle.get("link")
    hits = [
        e["resource"]
        for e in (entries if isinstance(entries, list) else ())
        if isinstance(e, dict) and isinstance(e.get("resource"), dict)
        if identity.matches(e["resource"])
    ]
    following = next(
        (
            link["url"]
            for link in (links if isinstance(links, list) else ())
            if isinstance(link, dict)
            and link.get("relation") == "next"
            and isinstance(link.get("url"), str)
        ),
        None,
    )
    return hits, following


def create_once_flow(
    fhir_base: str,
    access_token: SecretStr,
    resource: JsonObject,
    identity: ResourceIdentity,
    *,
    conditional_create: bool,
    search_query: str | None = None,
    clock: Clock = utc_now,
    max_pages: int = 5,
) -> Flow[WriteOutcome]:
    """Create ``resource`` unless a resource with ``identity`` exists (never a duplicate).

    Conditional create when the server supports it; otherwise search (``search_query``, default
    the identity query; hits are re-checked client-side, ``next`` pages followed on the same
    base) and create on no match."""
    base = fhir_base.rstrip("/")
    rtype = identity.resource_type
    prefer = {"Prefer": "return=representation"}
    if conditional_create:
        headers = {**prefer, "If-None-Exist": identity.query()}
        response = yield fhir_request(
            "POST", f"{base}/{rtype}", access_token, body=resource, headers=headers
        )
        if response.status_code == 201:
            return WriteOutcome("created", rtype, _created_id(response, rtype))
        if response.status_code == 200:
            return WriteOutcome("existing", rtype, _created_id(response, rtype))
        raise fhir_error_for(response, f"create {rtype}", clock())
    url: str | None = f"{base}/{rtype}?{search_query or identity.query()}"
    found: list[JsonObject] = []
    pages = 0
    while url is not None and pages < max_pages:
        response = yield fhir_request("GET", url, access_token)
        if not response.is_success:
            raise fhir_error_for(response, f"search {rtype}", clock())
        hits, url = _search_hits(response_json(response), identity)
        found.extend(hits)
        pages += 1
        if url is not None and not url.startswith(base + "/"):
            url = None  # never follow a paging link off the organization's FHIR base
    if len(found) > 1:
        raise FhirError(f"FHIR search {rtype} found several", reason="duplicate_identifier")
    if found:
        found_id = found[0].get("id")
        return WriteOutcome("existing", rtype, str(found_id) if found_id else None)
    response = yield fhir_request(
        "POST", f"{base}/{rtype}", access_token, body=resource, headers=prefer
    )
    if response.is_success:
        return WriteOutcome("created", rtype, _created_id(response, rtype))
    raise fhir_error_for(response, f"create {rtype}", clock())

"""An in-memory FHIR R4 server for tests and the demo (requirements E1, D4).

:class:`FakeFhirServer` is an ``httpx.Request -> httpx.Response`` handler (plug it into
``httpx.MockTransport``, into :class:`~teams_ehr.testing.fake_ehr.FakeEhr` as ``fhir_handler``,
or serve it on loopback with :meth:`FakeFhirServer.asgi_app`). It implements the RESTful
interactions attendance write-back needs (https://hl7.org/fhir/R4/http.html):

* ``POST [base]/[type]`` create (201, ``Location``, ``ETag``), with conditional create
  ``If-None-Exist`` (§3.1.0.8.1: no match → 201, one → 200 with the existing resource,
  several → 412) unless ``supports_conditional_create=False`` — then the header is ignored,
  as servers that do not implement it do, and a careless retry makes a duplicate;
* ``GET [base]/[type]/[id]`` read; ``PUT`` update with optional ``If-Match`` (412 on a stale
  version); types in ``read_only_types`` answer 405 (Epic's ``Encounter``);
* ``GET [base]/[type]?…`` search: ``identifier`` (``system|value`` or ``value``), ``_tag``,
  ``_id``, ``encounter`` and ``patient``/``subject`` references, ``_count`` with ``next`` links;
  other parameters are ignored (lenient servers do that; callers must re-check hits);
* errors as ``OperationOutcome``; a bearer check through a callable (401);
* scripted faults: :meth:`outage` (503 + ``Retry-After`` until a time on the injected clock),
  :meth:`fail_next` (any status, e.g. 429/503 with ``Retry-After``, 400/422 poison),
  :meth:`lose_next_response` (the write happens, the reply is lost as a read timeout);
* what clients wrote, for assertions: :meth:`FakeFhirServer.written` (seeded resources aside);
* the Epic telehealth ``SetExternalConnectionStatus`` endpoint (path configurable, relative to
  the Interconnect base = the FHIR base without ``/api/FHIR/R4``); calls are recorded in
  :attr:`telehealth_calls` (see :mod:`teams_ehr.attendance.epic_telehealth` for what is assumed).

``validate=True`` checks every created or updated resource against the ``fhir.resources`` R4B
models (a test dependency) and answers 422 on a violation.
"""

from __future__ import annotations

import copy
import json
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx

from teams_ehr._types import Clock, JsonObject, utc_now

if TYPE_CHECKING:
    from teams_ehr.testing.asgi import ASGIApp

__all__ = ["DEFAULT_TELEHEALTH_PATH", "FakeFhirServer"]

DEFAULT_TELEHEALTH_PATH = "/api/epic/2018/Telehealth/ContextLinking/SetExternalConnectionStatus"
FHIR_JSON = "application/fhir+json"


def outcome(code: str, text: str, severity: str = "error") -> JsonObject:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": text}],
    }


def _response(
    status: int, body: JsonObject | None, headers: dict[str, str] | None = None
) -> httpx.Response:
    content = json.dumps(body).encode() if body is not None else b""
    all_headers = {"content-type": FHIR_JSON} if body is not None else {}
    all_headers.update(headers or {})
    return httpx.Response(status, content=content, headers=all_headers)


_STATUS_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    409: "conflict",
    412: "conflict",
    422: "processing",
    429: "throttled",
    503: "transient",
}


class FakeFhirServer:
    """In-memory FHIR R4 store; see the module docstring. Thread-safe (loopback use)."""

    def __init__(
        self,
        base_url: str,
        *,
        clock: Clock = utc_now,
        supports_conditional_create: bool = True,
        token_check: Callable[[str], bool] | None = None,
        read_only_types: frozenset[str] = frozenset(),
        telehealth_path: str = DEFAULT_TELEHEALTH_PATH,
        validate: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.clock = clock
        self.supports_conditional_create = supports_conditional_create
        self.token_check = token_check
        self.read_only_types = read_only_types
        self.telehealth_path = telehealth_path
        self.validate = validate
        self.telehealth_calls: list[dict[str, str]] = []
        self.request_log: list[tuple[str, str]] = []
        self._store: dict[str, dict[str, JsonObject]] = {}
        self._index: dict[tuple[str, str, str], set[str]] = {}
        self._order: dict[tuple[str, str], int] = {}
        self._written: dict[tuple[str, str], None] = {}  # (type, id) in first-write order
        self._next_id = 0
        self._outage_until: datetime | None = None
        self._outage_retry_after: int | None = None
        self._failures: deque[tuple[int, int | None, str | None]] = deque()
        self._lose_responses = 0
        self._lose_method: str | None = None
        self._lock = threading.RLock()
        base = urlsplit(self.base_url)
        self._base_path = base.path
        self._interconnect_path = base.path
        for suffix in ("/api/FHIR/R4", "/api/FHIR/STU3", "/api/FHIR/DSTU2"):
            if base.path.lower().endswith(suffix.lower()):
                self._interconnect_path = base.path[: -len(suffix)]

    # -- scripting and assertions ---------------------------------------------------------------

    def seed(self, resource: JsonObject) -> JsonObject:
        """Store ``resource`` as is (an ``id`` is assigned if missing); returns the stored copy."""
        with self._lock:
            return copy.deepcopy(self._put_new(copy.deepcopy(resource)))

    def resources(self, resource_type: str) -> list[JsonObject]:
        """Deep copies of every stored resource of ``resource_type``, in creation order."""
        with self._lock:
            return [copy.deepcopy(r) for r in self._store.get(resource_type, {}).values()]

    def written(self, resource_type: str | None = None) -> list[JsonObject]:
        """Deep copies of the resources a client created or updated (never the seeded ones),
        each once at its current version, in first-write order; only ``resource_type`` if
        given. A conditional create that matched an existing resource wrote nothing."""
        with self._lock:
            return [
                copy.deepcopy(self._store[rtype][rid])
                for rtype, rid in self._written
                if resource_type in (None, rtype)
            ]

    def outage(self, until: datetime | None, *, retry_after: int | None = None) -> None:
        """Answer 503 (with ``Retry-After`` if given) until ``until`` on the clock; ``None`` ends."""
        with self._lock:
            self._outage_until = until
            self._outage_retry_after = retry_after

    def fail_next(
        self,
        status: int,
        *,
        retry_after: int | None = None,
        times: int = 1,
        code: str | None = None,
    ) -> None:
        """The next ``times`` requests answer ``status`` with an OperationOutcome."""
        with self._lock:
            self._failures.extend([(status, retry_after, code)] * times)

    def lose_next_response(self, *, times: int = 1, method: str | None = None) -> None:
        """Process the next ``times`` requests (of ``method`` only, if given), then raise a read
        timeout instead of answering: the write happened, the client cannot know."""
        with self._lock:
            self._lose_responses = times
            self._lose_method = method

    def asgi_app(self) -> ASGIApp:
        """This fake as an ASGI 3 app (serve it with ``teams_ehr.testing.loopback``)."""
        from teams_ehr.testing.asgi import asgi_app_from_handler

        return asgi_app_from_handler(self.handler)

    # -- the handler ---------------------------------------------------------------------------

    def handler(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.request_log.append((request.method, request.url.path))
            response = self._handle(request)
            if self._lose_responses > 0 and self._lose_method in (None, request.method):
                self._lose_responses -= 1
                raise httpx.ReadTimeout("response lost (scripted)", request=request)
            return response

    def _handle(self, request: httpx.Request) -> httpx.Response:
        scripted = self._scripted_failure()
        if scripted is not None:
            return scripted
        path = request.url.path
        if path == self._interconnect_path + self.telehealth_path:
            return self._telehealth(request)
        if not self._authorized(request):
            return _response(
                401,
                outcome("login", "a valid bearer token is required"),
                {"www-authenticate": 'Bearer error="invalid_token"'},
            )
        if not path.startswith(self._base_path + "/"):
            return _response(404, outcome("not-found", "unknown path"))
        parts = [p for p in path[len(self._base_path) + 1 :].split("/") if p]
        if parts == ["metadata"] and request.method == "GET":
            return _response(200, self._capability_statement())
        if len(parts) == 1 and request.method == "POST":
            return self._create(parts[0], request)
        if len(parts) == 1 and request.method == "GET":
            return self._search(parts[0], request)
        if len(parts) == 2 and request.method == "GET":
            return self._read(parts[0], parts[1])
        if len(parts) == 2 and request.method == "PUT":
            return self._update(parts[0], parts[1], request)
        return _response(405, outcome("not-supported", "interaction not supported"))

    def _scripted_failure(self) -> httpx.Response | None:
        if self._failures:
            status, retry_after, code = self._failures.popleft()
            headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
            issue = code or _STATUS_CODES.get(status, "exception")
            return _response(status, outcome(issue, "scripted failure"), headers)
        if self._outage_until is not None and self.clock() < self._outage_until:
            headers = {}
            if self._outage_retry_after is not None:
                headers["retry-after"] = str(self._outage_retry_after)
            return _response(503, outcome("transient", "service unavailable"), headers)
        return None

    def _authorized(self, request: httpx.Request) -> bool:
        if self.token_check is None:
            return True
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and bool(token) and self.token_check(token)

    # -- interactions --------------------------------------------------------------------------

    def _body(self, request: httpx.Request, rtype: str) -> JsonObject | httpx.Response:
        try:
            body = json.loads(request.content)
        except ValueError:
            return _response(400, outcome("invalid", "body is not JSON"))
        if not isinstance(body, dict) or body.get("resourceType") != rtype:
            return _response(400, outcome("invalid", "resourceType does not match the URL"))
        problem = self._validation_problem(body)
        if problem is not None:
            return _response(422, outcome("invalid", problem))
        return body

    def _validation_problem(self, body: JsonObject) -> str | None:
        if not self.validate:
            return None
        import importlib

        rtype = str(body["resourceType"])
        module = importlib.import_module(f"fhir.resources.R4B.{rtype.lower()}")
        try:
            getattr(module, rtype).model_validate(body)
        except ValueError as exc:
            return f"{rtype} is not valid R4: {type(exc).__name__}"
        return None

    def _put_new(self, resource: JsonObject) -> JsonObject:
        rtype = str(resource["resourceType"])
        if not resource.get("id"):
            self._next_id += 1
            resource["id"] = f"{self._next_id}"
        meta = resource.setdefault("meta", {})
        meta["versionId"] = str(meta.get("versionId", "1"))
        meta["lastUpdated"] = self.clock().isoformat()
        rid = str(resource["id"])
        previous = self._store.get(rtype, {}).get(rid)
        if previous is not None:
            for key in _token_keys(previous):
                self._index.get((rtype, *key), set()).discard(rid)
        for key in _token_keys(resource):
            self._index.setdefault((rtype, *key), set()).add(rid)
        self._order.setdefault((rtype, rid), len(self._order))
        self._store.setdefault(rtype, {})[rid] = resource
        return resource

    def _stored(self, rtype: str, resource: JsonObject, status: int) -> httpx.Response:
        """The answer to a create or update that stored ``resource``."""
        self._written.setdefault((rtype, str(resource["id"])), None)
        version = resource["meta"]["versionId"]
        location = f"{self.base_url}/{rtype}/{resource['id']}/_history/{version}"
        headers = {"location": location, "etag": f'W/"{version}"'}
        return _response(status, copy.deepcopy(resource), headers)

    def _create(self, rtype: str, request: httpx.Request) -> httpx.Response:
        body = self._body(request, rtype)
        if isinstance(body, httpx.Response):
            return body
        condition = request.headers.get("if-none-exist")
        if condition and self.supports_conditional_create:
            query = condition.split("?", 1)[1] if "?" in condition else condition
            matches = self._matches(rtype, parse_qsl(query, keep_blank_values=True))
            if len(matches) > 1:
                return _response(412, outcome("duplicate", "several resources match"))
            if matches:
                existing = matches[0]
                headers = {
                    "etag": f'W/"{existing["meta"]["versionId"]}"',
                    "location": f"{self.base_url}/{rtype}/{existing['id']}",
                }
                return _response(200, copy.deepcopy(existing), headers)
        body.pop("id", None)
        body.setdefault("meta", {}).pop("versionId", None)
        return self._stored(rtype, self._put_new(body), 201)

    def _read(self, rtype: str, rid: str) -> httpx.Response:
        resource = self._store.get(rtype, {}).get(rid)
        if resource is None:
            return _response(404, outcome("not-found", "no such resource"))
        return _response(
            200, copy.deepcopy(resource), {"etag": f'W/"{resource["meta"]["versionId"]}"'}
        )

    def _update(self, rtype: str, rid: str, request: httpx.Request) -> httpx.Response:
        if rtype in self.read_only_types:
            return _response(405, outcome("not-supported", "update is not allowed"))
        body = self._body(request, rtype)
        if isinstance(body, httpx.Response):
            return body
        if body.get("id") != rid:
            return _response(400, outcome("invalid", "id does not match the URL"))
        current = self._store.get(rtype, {}).get(rid)
        expected = request.headers.get("if-match")
        if current is None:
            body.setdefault("meta", {})["versionId"] = "1"
            return self._stored(rtype, self._put_new(body), 201)
        version = current["meta"]["versionId"]
        if expected is not None and expected.strip() not in (f'W/"{version}"', f'"{version}"'):
            return _response(412, outcome("conflict", "version conflict"))
        body.setdefault("meta", {})["versionId"] = str(int(version) + 1)
        return self._stored(rtype, self._put_new(body), 200)

    def _search(self, rtype: str, request: httpx.Request) -> httpx.Response:
        params = [(k, v) for k, v in request.url.params.multi_items()]
        count = next((int(v) for k, v in params if k == "_count" and v.isdigit()), 50)
        offset = next((int(v) for k, v in params if k == "_offset" and v.isdigit()), 0)
        matches = self._matches(rtype, params)
        page = matches[offset : offset + max(count, 1)]
        links = [{"relation": "self", "url": str(request.url)}]
        if offset + count < len(matches):
            rest = [(k, v) for k, v in params if k not in ("_count", "_offset")]
            rest += [("_count", str(count)), ("_offset", str(offset + count))]
            links.append({"relation": "next", "url": f"{self.base_url}/{rtype}?{urlencode(rest)}"})
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(matches),
            "link": links,
            "entry": [
                {
                    "fullUrl": f"{self.base_url}/{rtype}/{r['id']}",
                    "resource": copy.deepcopy(r),
                    "search": {"mode": "match"},
                }
                for r in page
            ],
        }
        return _response(200, bundle)

    def _matches(self, rtype: str, params: list[tuple[str, str]]) -> list[JsonObject]:
        stored = self._store.get(rtype, {})
        indexed = next(
            (self._index.get((rtype, n, v), set()) for n, v in params if _indexable(n, v)), None
        )
        if indexed is None:
            found = list(stored.values())
        else:  # identifier / _tag lookups use the index (a large store stays fast)
            ids = sorted(indexed, key=lambda rid: self._order[(rtype, rid)])
            found = [stored[rid] for rid in ids]
        for name, value in params:
            found = [r for r in found if _param_matches(r, name, value)]
        return found

    def _capability_statement(self) -> JsonObject:
        types = sorted(set(self._store) | {"AuditEvent", "DocumentReference", "Encounter"})
        return {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "kind": "instance",
            "fhirVersion": "4.0.1",
            "format": ["json"],
            "rest": [
                {
                    "mode": "server",
                    "resource": [
                        {
                            "type": t,
                            "conditionalCreate": self.supports_conditional_create,
                            "interaction": [
                                {"code": c}
                                for c in ("read", "search-type", "create", "update")
                                if not (c == "update" and t in self.read_only_types)
                            ],
                        }
                        for t in types
                    ],
                }
            ],
        }

    def _telehealth(self, request: httpx.Request) -> httpx.Response:
        if request.method not in ("GET", "POST"):
            return _response(405, outcome("not-supported", "method not allowed"))
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if (
            scheme.lower() == "bearer"
            and self.token_check is not None
            and not self.token_check(token)
        ):
            return _response(401, outcome("login", "invalid token"))
        if scheme.lower() not in ("bearer", "basic"):
            return _response(401, outcome("login", "authentication required"))
        params = dict(request.url.params.multi_items())
        needed = ("ConferenceID", "ExternalID", "ExternalIDType", "VendorName", "ConnectionStatus")
        if any(not params.get(k) for k in needed):
            return _response(400, outcome("required", "missing parameter"))
        call = {k: params[k] for k in needed}
        call["auth"] = scheme.lower()
        call["client_id"] = request.headers.get("epic-client-id", "")
        self.telehealth_calls.append(call)
        return httpx.Response(200, json={"Success": True})


def _indexable(name: str, value: str) -> bool:
    return name in ("identifier", "_tag") and "|" in value and not value.startswith("|")


def _token_keys(resource: JsonObject) -> list[tuple[str, str]]:
    keys = [
        ("identifier", f"{i.get('system')}|{i.get('value')}")
        for i in resource.get("identifier") or []
        if isinstance(i, dict) and i.get("system") and i.get("value")
    ]
    keys += [
        ("_tag", f"{t.get('system')}|{t.get('code')}")
        for t in (resource.get("meta") or {}).get("tag") or []
        if isinstance(t, dict) and t.get("system") and t.get("code")
    ]
    return keys


def _reference_matches(reference: Any, value: str) -> bool:
    if not isinstance(reference, dict):
        return False
    ref = str(reference.get("reference", ""))
    return ref == value or ref.endswith("/" + value)


def _param_matches(resource: JsonObject, name: str, value: str) -> bool:
    if name == "identifier":
        system, _, code = value.rpartition("|") if "|" in value else ("", "", value)
        return any(
            i.get("value") == code and (not system or i.get("system") == system)
            for i in resource.get("identifier") or []
        )
    if name == "_tag":
        system, _, code = value.rpartition("|") if "|" in value else ("", "", value)
        return any(
            t.get("code") == code and (not system or t.get("system") == system)
            for t in (resource.get("meta") or {}).get("tag") or []
        )
    if name == "_id":
        return str(resource.get("id")) == value
    if name == "encounter":
        context = resource.get("context")
        refs = context.get("encounter") if isinstance(context, dict) else None
        if isinstance(refs, dict):
            refs = [refs]
        refs = refs or ([resource["encounter"]] if "encounter" in resource else [])
        return any(_reference_matches(r, value) for r in refs)
    if name in ("patient", "subject"):
        return _reference_matches(resource.get("subject"), value)
    return True  # unknown parameters are ignored, as lenient servers do

"""Drive the admin console over HTTP against the sandbox: browsers, sign-ins, forms.

The test mounts every route through the real Starlette adapter. Several "browsers" share one
TestClient (one runtime, one lifespan); each keeps its own cookie jar, so the admin and the
approver have different browser sessions.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import httpx

from hosts.drivers import starlette_app
from teams_ehr.app import MICROSOFT_CALLBACK_PATH, TeamsEhr
from teams_ehr.integrations.admin_routes import install_admin
from teams_ehr.orgs.console import ADMIN_MICROSOFT_CALLBACK_PATH, AdminPolicy, AdminService
from teams_ehr.testing.sandbox import APPROVER_OID, MICROSOFT_CLIENT_ID, TENANT_ID, Sandbox

ADMIN_OID = "11111111-2222-4333-8444-555555555555"
OUTSIDER_OID = "99999999-8888-4777-8666-555555555555"
OTHER_TENANT = "22222222-3333-4444-8555-666666666666"
ORG = "lamna-health"
_CSRF = re.compile(r"name='csrf' value='([^']+)'")
_HASH = re.compile(r"name='config_hash' value='([0-9a-f]{64})'")
_APPROVAL = re.compile(r"name='approval_id' value='([^']+)'")
_VERSION = re.compile(r"name='expected_version' value='(\d+)'")


build_app = starlette_app  # the real Starlette adapter with every route (visits and admin)


@dataclass
class Browser:
    """One browser: its own cookie jar over the shared TestClient."""

    client: Any
    cookies: httpx.Cookies = field(default_factory=httpx.Cookies)

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        self.client.cookies = self.cookies
        try:
            response: httpx.Response = self.client.request(
                method, path, follow_redirects=False, **kwargs
            )
        finally:
            self.cookies = httpx.Cookies(self.client.cookies)
        return response

    def get(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        return self._send("GET", path, params=params)

    def post(self, path: str, data: dict[str, str] | None = None) -> httpx.Response:
        return self._send("POST", path, data=data or {})

    def csrf(self) -> str:
        match = _CSRF.search(self.get("/admin").text)
        assert match is not None, "not signed in"
        return match.group(1)


@dataclass
class Console:
    sandbox: Sandbox
    runtime: TeamsEhr
    service: AdminService
    client: Any
    outputs: list[str] = field(default_factory=list)

    def browser(self) -> Browser:
        return Browser(self.client)

    def record(self, response: httpx.Response) -> httpx.Response:
        self.outputs.append(response.text + repr(dict(response.headers)))
        return response

    def sign_in(self, browser: Browser, oid: str, *, tenant: str = TENANT_ID) -> httpx.Response:
        """The Microsoft sign-in of the console (``tenant`` ≠ ours: a foreign user)."""
        started = browser.get("/admin/signin", {"tenant": TENANT_ID})
        assert started.status_code == 302, started.text
        self.sandbox.entra.sign_in_as(oid, tenant_id=tenant)
        back = self.sandbox.entra.authorize_in_browser(started.headers["location"])
        return self.record(browser.get(ADMIN_MICROSOFT_CALLBACK_PATH, back))

    def create(self, browser: Browser, org_id: str = ORG, **fields: str) -> httpx.Response:
        form = {
            "csrf": browser.csrf(),
            "org_id": org_id,
            "display_name": "Lamna Healthcare",
            "approver_oid": APPROVER_OID,
            "environment": "test",
            "fhir_base": self.sandbox.ehr.base_url,
            "client_id": "teams-ehr-sandbox",
            "epic_client_id": "teams-ehr-sandbox",
            "context_tokens": "sessionId=%CSN%\ndepartmentId=%PERFDEPID;;; ; ;;NONE;%",
            **fields,
        }
        return self.record(browser.post("/admin/orgs", form))

    def transition(
        self, browser: Browser, action: str, org_id: str = ORG, csrf: str | None = None
    ) -> httpx.Response:
        form = {"action": action, "csrf": browser.csrf() if csrf is None else csrf}
        return self.record(browser.post(f"/admin/orgs/{org_id}/test/transition", form))

    def edit(self, browser: Browser, org_id: str = ORG, **fields: str) -> httpx.Response:
        page = browser.get(f"/admin/orgs/{org_id}").text
        version = _VERSION.search(page)
        assert version is not None
        form = {"csrf": browser.csrf(), "expected_version": version.group(1), **fields}
        return self.record(browser.post(f"/admin/orgs/{org_id}/edit", form))

    def reviewed_hash(self, browser: Browser, org_id: str = ORG) -> str:
        match = _HASH.search(browser.get(f"/admin/orgs/{org_id}/test/review").text)
        assert match is not None
        return match.group(1)

    def begin_approval(
        self, browser: Browser, org_id: str = ORG, config_hash: str | None = None
    ) -> httpx.Response:
        digest = self.reviewed_hash(browser, org_id) if config_hash is None else config_hash
        form = {"csrf": browser.csrf(), "config_hash": digest}
        return self.record(browser.post(f"/admin/orgs/{org_id}/test/approval", form))

    def ehr_signin(self, browser: Browser, started: httpx.Response) -> httpx.Response:
        """The approver signs in at FakeEhr (standalone) and comes back to ``/callback``."""
        assert started.status_code == 302, started.text
        url = started.headers["location"]
        back = self.sandbox.ehr.authorize_in_browser(
            SimpleNamespace(method="GET", url=url, fields=())
        )
        self.outputs.append(repr(back))
        return self.record(browser.get("/callback", back))

    def approval_id(self, browser: Browser, org_id: str = ORG) -> str | None:
        match = _APPROVAL.search(browser.get(f"/admin/orgs/{org_id}/test/review").text)
        return None if match is None else match.group(1)

    def approve(
        self, browser: Browser, org_id: str = ORG, approval_id: str | None = None
    ) -> httpx.Response:
        chosen = self.approval_id(browser, org_id) if approval_id is None else approval_id
        form = {"csrf": browser.csrf(), "approval_id": chosen or ""}
        return self.record(browser.post(f"/admin/orgs/{org_id}/test/approve", form))

    def full_approval(self, approver: Browser, org_id: str = ORG) -> httpx.Response:
        callback = self.ehr_signin(approver, self.begin_approval(approver, org_id))
        assert callback.status_code == 303, callback.text
        return self.approve(approver, org_id)

    def run(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        return self.client.portal.call(functools.partial(func, *args, **kwargs))


@contextmanager
def console(*, allow_http: bool = False) -> Iterator[Console]:
    from starlette.testclient import TestClient

    sandbox = Sandbox()
    secret = sandbox.settings.microsoft.client_secret
    assert secret is not None
    sandbox.entra.register_app(
        MICROSOFT_CLIENT_ID,
        redirect_uris=[
            sandbox.app_base_url + MICROSOFT_CALLBACK_PATH,
            sandbox.app_base_url + ADMIN_MICROSOFT_CALLBACK_PATH,
        ],
        secret=secret.get_secret_value(),
    )
    runtime = sandbox.app()
    with TestClient(build_app(runtime), base_url=sandbox.app_base_url) as client:
        policy = AdminPolicy(administrators={TENANT_ID: frozenset({ADMIN_OID})})
        service = install_admin(runtime, policy=policy)
        yield Console(sandbox, runtime, service, client)

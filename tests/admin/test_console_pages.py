"""The admin console as the analyst's tool (issue 13 §1), over HTTP through the real adapter.

Shared layout and navigation; plain labels, never a Python ``repr``; JSON only inside a
``<details>`` toggle; the approval journey with "you are here"; a pre-filled Edit form; a
message on every invalid field (status 400, nothing changed, nothing audited); integration
records to copy with the next step; a readable audit log; the tenant carried from a link and
shown once signed in; a CSP with the stylesheet and script by hash, no ``'unsafe-inline'``.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx

from admin.console import ADMIN_OID, ORG, Browser, Console, console
from teams_ehr import theme
from teams_ehr.testing.sandbox import APPROVER_OID, TENANT_ID

_EDIT_FORM = re.compile(r"<form method='post' action='[^']*/edit'>(.*?)</form>", re.S)


class _Visible(HTMLParser):
    """The text a person reads: outside ``<details>``, ``<script>``, ``<style>`` and
    attribute values (a hidden input's value is not shown)."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("details", "script", "style", "textarea"):
            self.depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("details", "script", "style", "textarea"):
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth == 0:
            self.parts.append(data)


def visible(page: httpx.Response) -> str:
    parser = _Visible()
    parser.feed(page.text)
    return " ".join(parser.parts)


def _ok_page(page: httpx.Response) -> None:
    """Every console page: the layout, the CSP by hash, no inline style, no Python repr."""
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "unsafe-inline" not in csp
    assert theme.source_hash(theme.STYLESHEET) in csp
    assert "style=" not in page.text
    assert "<main id='main'" in page.text
    assert "Skip to main content" in page.text
    markup = re.sub(r"<script>.*?</script>", "", page.text, flags=re.S)
    for repr_start in ("['", "{'", "('", "&#x27;]", "datetime.datetime("):
        assert repr_start not in markup, repr_start
    shown = visible(page)
    for raw in ("pending_approval", "approval_refused", '{"', "iv_mode"):
        assert raw not in shown, raw


def _approved(c: Console) -> tuple[Browser, Browser]:
    admin, approver = c.browser(), c.browser()
    assert c.sign_in(admin, ADMIN_OID).status_code == 303
    assert c.create(admin).status_code == 303
    assert c.transition(admin, "submit").status_code == 303
    assert c.sign_in(approver, APPROVER_OID).status_code == 303
    assert c.full_approval(approver).status_code == 303
    return admin, approver


def test_every_page_has_the_layout_navigation_and_plain_labels() -> None:
    with console() as c:
        admin, approver = _approved(c)
        pages = {
            "/admin": admin.get("/admin"),
            f"/admin/orgs/{ORG}": admin.get(f"/admin/orgs/{ORG}"),
            f"/admin/orgs/{ORG}/test/review": approver.get(f"/admin/orgs/{ORG}/test/review"),
            f"/admin/orgs/{ORG}/test/records": admin.get(f"/admin/orgs/{ORG}/test/records"),
            f"/admin/orgs/{ORG}/audit": admin.get(f"/admin/orgs/{ORG}/audit"),
            "/admin/signout": admin.get("/admin/signout"),
        }
        for path, page in pages.items():
            assert page.status_code == 200, path
            _ok_page(page)
            assert "data-testid='nav-organizations'" in page.text, path
            assert "data-testid='nav-sign-out'" in page.text, path
        org_page = pages[f"/admin/orgs/{ORG}"].text
        for test_id in ("nav-organization", "nav-integration-records", "nav-audit-log"):
            assert f"data-testid='{test_id}'" in org_page
        assert "aria-current='page'" in org_page
        assert "Approved and active" in visible(pages[f"/admin/orgs/{ORG}"])
        # the context tokens and the context link format read as lists, not reprs
        assert "<li>sessionId=%CSN%</li>" in org_page
        assert "<dt>Iv mode</dt><dd>prefixed</dd>" in org_page


def test_the_approval_journey_shows_where_you_are() -> None:
    with console() as c:
        admin, approver = c.browser(), c.browser()
        assert c.sign_in(admin, ADMIN_OID).status_code == 303
        assert c.create(admin).status_code == 303

        def here(browser: Browser, path: str) -> str:
            page = browser.get(path).text
            match = re.search(r"aria-current='step'[^>]*>([^<]*)", page)
            assert match is not None
            return match.group(1)

        assert here(admin, f"/admin/orgs/{ORG}").startswith("Submit for approval")
        assert c.transition(admin, "submit").status_code == 303
        assert c.sign_in(approver, APPROVER_OID).status_code == 303
        review = f"/admin/orgs/{ORG}/test/review"
        assert here(approver, review).startswith("Approver signs in to the EHR")
        assert "(you are here)" in approver.get(review).text
        assert c.ehr_signin(approver, c.begin_approval(approver)).status_code == 303
        assert here(approver, review).startswith("Approve")
        assert c.approve(approver).status_code == 303
        assert here(approver, f"/admin/orgs/{ORG}").startswith("Enter the records in the EHR")


def test_the_edit_form_is_prefilled_with_the_current_values() -> None:
    with console() as c:
        admin = c.browser()
        assert c.sign_in(admin, ADMIN_OID).status_code == 303
        assert c.create(admin).status_code == 303
        page = admin.get(f"/admin/orgs/{ORG}").text
        form = _EDIT_FORM.search(page)
        assert form is not None
        inner = form.group(1)
        assert (
            f"name='fhir_base' data-testid='field-fhir_base' value='{c.sandbox.ehr.base_url}'"
            in (
                inner.replace(" aria-describedby='edit-test-fhir_base-hint'", "").replace(
                    " required", ""
                )
            )
        )
        assert "value='Lamna Healthcare'" in inner
        assert f"value='{APPROVER_OID}'" in inner
        assert "value='teams-ehr-sandbox'" in inner
        assert "sessionId=%CSN%\ndepartmentId=%PERFDEPID;;; ; ;;NONE;%</textarea>" in inner


def _audit_count(c: Console) -> int:
    return len(c.run(c.runtime.registry.audit_log, ORG))


def test_empty_save_says_so_and_changes_nothing() -> None:
    with console() as c:
        admin = c.browser()
        assert c.sign_in(admin, ADMIN_OID).status_code == 303
        assert c.create(admin).status_code == 303
        before = c.run(c.runtime.registry.get, ORG)
        entries = _audit_count(c)

        nothing = c.edit(admin)  # only the CSRF token and the version
        assert nothing.status_code == 400
        assert "Nothing to save" in nothing.text
        _ok_page(nothing)

        cleared = c.edit(
            admin,
            environment="test",
            display_name="",
            approver_oid="",
            fhir_base="",
            client_id="",
            epic_client_id="",
            redirect_uri="",
            jwks_url="",
            context_tokens="",
        )
        assert cleared.status_code == 400
        for name in ("display_name", "approver_oid", "fhir_base", "client_id"):
            assert f"data-testid='error-{name}'" in cleared.text, name
        assert "Enter the EHR&#x27;s FHIR base URL." in cleared.text
        assert "There is a problem" in cleared.text
        after = c.run(c.runtime.registry.get, ORG)
        assert after.version == before.version
        assert after.document() == before.document()
        assert _audit_count(c) == entries


def test_an_invalid_value_gets_a_message_on_its_field_and_is_not_echoed() -> None:
    with console() as c:
        admin = c.browser()
        assert c.sign_in(admin, ADMIN_OID).status_code == 303
        assert c.create(admin).status_code == 303
        entries = _audit_count(c)
        refused = c.edit(
            admin,
            environment="test",
            fhir_base="ftp://CANARY.example/fhir",
            client_id="has spaces CANARY",
            context_tokens="not a token",
        )
        assert refused.status_code == 400
        assert "data-testid='error-fhir_base'" in refused.text
        assert "CANARY" not in refused.text
        assert "aria-invalid='true'" in refused.text
        assert _audit_count(c) == entries
        created = c.create(admin, org_id="Bad Id", display_name="Second", fhir_base="ftp://x")
        assert created.status_code == 400
        assert "data-testid='error-org_id'" in created.text  # every field is checked at once
        assert "data-testid='error-fhir_base'" in created.text
        assert "Bad Id" not in created.text
        assert "Use 1 to 64 lowercase letters" in created.text
        assert "value='Second'" in created.text  # valid values are kept for the next try
        _ok_page(created)


def test_integration_records_can_be_copied_and_say_what_is_next() -> None:
    with console() as c:
        admin, _ = _approved(c)
        page = admin.get(f"/admin/orgs/{ORG}/test/records")
        assert page.status_code == 200
        _ok_page(page)
        base = c.sandbox.app_base_url
        for test_id, value in (
            ("record-provider-launch-url", f"{base}/launch/{ORG}/test"),
            ("record-patient-launch-url", f"{base}/patient/{ORG}/test"),
            ("record-client-id", "teams-ehr-sandbox"),
            ("record-redirect-uri", f"{base}/callback"),
        ):
            field = re.search(rf"<input [^>]*id='{test_id}'[^>]*>", page.text)
            assert field is not None, test_id
            assert f"value='{value}'" in field.group(0)
            assert "readonly" in field.group(0)
            assert f"data-testid='{test_id}-copy'" in page.text
        assert "data-testid='next-step'" in page.text
        assert "Start a test visit from the EHR" in page.text
        csp = page.headers["content-security-policy"]
        assert theme.source_hash(theme.COPY_SCRIPT) in csp
        assert f"<script>{theme.COPY_SCRIPT}</script>" in page.text
        link = f"{base}/admin?tenant={TENANT_ID}"
        assert f"value='{link}'" in page.text


def test_the_audit_log_is_a_readable_table() -> None:
    with console() as c:
        admin, _ = _approved(c)
        page = admin.get(f"/admin/orgs/{ORG}/audit")
        assert page.status_code == 200
        _ok_page(page)
        assert "data-testid='audit-log'" in page.text
        assert "<th scope='col'>When</th>" in page.text
        shown = visible(page)
        assert f"You ({ADMIN_OID})" in shown
        assert f"The approver ({APPROVER_OID})" in shown
        for action in ("Created", "Submitted", "Approved"):
            assert action in shown
        assert re.search(r"\d{1,2} [A-Z][a-z]{2} \d{4}, \d{2}:\d{2} UTC", shown)
        assert "{" not in shown  # JSON only in the "Details" toggle
        assert "<summary>Raw entry (JSON)</summary>" in page.text


def test_the_tenant_comes_from_a_link_and_the_sign_in() -> None:
    with console() as c:
        browser = c.browser()
        page = browser.get("/admin", {"tenant": TENANT_ID})
        assert f"value='{TENANT_ID}'" in page.text
        _ok_page(page)
        junk = browser.get("/admin", {"tenant": "<b>junk</b>"})
        assert "junk" not in junk.text  # only a tenant ID is carried over
        unknown = browser.get("/admin/signin", {"tenant": "22222222-3333-4444-8555-666666666666"})
        assert unknown.status_code == 403
        assert "No administrator or organization is set up for this tenant" in unknown.text
        assert c.sign_in(browser, ADMIN_OID).status_code == 303
        home = browser.get("/admin")
        assert "data-testid='signed-in-as'" in home.text
        assert TENANT_ID in visible(home)


def test_sign_out_is_reachable_from_the_navigation() -> None:
    with console() as c:
        admin = c.browser()
        assert c.sign_in(admin, ADMIN_OID).status_code == 303
        confirm = admin.get("/admin/signout")
        assert confirm.status_code == 200
        assert "data-testid='admin-signout'" in confirm.text
        csrf = re.search(r"name='csrf' value='([^']+)'", confirm.text)
        assert csrf is not None
        assert admin.post("/admin/signout", {"csrf": csrf.group(1)}).status_code == 303
        assert "Sign in to the admin console" in admin.get("/admin").text

"""Approval workflow bypass attempts over HTTP (docs/security.md T27, T28)."""

from __future__ import annotations

from types import SimpleNamespace

from admin.console import ADMIN_OID, ORG, OTHER_TENANT, OUTSIDER_OID, Browser, Console, console
from leaks import assert_no_leak
from teams_ehr.orgs.models import Environment, Organization
from teams_ehr.testing.sandbox import APPROVER_OID, TENANT_ID


def _configured(c: Console) -> tuple[Browser, Browser]:
    admin, approver = c.browser(), c.browser()
    assert c.sign_in(admin, ADMIN_OID).status_code == 303
    assert c.create(admin).status_code == 303
    assert c.transition(admin, "submit").status_code == 303
    assert c.sign_in(approver, APPROVER_OID).status_code == 303
    return admin, approver


def _state(c: Console, org_id: str = ORG) -> str:
    org = c.run(c.runtime.registry.get, org_id)
    return str(org.test.state)


def _refusals(c: Console, org_id: str = ORG) -> list[str]:
    entries = c.run(c.runtime.registry.audit_log, org_id)
    return [e.detail["reason"] for e in entries if e.action == "approval_refused"]


def _launch_status(c: Console) -> int:
    launch = c.sandbox.provider_launch("appt-b")
    params = {"iss": c.sandbox.ehr.base_url, "launch": launch}
    return c.browser().get(f"/launch/{ORG}/test", params).status_code


def test_non_designated_user_cannot_approve() -> None:
    with console() as c:
        admin, _ = _configured(c)
        refused = c.begin_approval(admin)  # the admin is not the approver
        assert refused.status_code == 403
        assert _refusals(c) == ["not_designated_approver"]
        assert not c.sandbox.ehr.calls("authorize")  # no EHR sign-in was even started
        assert c.approve(admin, approval_id="x").status_code == 403
        assert _state(c) == "pending_approval"


def test_outsider_of_the_tenant_sees_and_changes_nothing() -> None:
    with console() as c:
        _configured(c)
        outsider = c.browser()
        assert c.sign_in(outsider, OUTSIDER_OID).status_code == 303
        assert f"/admin/orgs/{ORG}" not in outsider.get("/admin").text
        assert outsider.get("/admin/api/orgs").json() == {"organizations": []}
        assert outsider.get(f"/admin/api/orgs/{ORG}").status_code == 403
        assert c.transition(outsider, "suspend").status_code == 403
        assert c.create(outsider, org_id="outsider-org").status_code == 403  # not an admin
        assert _state(c) == "pending_approval"


def test_approver_from_another_tenant_is_refused() -> None:
    with console() as c:
        _configured(c)
        foreign = c.browser()
        refused = c.sign_in(foreign, APPROVER_OID, tenant=OTHER_TENANT)
        assert refused.status_code == 403
        assert "Sign in" in foreign.get("/admin").text  # no admin session was opened
        assert foreign.post(f"/admin/orgs/{ORG}/test/approve", {"csrf": "x"}).status_code == 403
        assert _state(c) == "pending_approval"


def test_sign_in_for_an_unknown_tenant_is_refused() -> None:
    with console() as c:
        browser = c.browser()
        assert browser.get("/admin/signin", {"tenant": OTHER_TENANT}).status_code == 403
        assert browser.get("/admin/signin", {"tenant": "common"}).status_code == 400  # not a GUID
        assert not c.sandbox.entra.requests


def test_smart_sign_in_against_another_base_is_refused() -> None:
    with console() as c:
        admin, approver = _configured(c)
        started = c.begin_approval(approver)
        # Meanwhile the admin points the environment at another base: the EHR sign-in the
        # approver now completes proves the old base only.
        other = c.sandbox.ehr.base_url + "-other"
        edited = c.edit(admin, environment="test", fhir_base=other, client_id="teams-ehr-sandbox")
        assert edited.status_code == 303
        callback = c.ehr_signin(approver, started)
        assert callback.status_code == 403
        assert _refusals(c) == ["proof_other_base"]
        assert c.approve(approver, approval_id="anything").status_code == 403
        assert _state(c) == "pending_approval"


def test_edit_after_review_makes_the_reviewed_hash_stale() -> None:
    with console() as c:
        admin, approver = _configured(c)
        callback = c.ehr_signin(approver, c.begin_approval(approver))
        assert callback.status_code == 303
        approval_id = c.approval_id(approver)
        assert approval_id is not None
        edited = c.edit(
            admin,
            environment="test",
            fhir_base=c.sandbox.ehr.base_url,
            client_id="teams-ehr-sandbox",
            context_tokens="sessionId=%CSN%",
        )
        assert edited.status_code == 303
        assert c.approve(approver, approval_id=approval_id).status_code == 403
        assert _refusals(c) == ["stale_config_hash"]
        assert _state(c) == "pending_approval"
        assert c.full_approval(approver).status_code == 303  # a fresh review succeeds
        assert _state(c) == "active"


def test_approval_without_the_smart_sign_in_is_refused() -> None:
    with console() as c:
        _, approver = _configured(c)
        assert c.approve(approver, approval_id="").status_code == 403
        started = c.begin_approval(approver)  # EHR sign-in started but never completed
        assert started.status_code == 302
        assert c.approval_id(approver) is None  # the review page offers no approve button
        assert c.approve(approver, approval_id="guess").status_code == 403
        assert _refusals(c) == ["smart_proof_required", "smart_proof_required"]
        assert _state(c) == "pending_approval"


def test_replayed_approval_and_replayed_ehr_callback_are_refused() -> None:
    with console() as c:
        admin, approver = _configured(c)
        started = c.begin_approval(approver)
        back = c.sandbox.ehr.authorize_in_browser(
            SimpleNamespace(method="GET", url=started.headers["location"], fields=())
        )
        assert approver.get("/callback", back).status_code == 303
        approval_id = c.approval_id(approver)
        assert approval_id is not None
        assert c.approve(approver, approval_id=approval_id).status_code == 303
        assert approver.get("/callback", back).status_code == 400  # state is single use
        assert c.approve(approver, approval_id=approval_id).status_code == 409  # already active
        # Suspend and resume: pending again; the old approval session must not approve it.
        assert c.transition(admin, "suspend").status_code == 303
        assert c.transition(admin, "resume").status_code == 303
        assert c.approve(approver, approval_id=approval_id).status_code == 403
        assert _state(c) == "pending_approval"
        assert _launch_status(c) == 403  # "this organization isn't approved yet"


def test_ehr_callback_of_an_approval_in_another_browser_is_refused() -> None:
    with console() as c:
        admin, approver = _configured(c)
        started = c.begin_approval(approver)
        back = c.sandbox.ehr.authorize_in_browser(
            SimpleNamespace(method="GET", url=started.headers["location"], fields=())
        )
        assert admin.get("/callback", back).status_code == 400  # state bound to the session
        assert c.approval_id(approver) is None
        assert _state(c) == "pending_approval"


def test_ehr_sign_in_for_another_organization_does_not_prove_this_one() -> None:
    with console() as c:
        admin, approver = _configured(c)
        assert c.create(admin, org_id="second-clinic").status_code == 303
        assert c.transition(admin, "submit", org_id="second-clinic").status_code == 303
        first = c.begin_approval(approver)  # ORG's EHR sign-in starts …
        assert c.begin_approval(approver, org_id="second-clinic").status_code == 302
        assert c.ehr_signin(approver, first).status_code == 403  # … but it is not ORG's turn
        assert _refusals(c) == ["no_approval"]
        assert c.approve(approver, org_id="second-clinic", approval_id="x").status_code == 403
        assert _state(c) == _state(c, "second-clinic") == "pending_approval"


def test_csrf_token_missing_wrong_or_from_another_session_is_refused() -> None:
    with console() as c:
        admin, approver = _configured(c)
        path = f"/admin/orgs/{ORG}/test/transition"
        assert admin.post(path, {"action": "suspend"}).status_code == 400
        assert admin.post(path, {"action": "suspend", "csrf": "wrong"}).status_code == 400
        stolen = approver.csrf()
        assert admin.post(path, {"action": "suspend", "csrf": stolen}).status_code == 400
        approval = f"/admin/orgs/{ORG}/test/approval"
        digest = c.reviewed_hash(approver)
        assert approver.post(approval, {"config_hash": digest}).status_code == 400
        assert admin.get(path).status_code == 405  # mutations are POST only
        assert _state(c) == "pending_approval"
        assert c.transition(admin, "suspend", csrf=admin.csrf()).status_code == 303
        assert _state(c) == "suspended"


def test_signed_out_session_cannot_mutate() -> None:
    with console() as c:
        admin, _ = _configured(c)
        csrf = admin.csrf()
        assert admin.post("/admin/signout", {"csrf": csrf}).status_code == 303
        assert c.transition(admin, "suspend", csrf=csrf).status_code == 403
        assert "Sign in" in admin.get("/admin").text


def test_cross_organization_access_is_refused_like_an_unknown_org() -> None:
    with console() as c:
        admin, approver = _configured(c)
        foreign = Organization(
            org_id="other-tenant-clinic",
            display_name="Other",
            tenant_id=OTHER_TENANT,
            approver_oid=APPROVER_OID,  # even the same oid, in another tenant
            test=Environment(config=c.sandbox.environment_config()),
        )
        c.run(c.runtime.registry.create, foreign, actor="system")
        for browser in (admin, approver):
            other = browser.get("/admin/api/orgs/other-tenant-clinic")
            unknown = browser.get("/admin/api/orgs/no-such-org")
            assert other.status_code == unknown.status_code == 403
            assert other.text == unknown.text
            assert browser.get("/admin/orgs/other-tenant-clinic").status_code == 403
            records = browser.get("/admin/api/orgs/other-tenant-clinic/test/records")
            assert records.status_code == 403
            assert browser.get("/admin/api/orgs/other-tenant-clinic/audit").status_code == 403
            refused = c.transition(browser, "submit", org_id="other-tenant-clinic")
            assert refused.status_code == 403
        listed = admin.get("/admin/api/orgs").json()["organizations"]
        assert [org["org_id"] for org in listed] == [ORG]
        stored = c.run(c.runtime.registry.get, "other-tenant-clinic")
        assert stored.test.state == "draft"
        assert stored.tenant_id == OTHER_TENANT
        assert TENANT_ID not in other.text


def test_edit_after_approval_stops_launches_until_reapproved() -> None:
    with console() as c:
        admin, approver = _configured(c)
        assert c.full_approval(approver).status_code == 303
        c.sandbox.seed_appointment("appt-b")
        assert _launch_status(c) == 302
        edited = c.edit(
            admin,
            environment="test",
            fhir_base=c.sandbox.ehr.base_url,
            client_id="teams-ehr-sandbox",
            context_tokens="sessionId=%CSN%",
        )
        assert edited.status_code == 303
        assert _state(c) == "pending_approval"
        assert _launch_status(c) == 403  # "this organization isn't approved yet"
        assert admin.get(f"/admin/api/orgs/{ORG}/test/records").status_code == 403
        assert c.full_approval(approver).status_code == 303
        assert _launch_status(c) == 302
        records = admin.get(f"/admin/api/orgs/{ORG}/test/records").json()
        assert records["context_tokens"] == ["sessionId=%CSN%"]


def test_second_organization_cannot_claim_an_approved_base() -> None:
    with console() as c:
        admin, approver = _configured(c)
        assert c.full_approval(approver).status_code == 303
        assert c.create(admin, org_id="copycat").status_code == 303
        assert c.transition(admin, "submit", org_id="copycat").status_code == 303
        claimed = c.full_approval(approver, org_id="copycat")
        assert claimed.status_code == 409  # T27: one active organization per base URL
        assert _state(c, "copycat") == "pending_approval"
        assert _state(c) == "active"


def test_invalid_form_names_fields_without_echoing_input() -> None:
    with console() as c:
        admin = c.browser()
        assert c.sign_in(admin, ADMIN_OID).status_code == 303
        canary = "http://169.254.169.254/CANARY-latest"
        refused = c.create(admin, fhir_base=canary)
        assert refused.status_code == 400
        assert "fhir_base" in refused.text
        assert_no_leak(["CANARY"], refused.text)
        bad_id = c.create(admin, org_id="Not An Id")
        assert bad_id.status_code == 400
        assert "org_id" in bad_id.text
        assert c.run(c.runtime.registry.list) == []


def test_a_proof_for_one_organization_cannot_approve_another() -> None:
    with console() as c:
        admin, approver = _configured(c)
        assert c.create(admin, org_id="second-clinic").status_code == 303
        assert c.transition(admin, "submit", org_id="second-clinic").status_code == 303
        assert c.ehr_signin(approver, c.begin_approval(approver)).status_code == 303
        approval_id = c.approval_id(approver)
        assert approval_id is not None
        misdirected = c.approve(approver, org_id="second-clinic", approval_id=approval_id)
        assert misdirected.status_code == 403
        assert _refusals(c, "second-clinic") == ["smart_proof_required"]
        # The attempt used up the session's proof: ORG needs a fresh EHR sign-in too.
        assert c.approve(approver, approval_id=approval_id).status_code == 403
        assert _state(c) == _state(c, "second-clinic") == "pending_approval"


def test_pages_escape_admin_entered_text() -> None:
    with console() as c:
        admin = c.browser()
        assert c.sign_in(admin, ADMIN_OID).status_code == 303
        created = c.create(admin, display_name="<script>alert(1)</script>")
        assert created.status_code == 303
        for path in ("/admin", f"/admin/orgs/{ORG}"):
            page = admin.get(path)
            assert "<script>" not in page.text
            assert "&lt;script&gt;" in page.text
            assert "default-src 'none'" in page.headers["content-security-policy"]

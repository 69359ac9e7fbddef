"""The whole admin → approver → records → launch flow over HTTP on the sandbox (T28)."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest

from admin.console import ADMIN_OID, ORG, Browser, Console, console
from leaks import assert_no_leak
from teams_ehr.testing.sandbox import APPROVER_OID, CLINICIAN_OID


def _provider_launch(c: Console, appointment: str) -> int:
    """The EHR's *Begin virtual visit*: the status of the whole launch's last step."""
    launch = c.sandbox.provider_launch(appointment)
    browser = c.browser()
    started = browser.get(f"/launch/{ORG}/test", {"iss": c.sandbox.ehr.base_url, "launch": launch})
    if started.status_code != 302:
        return started.status_code
    back = c.sandbox.ehr.authorize_in_browser(
        SimpleNamespace(method="GET", url=started.headers["location"], fields=())
    )
    first = browser.get("/callback", back)
    assert first.status_code == 302, first.text
    c.sandbox.entra.sign_in_as(CLINICIAN_OID)
    signin = c.sandbox.entra.authorize_in_browser(first.headers["location"])
    entered = browser.get("/microsoft/callback", signin)
    assert urlsplit(entered.headers["location"]).hostname == "teams.microsoft.com"
    return entered.status_code


def _configured(c: Console) -> tuple[Browser, Browser]:
    admin, approver = c.browser(), c.browser()
    assert c.sign_in(admin, ADMIN_OID).status_code == 303
    assert c.create(admin).status_code == 303
    assert c.transition(admin, "submit").status_code == 303
    assert c.sign_in(approver, APPROVER_OID).status_code == 303
    return admin, approver


def test_admin_configures_approver_proves_and_approves_then_launch_works() -> None:
    with console() as c:
        admin, approver = c.browser(), c.browser()
        assert "Sign in" in admin.get("/admin").text
        signed_in = c.sign_in(admin, ADMIN_OID)
        assert signed_in.status_code == 303
        assert signed_in.headers["location"] == "/admin"
        assert c.create(admin).status_code == 303
        assert "Test: Draft — not submitted" in admin.get("/admin").text
        assert _provider_launch(c, "appt-1") == 403  # a draft never launches
        assert c.transition(admin, "submit").status_code == 303
        assert _provider_launch(c, "appt-1") == 403  # nor a pending one

        assert c.sign_in(approver, APPROVER_OID).status_code == 303
        review = approver.get(f"/admin/orgs/{ORG}/test/review")
        assert c.sandbox.ehr.base_url in review.text
        started = c.begin_approval(approver)
        assert started.headers["location"].startswith(c.sandbox.ehr.authorize_url)
        callback = c.ehr_signin(approver, started)
        assert callback.status_code == 303
        assert callback.headers["location"] == f"/admin/orgs/{ORG}/test/review"
        assert "EHR sign-in verified" in approver.get(f"/admin/orgs/{ORG}/test/review").text
        approved = c.approve(approver)
        assert approved.status_code == 303, approved.text
        assert approved.headers["location"] == f"/admin/orgs/{ORG}/test/records"

        records = approver.get(f"/admin/api/orgs/{ORG}/test/records")
        assert records.status_code == 200
        document = records.json()
        base = c.sandbox.app_base_url
        assert document["provider_launch_url"] == f"{base}/launch/{ORG}/test"
        assert document["patient_launch_url"] == f"{base}/patient/{ORG}/test"
        assert document["client_id"] == "teams-ehr-sandbox"
        assert document["redirect_uri"] == f"{base}/callback"
        assert document["jwks_url"] == f"{base}/.well-known/jwks.json"
        assert document["context_tokens"] == [
            "sessionId=%CSN%",
            "departmentId=%PERFDEPID;;; ; ;;NONE;%",
        ]
        assert document["fhir_base"] == c.sandbox.ehr.base_url
        page = admin.get(f"/admin/orgs/{ORG}/test/records")  # the admin sees them too
        assert page.status_code == 200
        assert "sessionId=%CSN%" in page.text

        org = c.run(c.runtime.registry.get, ORG)
        env = org.test
        assert env.state == "active"
        assert env.approved_by == APPROVER_OID
        assert env.approved_snapshot.token_endpoint == c.sandbox.ehr.token_url
        assert env.approved_snapshot.issuer == c.sandbox.ehr.oidc_issuer

        c.sandbox.seed_appointment("appt-1")
        assert _provider_launch(c, "appt-1") == 303


def test_the_ehr_sign_in_reads_no_ehr_data_and_keeps_no_tokens() -> None:
    with console() as c:
        _, approver = _configured(c)
        assert c.full_approval(approver).status_code == 303
        token_calls = c.sandbox.ehr.calls("token")
        assert len(token_calls) == 1  # one code redeemed, no refresh
        assert not c.sandbox.ehr.calls("fhir")
        entries = c.run(c.runtime.registry.audit_log, ORG)
        org = c.run(c.runtime.registry.get, ORG)
        issued = list(c.sandbox.ehr._access)  # the fake's issued access tokens (test-only peek)
        assert issued
        assert_no_leak(issued, org.document(), entries, *c.outputs)


def test_audit_log_lists_every_change_without_secrets() -> None:
    with console() as c:
        admin, approver = _configured(c)
        csrf_admin, csrf_approver = admin.csrf(), approver.csrf()
        assert c.begin_approval(approver, config_hash="0" * 64).status_code == 403
        assert c.full_approval(approver).status_code == 303
        assert c.edit(admin, display_name="Lamna Health").status_code == 303
        assert c.transition(admin, "suspend").status_code == 303
        audit = admin.get(f"/admin/api/orgs/{ORG}/audit")
        assert audit.status_code == 200
        entries = audit.json()["entries"]
        actions = [e["action"] for e in entries]
        assert actions == [
            "created",
            "submitted",
            "approval_refused",
            "approved",
            "edited",
            "suspended",
        ]
        assert [e["actor"] for e in entries] == [
            ADMIN_OID,
            ADMIN_OID,
            APPROVER_OID,
            APPROVER_OID,
            ADMIN_OID,
            ADMIN_OID,
        ]
        assert entries[2]["detail"]["reason"] == "stale_config_hash"
        assert entries[3]["detail"]["fhir_base"] == c.sandbox.ehr.base_url
        html = admin.get(f"/admin/orgs/{ORG}/audit")
        assert html.status_code == 200
        assert "Approved" in html.text
        secret = c.sandbox.settings.microsoft.client_secret
        assert secret is not None
        canaries = [csrf_admin, csrf_approver, secret.get_secret_value()]
        canaries += list(c.sandbox.ehr._access)
        assert_no_leak(canaries, json.dumps(entries), html.text)


def test_no_secret_reaches_logs_pages_or_audit(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with console() as c:
        admin, approver = _configured(c)
        started = c.begin_approval(approver)
        back = c.sandbox.ehr.authorize_in_browser(
            SimpleNamespace(method="GET", url=started.headers["location"], fields=())
        )
        assert approver.get("/callback", back).status_code == 303
        assert c.approve(approver).status_code == 303
        audit = admin.get(f"/admin/api/orgs/{ORG}/audit").text
        pages = [approver.get(path).text for path in ("/admin", f"/admin/orgs/{ORG}")]
        secret = c.sandbox.settings.microsoft.client_secret
        assert secret is not None
        canaries = [admin.csrf(), approver.csrf(), back["code"], back["state"]]
        canaries += [secret.get_secret_value(), *c.sandbox.ehr._access]
        canaries += [v for k, v in admin.cookies.items()] + [v for k, v in approver.cookies.items()]
        logs = [record.getMessage() for record in caplog.records]
        assert_no_leak(canaries, logs, audit)
        assert_no_leak(canaries[2:], pages)

"""The console service at its edges, from ``nox -s mutants -- orgs/console.py`` (threat T28).

:class:`AdminService` on the sandbox, no pages: who administers (the tenant first, then the
designated approver or the administrators list), which tenant a sign-in may start for, that only
a sign-in the console started opens a session and for exactly ``session_ttl``, that every edit
reaches the registry with its version and fields, every action by its name, and every refusal
by reason and by the text an admin or approver reads (docs/security.md, docs/guides/ehr-analyst.md).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import count
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from admin.console import ADMIN_OID, OTHER_TENANT, OUTSIDER_OID
from teams_ehr.app import MICROSOFT_CALLBACK_PATH, TeamsEhr
from teams_ehr.errors import (
    ApprovalRequiredError,
    ConfigurationError,
    CrossTenantDeniedError,
    StateInvalidError,
    StorageConflictError,
)
from teams_ehr.orgs.console import ADMIN_MICROSOFT_CALLBACK_PATH, AdminPolicy, AdminService
from teams_ehr.orgs.console_sessions import CONSOLE_ORG_ID
from teams_ehr.orgs.models import Organization, config_hash
from teams_ehr.smart.context import build_launch_context
from teams_ehr.smart.flows import LaunchResult
from teams_ehr.smart.tokens import TokenResponse
from teams_ehr.teams.identity import MicrosoftIdentity
from teams_ehr.teams.signin import begin_microsoft_signin, store_pending_signin
from teams_ehr.testing.sandbox import (
    APPROVER_OID,
    MICROSOFT_CLIENT_ID,
    SMART_CLIENT_ID,
    TENANT_ID,
    Sandbox,
)

pytestmark = pytest.mark.anyio

SESSION = "s" * 43
ORG = "sandbox-clinic"
TTL = timedelta(minutes=30)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # test_admin_service runs the console on both backends


class _Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class _Console:
    sandbox: Sandbox
    app: TeamsEhr
    service: AdminService
    clock: _Clock

    async def sign_in(self, oid: str, *, session_id: str = SESSION) -> str:
        """The console's Microsoft sign-in as ``oid``; returns the session's CSRF token."""
        started = await self.service.begin_signin(TENANT_ID, session_id=session_id)
        assert started.location is not None
        self.sandbox.entra.sign_in_as(oid)
        back = self.sandbox.entra.authorize_in_browser(started.location)
        await self.service.complete_signin(back, session_id=session_id)
        session = await self.service.session(session_id)
        assert session is not None
        return session.csrf.get_secret_value()

    async def org(self) -> Organization:
        org = await self.app.registry.get(ORG)
        assert org is not None
        return org


@asynccontextmanager
async def _console(
    *,
    seed: str | None = "draft",
    administrators_elsewhere: bool = False,
    tokens: bool = False,
    **policy: object,
) -> AsyncIterator[_Console]:
    """A console on the sandbox; ``administrators_elsewhere`` lists the administrators in
    another tenant only, ``tokens`` makes the token factory count (``token-1``, ``token-2`` …)."""
    clock = _Clock()
    counter = count(1)
    extra: dict[str, Any] = {"token_factory": lambda: f"token-{next(counter)}"} if tokens else {}
    listed = "33333333-4444-4555-8666-777777777777" if administrators_elsewhere else TENANT_ID
    sandbox = Sandbox(clock=clock)
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
    async with sandbox.app() as app:
        if seed is not None:
            await sandbox.seed_organization(app, approve=seed == "active")
        service = AdminService(
            store=app.store,
            registry=app.registry,
            visits=app.visits.approval,
            entra=partial(
                app.services.entra_config_for, callback_path=ADMIN_MICROSOFT_CALLBACK_PATH
            ),
            jwks=app.jwks,
            discovery=app.discovery,
            http=app.http,
            app_base_url=sandbox.app_base_url + "/",
            policy=AdminPolicy(
                administrators={listed: frozenset({ADMIN_OID})}, session_ttl=TTL, **policy
            ),
            clock=clock,
            **extra,
        )
        yield _Console(sandbox, app, service, clock)


# -- who administers ----------------------------------------------------------------------------


def test_policy_defaults_and_the_administrators_list_is_per_tenant() -> None:
    default = AdminPolicy()
    assert (default.administrators, default.session_ttl, default.allow_http) == (
        {},
        timedelta(hours=1),
        False,
    )
    policy = AdminPolicy(administrators={TENANT_ID: frozenset({ADMIN_OID})})
    assert policy.is_administrator(MicrosoftIdentity(tenant_id=TENANT_ID, object_id=ADMIN_OID))
    assert not policy.is_administrator(
        MicrosoftIdentity(tenant_id=OTHER_TENANT, object_id=ADMIN_OID)
    )
    assert not policy.is_administrator(
        MicrosoftIdentity(tenant_id=TENANT_ID, object_id=OUTSIDER_OID)
    )


async def test_may_administer_needs_the_tenant_then_approver_or_listed_admin() -> None:
    async with _console() as console:
        org = await console.org()

        def may(tenant: str, oid: str) -> bool:
            who = MicrosoftIdentity(tenant_id=tenant, object_id=oid)
            return console.service.may_administer(org, who)

        assert may(TENANT_ID, APPROVER_OID)
        assert may(TENANT_ID, ADMIN_OID)
        assert not may(TENANT_ID, OUTSIDER_OID)
        assert not may(OTHER_TENANT, APPROVER_OID)  # the same oid in another tenant
        assert not may(OTHER_TENANT, ADMIN_OID)
        assert repr(console.service) == "<AdminService>"
        # The pages build links and the cookie path from it: no trailing slash, path kept.
        assert console.service.app_base_url == console.sandbox.app_base_url.rstrip("/")
        assert not console.service.app_base_url.endswith("/")
        mounted = AdminService(
            store=console.app.store,
            registry=console.app.registry,
            visits=console.app.visits.approval,
            entra=console.app.services.entra_config,
            jwks=console.app.jwks,
            discovery=console.app.discovery,
            http=console.app.http,
            app_base_url="https://visits.example/teams-EHX//",
        )
        assert mounted.app_base_url == "https://visits.example/teams-EHX"


async def test_an_outsider_of_the_tenant_is_refused_by_reason_and_text() -> None:
    async with _console() as console:
        csrf = await console.sign_in(OUTSIDER_OID)
        assert await console.service.organizations(SESSION) == []
        for attempt in (
            console.service.organization(SESSION, ORG),
            console.service.audit(SESSION, ORG),
            console.service.transition(SESSION, csrf, ORG, "test", "submit"),
            console.service.create(
                SESSION,
                csrf,
                org_id="another",
                display_name="Another",
                approver_oid=APPROVER_OID,
                environments={},
            ),
        ):
            with pytest.raises(ApprovalRequiredError) as refused:
                await attempt
            assert refused.value.reason == "not_administrator"
            assert str(refused.value) == "not an administrator here"
        assert (await console.org()).test.state == "draft"  # type: ignore[union-attr]


async def test_the_approver_sees_the_organization_an_admin_lists_it_too() -> None:
    async with _console() as console:
        await console.sign_in(APPROVER_OID)
        assert [o.org_id for o in await console.service.organizations(SESSION)] == [ORG]
        await console.sign_in(ADMIN_OID, session_id="admin-browser")
        assert [o.org_id for o in await console.service.organizations("admin-browser")] == [ORG]


# -- sign-in --------------------------------------------------------------------------------------


async def test_sign_in_refuses_a_malformed_or_unknown_tenant_by_reason_and_text() -> None:
    async with _console(seed=None) as console:
        with pytest.raises(CrossTenantDeniedError) as bad:
            await console.service.begin_signin("organizations", session_id=SESSION)
        assert (bad.value.reason, str(bad.value)) == ("admin_bad_tenant", "not a tenant id")
        with pytest.raises(CrossTenantDeniedError) as unknown:
            await console.service.begin_signin(OTHER_TENANT, session_id=SESSION)
        assert (unknown.value.reason, str(unknown.value)) == (
            "admin_tenant",
            "no organization in this tenant",
        )
        # A tenant with listed administrators but no organization yet may sign in.
        started = await console.service.begin_signin(TENANT_ID.upper(), session_id=SESSION)
        assert started.status == 302


async def test_an_organization_makes_only_its_own_tenant_known() -> None:
    async with _console(administrators_elsewhere=True) as console:
        with pytest.raises(CrossTenantDeniedError) as unknown:
            await console.service.begin_signin(OTHER_TENANT, session_id=SESSION)
        assert unknown.value.reason == "admin_tenant"
        started = await console.service.begin_signin(TENANT_ID, session_id=SESSION)
        assert started.status == 302


async def test_the_sign_in_state_and_nonce_come_from_the_token_factory() -> None:
    async with _console(tokens=True) as console:
        started = await console.service.begin_signin(TENANT_ID, session_id=SESSION)
        assert started.location is not None
        query = dict(parse_qsl(urlsplit(started.location).query))
        assert (query["state"], query["nonce"]) == ("token-1", "token-2")


@pytest.mark.parametrize(
    ("marker", "purpose"), [(CONSOLE_ORG_ID, "clinician_binding"), (ORG, "approval")]
)
async def test_only_a_sign_in_the_console_started_opens_a_session(
    marker: str, purpose: str
) -> None:
    async with _console() as console:
        org = await console.org()
        _, pending = begin_microsoft_signin(
            console.app.services.entra_config(org),
            purpose=purpose,  # type: ignore[arg-type]
            bound_launch="handle" if purpose == "clinician_binding" else None,
            session_id=SESSION,
            now=console.clock(),
        )
        await store_pending_signin(console.app.store, pending, org_id=marker)
        params = {"state": pending.state.get_secret_value(), "code": "c"}
        with pytest.raises(StateInvalidError) as refused:
            await console.service.complete_signin(params, session_id=SESSION)
        assert refused.value.reason == "purpose"
        assert str(refused.value) == "sign-in was not started by the console"
        assert await console.service.session(SESSION) is None


async def test_a_sign_in_opens_a_session_of_exactly_the_ttl(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with _console() as console:
        started = await console.service.begin_signin(TENANT_ID, session_id=SESSION)
        assert started.location is not None
        console.sandbox.entra.sign_in_as(ADMIN_OID)
        back = console.sandbox.entra.authorize_in_browser(started.location)
        with caplog.at_level(logging.INFO, logger="teams_ehr.orgs.console"):
            done = await console.service.complete_signin(back, session_id=SESSION)
        assert (done.status, done.location) == (303, "/admin")
        [record] = [r for r in caplog.records if r.name == "teams_ehr.orgs.console"]
        assert record.getMessage() == f"console sign-in (tenant {TENANT_ID})"
        session = await console.service.session(SESSION)
        assert session is not None
        assert session.expires_at == console.clock.now + TTL
        assert len(session.csrf.get_secret_value()) == 43  # secrets.token_urlsafe(32)
        opened = console.clock.now
        console.clock.now = opened + TTL - timedelta(microseconds=1)
        assert await console.service.session(SESSION) is not None
        console.clock.now = opened + TTL
        assert await console.service.session(SESSION) is None


async def test_sign_out_needs_the_form_token() -> None:
    async with _console() as console:
        csrf = await console.sign_in(ADMIN_OID)
        with pytest.raises(StateInvalidError) as refused:
            await console.service.sign_out(SESSION, "wrong")
        assert refused.value.reason == "csrf"
        assert await console.service.session(SESSION) is not None
        await console.service.sign_out(SESSION, csrf)
        assert await console.service.session(SESSION) is None


# -- configuration ----------------------------------------------------------------------------------


async def test_create_puts_the_organization_in_the_admins_tenant_self_approval_allowed() -> None:
    async with _console(seed=None) as console:
        csrf = await console.sign_in(ADMIN_OID)
        config = console.sandbox.environment_config()
        created = await console.service.create(
            SESSION,
            csrf,
            org_id=ORG,
            display_name="Clinic",
            approver_oid=APPROVER_OID,
            environments={"test": config},
        )
        assert (created.tenant_id, created.allow_self_approval) == (TENANT_ID, True)
        assert created.test is not None
        assert (created.test.state, created.test.edited_by) == ("draft", ADMIN_OID)
        [entry] = await console.service.audit(SESSION, ORG)
        assert (entry.actor, entry.action) == (ADMIN_OID, "created")


async def test_http_bases_are_refused_by_reason_and_text_on_create_and_update() -> None:
    async with _console() as console:
        csrf = await console.sign_in(ADMIN_OID)
        config = console.sandbox.environment_config().model_copy(update={"allow_http": True})
        org = await console.org()
        for attempt in (
            console.service.create(
                SESSION,
                csrf,
                org_id="loopback",
                display_name="Loopback",
                approver_oid=APPROVER_OID,
                environments={"test": config},
            ),
            console.service.update(
                SESSION, csrf, ORG, expected_version=org.version, environments={"test": config}
            ),
        ):
            with pytest.raises(ConfigurationError) as refused:
                await attempt
            assert (refused.value.reason, str(refused.value)) == (
                "admin_http",
                "http FHIR bases are not allowed",
            )
        assert (await console.org()).version == org.version


async def test_http_bases_pass_when_the_policy_allows_them() -> None:
    async with _console(allow_http=True) as console:
        csrf = await console.sign_in(ADMIN_OID)
        config = console.sandbox.environment_config().model_copy(update={"allow_http": True})
        org = await console.org()
        updated = await console.service.update(
            SESSION, csrf, ORG, expected_version=org.version, environments={"test": config}
        )
        assert updated.test is not None
        assert updated.test.config.allow_http is True


async def test_update_passes_the_version_and_every_field() -> None:
    async with _console() as console:
        csrf = await console.sign_in(ADMIN_OID)
        org = await console.org()
        with pytest.raises(StorageConflictError) as stale:
            await console.service.update(
                SESSION, csrf, ORG, expected_version=org.version + 1, display_name="X"
            )
        assert stale.value.reason == "version_mismatch"
        updated = await console.service.update(
            SESSION,
            csrf,
            ORG,
            expected_version=org.version,
            display_name="Renamed Clinic",
            approver_oid=ADMIN_OID,
        )
        assert (updated.display_name, updated.approver_oid) == ("Renamed Clinic", ADMIN_OID)
        assert updated.test is not None
        assert updated.test.edited_by == ADMIN_OID
        assert updated.version == org.version + 1


async def test_every_action_by_its_name_and_an_unknown_one_by_reason_and_text() -> None:
    async with _console() as console:
        csrf = await console.sign_in(ADMIN_OID)
        states = []
        for action in ("submit", "withdraw", "suspend", "resume"):
            org = await console.service.transition(SESSION, csrf, ORG, "test", action)
            assert org.test is not None
            states.append(org.test.state)
        assert states == ["pending_approval", "draft", "suspended", "pending_approval"]
        for action in ("approve", "Submit", ""):
            with pytest.raises(ConfigurationError) as refused:
                await console.service.transition(SESSION, csrf, ORG, "test", action)
            assert (refused.value.reason, str(refused.value)) == ("admin_action", "unknown action")
        trail = [(e.actor, e.action) for e in await console.service.audit(SESSION, ORG)]
        assert trail[-4:] == [
            (ADMIN_OID, "submitted"),
            (ADMIN_OID, "withdrawn"),
            (ADMIN_OID, "suspended"),
            (ADMIN_OID, "resumed"),
        ]


# -- approval through the service -------------------------------------------------------------------


def _signed_in_result(console: _Console) -> LaunchResult:
    ehr = console.sandbox.ehr
    token = TokenResponse.model_validate(
        {
            "access_token": "at",
            "token_type": "Bearer",
            "id_token": ehr.id_token(SMART_CLIENT_ID, "analyst-1", nonce=None),
        }
    )
    return LaunchResult(
        org_id=ORG, issuer=ehr.base_url, context=build_launch_context({}, None), token=token
    )


async def test_the_three_approval_steps_through_the_service() -> None:
    async with _console() as console:
        admin_csrf = await console.sign_in(ADMIN_OID, session_id="admin-browser")
        await console.service.transition("admin-browser", admin_csrf, ORG, "test", "submit")
        csrf = await console.sign_in(APPROVER_OID)
        org = await console.org()
        assert await console.service.pending_approval(SESSION, ORG, "test") is None
        started = await console.service.begin_approval(
            SESSION, csrf, ORG, "test", reviewed_hash=config_hash(org, "test")
        )
        assert started.status in (302, 303)
        assert started.location is not None
        assert started.location.startswith(console.sandbox.ehr.authorize_url)
        pending = await console.service.pending_approval(SESSION, ORG, "test")
        assert pending is not None
        approval_id, proven = pending
        assert proven is False
        back = await console.service.on_approval_signin(
            org, "test", _signed_in_result(console), SESSION
        )
        assert (back.status, back.location) == (303, f"/admin/orgs/{ORG}/test/review")
        assert await console.service.pending_approval(SESSION, ORG, "test") == (approval_id, True)
        with pytest.raises(StateInvalidError):
            await console.service.approve(SESSION, "wrong", ORG, "test", approval_id=approval_id)
        approved = await console.service.approve(
            SESSION, csrf, ORG, "test", approval_id=approval_id
        )
        assert approved.test is not None
        assert (approved.test.state, approved.test.approved_by) == ("active", APPROVER_OID)
        records = await console.service.records(SESSION, ORG, "test")
        assert records.provider_launch_url.startswith(console.sandbox.app_base_url + "/")
        assert "//" not in records.provider_launch_url.removeprefix("https://")
        trail = [(e.actor, e.action) for e in await console.service.audit(SESSION, ORG)]
        assert trail[-1] == (APPROVER_OID, "approved")


async def test_an_admin_who_is_not_the_approver_cannot_begin_an_approval() -> None:
    async with _console() as console:
        csrf = await console.sign_in(ADMIN_OID)
        await console.service.transition(SESSION, csrf, ORG, "test", "submit")
        org = await console.org()
        with pytest.raises(ApprovalRequiredError) as refused:
            await console.service.begin_approval(
                SESSION, csrf, ORG, "test", reviewed_hash=config_hash(org, "test")
            )
        assert refused.value.reason == "not_designated_approver"


async def test_the_creator_is_the_editor_so_self_approval_can_be_forbidden() -> None:
    """approval.py's rule "someone other than the last editor" must see the creator: an admin
    who creates an organization naming themself approver, self-approval off, cannot approve it."""
    async with _console(seed=None) as console:
        csrf = await console.sign_in(ADMIN_OID)
        await console.service.create(
            SESSION,
            csrf,
            org_id=ORG,
            display_name="Clinic",
            approver_oid=ADMIN_OID,
            environments={"test": console.sandbox.environment_config()},
            allow_self_approval=False,
        )
        org = await console.service.transition(SESSION, csrf, ORG, "test", "submit")
        await console.service.begin_approval(
            SESSION, csrf, ORG, "test", reviewed_hash=config_hash(org, "test")
        )
        await console.service.on_approval_signin(org, "test", _signed_in_result(console), SESSION)
        pending = await console.service.pending_approval(SESSION, ORG, "test")
        assert pending is not None
        with pytest.raises(ApprovalRequiredError) as refused:
            await console.service.approve(SESSION, csrf, ORG, "test", approval_id=pending[0])
        assert refused.value.reason == "self_approval"
        assert (await console.org()).test.state == "pending_approval"  # type: ignore[union-attr]

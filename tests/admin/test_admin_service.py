"""AdminService without HTTP, on asyncio and trio: sessions, policy, refusals (T28)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from admin.console import ADMIN_OID
from teams_ehr.app import MICROSOFT_CALLBACK_PATH
from teams_ehr.errors import (
    ApprovalRequiredError,
    ConfigurationError,
    CrossTenantDeniedError,
    StateInvalidError,
)
from teams_ehr.integrations.admin_routes import admin_service, install_admin
from teams_ehr.orgs.console import ADMIN_MICROSOFT_CALLBACK_PATH, AdminPolicy, AdminService
from teams_ehr.teams.signin import begin_microsoft_signin, store_pending_signin
from teams_ehr.testing.sandbox import MICROSOFT_CLIENT_ID, TENANT_ID, Sandbox

SESSION = "s" * 43


class _Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _sandbox(clock: _Clock) -> Sandbox:
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
    return sandbox


async def _sign_in(service: AdminService, sandbox: Sandbox, oid: str) -> None:
    started = await service.begin_signin(TENANT_ID.upper(), session_id=SESSION)
    assert started.location is not None
    sandbox.entra.sign_in_as(oid)
    back = sandbox.entra.authorize_in_browser(started.location)
    done = await service.complete_signin(back, session_id=SESSION)
    assert done.status == 303


def test_policy_normalizes_guids() -> None:
    policy = AdminPolicy(administrators={TENANT_ID.upper(): frozenset({ADMIN_OID.upper()})})
    assert policy.administrators == {TENANT_ID: frozenset({ADMIN_OID})}
    with pytest.raises(ValidationError):
        AdminPolicy(administrators={"not-a-guid": frozenset()})


@pytest.mark.anyio
async def test_session_expires_after_its_ttl() -> None:
    clock = _Clock()
    sandbox = _sandbox(clock)
    async with sandbox.app() as app:
        policy = AdminPolicy(
            administrators={TENANT_ID: frozenset({ADMIN_OID})}, session_ttl=timedelta(minutes=30)
        )
        service = install_admin(app, policy=policy)
        assert admin_service(app) is service
        await _sign_in(service, sandbox, ADMIN_OID)
        session = await service.session(SESSION)
        assert session is not None
        assert session.identity.object_id == ADMIN_OID
        assert session.csrf.get_secret_value() not in repr(session)
        assert await service.organizations(SESSION) == []
        clock.now += timedelta(minutes=31)
        assert await service.session(SESSION) is None
        with pytest.raises(ApprovalRequiredError) as refused:
            await service.organizations(SESSION)
        assert refused.value.reason == "admin_not_signed_in"


@pytest.mark.anyio
async def test_console_callback_refuses_a_clinician_sign_in_state() -> None:
    sandbox = _sandbox(_Clock())
    async with sandbox.app() as app:
        service = install_admin(app)
        await sandbox.seed_organization(app)
        org = await app.registry.get("sandbox-clinic")
        assert org is not None
        url, pending = begin_microsoft_signin(
            app.services.entra_config(org),
            purpose="clinician_binding",
            bound_launch="handle",
            session_id=SESSION,
            now=app.clock(),
        )
        await store_pending_signin(app.store, pending, org_id=org.org_id)
        params = {"state": pending.state.get_secret_value(), "code": "c"}
        with pytest.raises(StateInvalidError) as refused:
            await service.complete_signin(params, session_id=SESSION)
        assert refused.value.reason == "purpose"
        assert url.startswith(sandbox.entra.authorize_endpoint)


@pytest.mark.anyio
async def test_sign_in_refuses_bad_or_unknown_tenants() -> None:
    sandbox = _sandbox(_Clock())
    async with sandbox.app() as app:
        service = install_admin(app)  # no administrators, no organizations: nobody
        for tenant in ("common", "organizations", TENANT_ID):
            with pytest.raises(CrossTenantDeniedError):
                await service.begin_signin(tenant, session_id=SESSION)
        await sandbox.seed_organization(app, approve=False)
        started = await service.begin_signin(TENANT_ID, session_id=SESSION)  # now known
        assert started.status == 302


@pytest.mark.anyio
async def test_http_fhir_bases_need_the_policy_flag() -> None:
    sandbox = _sandbox(_Clock())
    async with sandbox.app() as app:
        service = install_admin(
            app, policy=AdminPolicy(administrators={TENANT_ID: frozenset({ADMIN_OID})})
        )
        await _sign_in(service, sandbox, ADMIN_OID)
        session = await service.session(SESSION)
        assert session is not None
        config = sandbox.environment_config().model_copy(update={"allow_http": True})
        with pytest.raises(ConfigurationError) as refused:
            await service.create(
                SESSION,
                session.csrf.get_secret_value(),
                org_id="loopback",
                display_name="Loopback",
                approver_oid=ADMIN_OID,
                environments={"test": config},
            )
        assert refused.value.reason == "admin_http"
        assert await app.registry.list() == []


@pytest.mark.anyio
async def test_the_runtime_builds_a_console_and_install_admin_replaces_it() -> None:
    sandbox = _sandbox(_Clock())
    async with sandbox.app() as app:
        built = admin_service(app)
        assert app.visits.approval.on_signin == built.on_approval_signin
        installed = install_admin(app, policy=AdminPolicy())
        assert installed is not built
        assert admin_service(app) is installed
        assert app.visits.approval.on_signin == installed.on_approval_signin

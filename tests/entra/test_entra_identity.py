"""Identity binding rules (SPEC B6, security.md T14) over MemoryIdentityMap."""

from __future__ import annotations

import dataclasses

import pytest
from entra_helpers import CLINICIAN_OID, OTHER_TENANT, TENANT, FakeClock
from pydantic import ValidationError

from teams_ehr.errors import (
    CrossTenantDeniedError,
    IdentityBindingError,
    StorageConflictError,
    UsageError,
)
from teams_ehr.store.protocol import IdentityLink, IdentityMapStore
from teams_ehr.teams.identity import IdentityBinder, MemoryIdentityMap, MicrosoftIdentity

pytestmark = pytest.mark.anyio

ISS = "https://ehr.example.org/fhir"
OTHER_OID = "0a0b0c0d-0000-4000-8000-000000000002"


def _binder() -> tuple[IdentityBinder, MemoryIdentityMap, FakeClock]:
    store = MemoryIdentityMap()
    clock = FakeClock()
    return IdentityBinder(store, clock), store, clock


def _me(tenant: str = TENANT, oid: str = CLINICIAN_OID) -> MicrosoftIdentity:
    return MicrosoftIdentity(tenant_id=tenant, object_id=oid)


async def test_bind_then_lookup() -> None:
    binder, _store, clock = _binder()
    link = await binder.bind(
        "org-a", ISS, "emp-1", _me(), organization_tenant_id=TENANT, launch_session_valid=True
    )
    assert link == IdentityLink("org-a", ISS, "emp-1", TENANT, CLINICIAN_OID, clock())
    assert await binder.lookup("org-a", ISS, "emp-1") == link
    assert await binder.lookup("org-a", ISS, "emp-2") is None


async def test_bind_without_launch_session_rejected() -> None:
    binder, store, _ = _binder()
    with pytest.raises(IdentityBindingError) as caught:
        await binder.bind(
            "org-a", ISS, "emp-1", _me(), organization_tenant_id=TENANT, launch_session_valid=False
        )
    assert caught.value.reason == "no_launch_session"
    assert store.rows == ()


async def test_bind_foreign_tenant_rejected() -> None:
    binder, store, _ = _binder()
    with pytest.raises(CrossTenantDeniedError):
        await binder.bind(
            "org-a",
            ISS,
            "emp-1",
            _me(tenant=OTHER_TENANT),
            organization_tenant_id=TENANT,
            launch_session_valid=True,
        )
    assert store.rows == ()


async def test_tenant_comparison_ignores_guid_case() -> None:
    binder, _, _ = _binder()
    link = await binder.bind(
        "org-a",
        ISS,
        "emp-1",
        _me(tenant=TENANT.upper()),
        organization_tenant_id=TENANT,
        launch_session_valid=True,
    )
    assert link.tenant_id == TENANT


async def test_rebind_requires_unlink() -> None:
    binder, store, _ = _binder()
    kwargs = {"organization_tenant_id": TENANT, "launch_session_valid": True}
    await binder.bind("org-a", ISS, "emp-1", _me(), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(IdentityBindingError) as caught:
        await binder.bind("org-a", ISS, "emp-1", _me(oid=OTHER_OID), **kwargs)  # type: ignore[arg-type]
    assert caught.value.reason == "already_bound"
    assert [r.object_id for r in store.rows] == [CLINICIAN_OID]

    assert await binder.unlink("org-a", ISS, "emp-1") is True
    assert await binder.unlink("org-a", ISS, "emp-1") is False
    await binder.bind("org-a", ISS, "emp-1", _me(oid=OTHER_OID), **kwargs)  # type: ignore[arg-type]
    assert [r.object_id for r in store.rows] == [OTHER_OID]


async def test_same_ehr_id_two_orgs_distinct_keys() -> None:
    binder, store, _ = _binder()
    kwargs = {"organization_tenant_id": TENANT, "launch_session_valid": True}
    await binder.bind("org-a", ISS, "emp-1", _me(), **kwargs)  # type: ignore[arg-type]
    await binder.bind("org-b", ISS, "emp-1", _me(oid=OTHER_OID), **kwargs)  # type: ignore[arg-type]
    await binder.bind("org-a", ISS + "2", "emp-1", _me(oid=OTHER_OID), **kwargs)  # type: ignore[arg-type]
    assert len(store.rows) == 3
    found = await binder.lookup("org-a", ISS, "emp-1")
    assert found is not None
    assert found.object_id == CLINICIAN_OID


async def test_concurrent_bind_race_is_already_bound() -> None:
    """A store conflict (another instance won the race) surfaces as already_bound."""

    class RacingStore(MemoryIdentityMap):
        async def get_identity(self, org_id: str, ehr_issuer: str, ehr_user_id: str) -> None:
            return None

    store = RacingStore()
    binder = IdentityBinder(store, FakeClock())
    kwargs = {"organization_tenant_id": TENANT, "launch_session_valid": True}
    await binder.bind("org-a", ISS, "emp-1", _me(), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(IdentityBindingError) as caught:
        await binder.bind("org-a", ISS, "emp-1", _me(oid=OTHER_OID), **kwargs)  # type: ignore[arg-type]
    assert caught.value.reason == "already_bound"


async def test_memory_map_conflicts_like_real_stores() -> None:
    store: IdentityMapStore = MemoryIdentityMap()
    link = IdentityLink("o", ISS, "u", TENANT, CLINICIAN_OID, FakeClock()())
    await store.bind_identity(link)
    with pytest.raises(StorageConflictError):
        await store.bind_identity(dataclasses.replace(link, object_id=OTHER_OID))


async def test_map_stores_only_ids() -> None:
    """The identity row has exactly the key and (tid, oid): no name, UPN or e-mail column."""
    binder, store, _ = _binder()
    await binder.bind(
        "org-a", ISS, "emp-1", _me(), organization_tenant_id=TENANT, launch_session_valid=True
    )
    (row,) = store.rows
    fields = {f.name for f in dataclasses.fields(row)}
    assert fields == {"org_id", "ehr_issuer", "ehr_user_id", "tenant_id", "object_id", "linked_at"}
    assert set(MicrosoftIdentity.model_fields) == {"tenant_id", "object_id"}


def test_microsoft_identity_refuses_extras_and_non_guids() -> None:
    with pytest.raises(ValidationError):
        MicrosoftIdentity(tenant_id=TENANT, object_id=CLINICIAN_OID, upn="x@y")  # type: ignore[call-arg]
    with pytest.raises(ValidationError) as caught:
        MicrosoftIdentity(tenant_id="common", object_id="SECRET-CANARY")
    assert "SECRET-CANARY" not in str(caught.value)


async def test_key_parts_are_bounded() -> None:
    binder, _, _ = _binder()
    with pytest.raises(UsageError, match="non-empty"):
        await binder.lookup("org-a", ISS, "")
    with pytest.raises(UsageError, match="non-empty"):
        await binder.lookup("org-a", ISS, "x" * 5000)

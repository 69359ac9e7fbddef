"""Shared fixtures-as-functions for the C1/C2 tests: an in-memory OrganizationStore with the
protocol's semantics, sample organizations, proofs and identities."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from teams_ehr.errors import StorageConflictError
from teams_ehr.orgs.approval import ApprovalProof
from teams_ehr.orgs.models import EnvironmentConfig, EnvironmentName, Organization
from teams_ehr.smart.discovery import DiscoverySnapshot
from teams_ehr.store.protocol import AuditEntry, IssuerBinding, JsonObject, OrganizationRow
from teams_ehr.teams.identity import MicrosoftIdentity

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

TENANT_A = "0f3c8a52-1111-4c1e-9d1a-000000000a0a"
TENANT_B = "0f3c8a52-2222-4c1e-9d1a-000000000b0b"
APPROVER_A = "a1a1a1a1-0000-4000-8000-00000000a001"
ADMIN_A = "a2a2a2a2-0000-4000-8000-00000000a002"
APPROVER_B = "b1b1b1b1-0000-4000-8000-00000000b001"

BASE_A_TEST = "https://fhir-test.hospital-a.example/interconnect-fhir-oauth/api/FHIR/R4"
BASE_A_PROD = "https://fhir.hospital-a.example/interconnect-fhir-oauth/api/FHIR/R4"
BASE_B_TEST = "https://fhir-test.hospital-b.example/api/FHIR/R4"


class FakeClock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


class MemoryOrgStore:
    """``OrganizationStore`` in memory: versions, one claim per base, append-only audit."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[int, str]] = {}
        self.issuers: dict[str, IssuerBinding] = {}
        self.audit: dict[str, list[AuditEntry]] = {}

    async def put_organization(
        self, org_id: str, document: JsonObject, *, expected_version: int | None
    ) -> int:
        current = self.rows.get(org_id)
        if expected_version is None:
            if current is not None:
                raise StorageConflictError("exists", reason="organization_exists")
            version = 1
        else:
            if current is None or current[0] != expected_version:
                raise StorageConflictError("version mismatch", reason="version_mismatch")
            version = expected_version + 1
        self.rows[org_id] = (version, json.dumps(document))
        return version

    async def get_organization(self, org_id: str) -> OrganizationRow | None:
        row = self.rows.get(org_id)
        return None if row is None else OrganizationRow(org_id, row[0], json.loads(row[1]))

    async def list_organizations(self) -> Sequence[OrganizationRow]:
        return [OrganizationRow(k, v, json.loads(d)) for k, (v, d) in sorted(self.rows.items())]

    async def claim_issuer(self, binding: IssuerBinding) -> None:
        held = self.issuers.get(binding.canonical_base)
        if held is not None and held.org_id != binding.org_id:
            raise StorageConflictError("claimed", reason="issuer_claimed")
        self.issuers[binding.canonical_base] = binding

    async def release_issuer(self, canonical_base: str, org_id: str) -> None:
        held = self.issuers.get(canonical_base)
        if held is not None and held.org_id == org_id:
            del self.issuers[canonical_base]

    async def resolve_issuer(self, canonical_base: str) -> IssuerBinding | None:
        return self.issuers.get(canonical_base)

    async def append_audit(
        self, org_id: str, *, at: datetime, actor: str, action: str, detail: JsonObject
    ) -> AuditEntry:
        entries = self.audit.setdefault(org_id, [])
        entry = AuditEntry(
            org_id, len(entries) + 1, at, actor, action, json.loads(json.dumps(detail))
        )
        entries.append(entry)
        return entry

    async def list_audit(self, org_id: str) -> Sequence[AuditEntry]:
        return list(self.audit.get(org_id, []))


@asynccontextmanager
async def open_store(kind: str, clock: FakeClock) -> AsyncIterator[Any]:
    """Memory, or H5's ``SqliteStore`` in memory. Not an async fixture: anyio's trio runner
    cannot host async fixtures with the trio installed here."""
    if kind == "memory":
        yield MemoryOrgStore()
        return
    from teams_ehr.store.crypto import FieldCipher, new_encryption_key
    from teams_ehr.store.sqlite import SqliteStore

    async with SqliteStore(":memory:", cipher=FieldCipher(new_encryption_key()), clock=clock) as s:
        yield s


def env_config(
    base: str, org_id: str = "hospital-a", env: str = "test", **kw: Any
) -> EnvironmentConfig:
    return EnvironmentConfig(
        fhir_base=base,
        client_id=kw.pop("client_id", f"{org_id}-{env}-client"),
        redirect_uri=kw.pop("redirect_uri", f"https://visits.example.com/callback/{org_id}"),
        jwks_url=kw.pop("jwks_url", f"https://visits.example.com/jwks/{org_id}/{env}.json"),
        **kw,
    )


def org_a(**kw: Any) -> Organization:
    return Organization.model_validate(
        {
            "org_id": "hospital-a",
            "display_name": "Hospital A Health System",
            "tenant_id": TENANT_A,
            "approver_oid": APPROVER_A,
            "test": {"config": env_config(BASE_A_TEST)},
            "production": {"config": env_config(BASE_A_PROD, env="production")},
            **kw,
        }
    )


def org_b(base: str = BASE_B_TEST, **kw: Any) -> Organization:
    return Organization.model_validate(
        {
            "org_id": "hospital-b",
            "display_name": "Hospital B",
            "tenant_id": TENANT_B,
            "approver_oid": APPROVER_B,
            "test": {"config": env_config(base, org_id="hospital-b")},
            **kw,
        }
    )


def snapshot(base: str) -> DiscoverySnapshot:
    host = base.split("/")[2]
    return DiscoverySnapshot(
        issuer=f"https://{host}/oauth2",
        authorization_endpoint=f"https://{host}/oauth2/authorize",
        token_endpoint=f"https://{host}/oauth2/token",
        jwks_uri=f"https://{host}/oauth2/jwks",
    )


def proof(base: str, *, at: datetime = NOW, issuer: str | None = "default") -> ApprovalProof:
    snap = snapshot(base)
    return ApprovalProof(
        canonical_base=base,
        snapshot=snap,
        id_token_issuer=snap.issuer if issuer == "default" else issuer,
        signed_in_at=at,
    )


def identity(tenant: str, oid: str) -> MicrosoftIdentity:
    return MicrosoftIdentity(tenant_id=tenant, object_id=oid)


APPROVER = identity(TENANT_A, APPROVER_A)


def env_name(name: str) -> EnvironmentName:
    return "test" if name == "test" else "production"

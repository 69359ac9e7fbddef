"""Shared constants and doubles for the Microsoft sign-in tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from teams_ehr.testing.fake_entra import FakeEntra

TENANT = "11111111-2222-3333-4444-555555555555"
OTHER_TENANT = "99999999-8888-7777-6666-555555555555"
CLIENT_ID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
REDIRECT_URI = "https://app.example.org/ms/callback"
CLIENT_SECRET = "SECRET-CANARY-entra-0001"
CLINICIAN_OID = "0a0b0c0d-0000-4000-8000-000000000001"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """A settable :data:`~teams_ehr._types.Clock`."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake(clock: FakeClock) -> FakeEntra:
    entra = FakeEntra(TENANT, clock=clock)
    entra.register_app(CLIENT_ID, redirect_uris=[REDIRECT_URI], secret=CLIENT_SECRET)
    entra.sign_in_as(CLINICIAN_OID, name="NAME-CANARY Doe", preferred_username="UPN-CANARY@x.org")
    return entra


@pytest.fixture(scope="session")
def certificate() -> tuple[bytes, bytes]:
    """(private key PEM, self-signed certificate PEM) of an app registration."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "teams-ehr test app")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0 - timedelta(days=1))
        .not_valid_after(T0 + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


class MemoryPendingStore:
    """A dict-backed :class:`~teams_ehr.store.protocol.PendingAuthorizationStore`."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, bytes, datetime]] = {}

    async def put_pending(
        self, key: str, *, org_id: str, payload: bytes, expires_at: datetime
    ) -> None:
        self.rows[key] = (org_id, payload, expires_at)

    async def take_pending(self, key: str, *, now: datetime) -> tuple[str, bytes] | None:
        row = self.rows.pop(key, None)
        if row is None or row[2] <= now:
            return None
        return row[0], row[1]

"""What one notification POST reads, counted (issue 11, "notifications near their floor"; D1):
the subscription row and the organization's tenant once per batch, one inbox append, and each
validation token parsed by PyJWT once (in the signature check), none for a cached token."""

from __future__ import annotations

import dataclasses
from typing import Any

import jwt
import pytest
from attendance_in_support import Harness, delta_guest, make_harness, roster_event

from teams_ehr.attendance.webhook import WebhookResult, handle_notifications

pytestmark = pytest.mark.anyio


class Counted:
    """The harness store and tenant lookup, counting the reads the webhook makes."""

    def __init__(self, h: Harness) -> None:
        self.subscription_reads = 0
        self.tenant_reads = 0
        self._h = h
        self.security = dataclasses.replace(h.security, org_tenant=self._tenant)

    async def _tenant(self, org_id: str) -> str | None:
        self.tenant_reads += 1
        return await self._h.security.org_tenant(org_id)

    async def get_subscription(self, subscription_id: str) -> Any:
        self.subscription_reads += 1
        return await self._h.store.get_subscription(subscription_id)

    async def post(self, body: bytes) -> WebhookResult:
        return await handle_notifications(
            body,
            security=self.security,
            inbox=self._h.store,
            subscriptions=self,  # type: ignore[arg-type]
            now=self._h.clock(),
        )


def _events(h: Harness, count: int) -> list[dict[str, Any]]:
    return [h.item(roster_event(delta_guest(f"guest-{n}")), id=f"n{n}") for n in range(count)]


async def test_a_batch_reads_its_subscription_and_tenant_once() -> None:
    h = await make_harness()
    counted = Counted(h)
    result = await counted.post(h.body(*_events(h, 5)))
    assert (result.status, result.accepted) == (202, 5)
    assert counted.subscription_reads == 1
    assert counted.tenant_reads == 1
    assert h.store.append_calls == 1


async def test_a_forged_batch_reads_the_subscription_once_and_stores_nothing() -> None:
    h = await make_harness()
    counted = Counted(h)
    items = [h.item(roster_event(delta_guest("g")), clientState="forged") for _ in range(3)]
    result = await counted.post(h.body(*items))
    assert result.status == 202
    assert result.accepted == 0
    assert result.rejected == ("client_state_mismatch",) * 3
    assert counted.subscription_reads == 1
    assert counted.tenant_reads == 0
    assert h.store.append_calls == 0


async def test_each_validation_token_is_decoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    h = await make_harness(fresh_entra=True)
    decodes: list[str] = []
    real = jwt.decode

    def counted_decode(token: Any, *args: Any, **kwargs: Any) -> Any:
        decodes.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counted_decode)
    token = h.token()
    counted = Counted(h)
    first = await counted.post(h.body(*_events(h, 2), tokens=[token]))
    assert (first.status, first.accepted) == (202, 2)
    assert decodes == [token]  # the verified decode only: no unverified pre-read by PyJWT
    again = await counted.post(h.body(h.item(roster_event(delta_guest("x"))), tokens=[token]))
    assert (again.status, again.accepted) == (202, 1)
    assert decodes == [token]  # the same bytes, verified before: no decode at all


MALFORMED = (
    "a.b",
    "a.b.c.d",
    "e30.e30.!!!",
    "e30.e30.c2ln=",
    "e30.e30.c2lnX",
    "e30.e30.a",
    "W10.e30.c2ln",
    "e30.W10.c2ln",
    "e30.bm90IGpzb24.c2ln",
    "eyJiNjQiOmZhbHNlfQ.e30.c2ln",  # {"b64":false}: a detached payload
)


@pytest.mark.parametrize("bad", MALFORMED)
async def test_a_token_pyjwt_cannot_parse_is_malformed_before_any_key_fetch(bad: str) -> None:
    with pytest.raises(jwt.PyJWTError):
        jwt.decode(bad, options={"verify_signature": False})
    h = await make_harness(fresh_entra=True)
    result = await Counted(h).post(h.body(*_events(h, 1), tokens=[bad]))
    assert (result.status, result.accepted) == (202, 0)
    assert result.rejected == ("validation_token_malformed",)
    assert h.entra.requests == []  # no key fetch for a token that does not even parse


@pytest.mark.parametrize(
    "token",
    [
        "e30.e30.c2ln",
        "e30=.e30.c2ln",  # PyJWT accepts a padded quantum
        "eyJhbGciOiJSUzI1NiJ9.eyJ0aWQiOiJUIiwidmVyIjoiMi4wIn0.c2lnYQ",
        "eyJiNjQiOnRydWV9.eyJ0aWQiOiJ0In0.c2ln",
    ],
)
def test_the_claims_read_before_verification_are_pyjwts(token: str) -> None:
    from teams_ehr.attendance.validation_tokens import _unverified_claims

    assert _unverified_claims(token) == jwt.decode(token, options={"verify_signature": False})

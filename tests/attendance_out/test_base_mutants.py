"""Edges of the writer base ``nox -s mutants`` left open (threat T33; docs/reference/
attendance-writer.md): the process-wide lock ``write`` holds for a search-then-create
(https://hl7.org/fhir/R4/http.html#ccreate) is named by the FHIR base without its trailing
slashes and the writer's ``lock_key``, the same name the outbox worker holds.
"""

from __future__ import annotations

import anyio
import httpx
import pytest
from attendance_out_support import FHIR_BASE, TARGET, event

from teams_ehr.attendance.writers import AuditEventWriter
from teams_ehr.attendance.writers.base import WRITE_LOCKS, write_lock_name
from teams_ehr.testing.fake_fhir import FakeFhirServer

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("base", "name"),
    [
        ("https://h/fhir", "https://h/fhir|k"),
        ("https://h/fhir/", "https://h/fhir|k"),
        ("https://h/fhir//", "https://h/fhir|k"),
        ("https://h/BOX", "https://h/BOX|k"),
        ("https://h/X/", "https://h/X|k"),
        ("/rel/fhir ", "/rel/fhir |k"),
    ],
)
def test_write_lock_name_strips_only_trailing_slashes(base: str, name: str) -> None:
    assert write_lock_name(base, "k") == name


async def test_write_waits_for_the_lock_named_for_its_resource() -> None:
    """While the test holds the lock named for this fact on this server, ``write`` sends
    nothing; once it is released, the write goes ahead."""
    fake = FakeFhirServer(FHIR_BASE, supports_conditional_create=False)
    writer = AuditEventWriter(conditional_create=False)
    fact = event("connected")
    mine = write_lock_name(FHIR_BASE, f"audit/{fact.fact_key}")
    statuses: list[str] = []

    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as http:

        async def write() -> None:
            outcome = await writer.write(
                fact, target=TARGET, http=http, fhir_base=FHIR_BASE + "/", access_token="t"
            )
            statuses.append(outcome.status)

        async with anyio.create_task_group() as group, WRITE_LOCKS.hold(mine):
            group.start_soon(write)
            for _ in range(50):
                await anyio.sleep(0)
            assert (fake.request_log, statuses) == ([], [])
    assert statuses == ["created"]
    assert len(WRITE_LOCKS) == 0

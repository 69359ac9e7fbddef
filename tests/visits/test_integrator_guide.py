"""The integrator guide's visit-flow example runs as written (docs/guides/integrator.md)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from visit_support import ORG

from teams_ehr.errors import JoinLinkInvalidError
from teams_ehr.teams.meetings import external_id_for
from teams_ehr.testing.sandbox import PRACTITIONER, Sandbox

pytestmark = pytest.mark.anyio

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "integrator.md"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _example() -> str:
    section = GUIDE.read_text(encoding="utf-8").split("## The visit flows in code", 1)[1]
    return section.split("```python\n", 1)[1].split("\n```", 1)[0]


async def test_the_guide_prepares_a_join_link_and_cancels_the_visit() -> None:
    sandbox = Sandbox()
    start, end = sandbox.seed_appointment("123")
    async with sandbox.app() as runtime:
        await sandbox.seed_organization(runtime)
        await sandbox.seed_clinician(runtime)
        source = (
            "async def example(runtime, org_id, environment, clinician, start, end):\n"
            + textwrap.indent(_example(), "    ")
            + "\n    return token, join_url\n"
        )
        namespace: dict[str, Any] = {}
        exec(compile(source, str(GUIDE), "exec"), namespace)
        example = namespace["example"]
        token, join_url = await example(runtime, ORG, "test", PRACTITIONER, start, end)
        assert join_url == f"{runtime.settings.app_base_url}/j/{token}"
        key = runtime.settings.external_id_key_bytes()
        row = await runtime.store.get_meeting(ORG, external_id_for(key, ORG, "Appointment/123"))
        assert row is not None
        assert row.state == "cancelled"
        with pytest.raises(JoinLinkInvalidError):  # cancelled: the link no longer opens
            await runtime.visits.patient.join(token, client_key="203.0.113.9")

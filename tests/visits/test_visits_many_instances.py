"""Two app instances on one store: any instance serves any step, no sticky sessions (SPEC C6).

A launch begun on instance A completes on instance B, the Microsoft sign-in returns to A, and a
join link issued on B works on A. PostgreSQL runs for real at 127.0.0.1:5432 (database ``test``,
a fresh schema per test); a shared SQLite file shows the same for one host.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from teams_ehr.errors import LaunchParameterError
from teams_ehr.testing.sandbox import CLINICIAN_OID, PRACTITIONER, Sandbox

pytestmark = pytest.mark.anyio
ORG = "sandbox-clinic"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # psycopg's async connections run on asyncio only


@pytest.fixture(params=["postgres", "sqlite-file"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite-file":
        return f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    return str(request.getfixturevalue("postgres_dsn"))


async def test_launch_on_one_instance_completes_on_another(store_url: str) -> None:
    sandbox = Sandbox(store_url=store_url)
    start, end = sandbox.seed_appointment("appt-c6")
    async with sandbox.app() as a, sandbox.app() as b:
        assert a.store is not b.store
        await sandbox.seed_organization(a)

        launch = sandbox.provider_launch("appt-c6")
        started = await a.visits.provider.begin_launch(
            ORG, "test", {"iss": sandbox.ehr.base_url, "launch": launch}, session_id="browser"
        )
        callback = sandbox.ehr.authorize_in_browser(
            SimpleNamespace(method="GET", url=started.location, fields=())
        )
        signin = await b.visits.callback.complete(callback, session_id="browser")
        assert signin.location is not None
        sandbox.entra.sign_in_as(CLINICIAN_OID)
        back = sandbox.entra.authorize_in_browser(signin.location)
        entered = await a.visits.binding.complete_microsoft_signin(back, session_id="browser")
        assert entered.status == 303

        # The replayed launch value is refused on the other instance too.
        with pytest.raises(LaunchParameterError):
            await b.visits.provider.begin_launch(
                ORG, "test", {"iss": sandbox.ehr.base_url, "launch": launch}, session_id="x"
            )

        token = await b.visits.meetings.prepare_visit(
            ORG,
            environment="test",
            visit_key="Appointment/appt-c6",
            ehr_user_id=PRACTITIONER,  # bound on instance a, read on instance b
            start=start,
            end=end,
        )
        joined = await a.visits.patient.join(token, client_key="198.51.100.7")
        assert joined.status == 303
        assert joined.location == next(iter(sandbox.graph.meetings.values()))["joinWebUrl"]
        assert len(sandbox.graph.meetings) == 1

"""What one provider launch asks of the organization registry and the store, counted (issue 11,
"a launch near its floor"): the organization is read once per request (``/launch``, then
``/callback``), the launch's SQLite reads take no thread hop on an idle store, and a suspended
organization still stops the next launch at once (threat T27)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import anyio.to_thread
import pytest

from teams_ehr.app import TeamsEhr
from teams_ehr.config import AttendanceSettings
from teams_ehr.errors import UntrustedIssuerError
from teams_ehr.store import sqlite as sqlite_module
from teams_ehr.store._base import SqlStore
from teams_ehr.store.protocol import IdentityLink
from teams_ehr.testing.sandbox import TENANT_ID, Sandbox

pytestmark = pytest.mark.anyio

ORG = "sandbox-clinic"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Counts:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Sandbox, TeamsEhr]]:
    sandbox = Sandbox(  # no background workers: nothing else holds the store's connection
        store_url=f"sqlite:///{tmp_path / 'launch.sqlite3'}",
        attendance=AttendanceSettings(workers=False),
    )
    async with sandbox.app() as app:
        await sandbox.seed_organization(app, org_id=ORG)
        for index in range(2):
            sandbox.seed_appointment(f"appt-{index}")
            await app.store.bind_identity(
                IdentityLink(
                    org_id=ORG,
                    ehr_issuer=sandbox.ehr.base_url,
                    ehr_user_id=f"practitioner-{index}",
                    tenant_id=TENANT_ID,
                    object_id=str(uuid.UUID(int=index + 1, version=4)),
                    linked_at=sandbox.clock(),
                )
            )
        yield sandbox, app


def _count(monkeypatch: pytest.MonkeyPatch, app: TeamsEhr) -> Counts:
    counts = Counts()
    read = SqlStore.get_organization

    async def get_organization(store: SqlStore, org_id: str) -> Any:
        counts.calls["organization reads"] += 1
        return await read(store, org_id)

    monkeypatch.setattr(SqlStore, "get_organization", get_organization)
    run_sync = anyio.to_thread.run_sync

    caller = anyio.get_current_task().id  # the launch's task; background workers not counted

    async def hop(func: Any, *args: Any, **kwargs: Any) -> Any:
        if anyio.get_current_task().id == caller:
            counts.calls["hop"] += 1
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(sqlite_module.anyio.to_thread, "run_sync", hop)
    return counts


async def _begin(sandbox: Sandbox, app: TeamsEhr, index: int) -> Any:
    launch = sandbox.provider_launch(f"appt-{index}", user=f"practitioner-{index}")
    params = {"iss": sandbox.ehr.base_url, "launch": launch}
    return await app.visits.provider.begin_launch(
        ORG, "test", params, session_id=f"browser-{index}"
    )


async def test_a_launch_reads_its_organization_once_per_request(
    world: tuple[Sandbox, TeamsEhr], monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox, app = world
    counts = _count(monkeypatch, app)
    started = await _begin(sandbox, app, 0)
    assert started.location is not None
    assert counts.calls["organization reads"] == 1
    # begin: the replay nonce and the pending authorization are the only worker hops (the
    # organization and issuer reads run inline on the idle store)
    assert counts.calls["hop"] == 2
    redirect = SimpleNamespace(method="GET", url=started.location, fields=())
    callback = sandbox.ehr.authorize_in_browser(redirect)
    before = counts.calls["organization reads"]
    done = await app.visits.callback.complete(callback, session_id="browser-0")
    assert done.status == 303
    assert (done.location or "").startswith("https://teams.microsoft.com/")
    assert counts.calls["organization reads"] - before == 1


async def test_a_suspension_stops_the_next_launch_at_once(
    world: tuple[Sandbox, TeamsEhr],
) -> None:
    sandbox, app = world
    assert (await _begin(sandbox, app, 0)).location is not None
    await app.registry.suspend(ORG, "test", actor="system")
    with pytest.raises(UntrustedIssuerError):
        await _begin(sandbox, app, 1)

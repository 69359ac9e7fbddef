"""Runs the MeetingFactory contract over both backends against FakeGraph (SPEC B1, B2).

The lean GraphClient runs on asyncio and trio; the msgraph-sdk adapter on asyncio only (its
RetryHandler calls asyncio.sleep, reference/graph.md §2.5)."""

from __future__ import annotations

import pytest
from graph_test_support import TENANT, FakeTime, make_graph_client, make_msgraph_client
from meeting_factory_contract import *  # noqa: F403 - the contract tests are collected here
from meeting_factory_contract import FactoryEnv

from teams_ehr.teams.meetings import GraphMeetingFactory
from teams_ehr.testing.fake_graph import FakeGraph

# msgraph-sdk 1.65's generated request builders emit DeprecationWarnings (its own and kiota's)
# when they are imported and built; they are not ours to fix.
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:msgraph"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:kiota_abstractions"),
]

KEY = b"contract-test-external-id-key-32b!"


@pytest.fixture(
    params=[("graph_client", "asyncio"), ("graph_client", "trio"), ("msgraph", "asyncio")],
    ids=["graph_client-asyncio", "graph_client-trio", "msgraph-asyncio"],
)
def backend(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend(backend: tuple[str, str]) -> str:
    return backend[1]


@pytest.fixture
def env(backend: tuple[str, str]) -> FactoryEnv:
    # A sync fixture: MockTransport clients hold no sockets, and async fixtures on trio need a
    # newer trio than some machines have.
    time = FakeTime()
    fake = FakeGraph(tenant_id=TENANT, clock=time.clock, seed=7)
    if backend[0] == "graph_client":
        client, http = make_graph_client(fake, time)
        factory = GraphMeetingFactory(client, external_id_key=KEY)
    else:
        from teams_ehr.teams.msgraph_adapter import MsGraphMeetingFactory

        service, http = make_msgraph_client(fake)
        factory = MsGraphMeetingFactory(service, external_id_key=KEY)
    del http
    return FactoryEnv(backend[0], factory, fake)

"""Fakes for integrators and our own tests (requirement E1): FakeEhr, FakeFhirServer, FakeEntra,
FakeGraph, the Sandbox that wires them together, the HostHarness that drives a host through
it, and loopback serving.

Importable without pytest; each fake is an ``httpx.MockTransport`` handler and an ASGI app. The
names below load on first use (PEP 562), so the ``pytest11`` plugin, which imports this package,
stays cheap for test runs that use no fake.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from teams_ehr.testing.deprecation import assert_deprecated
    from teams_ehr.testing.fake_ehr import FakeEhr
    from teams_ehr.testing.fake_entra import FakeEntra
    from teams_ehr.testing.fake_fhir import FakeFhirServer
    from teams_ehr.testing.fake_graph import FakeGraph
    from teams_ehr.testing.graph_notifier import GraphNotifier
    from teams_ehr.testing.harness import HostHarness
    from teams_ehr.testing.loopback import serve_on_loopback, serve_on_loopback_async
    from teams_ehr.testing.sandbox import Sandbox, SandboxRoutingError

_LAZY: dict[str, str] = {
    "FakeEhr": "teams_ehr.testing.fake_ehr",
    "FakeEntra": "teams_ehr.testing.fake_entra",
    "FakeFhirServer": "teams_ehr.testing.fake_fhir",
    "FakeGraph": "teams_ehr.testing.fake_graph",
    "GraphNotifier": "teams_ehr.testing.graph_notifier",
    "HostHarness": "teams_ehr.testing.harness",
    "Sandbox": "teams_ehr.testing.sandbox",
    "SandboxRoutingError": "teams_ehr.testing.sandbox",
    "serve_on_loopback": "teams_ehr.testing.loopback",
    "serve_on_loopback_async": "teams_ehr.testing.loopback",
    "assert_deprecated": "teams_ehr.testing.deprecation",
}

__all__ = [
    "FakeEhr",
    "FakeEntra",
    "FakeFhirServer",
    "FakeGraph",
    "GraphNotifier",
    "HostHarness",
    "Sandbox",
    "SandboxRoutingError",
    "serve_on_loopback",
    "serve_on_loopback_async",
    "assert_deprecated",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'teams_ehr.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return list(__all__)

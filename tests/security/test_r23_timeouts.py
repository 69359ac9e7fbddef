"""R23: every external call has an explicit, finite timeout (security.md §3.4 R23; ASVS 13.1.3,
13.2.6).

Two checks: a static scan of the library source for any ``timeout=None`` / ``httpx.Timeout(None)``
(which would let a slow EHR, Graph or JWKS endpoint hold a worker forever), and an introspection
of the HTTP client the runtime builds for itself when the host passes none.
"""

from __future__ import annotations

import ast
from pathlib import Path

import httpx
import pytest

import teams_ehr
from teams_ehr.app import TeamsEhr
from teams_ehr.testing.sandbox import Sandbox

SOURCE = Path(teams_ehr.__file__).parent


def _is_none(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _unbounded_timeouts(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        for keyword in node.keywords:
            if keyword.arg in {"timeout", "connect", "read", "write", "pool"} and _is_none(
                keyword.value
            ):
                lines.append(node.lineno)
        name = node.func.attr if isinstance(node.func, ast.Attribute) else ""
        if name == "Timeout" and node.args and _is_none(node.args[0]):
            lines.append(node.lineno)
    return lines


def test_no_unbounded_timeout_in_library_source() -> None:
    offenders = {
        str(path.relative_to(SOURCE)): lines
        for path in sorted(SOURCE.rglob("*.py"))
        if (lines := _unbounded_timeouts(ast.parse(path.read_text(encoding="utf-8"))))
    }
    assert offenders == {}


def test_scanner_finds_unbounded_timeouts() -> None:
    bad = "httpx.AsyncClient(timeout=None)\nhttpx.Timeout(None)\nc.get(u, timeout=None)\n"
    assert _unbounded_timeouts(ast.parse(bad)) == [1, 2, 3]
    assert _unbounded_timeouts(ast.parse("httpx.AsyncClient(timeout=20.0)\n")) == []


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_runtime_built_client_has_finite_timeouts(anyio_backend: str) -> None:
    sandbox = Sandbox()
    async with TeamsEhr(sandbox.settings, signers={"test": sandbox.signer}) as app:
        timeout = app.http.timeout
        assert isinstance(timeout, httpx.Timeout)
        phases = (timeout.connect, timeout.read, timeout.write, timeout.pool)
        assert all(p is not None and 0 < p <= 30 for p in phases), phases


def test_an_injected_client_without_timeouts_is_refused() -> None:
    import httpx
    import pytest

    from teams_ehr.errors import ConfigurationError
    from teams_ehr.testing.sandbox import Sandbox

    sandbox = Sandbox()
    with pytest.raises(ConfigurationError):
        sandbox.app(http=httpx.AsyncClient(transport=sandbox.transport(), timeout=None))

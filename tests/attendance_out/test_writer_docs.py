"""docs/reference/attendance-writer.md runs as written.

Every ```python block of the page is either an API signature (checked against the code by
tests/test_docs_content.py) or part of the example, which runs here top to bottom in one
namespace, as a reader pasting it would. The example must stay within three ``teams_ehr``
imports, none private, and must leave the written resources in the fake FHIR server.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import io
import re
from pathlib import Path
from typing import Any

import anyio
import pytest

from teams_ehr.attendance.writers import AuditEventWriter, FhirWriter

PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "attendance-writer.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _blocks() -> list[str]:
    return _BLOCK.findall(PAGE.read_text(encoding="utf-8"))


def _is_signature(block: str) -> bool:
    """A reference entry's signature: one call of a name, nothing else."""
    try:
        tree = ast.parse(block)
    except SyntaxError:
        return False
    return (
        len(tree.body) == 1
        and isinstance(tree.body[0], ast.Expr)
        and isinstance(tree.body[0].value, ast.Call)
        and isinstance(tree.body[0].value.func, ast.Name)
    )


def _examples() -> list[str]:
    return [block for block in _blocks() if not _is_signature(block)]


def _teams_ehr_imports(source: str) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.append(node.module)
        elif isinstance(node, ast.Import):
            modules.extend(alias.name for alias in node.names)
    return [m for m in modules if m == "teams_ehr" or m.startswith("teams_ehr.")]


@pytest.fixture(scope="module")
def run() -> tuple[dict[str, Any], str]:
    """The page's example, executed block by block in one namespace; its printed output."""
    namespace: dict[str, Any] = {"__name__": "attendance_writer_docs"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for number, block in enumerate(_examples(), start=1):
            code = compile(block, f"{PAGE.name} example block {number}", "exec")
            exec(code, namespace)
    return namespace, out.getvalue()


def test_the_page_has_sync_async_and_refusal_examples() -> None:
    examples = _examples()
    assert len(examples) >= 3
    text = "\n".join(examples)
    assert ".write_sync(" in text
    assert "await writer.write(" in text
    assert "httpx.MockTransport(fhir.handler)" in text
    imports = _teams_ehr_imports(text)
    assert len(imports) <= 3, imports
    assert not [m for m in imports if any(part.startswith("_") for part in m.split("."))]


def test_the_examples_run_and_write_to_the_fake_fhir_server(
    run: tuple[dict[str, Any], str],
) -> None:
    namespace, printed = run
    fhir = namespace["fhir"]
    events = fhir.resources("AuditEvent")
    assert len(events) == 2
    assert sorted(e["subtype"][0]["code"] for e in events) == ["connected", "disconnected"]
    assert all(e["entity"][-1]["what"]["reference"] == "Encounter/enc-1" for e in events)
    assert [m for m, _ in fhir.request_log] == ["POST"] * 3
    assert printed.splitlines()[:2] == ["created", "['created', 'existing']"]
    assert printed.splitlines()[2].startswith("bad_fact - unknown attendance kind 'connect'")


def test_the_async_example_runs_on_trio_too(run: tuple[dict[str, Any], str]) -> None:
    namespace, _ = run
    assert anyio.run(namespace["main"], backend="trio") == ["existing", "existing"]
    assert len(namespace["fhir"].resources("AuditEvent")) == 2


def _documented_method(name: str) -> list[str]:
    """Parameter names of the ``- `name(...)` `` bullet in the page's Writing section."""
    text = PAGE.read_text(encoding="utf-8")
    match = re.search(rf"^- `(?:async )?{name}\((?P<params>[^)]*)\)`", text, re.MULTILINE)
    assert match is not None, name
    return [p.strip() for p in match["params"].split(",") if p.strip() not in ("", "*")]


@pytest.mark.parametrize("name", ["write", "write_sync", "write_flow", "delivery"])
def test_documented_methods_match_the_code(name: str) -> None:
    code = [p for p in inspect.signature(getattr(FhirWriter, name)).parameters if p != "self"]
    assert _documented_method(name) == code
    assert inspect.iscoroutinefunction(AuditEventWriter.write)

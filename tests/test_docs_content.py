"""The hand-written reference pages stay true to the code (SPEC E5).

The API reference is maintained by hand (no mkdocstrings: our docstrings use Sphinx roles, which
griffe would turn into ``--strict`` failures). These tests keep it honest: every public name is
documented, every documented signature has the code's parameter names, the error table matches
the classes, every CLI command and option is described, every reason code the library raises is
explained on the error-handling page, the security catalogue is complete and names test modules
that exist, and the compatibility table's floors are the ones in pyproject.toml.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

import teams_ehr
import teams_ehr.errors as errors_module
from teams_ehr.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"
SRC = ROOT / "src" / "teams_ehr"

_ENTRY = re.compile(r"^### `(?P<name>[A-Za-z_]\w*)`\n\n`(?P<module>[\w.]+)`\n", re.MULTILINE)
_SIGNATURE = re.compile(r"```python\n(?:async )?(?P<signature>\w+\(.*?\n?\)?)\n```", re.DOTALL)
_REASON = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")
# Raised with a computed reason ("missing_" + name, "bad_" + name: teams_ehr/smart/launch.py).
_COMPUTED_REASONS = {"missing_iss", "missing_launch", "bad_iss"}


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _entries() -> Iterator[tuple[str, str, str, str]]:
    """(page, name, module, the entry's text up to the next heading)."""
    for page in sorted(REFERENCE.glob("*.md")):
        text = _read(page)
        for match in _ENTRY.finditer(text):
            rest = text[match.end() :]
            end = re.search(r"^#{2,3} ", rest, re.MULTILINE)
            body = rest[: end.start()] if end else rest
            yield page.name, match["name"], match["module"], body


def _parameter_names(signature: str) -> list[str]:
    inner = signature[signature.index("(") + 1 : signature.rindex(")")]
    names: list[str] = []
    depth, current = 0, ""
    for char in inner + ",":
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if char == "," and depth == 0:
            part = current.strip()
            current = ""
            if part and part != "*":
                names.append(re.split(r"[=:]", part, maxsplit=1)[0].strip().lstrip("*"))
            continue
        current += char
    return names


def test_every_public_name_is_in_the_api_reference() -> None:
    """Every root name has an entry on api.md, or on a reference page api.md links to."""
    api = _read(REFERENCE / "api.md")
    documented = {
        name
        for page, name, _, _ in _entries()
        if page == "api.md" or f"]({page})" in api or f"]({page}#" in api
    }
    for name in teams_ehr.__all__:
        if name == "__version__":
            assert "## `__version__`" in api
        elif name in errors_module.__all__:
            assert f"| `{name}` |" in api, name
        else:
            assert name in documented, f"{name} has no entry in docs/reference/api.md"


@pytest.mark.parametrize(
    ("page", "names"),
    [
        ("integrations.md", ["teams_ehr_routes", "teams_ehr_lifespan", "FlaskTeamsEhr"]),
        (
            "testing.md",
            ["Sandbox", "FakeEhr", "FakeEntra", "FakeGraph", "FakeFhirServer", "serve_on_loopback"],
        ),
    ],
)
def test_entry_points_are_documented(page: str, names: list[str]) -> None:
    documented = {name for entry_page, name, _, _ in _entries() if entry_page == page}
    assert set(names) <= documented


def test_documented_signatures_match_the_code() -> None:
    checked = 0
    for page, name, module, body in _entries():
        obj = getattr(importlib.import_module(module), name)
        assert obj is not None, f"{page}: {module}.{name}"
        match = _SIGNATURE.search(body)
        if match is None or not match["signature"].startswith(name + "("):
            continue
        expected = [p for p in inspect.signature(obj).parameters if p != "self"]
        assert _parameter_names(match["signature"]) == expected, f"{page}: {name}"
        checked += 1
    assert checked >= 40


def test_error_table_matches_the_classes() -> None:
    rows = re.findall(
        r"^\| `(\w+)` \| `(\w+)` \| `(\w+)` \| (\d+) \|$",
        _read(REFERENCE / "api.md"),
        re.MULTILINE,
    )
    table = {name: (base, reason, int(status)) for name, base, reason, status in rows}
    assert set(table) == set(errors_module.__all__)
    for name, (base, reason, status) in table.items():
        cls = getattr(errors_module, name)
        assert cls.__bases__[0].__name__ == base, name
        assert (cls.default_reason, cls.http_status_hint) == (reason, status), name


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], list[str]]]:
    options = [
        option
        for action in parser._actions
        if action.help != argparse.SUPPRESS
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    ]
    yield path, options
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def test_every_cli_command_and_option_is_documented() -> None:
    text = _read(REFERENCE / "cli.md")
    sections = {
        match["title"]: match["body"]
        for match in re.finditer(
            r"^## `teams-ehr (?P<title>\w+)[^`]*`\n(?P<body>.*?)(?=^## |\Z)",
            text,
            re.MULTILINE | re.DOTALL,
        )
    }
    leaves = [(path, options) for path, options in _commands(build_parser(), ()) if path]
    for path, options in leaves:
        section = sections.get(path[0])
        assert section is not None, f"no section for teams-ehr {path[0]}"
        assert "teams-ehr " + " ".join(path) in section, path
        for option in options:
            assert option in section, f"teams-ehr {' '.join(path)} {option}"


def _raised_reasons() -> set[str]:
    """Literal reason codes passed to our errors and to the modules' refusal helpers."""
    error_names = set(errors_module.__all__) | {"ResponseTooLargeError", "_RejectedError"}
    helpers = {"_refuse", "_invalid", "_refused", "_RejectedError"}
    tables = {"_REASONS", "_PYJWT_REASONS", "_POISON_REASONS"}
    found: set[str] = set()
    for path in SRC.rglob("*.py"):
        if {"testing", "demo"} & set(path.relative_to(SRC).parts):
            continue
        # canonical.py's _refuse takes a message; its reason is always bad_fhir_base.
        helpers_here = set() if path.name == "canonical.py" else helpers
        for node in ast.walk(ast.parse(_read(path))):
            if isinstance(node, ast.Call):
                func = node.func
                name = getattr(func, "id", None) or getattr(func, "attr", "")
                if name in error_names:
                    found.update(
                        str(kw.value.value)
                        for kw in node.keywords
                        if kw.arg == "reason" and isinstance(kw.value, ast.Constant)
                    )
                if name in helpers_here and node.args and isinstance(node.args[0], ast.Constant):
                    found.add(str(node.args[0].value))
            elif isinstance(node, ast.Assign | ast.AugAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(getattr(t, "id", None) in tables for t in targets):
                    found.update(
                        c.value
                        for c in ast.walk(node.value)
                        if isinstance(c, ast.Constant) and isinstance(c.value, str)
                    )
    return {reason for reason in found if _REASON.match(reason)}


def test_every_raised_reason_is_explained() -> None:
    text = _read(DOCS / "errors.md")
    raised = _raised_reasons()
    assert len(raised) > 150
    missing = sorted(reason for reason in raised if f"`{reason}`" not in text)
    assert not missing, f"reason codes missing from docs/errors.md: {missing}"


def test_every_explained_reason_exists() -> None:
    source = "\n".join(_read(path) for path in SRC.rglob("*.py"))
    for line in _read(DOCS / "errors.md").splitlines():
        cells = line.split(" | ")
        if not line.startswith("| `") or len(cells) < 3:
            continue
        for code in re.findall(r"`([a-z][a-z0-9_]*)(?:<\w+>)?`", cells[1]):
            assert code in _COMPUTED_REASONS or f'"{code}' in source, code


def test_security_catalogue_is_complete_and_names_real_tests() -> None:
    text = _read(DOCS / "security.md")
    for prefix, count in (("T", 34), ("R", 25)):
        for number in range(1, count + 1):
            assert f"| {prefix}{number:02d} |" in text, f"{prefix}{number:02d}"
    modules = set(re.findall(r"`([\w/]+\.py)`", text))
    assert len(modules) > 40
    for module in modules:
        assert (ROOT / "tests" / module).is_file() or (ROOT / module).is_file(), module


def test_compatibility_floors_are_the_pyproject_ones() -> None:
    project = tomllib.loads(_read(ROOT / "pyproject.toml"))["project"]
    declared = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared.update(extra)
    documented = set(
        re.findall(r"^\| [\w-]+ \| `([^`]+)` \|", _read(DOCS / "compatibility.md"), re.M)
    )
    assert documented <= declared, documented - declared
    assert set(project["dependencies"]) <= documented

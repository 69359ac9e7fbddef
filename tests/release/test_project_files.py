"""The files an adopting organization reviews exist, say what they must, and are linked from the
README and the docs (license, changelog, security policy, contributor guide, stability)."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

import teams_ehr

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
KEEP_A_CHANGELOG_GROUPS = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def _read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def test_the_license_is_apache_2_0_in_the_file_and_the_metadata() -> None:
    text = _read("LICENSE")
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    assert not any(c.startswith("License ::") for c in project["classifiers"])  # PEP 639


@pytest.mark.parametrize(
    "name", ["LICENSE", "CHANGELOG.md", "SECURITY.md", "CONTRIBUTING.md", "docs/stability.md"]
)
def test_the_readme_links_the_project_files(name: str) -> None:
    assert f"]({name})" in _read("README.md")


def test_the_readme_keeps_its_two_commands_and_states_the_status() -> None:
    readme = _read("README.md")
    assert 'python -m pip install -e ".[demo]" && teams-ehr demo' in readme
    assert 'python -m pip install -e ".[test]" && python -m pytest' in readme
    assert re.search(r"^\*\*Status\*\* \(\d+\.\d+\.\d+, \w+\)", readme, re.MULTILINE)


def test_the_docs_link_the_adoption_pages() -> None:
    index = _read("docs/index.md")
    for target in ("stability.md", "changelog.md", "release.md"):
        assert f"]({target})" in index
        assert f": {target}" in _read("mkdocs.yml")
    for name in ("LICENSE", "SECURITY.md", "CONTRIBUTING.md"):
        assert f"`{name}`" in index
    assert "`CHANGELOG.md`" in _read("docs/changelog.md")


def test_the_changelog_has_a_section_for_this_version() -> None:
    text = _read("CHANGELOG.md")
    assert "[Keep a Changelog 1.1.0](https://keepachangelog.com/en/1.1.0/)" in text
    versions = re.findall(r"^## \[([^\]]+)\] - (\d{4}-\d{2}-\d{2}|Unreleased)$", text, re.M)
    assert versions, "no release section"
    assert versions[0][0] == teams_ehr.__version__, "add a section for the new version"
    groups = set(re.findall(r"^### (.+)$", text, re.MULTILINE))
    assert groups <= KEEP_A_CHANGELOG_GROUPS, groups - KEEP_A_CHANGELOG_GROUPS


def test_the_security_policy_covers_reporting_versions_and_promises() -> None:
    text = _read("SECURITY.md")
    for heading in (
        "## Reporting a vulnerability",
        "## Supported versions",
        "## What the library promises",
    ):
        assert heading in text
    major, minor, _ = teams_ehr.__version__.split(".")
    assert f"| {major}.{minor}.x" in text, "the current minor release is not listed as supported"
    assert "](docs/security.md)" in text


def _nox_sessions() -> set[str]:
    """Every session name noxfile.py declares (``name=`` or the function's name)."""
    names = set()
    for node in ast.parse(_read("noxfile.py")).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            target = decorator.func if isinstance(decorator, ast.Call) else decorator
            if ast.unparse(target) != "nox.session":
                continue
            keywords = decorator.keywords if isinstance(decorator, ast.Call) else []
            named = [k.value.value for k in keywords if k.arg == "name"]  # type: ignore[attr-defined]
            names.add(named[0] if named else node.name)
    return names


def test_the_contributor_guide_names_every_nox_session() -> None:
    text = _read("CONTRIBUTING.md")
    sessions = _nox_sessions()
    assert {"build", "wheel-tests", "min-versions", "sbom", "audit"} <= sessions
    missing = sorted(name for name in sessions if f"`{name}" not in text)
    assert not missing, f"CONTRIBUTING.md does not describe nox -s {', '.join(missing)}"


def test_ci_runs_the_release_sessions() -> None:
    ci = _read(".ci/run")
    for session in ("build", "wheel-tests", "min-versions", "sbom", "audit"):
        assert re.search(rf"\b{session}\b", ci), f".ci/run does not run nox -s {session}"

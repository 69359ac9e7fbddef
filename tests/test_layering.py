"""The dependency direction holds: the import contracts in ``pyproject.toml`` (docs/reference/modules.md).

``[tool.importlinter]`` declares one contract per rule of "data flows one way: host → integration
→ visits → (smart, teams, attendance, orgs) → store / _http; nothing below imports upward".
Each contract is checked against the installed tree, and each is shown to break on a copy of the
tree with one upward import added, so a contract that checks nothing (a renamed package, a typo
in a module name) fails here too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import teams_ehr

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
PACKAGE = Path(teams_ehr.__file__).parent


def _contract_ids() -> list[str]:
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["importlinter"]
    return [contract["id"] for contract in config["contracts"]]


# contract id → (file under teams_ehr/, a line that breaks that contract when appended to it)
UPWARD_IMPORTS = {
    "core-below-edges": ("store/__init__.py", "import teams_ehr.testing"),
    "root-below-edges": ("__init__.py", "from teams_ehr.testing import fake_graph"),
    "data-flows-one-way": ("smart/__init__.py", "import teams_ehr.app"),
    "teams-not-attendance": ("teams/__init__.py", "from teams_ehr.attendance import events"),
    "smart-is-ehr-only": ("smart/__init__.py", "import teams_ehr.visits"),
    "store-no-features": ("store/__init__.py", "import teams_ehr.metrics"),
    "errors-imports-nothing-of-ours": ("errors.py", "from teams_ehr import _types"),
}


def _lint(contract: str, package_root: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run one contract in a fresh interpreter: import-linter configures logging (disabling the
    existing loggers), which would silence the records later tests of this run look for. With
    ``package_root``, ``teams_ehr`` is imported from there (grimp finds it through the import
    system)."""
    script = (
        "import sys\n"
        "from importlinter.cli import lint_imports\n"
        f"sys.exit(lint_imports(config_filename={str(PYPROJECT)!r}, "
        f"limit_to_contracts=({contract!r},), no_cache=True, no_logo=True))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(package_root)} if package_root else None
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=package_root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _lint_copy(
    tmp_path: Path, contract: str, edit: tuple[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run one contract on a copy of the package with ``edit`` applied."""
    copy = tmp_path / "teams_ehr"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    relative, line = edit
    target = copy / relative
    existing = target.read_text(encoding="utf-8") if target.exists() else ""
    target.write_text(f"{existing}\n{line}\n", encoding="utf-8")
    return _lint(contract, tmp_path)


@pytest.mark.parametrize("contract", _contract_ids())
def test_contract_is_kept(contract: str) -> None:
    result = _lint(contract)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_contract_has_an_upward_import_that_breaks_it() -> None:
    assert set(UPWARD_IMPORTS) == set(_contract_ids())


@pytest.mark.parametrize("contract", sorted(UPWARD_IMPORTS))
def test_contract_breaks_on_an_upward_import(contract: str, tmp_path: Path) -> None:
    result = _lint_copy(tmp_path, contract, UPWARD_IMPORTS[contract])
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BROKEN" in result.stdout, result.stdout


def test_a_new_top_level_module_must_be_placed_in_a_layer(tmp_path: Path) -> None:
    result = _lint_copy(tmp_path, "core-below-edges", ("unplaced.py", '"""Nowhere yet."""'))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "teams_ehr.unplaced" in result.stdout, result.stdout

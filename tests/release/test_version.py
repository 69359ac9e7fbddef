"""``teams_ehr.__version__`` is the installed distribution's version, and ``pyproject.toml`` is
the one place it is written (docs/stability.md)."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import teams_ehr
from teams_ehr._version import UNKNOWN, installed_version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_version_comes_from_the_package_metadata() -> None:
    assert teams_ehr.__version__ == importlib.metadata.version("teams-ehr")


def test_pyproject_writes_the_version_once() -> None:
    project = PYPROJECT["project"]
    assert "version" not in project.get("dynamic", [])
    assert "version" not in PYPROJECT["tool"]["hatch"]
    assert teams_ehr.__version__ == project["version"], (
        "the installed metadata is stale: reinstall (pip install -e .) after changing the version"
    )
    source = (ROOT / "src" / "teams_ehr" / "_version.py").read_text("utf-8")
    assert not re.search(r"""__version__ = ["']""", source), "a second, hand-written version"


def test_the_version_is_semantic() -> None:
    assert re.fullmatch(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)", teams_ehr.__version__)


def test_a_tree_without_an_installed_distribution_reports_unknown() -> None:
    assert installed_version("teams-ehr-not-installed") == UNKNOWN == "0+unknown"


def test_a_copied_tree_imports_with_the_unknown_version(tmp_path: Path) -> None:
    """A ``src/`` copy on ``sys.path`` whose distribution name is not installed still imports."""
    package = Path(teams_ehr.__file__).parent
    source = (package / "_version.py").read_text(encoding="utf-8")
    (tmp_path / "probe_version.py").write_text(
        source.replace('DISTRIBUTION = "teams-ehr"', 'DISTRIBUTION = "teams-ehr-copy"'), "utf-8"
    )
    out = subprocess.run(
        [sys.executable, "-c", "import probe_version; print(probe_version.__version__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "0+unknown"

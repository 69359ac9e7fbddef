"""installed_guard fails a run whose ``teams_ehr`` does not come from the expected environment
(docs/release.md): the check that makes ``nox -s wheel-tests`` test the wheel, not ``src/``."""

from __future__ import annotations

from pathlib import Path

import pytest
from installed_guard import VARIABLE, foreign_modules

import teams_ehr

HERE = Path(__file__).resolve().parent
PACKAGE_HOME = Path(teams_ehr.__file__).resolve().parents[1]


def test_modules_outside_the_prefix_are_named(tmp_path: Path) -> None:
    assert foreign_modules(PACKAGE_HOME) == []
    leaked = foreign_modules(tmp_path)
    assert f"teams_ehr from {teams_ehr.__file__}" in leaked


@pytest.fixture
def guarded(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    pytester.makepyfile("def test_nothing():\n    import teams_ehr.errors\n")
    return pytester


def test_a_run_importing_teams_ehr_from_elsewhere_stops(
    guarded: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(VARIABLE, str(tmp_path / "some-venv"))
    result = guarded.runpytest_subprocess("-p", "installed_guard", "-p", "no:teams_ehr")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{VARIABLE}=*some-venv, but teams_ehr was imported from*"])


def test_a_run_importing_teams_ehr_from_the_prefix_passes(
    guarded: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VARIABLE, str(PACKAGE_HOME))
    result = guarded.runpytest_subprocess("-p", "installed_guard", "-p", "no:teams_ehr")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"teams_ehr * imported from {PACKAGE_HOME}*"])


def test_without_the_variable_the_guard_does_nothing(
    guarded: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(VARIABLE, raising=False)
    result = guarded.runpytest_subprocess("-p", "installed_guard", "-p", "no:teams_ehr")
    result.assert_outcomes(passed=1)

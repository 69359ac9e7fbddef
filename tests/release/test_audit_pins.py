""".ci/audit_pins.py, the audit's fallback where pip-audit cannot read per-release advisory data
(docs/release.md): vulnerable and unaudited pins fail, an unreachable index is "did not run"."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_pins", ROOT / ".ci" / "audit_pins.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


audit_pins = _load()

PROJECTS: dict[str, dict[str, Any]] = {
    "clean": {"info": {"version": "1.0"}, "vulnerabilities": []},
    "vulnerable": {
        "info": {"version": "2.0"},
        "vulnerabilities": [
            {"id": "GHSA-aaaa", "fixed_in": ["2.0.1"], "withdrawn": None},
            {"id": "PYSEC-old", "fixed_in": [], "withdrawn": "2026-01-01T00:00:00"},
            {"id": "PYSEC-open", "fixed_in": None, "withdrawn": None},
        ],
    },
    "moved-on": {"info": {"version": "3.1"}, "vulnerabilities": []},
}


def test_pins_are_read_from_a_freeze() -> None:
    text = "# pinned\nclean==1.0\n\nPyJWT==2.15.1  # comment\n"
    assert audit_pins.read_pins(text) == [("clean", "1.0"), ("PyJWT", "2.15.1")]
    with pytest.raises(ValueError, match="not a pin"):
        audit_pins.read_pins("clean>=1.0\n")


def test_vulnerable_and_unaudited_pins_are_reported() -> None:
    pins = [("clean", "1.0"), ("vulnerable", "2.0"), ("moved-on", "3.0")]
    assert audit_pins.audit(pins, PROJECTS.__getitem__) == [
        "vulnerable 2.0: GHSA-aaaa (fixed in 2.0.1)",
        "vulnerable 2.0: PYSEC-open (fixed in no release)",
        "moved-on 3.0: not audited (the advisory data covers the latest release, 3.1; upgrade "
        "the pin or audit with pip-audit where it can run)",
    ]
    assert audit_pins.audit([("clean", "1.0")], PROJECTS.__getitem__) == []


def test_an_unreachable_index_means_the_audit_did_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lock = tmp_path / "lock.txt"
    lock.write_text("clean==1.0\n", encoding="utf-8")
    monkeypatch.setattr(audit_pins, "INDEX", "http://127.0.0.1:9/pypi")  # discard port: refused
    assert audit_pins.main([str(lock)]) == 2
    assert "the audit did not run" in capsys.readouterr().err


def test_the_exit_status_says_clean_or_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lock = tmp_path / "lock.txt"
    lock.write_text("clean==1.0\n", encoding="utf-8")
    assert audit_pins.main([str(lock)], PROJECTS.__getitem__) == 0
    assert "1 pinned packages, no known vulnerabilities" in capsys.readouterr().out
    lock.write_text("vulnerable==2.0\n", encoding="utf-8")
    assert audit_pins.main([str(lock)], PROJECTS.__getitem__) == 1


def test_a_waiver_covers_only_its_unaudited_pin_and_only_until_its_date() -> None:
    waivers = audit_pins.read_waivers(
        "# why\nmoved-on==3.0 until 2026-12-18  # sibling pins it\nvulnerable==2.0 until 2099-01-01\n"
    )
    day = audit_pins.date(2026, 12, 18)
    pins = [("Moved-On", "3.0"), ("vulnerable", "2.0")]
    problems = audit_pins.audit(pins, lambda n: PROJECTS[n.lower()], waivers, day)
    assert [p.split(":")[0] for p in problems] == ["vulnerable 2.0", "vulnerable 2.0"]
    later = audit_pins.audit(pins[:1], lambda n: PROJECTS[n.lower()], waivers, day.replace(day=19))
    assert len(later) == 1
    assert "not audited" in later[0]
    assert audit_pins.audit([("moved-on", "3.1")], PROJECTS.__getitem__, waivers, day) == []


def test_the_checked_in_waivers_parse() -> None:
    assert all(
        isinstance(until, audit_pins.date)
        for until in audit_pins.read_waivers(
            (ROOT / ".ci" / "audit-waivers.txt").read_text()
        ).values()
    )

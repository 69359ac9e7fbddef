"""``teams_ehr.testing`` exports every fake by name, lazily (SPEC E1)."""

from __future__ import annotations

import subprocess
import sys

import teams_ehr.testing as testing


def test_every_exported_fake_resolves() -> None:
    for name in testing.__all__:
        assert getattr(testing, name) is not None, name
    assert testing.Sandbox.__module__ == "teams_ehr.testing.sandbox"


def test_importing_the_package_loads_no_fake() -> None:
    code = "import sys, teams_ehr.testing; print(any('fake_' in m for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_all_matches_the_lazy_table() -> None:
    assert sorted(testing.__all__) == sorted(testing._LAZY)

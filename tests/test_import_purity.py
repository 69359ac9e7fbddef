"""`import teams_ehr` loads no web framework, msgraph or pytest (DESIGN.md rule 1, SPEC P1)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("msgraph", "kiota_http", "azure", "flask", "fastapi", "starlette", "pytest", "uvicorn")
LAZY = ("httpx", "pydantic", "cryptography", "jwt")


def test_import_teams_ehr_loads_nothing_heavy() -> None:
    code = (
        "import sys, json, teams_ehr, teams_ehr.errors;"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(json.loads(out))
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_import_teams_ehr_defers_everything_but_errors() -> None:
    """Public names load on first use (PEP 562): the bare import pulls in no I/O stack."""
    code = (
        "import sys, json, teams_ehr;"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert not set(json.loads(out)) & set(LAZY)


def test_runtime_import_loads_no_framework() -> None:
    code = (
        "import sys, json, teams_ehr; teams_ehr.TeamsEhr;"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert not set(json.loads(out)) & set(HEAVY)

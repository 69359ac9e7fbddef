"""House rules a reviewer would otherwise check by hand (design rules 3 and 12, docs/design/architecture.md).

Modules are split by responsibility and laid out by the formatter, never compressed to meet a line
count; CI runs every declared Python version.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "teams_ehr"


def test_no_formatter_escapes_in_the_package() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted(SRC.rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"#\s*fmt:\s*(skip|off)", line)
    ]
    assert offenders == [], "let ruff format lay these out: " + ", ".join(offenders)


def test_ci_runs_every_declared_python() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    declared = set(re.findall(r"Programming Language :: Python :: (3\.\d+)", pyproject))
    noxfile = (ROOT / "noxfile.py").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert declared == {"3.11", "3.12", "3.13"}
    for version in declared:
        assert f'"{version}"' in noxfile, f"no nox session runs on {version}"
    assert 'python -m pip install -e ".[test]" && python -m pytest' in ci  # the README's command
    for version in declared - {"3.11"}:  # 3.11 runs the README's command above
        for session in ("core", "contract"):
            assert f"{session}-{version}" in ci, f".ci/run does not run nox -s {session}-{version}"

"""The distributions an install of ``teams-ehr[extras]`` brings, read from pyproject.toml (the
source of the wheel's metadata); extras may name other extras (``demo`` → ``fastapi,docs``)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
_SELF = re.compile(r"teams-ehr\[([a-z,]+)\]")


def packages_of(extras: set[str]) -> set[str]:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    optional: dict[str, list[str]] = project["optional-dependencies"]
    pending, seen, found = list(extras), set(), set()
    while pending:
        extra = pending.pop()
        seen.add(extra)
        for requirement in optional[extra]:
            nested = _SELF.fullmatch(requirement)
            if nested:
                pending.extend(set(nested.group(1).split(",")) - seen)
            else:
                found.add(re.split(r"[<>=~!\[ ;]", requirement)[0].lower())
    return found


def install_extras(spec: str) -> set[str]:
    """``teams-ehr[demo,flask]`` → ``{"demo", "flask"}``."""
    match = _SELF.fullmatch(spec)
    assert match, f"the install command names {spec!r}, not teams-ehr[extras]"
    return set(match.group(1).split(","))

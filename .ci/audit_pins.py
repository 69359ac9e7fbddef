"""Audit pinned packages with the advisory data of the package index's project JSON (docs/release.md).

    python .ci/audit_pins.py dist/test-environment.lock.txt

The fallback of ``nox -s audit`` where pip-audit cannot audit: pip-audit's PyPI service reads the
per-release JSON (``/pypi/<name>/<version>/json``), which some index mirrors do not serve. The
project JSON (``/pypi/<name>/json``) carries the known vulnerabilities of the project's latest
release, so a pin is audited when it is that release; a pin of an older release cannot be
audited this way and fails the run (as ``pip-audit --strict`` fails on a package it could not
audit), unless ``.ci/audit-waivers.txt`` waives that exact pin until a date (a line
``name==version until YYYY-MM-DD  # why``): for a pin the index cannot move yet, e.g. a new
release of one package whose sibling pins it exactly. A waiver never covers a known
vulnerability, and an expired one fails the run again. Withdrawn advisories are ignored. Exit status: 0 clean, 1 vulnerable or unaudited pins,
2 the index could not be reached (the audit did not run).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections.abc import Callable, Mapping
from datetime import date
from pathlib import Path
from typing import Any

INDEX = os.environ.get("TEAMS_EHR_AUDIT_INDEX", "https://pypi.org/pypi")
WAIVERS = Path(__file__).with_name("audit-waivers.txt")


def read_waivers(text: str) -> dict[tuple[str, str], date]:
    """``name==version until YYYY-MM-DD  # why`` lines: the pins not audited, and until when."""
    waivers = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            pin, _, until = line.partition(" until ")
            name, _, version = pin.strip().partition("==")
            waivers[(name.lower(), version)] = date.fromisoformat(until.strip())
    return waivers


def read_pins(text: str) -> list[tuple[str, str]]:
    """``name==version`` lines of a ``pip freeze`` output (comments and blanks skipped)."""
    pins = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise ValueError(f"not a pin: {line!r}")
        pins.append((name.strip(), version.strip()))
    return pins


def fetch_project(name: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{INDEX}/{name}/json", timeout=60) as response:  # noqa: S310
        return dict(json.load(response))


def audit(
    pins: list[tuple[str, str]],
    fetch: Callable[[str], dict[str, Any]] = fetch_project,
    waivers: Mapping[tuple[str, str], date] | None = None,
    today: date | None = None,
) -> list[str]:
    """One line per vulnerable or unaudited pin; ``fetch`` errors propagate (no audit)."""
    problems = []
    today = today or date.today()
    for name, version in pins:
        project = fetch(name)
        latest = project["info"]["version"]
        until = (waivers or {}).get((name.lower(), version))
        if latest != version and until is not None and today <= until:
            print(f"{name} {version}: not audited, waived until {until} (.ci/audit-waivers.txt)")
            continue
        if latest != version:
            problems.append(
                f"{name} {version}: not audited (the advisory data covers the latest release, "
                f"{latest}; upgrade the pin or audit with pip-audit where it can run)"
            )
            continue
        for vuln in project.get("vulnerabilities") or []:
            if vuln.get("withdrawn"):
                continue
            fixed = ", ".join(vuln.get("fixed_in") or []) or "no release"
            problems.append(f"{name} {version}: {vuln['id']} (fixed in {fixed})")
    return problems


def main(
    argv: list[str] | None = None, fetch: Callable[[str], dict[str, Any]] = fetch_project
) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: audit_pins.py LOCKFILE", file=sys.stderr)
        return 2
    pins = read_pins(Path(args[0]).read_text(encoding="utf-8"))
    try:
        waivers = read_waivers(WAIVERS.read_text(encoding="utf-8")) if WAIVERS.exists() else {}
        problems = audit(pins, fetch, waivers)
    except OSError as error:
        print(
            f"the audit did not run: the package index's advisory data at {INDEX} could not be "
            f"fetched ({error})",
            file=sys.stderr,
        )
        return 2
    for problem in problems:
        print(problem)
    if not problems:
        print(f"{len(pins)} pinned packages, no known vulnerabilities")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

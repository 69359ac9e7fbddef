"""axe-core in the page, offline: WCAG 2.0/2.1/2.2 A and AA rules, serious and critical fail.

axe-core comes from the ``axe-playwright-python`` package, which ships ``axe.min.js`` inside its
wheel: nothing is fetched at test time. The script is evaluated through Playwright's
``page.evaluate`` (the DevTools protocol's ``Runtime.evaluate``), which a page's
Content-Security-Policy does not govern, so every page is checked under its real CSP — no
``bypass_csp``. Rule tags and impacts: axe-core API documentation, "Axe-core Tags" and
"impact" (minor, moderate, serious, critical).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from browser.chromium import ARTIFACTS, Viewport, artifact

WCAG_TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa")
IMPACTS = ("critical", "serious", "moderate", "minor")
BLOCKING = frozenset({"critical", "serious"})
SUMMARY = ARTIFACTS / "axe-summary.json"


@cache
def axe_script() -> str:
    """The bundled ``axe.min.js``; a clear failure (CI) or skip (a laptop) when not installed."""
    try:
        from axe_playwright_python.base import AXE_FILE_PATH
    except ImportError:
        reason = "axe-core needs axe-playwright-python (the [test] extra)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return Path(AXE_FILE_PATH).read_text(encoding="utf-8")


def run_axe(page: Any) -> dict[str, Any]:
    """axe-core's full result for the page as it is now (WCAG A+AA tags only)."""
    page.evaluate(axe_script())
    options = {  # every node of each violation; passes and the rest name one node each
        "runOnly": {"type": "tag", "values": list(WCAG_TAGS)},
        "resultTypes": ["violations"],
    }
    result: dict[str, Any] = page.evaluate("(options) => axe.run(document, options)", options)
    return result


def counts_by_impact(result: Mapping[str, Any]) -> dict[str, int]:
    """Violated rules per impact (a rule counts once however many elements it flags)."""
    counts = dict.fromkeys(IMPACTS, 0)
    for violation in result.get("violations", []):
        impact = violation.get("impact") or "minor"
        counts[impact] = counts.get(impact, 0) + 1
    return counts


def blocking_violations(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [v for v in result.get("violations", []) if v.get("impact") in BLOCKING]


def describe(violations: Iterable[Mapping[str, Any]]) -> str:
    """One line per rule: id, impact, help text and the CSS selectors of what it flagged."""
    lines = []
    for violation in violations:
        targets = [
            " ".join(str(part) for part in node.get("target", []))
            for node in violation.get("nodes", [])
        ]
        shown = ", ".join(targets[:5]) + (
            f" (+{len(targets) - 5} more)" if len(targets) > 5 else ""
        )
        lines.append(
            f"{violation.get('id')} [{violation.get('impact')}] {violation.get('help', '')}: "
            f"{shown}"
        )
    return "\n".join(lines)


def _redacted(url: str) -> str:
    """The page's path without its query (codes, states, ``launch``) or a join token."""
    path = "/" + url.split("://", 1)[-1].split("?", 1)[0].partition("/")[2]
    return "/j/…" if path.startswith("/j/") else path


@dataclass
class Summary:
    """``test-artifacts/browser/axe-summary.json``: page → width → counts by impact, the rule
    ids seen, and the horizontal overflow in CSS pixels; rewritten after every page."""

    path: Path = SUMMARY
    pages: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record(
        self, page_name: str, viewport: Viewport, result: Mapping[str, Any], overflow: int
    ) -> None:
        entry: dict[str, Any] = counts_by_impact(result)
        entry["rules"] = sorted(
            f"{v.get('id')}:{v.get('impact')}" for v in result.get("violations", [])
        )
        entry["overflow_px"] = overflow
        self.pages.setdefault(page_name, {})[str(viewport.width)] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.pages, indent=2, sort_keys=True) + "\n", "utf-8")


def axe_check(
    page: Any, name: str, viewport: Viewport, summary: Summary | None = None, *, overflow: int = 0
) -> str | None:
    """Run axe on ``page``, save the full result next to the screenshot
    (``<name>-<width>.axe.json``) and record it in ``summary``; what is wrong when any serious
    or critical violation of WCAG 2.0/2.1/2.2 A or AA was found (each rule with its impact and
    targets), else ``None``."""
    result = run_axe(page)
    result["url"] = _redacted(str(result.get("url", "")))
    path = artifact(name, viewport, ".axe.json")
    path.write_text(json.dumps(result, indent=1, sort_keys=True), encoding="utf-8")
    if summary is not None:
        summary.record(name, viewport, result, overflow)
    blocking = blocking_violations(result)
    if not blocking:
        return None
    return (
        f"axe-core: {len(blocking)} serious/critical WCAG A/AA violation(s) on {name} at "
        f"{viewport.width} px:\n{describe(blocking)}\nfull result: {path}"
    )


def assert_accessible(
    page: Any, name: str, viewport: Viewport, summary: Summary | None = None
) -> None:
    """:func:`axe_check`, failing the test on any serious or critical violation."""
    problem = axe_check(page, name, viewport, summary)
    if problem is not None:
        pytest.fail(problem, pytrace=False)

"""The walk's gates catch what they claim to: axe-core's serious violations and sideways scrolling.

A page without ``lang`` and ``<title>`` (WCAG 2.2 SC 3.1.1 and 2.4.2, both axe-core *serious*)
fails :func:`assert_accessible`, with the rule ids and targets in the message; a plain page
with both passes; a 600 px wide element at 360 px is 240 px of overflow, named by
:func:`wide_elements` (WCAG 2.2 SC 1.4.10 Reflow).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from browser.accessibility import Summary, assert_accessible
from browser.chromium import DESKTOP, PHONE, horizontal_overflow, open_context, wide_elements

GOOD = (
    "<!doctype html><html lang='en'><head><title>Fine</title></head>"
    "<body><main><h1>Fine</h1><p>Readable.</p></main></body></html>"
)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = open_context(browser, PHONE)
    try:
        yield context.new_page()
    finally:
        context.close()


def test_a_serious_violation_fails_with_rule_impact_and_target(page: Any, tmp_path: Any) -> None:
    page.set_content("<html><body><p>No language, no title.</p></body></html>")
    summary = Summary(path=tmp_path / "summary.json")
    with pytest.raises(pytest.fail.Exception) as failed:
        assert_accessible(page, "gate-bad", PHONE, summary)
    message = str(failed.value)
    assert "html-has-lang [serious]" in message
    assert "document-title [serious]" in message
    assert ": html" in message  # the target selector
    recorded = json.loads(summary.path.read_text(encoding="utf-8"))
    assert recorded["gate-bad"]["360"]["serious"] == 2
    assert recorded["gate-bad"]["360"]["critical"] == 0


def test_a_clean_page_passes(page: Any) -> None:
    page.set_content(GOOD)
    assert_accessible(page, "gate-good", DESKTOP)
    assert horizontal_overflow(page) == 0


def test_sideways_overflow_is_measured_and_named(page: Any) -> None:
    page.set_content(GOOD.replace("<p>", "<p id='wide' style='width:600px'>"))
    assert horizontal_overflow(page) == 600 + 8 - 360  # body's default 8 px margin
    assert wide_elements(page) == ['p#wide (right edge 608 px) "Readable."']

"""Fixtures of the browser walk: Chromium, Playwright's ``browser``, the demo servers, the summary.

Playwright's sync API marks its event loop as running in the calling thread for as long as it
is started, so any later ``asyncio.run`` (every anyio test) would fail: the Playwright driver and
its Chromium therefore live per test module, while the Chromium install check is per session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from browser.accessibility import Summary
from browser.chromium import CHROMIUM, install_chromium, launch
from browser.demo_host import DemoHost
from browser.journeys import Demo, analyst_signed_in, bind_clinician


@pytest.fixture(scope="session")
def chromium() -> Path:
    """``/usr/bin/chromium``, installed with apt-get when missing (skip when impossible)."""
    if not CHROMIUM.exists():
        problem = install_chromium()
        if problem is not None:
            pytest.skip(f"headless Chromium unavailable: {problem}")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium: Path) -> Iterator[Any]:
    """One headless Chromium (Playwright ``Browser``) for the module; tests open contexts."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as playwright:
        launched = launch(playwright, chromium)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def axe_summary() -> Summary:
    """``test-artifacts/browser/axe-summary.json`` for this run (rewritten after each page)."""
    return Summary()


def _served() -> DemoHost:
    host = DemoHost()
    host.start()
    return host


@pytest.fixture(scope="module")
def pending_demo(browser: Any) -> Iterator[Demo]:
    """A demo whose organization stays *pending approval* (launches are refused), and the
    analyst's console session."""
    server = _served()
    try:
        yield Demo(server, analyst=analyst_signed_in(browser, server.url, approve=False))
    finally:
        server.stop()


@pytest.fixture(scope="module")
def approved_demo(browser: Any) -> Iterator[Demo]:
    """A demo approved through the real admin console in the browser, whose clinician has
    signed in to Microsoft once (so text-message links can be issued); both sessions."""
    server = _served()
    try:
        analyst = analyst_signed_in(browser, server.url, approve=True)
        yield Demo(server, analyst, clinician=bind_clinician(browser, server.url))
    finally:
        server.stop()

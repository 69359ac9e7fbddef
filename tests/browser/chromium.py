"""Debian's Chromium driven by Playwright for Python: install, launch, viewports, screenshots.

The system browser (``/usr/bin/chromium``) is installed with ``apt-get`` when missing and the
tests run as root; ``playwright install`` (a browser download) is never used. Screenshots and
accessibility results go to ``test-artifacts/browser/<page>-<width>.*`` (untracked).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
TIMEOUT_MS = 10_000


@dataclass(frozen=True, slots=True)
class Viewport:
    """A browser window size in CSS pixels (WCAG 2.2 SC 1.4.10 Reflow: usable at 320–360 px)."""

    name: str
    width: int
    height: int


DESKTOP = Viewport("desktop", 1280, 800)
PHONE = Viewport("phone", 360, 740)
VIEWPORTS = (DESKTOP, PHONE)


def install_chromium() -> str | None:
    """Install Debian's chromium; returns why it is impossible, or ``None`` on success."""
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return "installing chromium needs root (apt-get install -y chromium)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return f"{' '.join(command)} failed: {done.stderr.strip()[-300:]}"
    return None if CHROMIUM.exists() else "apt-get installed no /usr/bin/chromium"


def launch(playwright: Any, executable: Path) -> Any:
    """A headless Chromium (Playwright ``Browser``) from ``executable``."""
    return playwright.chromium.launch(
        executable_path=str(executable), headless=True, args=list(ARGS)
    )


def open_context(
    browser: Any, viewport: Viewport, storage_state: dict[str, Any] | None = None
) -> Any:
    """A fresh browser profile at ``viewport`` (with the cookies of ``storage_state``, if any)
    and the tests' default timeout.

    The page's own Content-Security-Policy stays in force (no ``bypass_csp``): axe-core is
    evaluated through the DevTools protocol, which CSP does not govern (see ``accessibility``).
    """
    context = browser.new_context(
        viewport={"width": viewport.width, "height": viewport.height},
        locale="en-US",
        storage_state=storage_state,
    )
    context.set_default_timeout(TIMEOUT_MS)
    return context


def artifact(page_name: str, viewport: Viewport, suffix: str) -> Path:
    """``test-artifacts/browser/<page>-<width><suffix>`` (the folder is created)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / f"{page_name}-{viewport.width}{suffix}"


def screenshot(page: Any, page_name: str, viewport: Viewport) -> Path:
    """A full-page PNG of ``page`` at ``test-artifacts/browser/<page>-<width>.png``."""
    path = artifact(page_name, viewport, ".png")
    page.screenshot(path=str(path), full_page=True)
    return path


def horizontal_overflow(page: Any) -> int:
    """How many CSS pixels the document is wider than the window (0: no sideways scrolling,
    WCAG 2.2 SC 1.4.10 Reflow)."""
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    return max(0, int(widths[0]) - int(widths[1]))


_WIDE_ELEMENTS = """() => {
  const limit = window.innerWidth;
  const wide = [...document.body.querySelectorAll('*')].filter(
    (el) => el.getBoundingClientRect().right > limit + 1);
  const innermost = wide.filter((el) => !wide.some((other) => other !== el && el.contains(other)));
  return innermost.slice(0, 5).map((el) => {
    const id = el.id ? '#' + el.id : '';
    const cls = [...el.classList].map((c) => '.' + c).join('');
    const text = (el.textContent || '').trim().replace(/\\s+/g, ' ').slice(0, 40);
    return `${el.tagName.toLowerCase()}${id}${cls} (right edge ${Math.round(
      el.getBoundingClientRect().right)} px) "${text}"`;
  });
}"""


def wide_elements(page: Any) -> list[str]:
    """The innermost elements that reach past the window's right edge (what to fix first)."""
    found: list[str] = page.evaluate(_WIDE_ELEMENTS)
    return found

"""The no-leak harness of security.md §2.0: canaries that must never appear in any output."""

from __future__ import annotations

from collections.abc import Iterable


def assert_no_leak(canaries: Iterable[str], *outputs: object) -> None:
    """Fail if any canary appears in ``str()`` or ``repr()`` of any output."""
    texts = [t for o in outputs for t in (str(o), repr(o))]
    for canary in canaries:
        for text in texts:
            if canary and canary in text:
                raise AssertionError(f"canary {canary[:6]}… leaked into output: {text[:200]!r}")

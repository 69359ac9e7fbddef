"""The ``pytest11`` plugin: fixtures prefixed ``teams_ehr_`` exposing the fakes (SPEC E1)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "teams_ehr(**options): configure the teams_ehr_* fake fixtures"
    )

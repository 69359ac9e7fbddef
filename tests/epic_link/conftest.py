"""Fixtures for the A10 tests."""

from __future__ import annotations

import pytest
from epic_link_support import MemoryNonces


@pytest.fixture
def nonces() -> MemoryNonces:
    return MemoryNonces()

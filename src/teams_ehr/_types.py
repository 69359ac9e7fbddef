"""Small shared types: the clock, sans-IO flows, JSON aliases (DESIGN.md rules 3 and 7)."""

from __future__ import annotations

from collections.abc import Callable, Generator
from datetime import UTC, datetime
from typing import Any, TypeAlias, TypeVar

import httpx

T = TypeVar("T")

Clock: TypeAlias = Callable[[], datetime]
"""Returns the current time as an aware UTC datetime. Injected everywhere time matters."""

Flow: TypeAlias = Generator[httpx.Request, httpx.Response, T]
"""A sans-IO protocol flow: yields requests, receives responses, returns a result (httpx's
``Auth.auth_flow`` shape). Run it with :func:`teams_ehr._http.run_sync` or ``run_async``."""

JsonObject: TypeAlias = dict[str, Any]


def utc_now() -> datetime:
    """The default :data:`Clock`."""
    return datetime.now(UTC)

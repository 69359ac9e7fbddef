"""The shapes every route shares: the request the core sees and a route's declaration.

Kept apart from :mod:`teams_ehr.integrations.routes` so route tables (the visit routes, the admin
console) can be declared in their own modules and merged there without import cycles.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from teams_ehr.app import TeamsEhr
from teams_ehr.web import WebResponse, WebStream

__all__ = ["Handler", "IncomingRequest", "RouteSpec"]


@dataclass(frozen=True, slots=True)
class IncomingRequest:
    """What the core needs of a request; ``params`` is the query (GET) or the form (POST)."""

    route: str
    path_params: Mapping[str, str]
    params: Mapping[str, str]
    session_id: str
    client_key: str
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def __repr__(self) -> str:
        return f"<IncomingRequest route={self.route!r}>"


Handler = Callable[[TeamsEhr, IncomingRequest], Awaitable[WebResponse | WebStream]]


@dataclass(frozen=True, slots=True)
class RouteSpec:
    name: str
    path: str  # Starlette/Flask-compatible placeholders: {name}
    methods: tuple[Literal["GET", "POST"], ...]
    handler: Handler
    raw_body: bool = False  # the adapter passes the body bytes and the query, parses no form

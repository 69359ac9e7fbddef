"""The browser's way into the in-process fakes (requirement E3).

The library redirects the browser to the real shapes of the EHR's authorize endpoint
(``https://ehr.test/oauth2/authorize?…``), Microsoft's (``https://login.microsoftonline.com/
<tenant>/oauth2/v2.0/authorize?…``) and the Teams join URL (``https://teams.microsoft.com/l/
meetup-join/…``). Those hosts are in-process fakes a browser cannot reach, so this ASGI
middleware maps a ``Location`` on a *sandbox* origin to the demo server's page for that fake:
``/sandbox/<fake><path>?<query>`` (same path and query, so the page can hand the request to the
fake unchanged). Any other ``Location`` passes untouched; nothing else of a response changes.
The demo's own tests assert the library's original redirects, so the mapping hides nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import urlsplit

__all__ = ["BrowserGateway", "browser_location"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def browser_location(location: str, fakes: Mapping[str, str], *, prefix: str = "/sandbox") -> str:
    """``location`` on a fake's origin (``fakes``: origin → name) as the page path of that fake
    under ``prefix`` (the demo's ``/sandbox``; a real host's Microsoft sandbox passes its own)."""
    try:
        parts = urlsplit(location)
    except ValueError:
        return location
    name = fakes.get(f"{parts.scheme}://{parts.netloc}".lower())
    if name is None or not parts.path.startswith("/"):
        return location
    query = f"?{parts.query}" if parts.query else ""
    return f"{prefix}/{name}{parts.path}{query}"


class BrowserGateway:
    """ASGI middleware: rewrite redirects to the sandbox fakes' origins (see the module doc)."""

    def __init__(self, app: ASGIApp, fakes: Mapping[str, str]) -> None:
        self._app = app
        self._fakes = {origin.lower().rstrip("/"): name for origin, name in fakes.items()}

    def __repr__(self) -> str:
        return "<BrowserGateway>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_mapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = []
                for name, value in message.get("headers", []):
                    if name.lower() == b"location":
                        value = browser_location(value.decode("latin-1"), self._fakes).encode(
                            "latin-1"
                        )
                    headers.append((name, value))
                message["headers"] = headers
            await send(message)

        await self._app(scope, receive, send_mapped)
